//! The known divergences of the user engine from the kernel, found by this crate's suites and
//! kept here so every suite skips (and counts) the same things while they are open. Each entry
//! names the kernel rule; the difftest report lists a failing minimal case for each.
//!
//! Owns the list only; [`crate::runner::DiffRunner`] applies it.

use crate::runner::KnownDivergence;

/// Every open divergence. Empty means the user engine matched the kernel on everything the
/// suites generate.
pub const KNOWN_DIVERGENCES: &[KnownDivergence] = &[];
