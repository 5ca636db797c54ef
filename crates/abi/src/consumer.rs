//! Engine-neutral consumers of the two event formats: [`RingBufConsumer`] over any
//! [`RingBufMemory`] and [`PerfBufConsumer`] over per-CPU [`PerfRingMemory`] rings.
//!
//! They implement the reading protocols the kernel defines (and libbpf follows): for a ring buffer,
//! stop at a BUSY record, skip DISCARD records, advance by [`record_span`], and release-store
//! `consumer_pos` after every record; for a perf ring, walk `PERF_RECORD_*` records from
//! `data_tail` to `data_head`, copying wrapping records out, and release-store `data_tail`.
//!
//! Architecture invariant: this module touches memory only through the traits, so the same code
//! reads the kernel's mmapped rings and the user engine's shared-memory rings. It never sleeps
//! itself; waiting is [`RingBufMemory::wait`] and [`PerfWait::wait`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::ringbuf::perf::{PERF_RECORD_LOST, PERF_RECORD_SAMPLE};
use crate::ringbuf::{payload_len, record_span, BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT};
use crate::{Errno, PerfRingMemory, RingBufMemory};

/// Why a `poll` stopped with an error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PollError<E> {
    /// The callback returned this error; the record it was given counts as consumed.
    #[error("callback stopped the consumer: {0}")]
    Callback(E),
    /// Waiting for data failed.
    #[error("waiting for events failed: {0}")]
    Wait(Errno),
}

/// How long is left of `timeout` started at `start` (`None`: forever).
fn remaining(start: Instant, timeout: Option<Duration>) -> Option<Duration> {
    timeout.map(|t| t.saturating_sub(start.elapsed()))
}

/// A ring buffer consumer: the libbpf `ring_buffer__consume` / `__poll` protocol over one ring.
#[derive(Debug)]
pub struct RingBufConsumer<M: RingBufMemory> {
    memory: M,
}

impl<M: RingBufMemory> RingBufConsumer<M> {
    /// A consumer reading `memory` from its current consumer position.
    pub fn new(memory: M) -> Self {
        RingBufConsumer { memory }
    }

    /// The ring's memory.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    /// The ring's memory, mutably (for tests that write records as a producer would).
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.memory
    }

    /// Bytes published and not yet consumed (`producer_pos - consumer_pos`).
    pub fn available(&self) -> u64 {
        self.memory
            .load_producer_pos()
            .wrapping_sub(self.memory.load_consumer_pos())
    }

    /// Delivers at most `limit` committed records to `cb`, in order, without waiting. Stops at
    /// the first BUSY record, skips discarded ones, and publishes the consumer position after
    /// each record. A callback error stops the walk after publishing that record's position.
    /// Returns the number of records delivered.
    fn consume_limited<E>(
        &mut self,
        limit: usize,
        cb: &mut dyn FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut delivered = 0usize;
        let mut consumer = self.memory.load_consumer_pos();
        loop {
            let producer = self.memory.load_producer_pos();
            if consumer >= producer || delivered >= limit {
                return Ok(delivered);
            }
            while consumer < producer && delivered < limit {
                let len_word = self.memory.load_len_word(consumer);
                if len_word & BPF_RINGBUF_BUSY_BIT != 0 {
                    return Ok(delivered);
                }
                let len = payload_len(len_word);
                let span = record_span(len);
                if span > producer - consumer || span > self.memory.data_size() {
                    // A header claiming more than was published cannot come from a correct
                    // producer; stop rather than read past the published data.
                    return Ok(delivered);
                }
                let discarded = len_word & BPF_RINGBUF_DISCARD_BIT != 0;
                let outcome = if discarded {
                    Ok(())
                } else {
                    delivered += 1;
                    cb(self.memory.payload(consumer, len))
                };
                consumer += span;
                self.memory.store_consumer_pos(consumer);
                outcome?;
            }
        }
    }

    /// Delivers every committed record to `cb` without waiting; returns how many. A callback
    /// error stops the walk (that record is consumed) and is returned.
    pub fn consume<E>(&mut self, mut cb: impl FnMut(&[u8]) -> Result<(), E>) -> Result<usize, E> {
        self.consume_limited(usize::MAX, &mut cb)
    }

    /// Like [`RingBufConsumer::consume`], but when nothing is available first waits up to
    /// `timeout` (`None`: forever) for data. Returns 0 when the time ran out.
    pub fn poll<E>(
        &mut self,
        timeout: Option<Duration>,
        mut cb: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<usize, PollError<E>> {
        let start = Instant::now();
        loop {
            let n = self
                .consume_limited(usize::MAX, &mut cb)
                .map_err(PollError::Callback)?;
            if n > 0 {
                return Ok(n);
            }
            let left = remaining(start, timeout);
            if left == Some(Duration::ZERO) {
                return Ok(0);
            }
            self.memory.wait(left).map_err(PollError::Wait)?;
            if remaining(start, timeout) == Some(Duration::ZERO) {
                return self
                    .consume_limited(usize::MAX, &mut cb)
                    .map_err(PollError::Callback);
            }
        }
    }

    /// The next record's payload, waiting up to `timeout` (`None`: forever); `Ok(None)` when
    /// the time ran out.
    pub fn next_record(&mut self, timeout: Option<Duration>) -> Result<Option<Vec<u8>>, Errno> {
        let start = Instant::now();
        loop {
            let mut record = None;
            let mut take = |data: &[u8]| -> Result<(), std::convert::Infallible> {
                record = Some(data.to_vec());
                Ok(())
            };
            // The closure never fails, so the only outcome is the count.
            let _ = self.consume_limited(1, &mut take);
            if record.is_some() {
                return Ok(record);
            }
            let left = remaining(start, timeout);
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            self.memory.wait(left)?;
        }
    }
}

