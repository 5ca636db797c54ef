//! Real-kernel tests of bpfmaps' BPF programs (bpf/*.bpf.c) through the kernel engine's object
//! loader ([`KernelObject`]), attachment by section name, and [`KernelMap`] reads: each test loads
//! one program, attaches it, fires an exact number of events from this process (or a forked
//! child) and asserts the exact map contents or events.
//!
//! Objects come from `bpf/obj/` (committed), or from `$BPFMAPS_BPF_OBJ_DIR` when set (CI points it
//! at a fresh `bpf/build.sh --out DIR`). Every program gets `target_tgid` set to this process, so
//! other processes never disturb the counts, and each program uses a syscall no other program
//! here uses, so tests can run in parallel threads (the two tests of one program, perf_events,
//! take a lock).
//!
//! These tests need root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN for tracefs and pins). Without it
//! they fail, unless `BPFMAPS_SKIP_KERNEL=1` is set: then they print why and return.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use bpfmaps_abi::consumer::PerfEvent;
use bpfmaps_abi::cpus::{percpu_stride, sum_percpu_u64};
use bpfmaps_abi::ringbuf::record_span;
use bpfmaps_abi::{Errno, MapDef, MapError, MapOps, MapType, RingBufMemory};
use bpfmaps_kernel::attach::{AttachError, AttachPoint};
use bpfmaps_kernel::map::{possible_cpus, KernelMap};
use bpfmaps_kernel::object::{
    KernelObject, LoadConfig, MapDefinitionKind, ObjectError, PinnedMapField, ProgramKind,
};
use bpfmaps_kernel::perf::{open_perf_buffer, PerfBufferConfig};
use bpfmaps_kernel::ringbuf::KernelRingBuf;
use bpfmaps_kernel::stack::{read_stack, recorded_stack_id, StackSymbolizer};

// ---------------------------------------------------------------------------------------------
// Helpers

/// True when kernel tests can run; panics (the test fails) when they cannot, unless
/// `BPFMAPS_SKIP_KERNEL=1` asks to skip.
fn kernel_ready(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
        eprintln!("skipping {test}: loading BPF programs needs root (BPFMAPS_SKIP_KERNEL=1)");
        return false;
    }
    panic!(
        "{test}: loading BPF programs needs root with CAP_BPF (euid is {euid}); run as root, or \
         set BPFMAPS_SKIP_KERNEL=1 to skip the kernel tests"
    );
}

/// The directory of the compiled objects.
fn object_dir() -> PathBuf {
    match std::env::var_os("BPFMAPS_BPF_OBJ_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/obj"),
    }
}

/// The path of object `name` (`NAME.bpf.o`).
fn object_path(name: &str) -> PathBuf {
    object_dir().join(format!("{name}.bpf.o"))
}

/// This process's id, which the programs see as the tgid.
fn my_tgid() -> u32 {
    std::process::id()
}

/// Loads object `name` filtered to this process.
fn load_for_me(name: &str) -> KernelObject {
    let config = LoadConfig::default().with_target_tgid(my_tgid());
    KernelObject::load_file(&object_path(name), &config)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// The u64 value of a u32 key, `None` when the key is missing.
fn lookup_u64(map: &KernelMap, key: u32) -> Option<u64> {
    let mut value = [0u8; 8];
    match map.lookup(&key.to_ne_bytes(), &mut value, 0) {
        Ok(()) => Some(u64::from_ne_bytes(value)),
        Err(MapError::Errno(Errno::ENOENT)) => None,
        Err(e) => panic!("lookup of {key} failed: {e}"),
    }
}

/// The raw (user-space) value of `key`, `None` when missing.
fn lookup_raw(map: &KernelMap, key: &[u8]) -> Option<Vec<u8>> {
    let mut value = vec![0u8; map.info().user_value_size()];
    match map.lookup(key, &mut value, 0) {
        Ok(()) => Some(value),
        Err(MapError::Errno(Errno::ENOENT)) => None,
        Err(e) => panic!("lookup failed: {e}"),
    }
}

/// Every key of a map, in iteration order.
fn keys(map: &KernelMap) -> Vec<Vec<u8>> {
    let key_size = map.info().key_size as usize;
    let mut keys: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut next = vec![0u8; key_size];
        match map.get_next_key(keys.last().map(Vec::as_slice), &mut next) {
            Ok(()) => keys.push(next),
            Err(MapError::Errno(Errno::ENOENT)) => return keys,
            Err(e) => panic!("get_next_key failed: {e}"),
        }
        assert!(keys.len() <= 1 << 20, "iteration does not end");
    }
}

