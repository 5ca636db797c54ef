//! Running compiled code: the run context native code reads and writes ([`JitCtx`], a
//! `repr(C)` block whose field offsets the compiler bakes in), the region table it translates
//! guest addresses through, the `extern "C"` trampolines it calls for everything that is not
//! inline (slow-path memory accesses, atomics, helpers, local call frames), and [`JitVm`], which
//! sets a run up and turns the exit state into the interpreter's [`Trap`]s.
//!
//! The region table is the only way native code reaches guest memory. Entry `i` holds the host
//! address of region `i`'s byte 0 and how many bytes may be read and written from it; it is
//! filled from [`Memory::window`] at run start and after every trampoline that used the
//! [`Memory`] (whose windows are only valid until it is next used), and an entry of a region
//! without a window (unmapped, or a [`bpfmaps_vm::HostRegion`]) has length 0, so every access to
//! it takes the slow path.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bpfmaps_abi::insn::atomic_op;
use bpfmaps_vm::memory::{CONTEXT_BASE, STACK_BASE};
use bpfmaps_vm::{Access, Callbacks, HelperError, HelperHost, MemFault, Memory, Region, Trap};

use crate::JitProgram;

/// Number of region table entries: regions 0 (never mapped), 1 (stack), 2 (context) and 3 (the
/// first fixed region). Accesses to higher regions take the slow path.
pub(crate) const TABLE_LEN: u64 = 4;

/// `trap_kind`: no trap.
pub(crate) const TRAP_NONE: u64 = 0;
/// `trap_kind`: a trampoline recorded a [`Trap`] in `JitCtx::trap`.
pub(crate) const TRAP_RECORDED: u64 = 1;
/// `trap_kind`: the budget ran out in the block starting at `trap_pc` after `trap_aux` of its
/// instructions.
pub(crate) const TRAP_BUDGET: u64 = 2;
/// `trap_kind`: a host callback panicked; the payload is in `JitCtx::panic` and is resumed once
/// native code has returned.
pub(crate) const TRAP_PANIC: u64 = 3;

/// One region table entry, 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    /// Host address of the region's byte 0 (0 when there is no window).
    pub base: u64,
    /// Bytes that may be loaded from `base` (0: every load takes the slow path).
    pub read_len: u64,
    /// Bytes that may be stored from `base` (0 for read-only regions).
    pub write_len: u64,
    pub _pad: u64,
}

/// A caller's state saved by a local call (or a marker frame for a callback).
#[derive(Clone, Copy, Debug)]
struct Frame {
    /// Index of the return site in the compiled return dispatch.
    site: u64,
    /// r6-r9 and r10 of the caller.
    saved: [u64; 5],
}

/// The memory and helpers of the current (possibly nested) invocation.
struct RunIo<'r, 'm> {
    mem: &'r mut Memory<'m>,
    host: &'r mut dyn HelperHost,
}

/// The state native code shares with the trampolines for one run. The first fields are read
/// and written by generated code at the offsets [`offsets`] gives.
#[repr(C)]
pub(crate) struct JitCtx {
    pub table: [Entry; TABLE_LEN as usize],
    /// Instructions left in the budget (synchronised around trampoline calls and at exits).
    pub remaining: u64,
    pub trap_kind: u64,
    pub trap_pc: u64,
    pub trap_aux: u64,
    /// Number of call frames pushed (local calls and callback markers).
    pub depth: u64,
    /// r6-r9 and r10 restored by the last frame pop.
    pub saved: [u64; 5],
    /// The current [`RunIo`].
    io: *mut c_void,
    program: *const JitProgram,
    frames: Vec<Frame>,
    trap: Option<Trap>,
    panic: Option<Box<dyn Any + Send>>,
}

/// Field offsets of [`JitCtx`] for the compiler.
pub(crate) mod offsets {
    use super::{Entry, JitCtx};
    use std::mem::offset_of;

