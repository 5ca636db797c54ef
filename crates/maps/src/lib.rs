//! The user engine's maps: every supported map type implemented in shared memory, with the
//! kernel's semantics, behind the same [`bpfmaps_abi::MapOps`] interface as the kernel engine.

pub mod lru;
pub mod perf_event_array;
pub mod ringbuf;
pub mod stack_trace;