/// One item read from a perf ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PerfEvent {
    /// A `PERF_RECORD_SAMPLE`: the raw data, `raw_size` bytes (padding included, as libbpf
    /// hands it to `sample_cb`).
    Sample {
        /// The CPU whose ring carried it.
        cpu: u32,
        /// The raw bytes.
        data: Vec<u8>,
    },
    /// A `PERF_RECORD_LOST`: the producer dropped `count` samples because the ring was full.
    Lost {
        /// The CPU.
        cpu: u32,
        /// Samples lost.
        count: u64,
    },
}

/// Waiting for any of a perf buffer's rings to have data (the kernel engine: epoll over every
/// CPU's event fd; the user engine: a futex).
pub trait PerfWait: Send {
    /// Sleeps until some ring may have data or `timeout` passes (`None`: forever).
    fn wait(&self, timeout: Option<Duration>) -> Result<(), Errno>;
}

/// Size of `struct perf_event_header`.
const PERF_HEADER_SIZE: u64 = 8;

/// A perf buffer consumer over one ring per CPU.
#[derive(Debug)]
pub struct PerfBufConsumer<M: PerfRingMemory, W: PerfWait> {
    rings: Vec<(u32, M)>,
    waiter: W,
    pending: VecDeque<PerfEvent>,
}

impl<M: PerfRingMemory, W: PerfWait> PerfBufConsumer<M, W> {
    /// A consumer over `rings` (each with its CPU number), woken by `waiter`.
    pub fn new(rings: Vec<(u32, M)>, waiter: W) -> Self {
        PerfBufConsumer {
            rings,
            waiter,
            pending: VecDeque::new(),
        }
    }

    /// The rings with their CPU numbers.
    pub fn rings(&self) -> &[(u32, M)] {
        &self.rings
    }

    /// The waiter.
    pub fn waiter(&self) -> &W {
        &self.waiter
    }

    /// Reads every complete record of ring `index` into `out`, publishing `data_tail` after each.
    fn drain_ring(&self, index: usize, out: &mut VecDeque<PerfEvent>) {
        let (cpu, ring) = &self.rings[index];
        let cpu = *cpu;
        let head = ring.load_head();
        let mut tail = ring.load_tail();
        while tail < head {
            let mut header = [0u8; 8];
            ring.copy_out(tail, &mut header);
            let record_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
            let size = u64::from(u16::from_le_bytes([header[6], header[7]]));
            if size < PERF_HEADER_SIZE || size > head - tail {
                // A malformed header: skip everything published so far rather than loop.
                ring.store_tail(head);
                return;
            }
            let mut body = vec![0u8; (size - PERF_HEADER_SIZE) as usize];
            ring.copy_out(tail + PERF_HEADER_SIZE, &mut body);
            match record_type {
                PERF_RECORD_SAMPLE if body.len() >= 4 => {
                    let raw_size =
                        u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
                    let end = 4usize.saturating_add(raw_size).min(body.len());
                    out.push_back(PerfEvent::Sample {
                        cpu,
                        data: body[4..end].to_vec(),
                    });
                }
                PERF_RECORD_LOST if body.len() >= 16 => {
                    let mut count = [0u8; 8];
                    count.copy_from_slice(&body[8..16]);
                    out.push_back(PerfEvent::Lost {
                        cpu,
                        count: u64::from_le_bytes(count),
                    });
                }
                _ => {}
            }
            tail += size;
            ring.store_tail(tail);
        }
    }