/// The per-CPU u64 slots of a per-CPU value buffer.
fn percpu_u64s(buf: &[u8]) -> Vec<u64> {
    buf.chunks(percpu_stride(8))
        .map(|slot| u64::from_ne_bytes(slot[..8].try_into().expect("8-byte slot")))
        .collect()
}

/// A u64 field at `offset` of `bytes`.
fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_ne_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

/// A u32 field at `offset` of `bytes`.
fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_ne_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

/// Runs `f` with the calling thread bound to `cpu`, then restores the thread's CPU mask.
fn on_cpu<T>(cpu: usize, f: impl FnOnce() -> T) -> T {
    // SAFETY: cpu_set_t is plain data; an all-zero value is the empty set.
    let mut old: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `old` is a valid, writable cpu_set_t of `size` bytes.
    let rc = unsafe { libc::sched_getaffinity(0, size, &mut old) };
    assert_eq!(
        rc,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: as above.
    let mut only: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu is below CPU_SETSIZE on every machine these tests run on (checked by callers
    // against the possible CPU count) and `only` is a valid set.
    unsafe { libc::CPU_SET(cpu, &mut only) };
    // SAFETY: `only` is a valid cpu_set_t of `size` bytes.
    let rc = unsafe { libc::sched_setaffinity(0, size, &only) };
    assert_eq!(
        rc,
        0,
        "binding to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    let result = f();
    // SAFETY: `old` is the valid mask read above.
    let rc = unsafe { libc::sched_setaffinity(0, size, &old) };
    assert_eq!(
        rc,
        0,
        "restoring the CPU mask: {}",
        std::io::Error::last_os_error()
    );
    result
}

/// The number of online CPUs.
fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A fresh directory on bpffs for this test's pins, removed (with its pins) on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new(test: &str) -> PinDir {
        bpfmaps_kernel::fs::ensure_bpffs().expect("mounting bpffs");
        let dir = PathBuf::from(format!("/sys/fs/bpf/bpfmaps_test_{}_{test}", my_tgid()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("creating the pin directory");
        PinDir(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// openat_counter: the process counter

/// The calling thread's comm (what `bpf_get_current_comm` reports for it and its forks).
fn thread_comm() -> [u8; 16] {
    let mut comm = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into the buffer.
    let rc = unsafe { libc::prctl(libc::PR_GET_NAME, comm.as_mut_ptr()) };
    assert_eq!(rc, 0);
    comm
}

/// Forks a child that opens `path` exactly `opens` times (closing each fd) and exits; returns
/// its pid after it exited with status 0.
fn child_opening(path: &CString, opens: u32) -> u32 {
    // SAFETY: the child only calls async-signal-safe functions (openat, close, _exit) on memory
    // prepared before the fork, so forking a multithreaded process is sound.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        for _ in 0..opens {
            // SAFETY: `path` is a valid NUL-terminated string.
            let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY) };
            if fd < 0 {
                // SAFETY: _exit is always safe to call.
                unsafe { libc::_exit(1) };
            }
            // SAFETY: fd was just opened by this process.
            unsafe { libc::close(fd) };
        }
        // SAFETY: as above.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid int.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: {status}"
    );
    u32::try_from(pid).expect("positive pid")
}

#[test]
fn openat_counter_counts_exactly_the_opens_of_a_child_process() {
    if !kernel_ready("openat_counter_counts_exactly_the_opens_of_a_child_process") {
        return;
    }
    let mut object =
        KernelObject::load_file(&object_path("openat_counter"), &LoadConfig::default())
            .expect("loading openat_counter");
    let program = object
        .program("count_openat")
        .expect("program count_openat")
        .clone();
    assert_eq!(program.section, "tracepoint/syscalls/sys_enter_openat");
    assert_eq!(program.kind, ProgramKind::TracePoint);
    let attached = object.attach_all().expect("attaching");
    assert_eq!(attached.len(), 1);
    assert_eq!(
        attached[0].point(),
        &AttachPoint::TracePoint {
            category: "syscalls".into(),
            name: "sys_enter_openat".into()
        }
    );

    let path = CString::new("/dev/null").expect("path");
    let comm = thread_comm();
    let first = child_opening(&path, 25);
    let second = child_opening(&path, 7);

    let counts = object.map("counts").expect("map counts");
    let info = counts.info();
    assert_eq!(
        (
            info.map_type,
            info.key_size,
            info.value_size,
            info.max_entries
        ),
        (MapType::Hash, 4, 8, 10240)
    );
    assert_eq!(lookup_u64(&counts, first), Some(25));
    assert_eq!(lookup_u64(&counts, second), Some(7));

    let comms = object.map("comms").expect("map comms");
    assert_eq!(
        lookup_raw(&comms, &first.to_ne_bytes()),
        Some(comm.to_vec())
    );
    drop(attached);

    // Detached: a third child's opens are not counted.
    let third = child_opening(&path, 3);
    assert_eq!(lookup_u64(&counts, third), None);
}

#[test]
fn openat_counter_with_target_tgid_ignores_other_processes() {
    if !kernel_ready("openat_counter_with_target_tgid_ignores_other_processes") {
        return;
    }
    let mut object = load_for_me("openat_counter");
    let _attached = object.attach_all().expect("attaching");
    let path = CString::new("/dev/null").expect("path");
    let child = child_opening(&path, 5);
    for _ in 0..4 {
        std::fs::File::open("/dev/null").expect("open");
    }
    let counts = object.map("counts").expect("map counts");
    assert_eq!(lookup_u64(&counts, child), None);
    // Other test threads of this process may open files too, so at least our 4.
    assert!(lookup_u64(&counts, my_tgid()).is_some_and(|n| n >= 4));
    let keys = keys(&counts);
    assert_eq!(keys, vec![my_tgid().to_ne_bytes().to_vec()]);
}

// ---------------------------------------------------------------------------------------------
// array_counter

#[test]
fn array_counter_counts_each_slot_exactly() {
    if !kernel_ready("array_counter_counts_each_slot_exactly") {
        return;
    }
    let mut object = load_for_me("array_counter");
    let _attached = object.attach_all().expect("attaching");
    for pid in 0..20 {
        // SAFETY: getpgid has no memory arguments; unknown pids just fail with ESRCH.
        unsafe { libc::getpgid(pid) };
    }
    let slots = object.map("slots").expect("map slots");
    let counts: Vec<Option<u64>> = (0..8).map(|slot| lookup_u64(&slots, slot)).collect();
    assert_eq!(
        counts,
        vec![
            Some(3),
            Some(3),
            Some(3),
            Some(3),
            Some(2),
            Some(2),
            Some(2),
            Some(2)
        ]
    );
    assert_eq!(lookup_u64(&slots, 8), None, "index 8 is out of range");
    let description = object.map_description("slots").expect("description");
    assert_eq!(description.kind, MapDefinitionKind::Btf);
    assert_eq!(description.def.map_type, MapType::Array);
}

// ---------------------------------------------------------------------------------------------
// percpu_counters

#[test]
fn percpu_counters_count_per_cpu() {
    if !kernel_ready("percpu_counters_count_per_cpu") {
        return;
    }
    let mut object = load_for_me("percpu_counters");
    let _attached = object.attach_all().expect("attaching");
    let cpus = possible_cpus().expect("possible CPUs") as usize;
    let getsid = |arg: i32| {
        // SAFETY: getsid has no memory arguments; unknown pids just fail with ESRCH.
        unsafe { libc::getsid(arg) };
    };

    let total = object.map("total_calls").expect("total_calls");
    let by_arg = object.map("calls_by_arg").expect("calls_by_arg");
    assert_eq!(total.info().user_value_size(), 8 * cpus);

    if online_cpus() >= 2 && cpus >= 2 {
        // CPU 0: getsid(7) five times; CPU 1: getsid(7) three times and getsid(9) twice.
        on_cpu(0, || (0..5).for_each(|_| getsid(7)));
        on_cpu(1, || {
            (0..3).for_each(|_| getsid(7));
            (0..2).for_each(|_| getsid(9));
        });
        let mut expected_total = vec![0u64; cpus];
        expected_total[0] = 5;
        expected_total[1] = 5;
        let mut expected_7 = vec![0u64; cpus];
        expected_7[0] = 5;
        expected_7[1] = 3;
        let mut expected_9 = vec![0u64; cpus];
        expected_9[1] = 2;
        let total_value = lookup_raw(&total, &0u32.to_ne_bytes()).expect("slot 0");
        assert_eq!(percpu_u64s(&total_value), expected_total);
        let value_7 = lookup_raw(&by_arg, &7u32.to_ne_bytes()).expect("key 7");
        assert_eq!(percpu_u64s(&value_7), expected_7);
        // Inserted from CPU 1 by the helper: every other CPU's slot is zero-filled.
        let value_9 = lookup_raw(&by_arg, &9u32.to_ne_bytes()).expect("key 9");
        assert_eq!(percpu_u64s(&value_9), expected_9);
    } else {
        (0..8).for_each(|_| getsid(7));
        (0..2).for_each(|_| getsid(9));
        let total_value = lookup_raw(&total, &0u32.to_ne_bytes()).expect("slot 0");
        assert_eq!(sum_percpu_u64(&total_value, 8), 10);
        let value_7 = lookup_raw(&by_arg, &7u32.to_ne_bytes()).expect("key 7");
        assert_eq!(sum_percpu_u64(&value_7, 8), 8);
    }
    assert_eq!(keys(&by_arg).len(), 2);
}

// ---------------------------------------------------------------------------------------------
// lru_cache

#[test]
fn lru_cache_tracks_hits_and_keeps_the_newest_entries() {
    if !kernel_ready("lru_cache_tracks_hits_and_keeps_the_newest_entries") {
        return;
    }
    let mut object = load_for_me("lru_cache");
    let _attached = object.attach_all().expect("attaching");
    let fdatasync = |fd: i32| {
        // SAFETY: fdatasync on a descriptor that is not open just fails with EBADF.
        unsafe { libc::fdatasync(fd) };
    };
    // fds 1000..1006 are not open here: fd 1000+k is synced k+1 times, in order.
    for k in 0..6 {
        for _ in 0..=k {
            fdatasync(1000 + k);
        }
    }
    let cache = object.map("fd_cache").expect("fd_cache");
    assert_eq!(cache.info().map_type, MapType::LruHash);
    let mut last_seen = 0u64;
    for k in 0..6u32 {
        let value = lookup_raw(&cache, &(1000 + k).to_ne_bytes()).expect("cached fd");
        assert_eq!(
            u64_at(&value, 8),
            u64::from(k) + 1,
            "hits of fd {}",
            1000 + k
        );
        let seen = u64_at(&value, 0);
        assert!(seen > last_seen, "last_seen_ns grows with the call order");
        last_seen = seen;
    }
    // 200 more distinct fds: an LRU never refuses an insert, it evicts; the map never holds more
    // than max_entries and the newest key is present.
    for fd in 3000..3200 {
        fdatasync(fd);
    }
    let held = keys(&cache).len();
    assert!(held <= 64 && held > 0, "the LRU holds {held} entries");
    assert!(lookup_raw(&cache, &3199u32.to_ne_bytes()).is_some());
}

// ---------------------------------------------------------------------------------------------
// ringbuf_events

#[test]
fn ringbuf_events_are_received_exactly() {
    if !kernel_ready("ringbuf_events_are_received_exactly") {
        return;
    }
    let mut object = load_for_me("ringbuf_events");
    let events = object.map("events").expect("events");
    let info = events.info();
    assert_eq!(
        (info.map_type, info.key_size, info.value_size),
        (MapType::Ringbuf, 0, 0)
    );
    assert_eq!(info.max_entries, 16384);
    let mut consumer = KernelRingBuf::new(&events)
        .expect("ring buffer")
        .into_consumer();
    let _attached = object.attach_all().expect("attaching");

    const CALLS: u64 = 10;
    for i in 0..CALLS {
        let arg = i32::try_from(4_000_000 + i).expect("fits");
        // SAFETY: sched_getscheduler has no memory arguments; unknown pids fail with ESRCH.
        unsafe { libc::sched_getscheduler(arg) };
    }
    let mut received: Vec<(u32, u32, u64)> = Vec::new();
    let n = consumer
        .consume(|data: &[u8]| -> Result<(), ()> {
            assert_eq!(data.len(), 16);
            received.push((u32_at(data, 0), u32_at(data, 4), u64_at(data, 8)));
            Ok(())
        })
        .expect("consume");
    assert_eq!(n, 20);
    let expected: Vec<(u32, u32, u64)> = (0..CALLS)
        .flat_map(|i| [(1, my_tgid(), 4_000_000 + i), (3, my_tgid(), 4_000_000 + i)])
        .collect();
    assert_eq!(received, expected);
    // Three 16-byte records (one discarded) per call went through the ring.
    let span = record_span(16);
    assert_eq!(consumer.memory().load_producer_pos(), 3 * CALLS * span);
    assert_eq!(consumer.memory().load_consumer_pos(), 3 * CALLS * span);
    assert_eq!(
        consumer.consume(|_: &[u8]| -> Result<(), ()> { Ok(()) }),
        Ok(0)
    );
    let drops = object.map("ringbuf_drops").expect("ringbuf_drops");
    assert_eq!(lookup_u64(&drops, 0), Some(0));
}

// ---------------------------------------------------------------------------------------------
// perf_events

/// Serializes the two perf_events tests: both programs see every getpriority call of this
/// process, so one test's calls would show up in the other's samples.
static PERF_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// getpriority(PRIO_PROCESS, who): a perf_events trigger.
fn getpriority(who: u32) {
    // SAFETY: getpriority has no memory arguments; unknown pids fail with ESRCH.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, who) };
}

#[test]
fn perf_events_are_received_exactly() {
    if !kernel_ready("perf_events_are_received_exactly") {
        return;
    }
    let _serial = PERF_TESTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut object = load_for_me("perf_events");
    let perf_out = object.map("perf_out").expect("perf_out");
    let cpus = possible_cpus().expect("possible CPUs");
    let info = perf_out.info();
    assert_eq!(
        (info.map_type, info.max_entries),
        (MapType::PerfEventArray, cpus)
    );
    let mut buffer = open_perf_buffer(&perf_out, PerfBufferConfig::default()).expect("perf buffer");
    let _attached = object.attach_all().expect("attaching");

    for i in 0..10 {
        getpriority(5_000_000 + i);
    }
    let mut samples = Vec::new();
    buffer
        .consume(|event| -> Result<(), ()> {
            match event {
                PerfEvent::Sample { cpu, data } => {
                    // 16 bytes of sample, reported with the kernel's padding to raw_size 20.
                    assert_eq!(data.len(), 20);
                    assert_eq!(
                        u32_at(&data, 4),
                        cpu,
                        "the sample was written on its ring's CPU"
                    );
                    samples.push((u32_at(&data, 0), u64_at(&data, 8)));
                }
                PerfEvent::Lost { cpu, count } => panic!("lost {count} samples on CPU {cpu}"),
            }
            Ok(())
        })
        .expect("consume");
    samples.sort();
    let expected: Vec<(u32, u64)> = (0..10).map(|i| (my_tgid(), 5_000_000 + i)).collect();
    assert_eq!(samples, expected);
    let errors = object.map("output_errors").expect("output_errors");
    assert_eq!(lookup_u64(&errors, 0), Some(0));
}

#[test]
fn perf_events_report_lost_samples_when_the_ring_is_full() {
    if !kernel_ready("perf_events_report_lost_samples_when_the_ring_is_full") {
        return;
    }
    let _serial = PERF_TESTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut object = load_for_me("perf_events");
    let perf_out = object.map("perf_out").expect("perf_out");
    let config = PerfBufferConfig {
        pages_per_cpu: 1,
        wakeup_events: 1,
    };
    let mut buffer = open_perf_buffer(&perf_out, config).expect("perf buffer");
    let _attached = object.attach_all().expect("attaching");

    // Each sample record is 8 (header) + 4 (size) + 20 (raw) = 32 bytes; a 4096-byte ring keeps
    // one byte free, so it takes 127 of them.
    let written = 200u32;
    on_cpu(0, || (0..written).for_each(|i| getpriority(6_000_000 + i)));
    let errors = object.map("output_errors").expect("output_errors");
    assert_eq!(lookup_u64(&errors, 0), Some(u64::from(written) - 127));

    let mut first_batch = Vec::new();
    buffer
        .consume(|e| -> Result<(), ()> {
            first_batch.push(e);
            Ok(())
        })
        .expect("consume");
    assert_eq!(first_batch.len(), 127);
    assert!(first_batch
        .iter()
        .all(|e| matches!(e, PerfEvent::Sample { cpu: 0, .. })));

    on_cpu(0, || getpriority(7_000_000));
    let mut second_batch = Vec::new();
    buffer
        .consume(|e| -> Result<(), ()> {
            second_batch.push(e);
            Ok(())
        })
        .expect("consume");
    assert_eq!(second_batch.len(), 2, "{second_batch:?}");
    assert_eq!(
        second_batch[0],
        PerfEvent::Lost {
            cpu: 0,
            count: u64::from(written) - 127
        }
    );
    match &second_batch[1] {
        PerfEvent::Sample { cpu: 0, data } => assert_eq!(u64_at(data, 8), 7_000_000),
        other => panic!("expected the new sample, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// stack_traces

/// Calls sched_get_priority_max(policy) with a `syscall` instruction in this very function, so
/// the innermost user frame is in the test binary whatever libc's frame layout.
#[inline(never)]
fn sched_get_priority_max_from_test_binary(policy: i64) -> i64 {
    #[cfg(target_arch = "x86_64")]
    {
        let ret: i64;
        // SAFETY: sched_get_priority_max takes one integer and touches no memory; the syscall
        // instruction clobbers only rax (the result), rcx and r11, all declared.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") libc::SYS_sched_get_priority_max => ret,
                in("rdi") policy,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: as above, through libc.
        unsafe { libc::syscall(libc::SYS_sched_get_priority_max, policy) }
    }
}

#[test]
fn stack_traces_are_recorded_and_symbolized() {
    if !kernel_ready("stack_traces_are_recorded_and_symbolized") {
        return;
    }
    let mut object = load_for_me("stack_traces");
    let attached = object.attach_all().expect("attaching");
    for _ in 0..3 {
        assert_eq!(sched_get_priority_max_from_test_binary(1), 99); // SCHED_FIFO
    }
    drop(attached);

    let counts = object.map("stack_counts").expect("stack_counts");
    let stack_keys = keys(&counts);
    let mut total = 0;
    for key in &stack_keys {
        assert_eq!(key.len(), 12);
        assert_eq!(u32_at(key, 0), my_tgid());
        total += lookup_raw(&counts, key).map_or(0, |v| u64_at(&v, 0));
    }
    assert_eq!(total, 3, "three calls recorded");
    let key = &stack_keys[0];
    let user_id = recorded_stack_id(i32::from_ne_bytes(key[4..8].try_into().expect("4")))
        .expect("user stack recorded");
    let kernel_id = recorded_stack_id(i32::from_ne_bytes(key[8..12].try_into().expect("4")))
        .expect("kernel stack recorded");

    let stacks = object.map("stack_traces").expect("stack_traces");
    assert_eq!(stacks.info().value_size, 127 * 8);
    let user_ips = read_stack(&stacks, user_id)
        .expect("read")
        .expect("user stack present");
    let kernel_ips = read_stack(&stacks, kernel_id)
        .expect("read")
        .expect("kernel stack present");
    assert!(!user_ips.is_empty() && !kernel_ips.is_empty());
    assert!(
        kernel_ips.iter().all(|&ip| ip >= 0xffff_8000_0000_0000),
        "kernel addresses"
    );

    let symbolizer = StackSymbolizer::new();
    let user = symbolizer
        .user_frames(my_tgid(), &user_ips)
        .expect("user frames");
    let exe = std::env::current_exe().expect("current exe");
    let exe_name = exe
        .file_name()
        .expect("exe name")
        .to_string_lossy()
        .into_owned();
    let innermost = &user[0];
    assert!(
        innermost
            .module
            .as_deref()
            .is_some_and(|m| m.ends_with(&exe_name)),
        "innermost user frame {innermost:?} is in the test binary {exe_name}"
    );
    assert!(
        innermost
            .symbol
            .as_deref()
            .is_some_and(|s| s.contains("sched_get_priority_max_from_test_binary")),
        "innermost user frame {innermost:?} is the function making the syscall"
    );

    let kernel = symbolizer
        .kernel_frames(&kernel_ips)
        .expect("kernel frames");
    assert!(
        kernel.iter().any(|f| f.symbol.as_deref().is_some_and(|s| {
            s.starts_with("do_syscall_64") || s.starts_with("entry_SYSCALL_64")
        })),
        "the kernel stack goes through the syscall entry: {kernel:?}"
    );
    assert_eq!(
        read_stack(&stacks, 1 << 20).expect("read"),
        None,
        "no such stack id"
    );
}

// ---------------------------------------------------------------------------------------------
// legacy_map

#[test]
fn legacy_map_definition_works() {
    if !kernel_ready("legacy_map_definition_works") {
        return;
    }
    let mut object = load_for_me("legacy_map");
    let description = object
        .map_description("legacy_counts")
        .expect("legacy_counts")
        .clone();
    assert_eq!(description.kind, MapDefinitionKind::Legacy);
    assert_eq!(
        description.def,
        MapDef {
            map_type: MapType::Hash,
            key_size: 4,
            value_size: 8,
            max_entries: 128,
            map_flags: 0,
            name: "legacy_counts".into(),
        }
    );
    let _attached = object.attach_all().expect("attaching");
    let call = |policy: i32| {
        // SAFETY: no memory arguments; unknown policies fail with EINVAL.
        unsafe { libc::sched_get_priority_min(policy) };
    };
    (0..4).for_each(|_| call(1));
    (0..2).for_each(|_| call(2));
    call(77);
    let counts = object.map("legacy_counts").expect("legacy_counts");
    assert_eq!(counts.info().id, description.id);
    assert_eq!(lookup_u64(&counts, 1), Some(4));
    assert_eq!(lookup_u64(&counts, 2), Some(2));
    assert_eq!(lookup_u64(&counts, 77), Some(1));
    assert_eq!(keys(&counts).len(), 3);
}

// ---------------------------------------------------------------------------------------------
// shared_map

#[test]
fn shared_map_carries_data_between_two_programs() {
    if !kernel_ready("shared_map_carries_data_between_two_programs") {
        return;
    }
    let mut object = load_for_me("shared_map");
    let names: Vec<&str> = object.programs().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["personality_enter", "personality_exit"]);
    let attached = object.attach_all().expect("attaching");
    assert_eq!(attached.len(), 2);

    const QUERY: libc::c_ulong = 0xffff_ffff;
    // SAFETY: personality(0xffffffff) only queries the persona.
    let persona = unsafe { libc::personality(QUERY) };
    for _ in 0..4 {
        // SAFETY: as above.
        unsafe { libc::personality(QUERY) };
    }
    let results = object.map("results").expect("results");
    let value = lookup_raw(&results, &0xffff_ffffu32.to_ne_bytes()).expect("result");
    assert_eq!(u64_at(&value, 0), 5, "calls");
    assert_eq!(u64_at(&value, 8) as i64, i64::from(persona), "last_ret");
    let inflight = object.map("inflight").expect("inflight");
    assert_eq!(
        keys(&inflight),
        Vec::<Vec<u8>>::new(),
        "exit consumed every entry"
    );
}

// ---------------------------------------------------------------------------------------------
// pinned_writer / pinned_reader

/// sched_rr_get_interval(0, NULL): the pinned objects' trigger (fails with EFAULT).
fn rr_get_interval() {
    // SAFETY: a NULL timespec makes the kernel fail with EFAULT without writing anything.
    unsafe { libc::sched_rr_get_interval(0, std::ptr::null_mut()) };
}

#[test]
fn pinned_map_is_reused_by_a_second_object() {
    if !kernel_ready("pinned_map_is_reused_by_a_second_object") {
        return;
    }
    let pins = PinDir::new("reuse");
    let config = LoadConfig::default()
        .with_target_tgid(my_tgid())
        .with_pin_dir(&pins.0);
    let mut writer =
        KernelObject::load_file(&object_path("pinned_writer"), &config).expect("writer");
    let written = writer
        .map_description("pinned_counts")
        .expect("pinned_counts")
        .clone();
    let pin = pins.0.join("pinned_counts");
    assert_eq!(written.pin_path.as_deref(), Some(pin.as_path()));
    assert!(!written.reused_pin);
    assert!(pin.exists());

    let mut reader =
        KernelObject::load_file(&object_path("pinned_reader"), &config).expect("reader");
    let read = reader
        .map_description("pinned_counts")
        .expect("pinned_counts")
        .clone();
    assert!(read.reused_pin);
    assert_eq!(read.id, written.id, "the reader uses the writer's map");
    assert_ne!(
        reader
            .map_description("reader_seen")
            .expect("reader_seen")
            .id,
        written.id
    );

    let _w = writer.attach_all().expect("attaching the writer");
    let _r = reader.attach_all().expect("attaching the reader");
    for _ in 0..4 {
        rr_get_interval();
    }
    let shared = KernelMap::from_pinned(&pin).expect("opening the pin");
    assert_eq!(shared.id(), written.id);
    assert_eq!(lookup_u64(&shared, my_tgid()), Some(4));
    let seen = reader.map("reader_seen").expect("reader_seen");
    assert_eq!(
        lookup_u64(&seen, 0),
        Some(4),
        "the reader saw the writer's count"
    );
}

#[test]
fn mismatched_pin_is_rejected_with_the_differing_field() {
    if !kernel_ready("mismatched_pin_is_rejected_with_the_differing_field") {
        return;
    }
    let pins = PinDir::new("mismatch");
    let pin = pins.0.join("pinned_counts");
    let config = LoadConfig::default()
        .with_target_tgid(my_tgid())
        .with_pin_dir(&pins.0);
    let cases = [
        (MapType::Hash, 4, 4, 256, 0, PinnedMapField::ValueSize, 8, 4),
        (
            MapType::Hash,
            4,
            8,
            128,
            0,
            PinnedMapField::MaxEntries,
            256,
            128,
        ),
        (MapType::Hash, 8, 8, 256, 0, PinnedMapField::KeySize, 4, 8),
        (
            MapType::LruHash,
            4,
            8,
            256,
            0,
            PinnedMapField::MapType,
            1,
            9,
        ),
        (MapType::Hash, 4, 8, 256, 1, PinnedMapField::MapFlags, 0, 1),
    ];
    for (map_type, key_size, value_size, max_entries, map_flags, field, expected, found) in cases {
        let def = MapDef {
            map_type,
            key_size,
            value_size,
            max_entries,
            map_flags,
            name: "pinned_counts".into(),
        };
        let impostor = KernelMap::create(&def).expect("creating the impostor");
        impostor.pin(&pin).expect("pinning the impostor");
        let err = KernelObject::load_file(&object_path("pinned_writer"), &config)
            .expect_err("an incompatible pin must be refused");
        match err {
            ObjectError::PinnedMapMismatch {
                map,
                path,
                field: got_field,
                expected: got_expected,
                found: got_found,
            } => {
                assert_eq!(map, "pinned_counts");
                assert_eq!(path, pin);
                assert_eq!(
                    (got_field, got_expected, got_found),
                    (field, expected, found)
                );
            }
            other => panic!("expected PinnedMapMismatch for {field}, got {other}"),
        }
        std::fs::remove_file(&pin).expect("unpinning");
    }
}

// ---------------------------------------------------------------------------------------------
// raw_tp_counter

#[test]
fn raw_tracepoint_counts_syscalls_by_number() {
    if !kernel_ready("raw_tracepoint_counts_syscalls_by_number") {
        return;
    }
    let mut object = load_for_me("raw_tp_counter");
    let program = object
        .program("count_syscalls")
        .expect("count_syscalls")
        .clone();
    assert_eq!(program.kind, ProgramKind::RawTracePoint);
    let attached = object.attach("count_syscalls").expect("attaching");
    assert_eq!(
        attached.point(),
        &AttachPoint::RawTracePoint {
            name: "sys_enter".into()
        }
    );
    for _ in 0..7 {
        // SAFETY: getppid has no arguments. libc's wrapper always makes the syscall.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    attached.detach().expect("detaching");
    // SAFETY: as above; detached, so not counted.
    unsafe { libc::syscall(libc::SYS_getppid) };
    let counts = object.map("syscall_counts").expect("syscall_counts");
    let getppid = u32::try_from(libc::SYS_getppid).expect("syscall number");
    assert_eq!(lookup_u64(&counts, getppid), Some(7));
}

// ---------------------------------------------------------------------------------------------
// Loader and attachment errors, pinning every map

#[test]
fn unknown_global_is_a_malformed_object() {
    if !kernel_ready("unknown_global_is_a_malformed_object") {
        return;
    }
    let config = LoadConfig::default().with_global("no_such_global", &[0; 4]);
    let err = KernelObject::load_file(&object_path("array_counter"), &config).unwrap_err();
    assert!(matches!(err, ObjectError::Malformed(_)), "{err}");
    let err = KernelObject::load_file(Path::new("/nonexistent.bpf.o"), &LoadConfig::default())
        .unwrap_err();
    assert!(matches!(err, ObjectError::Read { .. }), "{err}");
}

#[test]
fn attaching_an_unknown_program_is_an_error() {
    if !kernel_ready("attaching_an_unknown_program_is_an_error") {
        return;
    }
    let mut object = load_for_me("array_counter");
    let err = object.attach("nope").unwrap_err();
    assert!(
        matches!(err, AttachError::NoSuchProgram(ref n) if n == "nope"),
        "{err}"
    );
}

#[test]
fn pin_maps_pins_every_declared_map() {
    if !kernel_ready("pin_maps_pins_every_declared_map") {
        return;
    }
    let pins = PinDir::new("pin_maps");
    let object = load_for_me("ringbuf_events");
    let mut paths = object.pin_maps(&pins.0).expect("pinning");
    paths.sort();
    assert_eq!(
        paths,
        vec![pins.0.join("events"), pins.0.join("ringbuf_drops")]
    );
    for path in &paths {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let pinned = KernelMap::from_pinned(path).expect("opening the pin");
        assert_eq!(
            pinned.id(),
            object.map_description(&name).expect("described").id
        );
    }
    // The global-data map (.rodata with target_tgid) is listed but not pinned.
    assert!(object.maps().any(|m| m.kind == MapDefinitionKind::Rodata));
    drop(object);
    // Pinned maps outlive the object that made them.
    let events = KernelMap::from_pinned(&pins.0.join("events")).expect("still pinned");
    assert_eq!(events.info().map_type, MapType::Ringbuf);
}

#[test]
fn verifier_rejection_is_a_typed_error_with_the_log() {
    if !kernel_ready("verifier_rejection_is_a_typed_error_with_the_log") {
        return;
    }
    let path = object_dir().join("rejected/null_deref.bpf.o");
    let err = KernelObject::load_file(&path, &LoadConfig::default()).unwrap_err();
    match err {
        ObjectError::Verifier {
            program,
            errno,
            log,
        } => {
            assert_eq!(program, "unchecked_lookup");
            assert_eq!(errno, Errno::EACCES);
            assert!(log.contains("map_value_or_null"), "the log says why: {log}");
        }
        other => panic!("expected a verifier rejection, got {other}"),
    }
}

#[test]
fn map_creation_failure_names_the_map_and_errno() {
    if !kernel_ready("map_creation_failure_names_the_map_and_errno") {
        return;
    }
    let path = object_dir().join("rejected/zero_entries.bpf.o");
    let err = KernelObject::load_file(&path, &LoadConfig::default()).unwrap_err();
    match err {
        ObjectError::MapCreate { map, errno } => {
            assert_eq!(map, "empty_hash");
            assert_eq!(errno, Errno::EINVAL);
        }
        other => panic!("expected a map creation failure, got {other}"),
    }
}
