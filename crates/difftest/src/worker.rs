//! What the multi-process tests and their child process (`difftest-worker`) agree on: the value
//! the write loop stores for each key.
//!
//! Owns [`value_of`] only; the jobs themselves are in `src/bin/difftest-worker.rs`.

/// The 8-byte value the worker's write loop (and `create-pin-hang`) stores for key `i`.
pub fn value_of(i: u32) -> [u8; 8] {
    (u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a).to_le_bytes()
}