    /// Moves every available record of every ring into the pending queue.
    fn fill(&mut self) {
        let mut queue = std::mem::take(&mut self.pending);
        for index in 0..self.rings.len() {
            self.drain_ring(index, &mut queue);
        }
        self.pending = queue;
    }

    /// Delivers every available event of every ring (CPU order, each ring in order) to `cb`
    /// without waiting; returns how many. A callback error stops delivery and is returned; the
    /// events not yet delivered stay queued for the next call.
    pub fn consume<E>(
        &mut self,
        mut cb: impl FnMut(PerfEvent) -> Result<(), E>,
    ) -> Result<usize, E> {
        self.fill();
        let mut delivered = 0usize;
        while let Some(event) = self.pending.pop_front() {
            delivered += 1;
            cb(event)?;
        }
        Ok(delivered)
    }

    /// Like [`PerfBufConsumer::consume`], but when nothing is available first waits up to
    /// `timeout` (`None`: forever). Returns 0 when the time ran out.
    pub fn poll<E>(
        &mut self,
        timeout: Option<Duration>,
        mut cb: impl FnMut(PerfEvent) -> Result<(), E>,
    ) -> Result<usize, PollError<E>> {
        let start = Instant::now();
        loop {
            let n = self.consume(&mut cb).map_err(PollError::Callback)?;
            if n > 0 {
                return Ok(n);
            }
            let left = remaining(start, timeout);
            if left == Some(Duration::ZERO) {
                return Ok(0);
            }
            self.waiter.wait(left).map_err(PollError::Wait)?;
            if remaining(start, timeout) == Some(Duration::ZERO) {
                return self.consume(&mut cb).map_err(PollError::Callback);
            }
        }
    }

