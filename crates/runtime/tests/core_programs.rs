//! The CO-RE programs of `bpf/core/` on the user engine: relocated against this kernel's BTF at
//! load, run through `test_run` with contexts laid out from the same BTF, a poisoned path that
//! traps only when it runs, and helpers the user engine lacks behind `.rodata` switches that
//! prune them as the verifier does.
//!
//! Needs `/sys/kernel/btf/vmlinux` and bpftool (for the kernel's offsets); without them the tests
//! fail, unless `BPFMAPS_SKIP_KERNEL=1` is set.

use std::path::{Path, PathBuf};
use std::process::Command;

use bpfmaps_abi::MapOps;
use bpfmaps_obj::ObjectSpec;
use bpfmaps_runtime::{LoadOptions, RuntimeError, UserObject};
use bpfmaps_vm::Trap;

fn kernel_btf_available(test: &str) -> bool {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        return true;
    }
    if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
        eprintln!("skipping {test}: no kernel BTF (BPFMAPS_SKIP_KERNEL=1)");
        return false;
    }
    panic!("{test}: needs /sys/kernel/btf/vmlinux; set BPFMAPS_SKIP_KERNEL=1 to skip");
}

fn object(name: &str) -> PathBuf {
    match std::env::var_os("BPFMAPS_BPF_OBJ_DIR") {
        Some(dir) => PathBuf::from(dir).join(format!("core/{name}.bpf.o")),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../bpf/obj/core/{name}.bpf.o"))
        }
    }
}

fn load(name: &str, globals: &[(&str, &[u8])]) -> Result<UserObject, RuntimeError> {
    let mut spec = ObjectSpec::from_file(&object(name)).expect("parse");
    for (g, v) in globals {
        spec.set_global(g, v).expect("global");
    }
    UserObject::load(spec, &LoadOptions::default())
}

