//! CO-RE relocation against this machine's kernel BTF, compared with libbpf's: every object of
//! `bpf/obj/core/` is relocated by bpfmaps and loaded by libbpf (`bpftool -d prog loadall`, whose
//! debug log lists each relocation libbpf applied); both must patch the same instructions of the
//! same programs with the same values, and poison the same ones.
//!
//! Needs root with BPF (for bpftool's load) and `/sys/kernel/btf/vmlinux`; without them the tests
//! fail, unless `BPFMAPS_SKIP_KERNEL=1` is set. Objects come from `bpf/obj/core/` or from
//! `$BPFMAPS_BPF_OBJ_DIR/core/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bpfmaps_obj::{CoreKind, CoreReport, ObjectSpec, TargetBtf, POISON_HELPER_ID};

/// Whether the kernel side can run; panics unless skipping was asked for.
fn kernel_available(test: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_owned();
    if euid == "0" && Path::new("/sys/kernel/btf/vmlinux").exists() {
        return true;
    }
    if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
        eprintln!("skipping {test}: needs root and kernel BTF (BPFMAPS_SKIP_KERNEL=1)");
        return false;
    }
    panic!(
        "{test}: needs root with BPF and /sys/kernel/btf/vmlinux (euid {euid}); set \
         BPFMAPS_SKIP_KERNEL=1 to skip the kernel tests"
    );
}

fn core_dir() -> PathBuf {
    match std::env::var_os("BPFMAPS_BPF_OBJ_DIR") {
        Some(dir) => PathBuf::from(dir).join("core"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/obj/core"),
    }
}

fn core_objects() -> Vec<PathBuf> {
    let mut objects: Vec<PathBuf> = std::fs::read_dir(core_dir())
        .expect("bpf/obj/core exists (run bpf/build.sh)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    objects.sort();
    assert!(objects.len() >= 2, "the CO-RE objects are built");
    objects
}

/// One relocation as applied: (program, relo number, instruction, old value, new value), or
/// with `None` values when poisoned.
type Applied = (String, usize, usize, Option<(u64, u64)>);

/// What libbpf did, from its debug log.
fn libbpf_relocations(object: &Path) -> BTreeSet<Applied> {
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/bpfmaps-core-test-{}-{}",
        std::process::id(),
        // bpffs refuses `.` in names.
        object
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .replace('.', "_")
    ));
    let out = Command::new("bpftool")
        .arg("-d")
        .args(["prog", "loadall"])
        .arg(object)
        .arg(&pins)
        .output()
        .expect("bpftool runs");
    let _ = std::fs::remove_dir_all(&pins);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "libbpf must load {}:\n{log}",
        object.display()
    );
    let mut applied = BTreeSet::new();
    let mut poisoned: BTreeSet<(String, usize)> = BTreeSet::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix("libbpf: prog '") else {
            continue;
        };
        let Some((prog, rest)) = rest.split_once("': relo #") else {
            continue;
        };
        let Some((relo, rest)) = rest.split_once(": ") else {
            continue;
        };
        let relo: usize = relo.parse().unwrap();
        if let Some(rest) = rest.strip_prefix("patched insn #") {
            let (insn, rest) = rest.split_once(' ').unwrap();
            let (_, values) = rest.split_once(") ").unwrap();
            let mut words = values.split_whitespace();
            let what = words.next().unwrap();
            if what == "mem_sz" {
                continue;
            }
            let old: u64 = words.next().unwrap().parse().unwrap();
            assert_eq!(words.next(), Some("->"));
            let new: u64 = words.next().unwrap().parse().unwrap();
            applied.insert((
                prog.to_owned(),
                relo,
                insn.parse().unwrap(),
                Some((old, new)),
            ));
        } else if let Some(rest) = rest.strip_prefix("substituting insn #") {
            let insn: usize = rest.split_once(' ').unwrap().0.parse().unwrap();
            // An lddw is poisoned in both slots (two lines): keep the first.
            if poisoned.insert((prog.to_owned(), relo)) {
                applied.insert((prog.to_owned(), relo, insn, None));
            }
        }
    }
    applied
}

