//! The known divergences of the user engine from the kernel, found by this crate's suites and
//! kept here so every suite skips (and counts) the same things while they are open. Each entry
//! names the kernel rule; the difftest report lists a failing minimal case for each.
//!
//! Owns the list only; [`crate::runner::DiffRunner`] applies it.

use bpfmaps_abi::map_flags::{BPF_F_RDONLY, BPF_F_WRONLY};

use crate::runner::{no_op, KnownDivergence};

/// Every open divergence. Empty means the user engine matched the kernel on everything the
/// suites generate.
pub const KNOWN_DIVERGENCES: &[KnownDivergence] = &[KnownDivergence {
    map_type: None,
    rule: "BPF_F_RDONLY and BPF_F_WRONLY are fd access flags, not map flags: the kernel drops \
           them from the map_flags it reports (bpf_map_flags_retain_permanent in syscall.c), \
           the user engine reports them",
    matches: no_op,
    info_flags_ignored: BPF_F_RDONLY | BPF_F_WRONLY,
}];
