//! Programs that break the verifier's rules, run on the user engine: each is stopped by a trap
//! naming the instruction (or refused at load), the host keeps running, and the maps stay usable.
//! The programs are in `tests/data/rule_breakers.bpf.c` and `tests/data/unknown_helper.bpf.c`.
//! A bad helper argument the kernel answers with an errno (bad flags) returns that errno.

use std::path::PathBuf;

use bpfmaps_abi::{Errno, MapOps};
use bpfmaps_obj::ObjectSpec;
use bpfmaps_runtime::{LoadOptions, RuntimeError, UserObject};
use bpfmaps_vm::memory::FaultKind;
use bpfmaps_vm::{HelperError, Trap};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn load() -> UserObject {
    let spec = ObjectSpec::from_file(&data("rule_breakers.bpf.o")).expect("parse");
    UserObject::load(spec, &LoadOptions::default()).expect("load")
}

/// A sys_enter context whose args[0] is `arg0`.
fn ctx(arg0: u64) -> Vec<u8> {
    let mut ctx = vec![0u8; 64];
    ctx[16..24].copy_from_slice(&arg0.to_le_bytes());
    ctx
}

fn run(object: &UserObject, program: &str, arg0: u64) -> Result<u64, Trap> {
    object
        .program(program)
        .expect("program")
        .run(&mut ctx(arg0))
}

fn memory_fault(result: Result<u64, Trap>) -> (usize, FaultKind) {
    match result {
        Err(Trap::Memory { pc, fault }) => (pc, fault.kind),
        other => panic!("expected a memory trap, got {other:?}"),
    }
}

#[test]
fn out_of_bounds_stack_read_traps_at_the_load() {
    let object = load();
    // In bounds: byte 3 of the zeroed buffer.
    assert_eq!(run(&object, "oob_stack", 3), Ok(0));
    // 1000 bytes above the frame's 16-byte buffer: past the stack.
    assert_eq!(
        memory_fault(run(&object, "oob_stack", 1000)),
        (7, FaultKind::OutOfBounds)
    );
}

#[test]
fn out_of_bounds_context_read_traps() {
    let object = load();
    // args[0] = 0 reads args[0] itself (0).
    assert_eq!(run(&object, "oob_ctx", 0), Ok(0));
    // args[6] is at offset 64: just past the 64-byte context.
    assert_eq!(
        memory_fault(run(&object, "oob_ctx", 6)),
        (4, FaultKind::OutOfBounds)
    );
    // A context too short for args[0] traps at the first load.
    let short = object.program("oob_ctx").unwrap().run(&mut [0u8; 16]);
    assert_eq!(memory_fault(short), (0, FaultKind::OutOfBounds));
}

#[test]
fn map_value_pointer_used_past_its_value_traps_and_the_value_is_intact() {
    let object = load();
    assert_eq!(run(&object, "past_value", 0), Ok(0));
    let (_, kind) = memory_fault(run(&object, "past_value", 1));
    assert_eq!(kind, FaultKind::OutOfBounds);
    let mut value = [0u8; 8];
    object
        .map("values")
        .unwrap()
        .map
        .lookup(&0u32.to_le_bytes(), &mut value, 0)
        .unwrap();
    assert_eq!(
        u64::from_le_bytes(value),
        42,
        "only the in-bounds write landed"
    );
}

#[test]
fn endless_loop_exhausts_the_budget() {
    let object = load();
    assert_eq!(run(&object, "endless", 1), Ok(0));
    match run(&object, "endless", 0) {
        Err(Trap::BudgetExhausted { budget, .. }) => assert_eq!(budget, 1_000_000),
        other => panic!("expected the budget to run out, got {other:?}"),
    }
}

#[test]
fn bad_map_handle_traps_in_the_helper() {
    let object = load();
    match run(&object, "bad_map", 0x1234) {
        Err(Trap::Helper { id, error, .. }) => {
            assert_eq!(id, 1);
            assert_eq!(
                error,
                HelperError::InvalidArgument {
                    arg: 1,
                    reason: "not a map"
                }
            );
        }
        other => panic!("expected a helper trap, got {other:?}"),
    }
}

#[test]
fn bad_update_flags_return_the_kernels_errno() {
    let object = load();
    assert_eq!(run(&object, "bad_flags", 0), Ok(0));
    // BPF_NOEXIST on an array: EEXIST, as the kernel.
    assert_eq!(
        run(&object, "bad_flags", 1).map(|r| r as u32 as i32),
        Ok(-Errno::EEXIST.0)
    );
    // An unknown flag bit: EINVAL.
    assert_eq!(
        run(&object, "bad_flags", 0x40).map(|r| r as u32 as i32),
        Ok(-Errno::EINVAL.0)
    );
}

#[test]
fn ring_buffer_record_used_after_submit_traps() {
    let object = load();
    let (_, kind) = memory_fault(run(&object, "use_after_submit", 0));
    assert_eq!(kind, FaultKind::Unmapped);
}

#[test]
fn unknown_helper_is_refused_at_load_naming_the_instruction() {
    let spec = ObjectSpec::from_file(&data("unknown_helper.bpf.o")).expect("parse");
    match UserObject::load(spec, &LoadOptions::default()) {
        Err(e @ RuntimeError::UnsupportedHelper { .. }) => {
            let message = e.to_string();
            let RuntimeError::UnsupportedHelper {
                program,
                insn,
                helper,
            } = e
            else {
                unreachable!()
            };
            assert_eq!(
                (program.as_str(), insn, helper.as_str()),
                ("unknown_helper", 0, "helper 9999")
            );
            assert!(
                message.contains("instruction 0 calls helper 9999"),
                "{message}"
            );
        }
        other => panic!(
            "expected a load error, got {:?}",
            other.map(|o| o.name().to_owned())
        ),
    }
}

#[test]
fn a_trap_inside_a_callback_ends_the_run_naming_the_callbacks_instruction() {
    let object = load();
    // One iteration writes byte 0 of the caller's buffer: fine, bpf_loop returns 1.
    assert_eq!(run(&object, "callback_trap", 1), Ok(1));
    // The second iteration writes 4096 bytes further: past the stack, inside the callback,
    // which the linker placed after the program's 10 slots.
    let (pc, kind) = memory_fault(run(&object, "callback_trap", 2));
    assert_eq!(kind, FaultKind::OutOfBounds);
    assert!(
        pc >= 10,
        "the trap names the callback's instruction, got {pc}"
    );
    // The host and the program are fine afterwards.
    assert_eq!(run(&object, "callback_trap", 1), Ok(1));
}