    pub const TABLE: i32 = offset_of!(JitCtx, table) as i32;
    pub const ENTRY_SIZE: i64 = std::mem::size_of::<Entry>() as i64;
    pub const ENTRY_BASE: i32 = offset_of!(Entry, base) as i32;
    pub const ENTRY_READ_LEN: i32 = offset_of!(Entry, read_len) as i32;
    pub const ENTRY_WRITE_LEN: i32 = offset_of!(Entry, write_len) as i32;
    pub const REMAINING: i32 = offset_of!(JitCtx, remaining) as i32;
    pub const TRAP_KIND: i32 = offset_of!(JitCtx, trap_kind) as i32;
    pub const TRAP_PC: i32 = offset_of!(JitCtx, trap_pc) as i32;
    pub const TRAP_AUX: i32 = offset_of!(JitCtx, trap_aux) as i32;
    pub const DEPTH: i32 = offset_of!(JitCtx, depth) as i32;
    pub const SAVED: i32 = offset_of!(JitCtx, saved) as i32;
}

/// The compiled function: `(ctx, entry, base_depth, r1, r2, r3, r4, r5, r10) -> r0`. `entry` 0
/// starts at slot 0, entry `i > 0` at the `i`-th callback slot; an `exit` with `base_depth`
/// frames returns.
pub(crate) type EntryFn =
    unsafe extern "C" fn(*mut JitCtx, u64, u64, u64, u64, u64, u64, u64, u64) -> u64;

/// Addresses of the trampolines, in the order the compiler imports them.
pub(crate) struct Trampolines {
    pub load: *const u8,
    pub store: *const u8,
    pub atomic: *const u8,
    pub helper: *const u8,
    pub push_frame: *const u8,
    pub pop_frame: *const u8,
}

pub(crate) fn trampolines() -> Trampolines {
    Trampolines {
        load: tramp_load as *const u8,
        store: tramp_store as *const u8,
        atomic: tramp_atomic as *const u8,
        helper: tramp_helper as *const u8,
        push_frame: tramp_push_frame as *const u8,
        pop_frame: tramp_pop_frame as *const u8,
    }
}

/// Refills the region table from `mem`'s windows.
fn refresh_table(table: &mut [Entry; TABLE_LEN as usize], mem: &mut Memory<'_>) {
    for (index, entry) in table.iter_mut().enumerate() {
        *entry = match mem.window(index as u32) {
            Some(window) => Entry {
                base: window.ptr as u64,
                read_len: window.len,
                write_len: if window.access == Access::ReadWrite {
                    window.len
                } else {
                    0
                },
                _pad: 0,
            },
            None => Entry {
                base: 0,
                read_len: 0,
                write_len: 0,
                _pad: 0,
            },
        };
    }
}

/// Runs `body` with the run context and current memory/helpers, catching a panic (which must
/// not unwind through generated code): it is stored and the run ends with `TRAP_PANIC`.
///
/// # Safety
/// `ctx` must be the live context of a run in progress whose `io` points at the current
/// [`RunIo`], and no other reference to either may be in use.
unsafe fn guarded(
    ctx: *mut JitCtx,
    body: impl FnOnce(*mut JitCtx, &mut RunIo<'_, '_>) -> u64,
) -> u64 {
    // SAFETY: the caller guarantees `ctx` is live and `io` points at the current RunIo on the
    // stack of `JitVm::run_region` or `JitCallbacks::invoke`, which outlives this call.
    let io = unsafe { &mut *((*ctx).io as *mut RunIo<'_, '_>) };
    match catch_unwind(AssertUnwindSafe(|| body(ctx, io))) {
        Ok(value) => value,
        Err(payload) => {
            // SAFETY: as above; the closure's borrows ended with the unwind.
            unsafe {
                (*ctx).panic = Some(payload);
                (*ctx).trap_kind = TRAP_PANIC;
            }
            0
        }
    }
}

/// Records `trap` as the run's outcome.
///
/// # Safety
/// `ctx` must be live with no other reference in use.
unsafe fn record(ctx: *mut JitCtx, trap: Trap) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        (*ctx).trap = Some(trap);
        (*ctx).trap_kind = TRAP_RECORDED;
    }
}

fn memory_trap(pc: u64, fault: MemFault) -> Trap {
    Trap::Memory {
        pc: pc as usize,
        fault,
    }
}

