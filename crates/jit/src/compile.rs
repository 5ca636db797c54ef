//! The compiler: one Cranelift function per program, from the executable's pre-decoded slots.
//!
//! Registers r0-r10 and the remaining budget are Cranelift variables (machine registers after
//! allocation). The program is cut into blocks at every jump target, callback entry and return
//! site, and after every jump, call, exit and instruction that may trap (a checked memory
//! access, an atomic); each block first charges its instruction count to the budget, so a run
//! that runs out stops at exactly the interpreter's instruction (only a block's last instruction
//! can trap, and the budget is charged before it runs). Local calls keep a frame stack in the run
//! context and return through a jump table of return sites; callbacks enter the same function
//! through its entry jump table.

use std::collections::BTreeSet;

use bpfmaps_vm::memory::{STACK_BASE, STACK_REGION};
use bpfmaps_vm::{Config, Executable, Op};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I16, I32, I64, I8};
use cranelift_codegen::ir::{
    AbiParam, Block, BlockArg, Endianness, InstBuilder, JumpTableData, MemFlagsData, SigRef,
    Signature, Type, Value,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};

use crate::exec::{offsets, trampolines, EntryFn, Trampolines, TABLE_LEN, TRAP_BUDGET};

/// Why a program could not be compiled (the runtime then runs it on the interpreter).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Cranelift has no native backend for this host, or refused its flags.
    #[error("no native code generator for this host: {0}")]
    Host(String),
    /// Cranelift failed to compile or link the function.
    #[error("code generation failed: {0}")]
    Codegen(String),
    /// The configuration cannot be compiled (a stack frame larger than the 4 GiB stack region).
    #[error("unsupported configuration: {0}")]
    Config(&'static str),
}

/// Compiled code and the module that owns its memory.
pub(crate) struct Code {
    pub entry: EntryFn,
    pub size: usize,
    /// Callback slots in entry order (entry `i + 1` starts at `callbacks[i]`).
    callbacks: Vec<usize>,
    module: Option<JITModule>,
}

// SAFETY: after `finalize_definitions` the module is never used again except to free its
// memory on drop; the code it owns is immutable, and the entry pointer is a plain function that
// keeps all of a run's state in the context it is given, so calling it from many threads at once
// is safe.
unsafe impl Send for Code {}
// SAFETY: see `Send`: shared access only ever reads `entry`, `size` and `callbacks`.
unsafe impl Sync for Code {}

impl Drop for Code {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: no code of this module can be running: every run borrows the
            // `JitProgram` owning this `Code`, and the entry pointer is not handed out.
            unsafe { module.free_memory() };
        }
    }
}

impl Code {
    /// The entry index of callback slot `target` (checked by the executable to be one).
    pub fn entry_of(&self, target: usize) -> u64 {
        self.callbacks
            .iter()
            .position(|&slot| slot == target)
            .map_or(0, |index| index as u64 + 1)
    }
}

/// Whether `op` may trap or leave the block (so a new block starts after it).
fn ends_block(op: &Op, stack_size: i64) -> bool {
    match op.code {
        // Jumps, calls, exit.
        0x05 | 0x06 | 0x85 | 0x8d | 0x95 => true,
        code if code & 0x07 == 0x05 || code & 0x07 == 0x06 => true,
        // Atomics always take the trampoline.
        0xc3 | 0xdb => true,
        code if is_load(code) => !elided(op.src, op.off, width(code), stack_size),
        code if is_store(code) => !elided(op.dst, op.off, width(code), stack_size),
        _ => false,
    }
}

fn is_load(code: u8) -> bool {
    matches!(code, 0x61 | 0x69 | 0x71 | 0x79 | 0x81 | 0x89 | 0x91)
}

fn is_store(code: u8) -> bool {
    matches!(code, 0x62 | 0x6a | 0x72 | 0x7a | 0x63 | 0x6b | 0x73 | 0x7b)
}

fn width(code: u8) -> i64 {
    match code & 0x18 {
        0x00 => 4,
        0x08 => 2,
        0x10 => 1,
        _ => 8,
    }
}

/// An access `[r10 + off, r10 + off + width)` inside the current frame: provably in bounds of
/// the stack region (r10 is read-only and always the current frame's end, and the frames in use
/// are accessible), so it needs no check.
fn elided(base: u8, off: i16, width: i64, stack_size: i64) -> bool {
    let off = i64::from(off);
    base == 10 && off >= -stack_size && off + width <= 0
}

