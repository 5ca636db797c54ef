//! Map types with the kernel's numbers (`enum bpf_map_type`), and the flag constants that go with
//! map creation and element updates.
//!
//! Owns numbers and names only; which combinations are valid for which type is each engine's
//! business (the kernel decides for the kernel engine, `bpfmaps-maps` mirrors it).

use std::fmt;
use std::str::FromStr;

macro_rules! map_types {
    ($($variant:ident = $value:literal, $name:literal;)*) => {
        /// A map type, numbered as `enum bpf_map_type` in `include/uapi/linux/bpf.h`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum MapType {
            $(
                #[doc = concat!("`BPF_MAP_TYPE_", stringify!($variant), "`, bpftool's `", $name, "`.")]
                $variant,
            )*
        }

        impl MapType {
            /// Every map type this crate names, in kernel order.
            pub const ALL: &'static [MapType] = &[$(MapType::$variant,)*];

            /// The kernel's number for this type.
            pub fn as_u32(self) -> u32 {
                match self { $(MapType::$variant => $value,)* }
            }

            /// The type with the kernel's number `value`, if this crate names it.
            pub fn from_u32(value: u32) -> Option<MapType> {
                match value { $($value => Some(MapType::$variant),)* _ => None }
            }

            /// bpftool's name for the type (`hash`, `percpu_array`, `ringbuf`, …).
            pub fn name(self) -> &'static str {
                match self { $(MapType::$variant => $name,)* }
            }
        }
    };
}

map_types! {
    Unspec = 0, "unspec";
    Hash = 1, "hash";
    Array = 2, "array";
    ProgArray = 3, "prog_array";
    PerfEventArray = 4, "perf_event_array";
    PercpuHash = 5, "percpu_hash";
    PercpuArray = 6, "percpu_array";
    StackTrace = 7, "stack_trace";
    CgroupArray = 8, "cgroup_array";
    LruHash = 9, "lru_hash";
    LruPercpuHash = 10, "lru_percpu_hash";
    LpmTrie = 11, "lpm_trie";
    ArrayOfMaps = 12, "array_of_maps";
    HashOfMaps = 13, "hash_of_maps";
    Devmap = 14, "devmap";
    Sockmap = 15, "sockmap";
    Cpumap = 16, "cpumap";
    Xskmap = 17, "xskmap";
    Sockhash = 18, "sockhash";
    CgroupStorage = 19, "cgroup_storage";
    ReuseportSockarray = 20, "reuseport_sockarray";
    PercpuCgroupStorage = 21, "percpu_cgroup_storage";
    Queue = 22, "queue";
    Stack = 23, "stack";
    SkStorage = 24, "sk_storage";
    DevmapHash = 25, "devmap_hash";
    StructOps = 26, "struct_ops";
    Ringbuf = 27, "ringbuf";
    InodeStorage = 28, "inode_storage";
    TaskStorage = 29, "task_storage";
    BloomFilter = 30, "bloom_filter";
    UserRingbuf = 31, "user_ringbuf";
    CgrpStorage = 32, "cgrp_storage";
    Arena = 33, "arena";
}

impl MapType {
    /// True for the per-CPU types whose user-space value is one slot per possible CPU.
    pub fn is_percpu(self) -> bool {
        matches!(
            self,
            MapType::PercpuHash | MapType::PercpuArray | MapType::LruPercpuHash
        )
    }

    /// True for the hash-table family (HASH, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH).
    pub fn is_hash(self) -> bool {
        matches!(
            self,
            MapType::Hash | MapType::PercpuHash | MapType::LruHash | MapType::LruPercpuHash
        )
    }

    /// True for the LRU hash types.
    pub fn is_lru(self) -> bool {
        matches!(self, MapType::LruHash | MapType::LruPercpuHash)
    }

    /// True for ARRAY and PERCPU_ARRAY.
    pub fn is_array(self) -> bool {
        matches!(self, MapType::Array | MapType::PercpuArray)
    }
}

impl fmt::Display for MapType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a map type name that bpftool would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown map type `{0}` (expected a bpftool name such as hash, array, percpu_hash, lru_hash, ringbuf)")]
pub struct UnknownMapType(pub String);

impl FromStr for MapType {
    type Err = UnknownMapType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MapType::ALL
            .iter()
            .copied()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownMapType(s.to_owned()))
    }
}

/// Flags of element updates (`BPF_MAP_UPDATE_ELEM`'s `flags`).
pub mod update_flags {
    /// Create a new element or update an existing one.
    pub const BPF_ANY: u64 = 0;
    /// Create a new element only; `EEXIST` if the key exists.
    pub const BPF_NOEXIST: u64 = 1;
    /// Update an existing element only; `ENOENT` if the key is missing.
    pub const BPF_EXIST: u64 = 2;
    /// Update or read the value under its embedded `bpf_spin_lock`.
    pub const BPF_F_LOCK: u64 = 4;
}

/// Flags of map creation (`map_flags`), with the kernel's bit numbers.
pub mod map_flags {
    /// Do not preallocate hash elements.
    pub const BPF_F_NO_PREALLOC: u32 = 1 << 0;
    /// One LRU list per CPU instead of a common one.
    pub const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;
    /// `numa_node` is valid.
    pub const BPF_F_NUMA_NODE: u32 = 1 << 2;
    /// The syscall side may only read (an fd flag at BPF_OBJ_GET, a map flag at creation).
    pub const BPF_F_RDONLY: u32 = 1 << 3;
    /// The syscall side may only write.
    pub const BPF_F_WRONLY: u32 = 1 << 4;
    /// Stack trace map stores build ids.
    pub const BPF_F_STACK_BUILD_ID: u32 = 1 << 5;
    /// Hash seed zero: deterministic layout, for tests.
    pub const BPF_F_ZERO_SEED: u32 = 1 << 6;
    /// Programs may only read.
    pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;
    /// Programs may only write.
    pub const BPF_F_WRONLY_PROG: u32 = 1 << 8;
    /// Clone socket storage.
    pub const BPF_F_CLONE: u32 = 1 << 9;
    /// The array can be mmap()ed.
    pub const BPF_F_MMAPABLE: u32 = 1 << 10;
    /// Perf event array entries survive the close of the fd that installed them.
    pub const BPF_F_PRESERVE_ELEMS: u32 = 1 << 11;
    /// The array may be used as an inner map.
    pub const BPF_F_INNER_MAP: u32 = 1 << 12;
}

/// Flags of `bpf_get_stackid`.
pub mod stackid_flags {
    /// The low 8 bits: frames to skip.
    pub const BPF_F_SKIP_FIELD_MASK: u64 = 0xff;
    /// Capture the user stack instead of the kernel stack.
    pub const BPF_F_USER_STACK: u64 = 1 << 8;
    /// Compare stacks by hash only.
    pub const BPF_F_FAST_STACK_CMP: u64 = 1 << 9;
    /// Replace a colliding bucket instead of failing with `EEXIST`.
    pub const BPF_F_REUSE_STACKID: u64 = 1 << 10;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in MapType::ALL {
            assert_eq!(t.name().parse::<MapType>().unwrap(), *t);
            assert_eq!(MapType::from_u32(t.as_u32()), Some(*t));
        }
        assert_eq!(MapType::Ringbuf.as_u32(), 27);
        assert!("nope".parse::<MapType>().is_err());
    }
}
