//! The eBPF ABI that every other bpfmaps crate speaks: map types and flags with the kernel's
//! numbers, errnos with their names, helper ids, the ring buffer and perf record formats, and
//! [`MapOps`], the byte-level map interface both engines implement.
//!
//! Architecture invariant: no `unsafe`, no I/O, no dependency on another bpfmaps crate. It is the
//! bottom of the dependency graph.
//!
//! ```
//! use bpfmaps_abi::{Errno, MapType};
//! assert_eq!("lru_hash".parse::<MapType>().unwrap().as_u32(), 9);
//! assert_eq!(Errno::EEXIST.to_string(), "EEXIST (File exists)");
//! ```

#![forbid(unsafe_code)]

pub mod consumer;
pub mod cpus;
mod errno;
pub mod helper;
pub mod insn;
mod map;
pub mod map_type;
pub mod ringbuf;

pub use errno::Errno;
pub use map::{
    check_sizes, is_obj_name_byte, BatchBuffers, MapDef, MapError, MapInfo, MapOps, MapResult,
    PinnedMapField,
};
pub use map_type::{map_flags, update_flags, MapType, UnknownMapType};
pub use ringbuf::{PerfRingMemory, RingBufMemory};