struct Sigs {
    load: SigRef,
    store: SigRef,
    atomic: SigRef,
    helper: SigRef,
    push_frame: SigRef,
    pop_frame: SigRef,
}

fn signature(module: &JITModule, params: usize, returns: bool) -> Signature {
    let mut sig = module.make_signature();
    for _ in 0..params {
        sig.params.push(AbiParam::new(I64));
    }
    if returns {
        sig.returns.push(AbiParam::new(I64));
    }
    sig
}

pub(crate) fn compile(exe: &Executable, config: &Config) -> Result<Code, CompileError> {
    if config.stack_size as u64 >= (1 << 31) {
        return Err(CompileError::Config("stack frames of 2 GiB or more"));
    }
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, name: &str, value: &str| {
        flags
            .set(name, value)
            .map_err(|error| CompileError::Host(error.to_string()))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "enable_verifier", "false")?;
    set(&mut flags, "is_pic", "false")?;
    let isa = cranelift_native::builder()
        .map_err(|error| CompileError::Host(error.to_string()))?
        .finish(settings::Flags::new(flags))
        .map_err(|error| CompileError::Host(error.to_string()))?;
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let codegen = |error: &dyn std::fmt::Display| CompileError::Codegen(error.to_string());

    let mut ctx = module.make_context();
    ctx.func.signature = signature(&module, 9, true);
    let func_id = module
        .declare_function("bpf_program", Linkage::Local, &ctx.func.signature)
        .map_err(|e| codegen(&e))?;
    let callbacks: Vec<usize> = exe.callback_slots().collect();
    let mut builder_ctx = FunctionBuilderContext::new();
    {
        let mut builder = FunctionBuilder::new(&mut ctx.func, &mut builder_ctx);
        let sigs = Sigs {
            load: builder.import_signature(signature(&module, 4, true)),
            store: builder.import_signature(signature(&module, 5, false)),
            atomic: builder.import_signature(signature(&module, 5, true)),
            helper: builder.import_signature(signature(&module, 9, true)),
            push_frame: builder.import_signature(signature(&module, 8, false)),
            pop_frame: builder.import_signature(signature(&module, 1, true)),
        };
        let mut translator = Translator::new(&mut builder, exe, config, sigs, &callbacks);
        translator.translate();
        builder.seal_all_blocks();
        builder.finalize(module.isa().frontend_config());
    }
    module
        .define_function(func_id, &mut ctx)
        .map_err(|e| codegen(&e))?;
    let size = ctx
        .compiled_code()
        .map_or(0, |code| code.code_buffer().len());
    module.clear_context(&mut ctx);
    module.finalize_definitions().map_err(|e| codegen(&e))?;
    let pointer = module.get_finalized_function(func_id);
    // SAFETY: the function was declared with `EntryFn`'s signature (nine i64 parameters, one
    // i64 result, the host's default calling convention, which is `extern "C"`), and its code is
    // finalized (executable) and owned by `module`, which `Code` keeps alive.
    let entry = unsafe { std::mem::transmute::<*const u8, EntryFn>(pointer) };
    Ok(Code {
        entry,
        size,
        callbacks,
        module: Some(module),
    })
}

/// Memory flags for guest accesses (host addresses proven in bounds by the inline check).
fn guest_flags() -> MemFlagsData {
    MemFlagsData::new()
        .with_notrap()
        .with_endianness(Endianness::Little)
}

/// Memory flags for the run context (aligned, always valid).
fn ctx_flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

struct Translator<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    ops: &'a [Op],
    config: &'a Config,
    sigs: Sigs,
    tramps: Trampolines,
    callbacks: &'a [usize],
    regs: [Variable; 11],
    remaining: Variable,
    /// The host address of the stack region's byte 0 (reloaded after trampolines).
    stack_host: Variable,
    ctx: Value,
    base_depth: Value,
    /// Block of each leader slot (`None` inside blocks).
    blocks: Vec<Option<Block>>,
    /// Number of instructions in the block starting at each leader.
    block_len: Vec<u64>,
    /// Return sites (slot after each local call), in site order.
    return_sites: Vec<usize>,
    budget_fail: Block,
    trap_exit: Block,
    exit_dispatch: Block,
}

