//! The interpreter: [`Vm`] (per-run state: the stack, call frames, counters) runs an
//! [`Executable`] over a [`Memory`] with a [`HelperHost`]. It implements the whole ISA v4
//! (RFC 9669) with the kernel's semantics: division by zero gives 0, modulo by zero leaves dst
//! unchanged, shift counts are masked to the operand width, 32-bit results are zero-extended,
//! signed division truncates toward zero with `INT_MIN / -1 == INT_MIN`.
//!
//! The hot loop dispatches on the pre-decoded opcode byte; registers live in a 16-entry array
//! indexed by a 4-bit mask (no bounds check), and every memory access goes through
//! [`Memory`]'s checks. Nothing allocates per instruction.

use crate::error::{HelperError, Trap};
use crate::helper::{Callbacks, HelperHost};
use crate::memory::{Access, Memory, Region, CONTEXT_BASE, STACK_BASE};
use crate::program::{Executable, Op, POISONED_SRC};

/// How a [`Vm`] runs programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most instructions one run may execute before [`Trap::BudgetExhausted`].
    pub instruction_budget: u64,
    /// Bytes of stack per call frame (the kernel's is 512).
    pub stack_size: usize,
    /// Most call frames, the entry frame included (the kernel allows 8).
    pub max_call_depth: usize,
    /// Whether the program may write its context.
    pub context_access: Access,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instruction_budget: 1_000_000,
            stack_size: 512,
            max_call_depth: 8,
            context_access: Access::ReadWrite,
        }
    }
}

/// A caller's state saved by a local call: where to return, its r6-r9 and frame pointer.
#[derive(Clone, Copy, Debug)]
struct Frame {
    return_pc: usize,
    saved: [u64; 4],
    frame_pointer: u64,
}

/// Per-run interpreter state; reuse one per thread to avoid reallocating the stack.
#[derive(Debug)]
pub struct Vm {
    config: Config,
    stack: Vec<u8>,
    frames: Vec<Frame>,
    executed: u64,
}

/// Register file size: r0-r10 padded to 16 so a 4-bit index needs no bounds check.
const REGS: usize = 16;

#[inline(always)]
fn reg(index: u8) -> usize {
    usize::from(index & 0x0f)
}

impl Vm {
    /// A VM with the given configuration.
    pub fn new(config: Config) -> Self {
        let stack_len = config
            .stack_size
            .saturating_mul(config.max_call_depth.max(1));
        Vm {
            stack: vec![0; stack_len],
            frames: Vec::with_capacity(config.max_call_depth),
            executed: 0,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of instructions the last run executed.
    pub fn instructions_executed(&self) -> u64 {
        self.executed
    }

    /// Runs `exe` on `context` (mapped at [`CONTEXT_BASE`] with the configured access) and returns
    /// r0. At entry r1 holds the context's address, r2 its length (the conformance suite's
    /// convention; kernel program types only define r1), r10 the frame pointer.
    pub fn run<H: HelperHost + ?Sized>(
        &mut self,
        exe: &Executable,
        context: &mut [u8],
        host: &mut H,
    ) -> Result<u64, Trap> {
        let len = context.len() as u64;
        let region = Region::borrowed(context, self.config.context_access);
        self.run_region(exe, region, len, host)
    }

    /// Like [`Vm::run`] with a context the program may only read.
    pub fn run_read_only<H: HelperHost + ?Sized>(
        &mut self,
        exe: &Executable,
        context: &[u8],
        host: &mut H,
    ) -> Result<u64, Trap> {
        let len = context.len() as u64;
        self.run_region(exe, Region::borrowed_read_only(context), len, host)
    }

    fn run_region<H: HelperHost + ?Sized>(
        &mut self,
        exe: &Executable,
        context: Region<'_>,
        context_len: u64,
        host: &mut H,
    ) -> Result<u64, Trap> {
        let stack_size = self.config.stack_size as u64;
        let mut mem = Memory::new(&mut self.stack, context);
        mem.set_stack_len(stack_size);
        mem.zero_stack(0, stack_size);
        host.prepare(&mut mem)
            .map_err(|error| Trap::Prepare { error })?;
        self.frames.clear();
        let mut regs = [0u64; REGS];
        regs[1] = CONTEXT_BASE;
        regs[2] = context_len;
        regs[10] = STACK_BASE + stack_size;
        let budget = self.config.instruction_budget;
        let mut run = Run {
            ops: &exe.ops,
            exe,
            config: &self.config,
            frames: &mut self.frames,
            remaining: budget,
        };
        let result = run.execute(&mut mem, &mut regs, host, 0, 0);
        self.executed = budget - run.remaining;
        result
    }
}

/// One run's state, borrowed from the [`Vm`]. The memory and registers are passed to
/// [`Run::execute`] separately, so that a helper holding the memory can run a callback through
/// the same `Run` ([`Callbacks`]).
struct Run<'r> {
    ops: &'r [Op],
    exe: &'r Executable,
    config: &'r Config,
    frames: &'r mut Vec<Frame>,
    /// Instructions left in the budget, shared by the program and its callbacks.
    remaining: u64,
}

impl Run<'_> {
    fn call_helper<H: HelperHost + ?Sized>(
        &mut self,
        pc: usize,
        id: u32,
        mem: &mut Memory<'_>,
        regs: &mut [u64; REGS],
        host: &mut H,
    ) -> Result<(), Trap> {
        let args = [regs[1], regs[2], regs[3], regs[4], regs[5]];
        let value = host
            .call_with_callbacks(id, args, mem, self)
            .map_err(|error| match error {
                HelperError::CallbackTrapped(trap) => *trap,
                error => Trap::Helper { pc, id, error },
            })?;
        regs[0] = value;
        Ok(())
    }

