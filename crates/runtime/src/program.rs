//! [`Program`]: a loaded user-engine program, invocable from any thread. Each invocation takes
//! one CPU slot of its pin root ([`crate::cpu::CpuSlots::for_root`], exclusive across processes)
//! for its whole run, runs the checked [`Executable`] on
//! the interpreter with a fresh helper host, and releases the slot; traps are returned as values.
//!
//! A `Program` is a cheap `Arc` handle (`Clone + Send + Sync`); its maps live as long as any
//! handle of the object or its programs does.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use bpfmaps_obj::ProgramKind;
use bpfmaps_vm::{Access, Config, Executable, Trap, Vm};

use crate::cpu::CpuSlots;
use crate::helpers::Host;
use crate::loader::SharedMaps;
use crate::task::Task;

/// What a program is and needs to run.
#[derive(Debug)]
pub(crate) struct ProgramInner {
    pub name: String,
    pub section: String,
    pub kind: ProgramKind,
    pub exe: Executable,
    /// Map index of each fixed VM region (map values `lddw` references point at), by slot.
    pub fixed: Vec<usize>,
    pub shared: Arc<SharedMaps>,
    pub config: Config,
    /// The CPU slots of the pin root the maps live under.
    pub slots: &'static CpuSlots,
}

/// A loaded program of a [`crate::UserObject`].
#[derive(Clone, Debug)]
pub struct Program {
    inner: Arc<ProgramInner>,
}

/// The outcome of [`Program::test_run`], like `BPF_PROG_TEST_RUN`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunResult {
    /// The program's return value, truncated to 32 bits as the kernel reports it.
    pub retval: u32,
    /// Mean wall-clock time of one run, in nanoseconds.
    pub duration_ns: u64,
    /// Instructions the last run executed.
    pub instructions: u64,
}

thread_local! {
    /// One VM per thread, reused across invocations (its stack is the only allocation).
    static VM: RefCell<Option<Vm>> = const { RefCell::new(None) };
}

impl Program {
    pub(crate) fn new(inner: ProgramInner) -> Program {
        Program {
            inner: Arc::new(inner),
        }
    }

    /// The program's (function's) name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its ELF section.
    pub fn section(&self) -> &str {
        &self.inner.section
    }

    /// Its type, from the section.
    pub fn kind(&self) -> ProgramKind {
        self.inner.kind
    }

    /// The checked instructions.
    pub fn executable(&self) -> &Executable {
        &self.inner.exe
    }

    /// The VM configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Runs the program once on `context` on any free CPU slot (free in every process using the
    /// same pin root) and returns r0. A tracing
    /// program's context is read-only (as in the kernel), so `context` is never changed for
    /// those.
    pub fn run(&self, context: &mut [u8]) -> Result<u64, Trap> {
        let slot = self.inner.slots.acquire();
        self.run_as(slot.cpu(), context)
    }

    /// Runs the program once on CPU slot `cpu` (waiting for it to be free); `None` when there is
    /// no such CPU.
    pub fn run_on_cpu(&self, cpu: u32, context: &mut [u8]) -> Option<Result<u64, Trap>> {
        let slot = self.inner.slots.acquire_cpu(cpu)?;
        Some(self.run_as(slot.cpu(), context))
    }

    /// Runs the program once on `context` for `task` (a traced task, not the calling thread):
    /// the helpers that report or read the current task ask `task` (see [`crate::task`]). The
    /// invocation still takes any free CPU slot, which per-CPU maps use; the CPU
    /// `get_smp_processor_id` reports is the task's.
    pub fn run_for_task(&self, task: &dyn Task, context: &mut [u8]) -> Result<u64, Trap> {
        let slot = self.inner.slots.acquire();
        self.run_as_task(slot.cpu(), Some(task), context)
    }

    /// One run with the slot already held.
    fn run_as(&self, cpu: u32, context: &mut [u8]) -> Result<u64, Trap> {
        self.run_as_task(cpu, None, context)
    }

    fn run_as_task(
        &self,
        cpu: u32,
        task: Option<&dyn Task>,
        context: &mut [u8],
    ) -> Result<u64, Trap> {
        VM.with(|cell| {
            let mut cached = cell.borrow_mut();
            let vm = match cached.as_mut() {
                Some(vm) if vm.config() == &self.inner.config => vm,
                _ => cached.insert(Vm::new(self.inner.config.clone())),
            };
            self.run_with_task(vm, cpu, task, context)
        })
    }

    fn run_with(&self, vm: &mut Vm, cpu: u32, context: &mut [u8]) -> Result<u64, Trap> {
        self.run_with_task(vm, cpu, None, context)
    }

    fn run_with_task(
        &self,
        vm: &mut Vm,
        cpu: u32,
        task: Option<&dyn Task>,
        context: &mut [u8],
    ) -> Result<u64, Trap> {
        let mut host = Host::new(&self.inner, cpu);
        host.task = task;
        let result = if self.inner.config.context_access == Access::ReadOnly {
            vm.run_read_only(&self.inner.exe, context, &mut host)
        } else {
            vm.run(&self.inner.exe, context, &mut host)
        };
        host.finish();
        result
    }

    /// Runs the program `repeat` times (at least once) on a copy of `context`, on one CPU slot,
    /// and reports the last run's r0 and the mean duration, like `BPF_PROG_TEST_RUN`. The first
    /// trap ends the loop.
    pub fn test_run(&self, context: &[u8], repeat: u32) -> Result<TestRunResult, Trap> {
        let slot = self.inner.slots.acquire();
        let mut vm = Vm::new(self.inner.config.clone());
        let mut buffer = context.to_vec();
        let runs = repeat.max(1);
        let started = Instant::now();
        let mut r0 = 0;
        for _ in 0..runs {
            buffer.copy_from_slice(context);
            r0 = self.run_with(&mut vm, slot.cpu(), &mut buffer)?;
        }
        let elapsed = started.elapsed().as_nanos();
        let mean = elapsed / u128::from(runs);
        Ok(TestRunResult {
            retval: r0 as u32,
            duration_ns: u64::try_from(mean).unwrap_or(u64::MAX),
            instructions: vm.instructions_executed(),
        })
    }
}
