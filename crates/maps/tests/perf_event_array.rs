//! The user engine's PERF_EVENT_ARRAY against the kernel's rules and the real kernel: creation
//! and syscall errnos, `bpf_perf_event_output` errors, sample and lost record layout byte for
//! byte, the shared perf buffer consumer, entry lifetime, and a consumer in another process.

#[path = "ringbuf/kernel.rs"]
mod kernel;

use std::time::{Duration, Instant};

use bpfmaps_abi::consumer::{PerfBufConsumer, PerfEvent, PerfWait};
use bpfmaps_abi::map_flags::*;
use bpfmaps_abi::ringbuf::perf::{
    DATA_HEAD_OFFSET, DATA_OFFSET_OFFSET, DATA_SIZE_OFFSET, DATA_TAIL_OFFSET,
};
use bpfmaps_abi::{BatchBuffers, Errno, MapDef, MapError, MapOps, MapType, PerfRingMemory};
use bpfmaps_maps::perf_event_array::{PerfBuffer, PerfEventArray, PerfRing, BPF_F_CURRENT_CPU};
use kernel::{cmd, insn};

fn def(max_entries: u32, flags: u32) -> MapDef {
    MapDef {
        map_type: MapType::PerfEventArray,
        key_size: 4,
        value_size: 4,
        max_entries,
        map_flags: flags,
        name: "events".into(),
    }
}

fn ring_bytes(ring: &PerfRing, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    ring.copy_out(0, &mut out);
    out
}

fn ours_errno<T>(r: Result<T, MapError>) -> Option<Errno> {
    r.err()
        .map(|e| e.errno().expect("an errno, not a size error"))
}

fn kv<T>(r: Result<T, i32>) -> Option<Errno> {
    r.err().map(Errno)
}

/// A kernel perf event array with `events` installed: slot i gets a BPF output event of CPU
/// `events[i]` with one data page, mapped read-write.
struct KernelPerf {
    map: kernel::Fd,
    events: Vec<(kernel::Fd, kernel::Mmap)>,
}

impl KernelPerf {
    fn new(max_entries: u32, events: &[i32]) -> KernelPerf {
        let map = kernel::map_create(4, 4, 4, max_entries, 0, "events").expect("perf array");
        let events = events
            .iter()
            .enumerate()
            .map(|(slot, &cpu)| {
                let fd = kernel::perf_output_event(cpu).expect("perf_event_open");
                let mmap = kernel::Mmap::new(&fd, 0, 2 * 4096, true).expect("mmap perf ring");
                let key = (slot as u32).to_le_bytes();
                let mut value = (fd.0 as u32).to_le_bytes();
                kernel::elem(cmd::MAP_UPDATE_ELEM, &map, Some(&key), Some(&mut value), 0)
                    .expect("install");
                (fd, mmap)
            })
            .collect();
        KernelPerf { map, events }
    }

    fn head(&self, slot: usize) -> u64 {
        self.events[slot].1.u64_at(DATA_HEAD_OFFSET)
    }

    fn data(&self, slot: usize) -> Vec<u8> {
        self.events[slot].1.bytes(4096, 4096)
    }

    /// A program that saves ctx, fills `len` stack bytes and calls
    /// `perf_event_output(ctx, map, index_flags, r10 - len, len)`, returning its result.
    fn output_program(&self, index_flags: u32, len: i32) -> kernel::Fd {
        let mut v = vec![insn::mov_reg(6, 1)];
        let words = (len + 7) / 8;
        v.extend((1..=words).map(|i| insn::st_dw(10, (-8 * i) as i16, 0x0101_0101 * i)));
        v.push(insn::mov_reg(1, 6));
        v.extend(insn::ld_map_fd(2, self.map.0));
        // A 32-bit move zero-extends, so 0xffffffff stays BPF_F_CURRENT_CPU.
        v.push(0xb4 | 3 << 8 | u64::from(index_flags) << 32);
        v.extend([
            insn::mov_reg(4, 10),
            insn::add_imm(4, -8 * words),
            insn::mov_imm(5, len),
        ]);
        v.extend([insn::call(25), insn::exit()]);
        kernel::load_socket_filter(&v).unwrap_or_else(|(e, log)| panic!("load: errno {e}\n{log}"))
    }
}