    #[inline(never)]
    fn call_local(
        &mut self,
        pc: usize,
        return_pc: usize,
        mem: &mut Memory<'_>,
        r: &mut [u64; REGS],
    ) -> Result<(), Trap> {
        let max = self.config.max_call_depth;
        if self.frames.len() + 1 >= max {
            return Err(Trap::CallDepthExceeded { pc, max });
        }
        self.frames.push(Frame {
            return_pc,
            saved: [r[6], r[7], r[8], r[9]],
            frame_pointer: r[10],
        });
        let stack_size = self.config.stack_size as u64;
        let depth = self.frames.len() as u64;
        r[10] = r[10].wrapping_add(stack_size);
        mem.set_stack_len((depth + 1) * stack_size);
        mem.zero_stack(depth * stack_size, stack_size);
        Ok(())
    }

    /// Runs from slot `start` until an `exit` with `base_depth` call frames (0: the program's
    /// own exit; a callback's depth: its return), and returns r0.
    fn execute<H: HelperHost + ?Sized>(
        &mut self,
        mem: &mut Memory<'_>,
        regs: &mut [u64; REGS],
        host: &mut H,
        start: usize,
        base_depth: usize,
    ) -> Result<u64, Trap> {
        let ops = self.ops;
        let budget = self.config.instruction_budget;
        let mut remaining = self.remaining;
        let mut pc: usize = start;
        // Ends the run with a trap, recording how many instructions ran.
        macro_rules! tri {
            ($result:expr) => {
                match $result {
                    Ok(value) => value,
                    Err(trap) => {
                        self.remaining = remaining;
                        return Err(trap);
                    }
                }
            };
        }
        macro_rules! mem {
            ($result:expr, $pc:expr) => {
                tri!($result.map_err(|fault| Trap::Memory { pc: $pc, fault }))
            };
        }
        loop {
            if remaining == 0 {
                self.remaining = 0;
                return Err(Trap::BudgetExhausted { pc, budget });
            }
            remaining -= 1;
            // The load-time checks guarantee pc is in range: every jump target is, and the last
            // instruction never falls through. The bounds check stays as a backstop.
            let op = &ops[pc];
            let cur = pc;
            pc += 1;
            let r = &mut *regs;
            let d = reg(op.dst);
            let s = reg(op.src);
            let imm = op.imm;
            macro_rules! jump_if {
                ($cond:expr) => {
                    if $cond {
                        pc = op.target as usize;
                    }
                };
            }
            macro_rules! addr {
                ($base:expr) => {
                    r[$base].wrapping_add(op.off as i64 as u64)
                };
            }
            match op.code {
                // ALU64, immediate and register forms.
                0x07 => r[d] = r[d].wrapping_add(imm),
                0x0f => r[d] = r[d].wrapping_add(r[s]),
                0x17 => r[d] = r[d].wrapping_sub(imm),
                0x1f => r[d] = r[d].wrapping_sub(r[s]),
                0x27 => r[d] = r[d].wrapping_mul(imm),
                0x2f => r[d] = r[d].wrapping_mul(r[s]),
                0x37 => r[d] = div64(r[d], imm, op.off),
                0x3f => r[d] = div64(r[d], r[s], op.off),
                0x47 => r[d] |= imm,
                0x4f => r[d] |= r[s],
                0x57 => r[d] &= imm,
                0x5f => r[d] &= r[s],
                0x67 => r[d] <<= imm & 63,
                0x6f => r[d] <<= r[s] & 63,
                0x77 => r[d] >>= imm & 63,
                0x7f => r[d] >>= r[s] & 63,
                0x87 => r[d] = (r[d] as i64).wrapping_neg() as u64,
                0x97 => r[d] = mod64(r[d], imm, op.off),
                0x9f => r[d] = mod64(r[d], r[s], op.off),
                0xa7 => r[d] ^= imm,
                0xaf => r[d] ^= r[s],
                0xb7 => r[d] = imm,
                0xbf => {
                    r[d] = match op.off {
                        8 => r[s] as i8 as i64 as u64,
                        16 => r[s] as i16 as i64 as u64,
                        32 => r[s] as i32 as i64 as u64,
                        _ => r[s],
                    }
                }
                0xc7 => r[d] = ((r[d] as i64) >> (imm & 63)) as u64,
                0xcf => r[d] = ((r[d] as i64) >> (r[s] & 63)) as u64,
                0xd7 => {
                    r[d] = match imm {
                        16 => u64::from((r[d] as u16).swap_bytes()),
                        32 => u64::from((r[d] as u32).swap_bytes()),
                        _ => r[d].swap_bytes(),
                    }
                }

                // ALU32: operands truncated to 32 bits, results zero-extended.
                0x04 => r[d] = u64::from((r[d] as u32).wrapping_add(imm as u32)),
                0x0c => r[d] = u64::from((r[d] as u32).wrapping_add(r[s] as u32)),
                0x14 => r[d] = u64::from((r[d] as u32).wrapping_sub(imm as u32)),
                0x1c => r[d] = u64::from((r[d] as u32).wrapping_sub(r[s] as u32)),
                0x24 => r[d] = u64::from((r[d] as u32).wrapping_mul(imm as u32)),
                0x2c => r[d] = u64::from((r[d] as u32).wrapping_mul(r[s] as u32)),
                0x34 => r[d] = u64::from(div32(r[d] as u32, imm as u32, op.off)),
                0x3c => r[d] = u64::from(div32(r[d] as u32, r[s] as u32, op.off)),
                0x44 => r[d] = u64::from(r[d] as u32 | imm as u32),
                0x4c => r[d] = u64::from(r[d] as u32 | r[s] as u32),
                0x54 => r[d] = u64::from(r[d] as u32 & imm as u32),
                0x5c => r[d] = u64::from(r[d] as u32 & r[s] as u32),
                0x64 => r[d] = u64::from((r[d] as u32) << (imm & 31)),
                0x6c => r[d] = u64::from((r[d] as u32) << (r[s] & 31)),
                0x74 => r[d] = u64::from((r[d] as u32) >> (imm & 31)),
                0x7c => r[d] = u64::from((r[d] as u32) >> (r[s] & 31)),
                0x84 => r[d] = u64::from((r[d] as i32).wrapping_neg() as u32),
                0x94 => r[d] = u64::from(mod32(r[d] as u32, imm as u32, op.off)),
                0x9c => r[d] = u64::from(mod32(r[d] as u32, r[s] as u32, op.off)),
                0xa4 => r[d] = u64::from(r[d] as u32 ^ imm as u32),
                0xac => r[d] = u64::from(r[d] as u32 ^ r[s] as u32),
                0xb4 => r[d] = u64::from(imm as u32),
                0xbc => {
                    r[d] = u64::from(match op.off {
                        8 => r[s] as i8 as i32 as u32,
                        16 => r[s] as i16 as i32 as u32,
                        _ => r[s] as u32,
                    })
                }
                0xc4 => r[d] = u64::from(((r[d] as i32) >> (imm & 31)) as u32),
                0xcc => r[d] = u64::from(((r[d] as i32) >> (r[s] & 31)) as u32),
                0xd4 => {
                    r[d] = match imm {
                        16 => u64::from((r[d] as u16).to_le()),
                        32 => u64::from((r[d] as u32).to_le()),
                        _ => r[d].to_le(),
                    }
                }
                0xdc => {
                    r[d] = match imm {
                        16 => u64::from((r[d] as u16).to_be()),
                        32 => u64::from((r[d] as u32).to_be()),
                        _ => r[d].to_be(),
                    }
                }

                // Loads.
                0x61 => r[d] = mem!(mem.load::<4>(addr!(s)), cur),
                0x69 => r[d] = mem!(mem.load::<2>(addr!(s)), cur),
                0x71 => r[d] = mem!(mem.load::<1>(addr!(s)), cur),
                0x79 => r[d] = mem!(mem.load::<8>(addr!(s)), cur),
                0x81 => {
                    let value = mem!(mem.load::<4>(addr!(s)), cur);
                    r[d] = value as u32 as i32 as i64 as u64;
                }
                0x89 => {
                    let value = mem!(mem.load::<2>(addr!(s)), cur);
                    r[d] = value as u16 as i16 as i64 as u64;
                }
                0x91 => {
                    let value = mem!(mem.load::<1>(addr!(s)), cur);
                    r[d] = value as u8 as i8 as i64 as u64;
                }

                // Stores of an immediate and of a register.
                0x62 => mem!(mem.store::<4>(addr!(d), imm), cur),
                0x6a => mem!(mem.store::<2>(addr!(d), imm), cur),
                0x72 => mem!(mem.store::<1>(addr!(d), imm), cur),
                0x7a => mem!(mem.store::<8>(addr!(d), imm), cur),
                0x63 => mem!(mem.store::<4>(addr!(d), r[s]), cur),
                0x6b => mem!(mem.store::<2>(addr!(d), r[s]), cur),
                0x73 => mem!(mem.store::<1>(addr!(d), r[s]), cur),
                0x7b => mem!(mem.store::<8>(addr!(d), r[s]), cur),

                // Atomics.
                0xc3 => tri!(Self::atomic(mem, regs, cur, *op, 4)),
                0xdb => tri!(Self::atomic(mem, regs, cur, *op, 8)),

                // lddw: the value was joined (and pseudo values resolved) at load time.
                0x18 => {
                    r[d] = imm;
                    pc += 1;
                }

                // JMP: 64-bit comparisons, immediates sign-extended.
                0x05 => pc = op.target as usize,
                0x15 => jump_if!(r[d] == imm),
                0x1d => jump_if!(r[d] == r[s]),
                0x25 => jump_if!(r[d] > imm),
                0x2d => jump_if!(r[d] > r[s]),
                0x35 => jump_if!(r[d] >= imm),
                0x3d => jump_if!(r[d] >= r[s]),
                0x45 => jump_if!(r[d] & imm != 0),
                0x4d => jump_if!(r[d] & r[s] != 0),
                0x55 => jump_if!(r[d] != imm),
                0x5d => jump_if!(r[d] != r[s]),
                0x65 => jump_if!((r[d] as i64) > (imm as i64)),
                0x6d => jump_if!((r[d] as i64) > (r[s] as i64)),
                0x75 => jump_if!((r[d] as i64) >= (imm as i64)),
                0x7d => jump_if!((r[d] as i64) >= (r[s] as i64)),
                0xa5 => jump_if!(r[d] < imm),
                0xad => jump_if!(r[d] < r[s]),
                0xb5 => jump_if!(r[d] <= imm),
                0xbd => jump_if!(r[d] <= r[s]),
                0xc5 => jump_if!((r[d] as i64) < (imm as i64)),
                0xcd => jump_if!((r[d] as i64) < (r[s] as i64)),
                0xd5 => jump_if!((r[d] as i64) <= (imm as i64)),
                0xdd => jump_if!((r[d] as i64) <= (r[s] as i64)),

                // JMP32: comparisons of the low halves.
                0x06 => pc = op.target as usize,
                0x16 => jump_if!(r[d] as u32 == imm as u32),
                0x1e => jump_if!(r[d] as u32 == r[s] as u32),
                0x26 => jump_if!(r[d] as u32 > imm as u32),
                0x2e => jump_if!(r[d] as u32 > r[s] as u32),
                0x36 => jump_if!(r[d] as u32 >= imm as u32),
                0x3e => jump_if!(r[d] as u32 >= r[s] as u32),
                0x46 => jump_if!(r[d] as u32 & imm as u32 != 0),
                0x4e => jump_if!(r[d] as u32 & r[s] as u32 != 0),
                0x56 => jump_if!(r[d] as u32 != imm as u32),
                0x5e => jump_if!(r[d] as u32 != r[s] as u32),
                0x66 => jump_if!((r[d] as i32) > (imm as i32)),
                0x6e => jump_if!((r[d] as i32) > (r[s] as i32)),
                0x76 => jump_if!((r[d] as i32) >= (imm as i32)),
                0x7e => jump_if!((r[d] as i32) >= (r[s] as i32)),
                0xa6 => jump_if!((r[d] as u32) < imm as u32),
                0xae => jump_if!((r[d] as u32) < r[s] as u32),
                0xb6 => jump_if!(r[d] as u32 <= imm as u32),
                0xbe => jump_if!(r[d] as u32 <= r[s] as u32),
                0xc6 => jump_if!((r[d] as i32) < (imm as i32)),
                0xce => jump_if!((r[d] as i32) < (r[s] as i32)),
                0xd6 => jump_if!((r[d] as i32) <= (imm as i32)),
                0xde => jump_if!((r[d] as i32) <= (r[s] as i32)),

                // Calls and exit.
                0x85 => {
                    if op.src == 0 {
                        self.remaining = remaining;
                        tri!(self.call_helper(cur, imm as u32, mem, regs, host));
                        remaining = self.remaining;
                    } else if op.src == POISONED_SRC {
                        let note = self.exe.poison_note(cur).unwrap_or("").to_owned();
                        tri!(Err(Trap::Poisoned { pc: cur, note }));
                    } else {
                        tri!(self.call_local(cur, pc, mem, regs));
                        pc = op.target as usize;
                    }
                }
                0x8d => {
                    let id = r[d];
                    match u32::try_from(id) {
                        Ok(id) if self.exe.helpers().contains(id) => {
                            self.remaining = remaining;
                            tri!(self.call_helper(cur, id, mem, regs, host));
                            remaining = self.remaining;
                        }
                        _ => tri!(Err(Trap::UnknownHelper { pc: cur, id })),
                    }
                }
                0x95 => match (self.frames.len() > base_depth)
                    .then(|| self.frames.pop())
                    .flatten()
                {
                    None => {
                        self.remaining = remaining;
                        return Ok(r[0]);
                    }
                    Some(frame) => {
                        r[6..10].copy_from_slice(&frame.saved);
                        r[10] = frame.frame_pointer;
                        pc = frame.return_pc;
                        let stack_size = self.config.stack_size as u64;
                        let depth = self.frames.len() as u64;
                        mem.set_stack_len((depth + 1) * stack_size);
                    }
                },

                // The load-time checks admit no other opcode (the second slot of an lddw is
                // skipped, never executed).
                _ => tri!(Err(Trap::IllegalInstruction { pc: cur })),
            }
        }
    }

