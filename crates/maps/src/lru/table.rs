//! The kernel's LRU algorithm (`kernel/bpf/bpf_lru_list.c`) and the LRU hash table
//! (`kernel/bpf/hashtab.c`'s `htab_lru_*`), over an [`LruLayout`] in a [`Region`].
//!
//! Owns list and chain manipulation: taking a node for an update (local free list, refill from
//! the global lists with rotation and shrinking, stealing from other CPUs; or the per-CPU lists of
//! `NO_COMMON_LRU`), giving nodes back, and the hash chains that make nodes findable. It does not
//! check flags or permissions and does not lock: every method expects the caller to hold the
//! area's lock (the map type in `lru.rs` does).
//!
//! The behaviour, step for step, is the kernel's, because which keys survive is observable:
//! * a node is taken *before* the bucket is searched, so a failing update can still evict;
//! * refilling a CPU's local free list flushes its pending list into the global lists
//!   (referenced nodes to active), rotates (active list when it outgrows the inactive one, then
//!   up to `nr_scans` inactive nodes from the rotation cursor), moves up to `target_free` free
//!   nodes, and shrinks the inactive tail (or force-evicts one node) for the rest;
//! * with an empty global list, nodes are stolen round robin from CPUs' local free lists, then
//!   from their pending lists (unreferenced first).

use std::sync::atomic::{AtomicU32, Ordering};

use bpfmaps_abi::{Errno, MapError};

use super::layout::{LruLayout, NodeType, NIL};
use crate::region::Region;

/// `LOCAL_NR_SCANS`: how many nodes one rotation or shrink of the common LRU looks at.
pub const NR_SCANS: u32 = 128;
/// `PERCPU_NR_SCANS`: how many nodes one rotation or shrink of a `NO_COMMON_LRU` list looks at.
pub const PERCPU_NR_SCANS: u32 = 4;
/// `LOCAL_FREE_TARGET`: the upper bound of a common LRU's `target_free`.
pub const LOCAL_FREE_TARGET: u32 = 128;
/// `PERCPU_FREE_TARGET`: how many nodes a `NO_COMMON_LRU` shrink frees at once.
pub const PERCPU_FREE_TARGET: u32 = 4;

/// `cpu % cpus` without a division in the usual case (`cpu` already below `cpus`); `cpus` of 0
/// counts as 1.
#[inline(always)]
pub fn reduce_cpu(cpu: u32, cpus: u32) -> u32 {
    if cpu < cpus {
        cpu
    } else {
        cpu % cpus.max(1)
    }
}

/// The common LRU's refill batch: `clamp(nodes / cpus / 2, 1, LOCAL_FREE_TARGET)`.
pub fn target_free(nodes: u32, cpus: u32) -> u32 {
    (nodes / cpus.max(1) / 2).clamp(1, LOCAL_FREE_TARGET)
}

/// Contents of the shared area that cannot be right: the map file was changed by something
/// other than this code (or the disk lied). Every walk of a list or chain checks the indices it
/// reads and the number of steps it takes, so corruption surfaces as this error, never as a
/// panic or an endless loop. Map operations report it as `EFAULT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Corrupt {
    /// A list link (`prev`/`next`/rotation cursor) outside the link arrays.
    #[error("corrupt LRU map: list link {0} out of range")]
    Link(u32),
    /// A hash chain or bucket word naming a node that does not exist.
    #[error("corrupt LRU map: node {0} out of range")]
    Node(u32),
    /// A list or hash chain longer than the number of nodes: it has a cycle.
    #[error("corrupt LRU map: a list or hash chain has a cycle")]
    Cycle,
}

impl From<Corrupt> for Errno {
    fn from(_: Corrupt) -> Errno {
        Errno::EFAULT
    }
}

impl From<Corrupt> for MapError {
    fn from(corrupt: Corrupt) -> MapError {
        MapError::Errno(Errno::from(corrupt))
    }
}

/// A view of one LRU area, used while its lock is held.
pub struct Table<'a> {
    region: &'a Region,
    /// The whole area as 4-byte atomic words, bounds-checked once in [`Table::new`]: every
    /// access after that is one slice index.
    words: &'a [AtomicU32],
    layout: &'a LruLayout,
    target_free: u32,
    nr_scans: u32,
}

