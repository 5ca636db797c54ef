//! Random straight-line programs with forward branches, run on the interpreter and on the kernel
//! (the oracle) through `BPF_PROG_TEST_RUN`: every ALU32/ALU64 operation with register and
//! immediate operands (signed division and modulo, division by a zero register, shifts by
//! register values past the width), sign-extending moves, byte swaps and 32/64-bit conditional
//! jumps; and, in a second run, loads (zero- and sign-extending), stores and every atomic on
//! the input memory, whose final contents are folded into r0. The 64-bit r0 must agree. A fixed seed keeps runs reproducible; set
//! `BPFMAPS_DIFF_SEED` to explore others.
//!
//! Needs root with CAP_BPF; without it the test fails, unless `BPFMAPS_SKIP_KERNEL=1` is set.

use bpfmaps_abi::insn::{
    encode_program, AluOp, AtomicOp, Endian, Insn, JmpCond, Operand, RawInsn, Width,
};
use bpfmaps_kernel::prog::run_conformance;
use bpfmaps_vm::{Config, Executable, HelperSet, NoHelpers, NoPseudo, Vm};

/// xorshift64*: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    /// A 64-bit value biased towards edge cases.
    fn value(&mut self) -> u64 {
        match self.below(6) {
            0 => self.pick(&[
                0,
                1,
                u64::MAX,
                1 << 63,
                0x8000_0000,
                0xffff_ffff,
                0x7fff_ffff,
            ]),
            1 => self.below(64),
            2 => self.next() as u32 as i32 as i64 as u64,
            _ => self.next(),
        }
    }
}

const REGS: u8 = 6;
const BODY: usize = 24;
/// Bytes of input memory in [`Mode::Memory`].
const MEM_LEN: usize = 64;

/// What the generated programs touch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Registers r0-r5 only.
    Registers,
    /// Also loads, stores and atomics on the input memory through r1, which stays the pointer.
    Memory,
}

fn random_program(rng: &mut Rng, mode: Mode) -> Vec<Insn> {
    let regs: Vec<u8> = match mode {
        Mode::Registers => (0..REGS).collect(),
        Mode::Memory => [0, 2, 3, 4, 5].to_vec(),
    };
    let mut insns = Vec::new();
    for &reg in &regs {
        let value = rng.value();
        insns.push(Insn::LoadImm64 {
            dst: reg,
            pseudo: 0,
            imm_lo: value as u32 as i32,
            imm_hi: (value >> 32) as u32 as i32,
        });
    }
    let ops = [
        AluOp::Add,
        AluOp::Sub,
        AluOp::Mul,
        AluOp::Div,
        AluOp::SDiv,
        AluOp::Or,
        AluOp::And,
        AluOp::Lsh,
        AluOp::Rsh,
        AluOp::Mod,
        AluOp::SMod,
        AluOp::Xor,
        AluOp::Mov,
        AluOp::Arsh,
    ];
    let conds = [
        JmpCond::Eq,
        JmpCond::Gt,
        JmpCond::Ge,
        JmpCond::Set,
        JmpCond::Ne,
        JmpCond::Sgt,
        JmpCond::Sge,
        JmpCond::Lt,
        JmpCond::Le,
        JmpCond::Slt,
        JmpCond::Sle,
    ];
    for position in 0..BODY {
        let dst = rng.pick(&regs);
        let src_reg = rng.pick(&regs);
        let width = rng.pick(&[Width::W32, Width::W64]);
        let bits = if width == Width::W32 { 32 } else { 64 };
        let kinds = if mode == Mode::Memory { 14 } else { 10 };
        let insn = match rng.below(kinds) {
            0..=5 => {
                let op = rng.pick(&ops);
                let src = if rng.below(2) == 0 {
                    Operand::Reg(src_reg)
                } else {
                    let imm = match op {
                        // The verifier refuses constant shifts outside the width.
                        AluOp::Lsh | AluOp::Rsh | AluOp::Arsh => rng.below(bits) as i32,
                        // ... and division by a constant zero.
                        AluOp::Div | AluOp::SDiv | AluOp::Mod | AluOp::SMod => {
                            match rng.value() as i32 {
                                0 => -1,
                                imm => imm,
                            }
                        }
                        _ => rng.value() as i32,
                    };
                    Operand::Imm(imm)
                };
                Insn::Alu {
                    width,
                    op,
                    dst,
                    src,
                }
            }
            6 => Insn::Neg { width, dst },
            7 => {
                let bits = if width == Width::W32 {
                    rng.pick(&[8, 16])
                } else {
                    rng.pick(&[8, 16, 32])
                };
                Insn::MovSx {
                    width,
                    bits,
                    dst,
                    src: src_reg,
                }
            }
            8 => Insn::End {
                kind: rng.pick(&[Endian::Le, Endian::Be, Endian::Swap]),
                bits: rng.pick(&[16, 32, 64]),
                dst,
            },
            9 => {
                let remaining = (BODY - position) as u64;
                let src = if rng.below(2) == 0 {
                    Operand::Reg(src_reg)
                } else {
                    Operand::Imm(rng.value() as i32)
                };
                Insn::Jump {
                    width,
                    cond: rng.pick(&conds),
                    dst,
                    src,
                    offset: (1 + rng.below(remaining.min(4))) as i16,
                }
            }
            10 => {
                let size = rng.pick(&[1u8, 2, 4, 8]);
                Insn::Load {
                    size,
                    signed: size != 8 && rng.below(2) == 0,
                    dst,
                    src: 1,
                    off: mem_offset(rng, size),
                }
            }
            11 => {
                let size = rng.pick(&[1u8, 2, 4, 8]);
                Insn::Store {
                    size,
                    dst: 1,
                    off: mem_offset(rng, size),
                    src: Operand::Reg(src_reg),
                }
            }
            12 => {
                let size = rng.pick(&[1u8, 2, 4, 8]);
                let src = Operand::Imm(rng.value() as i32);
                Insn::Store {
                    size,
                    dst: 1,
                    off: mem_offset(rng, size),
                    src,
                }
            }
            _ => {
                let size = rng.pick(&[4u8, 8]);
                let fetch = rng.below(2) == 0;
                let op = rng.pick(&[
                    AtomicOp::Add { fetch },
                    AtomicOp::Or { fetch },
                    AtomicOp::And { fetch },
                    AtomicOp::Xor { fetch },
                    AtomicOp::Xchg,
                    AtomicOp::Cmpxchg,
                ]);
                Insn::Atomic {
                    size,
                    op,
                    dst: 1,
                    src: src_reg,
                    off: mem_offset(rng, size),
                }
            }
        };
        insns.push(insn);
    }
    let xor_into_r0 = |reg| Insn::Alu {
        width: Width::W64,
        op: AluOp::Xor,
        dst: 0,
        src: Operand::Reg(reg),
    };
    for &reg in regs.iter().filter(|&&reg| reg != 0) {
        insns.push(xor_into_r0(reg));
    }
    if mode == Mode::Memory {
        // Fold the memory in too, rotating so equal words do not cancel.
        for word in 0..(MEM_LEN / 8) as i16 {
            insns.push(Insn::Load {
                size: 8,
                signed: false,
                dst: 2,
                src: 1,
                off: word * 8,
            });
            insns.push(Insn::Alu {
                width: Width::W64,
                op: AluOp::Lsh,
                dst: 0,
                src: Operand::Imm(1),
            });
            insns.push(xor_into_r0(2));
        }
    }
    insns.push(Insn::Exit);
    insns
}

