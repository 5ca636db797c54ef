//! The user engine's maps: every supported map type implemented in shared memory, with the
//! kernel's semantics, behind the same [`bpfmaps_abi::MapOps`] interface as the kernel engine.
//!
//! # Overview
//!
//! Each map is one file mapped `MAP_SHARED` ([`region`]), starting with a versioned header
//! ([`header`]) followed by the map type's area. Any process that opens the file sees and changes
//! the same map. A new map is an unnamed `O_TMPFILE` file in the pin root's file system; pinning
//! ([`UserMap::pin`]) links it to a path. Every live map has an id in a small registry under the
//! pin root ([`store`]), which is also how [`list`] and [`UserMap::from_id`] find maps.
//!
//! Concurrency: structures are protected by owner-stamped process-shared locks ([`lock`]) whose
//! waiters notice a dead owner, and every update becomes visible in one atomic store, so a process killed at any
//! point leaves the map usable and loses no acknowledged update (see [`hash`] for the recovery).
//!
//! ```no_run
//! use bpfmaps_abi::{MapDef, MapOps, MapType};
//! use bpfmaps_maps::UserMap;
//!
//! let def = MapDef {
//!     map_type: MapType::Hash,
//!     key_size: 4,
//!     value_size: 8,
//!     max_entries: 1024,
//!     map_flags: 0,
//!     name: "counts".into(),
//! };
//! let map = UserMap::create(&def)?;
//! map.update(&1u32.to_le_bytes(), &7u64.to_le_bytes(), 0)?;
//! let mut value = [0u8; 8];
//! map.lookup(&1u32.to_le_bytes(), &mut value, 0)?;
//! assert_eq!(u64::from_le_bytes(value), 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture invariant: `unsafe` lives only in [`region`], [`lock`] and `ringbuf/shm.rs` (the
//! ring buffer's data pages mapped twice, and the futex its consumers sleep on, which `region`'s
//! one-mapping, copy-only API cannot express); everything else reaches shared memory through
//! their safe, bounds-checked API and treats its contents as untrusted: a corrupt map file makes
//! operations fail with an error, never panic.

pub mod array;
pub mod backend;
pub mod cgroup_array;
pub mod hash;
pub mod header;
pub mod jhash;
pub mod lock;
pub mod lru;
pub mod perf_event_array;
pub mod region;
pub mod ringbuf;
pub mod stack_trace;
pub mod store;
mod usermap;

pub use backend::{Backend, MapFile, Plan, StandaloneError, ValueRef};
pub use store::{pin_root, Store, StoreError, PIN_ROOT_ENV};
pub use usermap::{
    create, find_by_name_in, list, list_in, possible_cpus, Access, ListedMap, UserMap,
    UserMapError, MAX_FILE_SIZE,
};

/// An I/O error as the rest of bpfmaps words errnos: `EACCES (Permission denied)`.
pub(crate) fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => bpfmaps_abi::Errno(code).to_string(),
        None => e.to_string(),
    }
}
