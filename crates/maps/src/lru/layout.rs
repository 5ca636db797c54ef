//! Where everything of an LRU hash map lives inside its shared-memory area: the lock, a small
//! header, the LRU list states, one record per list link (list links and node metadata), the hash
//! buckets and the elements (key then value).
//!
//! Owns the arithmetic from a map definition to byte offsets, nothing else. All offsets are
//! relative to the region, already including the area's base, and every size is computed with
//! checked arithmetic so an absurd definition is refused (`E2BIG`/`ENOMEM`) instead of wrapping.
//!
//! # Layout (version 2), offsets relative to the area's base (64-aligned)
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 64 | lock slot ([`crate::lock`]) guarding everything below |
//! | 64 | 4 | magic `LRU2` ([`LRU_MAGIC`]) |
//! | 68 | 8 | reserved, zero (the seed and the frozen flag live in the file header) |
//! | 76 | 4 | number of elements linked in the hash table |
//! | 80 | 4 | sequence counter: odd while a lock holder may be changing the table; lock-free lookups read between two equal even values |
//! | 84 | 4 | number of repairs run after a lock holder died (diagnostics) |
//! | 88 | 40 | reserved, zero |
//! | 128 | 16 × lists | per LRU list: `u32` active count, `u32` inactive count, `u32` rotation cursor (a link index), `u32` zero |
//! | … | 4 × cpus | per CPU (common LRU): `u32` next CPU to steal from |
//! | … (32-aligned) | 32 × links | one record per link, below |
//! | … | 4 × buckets | first node of each bucket, [`NIL`] when empty |
//! | … (8-aligned) | elem_stride × nodes | elements: key (`round_up(key_size, 8)` bytes), then the value (`value_size`, or `round_up(value_size, 8) × cpus` for per-CPU maps) |
//!
//! A link's record is eight `u32` words, so everything an LRU operation reads or writes about one
//! node is on one cache line (version 1 kept each field in its own array, which cost one cache
//! line per field touched): `prev` link, `next` link, then for nodes only (zero for list heads)
//! the list type ([`NodeType`] as `u32`), the CPU (owner of its pending list, or of its list with
//! `NO_COMMON_LRU`), the reference bit (0 or 1), the key hash, the next node in the same hash
//! bucket ([`NIL`] at the end), and a zero word.
//!
//! *Links* are list nodes and list heads in one index space, so every list is a circular doubly
//! linked list with a sentinel head exactly like the kernel's `list_head`: indices
//! `0..nodes` are elements, then three heads (active, inactive, free) per LRU list, then two heads
//! (local free, local pending) per CPU for the common LRU.

use bpfmaps_abi::Errno;

use crate::lock::LOCK_SLOT_SIZE;

/// "LRU2" little-endian: marks an initialised LRU area of layout version 2.
pub const LRU_MAGIC: u32 = u32::from_le_bytes(*b"LRU2");

/// Bytes of one link record.
const RECORD: usize = 32;

/// The end of a hash chain (an empty bucket).
pub const NIL: u32 = u32::MAX;

/// Which list a node is on (`enum bpf_lru_list_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum NodeType {
    /// The active list of an LRU list.
    Active = 0,
    /// The inactive list of an LRU list.
    Inactive = 1,
    /// The free list of an LRU list.
    Free = 2,
    /// A CPU's local free list (common LRU).
    LocalFree = 3,
    /// A CPU's local pending list (common LRU): freshly used nodes not yet in the global lists.
    LocalPending = 4,
}

impl NodeType {
    /// Decodes a stored type; `None` for a value no layout writes.
    pub fn from_u32(value: u32) -> Option<NodeType> {
        Some(match value {
            0 => NodeType::Active,
            1 => NodeType::Inactive,
            2 => NodeType::Free,
            3 => NodeType::LocalFree,
            4 => NodeType::LocalPending,
            _ => return None,
        })
    }

    /// True for the per-CPU local list types.
    pub fn is_local(self) -> bool {
        matches!(self, NodeType::LocalFree | NodeType::LocalPending)
    }
}

