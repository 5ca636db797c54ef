//! The user engine's runtime on its own (no kernel needed): the helpers return what the kernel's
//! would for the calling thread and the invocation's CPU slot (`tests/data/helpers.bpf.c`),
//! callbacks (`bpf_loop`, `bpf_for_each_map_elem`) run on the interpreter, and programs are
//! invoked from many threads at once with exact results.

use std::path::{Path, PathBuf};

use bpfmaps_abi::cpus::sum_percpu_u64;
use bpfmaps_abi::{Errno, MapOps};
use bpfmaps_obj::ObjectSpec;
use bpfmaps_runtime::{LoadOptions, UserObject};

const R_PID_TGID: u32 = 0;
const R_UID_GID: u32 = 1;
const R_CPU: u32 = 2;
const R_KTIME: u32 = 3;
const R_BOOT: u32 = 4;
const R_PRINTK: u32 = 6;
const R_PROBE_OK: u32 = 7;
const R_PROBE_BAD: u32 = 8;
const R_PROBE_STR: u32 = 9;
const R_RB_SIZE: u32 = 10;
const R_PERCPU_OTHER: u32 = 11;
const R_PERCPU_BAD: u32 = 12;
const R_COMM_LO: u32 = 13;
const R_COMM_HI: u32 = 14;
const R_LOOP_CALLS: u32 = 15;
const R_LOOP_SUM: u32 = 16;
const R_EACH_CALLS: u32 = 17;
const R_EACH_SUM: u32 = 18;
const R_LOOP_BAD_FLAGS: u32 = 19;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn seed(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../bpf/obj/{name}.bpf.o"))
}

fn load(path: &Path) -> UserObject {
    let spec = ObjectSpec::from_file(path).expect("parse");
    UserObject::load(spec, &LoadOptions::default()).expect("load")
}

fn ctx(arg0: u64) -> Vec<u8> {
    let mut ctx = vec![0u8; 64];
    ctx[16..24].copy_from_slice(&arg0.to_ne_bytes());
    ctx
}

fn result(object: &UserObject, slot: u32) -> u64 {
    let mut value = [0u8; 8];
    object
        .map("results")
        .expect("results")
        .map
        .lookup(&slot.to_ne_bytes(), &mut value, 0)
        .expect("lookup");
    u64::from_ne_bytes(value)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn task_and_time_helpers_describe_the_calling_thread_and_cpu_slot() {
    let object = load(&data("helpers.bpf.o"));
    let before = monotonic_ns();
    let r0 = object
        .program("current")
        .unwrap()
        .run_on_cpu(0, &mut ctx(0))
        .expect("CPU 0 exists")
        .expect("run");
    let after = monotonic_ns();
    assert_eq!(r0, 0);
    // SAFETY: gettid, getuid and getgid have no preconditions.
    let (tid, uid, gid) = unsafe { (libc::gettid() as u64, libc::getuid(), libc::getgid()) };
    assert_eq!(
        result(&object, R_PID_TGID),
        (u64::from(std::process::id()) << 32) | tid
    );
    assert_eq!(
        result(&object, R_UID_GID),
        (u64::from(gid) << 32) | u64::from(uid)
    );
    assert_eq!(result(&object, R_CPU), 0);
    let ktime = result(&object, R_KTIME);
    assert!(
        before <= ktime && ktime <= after,
        "{before} <= {ktime} <= {after}"
    );
    assert!(
        result(&object, R_BOOT) >= ktime,
        "boot time includes suspend"
    );
    // This thread's name, as prctl reports it (the test harness names threads after tests).
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into the 16-byte buffer.
    unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr(), 0, 0, 0) };
    let mut comm = result(&object, R_COMM_LO).to_ne_bytes().to_vec();
    comm.extend_from_slice(&result(&object, R_COMM_HI).to_ne_bytes());
    assert_eq!(comm, name.to_vec());
    // CPU 0's per-CPU slot was incremented, then read back through lookup_percpu_elem(0).
    assert_eq!(result(&object, R_PERCPU_OTHER), 101);
    assert_eq!(
        result(&object, R_PERCPU_BAD),
        1,
        "CPU 4096 does not exist: NULL"
    );
    assert_eq!(result(&object, R_RB_SIZE), 4096);
}

#[test]
fn probe_reads_reach_only_the_programs_own_memory() {
    let object = load(&data("helpers.bpf.o"));
    // args[0]: a host-looking address that no region covers.
    let host_address = &object as *const UserObject as u64;
    object
        .program("probe")
        .unwrap()
        .run(&mut ctx(host_address))
        .expect("run");
    assert_eq!(result(&object, R_PROBE_OK), 0x1122_3344_5566_7788);
    assert_eq!(
        result(&object, R_PROBE_BAD) as i64,
        -i64::from(Errno::EFAULT.0)
    );
    assert_eq!(result(&object, R_PROBE_STR), 4, "\"abc\" and its NUL");
}