/// Our outcomes in libbpf's terms: libbpf relocates each function (a `.text` subprogram under
/// its own name) before linking, so an instruction is named by its function and its index there.
fn ours(report: &CoreReport, spec: &ObjectSpec) -> BTreeSet<Applied> {
    report
        .relocations
        .iter()
        .map(|o| {
            let program = spec.program(&o.program).expect("reported program exists");
            let f = program
                .functions
                .iter()
                .find(|f| {
                    o.insn_index >= f.insn_index && o.insn_index < f.insn_index + f.insn_count
                })
                .expect("the instruction lies in a linked function");
            (
                f.name.clone(),
                o.relocation_index,
                o.insn_index - f.insn_index,
                (!o.poisoned).then_some((o.old_value, o.new_value)),
            )
        })
        .collect()
}

#[test]
fn relocations_equal_libbpfs_on_this_kernel() {
    if !kernel_available("relocations_equal_libbpfs_on_this_kernel") {
        return;
    }
    let started = Instant::now();
    let target = TargetBtf::from_kernel().unwrap();
    eprintln!(
        "parsed and indexed vmlinux BTF ({} types) in {:?}",
        target.type_count(),
        started.elapsed()
    );
    let mut poisoned = 0;
    let mut changed = 0;
    let mut relocated = 0;
    for object in core_objects() {
        let mut spec = ObjectSpec::from_file(&object).unwrap();
        if !spec.needs_core() {
            // An object without CO-RE (externs.bpf.o): libbpf relocates nothing either.
            assert!(
                libbpf_relocations(&object).is_empty(),
                "{}",
                object.display()
            );
            continue;
        }
        relocated += 1;
        let report = spec.relocate_core(&target).unwrap();
        assert!(!spec.needs_core(), "applied once");
        let expected = libbpf_relocations(&object);
        let got = ours(&report, &spec);
        assert!(
            !expected.is_empty(),
            "{}: libbpf relocated nothing",
            object.display()
        );
        assert_eq!(got, expected, "{}", object.display());
        for o in &report.relocations {
            let insn = spec.program(&o.program).unwrap().instructions[o.insn_index];
            if o.poisoned {
                poisoned += 1;
                assert_eq!((insn.code, insn.imm), (0x85, POISON_HELPER_ID));
            } else if o.old_value != o.new_value {
                changed += 1;
            }
        }
    }
    assert!(relocated >= 4, "the CO-RE objects are there");
    assert!(poisoned >= 2, "the missing-field reads are poisoned");
    assert!(
        changed >= 3,
        "the ___flavor and enum relocations change values"
    );
}

#[test]
fn task_fields_get_the_kernels_layout() {
    if !kernel_available("task_fields_get_the_kernels_layout") {
        return;
    }
    let target = TargetBtf::from_kernel().unwrap();
    let mut spec = ObjectSpec::from_file(&core_dir().join("task_fields.bpf.o")).unwrap();
    let report = spec.relocate_core(&target).unwrap();
    let by_spec = |needle: &str| {
        report
            .relocations
            .iter()
            .find(|o| o.spec.contains(needle))
            .unwrap_or_else(|| panic!("no relocation of {needle}"))
    };
    // task_struct___x.__state is at 0 in the object and at the kernel's offset after relocation.
    let state = by_spec("task_struct___x.__state");
    assert_eq!(state.old_value, 0);
    assert_eq!(state.new_value, kernel_offset("task_struct", "__state"));
    let tgid = by_spec("task_struct.tgid");
    assert_eq!(tgid.new_value, kernel_offset("task_struct", "tgid"));
    let args = by_spec("trace_event_raw_sys_enter.args[1]");
    assert_eq!(
        args.new_value,
        kernel_offset("trace_event_raw_sys_enter", "args") + 8
    );
    let pidtype = by_spec("pid_type___local::PIDTYPE_TGID___local");
    assert_eq!((pidtype.old_value, pidtype.new_value), (99, 1));
    let missing: Vec<(CoreKind, bool, u64)> = report
        .relocations
        .iter()
        .filter(|o| o.spec.contains("task_struct___old.no_such_field"))
        .map(|o| (o.kind, o.poisoned, o.new_value))
        .collect();
    assert_eq!(
        missing,
        [
            (CoreKind::FieldExists, false, 0),
            (CoreKind::FieldByteOffset, true, 0)
        ]
    );
}