/// The shape of one LRU hash map, derived from its definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LruShape {
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes (one CPU's slot for per-CPU values).
    pub value_size: u32,
    /// Number of nodes: `max_entries` after the `NO_COMMON_LRU` rounding.
    pub nodes: u32,
    /// Possible CPUs.
    pub cpus: u32,
    /// True with `BPF_F_NO_COMMON_LRU`: one LRU list per CPU.
    pub percpu_lru: bool,
    /// True for `LRU_PERCPU_HASH`: one value slot per CPU.
    pub percpu_values: bool,
}

/// Byte offsets of every part of an LRU area, for one [`LruShape`] at one base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LruLayout {
    /// The shape the layout was computed for.
    pub shape: LruShape,
    /// Offset of the area (of its lock slot).
    pub base: usize,
    /// Number of hash buckets: `roundup_pow_of_two(nodes)`.
    pub n_buckets: u32,
    /// Number of LRU lists: 1, or `cpus` with `NO_COMMON_LRU`.
    pub n_lists: u32,
    /// Number of links (nodes plus list heads).
    pub n_links: u32,
    /// Bytes of one CPU's value slot in a per-CPU value: `round_up(value_size, 8)`.
    pub slot_stride: usize,
    /// Bytes of the key part of an element: `round_up(key_size, 8)`.
    pub key_area: usize,
    /// Bytes of one element.
    pub elem_stride: usize,
    /// Offset of the header words (magic, count).
    pub header: usize,
    lists: usize,
    steal: usize,
    records: usize,
    buckets: usize,
    elems: usize,
    /// Total bytes of the area.
    pub size: usize,
    /// The common LRU's refill batch ([`super::target_free`]), computed once: it costs two
    /// divisions.
    pub target_free: u32,
}

fn round_up(value: usize, to: usize) -> Option<usize> {
    value.checked_add(to - 1).map(|v| v / to * to)
}

impl LruLayout {
    /// Computes the layout of `shape` at `base` (which must be 64-aligned); `ENOMEM` when the
    /// sizes overflow the address space.
    pub fn new(shape: LruShape, base: usize) -> Result<LruLayout, Errno> {
        let overflow = Errno::ENOMEM;
        let nodes = shape.nodes as usize;
        let cpus = shape.cpus.max(1) as usize;
        let n_buckets = shape
            .nodes
            .checked_next_power_of_two()
            .ok_or(Errno::E2BIG)?;
        let n_lists = if shape.percpu_lru { cpus } else { 1 };
        let local_heads = if shape.percpu_lru { 0 } else { 2 * cpus };
        let n_links = nodes
            .checked_add(3 * n_lists)
            .and_then(|v| v.checked_add(local_heads))
            .filter(|&v| v < NIL as usize)
            .ok_or(overflow)?;
        let slot_stride = round_up(shape.value_size as usize, 8).ok_or(overflow)?;
        let key_area = round_up(shape.key_size as usize, 8).ok_or(overflow)?;
        let value_area = if shape.percpu_values {
            slot_stride.checked_mul(cpus).ok_or(overflow)?
        } else {
            shape.value_size as usize
        };
        let elem_stride = key_area
            .checked_add(value_area)
            .and_then(|v| round_up(v, 8))
            .ok_or(overflow)?;
        let words = |at: usize, count: usize| -> Result<usize, Errno> {
            count
                .checked_mul(4)
                .and_then(|b| at.checked_add(b))
                .ok_or(overflow)
        };
        let header = base.checked_add(LOCK_SLOT_SIZE).ok_or(overflow)?;
        let lists = base.checked_add(128).ok_or(overflow)?;
        let steal = words(lists, 4 * n_lists)?;
        let records = round_up(words(steal, cpus)?, RECORD).ok_or(overflow)?;
        let buckets = n_links
            .checked_mul(RECORD)
            .and_then(|b| records.checked_add(b))
            .ok_or(overflow)?;
        let elems = round_up(words(buckets, n_buckets as usize)?, 8).ok_or(overflow)?;
        let end = elem_stride
            .checked_mul(nodes)
            .and_then(|b| elems.checked_add(b))
            .ok_or(overflow)?;
        let size = round_up(end, 64).ok_or(overflow)? - base;
        Ok(LruLayout {
            n_buckets,
            n_lists: n_lists as u32,
            n_links: n_links as u32,
            slot_stride,
            key_area,
            elem_stride,
            header,
            lists,
            steal,
            records,
            buckets,
            elems,
            size,
            base,
            target_free: super::table::target_free(shape.nodes, shape.cpus),
            shape,
        })
    }

