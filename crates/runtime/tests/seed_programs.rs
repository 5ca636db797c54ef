//! The proof of the user engine's runtime: every seed program of `bpf/` runs on the user engine
//! with synthetic tracepoint contexts (`bpf/include/bpfmaps_tracepoint.h`), and its maps hold
//! what the same events produce on the kernel engine, where the real syscalls are fired with the
//! same arguments (`target_tgid` = this process). Dumps are compared key for key; where a value
//! is inherently different (ktime, stack ids, CPU) the shape is compared.
//!
//! Every test takes one lock, so no two tests fire syscalls at once: the kernel programs see
//! every matching syscall of this process. The kernel side needs root with CAP_BPF: without it
//! the tests fail, unless `BPFMAPS_SKIP_KERNEL=1` is set (then they print why and return).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use bpfmaps_abi::consumer::RingBufConsumer;
use bpfmaps_abi::cpus::sum_percpu_u64;
use bpfmaps_abi::{Errno, MapError, MapOps, RingBufMemory};
use bpfmaps_kernel::object::{KernelObject, LoadConfig};
use bpfmaps_kernel::ringbuf::KernelRingBuf;
use bpfmaps_maps::ringbuf::RingBuf;
use bpfmaps_obj::ObjectSpec;
use bpfmaps_runtime::{LoadOptions, UserObject};

static SERIAL: Mutex<()> = Mutex::new(());

/// Takes the test lock; `None` when the kernel is unavailable and skipping was asked for.
fn start(test: &str) -> Option<MutexGuard<'static, ()>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
            eprintln!("skipping {test}: the kernel side needs root (BPFMAPS_SKIP_KERNEL=1)");
            return None;
        }
        panic!(
            "{test}: the kernel side needs root with CAP_BPF (euid is {euid}); run as root, or \
             set BPFMAPS_SKIP_KERNEL=1 to skip the kernel tests"
        );
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

fn object_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../bpf/obj/{name}.bpf.o"))
}

fn me() -> u32 {
    std::process::id()
}

fn kernel_load(name: &str, pin_dir: Option<&Path>) -> KernelObject {
    let mut config = LoadConfig::default().with_target_tgid(me());
    if let Some(dir) = pin_dir {
        config = config.with_pin_dir(dir);
    }
    KernelObject::load_file(&object_path(name), &config)
        .unwrap_or_else(|e| panic!("kernel load {name}: {e}"))
}

fn user_load(name: &str, pin_dir: Option<&Path>) -> UserObject {
    let mut spec = ObjectSpec::from_file(&object_path(name)).expect("parse");
    spec.set_global("target_tgid", &me().to_ne_bytes())
        .expect("target_tgid");
    let options = LoadOptions {
        pin_dir: pin_dir.map(Path::to_owned),
        vm_config: None,
        target_btf: None,
    };
    UserObject::load(spec, &options).unwrap_or_else(|e| panic!("user load {name}: {e}"))
}

/// Every element of a map, by key.
fn dump(map: &dyn MapOps) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let info = map.info();
    let mut out = BTreeMap::new();
    let mut key: Option<Vec<u8>> = None;
    let mut next = vec![0u8; info.key_size as usize];
    let mut value = vec![0u8; info.user_value_size()];
    loop {
        match map.get_next_key(key.as_deref(), &mut next) {
            Ok(()) => {}
            Err(MapError::Errno(Errno::ENOENT)) => break,
            Err(e) => panic!("get_next_key: {e}"),
        }
        map.lookup(&next, &mut value, 0).expect("lookup");
        out.insert(next.clone(), value.clone());
        key = Some(next.clone());
    }
    out
}

fn kernel_dump(object: &KernelObject, map: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    dump(
        &object
            .map(map)
            .unwrap_or_else(|e| panic!("kernel map {map}: {e}")),
    )
}

fn user_dump(object: &UserObject, map: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    dump(
        object
            .map(map)
            .unwrap_or_else(|e| panic!("user map {map}: {e}"))
            .map
            .as_ref(),
    )
}