/// Slow-path load of `size` bytes (1, 2, 4, 8) at guest `addr` for the instruction at `pc`,
/// zero-extended; a fault is recorded as the interpreter's trap.
unsafe extern "C" fn tramp_load(ctx: *mut JitCtx, addr: u64, size: u64, pc: u64) -> u64 {
    let body = |ctx: *mut JitCtx, io: &mut RunIo<'_, '_>| {
        let result = match size {
            1 => io.mem.load::<1>(addr),
            2 => io.mem.load::<2>(addr),
            4 => io.mem.load::<4>(addr),
            _ => io.mem.load::<8>(addr),
        };
        // SAFETY: `ctx` is live (see above); the table and trap fields are not borrowed.
        unsafe { refresh_table(&mut (*ctx).table, io.mem) };
        match result {
            Ok(value) => value,
            Err(fault) => {
                // SAFETY: as above.
                unsafe { record(ctx, memory_trap(pc, fault)) };
                0
            }
        }
    };
    // SAFETY: generated code passes the context of the run it is part of, and calls nothing
    // else while a trampoline runs.
    unsafe { guarded(ctx, body) }
}

/// Slow-path store of the low `size` bytes of `value` at guest `addr`.
unsafe extern "C" fn tramp_store(ctx: *mut JitCtx, addr: u64, size: u64, value: u64, pc: u64) {
    let body = |ctx: *mut JitCtx, io: &mut RunIo<'_, '_>| {
        let result = match size {
            1 => io.mem.store::<1>(addr, value),
            2 => io.mem.store::<2>(addr, value),
            4 => io.mem.store::<4>(addr, value),
            _ => io.mem.store::<8>(addr, value),
        };
        // SAFETY: `ctx` is live; the table and trap fields are not borrowed.
        unsafe { refresh_table(&mut (*ctx).table, io.mem) };
        if let Err(fault) = result {
            // SAFETY: as above.
            unsafe { record(ctx, memory_trap(pc, fault)) };
        }
        0
    };
    // SAFETY: as for `tramp_load`.
    unsafe { guarded(ctx, body) };
}

/// The atomic instruction at `pc` on guest `addr` with source value `src` and `r0` (for
/// compare-and-exchange). Returns the old value masked to the operand width; generated code puts
/// it in r0 (cmpxchg) or the source register (fetch forms).
unsafe extern "C" fn tramp_atomic(ctx: *mut JitCtx, pc: u64, addr: u64, src: u64, r0: u64) -> u64 {
    let body = |ctx: *mut JitCtx, io: &mut RunIo<'_, '_>| {
        // SAFETY: `program` outlives the run (JitVm::run borrows it).
        let op = unsafe { (*(*ctx).program).exe.ops()[pc as usize] };
        let size: u8 = if op.code == 0xc3 { 4 } else { 8 };
        let mask = if size == 4 {
            u64::from(u32::MAX)
        } else {
            u64::MAX
        };
        let code = op.imm as i32;
        let mem = &mut *io.mem;
        let result = match code & !atomic_op::FETCH {
            atomic_op::ADD => mem.atomic_update(addr, size, &mut |old| old.wrapping_add(src)),
            atomic_op::OR => mem.atomic_update(addr, size, &mut |old| old | src),
            atomic_op::AND => mem.atomic_update(addr, size, &mut |old| old & src),
            atomic_op::XOR => mem.atomic_update(addr, size, &mut |old| old ^ src),
            _ if code == atomic_op::XCHG => mem.atomic_update(addr, size, &mut |_| src),
            _ => {
                let expected = r0 & mask;
                mem.atomic_update(addr, size, &mut |old| {
                    if old & mask == expected {
                        src
                    } else {
                        old
                    }
                })
            }
        };
        // SAFETY: `ctx` is live; the table and trap fields are not borrowed.
        unsafe { refresh_table(&mut (*ctx).table, io.mem) };
        match result {
            Ok(old) => old & mask,
            Err(fault) => {
                // SAFETY: as above.
                unsafe { record(ctx, memory_trap(pc, fault)) };
                0
            }
        }
    };
    // SAFETY: as for `tramp_load`; `program` points at the program being run.
    unsafe { guarded(ctx, body) }
}

