//! The perf buffer against the real kernel: a hand-assembled raw_tp program calling
//! `bpf_perf_event_output(ctx, map, BPF_F_CURRENT_CPU, buf, 8)`, run with `BPF_PROG_TEST_RUN` on
//! a chosen CPU, read through `open_perf_buffer` and the engine-neutral `PerfBufConsumer`: exact
//! per-CPU counts, raw sizes with padding, `ENOSPC` and the `PERF_RECORD_LOST` that follows, and
//! the lifetime of the map entries the buffer installed.

mod maps_support;

use std::time::{Duration, Instant};

use bpfmaps_abi::consumer::PerfEvent;
use bpfmaps_abi::{Errno, MapOps, MapType};
use bpfmaps_kernel::map::possible_cpus;
use bpfmaps_kernel::perf::{open_perf_buffer, KernelPerfBuffer, PerfBufferConfig};
use maps_support::*;

fn drain(buffer: &mut KernelPerfBuffer) -> Vec<PerfEvent> {
    let mut events = Vec::new();
    buffer
        .consume(|e| {
            events.push(e);
            Ok::<(), ()>(())
        })
        .unwrap();
    events
}

fn sample_arg(data: &[u8]) -> u64 {
    u64::from_ne_bytes(data[..8].try_into().unwrap())
}

#[test]
fn perf_buffer_delivers_exactly_n_samples_per_cpu() {
    require_kernel!();
    let cpus = possible_cpus().unwrap();
    let map = create(MapType::PerfEventArray, 4, 4, cpus, 0);
    let prog = perf_output_prog(map.fd());
    let mut buffer = open_perf_buffer(&map, PerfBufferConfig::default()).unwrap();
    assert_eq!(buffer.rings().len(), cpus as usize);
    for cpu in 0..cpus {
        for i in 0..50u64 {
            assert_eq!(run(&prog, u64::from(cpu) * 1000 + i, Some(cpu)), 0);
        }
    }
    let events = drain(&mut buffer);
    assert_eq!(events.len(), 50 * cpus as usize);
    for cpu in 0..cpus {
        let args: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                PerfEvent::Sample { cpu: c, data } if *c == cpu => {
                    // An 8-byte payload is reported with raw_size 12 (padding included).
                    assert_eq!(data.len(), 12);
                    Some(sample_arg(data))
                }
                PerfEvent::Sample { .. } => None,
                PerfEvent::Lost { .. } => panic!("unexpected {e:?}"),
            })
            .collect();
        assert_eq!(
            args,
            (0..50)
                .map(|i| u64::from(cpu) * 1000 + i)
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(buffer.next_event(Some(Duration::ZERO)).unwrap(), None);
}

#[test]
fn perf_full_ring_gives_enospc_then_a_lost_record() {
    require_kernel!();
    let cpus = possible_cpus().unwrap();
    let map = create(MapType::PerfEventArray, 4, 4, cpus, 0);
    let prog = perf_output_prog(map.fd());
    let config = PerfBufferConfig {
        pages_per_cpu: 1,
        wakeup_events: 1,
    };
    let mut buffer = open_perf_buffer(&map, config).unwrap();
    // 24-byte records: 170 fit in 4096 bytes.
    for i in 0..170 {
        assert_eq!(run(&prog, i, Some(0)), 0, "sample {i}");
    }
    for _ in 0..4 {
        assert_eq!(run(&prog, 9999, Some(0)), -Errno::ENOSPC.0);
    }
    let events = drain(&mut buffer);
    assert_eq!(events.len(), 170);
    assert!(events.iter().enumerate().all(|(i, e)| matches!(
        e,
        PerfEvent::Sample { cpu: 0, data } if sample_arg(data) == i as u64
    )));
    assert_eq!(run(&prog, 500, Some(0)), 0);
    let events = drain(&mut buffer);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0], PerfEvent::Lost { cpu: 0, count: 4 });
    assert!(matches!(&events[1], PerfEvent::Sample { cpu: 0, data } if sample_arg(data) == 500));
}

#[test]
fn perf_poll_wakes_on_a_sample_from_another_thread() {
    require_kernel!();
    let cpus = possible_cpus().unwrap();
    let map = create(MapType::PerfEventArray, 4, 4, cpus, 0);
    let prog = perf_output_prog(map.fd());
    let mut buffer = open_perf_buffer(&map, PerfBufferConfig::default()).unwrap();
    let start = Instant::now();
    assert_eq!(
        buffer.poll(Some(Duration::from_millis(100)), |_| Ok::<(), ()>(())),
        Ok(0)
    );
    assert!(start.elapsed() >= Duration::from_millis(90));
    let last_cpu = cpus - 1;
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        run(&prog, 77, Some(last_cpu))
    });
    let event = buffer.next_event(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(
        event,
        Some(PerfEvent::Sample { cpu, ref data }) if cpu == last_cpu && sample_arg(data) == 77
    ));
    assert_eq!(producer.join().unwrap(), 0);
}

#[test]
fn perf_entries_live_as_long_as_the_installing_file() {
    require_kernel!();
    let cpus = possible_cpus().unwrap();
    let map = create(MapType::PerfEventArray, 4, 4, cpus, 0);
    let prog = perf_output_prog(map.fd());
    let mut buffer = open_perf_buffer(&map, PerfBufferConfig::default()).unwrap();
    // The test's own handle shares the buffer's open file: dropping it keeps the entries.
    drop(map);
    assert_eq!(run(&prog, 1, Some(0)), 0);
    assert_eq!(drain(&mut buffer).len(), 1);
    // An emptied slot: ENOENT from the helper.
    if cpus > 1 {
        buffer.waiter().map().delete(&k(1)).unwrap();
        assert_eq!(run(&prog, 2, Some(1)), -Errno::ENOENT.0);
    }
    // Dropping the buffer releases the last handle on the installing file: entries are cleared.
    drop(buffer);
    assert_eq!(run(&prog, 3, Some(0)), -Errno::ENOENT.0);
}

#[test]
fn perf_entries_survive_with_preserve_elems() {
    require_kernel!();
    let cpus = possible_cpus().unwrap();
    let map = create(
        MapType::PerfEventArray,
        4,
        4,
        cpus,
        bpfmaps_abi::map_flags::BPF_F_PRESERVE_ELEMS,
    );
    let prog = perf_output_prog(map.fd());
    let buffer = open_perf_buffer(&map, PerfBufferConfig::default()).unwrap();
    drop(buffer);
    drop(map);
    // The entry survives (not ENOENT), but with the buffer gone its event has no ring left to
    // write into, so the output fails with ENOSPC (observed on 6.18).
    assert_eq!(run(&prog, 3, Some(0)), -Errno::ENOSPC.0);
}

#[test]
fn perf_buffer_rejects_other_map_types_and_bad_page_counts() {
    require_kernel!();
    let array = create(MapType::Array, 4, 4, 1, 0);
    assert!(matches!(
        open_perf_buffer(&array, PerfBufferConfig::default()),
        Err(bpfmaps_kernel::Error::WrongMapType {
            expected: MapType::PerfEventArray,
            ..
        })
    ));
    let map = create(MapType::PerfEventArray, 4, 4, 1, 0);
    let config = PerfBufferConfig {
        pages_per_cpu: 3,
        wakeup_events: 1,
    };
    assert!(matches!(
        open_perf_buffer(&map, config),
        Err(bpfmaps_kernel::Error::InvalidSize(_))
    ));
    assert_eq!(map.info().max_entries, 1);
}
