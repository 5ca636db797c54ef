//! Shared memory lent to a running program as VM regions ([`bpfmaps_vm::HostRegion`]): a map
//! value ([`MapValue`], what `bpf_map_lookup_elem` returns and what `lddw` map-value references
//! point at) and a reserved ring buffer record ([`RingRecord`]).
//!
//! Each holds its map (an `Arc`), so the memory stays mapped as long as the VM region exists, and
//! reaches the bytes only through the maps crate's bounds-checked, volatile/atomic accessors: no
//! Rust reference to shared bytes is ever made here. The VM has checked every offset against
//! [`HostRegion::len`] before calling.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bpfmaps_maps::ringbuf::RingBuf;
use bpfmaps_maps::UserMap;
use bpfmaps_vm::HostRegion;

/// `len` bytes at `offset` of a map's region: one map value (one CPU's slot for per-CPU maps).
pub(crate) struct MapValue {
    pub map: Arc<UserMap>,
    pub offset: usize,
    pub len: usize,
}

impl HostRegion for MapValue {
    fn len(&self) -> u64 {
        self.len as u64
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        // offset + buf.len() <= len (checked by the VM), so this stays inside the value.
        self.map.region().read(self.offset + offset as usize, buf);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.map.region().write(self.offset + offset as usize, data);
    }

    /// A real atomic read-modify-write (other threads and processes use the same value), when the
    /// address is naturally aligned, as the kernel's verifier demands of atomics. A misaligned one
    /// falls back to a plain read-modify-write (the kernel would have refused the program).
    fn atomic_update(&mut self, offset: u64, size: u8, update: &mut dyn FnMut(u64) -> u64) -> u64 {
        let at = self.offset + offset as usize;
        let region = self.map.region();
        match size {
            8 if at.is_multiple_of(8) => region
                .atomic_u64(at)
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| Some(update(old)))
                .unwrap_or_else(|old| old),
            4 if at.is_multiple_of(4) => region
                .atomic_u32(at)
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |old| {
                    // The VM masks 32-bit operands; the new value is truncated to the word.
                    Some(update(u64::from(old)) as u32)
                })
                .map(u64::from)
                .unwrap_or_else(u64::from),
            _ => {
                let width = usize::from(size).min(8);
                let mut bytes = [0u8; 8];
                region.read(at, &mut bytes[..width]);
                let old = u64::from_le_bytes(bytes);
                region.write(at, &update(old).to_le_bytes()[..width]);
                old
            }
        }
    }
}

/// The payload of a record reserved with `bpf_ringbuf_reserve`, until it is submitted or
/// discarded. The record is the reserving program's alone (it is BUSY), so plain accesses are
/// enough, and the trait's default read-modify-write serves atomics.
pub(crate) struct RingRecord {
    pub map: Arc<UserMap>,
    pub payload_offset: u64,
    pub size: u32,
}

impl RingRecord {
    fn ring(&self) -> Option<&RingBuf> {
        self.map.backend().as_any().downcast_ref::<RingBuf>()
    }
}

impl HostRegion for RingRecord {
    fn len(&self) -> u64 {
        u64::from(self.size)
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        let Some(ring) = self.ring() else {
            buf.fill(0);
            return;
        };
        match ring.handle_at(self.payload_offset) {
            Some(handle) if ring.read_payload(&handle, offset, buf).is_ok() => {}
            // The record is no longer reserved (another process reclaimed it): reads see zeros.
            _ => buf.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(ring) = self.ring() else {
            return;
        };
        if let Some(handle) = ring.handle_at(self.payload_offset) {
            // The VM checked offset + len <= size, which is what write_payload checks again.
            let _ = ring.write_payload(&handle, offset, data);
        }
    }
}