    /// Offset of the magic word.
    pub fn magic_at(&self) -> usize {
        self.header
    }
    /// Offset of the element count.
    pub fn count_at(&self) -> usize {
        self.header + 12
    }
    /// Offset of the table's sequence counter (odd while the lock holder changes things).
    pub fn seq_at(&self) -> usize {
        self.header + 16
    }
    /// Offset of the repair counter.
    pub fn repairs_at(&self) -> usize {
        self.header + 20
    }
    /// Offset of LRU list `list`'s count of nodes of type `ty` (active or inactive).
    pub fn list_count_at(&self, list: u32, ty: NodeType) -> usize {
        self.lists + 16 * list as usize + 4 * ty as usize
    }
    /// Offset of LRU list `list`'s inactive rotation cursor.
    pub fn rotation_at(&self, list: u32) -> usize {
        self.lists + 16 * list as usize + 8
    }
    /// Offset of CPU `cpu`'s next-steal word.
    pub fn steal_at(&self, cpu: u32) -> usize {
        self.steal + 4 * cpu as usize
    }
    #[inline]
    fn record(&self, link: u32) -> usize {
        self.records + RECORD * link as usize
    }
    /// Offset of link `link`'s prev word.
    #[inline]
    pub fn prev_at(&self, link: u32) -> usize {
        self.record(link)
    }
    /// Offset of link `link`'s next word.
    #[inline]
    pub fn next_at(&self, link: u32) -> usize {
        self.record(link) + 4
    }
    /// Offset of node `node`'s type word.
    #[inline]
    pub fn type_at(&self, node: u32) -> usize {
        self.record(node) + 8
    }
    /// Offset of node `node`'s CPU word.
    #[inline]
    pub fn cpu_at(&self, node: u32) -> usize {
        self.record(node) + 12
    }
    /// Offset of node `node`'s reference bit.
    #[inline]
    pub fn ref_at(&self, node: u32) -> usize {
        self.record(node) + 16
    }
    /// Offset of node `node`'s hash.
    #[inline]
    pub fn hash_at(&self, node: u32) -> usize {
        self.record(node) + 20
    }
    /// Offset of node `node`'s hash-chain successor.
    #[inline]
    pub fn hnext_at(&self, node: u32) -> usize {
        self.record(node) + 24
    }
    /// Offset of bucket `bucket`'s first node.
    pub fn bucket_at(&self, bucket: u32) -> usize {
        self.buckets + 4 * bucket as usize
    }
    /// Offset of node `node`'s key.
    pub fn key_at(&self, node: u32) -> usize {
        self.elems + self.elem_stride * node as usize
    }
    /// Offset of node `node`'s value (its first CPU slot for per-CPU values).
    pub fn value_at(&self, node: u32) -> usize {
        self.key_at(node) + self.key_area
    }
    /// The link index of LRU list `list`'s head of type `ty` (active, inactive or free).
    pub fn list_head(&self, list: u32, ty: NodeType) -> u32 {
        self.shape.nodes + 3 * list + ty as u32
    }
    /// The link index of CPU `cpu`'s local free (`LocalFree`) or pending (`LocalPending`) head.
    pub fn local_head(&self, cpu: u32, ty: NodeType) -> u32 {
        let which = if ty == NodeType::LocalPending { 1 } else { 0 };
        self.shape.nodes + 3 * self.n_lists + 2 * cpu + which
    }
}