    #[inline(never)]
    fn atomic(
        mem: &mut Memory<'_>,
        regs: &mut [u64; REGS],
        pc: usize,
        op: Op,
        size: u8,
    ) -> Result<(), Trap> {
        use bpfmaps_abi::insn::atomic_op;
        let d = reg(op.dst);
        let s = reg(op.src);
        let addr = regs[d].wrapping_add(op.off as i64 as u64);
        let src = regs[s];
        let mask = if size == 4 {
            u64::from(u32::MAX)
        } else {
            u64::MAX
        };
        let code = op.imm as i32;
        let old = match code & !atomic_op::FETCH {
            atomic_op::ADD => mem.atomic_update(addr, size, &mut |old| old.wrapping_add(src)),
            atomic_op::OR => mem.atomic_update(addr, size, &mut |old| old | src),
            atomic_op::AND => mem.atomic_update(addr, size, &mut |old| old & src),
            atomic_op::XOR => mem.atomic_update(addr, size, &mut |old| old ^ src),
            _ if code == atomic_op::XCHG => mem.atomic_update(addr, size, &mut |_| src),
            _ => {
                let expected = regs[0] & mask;
                let old = mem.atomic_update(addr, size, &mut |old| {
                    if old & mask == expected {
                        src
                    } else {
                        old
                    }
                });
                let old = old.map_err(|fault| Trap::Memory { pc, fault })?;
                regs[0] = old & mask;
                return Ok(());
            }
        }
        .map_err(|fault| Trap::Memory { pc, fault })?;
        if code & atomic_op::FETCH != 0 {
            regs[s] = old & mask;
        }
        Ok(())
    }
}