#[test]
fn helpers_refuse_a_destination_size_larger_than_the_destination() {
    // probe_read_user, get_current_comm and probe_read_user_str with a 4 GiB - 1 size for a
    // 16-byte stack buffer: the destination is checked before anything is built for it, and
    // the run stops with a write fault of exactly that size.
    let object = load(&data("helpers.bpf.o"));
    let program = object.program("oversized").unwrap();
    for (which, helper) in [(0u64, 112u32), (1, 16), (2, 114)] {
        let mut context = ctx(which);
        context[24..32].copy_from_slice(&0xffff_ffffu64.to_ne_bytes());
        match program.run(&mut context) {
            Err(bpfmaps_vm::Trap::Helper {
                id,
                error: bpfmaps_vm::HelperError::Memory(fault),
                ..
            }) => {
                assert_eq!(id, helper);
                assert_eq!((fault.len, fault.write), (0xffff_ffff, true), "{fault}");
            }
            other => panic!("helper {helper}: {other:?}"),
        }
        // A size that fits runs normally.
        context[24..32].copy_from_slice(&16u64.to_ne_bytes());
        program.run(&mut context).expect("a fitting size");
    }
}

#[test]
fn trace_printk_formats_and_appends_to_the_trace_pipe() {
    let object = load(&data("helpers.bpf.o"));
    let marker = u64::from(std::process::id()) * 1000 + 7;
    object
        .program("printk")
        .unwrap()
        .run(&mut ctx(marker))
        .expect("run");
    let message = format!("bpfmaps {marker} hello");
    assert_eq!(result(&object, R_PRINTK), message.len() as u64);
    let pipe = bpfmaps_runtime::trace::trace_pipe_path(&bpfmaps_maps::pin_root());
    let text = std::fs::read_to_string(&pipe).expect("trace pipe");
    let line = text
        .lines()
        .find(|l| l.ends_with(&message))
        .expect("our line");
    assert!(line.contains(": bpf_trace_printk: "), "{line}");
}

#[test]
fn bpf_loop_calls_back_until_told_to_stop() {
    let object = load(&data("helpers.bpf.o"));
    let program = object.program("loop").unwrap();
    // 0 + 1 + 2 + 3 + 4 reaches 10 at the fifth call, which stops the loop.
    program.run(&mut ctx(100)).expect("run");
    assert_eq!(result(&object, R_LOOP_CALLS), 5 | (5 << 32));
    assert_eq!(result(&object, R_LOOP_SUM), 10);
    assert_eq!(
        result(&object, R_LOOP_BAD_FLAGS) as i64,
        -i64::from(Errno::EINVAL.0)
    );
    // Three loops never reach 10: all three run and bpf_loop returns 3.
    program.run(&mut ctx(3)).expect("run");
    assert_eq!(result(&object, R_LOOP_CALLS), 3 | (3 << 32));
    assert_eq!(result(&object, R_LOOP_SUM), 3);
}

#[test]
fn for_each_map_elem_visits_every_element_and_can_change_values() {
    let object = load(&data("helpers.bpf.o"));
    let items = object.map("items").unwrap().map.clone();
    for (key, value) in [(1u32, 10u64), (2, 20), (3, 30)] {
        items
            .update(&key.to_ne_bytes(), &value.to_ne_bytes(), 0)
            .unwrap();
    }
    object
        .program("for_each")
        .unwrap()
        .run(&mut ctx(0))
        .expect("run");
    assert_eq!(result(&object, R_EACH_CALLS), 3 | (3 << 32));
    assert_eq!(result(&object, R_EACH_SUM), 1010 + 2020 + 3030);
    for (key, value) in [(1u32, 11u64), (2, 21), (3, 31)] {
        let mut got = [0u8; 8];
        items.lookup(&key.to_ne_bytes(), &mut got, 0).unwrap();
        assert_eq!(
            u64::from_ne_bytes(got),
            value,
            "the callback wrote through the value"
        );
    }
}

