//! Bob Jenkins' lookup3 hash in the two forms the kernel's hash maps use (`jhash` over bytes and
//! `jhash2` over 32-bit words, as in `include/linux/jhash.h`), written from the public lookup3
//! description. With the same seed the user engine places keys in the same buckets as the kernel,
//! so iteration order under `BPF_F_ZERO_SEED` matches key for key.
//!
//! Owns hashing only; bucket selection lives with the hash table.

const JHASH_INITVAL: u32 = 0xdead_beef;

#[inline(always)]
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

#[inline(always)]
fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

fn word(bytes: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(w)
}

/// `jhash(key, length, initval)`: lookup3 over arbitrary bytes (words read little-endian, as the
/// kernel's unaligned CPU-order loads do on little-endian machines).
pub fn jhash(key: &[u8], initval: u32) -> u32 {
    // The kernel takes the length as u32; keys are at most max key_size, far below 4 GiB.
    let length = key.len() as u32;
    let mut a = JHASH_INITVAL.wrapping_add(length).wrapping_add(initval);
    let mut b = a;
    let mut c = a;
    let mut rest = key;
    while rest.len() > 12 {
        a = a.wrapping_add(word(&rest[0..]));
        b = b.wrapping_add(word(&rest[4..]));
        c = c.wrapping_add(word(&rest[8..]));
        mix(&mut a, &mut b, &mut c);
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return c;
    }
    let byte = |i: usize, shift: u32| u32::from(rest[i]) << shift;
    let n = rest.len();
    // The tail: bytes 8..12 go to c, 4..8 to b, 0..4 to a, each little-endian.
    for i in (0..n).rev() {
        let shift = 8 * (i % 4) as u32;
        match i / 4 {
            2 => c = c.wrapping_add(byte(i, shift)),
            1 => b = b.wrapping_add(byte(i, shift)),
            _ => a = a.wrapping_add(byte(i, shift)),
        }
    }
    final_mix(&mut a, &mut b, &mut c);
    c
}

/// `jhash2(k, length, initval)`: lookup3 over `key.len() / 4` little-endian 32-bit words.
/// `key.len()` must be a multiple of 4 (trailing bytes are ignored).
#[inline]
pub fn jhash2(key: &[u8], initval: u32) -> u32 {
    let n = key.len() / 4;
    let mut a = JHASH_INITVAL
        .wrapping_add((n as u32) << 2)
        .wrapping_add(initval);
    let mut b = a;
    let mut c = a;
    let mut words = key
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    // `words` yields exactly `n` items, so the `unwrap_or(0)`s below never take the 0.
    let mut next = || words.next().unwrap_or(0);
    let mut left = n;
    while left > 3 {
        a = a.wrapping_add(next());
        b = b.wrapping_add(next());
        c = c.wrapping_add(next());
        mix(&mut a, &mut b, &mut c);
        left -= 3;
    }
    if left == 0 {
        return c;
    }
    // The last one to three words: the first to a, the second to b, the third to c.
    a = a.wrapping_add(next());
    if left > 1 {
        b = b.wrapping_add(next());
    }
    if left > 2 {
        c = c.wrapping_add(next());
    }
    final_mix(&mut a, &mut b, &mut c);
    c
}

/// The hash the kernel's hash maps use (`htab_map_hash`): `jhash2` when the key size is a
/// multiple of 4, `jhash` otherwise.
#[inline]
pub fn htab_hash(key: &[u8], seed: u32) -> u32 {
    if key.len().is_multiple_of(4) {
        jhash2(key, seed)
    } else {
        jhash(key, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jhash_and_jhash2_agree_on_word_multiples() {
        // lookup3 defines hashword and hashlittle to agree on little-endian word input.
        for len in [4usize, 8, 12, 16, 20, 24, 28] {
            let key: Vec<u8> = (0..len as u8)
                .map(|b| b.wrapping_mul(37).wrapping_add(1))
                .collect();
            assert_eq!(jhash(&key, 7), jhash2(&key, 7), "length {len}");
        }
    }

    #[test]
    fn known_values_from_lookup3() {
        // hashlittle("", 0) is 0xdeadbeef; hashlittle("Four score and seven years ago", 0) is
        // 0x17770551 and with initval 1 it is 0xcd628161 (lookup3.c's driver5 self-test).
        assert_eq!(jhash(b"", 0), 0xdead_beef);
        assert_eq!(jhash(b"Four score and seven years ago", 0), 0x1777_0551);
        assert_eq!(jhash(b"Four score and seven years ago", 1), 0xcd62_8161);
    }
}