impl<'a, 'b> Translator<'a, 'b> {
    fn new(
        b: &'a mut FunctionBuilder<'b>,
        exe: &'a Executable,
        config: &'a Config,
        sigs: Sigs,
        callbacks: &'a [usize],
    ) -> Self {
        let ops = exe.ops();
        let stack_size = config.stack_size as i64;
        // Leaders.
        let mut leaders = BTreeSet::new();
        leaders.insert(0usize);
        leaders.extend(callbacks.iter().copied());
        let mut return_sites = Vec::new();
        let mut pc = 0;
        while pc < ops.len() {
            let op = &ops[pc];
            let next = pc + if op.code == 0x18 { 2 } else { 1 };
            let is_jump = (op.code & 0x07 == 0x05 || op.code & 0x07 == 0x06)
                && !matches!(op.code, 0x85 | 0x8d | 0x95);
            if is_jump {
                leaders.insert(op.target as usize);
            }
            if op.code == 0x85 && op.src != 0 {
                leaders.insert(op.target as usize);
                return_sites.push(next);
            }
            if ends_block(op, stack_size) && next < ops.len() {
                leaders.insert(next);
            }
            pc = next;
        }
        let mut blocks = vec![None; ops.len()];
        let mut block_len = vec![0u64; ops.len()];
        for &leader in &leaders {
            blocks[leader] = Some(b.create_block());
        }
        let mut pc = 0;
        let mut current = 0;
        while pc < ops.len() {
            if blocks[pc].is_some() {
                current = pc;
            }
            block_len[current] += 1;
            pc += if ops[pc].code == 0x18 { 2 } else { 1 };
        }
        let regs = std::array::from_fn(|_| b.declare_var(I64));
        let remaining = b.declare_var(I64);
        let stack_host = b.declare_var(I64);
        let budget_fail = b.create_block();
        b.append_block_param(budget_fail, I64);
        b.append_block_param(budget_fail, I64);
        let trap_exit = b.create_block();
        let exit_dispatch = b.create_block();
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let params = b.block_params(entry).to_vec();
        let ctx = params[0];
        let base_depth = params[2];
        Translator {
            b,
            ops,
            config,
            sigs,
            tramps: trampolines(),
            callbacks,
            regs,
            remaining,
            stack_host,
            ctx,
            base_depth,
            blocks,
            block_len,
            return_sites,
            budget_fail,
            trap_exit,
            exit_dispatch,
        }
        .with_entry(params)
    }

    fn with_entry(mut self, params: Vec<Value>) -> Self {
        let zero = self.b.ins().iconst(I64, 0);
        for reg in [0, 6, 7, 8, 9] {
            self.b.def_var(self.regs[reg], zero);
        }
        for (reg, &value) in (1..=5).zip(&params[3..8]) {
            self.b.def_var(self.regs[reg], value);
        }
        self.b.def_var(self.regs[10], params[8]);
        let remaining = self.load_ctx(offsets::REMAINING);
        self.b.def_var(self.remaining, remaining);
        self.reload_stack_host();
        // Entry dispatch: 0 = slot 0, i = callback i - 1.
        let main = self.blocks[0].expect("slot 0 is a leader");
        let default = self.b.func.dfg.block_call(main, &[]);
        let mut targets = vec![default];
        for &slot in self.callbacks {
            let block = self.blocks[slot].expect("callbacks are leaders");
            targets.push(self.b.func.dfg.block_call(block, &[]));
        }
        let table = self
            .b
            .create_jump_table(JumpTableData::new(default, &targets));
        let index = self.b.ins().ireduce(I32, params[1]);
        self.b.ins().br_table(index, table);
        self
    }

    fn load_ctx(&mut self, offset: i32) -> Value {
        self.b.ins().load(I64, ctx_flags(), self.ctx, offset)
    }

    fn store_ctx(&mut self, value: Value, offset: i32) {
        self.b.ins().store(ctx_flags(), value, self.ctx, offset);
    }

    fn reload_stack_host(&mut self) {
        let offset = offsets::TABLE
            + (i64::from(STACK_REGION) * offsets::ENTRY_SIZE) as i32
            + offsets::ENTRY_BASE;
        let base = self.load_ctx(offset);
        self.b.def_var(self.stack_host, base);
    }

    fn reg(&mut self, index: u8) -> Value {
        self.b.use_var(self.regs[usize::from(index & 0x0f).min(10)])
    }

    fn set(&mut self, index: u8, value: Value) {
        self.b
            .def_var(self.regs[usize::from(index & 0x0f).min(10)], value);
    }

    fn iconst(&mut self, value: u64) -> Value {
        self.b.ins().iconst(I64, value as i64)
    }

    fn tramp(&mut self, address: *const u8) -> Value {
        self.iconst(address as u64)
    }

