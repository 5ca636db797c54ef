//! Attaching a loaded object's programs by their section names, as libbpf's auto-attach does,
//! through bpfmaps' own syscalls ([`crate::sys`]):
//!
//! | section | attached with |
//! | --- | --- |
//! | `tracepoint/CAT/NAME`, `tp/CAT/NAME` | perf_event_open of the tracefs event id, `PERF_EVENT_IOC_SET_BPF`, `ENABLE` |
//! | `raw_tracepoint/NAME`, `raw_tp/NAME` | `BPF_RAW_TRACEPOINT_OPEN` with the name |
//! | `tp_btf/NAME`, `fentry/F`, `fexit/F`, `lsm/H` | `BPF_RAW_TRACEPOINT_OPEN` without a name (the target was given at load) |
//! | `uprobe/PATH:SYMBOL[+OFF]`, `uretprobe/…` | the uprobe PMU (`/sys/bus/event_source/devices/uprobe`) at the symbol's file offset |
//! | `kprobe/F`, `kretprobe/F` | the kprobe PMU, when the kernel has one (`CONFIG_KPROBES`) |
//! | `perf_event` | a software CPU clock event per CPU, sampling at [`AttachOptions::perf_event`] |
//!
//! A `uprobe` section that names no target takes one from [`AttachOptions::uprobes`]. An
//! [`Attachment`] detaches its program when dropped (closing its perf event or link fds).
//!
//! tracefs is mounted on demand before the first tracepoint attach.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use bpfmaps_abi::Errno;

use crate::object::{KernelObject, ProgramKind};
use crate::sys::{self, PerfEventSpec, SysError};

/// A user-space probe target: a file and a symbol in it (plus an offset), or a raw file offset.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UprobeTarget {
    /// The executable or shared library.
    pub path: PathBuf,
    /// The function symbol; `None` when `offset` is a file offset on its own.
    pub symbol: Option<String>,
    /// Bytes past the symbol, or the file offset when there is no symbol.
    pub offset: u64,
}

