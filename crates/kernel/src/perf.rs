//! [`KernelPerfBuffer`]: a perf buffer over a kernel `BPF_MAP_TYPE_PERF_EVENT_ARRAY`, read by the
//! engine-neutral [`PerfBufConsumer`].
//!
//! For each possible CPU (up to the map's max_entries) it opens a `PERF_COUNT_SW_BPF_OUTPUT`
//! event (`perf_event_open`, pid −1, that CPU, raw samples, sample_period 1), maps its ring
//! read-write as `1 + 2^n` pages, enables it, stores its fd in `map[cpu]`, and watches it with
//! epoll. Per-CPU ring layout (`include/uapi/linux/perf_event.h`):
//!
//! | offset | content |
//! |---|---|
//! | 0 .. PAGE_SIZE | `struct perf_event_mmap_page`: `data_head` at 1024 (kernel writes), `data_tail` at 1032 (we write), `data_offset` at 1040, `data_size` at 1048 |
//! | data_offset .. + data_size | the records, **not** double-mapped: a record may wrap |
//!
//! Entry lifetime: the kernel clears the entries a map *file* installed when that file is
//! released (unless the map has `BPF_F_PRESERVE_ELEMS`). The buffer keeps its own `dup` of the map
//! fd, so entries stay exactly as long as the buffer.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bpfmaps_abi::consumer::{PerfBufConsumer, PerfWait};
use bpfmaps_abi::ringbuf::perf::{
    DATA_HEAD_OFFSET, DATA_OFFSET_OFFSET, DATA_SIZE_OFFSET, DATA_TAIL_OFFSET,
};
use bpfmaps_abi::{Errno, MapOps, MapType, PerfRingMemory};

use crate::error::Error;
use crate::map::{possible_cpus, KernelMap};
use crate::sys::{self, Epoll, Mapping};

/// One CPU's perf ring: the event fd and its mapping.
#[derive(Debug)]
pub struct KernelPerfRing {
    mapping: Mapping,
    data_offset: usize,
    data_size: u64,
    event: OwnedFd,
}

impl KernelPerfRing {
    /// The perf event fd.
    pub fn event_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.event.as_fd()
    }
}

impl PerfRingMemory for KernelPerfRing {
    fn data_size(&self) -> u64 {
        self.data_size
    }

    fn load_head(&self) -> u64 {
        self.mapping
            .atomic_u64(DATA_HEAD_OFFSET)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    fn load_tail(&self) -> u64 {
        self.mapping
            .atomic_u64(DATA_TAIL_OFFSET)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    fn store_tail(&self, tail: u64) {
        if let Some(a) = self.mapping.atomic_u64(DATA_TAIL_OFFSET) {
            a.store(tail, Ordering::Release);
        }
    }

    fn copy_out(&self, pos: u64, out: &mut [u8]) {
        let mut done = 0usize;
        while done < out.len() {
            let position = pos.wrapping_add(done as u64);
            // Below data_size, which came from a usize mapping length.
            let offset = (position & (self.data_size - 1)) as usize;
            let chunk = (out.len() - done).min(self.data_size as usize - offset);
            if !self
                .mapping
                .copy_volatile(self.data_offset + offset, &mut out[done..done + chunk])
            {
                out[done..].fill(0);
                return;
            }
            done += chunk;
        }
    }
}

/// Waits on an epoll set holding every CPU's event fd. It also keeps the map handle that
/// installed the events, so the entries live as long as the consumer.
#[derive(Debug)]
pub struct KernelPerfWait {
    epoll: Epoll,
    map: KernelMap,
}

impl KernelPerfWait {
    /// The perf event array.
    pub fn map(&self) -> &KernelMap {
        &self.map
    }
}

impl PerfWait for KernelPerfWait {
    fn wait(&self, timeout: Option<Duration>) -> Result<(), Errno> {
        self.epoll.wait(timeout).map(drop).map_err(|e| e.errno)
    }
}

/// A perf buffer over a kernel perf event array: per-CPU rings and epoll, read with the
/// engine-neutral consumer (`poll`, `consume`, `next_event`).
pub type KernelPerfBuffer = PerfBufConsumer<KernelPerfRing, KernelPerfWait>;

/// Options of [`open_perf_buffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerfBufferConfig {
    /// Data pages per CPU; must be a power of two (libbpf's `page_cnt`).
    pub pages_per_cpu: usize,
    /// Wake the reader every this many samples (`wakeup_events`, at least 1).
    pub wakeup_events: u32,
}

impl Default for PerfBufferConfig {
    fn default() -> Self {
        PerfBufferConfig {
            pages_per_cpu: 8,
            wakeup_events: 1,
        }
    }
}

/// Sets up a perf buffer on `map` (a PERF_EVENT_ARRAY): one event and ring per possible CPU,
/// each installed at `map[cpu]`. CPUs that cannot open an event (offline: `ENODEV`) are skipped,
/// as libbpf does.
pub fn open_perf_buffer(
    map: &KernelMap,
    config: PerfBufferConfig,
) -> Result<KernelPerfBuffer, Error> {
    let info = map.info();
    if info.map_type != MapType::PerfEventArray {
        return Err(Error::WrongMapType {
            what: "a perf buffer",
            expected: MapType::PerfEventArray,
            found: info.map_type,
        });
    }
    if !config.pages_per_cpu.is_power_of_two() {
        return Err(Error::InvalidSize(format!(
            "perf buffer pages per CPU must be a power of two, got {}",
            config.pages_per_cpu
        )));
    }
    let map = map.try_clone()?;
    let page_size = sys::page_size();
    let mmap_len = config
        .pages_per_cpu
        .checked_add(1)
        .and_then(|p| p.checked_mul(page_size))
        .ok_or_else(|| Error::InvalidSize("perf buffer too large".into()))?;
    let epoll = Epoll::new()?;
    let cpus = possible_cpus()?.min(info.max_entries);
    let mut rings = Vec::new();
    for cpu in 0..cpus {
        let event = match sys::perf_event_open_bpf_output(cpu, config.wakeup_events) {
            Ok(fd) => fd,
            Err(e) if e.errno == Errno::ENODEV => continue,
            Err(e) => return Err(e.into()),
        };
        let mapping = Mapping::map_shared(event.as_fd(), mmap_len, 0, true)?;
        let data_offset = mapping
            .atomic_u64(DATA_OFFSET_OFFSET)
            .map_or(0, |a| a.load(Ordering::Acquire));
        let data_size = mapping
            .atomic_u64(DATA_SIZE_OFFSET)
            .map_or(0, |a| a.load(Ordering::Acquire));
        // Kernels before 4.12 leave these fields 0: the data then starts at the second page.
        let (data_offset, data_size) = if data_size == 0 {
            (page_size as u64, (mmap_len - page_size) as u64)
        } else {
            (data_offset, data_size)
        };
        let data_offset = usize::try_from(data_offset)
            .map_err(|_| Error::InvalidSize("perf data offset".into()))?;
        sys::perf_event_enable(event.as_fd())?;
        let event_fd = u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&event))
            .map_err(|_| Error::InvalidSize("negative fd".into()))?;
        map.update(&cpu.to_ne_bytes(), &event_fd.to_ne_bytes(), 0)?;
        epoll.add(event.as_fd(), u64::from(cpu))?;
        rings.push((
            cpu,
            KernelPerfRing {
                mapping,
                data_offset,
                data_size,
                event,
            },
        ));
    }
    Ok(PerfBufConsumer::new(rings, KernelPerfWait { epoll, map }))
}
