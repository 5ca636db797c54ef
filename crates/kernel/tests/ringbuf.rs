//! The ring buffer consumer against the real kernel: records produced by hand-assembled raw_tp
//! programs run with `BPF_PROG_TEST_RUN` (`bpf_ringbuf_output`, reserve+submit, reserve+discard),
//! read through `KernelRingBuf` and the engine-neutral `RingBufConsumer`: exact counts and
//! contents, positions, the full-ring `EAGAIN`, and epoll wakeups.

mod maps_support;

use std::time::{Duration, Instant};

use bpfmaps_abi::consumer::{PollError, RingBufConsumer};
use bpfmaps_abi::{Errno, MapType, RingBufMemory};
use bpfmaps_kernel::ringbuf::KernelRingBuf;
use maps_support::*;

fn first_u64(data: &[u8]) -> u64 {
    u64::from_ne_bytes(data[..8].try_into().unwrap())
}

#[test]
fn ringbuf_output_delivers_exactly_n_records_in_order() {
    require_kernel!();
    let map = create(MapType::Ringbuf, 0, 0, 4096, 0);
    let prog = ringbuf_output_prog(map.fd(), 16);
    let mut consumer = KernelRingBuf::new(&map).unwrap().into_consumer();
    assert_eq!(consumer.memory().data_size(), 4096);
    let mut seen = Vec::new();
    let mut total = 0;
    // 1000 records of 16 bytes (24-byte spans) wrap the 4096-byte ring several times.
    for round in 0..10u64 {
        for i in 0..100u64 {
            assert_eq!(run(&prog, round * 100 + i, None), 0);
        }
        assert_eq!(consumer.available(), 100 * 24);
        total += consumer
            .consume(|data| {
                assert_eq!(data.len(), 16);
                assert_eq!(&data[8..], &[0u8; 8]);
                seen.push(first_u64(data));
                Ok::<(), ()>(())
            })
            .unwrap();
    }
    assert_eq!(total, 1000);
    assert_eq!(seen, (0..1000).collect::<Vec<u64>>());
    assert_eq!(consumer.memory().load_consumer_pos(), 1000 * 24);
    assert_eq!(consumer.memory().load_producer_pos(), 1000 * 24);
}

#[test]
fn ringbuf_full_ring_gives_eagain_and_the_largest_payload_is_size_minus_16() {
    require_kernel!();
    let map = create(MapType::Ringbuf, 0, 0, 4096, 0);
    let prog = ringbuf_output_prog(map.fd(), 8);
    // A 4096-byte ring holds 255 16-byte records; the 256th is EAGAIN.
    for i in 0..255 {
        assert_eq!(run(&prog, i, None), 0, "record {i}");
    }
    assert_eq!(run(&prog, 255, None), -Errno::EAGAIN.0);
    assert_eq!(run(&prog, 256, None), -Errno::EAGAIN.0);
    let mut consumer = RingBufConsumer::new(KernelRingBuf::new(&map).unwrap());
    let mut values = Vec::new();
    let n = consumer.consume(|d| {
        values.push(first_u64(d));
        Ok::<(), ()>(())
    });
    assert_eq!(n, Ok(255));
    assert_eq!(values, (0..255).collect::<Vec<u64>>());
    assert_eq!(run(&prog, 1, None), 0, "space again after consuming");

    let big = create(MapType::Ringbuf, 0, 0, 4096, 0);
    let fits = ringbuf_reserve_prog(big.fd(), 4080, false);
    let too_big = ringbuf_reserve_prog(big.fd(), 4088, false);
    assert_eq!(run(&too_big, 0, None), 1, "reserve of size-8 fails");
    assert_eq!(run(&fits, 7, None), 0, "reserve of size-16 succeeds");
    let mut consumer = KernelRingBuf::new(&big).unwrap().into_consumer();
    let record = consumer.next_record(Some(Duration::ZERO)).unwrap().unwrap();
    assert_eq!(record.len(), 4080);
    assert_eq!(first_u64(&record), 7);
}

#[test]
fn ringbuf_discarded_records_are_skipped_but_advance_the_position() {
    require_kernel!();
    let map = create(MapType::Ringbuf, 0, 0, 4096, 0);
    let submit = ringbuf_reserve_prog(map.fd(), 8, false);
    let discard = ringbuf_reserve_prog(map.fd(), 16, true);
    let output = ringbuf_output_prog(map.fd(), 24);
    assert_eq!(run(&submit, 1, None), 0);
    assert_eq!(run(&discard, 2, None), 0);
    assert_eq!(run(&output, 3, None), 0);
    let mut consumer = KernelRingBuf::new(&map).unwrap().into_consumer();
    // Positions 0, 16 and 40 as the kernel lays them out; the discard is at 16.
    assert_eq!(
        consumer.memory().load_len_word(16),
        16 | bpfmaps_abi::ringbuf::BPF_RINGBUF_DISCARD_BIT
    );
    assert_eq!(consumer.memory().load_producer_pos(), 72);
    let mut got = Vec::new();
    let n = consumer
        .consume(|d| {
            got.push((d.len(), first_u64(d)));
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(got, vec![(8, 1), (24, 3)]);
    assert_eq!(consumer.memory().load_consumer_pos(), 72);
}

#[test]
fn ringbuf_callback_error_stops_and_keeps_the_rest() {
    require_kernel!();
    let map = create(MapType::Ringbuf, 0, 0, 4096, 0);
    let prog = ringbuf_output_prog(map.fd(), 8);
    for i in 0..5 {
        assert_eq!(run(&prog, i, None), 0, "record {i}");
    }
    let mut consumer = KernelRingBuf::new(&map).unwrap().into_consumer();
    let mut calls = 0;
    let r = consumer.poll(Some(Duration::ZERO), |_| {
        calls += 1;
        if calls == 2 {
            Err("enough")
        } else {
            Ok(())
        }
    });
    assert_eq!(r, Err(PollError::Callback("enough")));
    assert_eq!(consumer.memory().load_consumer_pos(), 32);
    let mut rest = Vec::new();
    while let Some(r) = consumer.next_record(Some(Duration::ZERO)).unwrap() {
        rest.push(first_u64(&r));
    }
    assert_eq!(rest, vec![2, 3, 4]);
}

#[test]
fn ringbuf_poll_times_out_when_empty_and_wakes_on_a_record() {
    require_kernel!();
    let map = create(MapType::Ringbuf, 0, 0, 8192, 0);
    let prog = ringbuf_output_prog(map.fd(), 8);
    let mut consumer = KernelRingBuf::new(&map).unwrap().into_consumer();
    let start = Instant::now();
    let n = consumer
        .poll(Some(Duration::from_millis(100)), |_| Ok::<(), ()>(()))
        .unwrap();
    assert_eq!(n, 0);
    assert!(
        start.elapsed() >= Duration::from_millis(90),
        "{:?}",
        start.elapsed()
    );
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        run(&prog, 99, None)
    });
    let start = Instant::now();
    let record = consumer.next_record(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(record.map(|r| first_u64(&r)), Some(99));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "woken by epoll, not the timeout"
    );
    assert_eq!(producer.join().unwrap(), 0);
}

#[test]
fn ringbuf_consumer_rejects_other_map_types() {
    require_kernel!();
    let map = create(MapType::Array, 4, 4, 1, 0);
    assert!(matches!(
        KernelRingBuf::new(&map),
        Err(bpfmaps_kernel::Error::WrongMapType {
            expected: MapType::Ringbuf,
            ..
        })
    ));
}