/// A `syscalls:sys_enter_*` context: common fields, the syscall number at 8, args at 16.
fn enter_ctx(args: &[u64]) -> Vec<u8> {
    let mut ctx = vec![0u8; 64];
    for (i, arg) in args.iter().enumerate() {
        ctx[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
    }
    ctx
}

/// A `syscalls:sys_exit_*` context: the return value at 16.
fn exit_ctx(ret: i64) -> Vec<u8> {
    let mut ctx = vec![0u8; 24];
    ctx[16..24].copy_from_slice(&ret.to_ne_bytes());
    ctx
}

fn run(object: &UserObject, program: &str, mut ctx: Vec<u8>) {
    let r0 = object
        .program(program)
        .expect("program")
        .run(&mut ctx)
        .unwrap_or_else(|trap| panic!("{program} trapped: {trap}"));
    assert_eq!(r0, 0, "{program} returns 0");
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_ne_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

fn i32_at(bytes: &[u8], offset: usize) -> i32 {
    i32::from_ne_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

#[test]
fn array_counter_matches_the_kernel() {
    let Some(_serial) = start("array_counter_matches_the_kernel") else {
        return;
    };
    let mut kernel = kernel_load("array_counter", None);
    let attached = kernel.attach_all().expect("attach");
    for pid in 0..20 {
        // SAFETY: getpgid has no memory arguments; unknown pids fail with ESRCH.
        unsafe { libc::getpgid(pid) };
    }
    drop(attached);
    let user = user_load("array_counter", None);
    for pid in 0..20u64 {
        run(&user, "count_getpgid", enter_ctx(&[pid]));
    }
    let expected = kernel_dump(&kernel, "slots");
    assert_eq!(u64_at(&expected[&0u32.to_ne_bytes().to_vec()], 0), 3);
    assert_eq!(user_dump(&user, "slots"), expected);
}

#[test]
fn percpu_counters_match_the_kernel_summed_over_cpus() {
    let Some(_serial) = start("percpu_counters_match_the_kernel_summed_over_cpus") else {
        return;
    };
    let args = [
        1_000_001u64,
        1_000_002,
        1_000_002,
        1_000_003,
        1_000_003,
        1_000_003,
    ];
    let mut kernel = kernel_load("percpu_counters", None);
    let attached = kernel.attach_all().expect("attach");
    for &arg in &args {
        // SAFETY: getsid has no memory arguments; unknown pids fail with ESRCH.
        unsafe { libc::getsid(arg as i32) };
    }
    drop(attached);
    let user = user_load("percpu_counters", None);
    for &arg in &args {
        run(&user, "count_getsid", enter_ctx(&[arg]));
    }
    // Which CPU counted is the scheduler's choice on both engines: compare the sums per key.
    let sums = |d: BTreeMap<Vec<u8>, Vec<u8>>| -> BTreeMap<Vec<u8>, u64> {
        d.into_iter()
            .map(|(k, v)| (k, sum_percpu_u64(&v, 8)))
            .collect()
    };
    for map in ["total_calls", "calls_by_arg"] {
        let expected = sums(kernel_dump(&kernel, map));
        assert_eq!(sums(user_dump(&user, map)), expected, "{map}");
    }
    let by_arg = sums(user_dump(&user, "calls_by_arg"));
    assert_eq!(by_arg.values().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[test]
fn lru_cache_matches_the_kernel_hits_and_timestamps_in_shape() {
    let Some(_serial) = start("lru_cache_matches_the_kernel_hits_and_timestamps_in_shape") else {
        return;
    };
    let fds = [100u64, 101, 100, 100, 1000];
    let mut kernel = kernel_load("lru_cache", None);
    let attached = kernel.attach_all().expect("attach");
    for &fd in &fds {
        // SAFETY: fdatasync has no memory arguments; bad fds fail with EBADF.
        unsafe { libc::fdatasync(fd as i32) };
    }
    drop(attached);
    let user = user_load("lru_cache", None);
    for &fd in &fds {
        run(&user, "cache_fdatasync", enter_ctx(&[fd]));
    }
    let shape = |d: BTreeMap<Vec<u8>, Vec<u8>>| -> BTreeMap<Vec<u8>, (bool, u64)> {
        d.into_iter()
            .map(|(k, v)| (k, (u64_at(&v, 0) > 0, u64_at(&v, 8))))
            .collect()
    };
    let expected = shape(kernel_dump(&kernel, "fd_cache"));
    assert_eq!(expected.len(), 3);
    assert_eq!(shape(user_dump(&user, "fd_cache")), expected);
}

#[test]
fn openat_counter_matches_the_kernel() {
    let Some(_serial) = start("openat_counter_matches_the_kernel") else {
        return;
    };
    let mut kernel = kernel_load("openat_counter", None);
    let user = user_load("openat_counter", None);
    let attached = kernel.attach_all().expect("attach");
    for _ in 0..3 {
        std::fs::File::open("/dev/null").expect("open");
    }
    drop(attached);
    for _ in 0..3 {
        // openat(AT_FDCWD, "/dev/null", O_RDONLY): the program reads no argument.
        run(&user, "count_openat", enter_ctx(&[(-100i64) as u64, 0, 0]));
    }
    for map in ["counts", "comms"] {
        let expected = kernel_dump(&kernel, map);
        assert_eq!(expected.len(), 1, "{map}: one process");
        assert_eq!(user_dump(&user, map), expected, "{map}");
    }
}

/// Drains a ring buffer consumer into (kind, tgid, arg) triples.
fn drain<M: RingBufMemory>(consumer: &mut RingBufConsumer<M>) -> Vec<(u32, u32, u64)> {
    let mut out = Vec::new();
    consumer
        .consume(|data: &[u8]| -> Result<(), ()> {
            out.push((
                i32_at(data, 0) as u32,
                i32_at(data, 4) as u32,
                u64_at(data, 8),
            ));
            Ok(())
        })
        .expect("consume");
    out
}

#[test]
fn ringbuf_events_match_the_kernel_record_for_record() {
    let Some(_serial) = start("ringbuf_events_match_the_kernel_record_for_record") else {
        return;
    };
    let args = [4_000_001u64, 4_000_002, 4_000_003];
    let mut kernel = kernel_load("ringbuf_events", None);
    let events = kernel.map("events").expect("events");
    let mut kernel_consumer = KernelRingBuf::new(&events).expect("ring").into_consumer();
    let attached = kernel.attach_all().expect("attach");
    for &arg in &args {
        // SAFETY: no memory arguments; unknown pids fail with ESRCH.
        unsafe { libc::sched_getscheduler(arg as i32) };
    }
    drop(attached);
    let user = user_load("ringbuf_events", None);
    for &arg in &args {
        run(&user, "ringbuf_pattern", enter_ctx(&[arg]));
    }
    let ring = user.map("events").expect("events").map.clone();
    let view = ring
        .backend()
        .as_any()
        .downcast_ref::<RingBuf>()
        .expect("a ring buffer")
        .consumer()
        .expect("consumer");
    let mut user_consumer = RingBufConsumer::new(view);
    let expected = drain(&mut kernel_consumer);
    assert_eq!(expected.len(), 6);
    assert_eq!(drain(&mut user_consumer), expected);
    // Both rings advanced by the same bytes (the discarded records included).
    assert_eq!(
        user_consumer.memory().load_producer_pos(),
        kernel_consumer.memory().load_producer_pos()
    );
    assert_eq!(
        user_dump(&user, "ringbuf_drops"),
        kernel_dump(&kernel, "ringbuf_drops")
    );
}

#[test]
fn perf_events_without_a_reader_fail_like_the_kernel() {
    let Some(_serial) = start("perf_events_without_a_reader_fail_like_the_kernel") else {
        return;
    };
    let mut kernel = kernel_load("perf_events", None);
    let attached = kernel.attach_all().expect("attach");
    for who in [1_000_001u32, 1_000_002] {
        // SAFETY: no memory arguments; unknown ids fail with ESRCH.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, who) };
    }
    drop(attached);
    let user = user_load("perf_events", None);
    for who in [1_000_001u64, 1_000_002] {
        run(
            &user,
            "perf_sample_getpriority",
            enter_ctx(&[u64::from(libc::PRIO_PROCESS), who]),
        );
    }
    // No perf buffer is open on either engine: every output fails with ENOENT and is counted.
    let expected = kernel_dump(&kernel, "output_errors");
    assert_eq!(u64_at(&expected[&0u32.to_ne_bytes().to_vec()], 0), 2);
    assert_eq!(user_dump(&user, "output_errors"), expected);
}

#[test]
fn stack_traces_match_the_kernel_in_shape() {
    let Some(_serial) = start("stack_traces_match_the_kernel_in_shape") else {
        return;
    };
    let mut kernel = kernel_load("stack_traces", None);
    let attached = kernel.attach_all().expect("attach");
    // One call site: a loop the optimizer cannot unroll (an unrolled loop is three call sites,
    // so three different user stacks and three keys).
    for _ in 0..std::hint::black_box(3) {
        // SAFETY: no memory arguments.
        unsafe { libc::sched_get_priority_max(std::hint::black_box(libc::SCHED_FIFO)) };
    }
    drop(attached);
    let user = user_load("stack_traces", None);
    for _ in 0..3 {
        run(
            &user,
            "record_stacks",
            enter_ctx(&[libc::SCHED_FIFO as u64]),
        );
    }
    let kernel_counts = kernel_dump(&kernel, "stack_counts");
    let user_counts = user_dump(&user, "stack_counts");
    assert_eq!(kernel_counts.len(), 1);
    assert_eq!(user_counts.len(), 1);
    let (kernel_key, kernel_value) = kernel_counts.iter().next().expect("one key");
    let (user_key, user_value) = user_counts.iter().next().expect("one key");
    assert_eq!(user_value, kernel_value, "three calls from one call site");
    assert_eq!(i32_at(user_key, 0), i32_at(kernel_key, 0), "tgid");
    assert!(
        i32_at(kernel_key, 4) >= 0 && i32_at(user_key, 4) >= 0,
        "user stacks recorded"
    );
    assert!(
        i32_at(kernel_key, 8) >= 0,
        "the kernel records its kernel stack"
    );
    assert_eq!(
        i32_at(user_key, 8),
        -Errno::EFAULT.0,
        "the user engine has no kernel stack"
    );
    assert_eq!(
        user_dump(&user, "stack_traces").len(),
        1,
        "one stack stored"
    );
}

#[test]
fn legacy_map_matches_the_kernel() {
    let Some(_serial) = start("legacy_map_matches_the_kernel") else {
        return;
    };
    let policies = [0u64, 1, 1, 2, 2, 2];
    let mut kernel = kernel_load("legacy_map", None);
    let attached = kernel.attach_all().expect("attach");
    for &policy in &policies {
        // SAFETY: no memory arguments.
        unsafe { libc::sched_get_priority_min(policy as i32) };
    }
    drop(attached);
    let user = user_load("legacy_map", None);
    for &policy in &policies {
        run(&user, "count_priority_min", enter_ctx(&[policy]));
    }
    let expected = kernel_dump(&kernel, "legacy_counts");
    assert_eq!(expected.len(), 3);
    assert_eq!(user_dump(&user, "legacy_counts"), expected);
}

#[test]
fn shared_map_matches_the_kernel_across_two_programs() {
    let Some(_serial) = start("shared_map_matches_the_kernel_across_two_programs") else {
        return;
    };
    const QUERY: u64 = 0xffff_ffff;
    let mut kernel = kernel_load("shared_map", None);
    let attached = kernel.attach_all().expect("attach");
    let mut returned = Vec::new();
    for _ in 0..2 {
        // SAFETY: personality(0xffffffff) only reads the current persona.
        returned.push(i64::from(unsafe {
            libc::personality(QUERY as libc::c_ulong)
        }));
    }
    drop(attached);
    let user = user_load("shared_map", None);
    for &ret in &returned {
        run(&user, "personality_enter", enter_ctx(&[QUERY]));
        run(&user, "personality_exit", exit_ctx(ret));
    }
    for map in ["inflight", "results"] {
        assert_eq!(user_dump(&user, map), kernel_dump(&kernel, map), "{map}");
    }
    assert_eq!(user_dump(&user, "results").len(), 1);
}

/// A pin directory removed (with its pins) at the end of the test.
struct PinDir(PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn pinned_map_is_shared_by_two_objects_like_the_kernel() {
    let Some(_serial) = start("pinned_map_is_shared_by_two_objects_like_the_kernel") else {
        return;
    };
    bpfmaps_kernel::fs::ensure_bpffs().expect("bpffs");
    let kernel_pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/bpfmaps_userrun_{}",
        me()
    )));
    std::fs::create_dir_all(&kernel_pins.0).expect("kernel pin dir");
    let user_pins = PinDir(bpfmaps_maps::pin_root().join(format!("userrun_test_{}", me())));
    std::fs::create_dir_all(&user_pins.0).expect("user pin dir");

    let mut writer = kernel_load("pinned_writer", Some(&kernel_pins.0));
    let mut reader = kernel_load("pinned_reader", Some(&kernel_pins.0));
    let w = writer.attach_all().expect("attach writer");
    let r = reader.attach_all().expect("attach reader");
    for _ in 0..4 {
        // SAFETY: a NULL timespec makes the kernel fail with EFAULT without writing anything.
        unsafe { libc::sched_rr_get_interval(0, std::ptr::null_mut()) };
    }
    drop((w, r));

    let user_writer = user_load("pinned_writer", Some(&user_pins.0));
    let user_reader = user_load("pinned_reader", Some(&user_pins.0));
    let pinned = user_reader.map("pinned_counts").expect("pinned_counts");
    assert!(pinned.reused_pin, "the reader reuses the writer's pin");
    assert_eq!(
        pinned.map.id(),
        user_writer
            .map("pinned_counts")
            .expect("pinned_counts")
            .map
            .id()
    );
    for _ in 0..4 {
        run(&user_writer, "write_pinned", enter_ctx(&[0, 0]));
        run(
            &user_reader,
            "read_pinned",
            exit_ctx(-i64::from(Errno::EFAULT.0)),
        );
    }
    assert_eq!(
        user_dump(&user_reader, "pinned_counts"),
        kernel_dump(&reader, "pinned_counts")
    );
    let seen = kernel_dump(&reader, "reader_seen");
    assert_eq!(u64_at(&seen[&0u32.to_ne_bytes().to_vec()], 0), 4);
    assert_eq!(user_dump(&user_reader, "reader_seen"), seen);
}

#[test]
fn raw_tracepoint_matches_the_kernels_test_run() {
    let Some(_serial) = start("raw_tracepoint_matches_the_kernels_test_run") else {
        return;
    };
    let kernel = kernel_load("raw_tp_counter", None);
    let user = user_load("raw_tp_counter", None);
    // struct bpf_raw_tracepoint_args for sys_enter: args[0] = regs pointer, args[1] = syscall nr.
    let runs: [(u64, u64); 4] = [(0, 39), (0, 39), (0, 57), (0, 39)];
    let kernel = kernel;
    for &(regs, nr) in &runs {
        let mut ctx = Vec::new();
        ctx.extend_from_slice(&regs.to_ne_bytes());
        ctx.extend_from_slice(&nr.to_ne_bytes());
        let fd = kernel.program_fd("count_syscalls").expect("program");
        let result = bpfmaps_kernel::sys::prog_test_run(
            fd,
            &bpfmaps_kernel::sys::TestRun {
                ctx_in: &ctx,
                ..Default::default()
            },
        )
        .expect("BPF_PROG_TEST_RUN");
        assert_eq!(result.retval, 0);
        let user_result = user
            .program("count_syscalls")
            .expect("program")
            .test_run(&ctx, 1)
            .expect("test run");
        assert_eq!(user_result.retval, result.retval);
    }
    let expected = kernel_dump(&kernel, "syscall_counts");
    assert_eq!(expected.len(), 2);
    assert_eq!(user_dump(&user, "syscall_counts"), expected);
}

#[test]
fn rodata_is_frozen_and_read_only_for_programs() {
    let Some(_serial) = start("rodata_is_frozen_and_read_only_for_programs") else {
        return;
    };
    let user = user_load("array_counter", None);
    let rodata = user
        .maps()
        .iter()
        .find(|m| m.spec.kind == bpfmaps_obj::MapKind::Rodata)
        .expect(".rodata");
    assert!(rodata.map.info().frozen);
    let mut value = vec![0u8; rodata.spec.def.value_size as usize];
    rodata
        .map
        .lookup(&0u32.to_ne_bytes(), &mut value, 0)
        .expect("lookup");
    assert_eq!(
        value[..4],
        me().to_ne_bytes(),
        "target_tgid was set before load"
    );
    assert_eq!(
        rodata.map.update(&0u32.to_ne_bytes(), &value, 0),
        Err(MapError::Errno(Errno::EPERM)),
        "frozen"
    );
}