/// A random offset into the input memory, aligned to `size`.
fn mem_offset(rng: &mut Rng, size: u8) -> i16 {
    let slots = MEM_LEN as u64 / u64::from(size);
    (rng.below(slots) * u64::from(size)) as i16
}

fn differential(mode: Mode, default_seed: u64) {
    let probe = [
        RawInsn::new(0xb7, 0, 0, 0, 7),
        RawInsn::new(0x95, 0, 0, 0, 0),
    ];
    if let Err(error) = run_conformance(&probe, &[]) {
        if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
            eprintln!("skipping the kernel differential run: {error} (BPFMAPS_SKIP_KERNEL=1)");
            return;
        }
        panic!("the kernel differential run needs root with CAP_BPF: {error}; set BPFMAPS_SKIP_KERNEL=1 to skip");
    }
    let seed = std::env::var("BPFMAPS_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seed);
    let mut rng = Rng(seed | 1);
    let mut vm = Vm::new(Config::default());
    let mut failures = Vec::new();
    let mut results = std::collections::BTreeSet::new();
    const PROGRAMS: usize = 300;
    for case in 0..PROGRAMS {
        let insns = random_program(&mut rng, mode);
        let slots = encode_program(&insns);
        let exe = Executable::new(&slots, HelperSet::default(), &mut NoPseudo).expect("loads");
        let mem: Vec<u8> = match mode {
            Mode::Registers => Vec::new(),
            Mode::Memory => (0..MEM_LEN).map(|_| rng.next() as u8).collect(),
        };
        let ours = vm
            .run(&exe, &mut mem.clone(), &mut NoHelpers)
            .expect("runs");
        results.insert(ours);
        let listing = || exe.disassemble();
        match run_conformance(&slots, &mem) {
            Ok(kernel) if kernel.r0 == ours => {}
            Ok(kernel) => failures.push(format!(
                "case {case}: kernel {:#x}, interpreter {ours:#x}\n{}",
                kernel.r0,
                listing()
            )),
            Err(error) => failures.push(format!(
                "case {case}: kernel refused: {error}\n{}",
                listing()
            )),
        }
    }
    // The programs must exercise something: nearly every one computes a different value.
    assert!(
        results.len() > PROGRAMS * 9 / 10,
        "only {} distinct results",
        results.len()
    );
    assert!(
        failures.is_empty(),
        "seed {seed:#x}: {} of {PROGRAMS} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn random_alu_programs_agree_with_the_kernel() {
    differential(Mode::Registers, 0x5eed_b9f0);
}

#[test]
fn random_memory_and_atomic_programs_agree_with_the_kernel() {
    differential(Mode::Memory, 0x6d65_6d00);
}
