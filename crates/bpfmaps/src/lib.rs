//! bpfmaps: eBPF maps on two engines.
//!
//! The *kernel engine* drives maps that live in Linux (through `bpfmaps-kernel`); the *user
//! engine* implements every map type in shared memory (`bpfmaps-maps`) with the kernel's
//! semantics. This crate is the public entry point over both: open a map by id, pinned path or
//! name without caring which engine holds it ([`Map::open`]), list both engines' maps
//! ([`list_maps`]), create and pin ([`create_pinned_map`]), read ring buffer and perf event
//! streams ([`events::EventStream`]), and use typed keys and values ([`typed::TypedMap`]).
//!
//! ```no_run
//! use bpfmaps::{EngineChoice, Map, MapSelector};
//! let map = Map::open(&MapSelector::Name("counts".into()), EngineChoice::Any)?;
//! let mut value = vec![0u8; map.info().user_value_size()];
//! map.ops().lookup(&1u32.to_ne_bytes(), &mut value, 0)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod engine;
pub mod events;
pub mod program;
pub mod top;
pub mod typed;

pub use bpfmaps_abi::{
    map_flags, update_flags, BatchBuffers, Errno, MapDef, MapError, MapInfo, MapOps, MapResult,
    MapType,
};
pub use bpfmaps_kernel as kernel;
pub use bpfmaps_maps as user;
pub use engine::{
    create_pinned_map, list_maps, list_maps_available, Engine, EngineChoice, Error, Listing, Map,
    MapSelector,
};
