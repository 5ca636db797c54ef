//! proptest strategies that generate operation sequences for one map definition, over a small key
//! space so that collisions, full maps, replacements, evictions and out-of-range indices happen
//! often, with a share of invalid flags and edge-case cursors and counts.
//!
//! Owns the generators only; applying and comparing is [`crate::runner`]'s job.

use bpfmaps_abi::cpus::percpu_stride;
use bpfmaps_abi::{MapDef, MapType};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::op::{Cursor, Op};
use crate::runner::Comparison;

/// What the generators need to know about the map beyond its definition.
#[derive(Clone, Debug)]
pub struct OpSpace {
    /// The map definition.
    pub def: MapDef,
    /// Possible CPUs (for the per-CPU value size).
    pub possible_cpus: u32,
    /// How the runner compares: [`Comparison::Unordered`] restricts batch lookups to whole-map
    /// calls from the start, whose result does not depend on the hash layout.
    pub comparison: Comparison,
    /// Generate `BPF_MAP_FREEZE` (rarely) when true.
    pub with_freeze: bool,
}

impl OpSpace {
    /// The user-space value size of the map: `round_up(value_size, 8) × CPUs` for per-CPU maps.
    pub fn user_value_size(&self) -> usize {
        if self.def.map_type.is_percpu() {
            percpu_stride(self.def.value_size as usize) * self.possible_cpus as usize
        } else {
            self.def.value_size as usize
        }
    }

    /// How many distinct keys the generator draws from: beyond max_entries so that hash maps fill
    /// up and LRU maps evict, and past the end for index-keyed maps.
    pub fn key_count(&self) -> u32 {
        let max = self.def.max_entries.min(4096);
        match self.def.map_type {
            t if t.is_lru() => max.saturating_mul(3),
            t if t.is_hash() => max.saturating_mul(2).saturating_add(1),
            MapType::StackTrace => max.next_power_of_two().saturating_add(2),
            _ => max.saturating_add(2),
        }
    }

    /// A cursor value space for [`Cursor::Raw`]: bucket indices around n_buckets, or indices
    /// around max_entries.
    fn raw_cursor_bound(&self) -> u32 {
        self.def
            .max_entries
            .min(4096)
            .next_power_of_two()
            .saturating_add(2)
    }
}

/// The key bytes for key number `k` of `def`: `k` little-endian in the first (up to) 4 bytes,
/// the rest a fixed function of `k`, so that every byte of a longer key takes part in hashing.
pub fn key_bytes(def: &MapDef, k: u32) -> Vec<u8> {
    let len = def.key_size as usize;
    let le = k.to_le_bytes();
    (0..len)
        .map(|i| match le.get(i) {
            Some(b) => *b,
            None => {
                let mixed = k
                    .wrapping_mul(0x9e37_79b9)
                    .rotate_left(u32::try_from(i % 32).unwrap_or(0));
                mixed.to_le_bytes()[i % 4]
            }
        })
        .collect()
}

fn key_strategy(space: &OpSpace) -> BoxedStrategy<Vec<u8>> {
    let def = space.def.clone();
    let n = space.key_count().max(1);
    prop_oneof![
        20 => (0..n).prop_map({ let def = def.clone(); move |k| key_bytes(&def, k) }),
        1 => Just(key_bytes(&def, u32::MAX)),
    ]
    .boxed()
}

fn value_strategy(space: &OpSpace) -> BoxedStrategy<Vec<u8>> {
    let len = space.user_value_size();
    // A small alphabet makes equal values likely, which catches swapped elements too.
    vec(prop_oneof![3 => 0u8..4, 1 => any::<u8>()], len).boxed()
}

fn update_flags() -> BoxedStrategy<u64> {
    prop_oneof![
        6 => Just(0u64),
        3 => Just(1u64),
        3 => Just(2u64),
        1 => prop_oneof![Just(3u64), Just(4u64), Just(5u64), Just(8u64), Just(1u64 << 32)],
    ]
    .boxed()
}

fn lookup_flags() -> BoxedStrategy<u64> {
    prop_oneof![12 => Just(0u64), 1 => prop_oneof![Just(1u64), Just(2u64), Just(4u64)]].boxed()
}

fn elem_flags() -> BoxedStrategy<u64> {
    prop_oneof![10 => Just(0u64), 1 => prop_oneof![Just(1u64), Just(2u64), Just(4u64)]].boxed()
}

fn batch_flags() -> BoxedStrategy<u64> {
    prop_oneof![10 => Just(0u64), 1 => Just(1u64)].boxed()
}

fn cursor_and_count(space: &OpSpace) -> BoxedStrategy<(Cursor, u32)> {
    let max = space.def.max_entries.min(48);
    match space.comparison {
        Comparison::Unordered => (Just(Cursor::Start), max..max.saturating_add(3)).boxed(),
        Comparison::Exact => {
            let bound = space.raw_cursor_bound();
            let cursor = prop_oneof![
                3 => Just(Cursor::Start),
                4 => Just(Cursor::Continue),
                1 => prop_oneof![(0..bound).prop_map(Cursor::Raw), Just(Cursor::Raw(u32::MAX))],
            ];
            (
                cursor,
                prop_oneof![1 => Just(0u32), 8 => 1..max.saturating_add(3)],
            )
                .boxed()
        }
    }
}

/// One operation on the map `space` describes.
pub fn op_strategy(space: &OpSpace) -> BoxedStrategy<Op> {
    let key = key_strategy(space);
    let value = value_strategy(space);
    let cc = cursor_and_count(space);
    let kv = (key.clone(), value.clone());
    let base = prop_oneof![
        90 => (key.clone(), value.clone(), update_flags())
            .prop_map(|(key, value, flags)| Op::Update { key, value, flags }),
        45 => (key.clone(), lookup_flags()).prop_map(|(key, flags)| Op::Lookup { key, flags }),
        30 => key.clone().prop_map(|key| Op::Delete { key }),
        30 => prop::option::weighted(0.75, key.clone()).prop_map(|key| Op::GetNextKey { key }),
        15 => (key.clone(), lookup_flags())
            .prop_map(|(key, flags)| Op::LookupAndDelete { key, flags }),
        15 => (cc.clone(), elem_flags(), batch_flags()).prop_map(|((cursor, count), elem_flags, flags)| {
            Op::LookupBatch { cursor, count, elem_flags, flags }
        }),
        12 => (cc, elem_flags(), batch_flags()).prop_map(|((cursor, count), elem_flags, flags)| {
            Op::LookupAndDeleteBatch { cursor, count, elem_flags, flags }
        }),
        15 => (vec(kv, 0..5), elem_flags(), batch_flags()).prop_map(|(pairs, elem_flags, flags)| {
            let (keys, values) = pairs.into_iter().unzip();
            Op::UpdateBatch { keys, values, elem_flags, flags }
        }),
        12 => (vec(key, 0..5), elem_flags(), batch_flags())
            .prop_map(|(keys, elem_flags, flags)| Op::DeleteBatch { keys, elem_flags, flags }),
    ];
    if space.with_freeze {
        prop_oneof![400 => base, 1 => Just(Op::Freeze)].boxed()
    } else {
        base.boxed()
    }
}

/// A sequence of 1 to `max_len` operations on the map `space` describes.
pub fn ops_strategy(space: &OpSpace, max_len: usize) -> BoxedStrategy<Vec<Op>> {
    vec(op_strategy(space), 1..max_len.max(2)).boxed()
}
