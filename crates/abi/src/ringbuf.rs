//! The ring buffer's shared format (`kernel/bpf/ringbuf.c`), which both engines lay out the same
//! way so one consumer reads either.
//!
//! A ring buffer of data size `size` (a power of two, a multiple of the page size) is laid out as
//! one consumer page (`consumer_pos: u64` at offset 0, the only page user space writes), one
//! producer page (`producer_pos: u64` at offset 0), then the data pages mapped twice back to back so
//! a record that wraps is contiguous. Positions are free-running; the data offset is
//! `pos & (size - 1)`. Each record starts with an 8-byte header: `u32 len` with
//! [`BPF_RINGBUF_BUSY_BIT`] and [`BPF_RINGBUF_DISCARD_BIT`], then `u32 pg_off`. A record occupies
//! [`record_span`]`(len)` bytes.

/// Set in a record's length word while it is reserved and not yet submitted.
pub const BPF_RINGBUF_BUSY_BIT: u32 = 1 << 31;
/// Set in a record's length word when it was discarded.
pub const BPF_RINGBUF_DISCARD_BIT: u32 = 1 << 30;
/// Size of a record header.
pub const BPF_RINGBUF_HDR_SZ: u32 = 8;
/// Wakeup flag: never wake the consumer for this record.
pub const BPF_RB_NO_WAKEUP: u64 = 1;
/// Wakeup flag: always wake the consumer for this record.
pub const BPF_RB_FORCE_WAKEUP: u64 = 2;
/// `bpf_ringbuf_query` selector: bytes not yet consumed.
pub const BPF_RB_AVAIL_DATA: u64 = 0;
/// `bpf_ringbuf_query` selector: data size.
pub const BPF_RB_RING_SIZE: u64 = 1;
/// `bpf_ringbuf_query` selector: consumer position.
pub const BPF_RB_CONS_POS: u64 = 2;
/// `bpf_ringbuf_query` selector: producer position.
pub const BPF_RB_PROD_POS: u64 = 3;

/// The memory of one ring buffer as its consumer sees it, whichever engine made it.
///
/// The kernel engine implements it over the map fd's mmap (consumer page read-write, producer page
/// and double-mapped data read-only) and epoll; the user engine over its shared-memory file and a
/// futex. [`RingBufConsumer`](crate::ringbuf) logic only needs these operations.
pub trait RingBufMemory: Send {
    /// The data size in bytes (a power of two).
    fn data_size(&self) -> u64;
    /// Loads `consumer_pos` (acquire).
    fn load_consumer_pos(&self) -> u64;
    /// Stores `consumer_pos` (release). The consumer is its only writer.
    fn store_consumer_pos(&self, pos: u64);
    /// Loads `producer_pos` (acquire).
    fn load_producer_pos(&self) -> u64;
    /// Loads the length word of the record header at position `pos` (acquire).
    fn load_len_word(&self, pos: u64) -> u32;
    /// The `len` payload bytes of the record whose header is at `pos`, contiguous thanks to the
    /// double mapping. The producer does not touch them until the consumer position passes them.
    fn payload(&self, pos: u64, len: u32) -> &[u8];
    /// Sleeps until the producer may have published data or `timeout` passes (`None`: forever).
    /// Returns without sleeping when data is already available.
    fn wait(&self, timeout: Option<std::time::Duration>) -> Result<(), crate::Errno>;
}

/// One CPU's perf ring as the perf buffer consumer sees it, whichever engine made it: the
/// metadata page's `data_head`/`data_tail` and the (not double-mapped) data area.
pub trait PerfRingMemory: Send {
    /// Size of the data area in bytes (a power of two).
    fn data_size(&self) -> u64;
    /// Loads `data_head` (acquire).
    fn load_head(&self) -> u64;
    /// Loads `data_tail`.
    fn load_tail(&self) -> u64;
    /// Stores `data_tail` (release).
    fn store_tail(&self, tail: u64);
    /// Copies `out.len()` bytes starting at free-running position `pos`, wrapping at the end of
    /// the data area.
    fn copy_out(&self, pos: u64, out: &mut [u8]);
}

/// Bytes a record with a `len`-byte payload occupies: `round_up(len + 8, 8)`.
pub fn record_span(len: u32) -> u64 {
    (u64::from(len) + u64::from(BPF_RINGBUF_HDR_SZ)).div_ceil(8) * 8
}

/// The payload length in a header's length word, without the BUSY and DISCARD bits.
pub fn payload_len(len_word: u32) -> u32 {
    len_word & !(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT)
}

/// Perf ring buffer record format (`include/uapi/linux/perf_event.h`), as read by the perf buffer
/// consumer of either engine.
pub mod perf {
    /// `PERF_RECORD_LOST`: `{header, u64 id, u64 lost}`.
    pub const PERF_RECORD_LOST: u32 = 2;
    /// `PERF_RECORD_SAMPLE` with `PERF_SAMPLE_RAW`: `{header, u32 size, u8 data[size]}`.
    pub const PERF_RECORD_SAMPLE: u32 = 9;
    /// Offset of `data_head` in the metadata page.
    pub const DATA_HEAD_OFFSET: usize = 1024;
    /// Offset of `data_tail` in the metadata page.
    pub const DATA_TAIL_OFFSET: usize = 1032;
    /// Offset of `data_offset` in the metadata page.
    pub const DATA_OFFSET_OFFSET: usize = 1040;
    /// Offset of `data_size` in the metadata page.
    pub const DATA_SIZE_OFFSET: usize = 1048;
    /// `raw_size` of a sample with a `size`-byte payload: `round_up(size + 4, 8) - 4`.
    pub fn raw_size(size: u32) -> u32 {
        (size + 4).div_ceil(8) * 8 - 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(record_span(8), 16);
        assert_eq!(record_span(16), 24);
        assert_eq!(record_span(1), 16);
        assert_eq!(payload_len(BPF_RINGBUF_BUSY_BIT | 12), 12);
        assert_eq!(perf::raw_size(8), 12);
        assert_eq!(perf::raw_size(4), 4);
    }
}
