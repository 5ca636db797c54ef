//! The user engine's RINGBUF map against the kernel's rules and the real kernel: record layout
//! byte for byte, capacity, the largest record, discard, wrap-around, creation and syscall
//! errnos, query, adaptive wakeup, many producers, and a consumer in another process woken by a
//! producer without spinning.

#[path = "ringbuf/kernel.rs"]
mod kernel;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bpfmaps_abi::consumer::RingBufConsumer;
use bpfmaps_abi::map_flags::*;
use bpfmaps_abi::ringbuf::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RINGBUF_DISCARD_BIT};
use bpfmaps_abi::{BatchBuffers, Errno, MapDef, MapError, MapOps, MapType, RingBufMemory};
use bpfmaps_maps::ringbuf::{RingBuf, RingBufView};
use kernel::{cmd, insn};

fn def(size: u32) -> MapDef {
    MapDef {
        map_type: MapType::Ringbuf,
        key_size: 0,
        value_size: 0,
        max_entries: size,
        map_flags: 0,
        name: "rb".into(),
    }
}

fn ring(size: u32) -> RingBuf {
    RingBuf::create(&def(size)).unwrap()
}

fn data_area(rb: &RingBuf) -> Vec<u8> {
    let mut out = vec![0u8; rb.data_size() as usize];
    rb.read_data(0, &mut out).unwrap();
    out
}

fn consume_all(view: RingBufView) -> Vec<Vec<u8>> {
    let mut consumer = RingBufConsumer::new(view);
    let mut records = Vec::new();
    consumer
        .consume(|data| {
            records.push(data.to_vec());
            Ok::<(), ()>(())
        })
        .unwrap();
    records
}

/// A kernel ring buffer of `size` bytes with its producer page + data mapped read-only.
struct KernelRing {
    fd: kernel::Fd,
    view: kernel::Mmap,
}

impl KernelRing {
    fn new(size: u32) -> KernelRing {
        let fd = kernel::map_create(27, 0, 0, size, 0, "rb").expect("kernel ringbuf");
        let view = kernel::Mmap::new(&fd, 4096, 4096 + 2 * size as usize, false).expect("mmap");
        KernelRing { fd, view }
    }

    fn producer_pos(&self) -> u64 {
        self.view.u64_at(0)
    }

    fn data(&self, size: usize) -> Vec<u8> {
        self.view.bytes(4096, size)
    }

    /// Loads a program built by `body` (given the map fd) followed by `exit`.
    fn program(&self, body: impl FnOnce(i32) -> Vec<u64>) -> kernel::Fd {
        let mut insns = body(self.fd.0);
        insns.push(insn::exit());
        match kernel::load_socket_filter(&insns) {
            Ok(fd) => fd,
            Err((e, log)) => panic!("program load failed: errno {e}\n{log}"),
        }
    }
}

/// `r1 = map; r2 = r10 - off; r3 = len; r4 = flags; call ringbuf_output`
fn output_insns(map: i32, stack_off: i32, len: i32, flags: i32) -> Vec<u64> {
    let mut v = insn::ld_map_fd(1, map).to_vec();
    v.extend([
        insn::mov_reg(2, 10),
        insn::add_imm(2, stack_off),
        insn::mov_imm(3, len),
        insn::mov_imm(4, flags),
        insn::call(130),
    ]);
    v
}

/// Fills `len` bytes of stack below r10 with distinct 8-byte words.
fn fill_stack(len: i32) -> Vec<u64> {
    (1..=len / 8)
        .map(|i| insn::st_dw(10, (-8 * i) as i16, 0x0101_0101 * i))
        .collect()
}

fn stack_bytes(len: i32) -> Vec<u8> {
    // The program's stack from r10 - len upwards: word i (1-based) lives at r10 - 8i.
    let mut out = vec![0u8; len as usize];
    for i in 1..=len / 8 {
        let word = (0x0101_0101i64 * i64::from(i)) as u64;
        let at = (len - 8 * i) as usize;
        out[at..at + 8].copy_from_slice(&word.to_le_bytes());
    }
    out
}

