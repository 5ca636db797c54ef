//! The kernel engine's error type for everything outside the byte-level [`MapOps`] calls
//! (which report [`MapError`] like every engine): opening, creating, pinning, listing maps,
//! mounting filesystems and setting up ring consumers.
//!
//! [`MapOps`]: bpfmaps_abi::MapOps
//! [`MapError`]: bpfmaps_abi::MapError

use std::path::PathBuf;

use bpfmaps_abi::MapType;

use crate::sys::SysError;

/// Why a kernel-engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed; the error names it and its errno.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `/sys/devices/system/cpu/possible` did not hold a CPU list.
    #[error("cannot parse the possible CPU list {0:?}")]
    CpuList(String),
    /// No kernel map has this name.
    #[error("no kernel map named {0:?}")]
    NoSuchName(String),
    /// The kernel reported a map type this crate does not name.
    #[error("the kernel reported unknown map type {0}")]
    UnknownMapType(u32),
    /// The map has the wrong type for what was asked.
    #[error("{what} needs a {expected} map, this one is {found}")]
    WrongMapType {
        /// What needed it.
        what: &'static str,
        /// The type required.
        expected: MapType,
        /// The map's type.
        found: MapType,
    },
    /// A map operation failed.
    #[error(transparent)]
    Map(#[from] bpfmaps_abi::MapError),
    /// A size does not fit what the kernel interface allows.
    #[error("{0}")]
    InvalidSize(String),
}