/// Element 0 of data map `name`.
fn data(obj: &UserObject, name: &str) -> Vec<u8> {
    let map = obj.map(name).expect("map");
    let mut value = vec![0u8; map.spec.def.value_size as usize];
    map.map
        .lookup(&0u32.to_ne_bytes(), &mut value, 0)
        .expect("lookup");
    value
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// A struct's size, or a member's byte offset, as bpftool reads them from the kernel's BTF.
fn kernel_layout(strukt: &str, member: Option<&str>) -> u64 {
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux"])
        .output()
        .expect("bpftool runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let header = format!("STRUCT '{strukt}' size=");
    let mut lines = text.lines().skip_while(|l| !l.contains(&header));
    let head = lines.next().expect("struct found");
    let Some(member) = member else {
        return head
            .split("size=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
    };
    let quoted = format!("'{member}' type_id=");
    for line in lines.take_while(|l| l.starts_with('\t')) {
        if line.trim_start().starts_with(&quoted) {
            let bits: u64 = line
                .split("bits_offset=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            return bits / 8;
        }
    }
    panic!("{strukt}.{member} not in the kernel's BTF");
}

#[test]
fn task_fields_relocate_and_read_as_absent_through_the_opaque_task() {
    if !kernel_btf_available("task_fields") {
        return;
    }
    let obj = load("task_fields", &[]).expect("loads: the poisoned read sits on a dead path");
    let r = obj
        .program("task_fields")
        .unwrap()
        .test_run(&[0u8; 48], 1)
        .expect("runs");
    assert_eq!(r.retval, 0);
    let out = data(&obj, "task_fie.bss");
    // struct task_result: tgid, parent_tgid, state, in_execve (u32 each), then u64s, then comm.
    // No task struct exists on the user engine: probe_read_kernel through the handle fails and
    // zero-fills, so every field read is 0...
    assert_eq!(
        [
            u32_at(&out, 0),
            u32_at(&out, 4),
            u32_at(&out, 8),
            u32_at(&out, 12)
        ],
        [0; 4]
    );
    assert_eq!(&out[56..72], &[0u8; 16], "comm");
    // ...while what CO-RE computes from the kernel's BTF is exact.
    assert_eq!(
        u64_at(&out, 16),
        kernel_layout("task_struct", None),
        "task_struct size"
    );
    assert_eq!(u64_at(&out, 24), 1, "PIDTYPE_TGID's value in this kernel");
    assert_eq!(u64_at(&out, 32), 0, "PIDTYPE_NO_SUCH does not exist");
    assert_eq!(u64_at(&out, 40), 0, "no_such_field does not exist");
    assert_eq!(
        u64_at(&out, 48),
        1,
        "the else branch ran, not the poisoned read"
    );
}

#[test]
fn a_tracepoint_context_is_read_at_the_kernels_offsets() {
    if !kernel_btf_available("tracepoint_context") {
        return;
    }
    let obj = load("task_fields", &[]).unwrap();
    let id_at = kernel_layout("trace_event_raw_sys_enter", Some("id")) as usize;
    let args_at = kernel_layout("trace_event_raw_sys_enter", Some("args")) as usize;
    let mut ctx = vec![0u8; kernel_layout("trace_event_raw_sys_enter", None) as usize];
    ctx[id_at..id_at + 8].copy_from_slice(&257u64.to_le_bytes());
    ctx[args_at + 8..args_at + 16].copy_from_slice(&0x1234u64.to_le_bytes());
    ctx[args_at + 16..args_at + 24].copy_from_slice(&0o644u64.to_le_bytes());
    let prog = obj.program("sys_enter_args").unwrap();
    prog.test_run(&ctx, 1).unwrap();
    prog.test_run(&ctx, 1).unwrap();
    let out = data(&obj, "task_fie.bss");
    // args_out follows task_out (72 bytes) at offset 72.
    assert_eq!(
        [
            u64_at(&out, 72),
            u64_at(&out, 80),
            u64_at(&out, 88),
            u64_at(&out, 96)
        ],
        [257, 0x1234, 0o644, 2]
    );
    // Filtered by targ_tgid (another process): nothing recorded.
    let other = load("task_fields", &[("targ_tgid", &1u32.to_ne_bytes())]).unwrap();
    other
        .program("sys_enter_args")
        .unwrap()
        .test_run(&ctx, 1)
        .unwrap();
    assert_eq!(u64_at(&data(&other, "task_fie.bss"), 96), 0);
}

#[test]
fn a_poisoned_relocation_traps_only_when_its_path_runs() {
    if !kernel_btf_available("poisoned") {
        return;
    }
    let off = load("missing_field", &[]).expect("loads");
    off.program("missing_field")
        .unwrap()
        .test_run(&[0u8; 8], 1)
        .unwrap();
    let out = data(&off, "missing_.bss");
    assert_eq!((u64_at(&out, 0), u64_at(&out, 8)), (7, 1));

    let on = load("missing_field", &[("read_missing", &[1])])
        .expect("a poisoned instruction does not refuse the object");
    let trap = on
        .program("missing_field")
        .unwrap()
        .test_run(&[0u8; 8], 1)
        .unwrap_err();
    let Trap::Poisoned { pc, .. } = &trap else {
        panic!("expected a poisoned-instruction trap, got {trap}");
    };
    assert_eq!(*pc, 10);
    let message = trap.to_string();
    for needle in [
        "instruction 10",
        "program `missing_field`",
        "byte_off `0:0`",
        "task_struct___old.no_such_field",
    ] {
        assert!(message.contains(needle), "{needle} missing in: {message}");
    }
    // The run before the trap counted.
    assert_eq!(u64_at(&data(&on, "missing_.bss"), 8), 1);
}

#[test]
fn rodata_switches_prune_unsupported_helpers_as_the_verifier_does() {
    if !kernel_btf_available("rodata_switches") {
        return;
    }
    let me = std::process::id();
    let obj = load("feature_switch", &[("targ_pid", &me.to_ne_bytes())])
        .expect("bpf_get_current_cgroup_id is on a dead path");
    obj.program("feature_switch")
        .unwrap()
        .test_run(&[0u8; 8], 1)
        .unwrap();
    let out = data(&obj, "feature_.bss");
    // cgroup_out untouched, pid_out read through the opaque task (0), one hit.
    assert_eq!(
        [u64_at(&out, 0), u64_at(&out, 8), u64_at(&out, 16)],
        [0, 0, 1]
    );

    let err = load("feature_switch", &[("use_cgroup", &[1])]).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, RuntimeError::UnsupportedHelper { program, helper, .. }
            if program == "feature_switch" && helper.contains("80")),
        "{message}"
    );
    assert!(
        message.contains("feature_switch") && message.contains("80"),
        "{message}"
    );
}

#[test]
fn a_target_btf_file_replaces_the_kernels() {
    if !kernel_btf_available("target_btf") {
        return;
    }
    let options = LoadOptions {
        target_btf: Some(PathBuf::from("/sys/kernel/btf/vmlinux")),
        ..LoadOptions::default()
    };
    let spec = ObjectSpec::from_file(&object("task_fields")).unwrap();
    UserObject::load(spec, &options).expect("loads against the file");
    let options = LoadOptions {
        target_btf: Some(PathBuf::from("/nonexistent/btf")),
        ..LoadOptions::default()
    };
    let spec = ObjectSpec::from_file(&object("task_fields")).unwrap();
    let err = UserObject::load(spec, &options).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/btf"), "{err}");
}

#[test]
fn kconfig_and_weak_ksyms_resolve_on_the_user_engine() {
    if !kernel_btf_available("externs") {
        return;
    }
    let cfg = bpfmaps_obj::KernelConfig::from_system(true).expect("kernel configuration");
    let obj = load("externs", &[]).expect("externs load on the user engine");
    obj.program("read_externs")
        .unwrap()
        .test_run(&[0u8; 8], 1)
        .expect("the kfunc call is on a dead path");
    let out = data(&obj, "externs.bss");
    let entries = cfg.entries.as_ref().unwrap();
    let tristate = |name: &str| match entries.get(name).map(String::as_str) {
        Some("y") => 1,
        Some("m") => 2,
        _ => 0,
    };
    assert_eq!(u32_at(&out, 0), cfg.version, "LINUX_KERNEL_VERSION");
    assert_eq!(u32_at(&out, 4), 1, "CONFIG_BPF_SYSCALL=y");
    assert_eq!(u32_at(&out, 8), tristate("CONFIG_BPF_JIT"));
    assert_eq!(u32_at(&out, 12), 0, "an option no kernel has");
    assert_eq!(
        u32_at(&out, 16).to_string(),
        entries
            .get("CONFIG_HZ")
            .cloned()
            .unwrap_or_else(|| "0".to_owned())
    );
    assert_eq!(
        u32_at(&out, 20),
        0,
        "bpf_ksym_exists of a missing weak kfunc"
    );
    let mut hostname = entries
        .get("CONFIG_DEFAULT_HOSTNAME")
        .map(|s| s.trim_matches('"').as_bytes().to_vec())
        .unwrap_or_default();
    hostname.truncate(7);
    hostname.resize(8, 0);
    assert_eq!(&out[24..32], hostname.as_slice());
    // The .kconfig map is read-only for programs and frozen, as libbpf makes it.
    let kconfig = obj.map("externs.kconfig").unwrap();
    assert_eq!(kconfig.spec.def.map_flags, 0x480);
}

/// Root with BPF, for loading relocated instructions into the kernel.
fn kernel_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 && Path::new("/sys/kernel/btf/vmlinux").exists() {
        return true;
    }
    if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
        eprintln!("skipping {test}: needs root and BPF (BPFMAPS_SKIP_KERNEL=1)");
        return false;
    }
    panic!("{test}: needs root with BPF (euid {euid}); set BPFMAPS_SKIP_KERNEL=1 to skip");
}