impl<'a> Table<'a> {
    /// A view of the area `layout` describes in `region`.
    #[inline(always)]
    pub fn new(region: &'a Region, layout: &'a LruLayout) -> Table<'a> {
        let target_free = layout.target_free;
        let nr_scans = if layout.shape.percpu_lru {
            PERCPU_NR_SCANS
        } else {
            NR_SCANS
        };
        Table {
            region,
            words: region.atomic_u32_slice(layout.base, layout.size / 4),
            layout,
            target_free,
            nr_scans,
        }
    }

    /// True when `node`'s element holds `key`.
    #[inline(always)]
    fn key_equals(&self, node: u32, key: &[u8]) -> bool {
        let first = (self.layout.key_at(node) - self.layout.base) / 4;
        crate::region::words_equal(&self.words[first..first + key.len().div_ceil(4)], key)
    }

    /// Writes `data` at region offset `off` (inside the area, 4-aligned: a key or a value).
    #[inline(always)]
    pub fn write_bytes(&self, off: usize, data: &[u8]) {
        let first = (off - self.layout.base) / 4;
        crate::region::write_words(&self.words[first..first + data.len().div_ceil(4)], data);
    }

    /// The word at region offset `off` (inside the area, 4-aligned).
    #[inline(always)]
    fn word(&self, off: usize) -> &'a AtomicU32 {
        &self.words[(off - self.layout.base) / 4]
    }

    #[inline(always)]
    fn load(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::Relaxed)
    }

    #[inline(always)]
    fn store(&self, off: usize, value: u32) {
        self.word(off).store(value, Ordering::Relaxed)
    }

    /// A link index read from shared memory, checked against the layout so a corrupt word
    /// cannot send us outside the link arrays.
    #[inline(always)]
    fn checked_link(&self, link: u32) -> Result<u32, Corrupt> {
        if link < self.layout.n_links {
            Ok(link)
        } else {
            Err(Corrupt::Link(link))
        }
    }

    #[inline(always)]
    fn next(&self, link: u32) -> Result<u32, Corrupt> {
        self.checked_link(self.load(self.layout.next_at(link)))
    }

    #[inline(always)]
    fn prev(&self, link: u32) -> Result<u32, Corrupt> {
        self.checked_link(self.load(self.layout.prev_at(link)))
    }

    /// A link met inside a list (not that list's head), which must therefore be an element
    /// node: a link to some other head there is corruption.
    #[inline(always)]
    fn elem(&self, link: u32) -> Result<u32, Corrupt> {
        if link < self.layout.shape.nodes {
            Ok(link)
        } else {
            Err(Corrupt::Link(link))
        }
    }

    #[inline(always)]
    fn set_next(&self, link: u32, to: u32) {
        self.store(self.layout.next_at(link), to)
    }

    #[inline(always)]
    fn set_prev(&self, link: u32, to: u32) {
        self.store(self.layout.prev_at(link), to)
    }

    /// Counts one step of a walk along a list or chain: a walk longer than there are links
    /// can only be going round a cycle that corruption made.
    #[inline(always)]
    fn step(&self, steps: &mut u32) -> Result<(), Corrupt> {
        *steps += 1;
        if *steps > self.layout.n_links {
            return Err(Corrupt::Cycle);
        }
        Ok(())
    }

    /// The list type of `node`.
    #[inline(always)]
    pub fn node_type(&self, node: u32) -> Option<NodeType> {
        NodeType::from_u32(self.load(self.layout.type_at(node)))
    }

    #[inline(always)]
    fn set_type(&self, node: u32, ty: NodeType) {
        self.store(self.layout.type_at(node), ty as u32)
    }

    /// The CPU recorded in `node`, reduced to a valid CPU.
    #[inline(always)]
    pub fn node_cpu(&self, node: u32) -> u32 {
        reduce_cpu(self.load(self.layout.cpu_at(node)), self.layout.shape.cpus)
    }

    #[inline(always)]
    fn set_cpu(&self, node: u32, cpu: u32) {
        self.store(self.layout.cpu_at(node), cpu)
    }

    /// True when `node`'s reference bit is set.
    #[inline(always)]
    pub fn is_ref(&self, node: u32) -> bool {
        self.load(self.layout.ref_at(node)) != 0
    }

    /// Sets `node`'s reference bit (`bpf_lru_node_set_ref`).
    #[inline(always)]
    pub fn set_ref(&self, node: u32) {
        let word = self.word(self.layout.ref_at(node));
        if word.load(Ordering::Relaxed) == 0 {
            word.store(1, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    fn clear_ref(&self, node: u32) {
        self.store(self.layout.ref_at(node), 0)
    }

    /// The hash recorded in `node`.
    #[inline(always)]
    pub fn node_hash(&self, node: u32) -> u32 {
        self.load(self.layout.hash_at(node))
    }

    // ---- circular doubly linked lists with sentinel heads (`list_head`) ----

    #[inline(always)]
    fn list_init(&self, head: u32) {
        self.set_next(head, head);
        self.set_prev(head, head);
    }

    #[inline(always)]
    fn list_is_empty(&self, head: u32) -> Result<bool, Corrupt> {
        Ok(self.next(head)? == head)
    }

    /// Inserts `link` right after `head` (`list_add`).
    #[inline(always)]
    fn list_add(&self, link: u32, head: u32) -> Result<(), Corrupt> {
        let first = self.next(head)?;
        self.set_next(link, first);
        self.set_prev(link, head);
        self.set_prev(first, link);
        self.set_next(head, link);
        Ok(())
    }

    /// Unlinks `link` from whatever list holds it (`list_del`, leaving it self-linked).
    #[inline(always)]
    fn list_del(&self, link: u32) -> Result<(), Corrupt> {
        let prev = self.prev(link)?;
        let next = self.next(link)?;
        self.set_next(prev, next);
        self.set_prev(next, prev);
        self.list_init(link);
        Ok(())
    }

    #[inline(always)]
    fn list_move(&self, link: u32, head: u32) -> Result<(), Corrupt> {
        self.list_del(link)?;
        self.list_add(link, head)
    }

    // ---- LRU list counts and moves ----

    #[inline(always)]
    fn count_add(&self, list: u32, ty: NodeType, delta: i32) {
        if matches!(ty, NodeType::Active | NodeType::Inactive) {
            let off = self.layout.list_count_at(list, ty);
            self.store(off, self.load(off).wrapping_add_signed(delta));
        }
    }

    /// LRU list `list`'s count of active (or inactive) nodes.
    #[inline(always)]
    pub fn list_count(&self, list: u32, ty: NodeType) -> u32 {
        self.load(self.layout.list_count_at(list, ty))
    }

    #[inline(always)]
    fn rotation(&self, list: u32) -> Result<u32, Corrupt> {
        self.checked_link(self.load(self.layout.rotation_at(list)))
    }

    #[inline(always)]
    fn set_rotation(&self, list: u32, link: u32) {
        self.store(self.layout.rotation_at(list), link)
    }

    #[inline(always)]
    fn head(&self, list: u32, ty: NodeType) -> u32 {
        self.layout.list_head(list, ty)
    }

    /// Moves a node of an LRU list's lists onto a free list (`__bpf_lru_node_move_to_free`).
    #[inline(always)]
    fn move_to_free(
        &self,
        list: u32,
        node: u32,
        free_head: u32,
        ty: NodeType,
    ) -> Result<(), Corrupt> {
        if self.rotation(list)? == node {
            self.set_rotation(list, self.prev(node)?);
        }
        if let Some(old) = self.node_type(node) {
            self.count_add(list, old, -1);
        }
        self.set_type(node, ty);
        self.list_move(node, free_head)
    }

    /// Moves a node from a local list into an LRU list (`__bpf_lru_node_move_in`).
    #[inline(always)]
    fn move_in(&self, list: u32, node: u32, ty: NodeType) -> Result<(), Corrupt> {
        self.count_add(list, ty, 1);
        self.set_type(node, ty);
        self.clear_ref(node);
        self.list_move(node, self.head(list, ty))
    }

    /// Moves a node within or between an LRU list's lists, to the head (`__bpf_lru_node_move`).
    #[inline(always)]
    fn move_node(&self, list: u32, node: u32, ty: NodeType) -> Result<(), Corrupt> {
        let old = self.node_type(node);
        if old != Some(ty) {
            if let Some(old) = old {
                self.count_add(list, old, -1);
            }
            self.count_add(list, ty, 1);
            self.set_type(node, ty);
        }
        self.clear_ref(node);
        if self.rotation(list)? == node {
            self.set_rotation(list, self.prev(node)?);
        }
        self.list_move(node, self.head(list, ty))
    }

    fn rotate_active(&self, list: u32) -> Result<(), Corrupt> {
        let active = self.head(list, NodeType::Active);
        let first = self.next(active)?;
        let mut node = self.prev(active)?;
        let mut scanned = 0;
        while node != active {
            self.elem(node)?;
            let earlier = self.prev(node)?;
            let target = if self.is_ref(node) {
                NodeType::Active
            } else {
                NodeType::Inactive
            };
            self.move_node(list, node, target)?;
            scanned += 1;
            if scanned == self.nr_scans || node == first {
                break;
            }
            node = earlier;
        }
        Ok(())
    }

    fn rotate_inactive(&self, list: u32) -> Result<(), Corrupt> {
        let inactive = self.head(list, NodeType::Inactive);
        if self.list_is_empty(inactive)? {
            return Ok(());
        }
        let mut last = self.next(self.rotation(list)?)?;
        if last == inactive {
            last = self.next(last)?;
        }
        let mut cur = self.rotation(list)?;
        let mut earlier = cur;
        let mut scanned = 0;
        let mut steps = 0;
        while scanned < self.nr_scans {
            self.step(&mut steps)?;
            if cur == inactive {
                cur = self.prev(cur)?;
                continue;
            }
            self.elem(cur)?;
            earlier = self.prev(cur)?;
            if self.is_ref(cur) {
                self.move_node(list, cur, NodeType::Active)?;
            }
            if cur == last {
                break;
            }
            cur = earlier;
            scanned += 1;
        }
        self.set_rotation(list, earlier);
        Ok(())
    }

    fn rotate(&self, list: u32) -> Result<(), Corrupt> {
        if self.list_count(list, NodeType::Inactive) < self.list_count(list, NodeType::Active) {
            self.rotate_active(list)?;
        }
        self.rotate_inactive(list)
    }

    fn shrink_inactive(
        &self,
        list: u32,
        want: u32,
        free_head: u32,
        ty: NodeType,
    ) -> Result<u32, Corrupt> {
        let inactive = self.head(list, NodeType::Inactive);
        let mut node = self.prev(inactive)?;
        let mut shrunk = 0;
        let mut scanned = 0;
        while node != inactive {
            self.elem(node)?;
            let earlier = self.prev(node)?;
            if self.is_ref(node) {
                self.move_node(list, node, NodeType::Active)?;
            } else if self.del_from_table(node)? {
                self.move_to_free(list, node, free_head, ty)?;
                shrunk += 1;
                if shrunk == want {
                    break;
                }
            }
            scanned += 1;
            if scanned == self.nr_scans {
                break;
            }
            node = earlier;
        }
        Ok(shrunk)
    }

    fn shrink(&self, list: u32, want: u32, free_head: u32, ty: NodeType) -> Result<u32, Corrupt> {
        let shrunk = self.shrink_inactive(list, want, free_head, ty)?;
        if shrunk > 0 {
            return Ok(shrunk);
        }
        let inactive = self.head(list, NodeType::Inactive);
        let force = if self.list_is_empty(inactive)? {
            self.head(list, NodeType::Active)
        } else {
            inactive
        };
        let mut node = self.prev(force)?;
        let mut steps = 0;
        while node != force {
            self.step(&mut steps)?;
            self.elem(node)?;
            let earlier = self.prev(node)?;
            if self.del_from_table(node)? {
                self.move_to_free(list, node, free_head, ty)?;
                return Ok(1);
            }
            node = earlier;
        }
        Ok(0)
    }

    fn flush_pending(&self, cpu: u32) -> Result<(), Corrupt> {
        let pending = self.layout.local_head(cpu, NodeType::LocalPending);
        let mut node = self.prev(pending)?;
        let mut steps = 0;
        while node != pending {
            self.step(&mut steps)?;
            self.elem(node)?;
            let earlier = self.prev(node)?;
            let ty = if self.is_ref(node) {
                NodeType::Active
            } else {
                NodeType::Inactive
            };
            self.move_in(0, node, ty)?;
            node = earlier;
        }
        Ok(())
    }

    fn refill_local(&self, cpu: u32) -> Result<(), Corrupt> {
        let local_free = self.layout.local_head(cpu, NodeType::LocalFree);
        self.flush_pending(cpu)?;
        self.rotate(0)?;
        let free = self.head(0, NodeType::Free);
        let mut moved = 0;
        let mut node = self.next(free)?;
        while node != free && moved < self.target_free {
            self.elem(node)?;
            let later = self.next(node)?;
            self.move_to_free(0, node, local_free, NodeType::LocalFree)?;
            moved += 1;
            node = later;
        }
        if moved < self.target_free {
            self.shrink(0, self.target_free - moved, local_free, NodeType::LocalFree)?;
        }
        Ok(())
    }

    #[inline(always)]
    fn pop_local_free(&self, cpu: u32) -> Result<Option<u32>, Corrupt> {
        let head = self.layout.local_head(cpu, NodeType::LocalFree);
        let node = self.next(head)?;
        if node == head {
            return Ok(None);
        }
        self.elem(node)?;
        self.list_del(node)?;
        Ok(Some(node))
    }

    fn pop_local_pending(&self, cpu: u32) -> Result<Option<u32>, Corrupt> {
        let head = self.layout.local_head(cpu, NodeType::LocalPending);
        for force in [false, true] {
            let mut node = self.prev(head)?;
            let mut steps = 0;
            while node != head {
                self.step(&mut steps)?;
                self.elem(node)?;
                let earlier = self.prev(node)?;
                if (force || !self.is_ref(node)) && self.del_from_table(node)? {
                    self.list_del(node)?;
                    return Ok(Some(node));
                }
                node = earlier;
            }
        }
        Ok(None)
    }

    #[inline(always)]
    fn add_pending(&self, cpu: u32, node: u32, hash: u32) -> Result<(), Corrupt> {
        self.store(self.layout.hash_at(node), hash);
        self.set_cpu(node, cpu);
        self.set_type(node, NodeType::LocalPending);
        self.clear_ref(node);
        self.list_add(node, self.layout.local_head(cpu, NodeType::LocalPending))
    }

    /// Takes a node for a new element whose key hashes to `hash`, on behalf of `cpu`
    /// (`bpf_lru_pop_free`). The node may come from evicting another element. `None` only when no
    /// node exists anywhere (which cannot happen while this process holds the lock).
    #[inline(always)]
    pub fn pop_free(&self, hash: u32, cpu: u32) -> Result<Option<u32>, Corrupt> {
        let cpus = self.layout.shape.cpus.max(1);
        let cpu = reduce_cpu(cpu, cpus);
        if self.layout.shape.percpu_lru {
            return self.percpu_pop_free(hash, cpu);
        }
        let mut node = self.pop_local_free(cpu)?;
        if node.is_none() {
            self.refill_local(cpu)?;
            node = self.pop_local_free(cpu)?;
        }
        if let Some(node) = node {
            self.add_pending(cpu, node, hash)?;
            return Ok(Some(node));
        }
        let first_steal = self.load(self.layout.steal_at(cpu)) % cpus;
        let mut steal = first_steal;
        let mut found = None;
        loop {
            if found.is_none() {
                found = self.pop_local_free(steal)?;
            }
            if found.is_none() {
                found = self.pop_local_pending(steal)?;
            }
            steal = (steal + 1) % cpus;
            if found.is_some() || steal == first_steal {
                break;
            }
        }
        self.store(self.layout.steal_at(cpu), steal);
        let Some(node) = found else {
            return Ok(None);
        };
        self.add_pending(cpu, node, hash)?;
        Ok(Some(node))
    }

    fn percpu_pop_free(&self, hash: u32, cpu: u32) -> Result<Option<u32>, Corrupt> {
        self.rotate(cpu)?;
        let free = self.head(cpu, NodeType::Free);
        if self.list_is_empty(free)? {
            self.shrink(cpu, PERCPU_FREE_TARGET, free, NodeType::Free)?;
        }
        let node = self.next(free)?;
        if node == free {
            return Ok(None);
        }
        self.elem(node)?;
        self.store(self.layout.hash_at(node), hash);
        self.clear_ref(node);
        self.move_node(cpu, node, NodeType::Inactive)?;
        Ok(Some(node))
    }

    /// Gives a node back after its element left the table, or after a failed update
    /// (`bpf_lru_push_free`).
    #[inline(always)]
    pub fn push_free(&self, node: u32) -> Result<(), Corrupt> {
        let ty = self.node_type(node);
        if matches!(ty, Some(NodeType::Free) | Some(NodeType::LocalFree)) {
            return Ok(());
        }
        if self.layout.shape.percpu_lru {
            return self.move_node(self.node_cpu(node), node, NodeType::Free);
        }
        if ty == Some(NodeType::LocalPending) {
            let cpu = self.node_cpu(node);
            self.set_type(node, NodeType::LocalFree);
            self.clear_ref(node);
            return self.list_move(node, self.layout.local_head(cpu, NodeType::LocalFree));
        }
        self.move_node(0, node, NodeType::Free)
    }

    // ---- the hash table ----

    #[inline(always)]
    fn bucket_of(&self, hash: u32) -> u32 {
        hash & (self.layout.n_buckets - 1)
    }

    #[inline(always)]
    fn checked_node(&self, node: u32) -> Result<Option<u32>, Corrupt> {
        if node == NIL {
            Ok(None)
        } else if node < self.layout.shape.nodes {
            Ok(Some(node))
        } else {
            Err(Corrupt::Node(node))
        }
    }

    /// The first node of bucket `bucket`.
    #[inline(always)]
    pub fn bucket_first(&self, bucket: u32) -> Result<Option<u32>, Corrupt> {
        self.checked_node(self.load(self.layout.bucket_at(bucket)))
    }

    /// The node after `node` in its bucket.
    #[inline(always)]
    pub fn chain_next(&self, node: u32) -> Result<Option<u32>, Corrupt> {
        self.checked_node(self.load(self.layout.hnext_at(node)))
    }

    /// Counts one step along a hash chain: a chain longer than there are nodes has a cycle.
    /// Every walk of a chain calls this once per node.
    #[inline(always)]
    pub fn chain_step(&self, steps: &mut u32) -> Result<(), Corrupt> {
        *steps += 1;
        if *steps > self.layout.shape.nodes {
            return Err(Corrupt::Cycle);
        }
        Ok(())
    }

    /// The node holding `key` (whose hash is `hash`), if any (`lookup_elem_raw`).
    #[inline(always)]
    pub fn find(&self, hash: u32, key: &[u8]) -> Result<Option<u32>, Corrupt> {
        let mut cur = self.bucket_first(self.bucket_of(hash))?;
        let mut steps = 0;
        while let Some(node) = cur {
            self.chain_step(&mut steps)?;
            if self.node_hash(node) == hash && self.key_equals(node, key) {
                return Ok(Some(node));
            }
            cur = self.chain_next(node)?;
        }
        Ok(None)
    }

    /// Links `node` (whose hash is already recorded) at the head of its bucket. The store of the
    /// bucket word publishes it in one step.
    #[inline(always)]
    pub fn link_head(&self, node: u32) {
        let bucket = self.layout.bucket_at(self.bucket_of(self.node_hash(node)));
        self.store(self.layout.hnext_at(node), self.load(bucket));
        self.store(bucket, node);
        let count = self.layout.count_at();
        self.store(count, self.load(count).wrapping_add(1));
    }

    /// Unlinks `node` from its bucket; false when it is not linked there (`del_from_htab`'s
    /// search). The single store to the predecessor removes it in one step.
    #[inline(always)]
    pub fn unlink(&self, node: u32) -> Result<bool, Corrupt> {
        let bucket = self.bucket_of(self.node_hash(node));
        let mut link_word = self.layout.bucket_at(bucket);
        let mut cur = self.bucket_first(bucket)?;
        let mut steps = 0;
        while let Some(c) = cur {
            self.chain_step(&mut steps)?;
            if c == node {
                self.store(link_word, self.load(self.layout.hnext_at(node)));
                let count = self.layout.count_at();
                self.store(count, self.load(count).wrapping_sub(1));
                return Ok(true);
            }
            link_word = self.layout.hnext_at(c);
            cur = self.chain_next(c)?;
        }
        Ok(false)
    }

    fn del_from_table(&self, node: u32) -> Result<bool, Corrupt> {
        self.unlink(node)
    }

    // ---- set-up, checks, repair ----

    /// Puts every node on the free lists of a fresh area (`bpf_lru_populate`) and empties the
    /// table. The area must be zeroed and not yet visible to anyone else.
    pub fn populate(&self) -> Result<(), Corrupt> {
        let layout = self.layout;
        let nodes = layout.shape.nodes;
        for link in nodes..layout.n_links {
            self.list_init(link);
        }
        for list in 0..layout.n_lists {
            self.set_rotation(list, self.head(list, NodeType::Inactive));
        }
        if !layout.shape.percpu_lru {
            for cpu in 0..layout.shape.cpus {
                self.store(layout.steal_at(cpu), cpu);
            }
        }
        for bucket in 0..layout.n_buckets {
            self.store(layout.bucket_at(bucket), NIL);
        }
        let per_cpu = nodes / layout.n_lists;
        for node in 0..nodes {
            let list = if layout.shape.percpu_lru {
                node / per_cpu.max(1)
            } else {
                0
            };
            let list = list.min(layout.n_lists - 1);
            self.store(layout.hnext_at(node), NIL);
            self.set_cpu(node, list);
            self.set_type(node, NodeType::Free);
            self.clear_ref(node);
            self.list_init(node);
            self.list_add(node, self.head(list, NodeType::Free))?;
        }
        Ok(())
    }

    /// Rebuilds every list from the hash chains after a process died holding the lock: elements
    /// reachable from a bucket (the first of any duplicated key wins, as lookups see it) go to
    /// their LRU list's inactive list, every other node to its free list; local lists end empty.
    pub fn repair(&self) -> Result<(), Corrupt> {
        let layout = self.layout;
        let repairs = layout.repairs_at();
        self.store(repairs, self.load(repairs).wrapping_add(1));
        let nodes = layout.shape.nodes;
        let mut in_table = vec![false; nodes as usize];
        let mut count = 0u32;
        for bucket in 0..layout.n_buckets {
            let mut link_word = layout.bucket_at(bucket);
            let mut steps = 0;
            loop {
                let raw = self.load(link_word);
                if raw == NIL {
                    break;
                }
                let cycle = raw >= nodes || in_table[raw as usize] || steps > nodes;
                let duplicate = !cycle && self.earlier_same_key(bucket, raw)?;
                if cycle || duplicate {
                    // Cut the node out (or the chain off, for a corrupt link).
                    let after = if cycle {
                        NIL
                    } else {
                        self.load(layout.hnext_at(raw))
                    };
                    self.store(link_word, after);
                    continue;
                }
                in_table[raw as usize] = true;
                count += 1;
                steps += 1;
                link_word = layout.hnext_at(raw);
            }
        }
        self.store(layout.count_at(), count);
        for link in nodes..layout.n_links {
            self.list_init(link);
        }
        for list in 0..layout.n_lists {
            self.store(layout.list_count_at(list, NodeType::Active), 0);
            self.store(layout.list_count_at(list, NodeType::Inactive), 0);
            self.set_rotation(list, self.head(list, NodeType::Inactive));
        }
        let per_cpu = (nodes / layout.n_lists).max(1);
        for node in 0..nodes {
            let list = if layout.shape.percpu_lru {
                (node / per_cpu).min(layout.n_lists - 1)
            } else {
                0
            };
            self.set_cpu(node, list);
            self.list_init(node);
            let ty = if in_table[node as usize] {
                NodeType::Inactive
            } else {
                NodeType::Free
            };
            self.set_type(node, ty);
            self.count_add(list, ty, 1);
            self.list_add(node, self.head(list, ty))?;
        }
        Ok(())
    }

    fn earlier_same_key(&self, bucket: u32, node: u32) -> Result<bool, Corrupt> {
        let key_len = self.layout.shape.key_size as usize;
        let mut key = vec![0u8; key_len];
        self.region.read(self.layout.key_at(node), &mut key);
        let mut cur = self.bucket_first(bucket)?;
        let mut steps = 0;
        while let Some(c) = cur {
            self.chain_step(&mut steps)?;
            if c == node {
                return Ok(false);
            }
            if self.node_hash(c) == self.node_hash(node)
                && self.region.bytes_equal(self.layout.key_at(c), &key)
            {
                return Ok(true);
            }
            cur = self.chain_next(c)?;
        }
        Ok(false)
    }

    /// Checks the structural invariants: every node on exactly one list whose type it records,
    /// list counts right, linked nodes exactly the active/inactive/pending ones that the chains
    /// reach, element count right. Returns a description of the first violation.
    pub fn check(&self) -> Result<LruCensus, String> {
        let layout = self.layout;
        let nodes = layout.shape.nodes as usize;
        let mut seen: Vec<Option<NodeType>> = vec![None; nodes];
        let mut census = LruCensus::default();
        let mut visit = |head: u32, ty: NodeType, census: &mut LruCensus| -> Result<u32, String> {
            let mut n = 0;
            let mut prev = head;
            let mut cur = self.next(head).map_err(|e| e.to_string())?;
            while cur != head {
                if cur as usize >= nodes {
                    return Err(format!("list head {head} reaches link {cur}, not a node"));
                }
                if self.prev(cur).map_err(|e| e.to_string())? != prev {
                    return Err(format!("node {cur}: prev link broken"));
                }
                if seen[cur as usize].is_some() {
                    return Err(format!("node {cur} is on two lists"));
                }
                if self.node_type(cur) != Some(ty) {
                    return Err(format!(
                        "node {cur} on a {ty:?} list records {:?}",
                        self.node_type(cur)
                    ));
                }
                seen[cur as usize] = Some(ty);
                n += 1;
                prev = cur;
                cur = self.next(cur).map_err(|e| e.to_string())?;
            }
            match ty {
                NodeType::Active => census.active += n,
                NodeType::Inactive => census.inactive += n,
                NodeType::Free => census.free += n,
                NodeType::LocalFree => census.local_free += n,
                NodeType::LocalPending => census.pending += n,
            }
            Ok(n)
        };
        for list in 0..layout.n_lists {
            for ty in [NodeType::Active, NodeType::Inactive, NodeType::Free] {
                let n = visit(self.head(list, ty), ty, &mut census)?;
                if ty != NodeType::Free && n != self.list_count(list, ty) {
                    return Err(format!(
                        "list {list} {ty:?}: {n} nodes but count {}",
                        self.list_count(list, ty)
                    ));
                }
            }
        }
        if !layout.shape.percpu_lru {
            for cpu in 0..layout.shape.cpus {
                visit(
                    layout.local_head(cpu, NodeType::LocalFree),
                    NodeType::LocalFree,
                    &mut census,
                )?;
                visit(
                    layout.local_head(cpu, NodeType::LocalPending),
                    NodeType::LocalPending,
                    &mut census,
                )?;
            }
        }
        if let Some(lost) = seen.iter().position(Option::is_none) {
            return Err(format!("node {lost} is on no list"));
        }
        let mut linked = 0u32;
        for bucket in 0..layout.n_buckets {
            let mut cur = self.bucket_first(bucket).map_err(|e| e.to_string())?;
            while let Some(node) = cur {
                if self.bucket_of(self.node_hash(node)) != bucket {
                    return Err(format!("node {node} chained in the wrong bucket {bucket}"));
                }
                match seen[node as usize] {
                    Some(NodeType::Free) | Some(NodeType::LocalFree) => {
                        return Err(format!("free node {node} is linked in the table"))
                    }
                    _ => {}
                }
                linked += 1;
                if linked > layout.shape.nodes {
                    return Err("hash chains loop".into());
                }
                cur = self.chain_next(node).map_err(|e| e.to_string())?;
            }
        }
        let in_use = census.active + census.inactive + census.pending;
        if linked != in_use {
            return Err(format!(
                "{linked} nodes linked but {in_use} on in-use lists"
            ));
        }
        if self.load(layout.count_at()) != linked {
            return Err(format!(
                "element count {} but {linked} linked",
                self.load(layout.count_at())
            ));
        }
        census.elements = linked;
        Ok(census)
    }
}

/// How many nodes are on each kind of list, from [`Table::check`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LruCensus {
    /// Nodes on active lists.
    pub active: u32,
    /// Nodes on inactive lists.
    pub inactive: u32,
    /// Nodes on LRU free lists.
    pub free: u32,
    /// Nodes on CPUs' local free lists.
    pub local_free: u32,
    /// Nodes on CPUs' pending lists.
    pub pending: u32,
    /// Elements linked in the hash table.
    pub elements: u32,
}