impl UprobeTarget {
    /// Parses libbpf's `PATH:SYMBOL`, `PATH:SYMBOL+OFF` or `PATH:OFF` (decimal or `0x` hex).
    ///
    /// ```
    /// use bpfmaps_kernel::attach::UprobeTarget;
    /// let t = UprobeTarget::parse("/bin/true:main+0x4").unwrap();
    /// assert_eq!((t.path.to_str(), t.symbol.as_deref(), t.offset), (Some("/bin/true"), Some("main"), 4));
    /// assert!(UprobeTarget::parse("/bin/true").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<UprobeTarget, String> {
        let (path, target) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}`: expected PATH:SYMBOL[+OFFSET] or PATH:OFFSET"))?;
        if path.is_empty() || target.is_empty() {
            return Err(format!(
                "`{text}`: expected PATH:SYMBOL[+OFFSET] or PATH:OFFSET"
            ));
        }
        let number = |s: &str| -> Result<u64, String> {
            let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.map_err(|_| format!("`{text}`: `{s}` is not an offset (decimal or 0x hex)"))
        };
        if target.as_bytes()[0].is_ascii_digit() {
            return Ok(UprobeTarget {
                path: path.into(),
                symbol: None,
                offset: number(target)?,
            });
        }
        let (symbol, offset) = match target.split_once('+') {
            Some((symbol, offset)) => (symbol, number(offset)?),
            None => (target, 0),
        };
        if symbol.is_empty() {
            return Err(format!("`{text}`: empty symbol name"));
        }
        Ok(UprobeTarget {
            path: path.into(),
            symbol: Some(symbol.to_owned()),
            offset,
        })
    }
}

impl fmt::Display for UprobeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.symbol {
            Some(symbol) if self.offset == 0 => write!(f, "{}:{symbol}", self.path.display()),
            Some(symbol) => write!(f, "{}:{symbol}+{:#x}", self.path.display(), self.offset),
            None => write!(f, "{}:{:#x}", self.path.display(), self.offset),
        }
    }
}

/// Where a section name says to attach a program.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttachPoint {
    /// A tracefs event: `/sys/kernel/tracing/events/CATEGORY/NAME`.
    TracePoint {
        /// The event category (`syscalls`).
        category: String,
        /// The event name (`sys_enter_openat`).
        name: String,
    },
    /// A raw tracepoint (`sys_enter`).
    RawTracePoint {
        /// The tracepoint name.
        name: String,
    },
    /// A BTF raw tracepoint (`tp_btf/sched_switch`), the target given at load.
    TpBtf {
        /// The tracepoint name.
        name: String,
    },
    /// A user-space probe.
    Uprobe {
        /// Where.
        target: UprobeTarget,
        /// True for `uretprobe`: on return.
        retprobe: bool,
    },
    /// A kernel probe (`kprobe/FUNC[+OFF]`).
    Kprobe {
        /// The kernel function.
        function: String,
        /// True for `kretprobe`.
        retprobe: bool,
    },
    /// A BPF trampoline (`fentry/FUNC`, `fexit/FUNC`), the target given at load.
    Trampoline {
        /// The kernel function.
        function: String,
        /// True for `fexit`.
        exit: bool,
    },
    /// An LSM hook (`lsm/HOOK`), the target given at load.
    Lsm {
        /// The hook.
        hook: String,
    },
    /// Sampling software events, one per CPU (`perf_event`).
    PerfEvent,
}

impl AttachPoint {
    /// The attach point a libbpf section name designates, or `None` when the section does not
    /// name one (a `uprobe` without a target, a socket filter, an unknown section).
    ///
    /// ```
    /// use bpfmaps_kernel::attach::AttachPoint;
    /// assert_eq!(
    ///     AttachPoint::from_section("tp/syscalls/sys_enter_openat"),
    ///     Some(AttachPoint::TracePoint {
    ///         category: "syscalls".into(),
    ///         name: "sys_enter_openat".into()
    ///     })
    /// );
    /// assert_eq!(
    ///     AttachPoint::from_section("raw_tp/sys_enter"),
    ///     Some(AttachPoint::RawTracePoint { name: "sys_enter".into() })
    /// );
    /// assert_eq!(AttachPoint::from_section("tracepoint/no_name"), None);
    /// assert_eq!(AttachPoint::from_section("uprobe"), None);
    /// ```
    pub fn from_section(section: &str) -> Option<AttachPoint> {
        let non_empty = |s: &str| !s.is_empty() && !s.contains('/');
        let (prefix, rest) = section.split_once('/').unwrap_or((section, ""));
        match prefix {
            "tracepoint" | "tp" => {
                let (category, name) = rest.split_once('/')?;
                (non_empty(category) && non_empty(name)).then(|| AttachPoint::TracePoint {
                    category: category.to_owned(),
                    name: name.to_owned(),
                })
            }
            "raw_tracepoint" | "raw_tp" => non_empty(rest).then(|| AttachPoint::RawTracePoint {
                name: rest.to_owned(),
            }),
            "tp_btf" => non_empty(rest).then(|| AttachPoint::TpBtf {
                name: rest.to_owned(),
            }),
            "uprobe" | "uretprobe" | "uprobe.s" | "uretprobe.s" => {
                let target = UprobeTarget::parse(rest).ok()?;
                Some(AttachPoint::Uprobe {
                    target,
                    retprobe: prefix.starts_with("uret"),
                })
            }
            "kprobe" | "kretprobe" => non_empty(rest).then(|| AttachPoint::Kprobe {
                function: rest.to_owned(),
                retprobe: prefix == "kretprobe",
            }),
            "fentry" | "fexit" | "fentry.s" | "fexit.s" => {
                non_empty(rest).then(|| AttachPoint::Trampoline {
                    function: rest.to_owned(),
                    exit: prefix.starts_with("fexit"),
                })
            }
            "lsm" | "lsm.s" => non_empty(rest).then(|| AttachPoint::Lsm {
                hook: rest.to_owned(),
            }),
            "perf_event" if rest.is_empty() => Some(AttachPoint::PerfEvent),
            _ => None,
        }
    }
}

