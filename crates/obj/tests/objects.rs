//! Parses the committed test objects (`tests/data/*.o`, built from the `.c` files beside them)
//! and the seed objects under `bpf/obj/`, and checks exact map definitions, programs,
//! relocations by map index, globals and errors. Expected values were cross-checked with
//! `bpftool btf dump file` and `llvm-objdump -dr`.

use std::path::{Path, PathBuf};

use bpfmaps_abi::insn::{call_kind, pseudo, RawInsn};
use bpfmaps_abi::{map_flags, MapDef, MapType};
use bpfmaps_obj::{
    BtfKind, ExternKind, ExternSite, GlobalError, MapKind, MapReference, ObjError, ObjectSpec,
    Pinning, ProgramKind,
};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn load(name: &str) -> ObjectSpec {
    ObjectSpec::from_file(&data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Checks the invariants every relocated program keeps: no fd-style map load is left, every
/// index-style load names an existing map, and `map_references` lists exactly those loads.
fn check_relocated(spec: &ObjectSpec) {
    for prog in &spec.programs {
        let mut found = Vec::new();
        let mut i = 0;
        while i < prog.instructions.len() {
            let insn = prog.instructions[i];
            if insn.code == 0x18 {
                assert!(
                    insn.src != pseudo::MAP_FD && insn.src != pseudo::MAP_VALUE,
                    "{}: fd-style load left at {i}",
                    prog.name
                );
                if insn.src == pseudo::MAP_IDX || insn.src == pseudo::MAP_IDX_VALUE {
                    let map_index = usize::try_from(insn.imm).unwrap();
                    assert!(
                        map_index < spec.maps.len(),
                        "{}: map index {map_index}",
                        prog.name
                    );
                    let value_offset = (insn.src == pseudo::MAP_IDX_VALUE)
                        .then(|| u32::try_from(prog.instructions[i + 1].imm).unwrap());
                    found.push(MapReference {
                        insn_index: i,
                        map_index,
                        value_offset,
                    });
                }
                i += 2;
            } else {
                i += 1;
            }
        }
        assert_eq!(found, prog.map_references, "{}", prog.name);
        assert_eq!(prog.bytecode().len(), prog.instructions.len() * 8);
    }
}

#[test]
fn btf_map_definitions_are_exact() {
    let spec = load("maps_btf.o");
    assert_eq!(spec.name, "maps_btf");
    assert_eq!(spec.license, "Dual BSD/GPL");
    let mmap = map_flags::BPF_F_MMAPABLE;
    let rdonly = map_flags::BPF_F_RDONLY_PROG;
    let expected = [
        (
            "percpu_stats",
            MapDef::new(MapType::PercpuArray, 4, 8, 4, 0, "percpu_stats"),
            MapKind::Btf,
            ".maps",
        ),
        (
            "pinned_lru",
            MapDef::new(
                MapType::LruHash,
                8,
                4,
                128,
                map_flags::BPF_F_NO_COMMON_LRU,
                "pinned_lru",
            ),
            MapKind::Btf,
            ".maps",
        ),
        (
            "a_very_long_stack_map_name",
            MapDef::new(MapType::StackTrace, 4, 127 * 8, 256, 0, "a_very_long_sta"),
            MapKind::Btf,
            ".maps",
        ),
        (
            "events",
            MapDef::new(MapType::Ringbuf, 0, 0, 16384, 0, "events"),
            MapKind::Btf,
            ".maps",
        ),
        (
            "perf_out",
            MapDef::new(MapType::PerfEventArray, 4, 4, 0, 0, "perf_out"),
            MapKind::Btf,
            ".maps",
        ),
        (
            "counts",
            MapDef::new(MapType::Hash, 4, 32, 1024, 0, "counts"),
            MapKind::Btf,
            ".maps",
        ),
        (
            "maps_btf.rodata",
            MapDef::new(MapType::Array, 4, 27, 1, rdonly | mmap, "maps_btf.rodata"),
            MapKind::Rodata,
            ".rodata",
        ),
        (
            "maps_btf.data",
            MapDef::new(MapType::Array, 4, 8, 1, mmap, "maps_btf.data"),
            MapKind::Data,
            ".data",
        ),
        (
            ".data.custom",
            MapDef::new(MapType::Array, 4, 4, 1, mmap, ".data.custom"),
            MapKind::Data,
            ".data.custom",
        ),
        (
            "maps_btf.bss",
            MapDef::new(MapType::Array, 4, 4, 1, mmap, "maps_btf.bss"),
            MapKind::Bss,
            ".bss",
        ),
        (
            ".rodata.cst32",
            MapDef::new(MapType::Array, 4, 32, 1, rdonly, ".rodata.cst32"),
            MapKind::Rodata,
            ".rodata.cst32",
        ),
    ];
    assert_eq!(spec.maps.len(), expected.len());
    for (map, (name, def, kind, section)) in spec.maps.iter().zip(expected) {
        assert_eq!(map.name, name);
        assert_eq!(map.def, def, "{name}");
        assert_eq!(map.kind, kind, "{name}");
        assert_eq!(map.section, section, "{name}");
        assert_eq!(map.frozen, kind == MapKind::Rodata, "{name}");
        assert_eq!(map.map_extra, 0);
        assert_eq!(map.inner, None);
    }
    let pinned: Vec<_> = spec
        .maps
        .iter()
        .filter(|m| m.pinning == Pinning::ByName)
        .map(|m| &m.name)
        .collect();
    assert_eq!(pinned, ["pinned_lru"]);
    assert_eq!(
        spec.map("pinned_lru")
            .unwrap()
            .pin_path(Path::new("/sys/fs/bpf")),
        Some(PathBuf::from("/sys/fs/bpf/pinned_lru"))
    );
    assert_eq!(
        spec.map("counts")
            .unwrap()
            .pin_path(Path::new("/sys/fs/bpf")),
        None
    );
    // Lookups by full and by kernel name agree.
    assert_eq!(spec.map_index("a_very_long_stack_map_name"), Some(2));
    assert_eq!(spec.map_index("a_very_long_sta"), Some(2));
    assert_eq!(spec.map_index("nope"), None);
    // A perf event array declared without max_entries gets one slot per possible CPU.
    assert_eq!(spec.map("perf_out").unwrap().creation_def(2).max_entries, 2);
    assert_eq!(
        spec.map("counts").unwrap().creation_def(2).max_entries,
        1024
    );
}

#[test]
fn btf_key_and_value_types_are_named() {
    let spec = load("maps_btf.o");
    let counts = spec.map("counts").unwrap();
    let key = counts.key_type.as_ref().unwrap();
    let value = counts.value_type.as_ref().unwrap();
    assert_eq!(
        (key.name.as_str(), key.size, key.kind),
        ("__u32", Some(4), BtfKind::Int)
    );
    assert_eq!(
        (value.name.as_str(), value.size, value.kind),
        ("struct value_t", Some(32), BtfKind::Struct)
    );
    let lru = spec.map("pinned_lru").unwrap();
    assert_eq!(lru.key_type.as_ref().unwrap().name, "__u64");
    // Maps declared with key_size/value_size carry no BTF types.
    assert_eq!(spec.map("events").unwrap().key_type, None);
    assert_eq!(
        spec.map("a_very_long_stack_map_name").unwrap().value_type,
        None
    );
    // Data sections are described by their DATASEC, sized like the section.
    let rodata = spec
        .map("maps_btf.rodata")
        .unwrap()
        .value_type
        .as_ref()
        .unwrap();
    assert_eq!(
        (rodata.name.as_str(), rodata.size, rodata.kind),
        (".rodata", Some(27), BtfKind::Datasec)
    );
}

#[test]
fn data_sections_carry_their_initial_bytes() {
    let spec = load("maps_btf.o");
    let rodata = spec
        .map("maps_btf.rodata")
        .unwrap()
        .initial_value
        .clone()
        .unwrap();
    let mut expected = vec![0u8; 27];
    expected[8] = 7; // threshold
    expected[16] = 1; // verbose
    expected[17..27].copy_from_slice(b"openat %d\0");
    assert_eq!(rodata, expected);
    assert_eq!(
        spec.map("maps_btf.data").unwrap().initial_value.as_deref(),
        Some(&5u64.to_le_bytes()[..])
    );
    assert_eq!(
        spec.map(".data.custom").unwrap().initial_value.as_deref(),
        Some(&3u32.to_le_bytes()[..])
    );
    assert_eq!(
        spec.map("maps_btf.bss").unwrap().initial_value.as_deref(),
        Some(&[0u8; 4][..])
    );
    assert_eq!(spec.map("counts").unwrap().initial_value, None);
}

#[test]
fn globals_are_listed_with_symbol_offsets() {
    let spec = load("maps_btf.o");
    let summary: Vec<_> = spec
        .globals
        .iter()
        .map(|g| {
            (
                g.name.as_str(),
                g.map_index,
                g.section.as_str(),
                g.offset,
                g.size,
                g.type_name.as_str(),
                g.is_static,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "target_pid",
                6,
                ".rodata",
                0,
                4,
                "const volatile __u32",
                false
            ),
            (
                "threshold",
                6,
                ".rodata",
                8,
                8,
                "const volatile __u64",
                false
            ),
            ("verbose", 6, ".rodata", 16, 1, "const volatile __u8", false),
            (
                "trace_openat.____fmt",
                6,
                ".rodata",
                17,
                10,
                "const char[10]",
                true
            ),
            ("total", 7, ".data", 0, 8, "__u64", false),
            ("custom_var", 8, ".data.custom", 0, 4, "__u32", false),
            ("hits", 9, ".bss", 0, 4, "__u32", false),
        ]
    );
}

#[test]
fn globals_are_settable_before_load() {
    let mut spec = load("maps_btf.o");
    spec.set_global("target_pid", &4242u32.to_le_bytes())
        .unwrap();
    spec.set_global("threshold", &99u64.to_le_bytes()).unwrap();
    spec.set_global("hits", &1u32.to_le_bytes()).unwrap();
    assert_eq!(
        spec.global_value("target_pid"),
        Some(&4242u32.to_le_bytes()[..])
    );
    let rodata = spec
        .map("maps_btf.rodata")
        .unwrap()
        .initial_value
        .clone()
        .unwrap();
    assert_eq!(&rodata[0..4], &4242u32.to_le_bytes());
    assert_eq!(&rodata[8..16], &99u64.to_le_bytes());
    assert_eq!(rodata[16], 1, "neighbouring variable untouched");
    assert_eq!(
        spec.map("maps_btf.bss").unwrap().initial_value.as_deref(),
        Some(&1u32.to_le_bytes()[..])
    );

    assert_eq!(
        spec.set_global("no_such_var", &[0; 4]),
        Err(GlobalError::Unknown {
            name: "no_such_var".to_owned()
        })
    );
    assert_eq!(
        spec.set_global("threshold", &[0; 4]),
        Err(GlobalError::SizeMismatch {
            name: "threshold".to_owned(),
            expected: 8,
            got: 4
        })
    );
    // A failed set leaves the value alone.
    assert_eq!(
        spec.global_value("threshold"),
        Some(&99u64.to_le_bytes()[..])
    );
}

#[test]
fn programs_have_names_sections_and_kinds() {
    let spec = load("maps_btf.o");
    let summary: Vec<_> = spec
        .programs
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.section.as_str(),
                p.kind,
                p.attach_target.as_deref(),
                p.instructions.len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "trace_openat",
                "tracepoint/syscalls/sys_enter_openat",
                ProgramKind::Tracepoint,
                Some("syscalls/sys_enter_openat"),
                40 + 27
            ),
            (
                "raw_enter",
                "raw_tracepoint/sys_enter",
                ProgramKind::RawTracepoint,
                Some("sys_enter"),
                32 + 27
            ),
            ("sock_prog", "socket", ProgramKind::SocketFilter, None, 14),
            ("xdp_pass", "xdp", ProgramKind::Xdp, None, 14),
        ]
    );
    assert!(spec.programs.iter().all(|p| p.license == "Dual BSD/GPL"));
    assert_eq!(spec.program("xdp_pass").unwrap().kind.prog_type(), 6);
    assert_eq!(
        spec.programs_in_section("socket")
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["sock_prog"]
    );
    assert!(
        spec.program("bump").is_none(),
        "a .text function is not a program"
    );
}

