//! Fuzz-like robustness tests: random byte mutations and truncations of valid objects never
//! make the loader panic, and never reach aya-obj's panic paths (the loader's own validation
//! must catch them first, so [`ObjError::ParserPanicked`] never appears).

use bpfmaps_obj::{parse_kernel_config, KernelConfig, ObjError, ObjectSpec, TargetBtf};
use proptest::prelude::*;

const MAPS_BTF: &[u8] = include_bytes!("data/maps_btf.o");
const MAPS_LEGACY: &[u8] = include_bytes!("data/maps_legacy.o");
/// Every valid test object: BTF maps and data sections, legacy maps, callbacks, CO-RE records.
const VALID: [&[u8]; 4] = [
    MAPS_BTF,
    MAPS_LEGACY,
    include_bytes!("data/callbacks.o"),
    include_bytes!("data/core_reloc.o"),
];

/// Parses `bytes` and fails the test on a panic or a caught aya-obj panic.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let outcome = std::panic::catch_unwind(|| ObjectSpec::parse(bytes, "fuzz"));
    let result = outcome.map_err(|_| TestCaseError::fail("ObjectSpec::parse panicked"))?;
    if let Err(e @ ObjError::ParserPanicked { .. }) = &result {
        return Err(TestCaseError::fail(format!(
            "validation missed an aya-obj panic: {e}"
        )));
    }
    Ok(())
}

/// File ranges of the sections the loader interprets (code, relocations, symbols, strings,
/// BTF, map definitions, data), where mutations matter most.
fn structured_ranges(bytes: &[u8]) -> Vec<(usize, usize)> {
    use object::{Object as _, ObjectSection as _};
    let file = object::File::parse(bytes).unwrap();
    file.sections()
        .filter(|s| {
            let name = s.name().unwrap_or("");
            !name.starts_with(".debug") && !name.starts_with(".rel.debug")
        })
        .filter_map(|s| s.file_range())
        .map(|(start, len)| (start as usize, len as usize))
        .filter(|&(_, len)| len > 0)
        .collect()
}

fn mutate_structured(base: &[u8], edits: &[(usize, usize, u8)]) -> Vec<u8> {
    let ranges = structured_ranges(base);
    let mut bytes = base.to_vec();
    for &(which, pos, value) in edits {
        let (start, len) = ranges[which % ranges.len()];
        bytes[start + pos % len] = value;
    }
    bytes
}

fn mutate(base: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for &(pos, value) in edits {
        let at = pos % bytes.len();
        bytes[at] = value;
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_btf_object_never_panics(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..16)) {
        check(&mutate(MAPS_BTF, &edits))?;
    }

    #[test]
    fn mutated_legacy_object_never_panics(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..16)) {
        check(&mutate(MAPS_LEGACY, &edits))?;
    }

    #[test]
    fn mutated_structured_sections_never_panic(
        edits in prop::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 1..8)
    ) {
        for base in VALID {
            check(&mutate_structured(base, &edits))?;
        }
    }

    #[test]
    fn truncated_object_never_panics(len in 0usize..MAPS_BTF.len()) {
        check(&MAPS_BTF[..len])?;
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes)?;
    }
}

/// Parses `bytes` and, when that works, runs every later load step on it (externs, CO-RE
/// against `target` and against the object's own BTF): none may panic.
fn check_all_steps(bytes: &[u8], target: &TargetBtf) -> Result<(), TestCaseError> {
    let outcome = std::panic::catch_unwind(|| {
        let Ok(mut spec) = ObjectSpec::parse(bytes, "fuzz") else {
            return;
        };
        let config = KernelConfig {
            version: 0x6122c,
            entries: Some(parse_kernel_config("CONFIG_A=y\nCONFIG_B=\"x\"\n")),
            has_bpf_cookie: true,
            has_syscall_wrapper: true,
        };
        let _ = spec.fill_kconfig(&config);
        let _ = spec.resolve_ksyms_absent();
        let own = spec.btf.as_deref().and_then(|b| TargetBtf::parse(b).ok());
        let mut again = spec.clone();
        let _ = spec.relocate_core(target);
        if let Some(own) = own {
            let _ = again.relocate_core(&own);
        }
    });
    outcome.map_err(|_| TestCaseError::fail("a load step panicked"))
}

const CORE: &[u8] = include_bytes!("data/core_reloc.o");
const KFUNC: &[u8] = include_bytes!("data/extern_kfunc.o");

fn own_target(bytes: &[u8]) -> TargetBtf {
    let spec = ObjectSpec::parse(bytes, "t").unwrap();
    TargetBtf::parse(spec.btf.as_deref().unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_core_and_extern_objects_never_panic_in_later_steps(
        edits in prop::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 1..8)
    ) {
        let target = own_target(CORE);
        for base in [CORE, KFUNC] {
            check_all_steps(&mutate_structured(base, &edits), &target)?;
        }
    }

    #[test]
    fn mutated_target_btf_never_panics(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..16)
    ) {
        let spec = ObjectSpec::parse(CORE, "t").unwrap();
        let btf = mutate(spec.btf.as_deref().unwrap(), &edits);
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(target) = TargetBtf::parse(&btf) {
                let mut spec = spec.clone();
                let _ = spec.relocate_core(&target);
                let _ = target.type_ids_by_name("fake_task");
            }
        });
        prop_assert!(outcome.is_ok(), "relocating against a mutated target panicked");
    }
}