impl fmt::Display for AttachPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachPoint::TracePoint { category, name } => write!(f, "tracepoint {category}:{name}"),
            AttachPoint::RawTracePoint { name } => write!(f, "raw tracepoint {name}"),
            AttachPoint::TpBtf { name } => write!(f, "BTF tracepoint {name}"),
            AttachPoint::Uprobe { target, retprobe } => write!(
                f,
                "{} {target}",
                if *retprobe { "uretprobe" } else { "uprobe" }
            ),
            AttachPoint::Kprobe { function, retprobe } => write!(
                f,
                "{} {function}",
                if *retprobe { "kretprobe" } else { "kprobe" }
            ),
            AttachPoint::Trampoline { function, exit } => {
                write!(f, "{} {function}", if *exit { "fexit" } else { "fentry" })
            }
            AttachPoint::Lsm { hook } => write!(f, "LSM hook {hook}"),
            AttachPoint::PerfEvent => f.write_str("CPU clock perf events"),
        }
    }
}

/// How `perf_event` programs sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PerfSampling {
    /// `freq=N`: N samples per second per CPU.
    Frequency(u64),
    /// `period=N`: one sample every N nanoseconds of CPU clock.
    Period(u64),
}

impl Default for PerfSampling {
    /// 49 Hz, libbpf-tools' `profile` default.
    fn default() -> PerfSampling {
        PerfSampling::Frequency(49)
    }
}