#[test]
fn map_references_are_rewritten_by_index() {
    let spec = load("maps_btf.o");
    check_relocated(&spec);
    let prog = spec.program("trace_openat").unwrap();
    // llvm-objdump: insn 3 is `r1 = 0 ll` with R_BPF_64_64 target_pid (.rodata + 0).
    assert_eq!(
        prog.instructions[3],
        RawInsn::new(0x18, 1, pseudo::MAP_IDX_VALUE, 0, 6)
    );
    assert_eq!(prog.instructions[4].imm, 0);
    let refs: Vec<_> = prog
        .map_references
        .iter()
        .map(|r| (r.insn_index, r.map_index, r.value_offset))
        .collect();
    assert_eq!(
        refs,
        [
            (3, 6, Some(0)),   // target_pid
            (10, 9, Some(0)),  // hits (.bss)
            (15, 6, Some(8)),  // threshold
            (18, 7, Some(0)),  // total (.data)
            (23, 8, Some(0)),  // custom_var (.data.custom)
            (28, 6, Some(16)), // verbose
            (32, 6, Some(17)), // the bpf_printk format string
            (43, 5, None),     // counts, in the linked `bump`
            (61, 5, None),     // counts again
        ]
    );
    let raw = spec.program("raw_enter").unwrap();
    assert_eq!(
        raw.instructions[5],
        RawInsn::new(0x18, 1, pseudo::MAP_IDX, 0, 0)
    );
    let targets: Vec<_> = raw
        .map_references
        .iter()
        .map(|r| spec.maps[r.map_index].name.as_str())
        .collect();
    assert_eq!(
        targets,
        [
            "percpu_stats",
            "pinned_lru",
            "a_very_long_stack_map_name",
            "counts",
            "counts"
        ]
    );
}

