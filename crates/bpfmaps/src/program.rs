//! Programs on either engine: open an object ([`Object::open`]), set globals, load it on the user
//! engine or the kernel ([`Object::load`]), then invoke a program on a context buffer
//! ([`Program::test_run`], [`Program::invoke`]) and read its maps as [`Map`]s
//! ([`LoadedObject::maps`]), so every map operation works on them.
//!
//! On the user engine a program runs in this process on bpfmaps' interpreter
//! (`bpfmaps-runtime`); invocations are thread-safe and may come from any thread
//! ([`LoadedObject::user_program`] gives an owned, `Send + Sync` handle). On the kernel engine
//! `test_run` is `BPF_PROG_TEST_RUN`, which the kernel supports for some program types only:
//! raw tracepoints (the context is the `u64` arguments) and socket filters (the context is the
//! packet); tracepoint programs get [`ProgramError::NotTestRunnable`].
//!
//! ```no_run
//! use bpfmaps::program::Object;
//! use bpfmaps::Engine;
//! let mut object = Object::open("bpf/obj/array_counter.bpf.o".as_ref())?;
//! object.set_global("target_tgid", &0u32.to_ne_bytes())?;
//! let loaded = object.load(Engine::User)?;
//! let mut ctx = vec![0u8; 64];
//! ctx[16] = 5; // args[0] of a sys_enter tracepoint
//! let result = loaded.program("count_getpgid")?.test_run(&ctx, 1)?;
//! println!("r0 = {}, {} ns", result.retval, result.duration_ns);
//! for (name, map) in loaded.maps()? {
//!     println!("{name}: {:?}", map.info().map_type);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use bpfmaps_kernel::object::{KernelObject, LoadConfig, ObjectError, ProgramKind as KernelKind};
use bpfmaps_kernel::sys::{self, TestRun};
use bpfmaps_maps::UserMap;
use bpfmaps_runtime::{LoadOptions, RuntimeError, UserObject};

pub use bpfmaps_obj::{ObjectSpec, ProgramKind};
pub use bpfmaps_runtime::Program as UserProgram;
pub use bpfmaps_vm::Trap;

use crate::{Engine, Map};

/// Why an object could not be opened or loaded, or a program not run.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// The object could not be parsed or loaded on the user engine.
    #[error("user engine: {0}")]
    User(#[from] RuntimeError),
    /// The object could not be loaded on the kernel engine.
    #[error("kernel engine: {0}")]
    Kernel(#[from] ObjectError),
    /// A map of the loaded object could not be opened.
    #[error("opening map {map:?}: {source}")]
    Map {
        /// The map's name.
        map: String,
        /// Why.
        source: crate::Error,
    },
    /// The object has no program of this name.
    #[error("the object has no program named {0:?}")]
    NoSuchProgram(String),
    /// A map could not be resized before load.
    #[error(transparent)]
    MapTune(#[from] bpfmaps_obj::MapTuneError),
    /// The program trapped on the user engine (the trap names the instruction).
    #[error("program {program:?} trapped: {trap}")]
    Trap {
        /// The program's name.
        program: String,
        /// The trap.
        trap: Trap,
    },
    /// The engine cannot test-run this program type.
    #[error("{reason}")]
    NotTestRunnable {
        /// The program's name.
        program: String,
        /// A sentence saying why.
        reason: String,
    },
    /// `BPF_PROG_TEST_RUN` (or getting the program's fd) failed.
    #[error("program {program:?}: {message}")]
    TestRun {
        /// The program's name.
        program: String,
        /// What failed.
        message: String,
    },
}

/// An object file opened and not loaded yet: globals can be set.
#[derive(Clone, Debug)]
pub struct Object {
    path: PathBuf,
    spec: ObjectSpec,
    pin_dir: Option<PathBuf>,
    target_btf: Option<PathBuf>,
}

/// What one test run returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunResult {
    /// r0, truncated to 32 bits as `BPF_PROG_TEST_RUN` reports it.
    pub retval: u32,
    /// Mean duration of one run in nanoseconds (the kernel's measure where it gives one,
    /// wall-clock time around the runs otherwise).
    pub duration_ns: u64,
}

enum Loaded {
    User(UserObject),
    Kernel(Mutex<KernelObject>),
}

/// An object loaded on one engine: its maps exist and its programs are ready.
pub struct LoadedObject {
    loaded: Loaded,
    /// Program name → (section, kind), in name order.
    programs: BTreeMap<String, (String, ProgramKind)>,
}

/// A program of a [`LoadedObject`].
pub struct Program<'a> {
    object: &'a LoadedObject,
    name: String,
    section: String,
    kind: ProgramKind,
}