#[inline(always)]
fn div64(dividend: u64, divisor: u64, signed: i16) -> u64 {
    if divisor == 0 {
        0
    } else if signed == 0 {
        dividend / divisor
    } else {
        (dividend as i64).wrapping_div(divisor as i64) as u64
    }
}

#[inline(always)]
fn mod64(dividend: u64, divisor: u64, signed: i16) -> u64 {
    if divisor == 0 {
        dividend
    } else if signed == 0 {
        dividend % divisor
    } else {
        (dividend as i64).wrapping_rem(divisor as i64) as u64
    }
}

#[inline(always)]
fn div32(dividend: u32, divisor: u32, signed: i16) -> u32 {
    if divisor == 0 {
        0
    } else if signed == 0 {
        dividend / divisor
    } else {
        (dividend as i32).wrapping_div(divisor as i32) as u32
    }
}

#[inline(always)]
fn mod32(dividend: u32, divisor: u32, signed: i16) -> u32 {
    if divisor == 0 {
        dividend
    } else if signed == 0 {
        dividend % divisor
    } else {
        (dividend as i32).wrapping_rem(divisor as i32) as u32
    }
}

impl Callbacks for Run<'_> {
    fn invoke(
        &mut self,
        host: &mut dyn HelperHost,
        mem: &mut Memory<'_>,
        callback: u64,
        arg: u8,
        args: [u64; 5],
    ) -> Result<u64, HelperError> {
        let target = self
            .exe
            .callback_target(callback)
            .ok_or(HelperError::InvalidArgument {
                arg,
                reason: "not a callback function of this program",
            })?;
        let max = self.config.max_call_depth;
        if self.frames.len() + 1 >= max {
            return Err(HelperError::CallbackTrapped(Box::new(
                Trap::CallDepthExceeded { pc: target, max },
            )));
        }
        // A marker frame: the callback's `exit` at this depth returns here instead of popping.
        self.frames.push(Frame {
            return_pc: target,
            saved: [0; 4],
            frame_pointer: 0,
        });
        let stack_size = self.config.stack_size as u64;
        let depth = self.frames.len();
        mem.set_stack_len((depth as u64 + 1) * stack_size);
        mem.zero_stack(depth as u64 * stack_size, stack_size);
        let mut regs = [0u64; REGS];
        regs[1..6].copy_from_slice(&args);
        regs[10] = STACK_BASE + (depth as u64 + 1) * stack_size;
        let result = self.execute(mem, &mut regs, host, target, depth);
        self.frames.pop();
        mem.set_stack_len(depth as u64 * stack_size);
        result.map_err(|trap| HelperError::CallbackTrapped(Box::new(trap)))
    }
}