#[test]
fn bpf_to_bpf_calls_are_linked() {
    let spec = load("maps_btf.o");
    for (name, own_len) in [("trace_openat", 40), ("raw_enter", 32)] {
        let prog = spec.program(name).unwrap();
        let calls: Vec<_> = prog
            .instructions
            .iter()
            .enumerate()
            .filter(|(_, i)| i.code == 0x85 && i.src == call_kind::LOCAL)
            .map(|(at, i)| at as i64 + i64::from(i.imm) + 1)
            .collect();
        // One call to `bump`, which was appended right after the program's own code.
        assert_eq!(calls, [own_len], "{name}");
        // bump starts with `*(u32 *)(r10 - 4) = r1`.
        assert_eq!(
            prog.instructions[own_len as usize],
            RawInsn::new(0x63, 10, 1, -4, 0),
            "{name}"
        );
        assert_eq!(
            prog.instructions.last().unwrap().code,
            0x95,
            "{name} ends in exit"
        );
    }
}

#[test]
fn legacy_maps_are_parsed() {
    let spec = load("maps_legacy.o");
    let summary: Vec<_> = spec
        .maps
        .iter()
        .map(|m| (m.def.clone(), m.kind, m.pinning, m.section.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                MapDef::new(
                    MapType::Hash,
                    4,
                    8,
                    64,
                    map_flags::BPF_F_NO_PREALLOC,
                    "legacy_hash"
                ),
                MapKind::Legacy,
                Pinning::None,
                "maps"
            ),
            (
                MapDef::new(MapType::Array, 4, 16, 10, 0, "legacy_array"),
                MapKind::Legacy,
                Pinning::ByName,
                "maps"
            ),
        ]
    );
    check_relocated(&spec);
    let prog = spec.program("legacy_prog").unwrap();
    assert_eq!(prog.section, "tracepoint/sched/sched_switch");
    let refs: Vec<_> = prog
        .map_references
        .iter()
        .map(|r| (r.map_index, r.value_offset))
        .collect();
    assert_eq!(refs, [(0, None), (1, None)]);
    assert!(spec.globals.is_empty());
}

