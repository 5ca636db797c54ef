//! [`KernelRingBuf`]: the memory of a kernel `BPF_MAP_TYPE_RINGBUF` as its consumer sees it,
//! implementing [`RingBufMemory`] so the engine-neutral
//! [`RingBufConsumer`](bpfmaps_abi::consumer::RingBufConsumer) reads it.
//!
//! Layout as the kernel maps it to user space (`kernel/bpf/ringbuf.c`):
//!
//! | mmap offset | length | protection | content |
//! |---|---|---|---|
//! | 0 | 1 page | read-write | `consumer_pos: u64` at offset 0 (the only word user space writes) |
//! | PAGE_SIZE | 1 page + 2 × data size | read-only | `producer_pos: u64` at offset 0, then the data pages mapped twice back to back |
//!
//! A record at free-running position `pos` starts at data offset `pos & (size - 1)`; thanks to the
//! double mapping its header and payload are contiguous even when they wrap. Waiting is epoll on
//! the map fd (`EPOLLIN` while producer ≠ consumer). It does not parse records; the consumer does.

use std::os::fd::AsFd;
use std::time::Duration;

use bpfmaps_abi::consumer::RingBufConsumer;
use bpfmaps_abi::ringbuf::BPF_RINGBUF_HDR_SZ;
use bpfmaps_abi::{Errno, MapType, RingBufMemory};

use crate::error::Error;
use crate::map::KernelMap;
use crate::sys::{self, Epoll, Mapping};

/// A kernel ring buffer's consumer-side memory: the two mappings and an epoll set on the map fd.
/// It holds its own handle on the map, so the map lives at least as long as this value.
#[derive(Debug)]
pub struct KernelRingBuf {
    consumer_page: Mapping,
    producer_area: Mapping,
    data_size: u64,
    page_size: usize,
    epoll: Epoll,
    map: KernelMap,
}

impl KernelRingBuf {
    /// Maps the ring of `map` (which must be a RINGBUF) and registers it with a new epoll set.
    pub fn new(map: &KernelMap) -> Result<KernelRingBuf, Error> {
        let info = bpfmaps_abi::MapOps::info(map);
        if info.map_type != MapType::Ringbuf {
            return Err(Error::WrongMapType {
                what: "a ring buffer consumer",
                expected: MapType::Ringbuf,
                found: info.map_type,
            });
        }
        let map = map.try_clone()?;
        let page_size = sys::page_size();
        let data_size = u64::from(info.max_entries);
        let data_len = usize::try_from(data_size)
            .map_err(|_| Error::InvalidSize(format!("ring of {data_size} bytes")))?;
        let producer_len = data_len
            .checked_mul(2)
            .and_then(|n| n.checked_add(page_size))
            .ok_or_else(|| Error::InvalidSize(format!("ring of {data_size} bytes")))?;
        let consumer_page = Mapping::map_shared(map.fd(), page_size, 0, true)?;
        let producer_area = Mapping::map_shared(map.fd(), producer_len, page_size, false)?;
        let epoll = Epoll::new()?;
        epoll.add(map.fd().as_fd(), 0)?;
        Ok(KernelRingBuf {
            consumer_page,
            producer_area,
            data_size,
            page_size,
            epoll,
            map,
        })
    }

    /// A consumer over this ring.
    pub fn into_consumer(self) -> RingBufConsumer<KernelRingBuf> {
        RingBufConsumer::new(self)
    }

    /// The ring buffer map.
    pub fn map(&self) -> &KernelMap {
        &self.map
    }

    /// Offset in `producer_area` of the record header at position `pos`.
    fn header_offset(&self, pos: u64) -> usize {
        // The masked offset is below data_size, which fits in usize (checked in `new`).
        self.page_size + (pos & (self.data_size - 1)) as usize
    }
}

impl RingBufMemory for KernelRingBuf {
    fn data_size(&self) -> u64 {
        self.data_size
    }

    fn load_consumer_pos(&self) -> u64 {
        self.consumer_page
            .atomic_u64(0)
            .map_or(0, |a| a.load(std::sync::atomic::Ordering::Acquire))
    }

    fn store_consumer_pos(&self, pos: u64) {
        if let Some(a) = self.consumer_page.atomic_u64(0) {
            a.store(pos, std::sync::atomic::Ordering::Release);
        }
    }

    fn load_producer_pos(&self) -> u64 {
        self.producer_area
            .atomic_u64(0)
            .map_or(0, |a| a.load(std::sync::atomic::Ordering::Acquire))
    }

    fn load_len_word(&self, pos: u64) -> u32 {
        self.producer_area
            .atomic_u32(self.header_offset(pos))
            .map_or(0, |a| a.load(std::sync::atomic::Ordering::Acquire))
    }

    fn payload(&self, pos: u64, len: u32) -> &[u8] {
        let start = self.header_offset(pos) + BPF_RINGBUF_HDR_SZ as usize;
        // A length beyond the double-mapped area cannot come from the kernel; clamp it rather
        // than read outside the mapping.
        let len = (len as usize).min(self.producer_area.len().saturating_sub(start));
        self.producer_area.bytes(start, len).unwrap_or(&[])
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<(), Errno> {
        if self.load_producer_pos() != self.load_consumer_pos() {
            return Ok(());
        }
        self.epoll.wait(timeout).map(drop).map_err(|e| e.errno)
    }
}