impl Object {
    /// Opens and parses the object file at `path` (nothing is created yet).
    pub fn open(path: &Path) -> Result<Object, ProgramError> {
        let spec = ObjectSpec::from_file(path).map_err(RuntimeError::from)?;
        Ok(Object {
            path: path.to_owned(),
            spec,
            pin_dir: None,
            target_btf: None,
        })
    }

    /// Sets global `name` (a `const volatile` in `.rodata`, or a `.data`/`.bss` variable) to
    /// `bytes` (exactly its size, in the target's byte order) for the next load.
    pub fn set_global(&mut self, name: &str, bytes: &[u8]) -> Result<(), ProgramError> {
        self.spec
            .set_global(name, bytes)
            .map_err(RuntimeError::from)?;
        Ok(())
    }

    /// Sets global `name` from text, parsed by its BTF type (`bool`, integers of every size and
    /// sign, `char` arrays as strings, `hex:…` raw bytes): see
    /// [`ObjectSpec::global_bytes_from_text`].
    pub fn set_global_text(&mut self, name: &str, text: &str) -> Result<(), ProgramError> {
        let bytes = self
            .spec
            .global_bytes_from_text(name, text)
            .map_err(RuntimeError::from)?;
        self.set_global(name, &bytes)
    }

    /// Sets map `name`'s max_entries before load (libbpf's `bpf_map__set_max_entries`).
    pub fn set_max_entries(&mut self, name: &str, max_entries: u32) -> Result<(), ProgramError> {
        Ok(self.spec.set_max_entries(name, max_entries)?)
    }

    /// Sets map `name`'s value size before load (libbpf's `bpf_map__set_value_size`).
    pub fn set_value_size(&mut self, name: &str, value_size: u32) -> Result<(), ProgramError> {
        Ok(self.spec.set_value_size(name, value_size)?)
    }

    /// Switches program `name` off: it is neither loaded nor attached (libbpf's
    /// `bpf_program__set_autoload(prog, false)`).
    pub fn set_autoload(&mut self, name: &str, autoload: bool) -> Result<(), ProgramError> {
        if self.spec.program(name).is_none() {
            return Err(ProgramError::NoSuchProgram(name.to_owned()));
        }
        if !autoload {
            self.spec
                .disable_program(name)
                .map_err(|e| ProgramError::NoSuchProgram(e.0))?;
        }
        Ok(())
    }

    /// This object with `dir` as the directory of `LIBBPF_PIN_BY_NAME` pins (on bpffs for the
    /// kernel engine, on the user engine's pin root file system for the user engine).
    pub fn with_pin_dir(mut self, dir: impl Into<PathBuf>) -> Object {
        self.pin_dir = Some(dir.into());
        self
    }

    /// This object with CO-RE relocations resolved against the BTF file at `path` (raw BTF or
    /// an ELF with `.BTF`) instead of the running kernel's. Applied by the user engine; the
    /// kernel engine relocates against the running kernel.
    pub fn with_target_btf(mut self, path: impl Into<PathBuf>) -> Object {
        self.target_btf = Some(path.into());
        self
    }

    /// The BTF file given with [`Object::with_target_btf`], if any.
    pub fn target_btf(&self) -> Option<&Path> {
        self.target_btf.as_deref()
    }

    /// The parsed object.
    pub fn spec(&self) -> &ObjectSpec {
        &self.spec
    }