/// The bytes the output program of `len` passes: stack words from r10 - 8·words upwards.
fn program_bytes(len: i32) -> Vec<u8> {
    let words = (len + 7) / 8;
    let mut out = vec![0u8; (words * 8) as usize];
    for i in 1..=words {
        let word = (0x0101_0101i64 * i64::from(i)) as u64;
        let at = ((words - i) * 8) as usize;
        out[at..at + 8].copy_from_slice(&word.to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

#[test]
fn creation_rules_match_the_kernel() {
    let cases: Vec<(&str, u32, u32, u32, u32)> = vec![
        ("ok", 4, 4, 2, 0),
        ("key8", 8, 4, 2, 0),
        ("value8", 4, 8, 2, 0),
        ("zero", 4, 4, 0, 0),
        ("numa", 4, 4, 2, BPF_F_NUMA_NODE),
        ("rdonly", 4, 4, 2, BPF_F_RDONLY),
        ("wronly", 4, 4, 2, BPF_F_WRONLY),
        ("rdwr", 4, 4, 2, BPF_F_RDONLY | BPF_F_WRONLY),
        ("preserve", 4, 4, 2, BPF_F_PRESERVE_ELEMS),
        ("rdonly_prog", 4, 4, 2, BPF_F_RDONLY_PROG),
        ("wronly_prog", 4, 4, 2, BPF_F_WRONLY_PROG),
        ("mmapable", 4, 4, 2, BPF_F_MMAPABLE),
        ("no_prealloc", 4, 4, 2, BPF_F_NO_PREALLOC),
        ("inner_map", 4, 4, 2, BPF_F_INNER_MAP),
        ("zero_seed", 4, 4, 2, BPF_F_ZERO_SEED),
        ("bad-name", 4, 4, 2, 0),
    ];
    let ours: Vec<Option<Errno>> = cases
        .iter()
        .map(|&(name, key, value, max, flags)| {
            let d = MapDef {
                key_size: key,
                value_size: value,
                name: name.into(),
                ..def(max, flags)
            };
            PerfEventArray::create(&d).err().map(|e| match e {
                bpfmaps_maps::perf_event_array::PerfError::Refused(errno) => errno,
                other => panic!("{other}"),
            })
        })
        .collect();
    let accepted: Vec<&str> = cases
        .iter()
        .zip(&ours)
        .filter(|(_, o)| o.is_none())
        .map(|(c, _)| c.0)
        .collect();
    assert_eq!(accepted, ["ok", "numa", "rdonly", "wronly", "preserve"]);
    if !kernel::available() {
        return;
    }
    for (&(name, key, value, max, flags), ours) in cases.iter().zip(ours) {
        assert_eq!(
            kv(kernel::map_create(4, key, value, max, flags, name)),
            ours,
            "case {name}"
        );
    }
}

#[test]
fn syscall_side_matches_the_kernel() {
    let map = PerfEventArray::create(&def(2, 0)).unwrap();
    let ring = PerfRing::create(0, 1).unwrap();
    let token = ring.token().to_le_bytes();
    let k0 = 0u32.to_le_bytes();
    let k1 = 1u32.to_le_bytes();
    let k2 = 2u32.to_le_bytes();
    let k9 = 9u32.to_le_bytes();
    let bogus = 0x7fff_fff0u32.to_le_bytes();
    let mut value = [0u8; 4];
    let mut next = [0u8; 4];
    let mut keys = [0u8; 64];
    let mut values = [0u8; 64];
    let mut out = [0u8; 4];
    let mut ours: Vec<(&str, Option<Errno>)> = vec![
        ("lookup empty", ours_errno(map.lookup(&k0, &mut value, 0))),
        ("lookup F_LOCK", ours_errno(map.lookup(&k0, &mut value, 4))),
        ("update NOEXIST", ours_errno(map.update(&k0, &token, 1))),
        ("update EXIST", ours_errno(map.update(&k0, &token, 2))),
        (
            "update out of range",
            ours_errno(map.update(&k2, &token, 0)),
        ),
        (
            "update not a perf event",
            ours_errno(map.update(&k0, &bogus, 0)),
        ),
        ("delete empty", ours_errno(map.delete(&k1))),
        ("delete out of range", ours_errno(map.delete(&k9))),
        ("update", ours_errno(map.update(&k0, &token, 0))),
        (
            "lookup installed",
            ours_errno(map.lookup(&k0, &mut value, 0)),
        ),
        ("delete installed", ours_errno(map.delete(&k0))),
        ("delete again", ours_errno(map.delete(&k0))),
        ("next NULL", ours_errno(map.get_next_key(None, &mut next))),
    ];
    assert_eq!(next, k0);
    ours.push(("next 0", ours_errno(map.get_next_key(Some(&k0), &mut next))));
    assert_eq!(next, k1);
    ours.push((
        "next last",
        ours_errno(map.get_next_key(Some(&k1), &mut next)),
    ));
    ours.push((
        "next out of range",
        ours_errno(map.get_next_key(Some(&k9), &mut next)),
    ));
    assert_eq!(next, k0);
    ours.push((
        "lookup_and_delete",
        ours_errno(map.lookup_and_delete(&k0, &mut value, 0)),
    ));
    {
        let mut b = BatchBuffers {
            keys: &mut keys,
            values: &mut values,
            count: 1,
        };
        ours.push((
            "lookup_batch",
            ours_errno(map.lookup_batch(None, &mut out, &mut b, 0, 0)),
        ));
        ours.push(("update_batch", ours_errno(map.update_batch(&mut b, 0, 0))));
        ours.push(("delete_batch", ours_errno(map.delete_batch(&mut b, 0, 0))));
        assert_eq!(b.count, 1);
    }
    ours.push(("freeze", ours_errno(map.freeze())));
    ours.push(("update frozen", ours_errno(map.update(&k0, &token, 0))));
    ours.push(("delete frozen", ours_errno(map.delete(&k0))));
    let expected: Vec<Option<Errno>> = [
        524, 22, 22, 22, 7, 9, 2, 7, 0, 524, 0, 2, 0, 0, 2, 0, 524, 524, 524, 524, 0, 1, 1,
    ]
    .iter()
    .map(|&e| if e == 0 { None } else { Some(Errno(e)) })
    .collect();
    assert_eq!(ours.iter().map(|o| o.1).collect::<Vec<_>>(), expected);

    if !kernel::available() {
        return;
    }
    let k = kernel::map_create(4, 4, 4, 2, 0, "events").unwrap();
    let event = kernel::perf_output_event(0).unwrap();
    let mut fd_value = (event.0 as u32).to_le_bytes();
    let mut map_fd_value = (k.0 as u32).to_le_bytes();
    let mut theirs: Vec<Option<Errno>> = vec![
        kv(kernel::elem(
            cmd::MAP_LOOKUP_ELEM,
            &k,
            Some(&k0),
            Some(&mut value),
            0,
        )),
        kv(kernel::elem(
            cmd::MAP_LOOKUP_ELEM,
            &k,
            Some(&k0),
            Some(&mut value),
            4,
        )),
        kv(kernel::elem(
            cmd::MAP_UPDATE_ELEM,
            &k,
            Some(&k0),
            Some(&mut fd_value),
            1,
        )),
        kv(kernel::elem(
            cmd::MAP_UPDATE_ELEM,
            &k,
            Some(&k0),
            Some(&mut fd_value),
            2,
        )),
        kv(kernel::elem(
            cmd::MAP_UPDATE_ELEM,
            &k,
            Some(&k2),
            Some(&mut fd_value),
            0,
        )),
        kv(kernel::elem(
            cmd::MAP_UPDATE_ELEM,
            &k,
            Some(&k0),
            Some(&mut map_fd_value),
            0,
        )),
        kv(kernel::elem(cmd::MAP_DELETE_ELEM, &k, Some(&k1), None, 0)),
        kv(kernel::elem(cmd::MAP_DELETE_ELEM, &k, Some(&k9), None, 0)),
        kv(kernel::elem(
            cmd::MAP_UPDATE_ELEM,
            &k,
            Some(&k0),
            Some(&mut fd_value),
            0,
        )),
        kv(kernel::elem(
            cmd::MAP_LOOKUP_ELEM,
            &k,
            Some(&k0),
            Some(&mut value),
            0,
        )),
        kv(kernel::elem(cmd::MAP_DELETE_ELEM, &k, Some(&k0), None, 0)),
        kv(kernel::elem(cmd::MAP_DELETE_ELEM, &k, Some(&k0), None, 0)),
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
            Some(&k0),
            Some(&mut next),
            0,
        )),
        kv(kernel::elem(
            cmd::MAP_GET_NEXT_KEY,
            &k,
            Some(&k1),
            Some(&mut next),
            0,
        )),
        kv(kernel::elem(
            cmd::MAP_GET_NEXT_KEY,
            &k,
            Some(&k9),
            Some(&mut next),
            0,
        )),
        kv(kernel::elem(
            cmd::MAP_LOOKUP_AND_DELETE_ELEM,
            &k,
            Some(&k0),
            Some(&mut value),
            0,
        )),
    ];
    for command in [
        cmd::MAP_LOOKUP_BATCH,
        cmd::MAP_UPDATE_BATCH,
        cmd::MAP_DELETE_BATCH,
    ] {
        theirs.push(kv(kernel::batch(command, &k, 1)));
    }
    theirs.push(kv(kernel::freeze(&k)));
    theirs.push(kv(kernel::elem(
        cmd::MAP_UPDATE_ELEM,
        &k,
        Some(&k0),
        Some(&mut fd_value),
        0,
    )));
    theirs.push(kv(kernel::elem(
        cmd::MAP_DELETE_ELEM,
        &k,
        Some(&k0),
        None,
        0,
    )));
    for ((what, ours), theirs) in ours.iter().zip(&theirs) {
        assert_eq!(ours, theirs, "{what}");
    }
}

#[test]
fn sample_records_match_the_kernel_byte_for_byte() {
    let sizes = [8, 4, 13, 1, 24, 64];
    let map = PerfEventArray::create(&def(2, 0)).unwrap();
    let ring = PerfRing::create(0, 1).unwrap();
    map.install(0, &ring).unwrap();
    for &len in &sizes {
        map.output(BPF_F_CURRENT_CPU, 0, &program_bytes(len))
            .unwrap();
    }
    let head = ring.load_head();
    // header(8) + raw_size(4) + round_up(len + 4, 8) - 4
    let expected_head: u64 = sizes
        .iter()
        .map(|&l| 8 + ((l as u64 + 4).div_ceil(8) * 8))
        .sum();
    assert_eq!(head, expected_head);
    let ours = ring_bytes(&ring, 4096);
    // The first record: SAMPLE, misc KERNEL, size 24, raw_size 12 for an 8-byte payload.
    assert_eq!(&ours[0..12], &[9, 0, 0, 0, 1, 0, 24, 0, 12, 0, 0, 0]);
    // The second: 4-byte payload, raw_size 4, a 16-byte record.
    assert_eq!(&ours[24..36], &[9, 0, 0, 0, 1, 0, 16, 0, 4, 0, 0, 0]);

    if !kernel::available() {
        return;
    }
    let old = kernel::pin_to_cpu(0);
    let k = KernelPerf::new(2, &[0]);
    for &len in &sizes {
        let prog = k.output_program(0xffff_ffff, len);
        assert_eq!(kernel::test_run(&prog, 1), Ok(0), "output of {len} bytes");
    }
    kernel::restore_affinity(&old);
    assert_eq!(k.head(0), head);
    let meta = &k.events[0].1;
    assert_eq!(meta.u64_at(DATA_OFFSET_OFFSET), 4096);
    assert_eq!(meta.u64_at(DATA_SIZE_OFFSET), 4096);
    assert_eq!(k.data(0), ours, "the whole data area, byte for byte");
}

#[test]
fn output_errors_match_the_kernel() {
    // Slot 0 holds a CPU-1 ring, slot 1 is empty, max_entries 2; the program runs on CPU 0.
    let map = PerfEventArray::create(&def(2, 0)).unwrap();
    let other_cpu = PerfRing::create(1, 1).unwrap();
    map.install(0, &other_cpu).unwrap();
    let data = program_bytes(8);
    let ours = [
        map.output(0, 0, &data).err(),
        map.output(1, 0, &data).err(),
        map.output(2, 0, &data).err(),
        map.output(BPF_F_CURRENT_CPU, 0, &data).err(),
        map.output(1 << 32, 0, &data).err(),
        map.output(1 << 52, 0, &data).err(),
    ];
    assert_eq!(
        ours,
        [
            Some(Errno::EOPNOTSUPP),
            Some(Errno::ENOENT),
            Some(Errno::E2BIG),
            Some(Errno::EOPNOTSUPP),
            Some(Errno::EINVAL),
            Some(Errno::EINVAL)
        ]
    );
    assert_eq!(
        map.output(0, 1, &data),
        Ok(()),
        "slot 0 from CPU 1, the ring's CPU"
    );
    assert_eq!(
        map.output(BPF_F_CURRENT_CPU, 1, &data),
        Err(Errno::ENOENT),
        "slot 1 is empty"
    );
    assert_eq!(
        map.output(BPF_F_CURRENT_CPU, 2, &data),
        Err(Errno::E2BIG),
        "CPU 2 ≥ max_entries"
    );

    if !kernel::available() {
        return;
    }
    let old = kernel::pin_to_cpu(0);
    let k = KernelPerf::new(2, &[1]);
    let neg = |e: Errno| Ok((-e.0) as u32);
    let theirs =
        [0u32, 1, 2, 0xffff_ffff].map(|index| kernel::test_run(&k.output_program(index, 8), 1));
    kernel::restore_affinity(&old);
    assert_eq!(
        theirs,
        [
            neg(Errno::EOPNOTSUPP),
            neg(Errno::ENOENT),
            neg(Errno::E2BIG),
            neg(Errno::EOPNOTSUPP)
        ]
    );
}

#[test]
fn lost_samples_are_counted_and_reported_before_the_next_sample() {
    let map = PerfEventArray::create(&def(1, 0)).unwrap();
    let ring = PerfRing::create(0, 1).unwrap();
    map.install(0, &ring).unwrap();
    let data = program_bytes(8);
    for i in 0..170 {
        assert_eq!(
            map.output(BPF_F_CURRENT_CPU, 0, &data),
            Ok(()),
            "sample {i}"
        );
    }
    for _ in 0..4 {
        assert_eq!(map.output(BPF_F_CURRENT_CPU, 0, &data), Err(Errno::ENOSPC));
    }
    assert_eq!(ring.pending_lost(), 4);
    let head = ring.load_head();
    assert_eq!(head, 170 * 24);
    ring.store_tail(head);
    map.output(BPF_F_CURRENT_CPU, 0, &data).unwrap();
    assert_eq!(ring.pending_lost(), 0);
    let mut records = [0u8; 48];
    ring.copy_out(head, &mut records);
    // LOST {type 2, misc 0, size 24, id, lost 4}, then the sample (wrapping the end).
    assert_eq!(&records[0..8], &[2, 0, 0, 0, 0, 0, 24, 0]);
    assert_eq!(u64::from_le_bytes(records[16..24].try_into().unwrap()), 4);
    assert_eq!(&records[24..36], &[9, 0, 0, 0, 1, 0, 24, 0, 12, 0, 0, 0]);
    assert_eq!(&records[36..44], &data[..]);

    if !kernel::available() {
        return;
    }
    let old = kernel::pin_to_cpu(0);
    let k = KernelPerf::new(1, &[0]);
    let prog = k.output_program(0xffff_ffff, 8);
    let filled = kernel::test_run(&prog, 174);
    let khead = k.head(0);
    k.events[0].1.set_u64(DATA_TAIL_OFFSET, khead);
    let after = kernel::test_run(&prog, 1);
    kernel::restore_affinity(&old);
    assert_eq!(
        filled,
        Ok((-28i32) as u32),
        "the 171st..174th sample fail with ENOSPC"
    );
    assert_eq!(khead, head);
    let kdata = k.data(0);
    let at = (khead % 4096) as usize;
    let mut theirs = kdata[at..].to_vec();
    theirs.extend_from_slice(&kdata[..48 - theirs.len().min(48)]);
    theirs.truncate(48);
    assert_eq!(after, Ok(0));
    assert_eq!(&theirs[0..8], &records[0..8], "LOST header");
    assert_eq!(
        &theirs[16..48],
        &records[16..48],
        "lost count and the sample after it"
    );
}

#[test]
fn the_shared_consumer_reads_samples_and_losses_across_the_wrap() {
    let map = PerfEventArray::create(&def(2, 0)).unwrap();
    let mut consumer = PerfBuffer::new(&map, 1).unwrap().into_consumer();
    assert_eq!(consumer.rings().len(), 2);
    // Move the ring near its end, then write a record that wraps.
    for _ in 0..100 {
        map.output(BPF_F_CURRENT_CPU, 1, &[0u8; 28]).unwrap();
    }
    assert_eq!(consumer.consume(|_| Ok::<(), ()>(())), Ok(100));
    let payload: Vec<u8> = (0..100u8).collect();
    for _ in 0..40 {
        let _ = map.output(BPF_F_CURRENT_CPU, 1, &payload);
    }
    let mut events = Vec::new();
    consumer
        .consume(|e| {
            events.push(e);
            Ok::<(), ()>(())
        })
        .unwrap();
    let samples = events
        .iter()
        .filter(|e| matches!(e, PerfEvent::Sample { .. }))
        .count();
    assert_eq!(
        samples, 36,
        "4096 / 112 rounded down, minus the byte perf keeps free"
    );
    for e in &events {
        match e {
            PerfEvent::Sample { cpu, data } => {
                assert_eq!(*cpu, 1);
                assert_eq!(
                    data.len(),
                    100,
                    "raw_size includes padding: round_up(104, 8) - 4"
                );
                assert_eq!(&data[..], &payload[..]);
            }
            PerfEvent::Lost { .. } => panic!("nothing reported lost yet"),
        }
    }
    map.output(BPF_F_CURRENT_CPU, 1, b"x").unwrap();
    let next = consumer.next_event(Some(Duration::from_secs(1))).unwrap();
    assert_eq!(next, Some(PerfEvent::Lost { cpu: 1, count: 4 }));
    let next = consumer.next_event(Some(Duration::from_secs(1))).unwrap();
    assert!(
        matches!(next, Some(PerfEvent::Sample { cpu: 1, ref data }) if data.len() == 4 && data[0] == b'x')
    );
    // The waiter sleeps when there is nothing, and a sample wakes it.
    let start = Instant::now();
    assert_eq!(
        consumer.waiter().wait(Some(Duration::from_millis(300))),
        Ok(())
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "slept until the timeout"
    );
}

#[test]
fn entries_vanish_with_the_installing_handle_unless_preserved() {
    for (flags, survives) in [(0, false), (BPF_F_PRESERVE_ELEMS, true)] {
        let creator = PerfEventArray::create(&def(1, flags)).unwrap();
        let installer = PerfEventArray::open(creator.file().try_clone().unwrap()).unwrap();
        let ring = PerfRing::create(0, 1).unwrap();
        installer.install(0, &ring).unwrap();
        assert_eq!(creator.output(0, 0, b"1"), Ok(()));
        drop(installer);
        let result = creator.output(0, 0, b"2");
        if survives {
            assert_eq!(result, Ok(()), "PRESERVE_ELEMS keeps the entry");
        } else {
            assert_eq!(
                result,
                Err(Errno::ENOENT),
                "closing the installing handle clears it"
            );
        }
        assert_eq!(creator.is_installed(0), survives);
    }
}

const DEAD_INSTALLER_ENV: &str = "BPFMAPS_PERF_TEST_DEAD_INSTALLER";

/// The child half of `entries_of_a_killed_installer_vanish_and_its_ring_files_go`: installs a
/// ring in slot 0 and exits without closing anything. Does nothing unless started by that test.
#[test]
fn child_process_dead_installer() {
    let Ok(path) = std::env::var(DEAD_INSTALLER_ENV) else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let map = PerfEventArray::open(file).unwrap();
    let ring = PerfRing::create(0, 1).unwrap();
    map.install(0, &ring).unwrap();
    println!("\nINSTALLED");
    // Die without dropping the ring or the map, as a SIGKILL would.
    std::process::exit(0);
}

#[test]
fn entries_of_a_killed_installer_vanish_and_its_ring_files_go() {
    use std::os::fd::AsRawFd;
    let map = PerfEventArray::create(&def(1, 0)).unwrap();
    let path = format!("/proc/{}/fd/{}", std::process::id(), map.file().as_raw_fd());
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_dead_installer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DEAD_INSTALLER_ENV, &path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("INSTALLED"));
    let slot_key = map
        .region()
        .atomic_u64(4096)
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_ne!(slot_key, 0, "the child's entry is in the slot");
    let ring_file = format!("/dev/shm/bpfmaps-perf-{slot_key:016x}");
    assert!(std::path::Path::new(&ring_file).exists());
    // The installer is gone: like a closed map fd, its entry is cleared (ENOENT), and with it
    // the last live reference to the ring, whose file is removed.
    assert_eq!(map.output(BPF_F_CURRENT_CPU, 0, b"x"), Err(Errno::ENOENT));
    assert!(!map.is_installed(0));
    assert!(
        !std::path::Path::new(&ring_file).exists(),
        "{ring_file} left behind"
    );
}

