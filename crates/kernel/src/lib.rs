//! The kernel engine: bpf(2), perf_event_open(2), mmap of kernel rings, object loading (from
//! `bpfmaps_obj`'s parsed objects, through bpfmaps' own bpf(2) calls) and attachment by
//! section name. The only bpfmaps crate that holds BPF object file descriptors.

pub mod attach;
pub mod btf;
mod error;
pub mod fs;
pub mod map;
pub mod object;
pub mod perf;
pub mod prog;
pub mod prog_info;
pub mod ringbuf;
pub mod stack;
pub mod sys;

pub use error::Error;