#[test]
fn core_relocations_are_recorded_not_applied() {
    let spec = load("core_reloc.o");
    let prog = spec.program("core_prog").unwrap();
    assert_eq!(prog.core_relocations.len(), 1);
    let relo = &prog.core_relocations[0];
    assert_eq!(
        (
            relo.section.as_str(),
            relo.insn_offset,
            relo.access.as_str(),
            relo.kind
        ),
        ("raw_tracepoint/sched_switch", 24, "0:1", 0)
    );
    assert_eq!(spec.core_relocations, prog.core_relocations);
    // The access compiles to the local layout: `r1 = 4`, the offset of tgid.
    let add = prog.instructions[3];
    assert_eq!((add.code, add.imm), (0xb7, 4));
    assert!(spec.needs_core());
    assert!(!load("maps_btf.o").needs_core());
}

#[test]
fn unknown_map_type_is_a_typed_error() {
    let err = ObjectSpec::from_file(&data("bad_map_type.o")).unwrap_err();
    assert_eq!(
        err,
        ObjError::BadMapDef {
            map: "strange".to_owned(),
            reason: "unknown map type 99".to_owned()
        }
    );
}

#[test]
fn bad_legacy_pinning_is_refused_before_aya() {
    let err = ObjectSpec::from_file(&data("bad_legacy_pinning.o")).unwrap_err();
    assert!(
        matches!(&err, ObjError::BadMapDef { map, .. } if map == "odd_pin"),
        "{err}"
    );
}