#[test]
fn many_threads_invoke_one_program_with_exact_results() {
    let mut spec = ObjectSpec::from_file(&seed("percpu_counters")).expect("parse");
    spec.set_global("target_tgid", &std::process::id().to_ne_bytes())
        .unwrap();
    let object = UserObject::load(spec, &LoadOptions::default()).expect("load");
    let counters = load(&seed("array_counter"));
    const THREADS: u64 = 4;
    const RUNS: u64 = 500;
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let percpu = object.program("count_getsid").unwrap().clone();
                let shared = counters.program("count_getpgid").unwrap();
                for _ in 0..RUNS {
                    percpu.run(&mut ctx(7)).expect("run");
                    shared.run(&mut ctx(5)).expect("run");
                }
            });
        }
    });
    // Per-CPU values need no atomics: each run owned its CPU slot.
    let mut value = vec![
        0u8;
        object
            .map("total_calls")
            .unwrap()
            .map
            .info()
            .user_value_size()
    ];
    object
        .map("total_calls")
        .unwrap()
        .map
        .lookup(&0u32.to_ne_bytes(), &mut value, 0)
        .unwrap();
    assert_eq!(sum_percpu_u64(&value, 8), THREADS * RUNS);
    object
        .map("calls_by_arg")
        .unwrap()
        .map
        .lookup(&7u32.to_ne_bytes(), &mut value, 0)
        .unwrap();
    assert_eq!(sum_percpu_u64(&value, 8), THREADS * RUNS);
    // The shared array's counter is updated with real atomics.
    let mut slot = [0u8; 8];
    counters
        .map("slots")
        .unwrap()
        .map
        .lookup(&5u32.to_ne_bytes(), &mut slot, 0)
        .unwrap();
    assert_eq!(u64::from_ne_bytes(slot), THREADS * RUNS);
}

#[test]
fn perf_event_output_with_current_cpu_reaches_the_invocations_cpu_ring() {
    use bpfmaps_abi::consumer::PerfEvent;
    use bpfmaps_maps::perf_event_array::{PerfBuffer, PerfEventArray};

    let mut spec = ObjectSpec::from_file(&seed("perf_events")).expect("parse");
    spec.set_global("target_tgid", &std::process::id().to_ne_bytes())
        .unwrap();
    let object = UserObject::load(spec, &LoadOptions::default()).expect("load");
    let perf_map = object.map("perf_out").unwrap().map.clone();
    let perf = perf_map
        .backend()
        .as_any()
        .downcast_ref::<PerfEventArray>()
        .expect("a perf event array");
    let mut consumer = PerfBuffer::new(perf, 1)
        .expect("perf buffer")
        .into_consumer();
    let program = object.program("perf_sample_getpriority").unwrap();
    let cpus = bpfmaps_maps::possible_cpus();
    for cpu in 0..cpus {
        let mut context = vec![0u8; 64];
        context[24..32].copy_from_slice(&(1_000 + u64::from(cpu)).to_ne_bytes());
        assert_eq!(
            program
                .run_on_cpu(cpu, &mut context)
                .expect("cpu")
                .expect("run"),
            0
        );
    }
    let mut samples = Vec::new();
    while let Some(event) = consumer
        .next_event(Some(std::time::Duration::ZERO))
        .expect("read")
    {
        match event {
            PerfEvent::Sample { cpu, data } => samples.push((
                cpu,
                u32::from_ne_bytes(data[0..4].try_into().unwrap()),
                u32::from_ne_bytes(data[4..8].try_into().unwrap()),
                u64::from_ne_bytes(data[8..16].try_into().unwrap()),
            )),
            PerfEvent::Lost { count, .. } => panic!("{count} samples lost"),
        }
    }
    samples.sort();
    let expected: Vec<(u32, u32, u32, u64)> = (0..cpus)
        .map(|cpu| (cpu, std::process::id(), cpu, 1_000 + u64::from(cpu)))
        .collect();
    assert_eq!(
        samples, expected,
        "each sample on its CPU's ring, saying that CPU"
    );
    let mut errors = [0u8; 8];
    object
        .map("output_errors")
        .unwrap()
        .map
        .lookup(&0u32.to_ne_bytes(), &mut errors, 0)
        .unwrap();
    assert_eq!(u64::from_ne_bytes(errors), 0);
}

#[test]
fn a_mismatched_pin_is_refused_naming_the_field() {
    use bpfmaps_abi::{MapDef, MapType};
    use bpfmaps_runtime::{PinField, RuntimeError};

    let dir = bpfmaps_maps::pin_root().join(format!("userrun_mismatch_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("pin dir");
    // pinned_counts is HASH 256, u32 -> u64: pin a HASH 128 under its name.
    let def = MapDef {
        map_type: MapType::Hash,
        key_size: 4,
        value_size: 8,
        max_entries: 128,
        map_flags: 0,
        name: "pinned_counts".into(),
    };
    let existing = bpfmaps_maps::UserMap::create(&def).expect("create");
    existing.pin(&dir.join("pinned_counts")).expect("pin");
    let spec = ObjectSpec::from_file(&seed("pinned_writer")).expect("parse");
    let options = LoadOptions {
        pin_dir: Some(dir.clone()),
        vm_config: None,
        target_btf: None,
    };
    let result = UserObject::load(spec, &options);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Err(RuntimeError::PinnedMapMismatch {
            map,
            field,
            expected,
            found,
            ..
        }) => {
            assert_eq!(map, "pinned_counts");
            assert_eq!((field, expected, found), (PinField::MaxEntries, 256, 128));
        }
        other => panic!(
            "expected a pin mismatch, got {:?}",
            other.map(|o| o.name().to_owned())
        ),
    }
}
