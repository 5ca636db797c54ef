//! Load-time rejections and run-time traps: programs that break the rules are refused with the
//! instruction named, or stopped with a [`Trap`] naming instruction and address, and the host
//! keeps running. Also the host interfaces: helper-mapped regions, fixed regions for `lddw`
//! pseudo values, local calls with their own stack frames.

use bpfmaps_abi::insn::{DecodeError, RawInsn};
use bpfmaps_vm::asm::assemble;
use bpfmaps_vm::memory::{fixed_region_address, FaultKind, CONTEXT_BASE, STACK_BASE};
use bpfmaps_vm::{
    Access, Config, Executable, HelperError, HelperHost, HelperSet, LoadError, Memory, NoHelpers,
    NoPseudo, PseudoResolver, Region, Trap, Vm,
};

fn load(source: &str) -> Result<Executable, LoadError> {
    let slots = assemble(source).expect("test program assembles");
    Executable::new(&slots, HelperSet::new([1, 5]), &mut NoPseudo)
}

fn load_raw(slots: &[RawInsn]) -> Result<Executable, LoadError> {
    Executable::new(slots, HelperSet::new([1, 5]), &mut NoPseudo)
}

fn run(source: &str, ctx: &mut [u8]) -> Result<u64, Trap> {
    let exe = load(source).expect("test program loads");
    Vm::new(Config::default()).run(&exe, ctx, &mut MapHost)
}

/// A host whose helper 1 returns a fresh 8-byte "map value" region holding 0x2a, like
/// `bpf_map_lookup_elem`, and whose helper 5 returns its first argument.
struct MapHost;

impl HelperHost for MapHost {
    fn call(&mut self, id: u32, args: [u64; 5], mem: &mut Memory<'_>) -> Result<u64, HelperError> {
        match id {
            1 => Ok(mem.map(Region::owned(
                42u64.to_le_bytes().to_vec(),
                Access::ReadWrite,
            ))?),
            5 => Ok(args[0]),
            _ => Err(HelperError::Unavailable),
        }
    }
}

#[test]
fn loader_names_the_offending_instruction() {
    let exit = RawInsn::new(0x95, 0, 0, 0, 0);
    let mov = RawInsn::new(0xb7, 0, 0, 0, 0);
    assert_eq!(load_raw(&[]).unwrap_err(), LoadError::Empty);
    assert_eq!(
        load_raw(&[mov, RawInsn::new(0x8f, 0, 0, 0, 0), exit]).unwrap_err(),
        LoadError::Decode {
            index: 1,
            source: DecodeError::UnknownOpcode { code: 0x8f }
        }
    );
    assert_eq!(
        load_raw(&[mov, RawInsn::new(0xbf, 0, 12, 0, 0), exit]).unwrap_err(),
        LoadError::Decode {
            index: 1,
            source: DecodeError::BadRegister { reg: 12 }
        }
    );
    assert_eq!(
        load("mov %r0, 0\nmov %r10, 1\nexit").unwrap_err(),
        LoadError::WriteToFramePointer { index: 1 }
    );
    assert_eq!(
        load("mov %r0, 0\nlock fetch add [%r1], %r10\nexit").unwrap_err(),
        LoadError::WriteToFramePointer { index: 1 }
    );
    assert_eq!(
        load("ja +5\nexit").unwrap_err(),
        LoadError::JumpOutOfRange {
            index: 0,
            target: 6
        }
    );
    assert_eq!(
        load("jeq %r1, 0, -2\nexit").unwrap_err(),
        LoadError::JumpOutOfRange {
            index: 0,
            target: -1
        }
    );
    assert_eq!(
        load("ja +1\nlddw %r0, 1\nexit").unwrap_err(),
        LoadError::JumpIntoLddw {
            index: 0,
            target: 2
        }
    );
    assert_eq!(
        load("call 6\nexit").unwrap_err(),
        LoadError::UnknownHelper { index: 0, id: 6 }
    );
    assert_eq!(
        load("call local +3\nexit").unwrap_err(),
        LoadError::CallOutOfRange {
            index: 0,
            target: 4
        }
    );
    assert_eq!(
        load("mov %r0, 0").unwrap_err(),
        LoadError::NoExitAtEnd { index: 0 }
    );
    assert_eq!(
        load("mov %r0, 0\nja +0\nexit\nja +0").unwrap_err(),
        LoadError::JumpOutOfRange {
            index: 3,
            target: 4
        }
    );
    assert_eq!(
        load_raw(&[RawInsn::new(0x85, 0, 2, 0, 7), exit]).unwrap_err(),
        LoadError::Unsupported {
            index: 0,
            what: "a kernel function call"
        }
    );
    assert_eq!(
        load_raw(&[
            RawInsn::new(0x18, 1, 1, 0, 3),
            RawInsn::new(0, 0, 0, 0, 0),
            exit
        ])
        .unwrap_err(),
        LoadError::UnresolvedPseudo {
            index: 0,
            pseudo: 1,
            imm: 3
        }
    );
    assert_eq!(
        load_raw(&[exit, RawInsn::new(0x18, 0, 0, 0, 0)]).unwrap_err(),
        LoadError::Decode {
            index: 1,
            source: DecodeError::IncompleteLddw
        }
    );
    // A program may end in a backward jump.
    assert!(load("mov %r0, 0\nexit\nja -2").is_ok());
}