/// Helper call at `pc`: helper `id` (for `callx`, `callx` is 1 and `id` the register's value,
/// checked against the program's helper set) with r1-r5; returns r0.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn tramp_helper(
    ctx: *mut JitCtx,
    pc: u64,
    id: u64,
    callx: u64,
    r1: u64,
    r2: u64,
    r3: u64,
    r4: u64,
    r5: u64,
) -> u64 {
    let body = |ctx: *mut JitCtx, io: &mut RunIo<'_, '_>| {
        let pc = pc as usize;
        // SAFETY: `program` outlives the run.
        let program = unsafe { &*(*ctx).program };
        let id = match u32::try_from(id) {
            Ok(id) if callx == 0 || program.exe.helpers().contains(id) => id,
            _ => {
                // SAFETY: `ctx` is live and not borrowed.
                unsafe { record(ctx, Trap::UnknownHelper { pc, id }) };
                return 0;
            }
        };
        // Memory's stack length follows the frames already (push/pop keep it).
        let mut callbacks = JitCallbacks { ctx };
        let result = io
            .host
            .call_with_callbacks(id, [r1, r2, r3, r4, r5], io.mem, &mut callbacks);
        // SAFETY: the callbacks' uses of `ctx` ended when the helper returned.
        unsafe { refresh_table(&mut (*ctx).table, io.mem) };
        match result {
            Ok(value) => value,
            Err(error) => {
                // SAFETY: `ctx` is live and not borrowed. A panic stays the outcome.
                unsafe {
                    if (*ctx).trap_kind != TRAP_PANIC {
                        let trap = match error {
                            HelperError::CallbackTrapped(trap) => *trap,
                            error => Trap::Helper { pc, id, error },
                        };
                        record(ctx, trap);
                    }
                }
                0
            }
        }
    };
    // SAFETY: as for `tramp_load`.
    unsafe { guarded(ctx, body) }
}

/// A local call at `pc` returning to return site `site`: checks the depth, saves the caller's
/// r6-r10 and opens a zeroed frame.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn tramp_push_frame(
    ctx: *mut JitCtx,
    pc: u64,
    site: u64,
    r6: u64,
    r7: u64,
    r8: u64,
    r9: u64,
    r10: u64,
) {
    let body = |ctx: *mut JitCtx, io: &mut RunIo<'_, '_>| {
        // SAFETY: `ctx` is live and not otherwise borrowed; `program` outlives the run.
        let ctx = unsafe { &mut *ctx };
        // SAFETY: as above.
        let config = unsafe { &(*ctx.program).config };
        let max = config.max_call_depth;
        if ctx.frames.len() + 1 >= max {
            ctx.trap = Some(Trap::CallDepthExceeded {
                pc: pc as usize,
                max,
            });
            ctx.trap_kind = TRAP_RECORDED;
            return 0;
        }
        ctx.frames.push(Frame {
            site,
            saved: [r6, r7, r8, r9, r10],
        });
        let depth = ctx.frames.len() as u64;
        ctx.depth = depth;
        let stack_size = config.stack_size as u64;
        io.mem.set_stack_len((depth + 1) * stack_size);
        io.mem.zero_stack(depth * stack_size, stack_size);
        refresh_table(&mut ctx.table, io.mem);
        0
    };
    // SAFETY: as for `tramp_load`.
    unsafe { guarded(ctx, body) };
}

/// An `exit` above the base depth: pops a frame, leaves the caller's r6-r10 in `saved` and
/// returns the return site.
unsafe extern "C" fn tramp_pop_frame(ctx: *mut JitCtx) -> u64 {
    let body = |ctx: *mut JitCtx, io: &mut RunIo<'_, '_>| {
        // SAFETY: `ctx` is live and not otherwise borrowed; `program` outlives the run.
        let ctx = unsafe { &mut *ctx };
        // SAFETY: as above.
        let stack_size = unsafe { (*ctx.program).config.stack_size } as u64;
        // Generated code pops only when depth > base depth >= 0, so a frame exists.
        let Some(frame) = ctx.frames.pop() else {
            ctx.trap = Some(Trap::IllegalInstruction { pc: 0 });
            ctx.trap_kind = TRAP_RECORDED;
            return 0;
        };
        ctx.saved = frame.saved;
        let depth = ctx.frames.len() as u64;
        ctx.depth = depth;
        io.mem.set_stack_len((depth + 1) * stack_size);
        refresh_table(&mut ctx.table, io.mem);
        frame.site
    };
    // SAFETY: as for `tramp_load`.
    unsafe { guarded(ctx, body) }
}

