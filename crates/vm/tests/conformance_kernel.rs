//! The bpf_conformance suite on the kernel through `BPF_PROG_TEST_RUN`, as the reference for the
//! interpreter: for every program the kernel's verifier accepts, the kernel's 64-bit r0 must equal
//! the interpreter's (and the suite's expectation). Programs the verifier rejects are counted and
//! listed, not compared: many conformance programs are not verifier-safe (unbounded loops,
//! `callx`, reads of uninitialised registers).
//!
//! Needs root with CAP_BPF; without it the test fails, unless `BPFMAPS_SKIP_KERNEL=1` is set, when
//! it returns early after saying why.

mod common;

use bpfmaps_kernel::prog::{run_conformance, ReferenceError};
use bpfmaps_vm::{Config, Executable, HelperError, HelperHost, HelperSet, Memory, NoPseudo, Vm};
use common::Expect;

struct SuiteHelpers;

impl HelperHost for SuiteHelpers {
    fn call(&mut self, id: u32, args: [u64; 5], _mem: &mut Memory<'_>) -> Result<u64, HelperError> {
        match id {
            5 => Ok(args[0]),
            _ => Err(HelperError::Unavailable),
        }
    }
}

/// Whether this process can load and test-run programs: tries the smallest conformance program.
fn kernel_available() -> Result<(), String> {
    let exit = bpfmaps_abi::insn::RawInsn::new(0x95, 0, 0, 0, 0);
    let mov = bpfmaps_abi::insn::RawInsn::new(0xb7, 0, 0, 0, 7);
    match run_conformance(&[mov, exit], &[]) {
        Ok(result) if result.r0 == 7 => Ok(()),
        Ok(result) => panic!("the kernel returned {:#x} for `mov r0, 7; exit`", result.r0),
        Err(error) => Err(error.to_string()),
    }
}

#[test]
fn kernel_reference_agrees_with_the_interpreter() {
    if let Err(why) = kernel_available() {
        if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
            eprintln!("skipping the kernel conformance run: {why} (BPFMAPS_SKIP_KERNEL=1)");
            return;
        }
        panic!("the kernel conformance run needs root with CAP_BPF: {why}; set BPFMAPS_SKIP_KERNEL=1 to skip");
    }
    let files = common::data_files("tests");
    let mut accepted = 0;
    let mut rejected = Vec::new();
    let mut disagreements = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        let file = common::parse_data(&text).expect("suite data file parses");
        let slots = common::program(&file).expect("suite program assembles");
        let exe = Executable::new(&slots, HelperSet::new([5]), &mut NoPseudo).expect("loads");
        let mut mem = file.mem.clone();
        let ours = Vm::new(Config::default())
            .run(&exe, &mut mem, &mut SuiteHelpers)
            .expect("runs");
        match run_conformance(&slots, &file.mem) {
            Ok(kernel) => {
                accepted += 1;
                let expected = match file.expect {
                    Some(Expect::Result(value)) => value,
                    _ => panic!("{name}: no expected result"),
                };
                if kernel.r0 != ours || kernel.r0 != expected {
                    disagreements.push(format!(
                        "{name}: kernel {:#x}, interpreter {ours:#x}, expected {expected:#x}",
                        kernel.r0
                    ));
                }
            }
            Err(error) if error.is_verifier_rejection() => {
                let ReferenceError::Rejected(load) = &error else {
                    unreachable!()
                };
                let last = load
                    .log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty() && !l.starts_with("processed"));
                rejected.push(format!(
                    "{name}: {} ({})",
                    load.errno,
                    last.unwrap_or("").trim()
                ));
            }
            Err(error) => panic!("{name}: kernel run failed: {error}"),
        }
    }
    eprintln!(
        "kernel accepted {accepted} of {} conformance programs, its verifier rejected {}:",
        files.len(),
        rejected.len()
    );
    for line in &rejected {
        eprintln!("  rejected {line}");
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert_eq!(accepted + rejected.len(), files.len());
    // The reference must actually cover the suite.
    assert!(
        accepted >= 200,
        "only {accepted} programs accepted by the kernel"
    );
}