/// A member's byte offset as bpftool reads it from the kernel's BTF.
fn kernel_offset(strukt: &str, member: &str) -> u64 {
    let out = Command::new("bpftool")
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux"])
        .output()
        .expect("bpftool runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let header = format!("STRUCT '{strukt}' size=");
    let mut lines = text.lines().skip_while(|l| !l.contains(&header));
    lines.next().expect("struct found");
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
fn a_btf_file_stands_in_for_the_kernel() {
    if !kernel_available("a_btf_file_stands_in_for_the_kernel") {
        return;
    }
    let object = core_dir().join("task_fields.bpf.o");
    let kernel = TargetBtf::from_kernel().unwrap();
    let raw_file = TargetBtf::from_file(Path::new("/sys/kernel/btf/vmlinux")).unwrap();
    // An ELF file whose .BTF is the kernel's (as a vmlinux image has it).
    let dir = std::env::temp_dir().join(format!("bpfmaps-core-elf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let elf = dir.join("vmlinux.o");
    std::fs::write(dir.join("empty"), b"").unwrap();
    let made = Command::new("llvm-objcopy")
        .args(["-I", "binary", "-O", "elf64-x86-64"])
        .arg("--add-section")
        .arg(".BTF=/sys/kernel/btf/vmlinux")
        .arg(dir.join("empty"))
        .arg(&elf)
        .status()
        .expect("llvm-objcopy runs");
    assert!(made.success());
    let elf_file = TargetBtf::from_file(&elf).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(elf_file.type_count(), kernel.type_count());
    // The object's own .BTF holds both task_struct and task_struct___x: as a target, the two
    // candidates give different offsets, which libbpf refuses as ambiguous.
    let own = TargetBtf::from_file(&object).unwrap();
    let mut spec = ObjectSpec::from_file(&object).unwrap();
    let err = spec.relocate_core(&own).unwrap_err().to_string();
    assert!(
        err.contains("ambiguity") && err.contains("task_struct___x"),
        "{err}"
    );
    let run = |target: &TargetBtf| {
        let mut spec = ObjectSpec::from_file(&object).unwrap();
        let report = spec.relocate_core(target).unwrap();
        (ours(&report, &spec), spec.programs)
    };
    let reference = run(&kernel);
    assert_eq!(run(&raw_file), reference);
    assert_eq!(run(&elf_file), reference);
    let missing = TargetBtf::from_file(Path::new("/nonexistent/vmlinux")).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/vmlinux"),
        "{missing}"
    );
}

#[test]
fn a_subprogram_is_relocated_in_every_program_that_links_it() {
    if !kernel_available("a_subprogram_is_relocated_in_every_program_that_links_it") {
        return;
    }
    let target = TargetBtf::from_kernel().unwrap();
    let mut spec = ObjectSpec::from_file(&core_dir().join("subprog_core.bpf.o")).unwrap();
    let report = spec.relocate_core(&target).unwrap();
    // Two records, each applied in both programs' copy of task_state.
    assert_eq!(report.relocations.len(), 4);
    let state_offset = kernel_offset("task_struct", "__state");
    for name in ["first", "second"] {
        let prog = spec.program(name).unwrap();
        let f = prog
            .functions
            .iter()
            .find(|f| f.name == "task_state")
            .expect("linked");
        assert_eq!(f.section, ".text");
        let state = prog.instructions[f.insn_index + 1];
        assert_eq!(
            state.imm as u64, state_offset,
            "{name}: __state at the kernel's offset"
        );
    }
}