    /// The next event, waiting up to `timeout` (`None`: forever); `Ok(None)` when the time ran
    /// out.
    pub fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<PerfEvent>, Errno> {
        let start = Instant::now();
        loop {
            if self.pending.is_empty() {
                self.fill();
            }
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            let left = remaining(start, timeout);
            if left == Some(Duration::ZERO) {
                return Ok(None);
            }
            self.waiter.wait(left)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::ringbuf::perf::raw_size;
    use crate::ringbuf::BPF_RINGBUF_HDR_SZ;

    /// An in-memory ring buffer written in the kernel's format by the test, its data stored
    /// twice back to back like the kernel's double mapping.
    struct FakeRing {
        data: Vec<u8>,
        consumer: Cell<u64>,
        producer: Cell<u64>,
        waits: Cell<u32>,
    }

    impl FakeRing {
        fn new(size: usize) -> Self {
            FakeRing {
                data: vec![0; 2 * size],
                consumer: Cell::new(0),
                producer: Cell::new(0),
                waits: Cell::new(0),
            }
        }

        fn size(&self) -> u64 {
            (self.data.len() / 2) as u64
        }

        fn write(&mut self, pos: u64, bytes: &[u8]) {
            let size = self.size();
            for (i, b) in bytes.iter().enumerate() {
                let offset = ((pos + i as u64) & (size - 1)) as usize;
                self.data[offset] = *b;
                self.data[offset + size as usize] = *b;
            }
        }

        /// Appends a record with `flags` (BUSY/DISCARD) in its length word.
        fn push(&mut self, payload: &[u8], flags: u32) -> u64 {
            let pos = self.producer.get();
            let len = payload.len() as u32;
            self.write(pos, &(len | flags).to_le_bytes());
            self.write(pos + 4, &0u32.to_le_bytes());
            self.write(pos + u64::from(BPF_RINGBUF_HDR_SZ), payload);
            self.producer.set(pos + record_span(len));
            pos
        }
    }

    impl RingBufMemory for FakeRing {
        fn data_size(&self) -> u64 {
            self.size()
        }
        fn load_consumer_pos(&self) -> u64 {
            self.consumer.get()
        }
        fn store_consumer_pos(&self, pos: u64) {
            self.consumer.set(pos);
        }
        fn load_producer_pos(&self) -> u64 {
            self.producer.get()
        }
        fn load_len_word(&self, pos: u64) -> u32 {
            let offset = (pos & (self.size() - 1)) as usize;
            let mut w = [0u8; 4];
            w.copy_from_slice(&self.data[offset..offset + 4]);
            u32::from_le_bytes(w)
        }
        fn payload(&self, pos: u64, len: u32) -> &[u8] {
            let offset = (pos & (self.size() - 1)) as usize + 8;
            &self.data[offset..offset + len as usize]
        }
        fn wait(&self, _timeout: Option<Duration>) -> Result<(), Errno> {
            self.waits.set(self.waits.get() + 1);
            Ok(())
        }
    }

    fn collect(consumer: &mut RingBufConsumer<FakeRing>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        consumer
            .consume(|d| {
                out.push(d.to_vec());
                Ok::<(), ()>(())
            })
            .unwrap();
        out
    }

    #[test]
    fn ringbuf_delivers_in_order_skips_discard_and_stops_at_busy() {
        let mut ring = FakeRing::new(4096);
        ring.push(&[1; 8], 0);
        ring.push(&[2; 16], BPF_RINGBUF_DISCARD_BIT);
        ring.push(&[3; 24], 0);
        let busy = ring.push(&[4; 4], BPF_RINGBUF_BUSY_BIT);
        ring.push(&[5; 4], 0);
        let mut consumer = RingBufConsumer::new(ring);
        assert_eq!(collect(&mut consumer), vec![vec![1; 8], vec![3; 24]]);
        // Positions 0, 16, 40 as in the kernel doc's tested sequence; stopped at the busy one.
        assert_eq!(consumer.memory().load_consumer_pos(), busy);
        assert_eq!(busy, 72);
        consumer.memory_mut().write(busy, &4u32.to_le_bytes());
        assert_eq!(collect(&mut consumer), vec![vec![4; 4], vec![5; 4]]);
        assert_eq!(consumer.available(), 0);
    }

    #[test]
    fn ringbuf_record_wrapping_the_end_is_read_whole() {
        let mut ring = FakeRing::new(4096);
        ring.producer.set(4032);
        ring.consumer.set(4032);
        let payload: Vec<u8> = (0..72).collect();
        ring.push(&payload, 0);
        let mut consumer = RingBufConsumer::new(ring);
        assert_eq!(
            consumer.next_record(Some(Duration::ZERO)).unwrap(),
            Some(payload)
        );
        assert_eq!(consumer.memory().load_consumer_pos(), 4032 + 80);
    }

    #[test]
    fn ringbuf_callback_error_stops_after_publishing_that_record() {
        let mut ring = FakeRing::new(4096);
        ring.push(&[1; 8], 0);
        ring.push(&[2; 8], 0);
        let mut consumer = RingBufConsumer::new(ring);
        let mut seen = 0;
        let result = consumer.consume(|_| {
            seen += 1;
            Err("stop")
        });
        assert_eq!(result, Err("stop"));
        assert_eq!(seen, 1);
        assert_eq!(consumer.memory().load_consumer_pos(), 16);
        assert_eq!(collect(&mut consumer), vec![vec![2; 8]]);
    }

    #[test]
    fn ringbuf_poll_waits_only_when_empty_and_times_out_with_zero() {
        let mut consumer = RingBufConsumer::new(FakeRing::new(4096));
        let n = consumer
            .poll(Some(Duration::from_millis(5)), |_| Ok::<(), ()>(()))
            .unwrap();
        assert_eq!(n, 0);
        assert!(consumer.memory().waits.get() >= 1);
        consumer.memory_mut().push(&[9; 8], 0);
        let waits = consumer.memory().waits.get();
        let n = consumer.poll(None, |_| Ok::<(), ()>(())).unwrap();
        assert_eq!(n, 1);
        assert_eq!(consumer.memory().waits.get(), waits);
        assert_eq!(consumer.next_record(Some(Duration::ZERO)).unwrap(), None);
    }

    /// An in-memory perf ring (not double-mapped) written by the test in the kernel's format.
    struct FakePerfRing {
        data: RefCell<Vec<u8>>,
        head: Cell<u64>,
        tail: Cell<u64>,
    }

    impl FakePerfRing {
        fn new(size: usize) -> Self {
            FakePerfRing {
                data: RefCell::new(vec![0xee; size]),
                head: Cell::new(0),
                tail: Cell::new(0),
            }
        }

        fn write(&self, pos: u64, bytes: &[u8]) {
            let mut data = self.data.borrow_mut();
            let size = data.len() as u64;
            for (i, b) in bytes.iter().enumerate() {
                data[((pos + i as u64) & (size - 1)) as usize] = *b;
            }
        }

        fn push_sample(&self, payload: &[u8]) {
            let raw = raw_size(payload.len() as u32);
            let size = 8 + 4 + raw;
            let pos = self.head.get();
            self.write(pos, &PERF_RECORD_SAMPLE.to_le_bytes());
            self.write(pos + 4, &0u16.to_le_bytes());
            self.write(pos + 6, &(size as u16).to_le_bytes());
            self.write(pos + 8, &raw.to_le_bytes());
            self.write(pos + 12, payload);
            self.head.set(pos + u64::from(size));
        }

        fn push_lost(&self, lost: u64) {
            let pos = self.head.get();
            self.write(pos, &PERF_RECORD_LOST.to_le_bytes());
            self.write(pos + 4, &0u16.to_le_bytes());
            self.write(pos + 6, &24u16.to_le_bytes());
            self.write(pos + 8, &7u64.to_le_bytes());
            self.write(pos + 16, &lost.to_le_bytes());
            self.head.set(pos + 24);
        }
    }

    impl PerfRingMemory for FakePerfRing {
        fn data_size(&self) -> u64 {
            self.data.borrow().len() as u64
        }
        fn load_head(&self) -> u64 {
            self.head.get()
        }
        fn load_tail(&self) -> u64 {
            self.tail.get()
        }
        fn store_tail(&self, tail: u64) {
            self.tail.set(tail);
        }
        fn copy_out(&self, pos: u64, out: &mut [u8]) {
            let data = self.data.borrow();
            let size = data.len() as u64;
            for (i, b) in out.iter_mut().enumerate() {
                *b = data[((pos + i as u64) & (size - 1)) as usize];
            }
        }
    }

    struct CountingWait(Cell<u32>);

    impl PerfWait for CountingWait {
        fn wait(&self, _timeout: Option<Duration>) -> Result<(), Errno> {
            self.0.set(self.0.get() + 1);
            Ok(())
        }
    }

    #[test]
    fn perf_samples_carry_padded_raw_size_and_lost_records() {
        let cpu0 = FakePerfRing::new(256);
        let cpu1 = FakePerfRing::new(256);
        cpu0.push_sample(&[1, 2, 3, 4, 5, 6, 7, 8]);
        cpu0.push_lost(4);
        cpu0.push_sample(&[9; 4]);
        cpu1.push_sample(&[7; 3]);
        let mut consumer =
            PerfBufConsumer::new(vec![(0, cpu0), (1, cpu1)], CountingWait(Cell::new(0)));
        let mut events = Vec::new();
        let n = consumer
            .consume(|e| {
                events.push(e);
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(n, 4);
        // An 8-byte payload is reported as 12 raw bytes: the 4 pad bytes are stale ring bytes.
        assert_eq!(
            events,
            vec![
                PerfEvent::Sample {
                    cpu: 0,
                    data: vec![1, 2, 3, 4, 5, 6, 7, 8, 0xee, 0xee, 0xee, 0xee]
                },
                PerfEvent::Lost { cpu: 0, count: 4 },
                PerfEvent::Sample {
                    cpu: 0,
                    data: vec![9; 4]
                },
                PerfEvent::Sample {
                    cpu: 1,
                    data: vec![7, 7, 7, 0xee]
                },
            ]
        );
        assert_eq!(consumer.rings()[0].1.load_tail(), 24 + 24 + 16);
        assert_eq!(consumer.rings()[1].1.load_tail(), 16);
    }

    #[test]
    fn perf_record_wrapping_the_data_area_is_copied_out() {
        let ring = FakePerfRing::new(64);
        ring.head.set(48);
        ring.tail.set(48);
        let payload: Vec<u8> = (10..28).collect();
        ring.push_sample(&payload);
        let mut consumer = PerfBufConsumer::new(vec![(3, ring)], CountingWait(Cell::new(0)));
        let event = consumer.next_event(Some(Duration::ZERO)).unwrap();
        let mut expected = payload.clone();
        expected.extend_from_slice(&[0xee; 2]);
        assert_eq!(
            event,
            Some(PerfEvent::Sample {
                cpu: 3,
                data: expected
            })
        );
        assert_eq!(consumer.next_event(Some(Duration::ZERO)).unwrap(), None);
    }

    #[test]
    fn perf_callback_error_keeps_the_rest_queued() {
        let ring = FakePerfRing::new(256);
        ring.push_sample(&[1; 4]);
        ring.push_sample(&[2; 4]);
        let mut consumer = PerfBufConsumer::new(vec![(0, ring)], CountingWait(Cell::new(0)));
        assert_eq!(consumer.consume(|_| Err("stop")), Err("stop"));
        assert_eq!(
            consumer.next_event(Some(Duration::ZERO)).unwrap(),
            Some(PerfEvent::Sample {
                cpu: 0,
                data: vec![2; 4]
            })
        );
        let n = consumer
            .poll(Some(Duration::from_millis(1)), |_| Ok::<(), ()>(()))
            .unwrap();
        assert_eq!(n, 0);
        assert!(consumer.waiter().0.get() >= 1);
    }
}