#[test]
fn out_of_bounds_accesses_trap_with_instruction_and_address() {
    let trap = run("mov %r0, 0\nldxdw %r0, [%r10+0]\nexit", &mut []).unwrap_err();
    assert_eq!(trap.pc(), 1);
    match trap {
        Trap::Memory { pc: 1, fault } => {
            assert_eq!(fault.addr, STACK_BASE + 512);
            assert_eq!(fault.kind, FaultKind::OutOfBounds);
            assert!(!fault.write);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Below the frame's 512 bytes.
    let trap = run("stb [%r10-513], 1\nexit", &mut []).unwrap_err();
    assert!(matches!(trap, Trap::Memory { pc: 0, fault } if fault.kind == FaultKind::Unmapped));
    // Past the context's end.
    let trap = run("ldxw %r0, [%r1+2]\nexit", &mut [1, 2, 3, 4, 5]).unwrap_err();
    assert!(matches!(
        trap,
        Trap::Memory { pc: 0, fault } if fault.addr == CONTEXT_BASE + 2 && fault.kind == FaultKind::OutOfBounds
    ));
    // NULL and arbitrary integers are unmapped.
    let trap = run("mov %r1, 0\nldxb %r0, [%r1]\nexit", &mut []).unwrap_err();
    assert!(
        matches!(trap, Trap::Memory { pc: 1, fault } if fault.addr == 0 && fault.kind == FaultKind::Unmapped)
    );
    let trap = run("lddw %r1, 0x7fff12345678\nstxdw [%r1], %r1\nexit", &mut []).unwrap_err();
    assert!(matches!(trap, Trap::Memory { pc: 2, fault } if fault.write));
    // Pointer arithmetic that wraps around the address space does not reach anything.
    let trap = run(
        "mov %r2, -1\nadd %r2, %r10\nldxb %r0, [%r2-32767]\nexit",
        &mut [],
    )
    .unwrap_err();
    assert!(matches!(trap, Trap::Memory { pc: 2, .. }));
}

#[test]
fn read_only_context_refuses_stores_and_atomics() {
    let exe = load("stb [%r1], 7\nexit").unwrap();
    let config = Config {
        context_access: Access::ReadOnly,
        ..Config::default()
    };
    let trap = Vm::new(config.clone())
        .run(&exe, &mut [0; 4], &mut NoHelpers)
        .unwrap_err();
    assert!(matches!(trap, Trap::Memory { pc: 0, fault } if fault.kind == FaultKind::ReadOnly));
    let exe = load("mov %r2, 1\nlock add32 [%r1], %r2\nexit").unwrap();
    let trap = Vm::new(config)
        .run_read_only(&exe, &[0; 4], &mut NoHelpers)
        .unwrap_err();
    assert!(matches!(trap, Trap::Memory { pc: 1, fault } if fault.kind == FaultKind::ReadOnly));
    // Writable by default.
    let mut ctx = [0u8; 4];
    let exe = load("stb [%r1+3], 7\nmov %r0, 0\nexit").unwrap();
    assert_eq!(
        Vm::new(Config::default()).run(&exe, &mut ctx, &mut NoHelpers),
        Ok(0)
    );
    assert_eq!(ctx, [0, 0, 0, 7]);
}

#[test]
fn endless_loop_exhausts_the_budget() {
    let exe = load("mov %r0, 0\nadd %r0, 1\nja -2").unwrap();
    let mut vm = Vm::new(Config {
        instruction_budget: 10_000,
        ..Config::default()
    });
    assert_eq!(
        vm.run(&exe, &mut [], &mut NoHelpers),
        Err(Trap::BudgetExhausted {
            pc: 2,
            budget: 10_000
        })
    );
    assert_eq!(vm.instructions_executed(), 10_000);
    // The VM is reusable after a trap.
    let exe = load("mov %r0, 3\nexit").unwrap();
    assert_eq!(vm.run(&exe, &mut [], &mut NoHelpers), Ok(3));
    assert_eq!(vm.instructions_executed(), 2);
}

#[test]
fn map_value_pointer_used_past_its_value_traps() {
    // r0 = lookup(); *(u64 *)r0 is fine, *(u64 *)(r0 + 8) is past the 8-byte value.
    assert_eq!(run("call 1\nldxdw %r0, [%r0]\nexit", &mut []), Ok(42));
    assert_eq!(
        run(
            "call 1\nmov %r6, %r0\nmov %r1, 7\nstxdw [%r6], %r1\nldxdw %r0, [%r6]\nexit",
            &mut []
        ),
        Ok(7)
    );
    let trap = run("call 1\nldxdw %r0, [%r0+8]\nexit", &mut []).unwrap_err();
    assert!(matches!(trap, Trap::Memory { pc: 1, fault } if fault.kind == FaultKind::OutOfBounds));
    let trap = run("call 1\nldxb %r0, [%r0-1]\nexit", &mut []).unwrap_err();
    assert!(matches!(trap, Trap::Memory { pc: 1, .. }));
}

#[test]
fn callx_to_an_unknown_helper_traps() {
    assert_eq!(
        run("mov %r1, 9\nmov %r2, 5\ncall %r2\nexit", &mut []),
        Ok(9)
    );
    assert_eq!(
        run("mov %r2, 77\ncall %r2\nexit", &mut []),
        Err(Trap::UnknownHelper { pc: 1, id: 77 })
    );
}

#[test]
fn helper_errors_become_traps() {
    struct Failing;
    impl HelperHost for Failing {
        fn call(
            &mut self,
            _: u32,
            args: [u64; 5],
            mem: &mut Memory<'_>,
        ) -> Result<u64, HelperError> {
            let mut buf = [0u8; 16];
            mem.read(args[0], &mut buf)?;
            Ok(0)
        }
    }
    let exe = load("mov %r1, 0\ncall 5\nexit").unwrap();
    let trap = Vm::new(Config::default())
        .run(&exe, &mut [], &mut Failing)
        .unwrap_err();
    assert!(matches!(
        trap,
        Trap::Helper {
            pc: 1,
            id: 5,
            error: HelperError::Memory(_)
        }
    ));
}

#[test]
fn local_calls_get_their_own_stack_and_preserve_r6_to_r9() {
    let source = "stdw [%r10-8], 11\nmov %r6, 6\ncall local f\nldxdw %r1, [%r10-8]\n\
        add %r0, %r1\nadd %r0, %r6\nexit\nf:\nstdw [%r10-8], 100\nmov %r6, 0\n\
        ldxdw %r0, [%r10-8]\nexit";
    assert_eq!(run(source, &mut []), Ok(100 + 11 + 6));
    // Recursion without end hits the call depth limit (8 frames).
    let trap = run("call local f\nexit\nf:\ncall local f\nexit", &mut []).unwrap_err();
    assert_eq!(trap, Trap::CallDepthExceeded { pc: 2, max: 8 });
    // A callee can read its caller's stack through a pointer, as in the kernel.
    let source =
        "stdw [%r10-8], 5\nmov %r1, %r10\ncall local f\nexit\nf:\nldxdw %r0, [%r1-8]\nexit";
    assert_eq!(run(source, &mut []), Ok(5));
}

#[test]
fn lddw_pseudo_values_resolve_to_fixed_regions_the_host_maps() {
    struct Globals;
    impl PseudoResolver for Globals {
        fn resolve(&mut self, _index: usize, pseudo: u8, imm_lo: i32, imm_hi: i32) -> Option<u64> {
            // Map index imm_lo is fixed slot imm_lo; imm_hi is the offset into the value.
            (pseudo == 2).then(|| fixed_region_address(imm_lo as u32).unwrap() + imm_hi as u64)
        }
    }
    struct Host;
    impl HelperHost for Host {
        fn call(&mut self, _: u32, _: [u64; 5], _: &mut Memory<'_>) -> Result<u64, HelperError> {
            Err(HelperError::Unavailable)
        }
        fn prepare(&mut self, mem: &mut Memory<'_>) -> Result<(), HelperError> {
            mem.map_fixed(
                1,
                Region::owned(vec![0, 0, 0, 0, 9, 0, 0, 0], Access::ReadOnly),
            )?;
            Ok(())
        }
    }
    let slots = [
        RawInsn::new(0x18, 1, 2, 0, 1),
        RawInsn::new(0, 0, 0, 0, 4),
        RawInsn::new(0x61, 0, 1, 0, 0),
        RawInsn::new(0x95, 0, 0, 0, 0),
    ];
    let exe = Executable::new(&slots, HelperSet::default(), &mut Globals).unwrap();
    assert_eq!(
        Vm::new(Config::default()).run(&exe, &mut [], &mut Host),
        Ok(9)
    );
}

#[test]
fn stack_is_zeroed_between_runs() {
    let exe = load("ldxdw %r0, [%r10-8]\nstdw [%r10-8], 99\nexit").unwrap();
    let mut vm = Vm::new(Config::default());
    assert_eq!(vm.run(&exe, &mut [], &mut NoHelpers), Ok(0));
    assert_eq!(vm.run(&exe, &mut [], &mut NoHelpers), Ok(0));
}

#[test]
fn executables_are_shareable_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Executable>();
    fn sendable<T: Send>() {}
    sendable::<Vm>();
    let exe = std::sync::Arc::new(load("mov %r0, %r2\nexit").unwrap());
    let handles: Vec<_> = (0..4u8)
        .map(|n| {
            let exe = exe.clone();
            std::thread::spawn(move || {
                let mut ctx = vec![0u8; usize::from(n)];
                Vm::new(Config::default()).run(&exe, &mut ctx, &mut NoHelpers)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results, vec![Ok(0), Ok(1), Ok(2), Ok(3)]);
}
