//! `.kconfig` and `.ksyms` externs of `bpf/obj/core/externs.bpf.o`: laid out and filled as
//! libbpf does (checked against its debug log on this kernel when root and bpftool are there),
//! with the value rules of each extern type, and weak ksyms resolved to "absent".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use bpfmaps_obj::{
    kernel_version_code, libbpf_kernel_version, parse_kernel_config, ExternKind, KconfigType,
    KernelConfig, MapKind, ObjError, ObjectSpec, POISON_KFUNC_BASE,
};

fn object() -> PathBuf {
    match std::env::var_os("BPFMAPS_BPF_OBJ_DIR") {
        Some(dir) => PathBuf::from(dir).join("core/externs.bpf.o"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/obj/core/externs.bpf.o"),
    }
}

fn config(entries: &[(&str, &str)]) -> KernelConfig {
    KernelConfig {
        version: kernel_version_code(6, 18, 44),
        entries: Some(
            entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
        ),
        has_bpf_cookie: true,
        has_syscall_wrapper: true,
    }
}

fn kconfig_value(spec: &ObjectSpec) -> Vec<u8> {
    spec.maps
        .iter()
        .find(|m| m.kind == MapKind::Kconfig)
        .and_then(|m| m.initial_value.clone())
        .expect("a .kconfig map")
}

#[test]
fn kconfig_externs_are_laid_out_in_a_frozen_map_the_libbpf_way() {
    let spec = ObjectSpec::from_file(&object()).unwrap();
    let layout: Vec<(&str, u32, u32, KconfigType, bool)> = spec
        .externs
        .iter()
        .filter_map(|e| match e.kind {
            ExternKind::Kconfig {
                offset,
                size,
                value_type,
            } => Some((e.name.as_str(), offset, size, value_type, e.weak)),
            ExternKind::Ksym { .. } => None,
        })
        .collect();
    assert_eq!(
        layout,
        [
            (
                "CONFIG_BPFMAPS_NO_SUCH_OPTION",
                0,
                4,
                KconfigType::Tristate,
                true
            ),
            ("CONFIG_BPF_JIT", 4, 4, KconfigType::Tristate, true),
            ("CONFIG_HZ", 8, 4, KconfigType::Int { signed: true }, true),
            (
                "LINUX_KERNEL_VERSION",
                12,
                4,
                KconfigType::Int { signed: true },
                false
            ),
            ("CONFIG_BPF_SYSCALL", 16, 1, KconfigType::Bool, false),
            (
                "CONFIG_DEFAULT_HOSTNAME",
                17,
                8,
                KconfigType::CharArray,
                true
            ),
        ]
    );
    let map = spec
        .maps
        .iter()
        .find(|m| m.kind == MapKind::Kconfig)
        .unwrap();
    assert_eq!(map.name, "externs.kconfig");
    assert_eq!(
        (map.def.value_size, map.def.map_flags, map.frozen),
        (25, 0x480, true)
    );
    // Every .kconfig lddw now points into that map.
    let map_index = spec
        .maps
        .iter()
        .position(|m| m.kind == MapKind::Kconfig)
        .unwrap();
    let prog = &spec.programs[0];
    for e in spec
        .externs
        .iter()
        .filter(|e| matches!(e.kind, ExternKind::Kconfig { .. }))
    {
        let ExternKind::Kconfig { offset, .. } = e.kind else {
            unreachable!()
        };
        let site = &e.sites[0];
        let insn = prog.instructions[site.insn_index];
        assert_eq!((insn.src, insn.imm), (6, map_index as i32), "{}", e.name);
        assert_eq!(prog.instructions[site.insn_index + 1].imm, offset as i32);
        assert!(prog
            .map_references
            .iter()
            .any(|r| r.insn_index == site.insn_index && r.value_offset == Some(offset)));
    }
}

#[test]
fn kconfig_values_follow_libbpfs_rules() {
    let mut spec = ObjectSpec::from_file(&object()).unwrap();
    assert!(spec.needs_kconfig() && spec.needs_kernel_config());
    spec.fill_kconfig(&config(&[
        ("CONFIG_BPF_SYSCALL", "y"),
        ("CONFIG_BPF_JIT", "m"),
        ("CONFIG_HZ", "0x3e8"),
        ("CONFIG_DEFAULT_HOSTNAME", "\"a-long-hostname\""),
    ]))
    .unwrap();
    assert!(!spec.needs_kconfig());
    let v = kconfig_value(&spec);
    let word = |at: usize| u32::from_le_bytes(v[at..at + 4].try_into().unwrap());
    assert_eq!(word(0), 0, "a weak option this kernel lacks is 0 (n)");
    assert_eq!(word(4), 2, "m is TRI_MODULE");
    assert_eq!(word(8), 1000);
    assert_eq!(word(12), kernel_version_code(6, 18, 44));
    assert_eq!(v[16], 1);
    assert_eq!(&v[17..25], b"a-long-\0", "truncated to 7 bytes and a NUL");

    let fail = |entries: &[(&str, &str)]| {
        let mut spec = ObjectSpec::from_file(&object()).unwrap();
        spec.fill_kconfig(&config(entries)).unwrap_err()
    };
    let named = |e: ObjError, name: &str, why: &str| {
        let text = e.to_string();
        assert!(text.contains(name) && text.contains(why), "{text}");
    };
    // A strong option missing.
    named(fail(&[]), "CONFIG_BPF_SYSCALL", "ESRCH");
    // A bool cannot be m; a tristate cannot be a number; an int cannot be a string.
    named(
        fail(&[("CONFIG_BPF_SYSCALL", "m")]),
        "CONFIG_BPF_SYSCALL",
        "tristate or char",
    );
    named(
        fail(&[("CONFIG_BPF_SYSCALL", "y"), ("CONFIG_BPF_JIT", "5")]),
        "CONFIG_BPF_JIT",
        "integer type",
    );
    named(
        fail(&[("CONFIG_BPF_SYSCALL", "y"), ("CONFIG_HZ", "\"x\"")]),
        "CONFIG_HZ",
        "char array",
    );
    // A number that does not fit a signed 32-bit int.
    named(
        fail(&[("CONFIG_BPF_SYSCALL", "y"), ("CONFIG_HZ", "4294967296")]),
        "CONFIG_HZ",
        "ERANGE",
    );
    // No kernel version.
    let mut spec = ObjectSpec::from_file(&object()).unwrap();
    let mut c = config(&[("CONFIG_BPF_SYSCALL", "y")]);
    c.version = 0;
    named(
        spec.fill_kconfig(&c).unwrap_err(),
        "LINUX_KERNEL_VERSION",
        "kernel version",
    );
}

#[test]
fn weak_ksyms_resolve_to_absent() {
    let mut spec = ObjectSpec::from_file(&object()).unwrap();
    spec.resolve_ksyms_absent().unwrap();
    let kfunc = spec
        .externs
        .iter()
        .position(|e| e.name == "bpf_bpfmaps_no_such_kfunc")
        .unwrap();
    let e = &spec.externs[kfunc];
    assert!(e.weak && e.resolved);
    let prog = &spec.programs[0];
    for site in &e.sites {
        let insn = prog.instructions[site.insn_index];
        if site.call {
            // libbpf's poisoned call for a missing weak kfunc: base + extern index.
            assert_eq!(
                (insn.code, insn.src, insn.imm),
                (0x85, 0, POISON_KFUNC_BASE + kfunc as i32)
            );
        } else {
            // bpf_ksym_exists(): the address loads as 0.
            let hi = prog.instructions[site.insn_index + 1];
            assert_eq!((insn.code, insn.src, insn.imm, hi.imm), (0x18, 0, 0, 0));
        }
    }
    assert_eq!(e.sites.iter().filter(|s| s.call).count(), 1);
}

#[test]
fn kernel_versions_and_configs_are_read_the_libbpf_way() {
    assert_eq!(
        libbpf_kernel_version(None, "6.18.44-fc-v1147", "#1 SMP"),
        Some(0x6122c)
    );
    assert_eq!(
        libbpf_kernel_version(None, "5.4.300", "#1"),
        Some(kernel_version_code(5, 4, 255))
    );
    assert_eq!(
        libbpf_kernel_version(
            None,
            "6.1.0-13-amd64",
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.55-1 (2023-09-29)"
        ),
        Some(kernel_version_code(6, 1, 55))
    );
    assert_eq!(
        libbpf_kernel_version(
            Some("Ubuntu 5.15.0-91.101-generic 5.15.131"),
            "5.15.0-91-generic",
            "#101-Ubuntu"
        ),
        Some(kernel_version_code(5, 15, 131))
    );
    assert_eq!(libbpf_kernel_version(None, "garbage", ""), None);
    let parsed = parse_kernel_config(
        "# comment\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_D=\n",
    );
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed["CONFIG_C"], "\"x y\"");
}

