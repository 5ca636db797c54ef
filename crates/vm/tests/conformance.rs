//! The bpf_conformance suite (`shared/conformance/bpf_conformance`) on the interpreter: every
//! `tests/*.data` program must return its expected r0, and every `negative/*.data` case must be
//! reported as failing, for the reason stated in the table below.

mod common;

use bpfmaps_abi::insn::DecodeError;
use bpfmaps_vm::asm::AsmErrorKind;
use bpfmaps_vm::{
    Config, Executable, HelperError, HelperHost, HelperSet, LoadError, Memory, NoPseudo, Trap, Vm,
};
use common::{DataError, Expect, ProgramError};

/// The suite's helper 5: returns its first argument.
struct SuiteHelpers;

impl HelperHost for SuiteHelpers {
    fn call(&mut self, id: u32, args: [u64; 5], _mem: &mut Memory<'_>) -> Result<u64, HelperError> {
        match id {
            5 => Ok(args[0]),
            _ => Err(HelperError::Unavailable),
        }
    }
}

/// What running one data file through assembler, loader and interpreter gave.
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "the fields are read through Debug in failure messages"
)]
enum Outcome {
    BadDataFile(DataError),
    NoProgram,
    Asm(AsmErrorKind),
    RawMismatch,
    Load(LoadError),
    Trapped(Trap),
    /// r0 as expected.
    Pass,
    /// The program ran but the expectation differs.
    Mismatch {
        expected: Option<Expect>,
        got: u64,
    },
}

fn run_file(path: &std::path::Path) -> Outcome {
    let text = std::fs::read_to_string(path).expect("readable data file");
    let file = match common::parse_data(&text) {
        Ok(file) => file,
        Err(error) => return Outcome::BadDataFile(error),
    };
    let slots = match common::program(&file) {
        Ok(slots) => slots,
        Err(ProgramError::Asm(error)) => return Outcome::Asm(error.kind),
        Err(ProgramError::RawMismatch) => return Outcome::RawMismatch,
        Err(ProgramError::NoProgram) => return Outcome::NoProgram,
    };
    let exe = match Executable::new(&slots, HelperSet::new([5]), &mut NoPseudo) {
        Ok(exe) => exe,
        Err(error) => return Outcome::Load(error),
    };
    let mut vm = Vm::new(Config::default());
    let mut mem = file.mem.clone();
    match vm.run(&exe, &mut mem, &mut SuiteHelpers) {
        Err(trap) => Outcome::Trapped(trap),
        Ok(r0) if file.expect == Some(Expect::Result(r0)) => Outcome::Pass,
        Ok(r0) => Outcome::Mismatch {
            expected: file.expect,
            got: r0,
        },
    }
}

/// Files of `tests/` the interpreter does not pass, with the reason. Empty: every test passes.
const EXCEPTIONS: &[(&str, &str)] = &[];

#[test]
fn every_conformance_test_passes_on_the_interpreter() {
    let files = common::data_files("tests");
    assert_eq!(files.len(), 313, "the suite has 313 tests");
    let mut failures = Vec::new();
    let mut passed = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let outcome = run_file(path);
        let excepted = EXCEPTIONS.iter().any(|(file, _)| *file == name);
        match (outcome, excepted) {
            (Outcome::Pass, false) => passed += 1,
            (Outcome::Pass, true) => failures.push(format!("{name}: passes, drop its exception")),
            (_, true) => {}
            (outcome, false) => failures.push(format!("{name}: {outcome:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(passed + EXCEPTIONS.len(), files.len());
}

/// How each `negative/` case must fail.
#[derive(Debug)]
enum MustFail {
    /// The data file itself is malformed.
    DataFile,
    /// There is no program to run.
    NoProgram,
    /// The assembler refuses it.
    Assembler,
    /// The loader refuses it because a field the opcode does not use is set (the ISA says such
    /// encodings are invalid, and the kernel verifier rejects them too). For `mov` the offset is
    /// used (sign-extension width), so offset 1 is reported as an invalid value of that field.
    ReservedField,
    /// It runs, but not with the stated outcome (the suite checks its runner reports this).
    WrongOutcome,
}

fn must_fail(name: &str) -> MustFail {
    match name {
        "empty.data" | "empty_instructions.data" => MustFail::NoProgram,
        "invalid_unknown_directive.data" => MustFail::DataFile,
        // `or %r0, %r10` is valid and runs; the file claims an error.
        "error.data" => MustFail::WrongOutcome,
        // The stated result has a wrong high byte.
        "incorrect_return_value_high_bits.data" => MustFail::WrongOutcome,
        name if name.starts_with("unused-") => MustFail::ReservedField,
        _ => MustFail::Assembler,
    }
}

#[test]
fn every_negative_case_is_reported_as_failing_for_its_reason() {
    let files = common::data_files("negative");
    assert_eq!(files.len(), 60, "the suite has 60 negative cases");
    let mut wrong = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let expected = must_fail(&name);
        let outcome = run_file(path);
        let ok = matches!(
            (&expected, &outcome),
            (MustFail::DataFile, Outcome::BadDataFile(_))
                | (MustFail::NoProgram, Outcome::NoProgram)
                | (MustFail::Assembler, Outcome::Asm(_))
                | (
                    MustFail::ReservedField,
                    Outcome::Load(LoadError::Decode {
                        index: 0,
                        source: DecodeError::ReservedField { .. }
                            | DecodeError::InvalidField { .. },
                    }),
                )
                | (MustFail::WrongOutcome, Outcome::Mismatch { .. })
        );
        if !ok {
            wrong.push(format!("{name}: expected {expected:?}, got {outcome:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
