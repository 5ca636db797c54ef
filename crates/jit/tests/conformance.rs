//! The bpf_conformance suite (`shared/conformance/bpf_conformance`) on the JIT: every
//! `tests/*.data` program returns its expected r0 (the interpreter's, which its own suite checks)
//! and runs the same number of instructions; every `negative/*.data` case that gets as far as
//! running gives the JIT the interpreter's outcome, and the others fail before compiling.

#[path = "../../vm/tests/common/mod.rs"]
mod common;

use bpfmaps_jit::{JitProgram, JitVm};
use bpfmaps_vm::{Config, Executable, HelperError, HelperHost, HelperSet, Memory, NoPseudo, Vm};
use common::Expect;

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

/// Loads a data file's program, or `None` when the file, assembler or loader refuses it.
fn load(path: &std::path::Path) -> Option<(Executable, Vec<u8>, Option<Expect>)> {
    let text = std::fs::read_to_string(path).expect("readable data file");
    let file = common::parse_data(&text).ok()?;
    let slots = common::program(&file).ok()?;
    let exe = Executable::new(&slots, HelperSet::new([5]), &mut NoPseudo).ok()?;
    Some((exe, file.mem.clone(), file.expect))
}

/// Runs `exe` on both engines; returns a description of any difference.
fn compare(name: &str, exe: Executable, mem: &[u8], expect: Option<Expect>) -> Option<String> {
    let mut vm = Vm::new(Config::default());
    let mut interp_mem = mem.to_vec();
    let interp = vm.run(&exe, &mut interp_mem, &mut SuiteHelpers);
    let program = match JitProgram::compile(exe, Config::default()) {
        Ok(program) => program,
        Err(error) => return Some(format!("{name}: does not compile: {error}")),
    };
    let mut jit_vm = JitVm::new();
    let mut jit_mem = mem.to_vec();
    let jit = jit_vm.run(&program, &mut jit_mem, &mut SuiteHelpers);
    if jit != interp {
        return Some(format!("{name}: jit {jit:?}, interpreter {interp:?}"));
    }
    if jit_mem != interp_mem {
        return Some(format!("{name}: memory differs after the run"));
    }
    if jit_vm.instructions_executed() != vm.instructions_executed() {
        return Some(format!(
            "{name}: jit ran {} instructions, interpreter {}",
            jit_vm.instructions_executed(),
            vm.instructions_executed()
        ));
    }
    match (expect, jit) {
        (Some(Expect::Result(want)), Ok(r0)) if want == r0 => None,
        (expect, got) => Some(format!("{name}: expected {expect:?}, got {got:?}")),
    }
}

#[test]
fn every_conformance_test_passes_on_the_jit() {
    let files = common::data_files("tests");
    assert_eq!(files.len(), 313, "the suite has 313 tests");
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match load(path) {
            None => failures.push(format!("{name}: does not load")),
            Some((exe, mem, expect)) => failures.extend(compare(&name, exe, &mem, expect)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn negative_cases_fail_on_the_jit_as_on_the_interpreter() {
    let files = common::data_files("negative");
    assert_eq!(files.len(), 60, "the suite has 60 negative cases");
    let mut ran = Vec::new();
    let mut wrong = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((exe, mem, expect)) = load(path) else {
            continue;
        };
        ran.push(name.clone());
        // These run, but not with the outcome the file states: the JIT must agree with the
        // interpreter and still differ from the file.
        match compare(&name, exe, &mem, expect) {
            Some(message) if message.contains("expected") => {}
            Some(message) => wrong.push(message),
            None => wrong.push(format!(
                "{name}: passes, but the case states a wrong outcome"
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    ran.sort();
    assert_eq!(
        ran,
        ["error.data", "incorrect_return_value_high_bits.data"],
        "the negative cases that load are the two wrong-outcome ones"
    );
}