impl PerfSampling {
    /// Parses `freq=N` or `period=N` (N > 0).
    pub fn parse(text: &str) -> Result<PerfSampling, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}`: expected freq=N or period=N"))?;
        let n: u64 = value
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("`{text}`: `{value}` is not a positive integer"))?;
        match key {
            "freq" => Ok(PerfSampling::Frequency(n)),
            "period" => Ok(PerfSampling::Period(n)),
            _ => Err(format!(
                "`{text}`: unknown option `{key}` (freq=N or period=N)"
            )),
        }
    }
}

/// What attaching needs beyond the section names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// Targets of `uprobe`/`uretprobe` programs, by program name (for a section that names
    /// none, or to override the section's).
    pub uprobes: BTreeMap<String, UprobeTarget>,
    /// How `perf_event` programs sample.
    pub perf_event: PerfSampling,
    /// Report a program that cannot be attached and go on with the others, instead of failing.
    pub skip_unattachable: bool,
}

/// Why a program could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The object has no program of this name.
    #[error("the object has no program named {0:?}")]
    NoSuchProgram(String),
    /// The program's section names no attach point bpfmaps knows.
    #[error(
        "program {program:?} is in section {section:?}, which names nothing to attach to{hint}"
    )]
    NoAttachPoint {
        /// The program.
        program: String,
        /// Its section.
        section: String,
        /// What would help (`--uprobe` for a uprobe).
        hint: String,
    },
    /// The section names an attach point of another kind than the loaded program.
    #[error("program {program:?} cannot attach to {point}: it was loaded as another kind")]
    KindMismatch {
        /// The program.
        program: String,
        /// The attach point.
        point: AttachPoint,
    },
    /// This kernel cannot attach programs there at all.
    #[error("program {program:?} cannot attach to {point}: {reason}")]
    Unsupported {
        /// The program.
        program: String,
        /// The attach point.
        point: AttachPoint,
        /// Why, naming the missing kernel feature.
        reason: String,
    },
    /// The attach point does not exist on this machine (a tracepoint, a symbol).
    #[error("program {program:?} cannot attach to {point}: {reason}")]
    NoSuchTarget {
        /// The program.
        program: String,
        /// The attach point.
        point: AttachPoint,
        /// What is missing.
        reason: String,
    },
    /// tracefs is not mounted and could not be mounted.
    #[error("mounting tracefs: {0}")]
    Tracefs(#[source] crate::Error),
    /// The kernel refused the attachment.
    #[error("attaching program {program:?} to {point}: {source}")]
    Attach {
        /// The program.
        program: String,
        /// The attach point.
        point: AttachPoint,
        /// The failing call and errno.
        source: SysError,
    },
}

/// One attached program. Dropping it detaches the program; the program itself stays loaded in
/// its [`KernelObject`].
#[derive(Debug)]
pub struct Attachment {
    program: String,
    point: AttachPoint,
    /// Perf event fds or BPF link fds: closing them detaches.
    links: Vec<OwnedFd>,
}

impl Attachment {
    /// The attached program's name.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Where it is attached.
    pub fn point(&self) -> &AttachPoint {
        &self.point
    }

    /// Detaches now (dropping does the same).
    pub fn detach(self) -> Result<(), AttachError> {
        drop(self.links);
        Ok(())
    }
}

/// What [`KernelObject::attach_all_with`] did.
#[derive(Debug, Default)]
pub struct AttachReport {
    /// The programs attached, in name order.
    pub attached: Vec<Attachment>,
    /// The programs skipped under [`AttachOptions::skip_unattachable`], with why.
    pub skipped: Vec<AttachError>,
}

/// A dynamic PMU's `type` and the config bit of its `retprobe` format (kprobe, uprobe).
fn probe_pmu(name: &str) -> Option<(u32, u32)> {
    let base = Path::new("/sys/bus/event_source/devices").join(name);
    let type_ = std::fs::read_to_string(base.join("type"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // `config:0`: the bit of `config` that makes a return probe.
    let bit = std::fs::read_to_string(base.join("format/retprobe"))
        .ok()
        .and_then(|s| s.trim().strip_prefix("config:")?.parse().ok())
        .unwrap_or(0);
    Some((type_, bit))
}

/// The file offset of `symbol` (plus `offset`) in the ELF file at `path`, as the uprobe PMU
/// wants it: the symbol's address mapped through the loadable segment that contains it.
pub fn symbol_file_offset(path: &Path, symbol: &str, offset: u64) -> Result<u64, String> {
    use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file = object::File::parse(&*data)
        .map_err(|e| format!("{} is not an ELF file: {e}", path.display()))?;
    let address = file
        .symbols()
        .chain(file.dynamic_symbols())
        .find(|s| s.name() == Ok(symbol) && s.is_definition() && s.address() != 0)
        .map(|s| s.address())
        .ok_or_else(|| format!("{} has no symbol {symbol:?}", path.display()))?;
    let segment = file
        .segments()
        .find(|seg| address >= seg.address() && address - seg.address() < seg.size())
        .ok_or_else(|| {
            format!(
                "symbol {symbol:?} of {} lies in no loadable segment",
                path.display()
            )
        })?;
    let (file_start, _) = segment.file_range();
    Ok(address - segment.address() + file_start + offset)
}

/// Opens `spec` on the given pid/cpu, runs `prog` on it and enables it.
fn perf_attach(
    spec: &PerfEventSpec,
    cpu: i32,
    prog: std::os::fd::BorrowedFd<'_>,
) -> Result<OwnedFd, SysError> {
    let event = sys::perf_event_open(spec, -1, cpu)?;
    sys::perf_event_set_bpf(event.as_fd(), prog)?;
    sys::perf_event_enable(event.as_fd())?;
    Ok(event)
}

impl KernelObject {
    /// Attaches the program `name` where its section says.
    pub fn attach(&mut self, name: &str) -> Result<Attachment, AttachError> {
        self.attach_with(name, &AttachOptions::default())
    }

    /// Attaches the program `name` where its section (or `options`) says.
    pub fn attach_with(
        &self,
        name: &str,
        options: &AttachOptions,
    ) -> Result<Attachment, AttachError> {
        let program = self
            .program(name)
            .ok_or_else(|| AttachError::NoSuchProgram(name.to_owned()))?
            .clone();
        let prog = self
            .program_fd(name)
            .ok_or_else(|| AttachError::NoSuchProgram(name.to_owned()))?;
        let point = match (options.uprobes.get(name), program.kind) {
            (Some(target), ProgramKind::UProbe) => AttachPoint::Uprobe {
                target: target.clone(),
                retprobe: program.section.starts_with("uret"),
            },
            _ => AttachPoint::from_section(&program.section).ok_or_else(|| {
                AttachError::NoAttachPoint {
                    program: name.to_owned(),
                    section: program.section.clone(),
                    hint: if program.kind == ProgramKind::UProbe {
                        format!("; give a target with --uprobe {name}=PATH:SYMBOL")
                    } else {
                        String::new()
                    },
                }
            })?,
        };
        let attach_error = |source: SysError| AttachError::Attach {
            program: name.to_owned(),
            point: point.clone(),
            source,
        };
        let expected = match &point {
            AttachPoint::TracePoint { .. } => ProgramKind::TracePoint,
            AttachPoint::RawTracePoint { .. } => ProgramKind::RawTracePoint,
            AttachPoint::TpBtf { .. } => ProgramKind::TpBtf,
            AttachPoint::Uprobe { .. } => ProgramKind::UProbe,
            AttachPoint::Kprobe { .. } => ProgramKind::KProbe,
            AttachPoint::Trampoline { .. } => ProgramKind::Trampoline,
            AttachPoint::Lsm { .. } => ProgramKind::Lsm,
            AttachPoint::PerfEvent => ProgramKind::PerfEvent,
        };
        if expected != program.kind {
            return Err(AttachError::KindMismatch {
                program: name.to_owned(),
                point,
            });
        }
        let links = match &point {
            AttachPoint::TracePoint {
                category,
                name: event,
            } => {
                crate::fs::ensure_tracefs().map_err(AttachError::Tracefs)?;
                let id_path = Path::new(crate::fs::TRACEFS_PATH)
                    .join("events")
                    .join(category)
                    .join(event)
                    .join("id");
                let id: u64 = match std::fs::read_to_string(&id_path) {
                    Ok(text) => text.trim().parse().map_err(|_| AttachError::NoSuchTarget {
                        program: name.to_owned(),
                        point: point.clone(),
                        reason: format!("{} does not hold an event id", id_path.display()),
                    })?,
                    Err(e) => {
                        return Err(AttachError::NoSuchTarget {
                            program: name.to_owned(),
                            point: point.clone(),
                            reason: format!(
                                "this kernel has no such tracepoint ({}: {})",
                                id_path.display(),
                                Errno(e.raw_os_error().unwrap_or(0))
                            ),
                        })
                    }
                };
                let spec = PerfEventSpec {
                    type_: sys::PERF_TYPE_TRACEPOINT,
                    config: id,
                    sample_period_or_freq: 1,
                    ..Default::default()
                };
                vec![perf_attach(&spec, 0, prog).map_err(attach_error)?]
            }
            AttachPoint::RawTracePoint { name: tracepoint } => {
                match sys::raw_tracepoint_open(prog, Some(tracepoint)) {
                    Ok(link) => vec![link],
                    Err(e) if e.errno == Errno::ENOENT => {
                        return Err(AttachError::NoSuchTarget {
                            program: name.to_owned(),
                            point: point.clone(),
                            reason: format!("this kernel has no raw tracepoint {tracepoint:?}"),
                        })
                    }
                    Err(e) => return Err(attach_error(e)),
                }
            }
            AttachPoint::TpBtf { .. } | AttachPoint::Lsm { .. } => {
                vec![sys::raw_tracepoint_open(prog, None).map_err(attach_error)?]
            }
            AttachPoint::Trampoline { .. } => match sys::raw_tracepoint_open(prog, None) {
                Ok(link) => vec![link],
                Err(e) if matches!(e.errno, Errno::EPERM | Errno::ENOTSUPP | Errno::EOPNOTSUPP) => {
                    return Err(AttachError::Unsupported {
                        program: name.to_owned(),
                        point: point.clone(),
                        reason: format!(
                            "this kernel refuses BPF trampolines ({e}); attach to a tp_btf or \
                             raw tracepoint instead, or --skip {name}"
                        ),
                    })
                }
                Err(e) => return Err(attach_error(e)),
            },
            AttachPoint::Uprobe { target, retprobe } => {
                let (type_, bit) = probe_pmu("uprobe").ok_or_else(|| AttachError::Unsupported {
                    program: name.to_owned(),
                    point: point.clone(),
                    reason: "this kernel has no uprobe PMU (CONFIG_UPROBE_EVENTS is off)".into(),
                })?;
                let file_offset = match &target.symbol {
                    Some(symbol) => symbol_file_offset(&target.path, symbol, target.offset)
                        .map_err(|reason| AttachError::NoSuchTarget {
                            program: name.to_owned(),
                            point: point.clone(),
                            reason,
                        })?,
                    None => target.offset,
                };
                let path =
                    path_cstring(&target.path).map_err(|reason| AttachError::NoSuchTarget {
                        program: name.to_owned(),
                        point: point.clone(),
                        reason,
                    })?;
                let spec = PerfEventSpec {
                    type_,
                    config: if *retprobe { 1 << bit } else { 0 },
                    config1: path.as_ptr() as u64,
                    config2: file_offset,
                    sample_period_or_freq: 1,
                    ..Default::default()
                };
                vec![perf_attach(&spec, 0, prog).map_err(attach_error)?]
            }
            AttachPoint::Kprobe { function, retprobe } => {
                let (type_, bit) = probe_pmu("kprobe").ok_or_else(|| AttachError::Unsupported {
                    program: name.to_owned(),
                    point: point.clone(),
                    reason: "this kernel has no kprobes (CONFIG_KPROBES is off: no kprobe PMU \
                             in /sys/bus/event_source/devices); use a tracepoint, raw_tp or \
                             tp_btf program, or --skip-unattachable"
                        .into(),
                })?;
                let (func, offset) = match function.split_once('+') {
                    Some((f, off)) => (f, off.trim_start_matches("0x")),
                    None => (function.as_str(), "0"),
                };
                let offset = u64::from_str_radix(offset, 16).unwrap_or(0);
                let c_func = CString::new(func).map_err(|_| AttachError::NoSuchTarget {
                    program: name.to_owned(),
                    point: point.clone(),
                    reason: "the function name has a NUL byte".into(),
                })?;
                let spec = PerfEventSpec {
                    type_,
                    config: if *retprobe { 1 << bit } else { 0 },
                    config1: c_func.as_ptr() as u64,
                    config2: offset,
                    sample_period_or_freq: 1,
                    ..Default::default()
                };
                vec![perf_attach(&spec, 0, prog).map_err(attach_error)?]
            }
            AttachPoint::PerfEvent => {
                let (freq, value) = match options.perf_event {
                    PerfSampling::Frequency(n) => (true, n),
                    PerfSampling::Period(n) => (false, n),
                };
                let spec = PerfEventSpec {
                    type_: sys::PERF_TYPE_SOFTWARE_EVENT,
                    config: sys::PERF_COUNT_SW_CPU_CLOCK,
                    sample_period_or_freq: value,
                    freq,
                    ..Default::default()
                };
                let cpus = crate::map::possible_cpus().map_err(|e| AttachError::Unsupported {
                    program: name.to_owned(),
                    point: point.clone(),
                    reason: e.to_string(),
                })?;
                let mut links = Vec::new();
                for cpu in 0..cpus {
                    let cpu = i32::try_from(cpu).unwrap_or(i32::MAX);
                    match perf_attach(&spec, cpu, prog) {
                        Ok(link) => links.push(link),
                        // A possible CPU that is offline has no events.
                        Err(e) if e.errno == Errno::ENODEV => {}
                        Err(e) => return Err(attach_error(e)),
                    }
                }
                links
            }
        };
        Ok(Attachment {
            program: name.to_owned(),
            point,
            links,
        })
    }

    /// Attaches every program of the object, in name order. Fails (detaching what was attached)
    /// when a program cannot be attached.
    pub fn attach_all(&mut self) -> Result<Vec<Attachment>, AttachError> {
        Ok(self.attach_all_with(&AttachOptions::default())?.attached)
    }

    /// Attaches every program of the object, in name order, with `options`. Without
    /// [`AttachOptions::skip_unattachable`] the first failure is the error (and what was
    /// attached is detached); with it, failures are collected in [`AttachReport::skipped`].
    pub fn attach_all_with(&self, options: &AttachOptions) -> Result<AttachReport, AttachError> {
        let names: Vec<String> = self.programs().map(|p| p.name.clone()).collect();
        let mut report = AttachReport::default();
        for name in names {
            match self.attach_with(&name, options) {
                Ok(attachment) => report.attached.push(attachment),
                Err(e) if options.skip_unattachable => report.skipped.push(e),
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}

fn path_cstring(path: &Path) -> Result<CString, String> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} has a NUL byte", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_names() {
        let tp = |c: &str, n: &str| {
            Some(AttachPoint::TracePoint {
                category: c.into(),
                name: n.into(),
            })
        };
        assert_eq!(
            AttachPoint::from_section("tracepoint/syscalls/sys_enter_openat"),
            tp("syscalls", "sys_enter_openat")
        );
        assert_eq!(
            AttachPoint::from_section("tp/sched/sched_switch"),
            tp("sched", "sched_switch")
        );
        assert_eq!(
            AttachPoint::from_section("raw_tracepoint/sys_enter"),
            Some(AttachPoint::RawTracePoint {
                name: "sys_enter".into()
            })
        );
        assert_eq!(
            AttachPoint::from_section("tp_btf/sched_switch"),
            Some(AttachPoint::TpBtf {
                name: "sched_switch".into()
            })
        );
        assert_eq!(
            AttachPoint::from_section("uretprobe//usr/lib/libc.so.6:malloc+16"),
            Some(AttachPoint::Uprobe {
                target: UprobeTarget {
                    path: "/usr/lib/libc.so.6".into(),
                    symbol: Some("malloc".into()),
                    offset: 16
                },
                retprobe: true
            })
        );
        assert_eq!(
            AttachPoint::from_section("kretprobe/do_unlinkat"),
            Some(AttachPoint::Kprobe {
                function: "do_unlinkat".into(),
                retprobe: true
            })
        );
        assert_eq!(
            AttachPoint::from_section("fexit/do_unlinkat"),
            Some(AttachPoint::Trampoline {
                function: "do_unlinkat".into(),
                exit: true
            })
        );
        assert_eq!(
            AttachPoint::from_section("perf_event"),
            Some(AttachPoint::PerfEvent)
        );
        for bad in [
            "tracepoint/",
            "tracepoint/syscalls",
            "tracepoint/syscalls/",
            "tracepoint//x",
            "tracepoint/a/b/c",
            "raw_tp/",
            "raw_tp/a/b",
            "tp_btf/",
            "uprobe",
            "uprobe/",
            "uprobe/path_only",
            "kprobe/",
            "socket",
            ".text",
        ] {
            assert_eq!(AttachPoint::from_section(bad), None, "{bad}");
        }
    }

    #[test]
    fn uprobe_targets() {
        let t = UprobeTarget::parse("/bin/x:0x1000").unwrap();
        assert_eq!((t.symbol, t.offset), (None, 0x1000));
        let t = UprobeTarget::parse("/bin/x:f").unwrap();
        assert_eq!((t.symbol.as_deref(), t.offset), (Some("f"), 0));
        for bad in [
            "/bin/x",
            ":f",
            "/bin/x:",
            "/bin/x:f+zz",
            "/bin/x:+4",
            "/bin/x:12q",
        ] {
            assert!(UprobeTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn perf_sampling_options() {
        assert_eq!(
            PerfSampling::parse("freq=99"),
            Ok(PerfSampling::Frequency(99))
        );
        assert_eq!(
            PerfSampling::parse("period=1000000"),
            Ok(PerfSampling::Period(1_000_000))
        );
        for bad in ["freq", "freq=0", "freq=-1", "hz=9", "freq=x"] {
            assert!(PerfSampling::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_symbols_resolve_to_file_offsets() {
        let exe = std::env::current_exe().unwrap();
        let offset = symbol_file_offset(&exe, "main", 0).unwrap();
        assert!(offset > 0);
        assert_eq!(symbol_file_offset(&exe, "main", 4).unwrap(), offset + 4);
        assert!(symbol_file_offset(&exe, "no_such_symbol_here", 0).is_err());
        assert!(symbol_file_offset(Path::new("/nonexistent"), "main", 0).is_err());
    }

    #[test]
    fn display() {
        let p = AttachPoint::TracePoint {
            category: "syscalls".into(),
            name: "x".into(),
        };
        assert_eq!(p.to_string(), "tracepoint syscalls:x");
        let p = AttachPoint::RawTracePoint {
            name: "sys_enter".into(),
        };
        assert_eq!(p.to_string(), "raw tracepoint sys_enter");
    }
}