    /// The file it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the object on `engine`: maps created (or reused from their pins), programs checked
    /// (user engine) or verified and loaded (kernel). Nothing is attached.
    pub fn load(&self, engine: Engine) -> Result<LoadedObject, ProgramError> {
        let programs = self
            .spec
            .programs
            .iter()
            .map(|p| (p.name.clone(), (p.section.clone(), p.kind)))
            .collect();
        let loaded = match engine {
            Engine::User => {
                let options = LoadOptions {
                    pin_dir: self.pin_dir.clone(),
                    vm_config: None,
                    target_btf: self.target_btf.clone(),
                };
                Loaded::User(UserObject::load(self.spec.clone(), &options)?)
            }
            Engine::Kernel => {
                // The globals are already in the spec's data maps.
                let mut config = LoadConfig::default();
                if let Some(dir) = &self.pin_dir {
                    config = config.with_pin_dir(dir.clone());
                }
                Loaded::Kernel(Mutex::new(KernelObject::load_spec(&self.spec, &config)?))
            }
        };
        Ok(LoadedObject { loaded, programs })
    }
}

impl LoadedObject {
    /// The engine the object is loaded on.
    pub fn engine(&self) -> Engine {
        match self.loaded {
            Loaded::User(_) => Engine::User,
            Loaded::Kernel(_) => Engine::Kernel,
        }
    }

    /// The names of the object's programs, sorted.
    pub fn program_names(&self) -> Vec<String> {
        self.programs.keys().cloned().collect()
    }