/// Turns the exit state into a trap and clears it.
fn take_trap(ctx: &mut JitCtx, program: &JitProgram) -> Trap {
    let kind = std::mem::replace(&mut ctx.trap_kind, TRAP_NONE);
    match kind {
        TRAP_BUDGET => {
            let ops = program.exe.ops();
            let mut pc = ctx.trap_pc as usize;
            for _ in 0..ctx.trap_aux {
                pc += if ops[pc].code == 0x18 { 2 } else { 1 };
            }
            Trap::BudgetExhausted {
                pc,
                budget: program.config.instruction_budget,
            }
        }
        _ => ctx
            .trap
            .take()
            .unwrap_or(Trap::IllegalInstruction { pc: 0 }),
    }
}

/// The JIT's side of callbacks: runs a callback function's compiled code in a new frame of the
/// same run.
struct JitCallbacks {
    ctx: *mut JitCtx,
}

impl Callbacks for JitCallbacks {
    fn invoke(
        &mut self,
        host: &mut dyn HelperHost,
        mem: &mut Memory<'_>,
        callback: u64,
        arg: u8,
        args: [u64; 5],
    ) -> Result<u64, HelperError> {
        let ctx = self.ctx;
        // SAFETY: this runs inside `tramp_helper` of the same run, which holds no reference to
        // the context while the helper runs; `program` outlives the run.
        let program = unsafe { &*(*ctx).program };
        let target = program
            .exe
            .callback_target(callback)
            .ok_or(HelperError::InvalidArgument {
                arg,
                reason: "not a callback function of this program",
            })?;
        let entry = program.code.entry_of(target);
        let max = program.config.max_call_depth;
        let stack_size = program.config.stack_size as u64;
        let depth = {
            // SAFETY: as above; this borrow ends before native code runs.
            let ctx = unsafe { &mut *ctx };
            if ctx.frames.len() + 1 >= max {
                return Err(HelperError::CallbackTrapped(Box::new(
                    Trap::CallDepthExceeded { pc: target, max },
                )));
            }
            ctx.frames.push(Frame {
                site: 0,
                saved: [0; 5],
            });
            let depth = ctx.frames.len() as u64;
            ctx.depth = depth;
            mem.set_stack_len((depth + 1) * stack_size);
            mem.zero_stack(depth * stack_size, stack_size);
            refresh_table(&mut ctx.table, mem);
            depth
        };
        let mut io = RunIo { mem, host };
        // SAFETY: as above.
        let outer_io = unsafe { std::mem::replace(&mut (*ctx).io, (&raw mut io).cast()) };
        let r10 = STACK_BASE + (depth + 1) * stack_size;
        // SAFETY: the entry follows the compiled signature; `ctx` is a live context whose `io`
        // points at `io`, which lives until the call returns; the callback's code only reaches
        // memory through the table just refreshed and the trampolines.
        let r0 = unsafe {
            (program.code.entry)(
                ctx, entry, depth, args[0], args[1], args[2], args[3], args[4], r10,
            )
        };
        // SAFETY: native code has returned; no other reference to the context is in use.
        let ctx = unsafe { &mut *ctx };
        ctx.io = outer_io;
        ctx.frames.pop();
        ctx.depth = ctx.frames.len() as u64;
        io.mem.set_stack_len(depth * stack_size);
        refresh_table(&mut ctx.table, io.mem);
        match ctx.trap_kind {
            TRAP_NONE => Ok(r0),
            // Keep the panic flagged: the outermost run resumes it.
            TRAP_PANIC => Err(HelperError::Unavailable),
            _ => Err(HelperError::CallbackTrapped(Box::new(take_trap(
                ctx, program,
            )))),
        }
    }
}

/// Per-thread run state for [`JitProgram`]s: the stack and call frames, reused across runs.
#[derive(Debug, Default)]
pub struct JitVm {
    stack: Vec<u8>,
    executed: u64,
}

impl JitVm {
    /// A VM with no stack yet (allocated on the first run, kept afterwards).
    pub fn new() -> Self {
        JitVm::default()
    }

    /// Number of instructions the last run executed.
    pub fn instructions_executed(&self) -> u64 {
        self.executed
    }

