//! Callbacks: a helper runs a function of the program through [`Callbacks`] (what `bpf_loop` and
//! `bpf_for_each_map_elem` need). The function is named by an `lddw` function reference
//! (`BPF_PSEUDO_FUNC`), runs in its own frame with the caller's stack reachable, shares the
//! budget, and a trap inside it ends the run naming the callback's instruction.

use bpfmaps_abi::insn::RawInsn;
use bpfmaps_vm::memory::CALLBACK_BASE;
use bpfmaps_vm::{
    Callbacks, Config, Executable, HelperError, HelperHost, HelperSet, LoadError, Memory, NoPseudo,
    Trap, Vm,
};

const CALL_BACK: u32 = 1000;

/// Helper 1000(callback, arg): runs `callback(arg)` and returns its r0 plus 1.
struct Host;

impl HelperHost for Host {
    fn call(&mut self, _: u32, _: [u64; 5], _: &mut Memory<'_>) -> Result<u64, HelperError> {
        Err(HelperError::Unavailable)
    }

    fn call_with_callbacks(
        &mut self,
        _id: u32,
        args: [u64; 5],
        mem: &mut Memory<'_>,
        callbacks: &mut dyn Callbacks,
    ) -> Result<u64, HelperError> {
        let r0 = callbacks.invoke(self, mem, args[0], 1, [args[1], 0, 0, 0, 0])?;
        Ok(r0 + 1)
    }
}

/// `r1 = &func; r2 = arg; call 1000; exit` followed by `func`.
fn program(func: &[RawInsn], arg: i32) -> Vec<RawInsn> {
    let mut slots = vec![
        // lddw r1, func (src = BPF_PSEUDO_FUNC, imm = offset from the next slot): func is at 6.
        RawInsn::new(0x18, 1, 4, 0, 5),
        RawInsn::new(0, 0, 0, 0, 0),
        RawInsn::new(0xb7, 2, 0, 0, arg),
        // A value on the caller's stack: the callback's own frame is separate (its slot is 0).
        RawInsn::new(0x7a, 10, 0, -8, 5),
        RawInsn::new(0x85, 0, 0, 0, CALL_BACK as i32),
        RawInsn::new(0x95, 0, 0, 0, 0),
    ];
    slots.extend_from_slice(func);
    slots
}

fn load(slots: &[RawInsn]) -> Executable {
    Executable::new(slots, HelperSet::new([CALL_BACK]), &mut NoPseudo).expect("load")
}

#[test]
fn a_callback_runs_in_its_own_frame_and_returns_to_the_helper() {
    // func(arg) = arg * 10 + (its own stack slot, zeroed: 0).
    let exe = load(&program(
        &[
            RawInsn::new(0xbf, 0, 1, 0, 0),
            RawInsn::new(0x27, 0, 0, 0, 10),
            RawInsn::new(0x79, 3, 10, -8, 0),
            RawInsn::new(0x0f, 0, 3, 0, 0),
            RawInsn::new(0x95, 0, 0, 0, 0),
        ],
        3,
    ));
    assert_eq!(exe.callback_target(CALLBACK_BASE + 6), Some(6));
    assert_eq!(exe.callback_target(CALLBACK_BASE + 5), None);
    let mut vm = Vm::new(Config::default());
    assert_eq!(vm.run(&exe, &mut [], &mut Host), Ok(31));
    assert_eq!(vm.instructions_executed(), 5 + 5);
}

#[test]
fn a_trap_in_a_callback_names_the_callbacks_instruction() {
    // func loads from address 0.
    let exe = load(&program(
        &[
            RawInsn::new(0x79, 0, 1, 0, 0),
            RawInsn::new(0x95, 0, 0, 0, 0),
        ],
        0,
    ));
    let mut vm = Vm::new(Config::default());
    match vm.run(&exe, &mut [], &mut Host) {
        Err(Trap::Memory { pc, fault }) => assert_eq!((pc, fault.addr), (6, 0)),
        other => panic!("expected a memory trap in the callback, got {other:?}"),
    }
}

#[test]
fn callbacks_share_the_budget_and_bad_references_are_refused() {
    // func loops forever.
    let exe = load(&program(
        &[
            RawInsn::new(0x05, 0, 0, -1, 0),
            RawInsn::new(0x95, 0, 0, 0, 0),
        ],
        0,
    ));
    let mut vm = Vm::new(Config {
        instruction_budget: 100,
        ..Config::default()
    });
    assert!(matches!(
        vm.run(&exe, &mut [], &mut Host),
        Err(Trap::BudgetExhausted { budget: 100, .. })
    ));
    // A function reference outside the program is refused at load, naming the lddw.
    let mut bad = program(&[RawInsn::new(0x95, 0, 0, 0, 0)], 0);
    bad[0] = RawInsn::new(0x18, 1, 4, 0, 100);
    assert_eq!(
        Executable::new(&bad, HelperSet::new([CALL_BACK]), &mut NoPseudo).unwrap_err(),
        LoadError::CallOutOfRange {
            index: 0,
            target: 101
        }
    );
}