#[test]
fn a_strong_kfunc_parses_as_an_extern_and_cannot_be_made_absent() {
    let mut spec = ObjectSpec::from_file(&data("extern_kfunc.o")).expect("parses");
    assert_eq!(spec.externs.len(), 1);
    let e = &spec.externs[0];
    assert_eq!((e.name.as_str(), e.weak), ("bpf_rcu_read_lock", false));
    assert!(matches!(e.kind, ExternKind::Ksym { function: true, .. }));
    assert_eq!(
        e.sites,
        [ExternSite {
            program: "call_kfunc".to_owned(),
            insn_index: 0,
            call: true
        }]
    );
    // The call is left as a kfunc call (src_reg 2) for a kernel loader to resolve.
    let call = spec.programs[0].instructions[0];
    assert_eq!((call.code, call.src), (0x85, 2));
    let err = spec.resolve_ksyms_absent().unwrap_err();
    assert!(
        matches!(&err, ObjError::BadExtern { name, .. } if name == "bpf_rcu_read_lock"),
        "{err}"
    );
}

#[test]
fn unknown_program_section_is_named() {
    let err = ObjectSpec::from_file(&data("usdt_section.o")).unwrap_err();
    assert_eq!(
        err,
        ObjError::UnsupportedProgramSection {
            section: "usdt".to_owned()
        }
    );
}

#[test]
fn garbage_truncated_and_foreign_files_are_errors() {
    assert!(matches!(
        ObjectSpec::parse(&[], "x"),
        Err(ObjError::Elf { .. })
    ));
    assert!(matches!(
        ObjectSpec::parse(b"not an elf file at all", "x"),
        Err(ObjError::Elf { .. })
    ));
    let bytes = std::fs::read(data("maps_btf.o")).unwrap();
    assert!(ObjectSpec::parse(&bytes[..64], "x").is_err());
    assert!(ObjectSpec::parse(&bytes[..bytes.len() / 2], "x").is_err());
    // The test binary itself is an x86-64 (or other host) executable.
    let host = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert!(matches!(
        ObjectSpec::parse(&host, "x"),
        Err(ObjError::NotBpf { .. })
    ));
    let missing = ObjectSpec::from_file(Path::new("/nonexistent/x.o")).unwrap_err();
    assert!(matches!(missing, ObjError::Io { .. }));
}

#[test]
fn damaged_relocation_target_is_named() {
    // Point the lddw of trace_openat's first relocation (byte 0x18 of its section) at a
    // different opcode: the relocation no longer lands on an lddw.
    let mut bytes = std::fs::read(data("maps_btf.o")).unwrap();
    let section_offset = 0x118; // `tracepoint/syscalls/sys_enter_openat`, per `readelf -S`.
    assert_eq!(bytes[section_offset + 0x18], 0x18);
    bytes[section_offset + 0x18] = 0xb7;
    let err = ObjectSpec::parse(&bytes, "maps_btf").unwrap_err();
    assert_eq!(
        err,
        ObjError::BadRelocation {
            section: "tracepoint/syscalls/sys_enter_openat".to_owned(),
            offset: 0x18,
            reason: "64-bit relocation on opcode 0xb7, not lddw".to_owned(),
        }
    );
}