    /// Runs `program` on `context` (mapped at [`CONTEXT_BASE`] with the program's configured
    /// access) and returns r0, or the trap the interpreter would have reported. r1 holds the
    /// context's address, r2 its length, r10 the frame pointer.
    pub fn run<H: HelperHost + ?Sized>(
        &mut self,
        program: &JitProgram,
        context: &mut [u8],
        host: &mut H,
    ) -> Result<u64, Trap> {
        let len = context.len() as u64;
        let region = Region::borrowed(context, program.config.context_access);
        self.run_region(program, region, len, host)
    }

    /// Like [`JitVm::run`] with a context the program may only read.
    pub fn run_read_only<H: HelperHost + ?Sized>(
        &mut self,
        program: &JitProgram,
        context: &[u8],
        host: &mut H,
    ) -> Result<u64, Trap> {
        let len = context.len() as u64;
        self.run_region(program, Region::borrowed_read_only(context), len, host)
    }

    fn run_region<H: HelperHost + ?Sized>(
        &mut self,
        program: &JitProgram,
        context: Region<'_>,
        context_len: u64,
        host: &mut H,
    ) -> Result<u64, Trap> {
        let config = &program.config;
        let stack_size = config.stack_size as u64;
        let stack_len = config
            .stack_size
            .saturating_mul(config.max_call_depth.max(1));
        if self.stack.len() != stack_len {
            self.stack = vec![0; stack_len];
        }
        let mut mem = Memory::new(&mut self.stack, context);
        mem.set_stack_len(stack_size);
        mem.zero_stack(0, stack_size);
        host.prepare(&mut mem)
            .map_err(|error| Trap::Prepare { error })?;
        let budget = config.instruction_budget;
        let empty = Entry {
            base: 0,
            read_len: 0,
            write_len: 0,
            _pad: 0,
        };
        let mut forward = Forward(host);
        let mut io = RunIo {
            mem: &mut mem,
            host: &mut forward,
        };
        let mut ctx = JitCtx {
            table: [empty; TABLE_LEN as usize],
            remaining: budget,
            trap_kind: TRAP_NONE,
            trap_pc: 0,
            trap_aux: 0,
            depth: 0,
            saved: [0; 5],
            io: (&raw mut io).cast(),
            program,
            frames: Vec::with_capacity(config.max_call_depth),
            trap: None,
            panic: None,
        };
        refresh_table(&mut ctx.table, io.mem);
        let ctx_ptr: *mut JitCtx = &raw mut ctx;
        // SAFETY: the entry follows the compiled signature (`EntryFn`); `ctx` lives on this
        // frame for the whole call, its `io` points at `io`, which also does, and `program`
        // (which owns the code) is borrowed for the call. Generated code only reaches memory
        // through the region table (windows of `mem`, refreshed whenever `mem` is used) and the
        // trampolines, which catch panics instead of unwinding into native frames.
        let r0 = unsafe {
            (program.code.entry)(
                ctx_ptr,
                0,
                0,
                CONTEXT_BASE,
                context_len,
                0,
                0,
                0,
                STACK_BASE + stack_size,
            )
        };
        self.executed = budget - ctx.remaining.min(budget);
        if let Some(payload) = ctx.panic.take() {
            std::panic::resume_unwind(payload);
        }
        if ctx.trap_kind != TRAP_NONE {
            return Err(take_trap(&mut ctx, program));
        }
        Ok(r0)
    }
}

/// A sized forwarder, so any host (a `dyn HelperHost` too) becomes a `&mut dyn HelperHost`.
struct Forward<'h, H: ?Sized>(&'h mut H);

impl<H: HelperHost + ?Sized> HelperHost for Forward<'_, H> {
    fn call(&mut self, id: u32, args: [u64; 5], mem: &mut Memory<'_>) -> Result<u64, HelperError> {
        self.0.call(id, args, mem)
    }

    fn call_with_callbacks(
        &mut self,
        id: u32,
        args: [u64; 5],
        mem: &mut Memory<'_>,
        callbacks: &mut dyn Callbacks,
    ) -> Result<u64, HelperError> {
        self.0.call_with_callbacks(id, args, mem, callbacks)
    }

    fn prepare(&mut self, mem: &mut Memory<'_>) -> Result<(), HelperError> {
        self.0.prepare(mem)
    }
}