/// bpfmaps' relocated instructions, loaded into the kernel as they are (BPF_PROG_LOAD of a raw
/// tracepoint program) and run with BPF_PROG_TEST_RUN on this thread: the kernel reads this
/// thread's task_struct at the offsets bpfmaps computed, and gets this process's values. The user
/// engine runs the same instructions and, having no task struct, reads zeros.
#[test]
fn relocated_task_reads_run_in_the_kernel_and_read_this_task() {
    if !kernel_available("relocated_task_reads_run_in_the_kernel") {
        return;
    }
    use std::os::fd::AsFd;

    use bpfmaps_kernel::sys::{prog_load_raw, prog_test_run, TestRun};

    let mut spec = ObjectSpec::from_file(&object("task_retval")).unwrap();
    let target = bpfmaps_obj::TargetBtf::from_kernel().unwrap();
    let report = spec.relocate_core(&target).unwrap();
    assert!(report.poisoned_count() == 0 && !report.relocations.is_empty());
    let comm = std::fs::read("/proc/thread-self/comm").unwrap();
    let comm_head = u32::from_le_bytes([comm[0], comm[1], comm[2], comm[3]]);
    // SAFETY: getppid has no preconditions and cannot fail.
    let ppid = unsafe { libc::getppid() } as u32;
    let expected = [
        ("ret_tgid", std::process::id()),
        ("ret_parent_tgid", ppid),
        ("ret_flavor_tgid", std::process::id()),
        ("ret_comm_head", comm_head),
    ];
    for (name, want) in expected {
        let prog = spec.program(name).unwrap();
        assert!(prog.map_references.is_empty(), "{name} uses no map");
        let words: Vec<u64> = prog
            .instructions
            .iter()
            .map(|i| u64::from_le_bytes(i.to_bytes()))
            .collect();
        const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
        let fd = prog_load_raw(BPF_PROG_TYPE_RAW_TRACEPOINT, &words, "GPL", name)
            .unwrap_or_else(|e| panic!("{name}: the kernel refuses the relocated program: {e:?}"));
        let run = prog_test_run(
            fd.as_fd(),
            &TestRun {
                ctx_in: &[0u8; 8],
                ..TestRun::default()
            },
        )
        .unwrap();
        assert_eq!(run.retval, want, "{name} in the kernel");
    }
    // The flavor read in the object as compiled (offset 0) is not tgid: relocation moved it.
    let original = ObjectSpec::from_file(&object("task_retval")).unwrap();
    let before = original.program("ret_flavor_tgid").unwrap();
    let after = spec.program("ret_flavor_tgid").unwrap();
    assert_ne!(before.instructions, after.instructions);

    // The same relocated programs on the user engine: no task struct, zeros.
    let obj = UserObject::load(spec, &LoadOptions::default()).unwrap();
    for (name, _) in expected {
        let r = obj.program(name).unwrap().test_run(&[0u8; 8], 1).unwrap();
        assert_eq!(r.retval, 0, "{name} on the user engine");
    }
}