/// The seed programs under `bpf/obj/`, as far as they exist: every one parses, relocates by
/// index, and has a settable `target_tgid`.
#[test]
fn seed_objects_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/obj");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "o") {
            continue;
        }
        let mut spec =
            ObjectSpec::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!spec.programs.is_empty(), "{}", path.display());
        assert_eq!(spec.license, "GPL", "{}", path.display());
        check_relocated(&spec);
        spec.set_global("target_tgid", &7u32.to_le_bytes()).unwrap();
        assert_eq!(
            spec.global_value("target_tgid"),
            Some(&7u32.to_le_bytes()[..])
        );
        seen += 1;
    }
    assert!(seen >= 12, "expected the 12 seed objects, found {seen}");
}

#[test]
fn seed_object_maps_are_exact() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/obj");
    let maps = |name: &str| -> Vec<(String, MapDef, Pinning)> {
        ObjectSpec::from_file(&dir.join(name))
            .unwrap()
            .maps
            .into_iter()
            .map(|m| (m.name, m.def, m.pinning))
            .collect()
    };
    let rodata = |obj: &str| {
        MapDef::new(
            MapType::Array,
            4,
            4,
            1,
            map_flags::BPF_F_RDONLY_PROG | map_flags::BPF_F_MMAPABLE,
            obj,
        )
    };
    assert_eq!(
        maps("legacy_map.bpf.o"),
        [
            (
                "legacy_counts".to_owned(),
                MapDef::new(MapType::Hash, 4, 8, 128, 0, "legacy_counts"),
                Pinning::None
            ),
            (
                "legacy_m.rodata".to_owned(),
                rodata("legacy_m.rodata"),
                Pinning::None
            ),
        ]
    );
    assert_eq!(
        maps("pinned_writer.bpf.o"),
        [
            (
                "pinned_counts".to_owned(),
                MapDef::new(MapType::Hash, 4, 8, 256, 0, "pinned_counts"),
                Pinning::ByName
            ),
            (
                "pinned_w.rodata".to_owned(),
                rodata("pinned_w.rodata"),
                Pinning::None
            ),
        ]
    );
    assert_eq!(
        maps("stack_traces.bpf.o"),
        [
            (
                "stack_traces".to_owned(),
                MapDef::new(MapType::StackTrace, 4, 1016, 1024, 0, "stack_traces"),
                Pinning::None
            ),
            (
                "stack_counts".to_owned(),
                MapDef::new(MapType::Hash, 12, 8, 1024, 0, "stack_counts"),
                Pinning::None
            ),
            (
                "stack_tr.rodata".to_owned(),
                rodata("stack_tr.rodata"),
                Pinning::None
            ),
        ]
    );
    assert_eq!(
        maps("ringbuf_events.bpf.o")[0],
        (
            "events".to_owned(),
            MapDef::new(MapType::Ringbuf, 0, 0, 16384, 0, "events"),
            Pinning::None
        )
    );
}

#[test]
fn callback_addresses_are_linked_as_pseudo_func() {
    let spec = load("callbacks.o");
    check_relocated(&spec);
    let prog = spec.program("loops").unwrap();
    // llvm-objdump: `r2 = 0 ll` (add_one) at 5 and `r2 = 56 ll` (sum_elem) at 12.
    let targets: Vec<(usize, usize)> = [5usize, 12]
        .iter()
        .map(|&at| {
            let insn = prog.instructions[at];
            assert_eq!((insn.code, insn.src), (0x18, pseudo::FUNC), "insn {at}");
            (at, (at as i64 + i64::from(insn.imm) + 1) as usize)
        })
        .collect();
    // add_one starts with `r1 <<= 32`, sum_elem with `r1 = *(u64 *)(r3 + 0)`.
    assert_eq!(
        prog.instructions[targets[0].1],
        RawInsn::new(0x67, 1, 0, 0, 32)
    );
    assert_eq!(
        prog.instructions[targets[1].1],
        RawInsn::new(0x79, 1, 3, 0, 0)
    );
    assert_eq!(prog.instructions.len(), 19 + 7 + 6);
    let refs: Vec<_> = prog
        .map_references
        .iter()
        .map(|r| (r.insn_index, r.map_index))
        .collect();
    assert_eq!(refs, [(10, 0)]);
}