#[test]
fn the_running_kernels_config_fills_the_object_as_libbpf_does() {
    let Ok(cfg) = KernelConfig::from_system(true) else {
        if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
            return;
        }
        panic!("no kernel configuration (/proc/config.gz or /boot/config-*); set BPFMAPS_SKIP_KERNEL=1 to skip");
    };
    let mut spec = ObjectSpec::from_file(&object()).unwrap();
    spec.fill_kconfig(&cfg).unwrap();
    let ours = kconfig_value(&spec);
    // libbpf's own view, from its debug log, when bpftool can load the object here.
    let pins = format!("/sys/fs/bpf/bpfmaps-externs-test-{}", std::process::id());
    let Ok(out) = Command::new("bpftool")
        .args(["-d", "prog", "loadall"])
        .arg(object())
        .arg(&pins)
        .output()
    else {
        return;
    };
    let _ = std::fs::remove_dir_all(&pins);
    if !out.status.success() {
        if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
            return;
        }
        panic!(
            "bpftool could not load the object (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = String::from_utf8_lossy(&out.stderr);
    for e in &spec.externs {
        let ExternKind::Kconfig {
            offset,
            size,
            value_type,
        } = e.kind
        else {
            continue;
        };
        // "extern (kcfg) #N: symbol S, off O, name X"
        let off_line = log
            .lines()
            .find(|l| l.contains("extern (kcfg) #") && l.ends_with(&format!("name {}", e.name)))
            .unwrap_or_else(|| panic!("libbpf lists {}", e.name));
        assert!(off_line.contains(&format!("off {offset},")), "{off_line}");
        let set = log
            .lines()
            .find(|l| l.contains(&format!("extern (kcfg) '{}': set to ", e.name)));
        let bytes = &ours[offset as usize..(offset + size) as usize];
        match set.map(|l| l.rsplit("set to ").next().unwrap().to_owned()) {
            None => assert!(
                bytes.iter().all(|&b| b == 0),
                "{} unset in libbpf, zero here",
                e.name
            ),
            Some(v) => {
                let expected: Vec<u8> = match (value_type, v.as_str()) {
                    (KconfigType::Bool, "y") => vec![1],
                    (KconfigType::Tristate, "y") => 1u32.to_le_bytes().to_vec(),
                    (KconfigType::CharArray, s) => {
                        let mut b = s.trim_matches('"').as_bytes().to_vec();
                        b.resize(size as usize, 0);
                        b
                    }
                    (_, n) => {
                        let n = n.strip_prefix("0x").map_or_else(
                            || n.parse::<u64>().unwrap(),
                            |h| u64::from_str_radix(h, 16).unwrap(),
                        );
                        n.to_le_bytes()[..size as usize].to_vec()
                    }
                };
                assert_eq!(bytes, expected.as_slice(), "{} = {v}", e.name);
            }
        }
    }
}