    /// The program named `name`.
    pub fn program(&self, name: &str) -> Result<Program<'_>, ProgramError> {
        let (section, kind) = self
            .programs
            .get(name)
            .ok_or_else(|| ProgramError::NoSuchProgram(name.to_owned()))?;
        Ok(Program {
            object: self,
            name: name.to_owned(),
            section: section.clone(),
            kind: *kind,
        })
    }

    /// An owned handle of user-engine program `name`, to invoke from any thread; `None` on the
    /// kernel engine or when there is no such program.
    pub fn user_program(&self, name: &str) -> Option<UserProgram> {
        match &self.loaded {
            Loaded::User(object) => object.program(name).ok().cloned(),
            Loaded::Kernel(_) => None,
        }
    }

    /// The user-engine object, when loaded there.
    pub fn as_user(&self) -> Option<&UserObject> {
        match &self.loaded {
            Loaded::User(object) => Some(object),
            Loaded::Kernel(_) => None,
        }
    }

    /// The kernel object (locked), when loaded there: attach its programs through it.
    pub fn as_kernel(&self) -> Option<MutexGuard<'_, KernelObject>> {
        match &self.loaded {
            Loaded::Kernel(object) => Some(object.lock().unwrap_or_else(|e| e.into_inner())),
            Loaded::User(_) => None,
        }
    }

    /// Every map of the object (declared maps and global-data maps) as a [`Map`], by the name
    /// the engine gives it (the kernel's 15-byte map name), sorted by name.
    pub fn maps(&self) -> Result<Vec<(String, Map)>, ProgramError> {
        let mut out = Vec::new();
        match &self.loaded {
            Loaded::User(object) => {
                for map in object.maps() {
                    let name = map.spec.def.name.clone();
                    let handle = UserMap::from_id(map.map.id()).map_err(|e| ProgramError::Map {
                        map: name.clone(),
                        source: e.into(),
                    })?;
                    out.push((name, Map::user(handle)));
                }
            }
            Loaded::Kernel(object) => {
                let object = object.lock().unwrap_or_else(|e| e.into_inner());
                let names: Vec<String> = object.maps().map(|m| m.def.name.clone()).collect();
                for name in names {
                    out.push((name.clone(), Map::kernel(object.map(&name)?)));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Pins every declared map at `dir/NAME` (`dir` on bpffs for the kernel engine, on the user
    /// engine's pin root file system for the user engine) and returns the paths.
    pub fn pin_maps(&self, dir: &Path) -> Result<Vec<PathBuf>, ProgramError> {
        match &self.loaded {
            Loaded::User(object) => Ok(object.pin_maps(dir)?),
            Loaded::Kernel(object) => {
                let object = object.lock().unwrap_or_else(|e| e.into_inner());
                Ok(object.pin_maps(dir)?)
            }
        }
    }
}

impl Program<'_> {
    /// The program's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its ELF section.
    pub fn section(&self) -> &str {
        &self.section
    }

    /// Its type.
    pub fn kind(&self) -> ProgramKind {
        self.kind
    }

    /// Runs the program once on `context` and returns r0 (all 64 bits on the user engine; on the
    /// kernel engine a test run's 32-bit retval).
    pub fn invoke(&self, context: &mut [u8]) -> Result<u64, ProgramError> {
        match &self.object.loaded {
            Loaded::User(object) => {
                object
                    .program(&self.name)?
                    .run(context)
                    .map_err(|trap| ProgramError::Trap {
                        program: self.name.clone(),
                        trap,
                    })
            }
            Loaded::Kernel(_) => Ok(u64::from(self.test_run(context, 1)?.retval)),
        }
    }

    /// Runs the program `repeat` times (at least once) on `context` and returns the last r0
    /// and the mean duration, like `BPF_PROG_TEST_RUN`.
    pub fn test_run(&self, context: &[u8], repeat: u32) -> Result<TestRunResult, ProgramError> {
        match &self.object.loaded {
            Loaded::User(object) => {
                let result = object
                    .program(&self.name)?
                    .test_run(context, repeat)
                    .map_err(|trap| ProgramError::Trap {
                        program: self.name.clone(),
                        trap,
                    })?;
                Ok(TestRunResult {
                    retval: result.retval,
                    duration_ns: result.duration_ns,
                })
            }
            Loaded::Kernel(object) => {
                let object = object.lock().unwrap_or_else(|e| e.into_inner());
                self.kernel_test_run(&object, context, repeat)
            }
        }
    }

    fn kernel_test_run(
        &self,
        object: &KernelObject,
        context: &[u8],
        repeat: u32,
    ) -> Result<TestRunResult, ProgramError> {
        let not_runnable = |reason: &str| ProgramError::NotTestRunnable {
            program: self.name.clone(),
            reason: reason.to_owned(),
        };
        let kind = object
            .program(&self.name)
            .map(|p| p.kind)
            .ok_or_else(|| ProgramError::NoSuchProgram(self.name.clone()))?;
        let failed = |message: String| ProgramError::TestRun {
            program: self.name.clone(),
            message,
        };
        let fd = object
            .program_fd(&self.name)
            .ok_or_else(|| ProgramError::NoSuchProgram(self.name.clone()))?;
        match kind {
            KernelKind::RawTracePoint => {
                // The kernel runs raw tracepoint programs once per call (repeat must be 0) and
                // reports no duration: time the calls here.
                let runs = repeat.max(1);
                let run = TestRun {
                    ctx_in: context,
                    ..TestRun::default()
                };
                let started = Instant::now();
                let mut retval = 0;
                for _ in 0..runs {
                    retval = sys::prog_test_run(fd.as_fd(), &run)
                        .map_err(|e| failed(e.to_string()))?
                        .retval;
                }
                let mean = started.elapsed().as_nanos() / u128::from(runs);
                Ok(TestRunResult {
                    retval,
                    duration_ns: u64::try_from(mean).unwrap_or(u64::MAX),
                })
            }
            KernelKind::SocketFilter => {
                let run = TestRun {
                    data_in: context,
                    repeat: repeat.max(1),
                    ..TestRun::default()
                };
                let result = sys::prog_test_run(fd.as_fd(), &run).map_err(|e| failed(e.to_string()))?;
                Ok(TestRunResult {
                    retval: result.retval,
                    duration_ns: u64::from(result.duration_ns),
                })
            }
            KernelKind::TracePoint => Err(not_runnable(
                "the kernel cannot test-run tracepoint programs (BPF_PROG_TEST_RUN gives ENOTSUPP); \
                 use --engine user, or fire the tracepoint with `bpfmaps run`",
            )),
            other => Err(not_runnable(&format!(
                "the kernel cannot test-run {other} programs with BPF_PROG_TEST_RUN; use --engine user"
            ))),
        }
    }
}

/// Loaded objects and user-engine program handles are shared between threads: invocations may
/// come from any thread.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<LoadedObject>();
    shareable::<UserProgram>();
};
