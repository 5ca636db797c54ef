//! Fuzz-like robustness tests: random byte mutations and truncations of valid objects never
//! make the loader panic, and never reach aya-obj's panic paths (the loader's own validation
//! must catch them first, so [`ObjError::ParserPanicked`] never appears).

use bpfmaps_obj::{ObjError, ObjectSpec};
use proptest::prelude::*;

const MAPS_BTF: &[u8] = include_bytes!("data/maps_btf.o");
const MAPS_LEGACY: &[u8] = include_bytes!("data/maps_legacy.o");

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
    fn truncated_object_never_panics(len in 0usize..MAPS_BTF.len()) {
        check(&MAPS_BTF[..len])?;
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes)?;
    }
}