    /// After a trampoline: end the run if it recorded a trap, else continue in a new block.
    fn check_trap(&mut self) {
        let kind = self.load_ctx(offsets::TRAP_KIND);
        let cont = self.b.create_block();
        let trap_exit = self.trap_exit;
        self.b.ins().brif(kind, trap_exit, &[], cont, &[]);
        self.b.switch_to_block(cont);
    }

    fn translate(&mut self) {
        let ops = self.ops;
        let mut pc = 0;
        let mut open = false;
        while pc < ops.len() {
            if let Some(block) = self.blocks[pc] {
                if open {
                    self.b.ins().jump(block, &[]);
                }
                self.b.switch_to_block(block);
                self.charge(pc);
            }
            let op = ops[pc];
            let next = pc + if op.code == 0x18 { 2 } else { 1 };
            open = self.instruction(pc, next, &op);
            pc = next;
        }
        if open {
            // Cannot happen: the last instruction is exit or a backward jump.
            self.b.ins().jump(self.trap_exit, &[]);
        }
        self.emit_exits();
    }

    /// Charges the block starting at `leader` to the budget, or stops the run inside it.
    fn charge(&mut self, leader: usize) {
        let len = self.block_len[leader];
        let remaining = self.b.use_var(self.remaining);
        let enough =
            self.b
                .ins()
                .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, remaining, len as i64);
        let body = self.b.create_block();
        let leader_value = self.iconst(leader as u64);
        let fail = self.budget_fail;
        self.b.ins().brif(
            enough,
            body,
            &[],
            fail,
            &[BlockArg::Value(leader_value), BlockArg::Value(remaining)],
        );
        self.b.switch_to_block(body);
        let left = self.b.ins().iadd_imm_s(remaining, -(len as i64));
        self.b.def_var(self.remaining, left);
    }

    fn emit_exits(&mut self) {
        // Budget exhausted inside a block: params (leader, instructions it could still run).
        let fail = self.budget_fail;
        self.b.set_cold_block(fail);
        self.b.switch_to_block(fail);
        let (leader, ran) = {
            let params = self.b.block_params(fail);
            (params[0], params[1])
        };
        let kind = self.iconst(TRAP_BUDGET);
        self.store_ctx(kind, offsets::TRAP_KIND);
        self.store_ctx(leader, offsets::TRAP_PC);
        self.store_ctx(ran, offsets::TRAP_AUX);
        let zero = self.iconst(0);
        self.store_ctx(zero, offsets::REMAINING);
        self.b.ins().return_(&[zero]);

        // A trampoline recorded a trap.
        let trap_exit = self.trap_exit;
        self.b.set_cold_block(trap_exit);
        self.b.switch_to_block(trap_exit);
        let remaining = self.b.use_var(self.remaining);
        self.store_ctx(remaining, offsets::REMAINING);
        let zero = self.iconst(0);
        self.b.ins().return_(&[zero]);

        // exit: return at the base depth, else pop a frame and return to its site.
        let dispatch = self.exit_dispatch;
        self.b.switch_to_block(dispatch);
        if !self.return_sites.is_empty() {
            let depth = self.load_ctx(offsets::DEPTH);
            let deeper = self
                .b
                .ins()
                .icmp(IntCC::UnsignedGreaterThan, depth, self.base_depth);
            let pop = self.b.create_block();
            let ret = self.b.create_block();
            self.b.ins().brif(deeper, pop, &[], ret, &[]);
            self.b.switch_to_block(pop);
            let callee = self.tramp(self.tramps.pop_frame);
            let call = self
                .b
                .ins()
                .call_indirect(self.sigs.pop_frame, callee, &[self.ctx]);
            let site = self.b.inst_results(call)[0];
            self.reload_stack_host();
            self.check_trap();
            for (index, reg) in (6u8..=10).enumerate() {
                let value = self.load_ctx(offsets::SAVED + 8 * index as i32);
                self.set(reg, value);
            }
            let sites: Vec<Block> = self
                .return_sites
                .iter()
                .map(|&slot| self.blocks[slot].expect("return sites are leaders"))
                .collect();
            let trap = self.b.func.dfg.block_call(self.trap_exit, &[]);
            let targets: Vec<_> = sites
                .iter()
                .map(|&block| self.b.func.dfg.block_call(block, &[]))
                .collect();
            let table = self.b.create_jump_table(JumpTableData::new(trap, &targets));
            let site32 = self.b.ins().ireduce(I32, site);
            self.b.ins().br_table(site32, table);
            self.b.switch_to_block(ret);
        }
        let remaining = self.b.use_var(self.remaining);
        self.store_ctx(remaining, offsets::REMAINING);
        let r0 = self.reg(0);
        self.b.ins().return_(&[r0]);
    }

    /// Emits one instruction; returns whether the current block continues (false after a
    /// terminator).
    fn instruction(&mut self, pc: usize, next: usize, op: &Op) -> bool {
        let d = op.dst;
        let s = op.src;
        let imm = op.imm;
        let code = op.code;
        match code {
            // ALU64 and ALU32.
            _ if code & 0x07 == 0x07 || code & 0x07 == 0x04 => {
                self.alu(op);
                true
            }
            0x18 => {
                let value = self.iconst(imm);
                self.set(d, value);
                true
            }
            _ if is_load(code) => {
                let value = self.load(pc, op);
                self.set(d, value);
                self.continue_to(next)
            }
            _ if is_store(code) => {
                let value = if code & 0x07 == 0x02 {
                    self.iconst(imm)
                } else {
                    self.reg(s)
                };
                self.store(pc, op, value);
                self.continue_to(next)
            }
            0xc3 | 0xdb => {
                self.atomic(pc, op);
                self.continue_to(next)
            }
            0x05 | 0x06 => {
                let target = self.blocks[op.target as usize].expect("jump targets are leaders");
                self.b.ins().jump(target, &[]);
                false
            }
            0x85 if s == 0 => {
                let id = self.iconst(imm & 0xffff_ffff);
                self.helper(pc, id, 0);
                self.continue_to(next)
            }
            0x85 => {
                self.local_call(pc, op);
                false
            }
            0x8d => {
                let id = self.reg(d);
                self.helper(pc, id, 1);
                self.continue_to(next)
            }
            0x95 => {
                let dispatch = self.exit_dispatch;
                self.b.ins().jump(dispatch, &[]);
                false
            }
            _ if code & 0x07 == 0x05 || code & 0x07 == 0x06 => {
                self.branch(op, next);
                false
            }
            _ => {
                // The load-time checks admit no other opcode; end the run like the
                // interpreter's IllegalInstruction backstop would (never reached).
                let trap = self.trap_exit;
                self.b.ins().jump(trap, &[]);
                false
            }
        }
    }

    /// After an instruction that ended its block: jump to the next leader.
    fn continue_to(&mut self, next: usize) -> bool {
        match self.blocks.get(next).copied().flatten() {
            Some(block) => {
                self.b.ins().jump(block, &[]);
                false
            }
            None => true,
        }
    }

    fn branch(&mut self, op: &Op, next: usize) {
        let is32 = op.code & 0x07 == 0x06;
        let mut lhs = self.reg(op.dst);
        let mut rhs = if op.code & 0x08 != 0 {
            self.reg(op.src)
        } else {
            self.iconst(op.imm)
        };
        if is32 {
            lhs = self.b.ins().ireduce(I32, lhs);
            rhs = self.b.ins().ireduce(I32, rhs);
        }
        let cond = match op.code & 0xf0 {
            0x10 => self.b.ins().icmp(IntCC::Equal, lhs, rhs),
            0x20 => self.b.ins().icmp(IntCC::UnsignedGreaterThan, lhs, rhs),
            0x30 => self
                .b
                .ins()
                .icmp(IntCC::UnsignedGreaterThanOrEqual, lhs, rhs),
            0x40 => {
                let and = self.b.ins().band(lhs, rhs);
                self.b.ins().icmp_imm_s(IntCC::NotEqual, and, 0)
            }
            0x50 => self.b.ins().icmp(IntCC::NotEqual, lhs, rhs),
            0x60 => self.b.ins().icmp(IntCC::SignedGreaterThan, lhs, rhs),
            0x70 => self.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, lhs, rhs),
            0xa0 => self.b.ins().icmp(IntCC::UnsignedLessThan, lhs, rhs),
            0xb0 => self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, lhs, rhs),
            0xc0 => self.b.ins().icmp(IntCC::SignedLessThan, lhs, rhs),
            _ => self.b.ins().icmp(IntCC::SignedLessThanOrEqual, lhs, rhs),
        };
        let target = self.blocks[op.target as usize].expect("jump targets are leaders");
        let fall = self.blocks[next].expect("the slot after a jump is a leader");
        self.b.ins().brif(cond, target, &[], fall, &[]);
    }

    fn alu(&mut self, op: &Op) {
        let is64 = op.code & 0x07 == 0x07;
        let ty = if is64 { I64 } else { I32 };
        let uses_reg = op.code & 0x08 != 0;
        let d64 = self.reg(op.dst);
        let narrow = |t: &mut Self, v: Value| {
            if is64 {
                v
            } else {
                t.b.ins().ireduce(I32, v)
            }
        };
        let dst = narrow(self, d64);
        let src = if uses_reg {
            let s = self.reg(op.src);
            narrow(self, s)
        } else {
            let imm = if is64 { op.imm } else { op.imm & 0xffff_ffff };
            self.b.ins().iconst(ty, imm as i64)
        };
        let imm_divisor = (!uses_reg).then_some(if is64 { op.imm } else { op.imm & 0xffff_ffff });
        let result = match op.code & 0xf0 {
            0x00 => self.b.ins().iadd(dst, src),
            0x10 => self.b.ins().isub(dst, src),
            0x20 => self.b.ins().imul(dst, src),
            0x30 => self.div(ty, dst, src, op.off != 0, false, imm_divisor),
            0x40 => self.b.ins().bor(dst, src),
            0x50 => self.b.ins().band(dst, src),
            0x60 => self.b.ins().ishl(dst, src),
            0x70 => self.b.ins().ushr(dst, src),
            0x80 => self.b.ins().ineg(dst),
            0x90 => self.div(ty, dst, src, op.off != 0, true, imm_divisor),
            0xa0 => self.b.ins().bxor(dst, src),
            0xb0 => {
                if uses_reg {
                    match (op.off, is64) {
                        (8, _) => self.sext(src, I8, ty),
                        (16, _) => self.sext(src, I16, ty),
                        (32, true) => self.sext(src, I32, ty),
                        _ => src,
                    }
                } else {
                    src
                }
            }
            0xc0 => self.b.ins().sshr(dst, src),
            _ => {
                // 0xd4 (to little endian), 0xdc (to big endian), 0xd7 (unconditional swap).
                let swap = op.code != 0xd4;
                let result = match op.imm {
                    16 => self.swap_width(d64, I16, swap),
                    32 => self.swap_width(d64, I32, swap),
                    _ if swap => self.b.ins().bswap(d64),
                    _ => d64,
                };
                self.set(op.dst, result);
                return;
            }
        };
        let result = if is64 {
            result
        } else {
            self.b.ins().uextend(I64, result)
        };
        self.set(op.dst, result);
    }

    fn sext(&mut self, value: Value, from: Type, to: Type) -> Value {
        let narrow = self.b.ins().ireduce(from, value);
        self.b.ins().sextend(to, narrow)
    }

    /// The low `width` bits of `value`, byte-swapped when `swap`, zero-extended to 64 bits.
    fn swap_width(&mut self, value: Value, width: Type, swap: bool) -> Value {
        let narrow = self.b.ins().ireduce(width, value);
        let narrow = if swap {
            self.b.ins().bswap(narrow)
        } else {
            narrow
        };
        self.b.ins().uextend(I64, narrow)
    }

    /// Division or modulo with the kernel's rules: x / 0 = 0, x % 0 = x, signed
    /// INT_MIN / -1 = INT_MIN and INT_MIN % -1 = 0 (Cranelift's instructions would trap).
    fn div(
        &mut self,
        ty: Type,
        dividend: Value,
        divisor: Value,
        signed: bool,
        modulo: bool,
        imm: Option<u64>,
    ) -> Value {
        let minus_one = if ty == I64 {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        let plain = |t: &mut Self| match (signed, modulo) {
            (false, false) => t.b.ins().udiv(dividend, divisor),
            (false, true) => t.b.ins().urem(dividend, divisor),
            (true, false) => t.b.ins().sdiv(dividend, divisor),
            (true, true) => t.b.ins().srem(dividend, divisor),
        };
        match imm {
            Some(0) => {
                return if modulo {
                    dividend
                } else {
                    self.b.ins().iconst(ty, 0)
                }
            }
            Some(value) if !signed || value != minus_one => return plain(self),
            _ => {}
        }
        let done = self.b.create_block();
        let result = self.b.append_block_param(done, ty);
        let zero_block = self.b.create_block();
        let nonzero = self.b.create_block();
        self.b.ins().brif(divisor, nonzero, &[], zero_block, &[]);
        self.b.switch_to_block(zero_block);
        let on_zero = if modulo {
            dividend
        } else {
            self.b.ins().iconst(ty, 0)
        };
        self.b.ins().jump(done, &[BlockArg::Value(on_zero)]);
        self.b.switch_to_block(nonzero);
        if signed {
            let minus_one = self.b.ins().iconst(ty, minus_one as i64);
            let is_minus_one = self.b.ins().icmp(IntCC::Equal, divisor, minus_one);
            let minus_block = self.b.create_block();
            let normal = self.b.create_block();
            self.b
                .ins()
                .brif(is_minus_one, minus_block, &[], normal, &[]);
            self.b.switch_to_block(minus_block);
            let on_minus = if modulo {
                self.b.ins().iconst(ty, 0)
            } else {
                self.b.ins().ineg(dividend)
            };
            self.b.ins().jump(done, &[BlockArg::Value(on_minus)]);
            self.b.switch_to_block(normal);
        }
        let value = plain(self);
        self.b.ins().jump(done, &[BlockArg::Value(value)]);
        self.b.switch_to_block(done);
        result
    }

    /// The host address of a checked access, or a jump to `slow` when the inline check fails:
    /// region index below the table length, `offset + width <= entry's length` for the mode.
    fn translate_addr(&mut self, addr: Value, width: i64, write: bool, slow: Block) -> Value {
        let index = self.b.ins().ushr_imm_u(addr, 32);
        let in_table = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedLessThan, index, TABLE_LEN as i64);
        let check = self.b.create_block();
        self.b.ins().brif(in_table, check, &[], slow, &[]);
        self.b.switch_to_block(check);
        let scaled = self.b.ins().imul_imm_s(index, offsets::ENTRY_SIZE);
        let entry = self.b.ins().iadd(self.ctx, scaled);
        let len_field = if write {
            offsets::ENTRY_WRITE_LEN
        } else {
            offsets::ENTRY_READ_LEN
        };
        let len = self
            .b
            .ins()
            .load(I64, ctx_flags(), entry, offsets::TABLE + len_field);
        let offset = self.b.ins().band_imm_u(addr, 0xffff_ffff);
        let end = self.b.ins().iadd_imm_s(offset, width);
        let inside = self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, end, len);
        let fast = self.b.create_block();
        self.b.ins().brif(inside, fast, &[], slow, &[]);
        self.b.switch_to_block(fast);
        let base = self.b.ins().load(
            I64,
            ctx_flags(),
            entry,
            offsets::TABLE + offsets::ENTRY_BASE,
        );
        self.b.ins().iadd(base, offset)
    }

    /// The host address of an elided stack access `r10 + off`.
    fn stack_addr(&mut self, off: i16) -> Value {
        let fp = self.reg(10);
        let host = self.b.use_var(self.stack_host);
        let offset = self.b.ins().iadd_imm_s(fp, -(STACK_BASE as i64));
        let addr = self.b.ins().iadd(host, offset);
        self.b.ins().iadd_imm_s(addr, i64::from(off))
    }

    fn native_load(&mut self, width: i64, host_addr: Value) -> Value {
        let flags = guest_flags();
        match width {
            1 => self.b.ins().uload8(I64, flags, host_addr, 0),
            2 => self.b.ins().uload16(I64, flags, host_addr, 0),
            4 => self.b.ins().uload32(flags, host_addr, 0),
            _ => self.b.ins().load(I64, flags, host_addr, 0),
        }
    }

    fn native_store(&mut self, width: i64, value: Value, host_addr: Value) {
        let flags = guest_flags();
        match width {
            1 => self.b.ins().istore8(flags, value, host_addr, 0),
            2 => self.b.ins().istore16(flags, value, host_addr, 0),
            4 => self.b.ins().istore32(flags, value, host_addr, 0),
            _ => self.b.ins().store(flags, value, host_addr, 0),
        };
    }

    fn load(&mut self, pc: usize, op: &Op) -> Value {
        let width = width(op.code);
        let signed = matches!(op.code, 0x81 | 0x89 | 0x91);
        let value = if elided(op.src, op.off, width, self.config.stack_size as i64) {
            let host = self.stack_addr(op.off);
            self.native_load(width, host)
        } else {
            let base = self.reg(op.src);
            let addr = self.b.ins().iadd_imm_s(base, i64::from(op.off));
            let slow = self.b.create_block();
            let done = self.b.create_block();
            let result = self.b.append_block_param(done, I64);
            let host = self.translate_addr(addr, width, false, slow);
            let fast_value = self.native_load(width, host);
            self.b.ins().jump(done, &[BlockArg::Value(fast_value)]);
            self.b.set_cold_block(slow);
            self.b.switch_to_block(slow);
            let callee = self.tramp(self.tramps.load);
            let size = self.iconst(width as u64);
            let pc = self.iconst(pc as u64);
            let call =
                self.b
                    .ins()
                    .call_indirect(self.sigs.load, callee, &[self.ctx, addr, size, pc]);
            let slow_value = self.b.inst_results(call)[0];
            self.reload_stack_host();
            self.check_trap();
            self.b.ins().jump(done, &[BlockArg::Value(slow_value)]);
            self.b.switch_to_block(done);
            result
        };
        match (signed, width) {
            (true, 1) => self.sext(value, I8, I64),
            (true, 2) => self.sext(value, I16, I64),
            (true, _) => self.sext(value, I32, I64),
            _ => value,
        }
    }

    fn store(&mut self, pc: usize, op: &Op, value: Value) {
        let width = width(op.code);
        if elided(op.dst, op.off, width, self.config.stack_size as i64) {
            let host = self.stack_addr(op.off);
            self.native_store(width, value, host);
            return;
        }
        let base = self.reg(op.dst);
        let addr = self.b.ins().iadd_imm_s(base, i64::from(op.off));
        let slow = self.b.create_block();
        let done = self.b.create_block();
        let host = self.translate_addr(addr, width, true, slow);
        self.native_store(width, value, host);
        self.b.ins().jump(done, &[]);
        self.b.set_cold_block(slow);
        self.b.switch_to_block(slow);
        let callee = self.tramp(self.tramps.store);
        let size = self.iconst(width as u64);
        let pc = self.iconst(pc as u64);
        self.b
            .ins()
            .call_indirect(self.sigs.store, callee, &[self.ctx, addr, size, value, pc]);
        self.reload_stack_host();
        self.check_trap();
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
    }

    fn atomic(&mut self, pc: usize, op: &Op) {
        use bpfmaps_abi::insn::atomic_op;
        let base = self.reg(op.dst);
        let addr = self.b.ins().iadd_imm_s(base, i64::from(op.off));
        let src = self.reg(op.src);
        let r0 = self.reg(0);
        let callee = self.tramp(self.tramps.atomic);
        let pc_value = self.iconst(pc as u64);
        let call = self.b.ins().call_indirect(
            self.sigs.atomic,
            callee,
            &[self.ctx, pc_value, addr, src, r0],
        );
        let old = self.b.inst_results(call)[0];
        self.reload_stack_host();
        self.check_trap();
        let code = op.imm as i32;
        if code & !atomic_op::FETCH != atomic_op::ADD
            && code & !atomic_op::FETCH != atomic_op::OR
            && code & !atomic_op::FETCH != atomic_op::AND
            && code & !atomic_op::FETCH != atomic_op::XOR
            && code != atomic_op::XCHG
        {
            // Compare-and-exchange: r0 gets the old value.
            self.set(0, old);
        } else if code & atomic_op::FETCH != 0 {
            self.set(op.src, old);
        }
    }

    fn helper(&mut self, pc: usize, id: Value, callx: u64) {
        let remaining = self.b.use_var(self.remaining);
        self.store_ctx(remaining, offsets::REMAINING);
        let callee = self.tramp(self.tramps.helper);
        let pc = self.iconst(pc as u64);
        let callx = self.iconst(callx);
        let mut args = vec![self.ctx, pc, id, callx];
        for reg in 1..=5 {
            args.push(self.reg(reg));
        }
        let call = self.b.ins().call_indirect(self.sigs.helper, callee, &args);
        let r0 = self.b.inst_results(call)[0];
        let remaining = self.load_ctx(offsets::REMAINING);
        self.b.def_var(self.remaining, remaining);
        self.reload_stack_host();
        self.check_trap();
        self.set(0, r0);
    }

    fn local_call(&mut self, pc: usize, op: &Op) {
        let site = self
            .return_sites
            .iter()
            .position(|&slot| slot == pc + 1)
            .expect("every local call has a return site") as u64;
        let callee = self.tramp(self.tramps.push_frame);
        let pc_value = self.iconst(pc as u64);
        let site = self.iconst(site);
        let mut args = vec![self.ctx, pc_value, site];
        for reg in 6..=10 {
            args.push(self.reg(reg));
        }
        self.b
            .ins()
            .call_indirect(self.sigs.push_frame, callee, &args);
        self.reload_stack_host();
        self.check_trap();
        let fp = self.reg(10);
        let fp = self.b.ins().iadd_imm_s(fp, self.config.stack_size as i64);
        self.set(10, fp);
        let target = self.blocks[op.target as usize].expect("call targets are leaders");
        self.b.ins().jump(target, &[]);
    }
}