const CHILD_ENV: &str = "BPFMAPS_PERF_TEST_CHILD";

/// The child half of `a_consumer_in_another_process_is_woken`: does nothing unless started by
/// that test with the map's path in the environment.
#[test]
fn child_process_perf_consumer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let map = PerfEventArray::open(file).unwrap();
    let mut consumer: PerfBufConsumer<_, _> = PerfBuffer::new(&map, 2).unwrap().into_consumer();
    let start = Instant::now();
    let event = consumer.next_event(Some(Duration::from_secs(20))).unwrap();
    let data = match event {
        Some(PerfEvent::Sample { cpu, data }) => {
            format!("{cpu}:{}", String::from_utf8_lossy(&data))
        }
        other => format!("{other:?}"),
    };
    println!("\nCHILD-RESULT {data} {}", start.elapsed().as_millis());
}

#[test]
fn a_consumer_in_another_process_is_woken() {
    use std::os::fd::AsRawFd;
    let map = PerfEventArray::create(&def(2, 0)).unwrap();
    let path = format!("/proc/{}/fd/{}", std::process::id(), map.file().as_raw_fd());
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_perf_consumer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !(map.is_installed(0) && map.is_installed(1)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the child never installed its rings"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(map.output(BPF_F_CURRENT_CPU, 1, b"hi-child"), Ok(()));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    let line = stdout
        .split("CHILD-RESULT ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no child result in {stdout:?}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    // raw_size of an 8-byte payload is 12: four pad bytes follow.
    assert!(fields[0].starts_with("1:hi-child"), "{line}");
    let waited: u64 = fields[1].parse().unwrap();
    assert!((200..10_000).contains(&waited), "woken after {waited} ms");
    // The child has exited: its entries are gone, as when a process holding the map fd dies.
    assert_eq!(
        map.output(BPF_F_CURRENT_CPU, 1, b"late"),
        Err(Errno::ENOENT)
    );
}

/// Measures `output` (printed with `--nocapture`; run with `--release` for numbers) next to the
/// kernel's `bpf_perf_event_output` as `BPF_PROG_TEST_RUN` times it, both into a ring that is
/// drained as it fills.
#[test]
fn output_cost_is_measured_next_to_the_kernel() {
    const OPS: u32 = 100_000;
    let map = PerfEventArray::create(&def(1, 0)).unwrap();
    let ring = PerfRing::create(0, 256).unwrap();
    map.install(0, &ring).unwrap();
    let data = program_bytes(8);
    let start = Instant::now();
    for i in 0..OPS {
        if i.is_multiple_of(20_000) {
            ring.store_tail(ring.load_head());
        }
        map.output(BPF_F_CURRENT_CPU, 0, &data).unwrap();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(OPS);
    println!("user engine: perf output(8 B) {ns:.1} ns/op");
    if !kernel::available() {
        return;
    }
    let old = kernel::pin_to_cpu(0);
    let k = KernelPerf::new(1, &[0]);
    let prog = k.output_program(0xffff_ffff, 8);
    // One data page holds 170 samples; the rest are lost, so time a short run that fits and a
    // long one that mostly takes the ENOSPC path.
    let fits = kernel::test_run_timed(&prog, 150).unwrap();
    let full = kernel::test_run_timed(&prog, OPS).unwrap();
    kernel::restore_affinity(&old);
    assert_eq!(fits.0, 0);
    assert_eq!(full.0, (-28i32) as u32);
    println!(
        "kernel: bpf_perf_event_output(8 B) program run {} ns when it fits, {} ns when full",
        fits.1, full.1
    );
}
