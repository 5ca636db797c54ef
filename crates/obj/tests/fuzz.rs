//! Fuzz-like robustness tests: random byte mutations and truncations of valid objects never
//! make the loader panic, and never reach aya-obj's panic paths (the loader's own validation
//! must catch them first, so [`ObjError::ParserPanicked`] never appears).

use bpfmaps_obj::{ObjError, ObjectSpec};
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