#[test]
fn record_layout_matches_the_kernel_byte_for_byte() {
    // The documented sequence: output(8), reserve(16) + discard, output(24).
    let rb = ring(4096);
    let bytes24 = stack_bytes(24);
    rb.output(&bytes24[16..24], 0).unwrap();
    let handle = rb.reserve(16, 0).unwrap();
    rb.discard(handle, 0).unwrap();
    rb.output(&bytes24, 0).unwrap();
    let ours = data_area(&rb);
    let word = |at: usize| u32::from_le_bytes(ours[at..at + 4].try_into().unwrap());
    assert_eq!((word(0), word(4)), (8, 3), "record 1: len 8, pg_off 3");
    assert_eq!(
        (word(16), word(20)),
        (16 | BPF_RINGBUF_DISCARD_BIT, 3),
        "record 2 discarded"
    );
    assert_eq!((word(40), word(44)), (24, 3), "record 3 at 40");
    assert_eq!(&ours[8..16], &bytes24[16..24]);
    assert_eq!(&ours[48..72], &bytes24[..]);
    assert_eq!(rb.query(3), 72);

    if !kernel::available() {
        return;
    }
    let k = KernelRing::new(4096);
    let prog = k.program(|map| {
        let mut v = fill_stack(24);
        v.extend(output_insns(map, -8, 8, 0));
        v.extend(insn::ld_map_fd(1, map));
        v.extend([insn::mov_imm(2, 16), insn::mov_imm(3, 0), insn::call(131)]);
        v.extend([
            insn::jeq_imm(0, 0, 3),
            insn::mov_reg(1, 0),
            insn::mov_imm(2, 0),
            insn::call(133),
        ]);
        v.extend(output_insns(map, -24, 24, 0));
        v.push(insn::mov_imm(0, 0));
        v
    });
    assert_eq!(kernel::test_run(&prog, 1), Ok(0));
    assert_eq!(k.producer_pos(), 72);
    assert_eq!(k.data(4096), ours, "the whole data area, byte for byte");
}

#[test]
fn a_4096_ring_holds_255_records_of_16_bytes() {
    // A 16-byte record is an 8-byte header and an 8-byte payload; 256 of them would put the
    // producer 4096 bytes ahead of the consumer, one more than size − 1.
    let rb = ring(4096);
    for i in 0..255u64 {
        assert_eq!(rb.output(&[i as u8; 8], 0), Ok(()), "record {i}");
    }
    assert_eq!(rb.output(&[0; 8], 0), Err(Errno::EAGAIN));
    assert_eq!(rb.query(3), 255 * 16);
    assert!(rb.reserve(8, 0).is_none());
    let empty = rb
        .reserve(0, 0)
        .expect("an empty record takes the last 8 bytes");
    rb.discard(empty, 0).unwrap();
    assert!(rb.reserve(0, 0).is_none());
    assert_eq!(
        rb.output(&[0; 8], 8),
        Err(Errno::EINVAL),
        "bad flags are EINVAL"
    );

    if !kernel::available() {
        return;
    }
    let k = KernelRing::new(4096);
    let prog = k.program(|map| {
        let mut v = fill_stack(8);
        v.extend(output_insns(map, -8, 8, 0));
        v
    });
    // 256 runs: the last output fails with -EAGAIN.
    assert_eq!(kernel::test_run(&prog, 256), Ok((-11i32) as u32));
    assert_eq!(k.producer_pos(), 255 * 16);
    let bad_flags = k.program(|map| {
        let mut v = fill_stack(16);
        v.extend(output_insns(map, -16, 16, 8));
        v
    });
    assert_eq!(kernel::test_run(&bad_flags, 1), Ok((-22i32) as u32));
}

#[test]
fn the_largest_record_is_size_minus_16() {
    let rb = ring(4096);
    assert!(rb.reserve(4088, 0).is_none());
    assert!(rb.reserve(4096, 0).is_none());
    assert!(rb.reserve(1 << 31, 0).is_none());
    assert!(rb.reserve(8, 1).is_none(), "reserve flags must be 0");
    let h = rb.reserve(4080, 0).expect("4080 fits an empty 4096 ring");
    assert_eq!(h.size(), 4080);
    rb.discard(h, 0).unwrap();

    if !kernel::available() {
        return;
    }
    let k = KernelRing::new(4096);
    let reserve_prog = |size: i32| {
        k.program(|map| {
            let mut v = insn::ld_map_fd(1, map).to_vec();
            v.extend([insn::mov_imm(2, size), insn::mov_imm(3, 0), insn::call(131)]);
            v.extend([
                insn::jeq_imm(0, 0, 4),
                insn::mov_reg(1, 0),
                insn::mov_imm(2, 0),
                insn::call(133),
            ]);
            v.push(insn::mov_imm(0, 1));
            v
        })
    };
    assert_eq!(
        kernel::test_run(&reserve_prog(4088), 1),
        Ok(0),
        "kernel: 4088 is NULL"
    );
    assert_eq!(
        kernel::test_run(&reserve_prog(4080), 1),
        Ok(1),
        "kernel: 4080 fits"
    );
}

