//! CPU lists as `/sys/devices/system/cpu/possible` writes them, and the per-CPU value layout.
//!
//! Parsing only: reading the file is the engines' job, so this crate stays free of I/O.

/// Parses a kernel CPU list such as `0-3,8,10-11` and returns how many CPUs it names counting
/// from CPU 0, which is `num_possible_cpus()` as libbpf computes it: the highest id plus one.
pub fn count_from_cpu_list(list: &str) -> Option<usize> {
    let mut highest: Option<usize> = None;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let last = match part.split_once('-') {
            Some((lo, hi)) => {
                let lo: usize = lo.trim().parse().ok()?;
                let hi: usize = hi.trim().parse().ok()?;
                if hi < lo {
                    return None;
                }
                hi
            }
            None => part.trim().parse().ok()?,
        };
        highest = Some(highest.map_or(last, |h| h.max(last)));
    }
    highest.map(|h| h + 1)
}

/// The stride of one CPU's slot in a per-CPU value buffer: `round_up(value_size, 8)`.
pub fn percpu_stride(value_size: usize) -> usize {
    value_size.div_ceil(8) * 8
}

/// Sums one unsigned little-endian counter of `value_size` bytes (1, 2, 4 or 8) across every
/// CPU slot of a per-CPU value buffer laid out with [`percpu_stride`]. Other sizes sum as 0.
pub fn sum_percpu_u64(buf: &[u8], value_size: usize) -> u64 {
    let stride = percpu_stride(value_size);
    if stride == 0 {
        return 0;
    }
    buf.chunks(stride)
        .map(|slot| {
            let mut v = [0u8; 8];
            let n = value_size.min(8).min(slot.len());
            v[..n].copy_from_slice(&slot[..n]);
            match value_size {
                1 | 2 | 4 | 8 => u64::from_le_bytes(v),
                _ => 0,
            }
        })
        .fold(0u64, u64::wrapping_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(count_from_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_from_cpu_list("0"), Some(1));
        assert_eq!(count_from_cpu_list("0-3,8,10-11"), Some(12));
        assert_eq!(count_from_cpu_list("x"), None);
        assert_eq!(count_from_cpu_list(""), None);
    }

    #[test]
    fn percpu_sum_uses_the_8_byte_stride() {
        let mut buf = vec![0u8; 16];
        buf[0..4].copy_from_slice(&5u32.to_le_bytes());
        buf[4..8].copy_from_slice(&0xdead_beefu32.to_le_bytes()); // padding, ignored
        buf[8..12].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(percpu_stride(4), 8);
        assert_eq!(sum_percpu_u64(&buf, 4), 12);
    }
}