#[test]
fn discarded_records_are_skipped_by_the_consumer() {
    let rb = ring(4096);
    rb.output(b"first", 0).unwrap();
    let h = rb.reserve(32, 0).unwrap();
    rb.write_payload(&h, 0, &[0xee; 32]).unwrap();
    rb.discard(h, 0).unwrap();
    rb.output(b"third!", 0).unwrap();
    assert_eq!(
        consume_all(rb.consumer().unwrap()),
        vec![b"first".to_vec(), b"third!".to_vec()]
    );
    assert_eq!(
        rb.query(0),
        0,
        "everything consumed, discarded record included"
    );
    assert_eq!(rb.query(2), 16 + 40 + 16);
}

#[test]
fn a_busy_record_stops_the_consumer_until_it_is_submitted() {
    let rb = ring(4096);
    let first = rb.reserve(8, 0).unwrap();
    rb.output(b"second", 0).unwrap();
    let view = rb.consumer().unwrap();
    let mut consumer = RingBufConsumer::new(view);
    assert_eq!(consumer.consume(|_| Ok::<(), ()>(())), Ok(0));
    rb.write_payload(&first, 0, b"1st.....").unwrap();
    assert!(
        rb.write_payload(&first, 4, b"12345").is_err(),
        "writes stay inside the record"
    );
    rb.submit(first, 0).unwrap();
    let mut got = Vec::new();
    consumer
        .consume(|d| {
            got.push(d.to_vec());
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(got, vec![b"1st.....".to_vec(), b"second".to_vec()]);
}

#[test]
fn a_record_wrapping_the_end_is_contiguous() {
    let rb = ring(4096);
    let view = rb.consumer().unwrap();
    // 4032 bytes of records (63 × 64), consumed, so the next record starts at offset 4032.
    for _ in 0..63 {
        rb.output(&[0u8; 56], 0).unwrap();
    }
    assert_eq!(consume_all(rb.consumer().unwrap()).len(), 63);
    let payload: Vec<u8> = (0..64u8).collect();
    let h = rb.reserve(64, 0).unwrap();
    assert_eq!(h.payload_offset(), 2 * 4096 + 4032 + 8);
    rb.write_payload(&h, 0, &payload).unwrap();
    rb.submit(h, 0).unwrap();
    assert_eq!(view.load_len_word(4032), 64);
    assert_eq!(
        view.payload(4032, 64),
        &payload[..],
        "one contiguous slice across the end"
    );
    // The part past the end landed at the start of the data area.
    let mut start = [0u8; 8];
    rb.read_data(0, &mut start).unwrap();
    assert_eq!(start, payload[56..64]);
    assert_eq!(consume_all(view), vec![payload]);
}

/// One batch operation of `MapOps`, run with scratch buffers.
type BatchOp = dyn Fn(&RingBuf, &mut BatchBuffers<'_>, &mut [u8]) -> Result<(), MapError>;

fn kernel_errno<T>(r: Result<T, i32>) -> Option<Errno> {
    r.err().map(Errno)
}

fn ours_errno<T>(r: Result<T, MapError>) -> Option<Errno> {
    r.err()
        .map(|e| e.errno().expect("an errno, not a size error"))
}

#[test]
fn creation_rules_match_the_kernel() {
    let cases: Vec<(&str, u32, u32, u32, u32)> = vec![
        ("ok4096", 0, 0, 4096, 0),
        ("ok8192", 0, 0, 8192, 0),
        ("not_pow2", 0, 0, 12288, 0),
        ("sub_page", 0, 0, 2048, 0),
        ("zero", 0, 0, 0, 0),
        ("key4", 4, 0, 4096, 0),
        ("value4", 0, 4, 4096, 0),
        ("numa", 0, 0, 4096, BPF_F_NUMA_NODE),
        ("no_prealloc", 0, 0, 4096, BPF_F_NO_PREALLOC),
        ("rdonly", 0, 0, 4096, BPF_F_RDONLY),
        ("wronly", 0, 0, 4096, BPF_F_WRONLY),
        ("rdonly_prog", 0, 0, 4096, BPF_F_RDONLY_PROG),
        ("mmapable", 0, 0, 4096, BPF_F_MMAPABLE),
        ("zero_seed", 0, 0, 4096, BPF_F_ZERO_SEED),
        ("bit13", 0, 0, 4096, 1 << 13),
        ("bad-name", 0, 0, 4096, 0),
    ];
    let expected_ours: Vec<Option<Errno>> = cases
        .iter()
        .map(|&(name, key, value, size, flags)| {
            let d = MapDef {
                key_size: key,
                value_size: value,
                max_entries: size,
                map_flags: flags,
                name: name.into(),
                ..def(0)
            };
            RingBuf::create(&d)
                .err()
                .map(|e| e.errno().expect("a kernel errno"))
        })
        .collect();
    let mut accepted: Vec<&str> = Vec::new();
    for (case, ours) in cases.iter().zip(&expected_ours) {
        if ours.is_none() {
            accepted.push(case.0);
        }
    }
    assert_eq!(accepted, ["ok4096", "ok8192", "numa"]);
    if !kernel::available() {
        return;
    }
    for (&(name, key, value, size, flags), ours) in cases.iter().zip(expected_ours) {
        let k = kernel::map_create(27, key, value, size, flags, name);
        assert_eq!(kernel_errno(k), ours, "case {name}");
    }
}

#[test]
fn syscall_side_matches_the_kernel() {
    let rb = ring(4096);
    let mut value = [0u8; 8];
    let mut next = [0u8; 8];
    let ours: Vec<(&str, Option<Errno>)> = vec![
        ("lookup NULL", ours_errno(rb.lookup(&[], &mut value, 0))),
        (
            "lookup key",
            ours_errno(rb.lookup(&[1, 2, 3, 4], &mut value, 0)),
        ),
        ("lookup F_LOCK", ours_errno(rb.lookup(&[], &mut value, 4))),
        ("lookup flags 8", ours_errno(rb.lookup(&[], &mut value, 8))),
        ("update NULL", ours_errno(rb.update(&[], &[], 0))),
        ("update key", ours_errno(rb.update(&[1, 2, 3, 4], &[], 0))),
        ("delete NULL", ours_errno(rb.delete(&[]))),
        ("delete key", ours_errno(rb.delete(&[1, 2, 3, 4]))),
        ("next NULL", ours_errno(rb.get_next_key(None, &mut next))),
        (
            "next key",
            ours_errno(rb.get_next_key(Some(&[1, 2, 3, 4]), &mut next)),
        ),
        (
            "lookup_and_delete NULL",
            ours_errno(rb.lookup_and_delete(&[], &mut value, 0)),
        ),
        (
            "lookup_and_delete key",
            ours_errno(rb.lookup_and_delete(&[1, 2, 3, 4], &mut value, 0)),
        ),
    ];
    let mut keys = [0u8; 64];
    let mut values = [0u8; 64];
    let mut out = [0u8; 8];
    let mut batch = |f: &BatchOp| {
        let mut b = BatchBuffers {
            keys: &mut keys,
            values: &mut values,
            count: 1,
        };
        let r = ours_errno(f(&rb, &mut b, &mut out));
        assert_eq!(b.count, 1, "ENOTSUPP leaves count untouched");
        r
    };
    let batches = vec![
        (
            "lookup_batch",
            batch(&|m, b, o| m.lookup_batch(None, o, b, 0, 0)),
        ),
        (
            "lookup_and_delete_batch",
            batch(&|m, b, o| m.lookup_and_delete_batch(None, o, b, 0, 0)),
        ),
        ("update_batch", batch(&|m, b, _| m.update_batch(b, 0, 0))),
        ("delete_batch", batch(&|m, b, _| m.delete_batch(b, 0, 0))),
    ];
    let expected = [524, 22, 22, 22, 524, 22, 524, 22, 524, 22, 524, 22].map(|e| Some(Errno(e)));
    assert_eq!(ours.iter().map(|o| o.1).collect::<Vec<_>>(), expected);
    assert!(batches.iter().all(|b| b.1 == Some(Errno::ENOTSUPP)));
    // Freeze: EBUSY while a consumer view (writable consumer page) exists, then EPERM writes.
    let view = rb.consumer().unwrap();
    assert_eq!(ours_errno(rb.freeze()), Some(Errno::EBUSY));
    drop(view);
    assert_eq!(rb.freeze(), Ok(()));
    let frozen_ours = [
        ours_errno(rb.freeze()),
        ours_errno(rb.update(&[], &[], 0)),
        ours_errno(rb.delete(&[])),
        ours_errno(rb.lookup(&[], &mut value, 0)),
        rb.consumer().err(),
    ];
    assert_eq!(
        frozen_ours,
        [
            Some(Errno::EPERM),
            Some(Errno::EPERM),
            Some(Errno::EPERM),
            Some(Errno::ENOTSUPP),
            Some(Errno::EPERM)
        ]
    );

    if !kernel::available() {
        return;
    }
    let k = kernel::map_create(27, 0, 0, 4096, 0, "rb").unwrap();
    let key = [1u8, 2, 3, 4];
    let kv = |r| kernel_errno(r);
    let kernel_results = vec![
        kv(kernel::elem(
            cmd::MAP_LOOKUP_ELEM,
            &k,
            None,
            Some(&mut value),
            0,
        )),
        kv(kernel::elem(
            cmd::MAP_LOOKUP_ELEM,
            &k,
            Some(&key),
            Some(&mut value),
            0,
        )),
        kv(kernel::elem(
            cmd::MAP_LOOKUP_ELEM,
            &k,
            None,
            Some(&mut value),
            4,
        )),
        kv(kernel::elem(
            cmd::MAP_LOOKUP_ELEM,
            &k,
            None,
            Some(&mut value),
            8,
        )),
        kv(kernel::elem(
            cmd::MAP_UPDATE_ELEM,
            &k,
            None,
            Some(&mut value),
            0,
        )),
        kv(kernel::elem(
            cmd::MAP_UPDATE_ELEM,
            &k,
            Some(&key),
            Some(&mut value),
            0,
        )),
        kv(kernel::elem(cmd::MAP_DELETE_ELEM, &k, None, None, 0)),
        kv(kernel::elem(cmd::MAP_DELETE_ELEM, &k, Some(&key), None, 0)),
        kv(kernel::elem(
            cmd::MAP_GET_NEXT_KEY,
            &k,
            None,
            Some(&mut next),
            0,
        )),
        kv(kernel::elem(
            cmd::MAP_GET_NEXT_KEY,
            &k,
            Some(&key),
            Some(&mut next),
            0,
        )),
        kv(kernel::elem(
            cmd::MAP_LOOKUP_AND_DELETE_ELEM,
            &k,
            None,
            Some(&mut value),
            0,
        )),
        kv(kernel::elem(
            cmd::MAP_LOOKUP_AND_DELETE_ELEM,
            &k,
            Some(&key),
            Some(&mut value),
            0,
        )),
    ];
    for ((what, ours), theirs) in ours.iter().zip(&kernel_results) {
        assert_eq!(ours, theirs, "{what}");
    }
    for (command, (what, ours)) in [
        cmd::MAP_LOOKUP_BATCH,
        cmd::MAP_LOOKUP_AND_DELETE_BATCH,
        cmd::MAP_UPDATE_BATCH,
        cmd::MAP_DELETE_BATCH,
    ]
    .into_iter()
    .zip(&batches)
    {
        assert_eq!(
            kv(kernel::batch(command, &k, 1).map(|_| ())),
            *ours,
            "{what}"
        );
    }
    // Freeze with the consumer page mapped writable, then without.
    let consumer_page = kernel::Mmap::new(&k, 0, 4096, true).unwrap();
    assert_eq!(kv(kernel::freeze(&k)), Some(Errno::EBUSY));
    drop(consumer_page);
    assert_eq!(kv(kernel::freeze(&k)), None);
    let frozen_kernel = [
        kv(kernel::freeze(&k)),
        kv(kernel::elem(
            cmd::MAP_UPDATE_ELEM,
            &k,
            None,
            Some(&mut value),
            0,
        )),
        kv(kernel::elem(cmd::MAP_DELETE_ELEM, &k, None, None, 0)),
        kv(kernel::elem(
            cmd::MAP_LOOKUP_ELEM,
            &k,
            None,
            Some(&mut value),
            0,
        )),
        kv(kernel::Mmap::new(&k, 0, 4096, true).map(|_| ())),
    ];
    assert_eq!(frozen_kernel, frozen_ours);
}

#[test]
fn query_matches_the_kernel() {
    let rb = ring(4096);
    rb.output(&[7u8; 64], 0).unwrap();
    let ours = [0, 1, 2, 3, 99].map(|s| rb.query(s));
    assert_eq!(ours, [72, 4096, 0, 72, 0]);
    if !kernel::available() {
        return;
    }
    let k = KernelRing::new(4096);
    let writer = k.program(|map| {
        let mut v = fill_stack(64);
        v.extend(output_insns(map, -64, 64, 0));
        v
    });
    assert_eq!(kernel::test_run(&writer, 1), Ok(0));
    let theirs = [0, 1, 2, 3, 99].map(|selector| {
        let prog = k.program(|map| {
            let mut v = insn::ld_map_fd(1, map).to_vec();
            v.extend([insn::mov_imm(2, selector), insn::call(134)]);
            v
        });
        u64::from(kernel::test_run(&prog, 1).unwrap())
    });
    assert_eq!(theirs, ours);
}

/// Runs `f` on a thread that waits on the ring; returns how long the wait took.
fn timed_wait(rb: &RingBuf, timeout: Duration, produce: impl FnOnce()) -> Duration {
    let view = rb.consumer().unwrap();
    let handle = std::thread::spawn(move || {
        let start = Instant::now();
        view.wait(Some(timeout)).unwrap();
        start.elapsed()
    });
    std::thread::sleep(Duration::from_millis(100));
    produce();
    handle.join().unwrap()
}

#[test]
fn a_sleeping_consumer_is_woken_unless_no_wakeup() {
    // Default: the consumer has caught up (consumer_pos == record position), so it is woken.
    let rb = ring(4096);
    let took = timed_wait(&rb, Duration::from_secs(5), || rb.output(b"x", 0).unwrap());
    assert!(
        took < Duration::from_secs(2),
        "default wakeup: woke after {took:?}"
    );
    consume_all(rb.consumer().unwrap());

    // NO_WAKEUP: the sleeping consumer is not woken; it sleeps until its timeout.
    let took = timed_wait(&rb, Duration::from_millis(600), || {
        rb.output(b"x", BPF_RB_NO_WAKEUP).unwrap()
    });
    assert!(
        took >= Duration::from_millis(550),
        "NO_WAKEUP woke the consumer after {took:?}"
    );
    consume_all(rb.consumer().unwrap());
}

#[test]
fn wakeups_follow_the_kernels_adaptive_rule() {
    let rb = ring(4096);
    let mut expected = rb.wakeups();
    let mut check = |what: &str, woke: bool| {
        expected += u32::from(woke);
        assert_eq!(rb.wakeups(), expected, "{what}");
    };
    rb.output(b"x", 0).unwrap();
    check("the consumer is at this record: wake", true);
    rb.output(b"y", 0).unwrap();
    check("the consumer is behind this record: no wake", false);
    rb.output(b"z", BPF_RB_FORCE_WAKEUP).unwrap();
    check("FORCE_WAKEUP always wakes", true);
    consume_all(rb.consumer().unwrap());
    rb.output(b"n", BPF_RB_NO_WAKEUP).unwrap();
    check("NO_WAKEUP never wakes, even when caught up", false);
    consume_all(rb.consumer().unwrap());
    let held = rb.reserve(8, 0).unwrap();
    rb.output(b"after", 0).unwrap();
    check(
        "a record after a BUSY one the consumer waits on: no wake",
        false,
    );
    rb.discard(held, 0).unwrap();
    check("committing the record the consumer waits on: wake", true);
    let held = rb.reserve(8, 0).unwrap();
    rb.submit(held, BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP)
        .unwrap();
    check("FORCE wins over NO_WAKEUP, as in the kernel", true);
}

#[test]
fn many_producers_and_a_sleeping_consumer_lose_nothing() {
    const PRODUCERS: u32 = 4;
    const PER_PRODUCER: u32 = 20_000;
    let rb = ring(16384);
    let done = Arc::new(AtomicBool::new(false));
    let consumer = {
        let view = rb.consumer().unwrap();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut consumer = RingBufConsumer::new(view);
            let mut next = vec![0u32; PRODUCERS as usize];
            let mut total = 0u32;
            while total < PRODUCERS * PER_PRODUCER {
                let n = consumer
                    .poll(Some(Duration::from_millis(200)), |d| {
                        let producer = u32::from_le_bytes(d[0..4].try_into().unwrap()) as usize;
                        let seq = u32::from_le_bytes(d[4..8].try_into().unwrap());
                        assert_eq!(seq, next[producer], "producer {producer} out of order");
                        next[producer] += 1;
                        Ok::<(), ()>(())
                    })
                    .unwrap();
                total += n as u32;
                if n == 0 && done.load(Ordering::SeqCst) && consumer.available() == 0 {
                    break;
                }
            }
            total
        })
    };
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let rb = rb.clone();
            std::thread::spawn(move || {
                let mut seq = 0;
                while seq < PER_PRODUCER {
                    let mut record = [0u8; 24];
                    record[0..4].copy_from_slice(&p.to_le_bytes());
                    record[4..8].copy_from_slice(&seq.to_le_bytes());
                    match rb.output(&record, 0) {
                        Ok(()) => seq += 1,
                        Err(Errno::EAGAIN) => std::thread::yield_now(),
                        Err(e) => panic!("output: {e}"),
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    rb.wake_consumers();
    assert_eq!(consumer.join().unwrap(), PRODUCERS * PER_PRODUCER);
}

const CHILD_ENV: &str = "BPFMAPS_RINGBUF_TEST_CHILD";

fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain data, filled by the call.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid timespec pointer; CLOCK_MONOTONIC is system-wide, so both processes agree.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn thread_cpu_time() -> Duration {
    // SAFETY: rusage is plain data, filled by the call.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rusage pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(us(usage.ru_utime) + us(usage.ru_stime))
}

/// The child half of `a_consumer_in_another_process_is_woken_without_spinning`: does nothing
/// unless started by that test with the ring's path in the environment.
#[test]
fn child_process_consumer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let rb = RingBuf::open(file).unwrap();
    let mut consumer = RingBufConsumer::new(rb.consumer().unwrap());
    let cpu_before = thread_cpu_time();
    let start = Instant::now();
    let record = consumer.next_record(Some(Duration::from_secs(20))).unwrap();
    let woken_at = monotonic_ns();
    let waited = start.elapsed();
    let cpu = thread_cpu_time().saturating_sub(cpu_before);
    let record = String::from_utf8_lossy(&record.unwrap_or_default()).into_owned();
    let (text, sent_at) = record.split_once('@').unwrap_or((&record, "0"));
    let latency_us = woken_at.saturating_sub(sent_at.parse().unwrap_or(0)) / 1000;
    println!(
        "CHILD-RESULT {text} {} {} {latency_us}",
        waited.as_millis(),
        cpu.as_micros()
    );
}

#[test]
fn a_consumer_in_another_process_is_woken_without_spinning() {
    use std::os::fd::AsRawFd;
    let rb = ring(4096);
    let path = format!("/proc/{}/fd/{}", std::process::id(), rb.file().as_raw_fd());
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_consumer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let record = format!("hello-from-the-parent@{}", monotonic_ns());
    rb.output(record.as_bytes(), 0).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    let line = stdout
        .split("CHILD-RESULT ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no child result in {stdout:?}"));
    let fields: Vec<&str> = std::iter::once("CHILD-RESULT")
        .chain(line.split_whitespace())
        .collect();
    assert_eq!(fields[1], "hello-from-the-parent");
    let waited_ms: u64 = fields[2].parse().unwrap();
    let cpu_us: u64 = fields[3].parse().unwrap();
    let latency_us: u64 = fields[4].parse().unwrap();
    println!("cross-process wakeup: woken {latency_us} µs after the output; {cpu_us} µs CPU while waiting");
    assert!(
        latency_us < 1_000_000,
        "woken {latency_us} µs after the output"
    );
    assert!(
        (200..10_000).contains(&waited_ms),
        "the child slept {waited_ms} ms before the record"
    );
    assert!(
        cpu_us < 50_000,
        "the waiting child used {cpu_us} µs of CPU: it spun instead of sleeping"
    );
}

const DEAD_PRODUCER_ENV: &str = "BPFMAPS_RINGBUF_TEST_DEAD_PRODUCER";

/// The child half of `a_producer_killed_holding_a_reservation_does_not_stop_the_consumer`:
/// reserves a record and exits without submitting it. Does nothing unless started by that test.
#[test]
fn child_process_dead_producer() {
    let Ok(path) = std::env::var(DEAD_PRODUCER_ENV) else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let rb = RingBuf::open(file).unwrap();
    let handle = rb.reserve(16, 0).unwrap();
    rb.write_payload(&handle, 0, b"never-submitted!").unwrap();
    println!("\nRESERVED");
    // Die holding the reservation, as a SIGKILL between reserve and submit would.
    std::process::exit(0);
}

#[test]
fn a_producer_killed_holding_a_reservation_does_not_stop_the_consumer() {
    use std::os::fd::AsRawFd;
    let rb = ring(4096);
    rb.output(b"before", 0).unwrap();
    let path = format!("/proc/{}/fd/{}", std::process::id(), rb.file().as_raw_fd());
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_dead_producer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DEAD_PRODUCER_ENV, &path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("RESERVED"));
    rb.output(b"after", 0).unwrap();
    let mut consumer = RingBufConsumer::new(rb.consumer().unwrap());
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 2 && start.elapsed() < Duration::from_secs(5) {
        consumer
            .poll(Some(Duration::from_secs(1)), |d| {
                got.push(d.to_vec());
                Ok::<(), ()>(())
            })
            .unwrap();
    }
    assert_eq!(got, vec![b"before".to_vec(), b"after".to_vec()]);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "recovered after {:?}",
        start.elapsed()
    );
    // The dead producer's record was discarded, not delivered, and the ring is usable.
    let mut data = [0u8; 4];
    rb.read_data(16, &mut data).unwrap();
    assert_eq!(
        u32::from_le_bytes(data),
        16 | BPF_RINGBUF_DISCARD_BIT,
        "discarded in place"
    );
    assert_eq!(rb.query(0), 0);
}

#[test]
fn a_reopened_file_is_the_same_ring() {
    let rb = ring(8192);
    rb.output(b"persisted", 0).unwrap();
    let again = RingBuf::open(rb.file().try_clone().unwrap()).unwrap();
    assert_eq!(again.query(0), 16 + 8);
    assert_eq!(
        consume_all(again.consumer().unwrap()),
        vec![b"persisted".to_vec()]
    );
    assert_eq!(rb.query(2), 24, "the consumer position is shared");
    assert_eq!(again.info().max_entries, 8192);
    assert_eq!(again.info().map_type, MapType::Ringbuf);
}

/// Measures the producer paths (printed with `--nocapture`; run with `--release` for numbers)
/// next to the kernel's `bpf_ringbuf_output` as `BPF_PROG_TEST_RUN` times it.
#[test]
fn producer_costs_are_measured_next_to_the_kernel() {
    const OPS: u32 = 100_000;
    let size = 4 << 20;
    let rb = ring(size);
    let start = Instant::now();
    for i in 0..OPS {
        rb.output(&u64::from(i).to_le_bytes(), 0).unwrap();
    }
    let output_ns = start.elapsed().as_nanos() as f64 / f64::from(OPS);
    assert_eq!(rb.query(0), u64::from(OPS) * 16);
    let rb = ring(size);
    let start = Instant::now();
    for _ in 0..OPS {
        let h = rb.reserve(8, 0).unwrap();
        rb.submit(h, BPF_RB_NO_WAKEUP).unwrap();
    }
    let reserve_ns = start.elapsed().as_nanos() as f64 / f64::from(OPS);
    println!("user engine: output(8 B) {output_ns:.1} ns/op, reserve+submit {reserve_ns:.1} ns/op");
    if !kernel::available() {
        return;
    }
    let k = KernelRing::new(size);
    let prog = k.program(|map| {
        let mut v = fill_stack(8);
        v.extend(output_insns(map, -8, 8, 0));
        v
    });
    let (retval, ns) = kernel::test_run_timed(&prog, OPS).unwrap();
    assert_eq!(retval, 0);
    assert_eq!(k.producer_pos(), u64::from(OPS) * 16);
    println!("kernel: bpf_ringbuf_output(8 B) program run {ns} ns (BPF_PROG_TEST_RUN average)");
}
