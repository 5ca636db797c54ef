//! Attaching a loaded object's programs by their section names, as libbpf's auto-attach does:
//! `tracepoint/CAT/NAME` (or `tp/CAT/NAME`) to the tracefs event `CAT:NAME`, and
//! `raw_tracepoint/NAME` (or `raw_tp/NAME`) to the raw tracepoint `NAME`. An [`Attachment`]
//! detaches its program when dropped.
//!
//! It does not load programs ([`crate::object`]) and knows no other program kinds: kprobes do not
//! exist on this project's kernels, and uprobes or perf events need a target the section name does
//! not give.
//!
//! tracefs is mounted on demand before the first tracepoint attach (aya looks for it once per
//! process, at its first tracepoint attach, and remembers the answer).

use std::fmt;

use aya::programs::raw_trace_point::RawTracePointLink;
use aya::programs::trace_point::TracePointLink;
use aya::programs::{Program, ProgramError};

use crate::object::KernelObject;

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
}

impl AttachPoint {
    /// The attach point a libbpf section name designates, or `None` when the section does not
    /// name one (or names a kind bpfmaps does not attach).
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
    /// ```
    pub fn from_section(section: &str) -> Option<AttachPoint> {
        let non_empty = |s: &str| !s.is_empty() && !s.contains('/');
        if let Some(rest) = section
            .strip_prefix("tracepoint/")
            .or_else(|| section.strip_prefix("tp/"))
        {
            let (category, name) = rest.split_once('/')?;
            return (non_empty(category) && non_empty(name)).then(|| AttachPoint::TracePoint {
                category: category.to_owned(),
                name: name.to_owned(),
            });
        }
        if let Some(name) = section
            .strip_prefix("raw_tracepoint/")
            .or_else(|| section.strip_prefix("raw_tp/"))
        {
            return non_empty(name).then(|| AttachPoint::RawTracePoint {
                name: name.to_owned(),
            });
        }
        None
    }
}

impl fmt::Display for AttachPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachPoint::TracePoint { category, name } => write!(f, "tracepoint {category}:{name}"),
            AttachPoint::RawTracePoint { name } => write!(f, "raw tracepoint {name}"),
        }
    }
}

/// Why a program could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The object has no program of this name.
    #[error("the object has no program named {0:?}")]
    NoSuchProgram(String),
    /// The program's section names no attach point bpfmaps knows.
    #[error(
        "program {program:?} is in section {section:?}, which names no tracepoint or raw \
         tracepoint to attach to"
    )]
    NoAttachPoint {
        /// The program.
        program: String,
        /// Its section.
        section: String,
    },
    /// The section names an attach point of another kind than the loaded program.
    #[error("program {program:?} cannot attach to {point}: it was loaded as another kind")]
    KindMismatch {
        /// The program.
        program: String,
        /// The attach point.
        point: AttachPoint,
    },
    /// tracefs is not mounted and could not be mounted.
    #[error("mounting tracefs: {0}")]
    Tracefs(#[source] crate::Error),
    /// The kernel refused the attachment (unknown tracepoint, …).
    #[error("attaching program {program:?} to {point}: {source}")]
    Attach {
        /// The program.
        program: String,
        /// The attach point.
        point: AttachPoint,
        /// aya's error, with the failing call and errno.
        source: Box<ProgramError>,
    },
}

/// The kernel link of one attachment; dropping it detaches.
#[derive(Debug)]
enum Link {
    TracePoint(TracePointLink),
    RawTracePoint(RawTracePointLink),
}

/// One attached program. Dropping it detaches the program; the program itself stays loaded in
/// its [`KernelObject`].
#[derive(Debug)]
pub struct Attachment {
    program: String,
    point: AttachPoint,
    link: Link,
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

    /// Detaches now (dropping does the same, ignoring errors).
    pub fn detach(self) -> Result<(), AttachError> {
        use aya::programs::Link as _;
        let Attachment {
            program,
            point,
            link,
        } = self;
        let result = match link {
            Link::TracePoint(link) => link.detach(),
            Link::RawTracePoint(link) => link.detach(),
        };
        result.map_err(|source| AttachError::Attach {
            program,
            point,
            source: Box::new(source),
        })
    }
}

impl KernelObject {
    /// Attaches the program `name` where its section says.
    pub fn attach(&mut self, name: &str) -> Result<Attachment, AttachError> {
        let section = self
            .program(name)
            .map(|p| p.section.clone())
            .ok_or_else(|| AttachError::NoSuchProgram(name.to_owned()))?;
        let point =
            AttachPoint::from_section(&section).ok_or_else(|| AttachError::NoAttachPoint {
                program: name.to_owned(),
                section: section.clone(),
            })?;
        if matches!(point, AttachPoint::TracePoint { .. }) {
            crate::fs::ensure_tracefs().map_err(AttachError::Tracefs)?;
        }
        let program = self
            .ebpf_mut()
            .program_mut(name)
            .ok_or_else(|| AttachError::NoSuchProgram(name.to_owned()))?;
        let attach_error = |source| AttachError::Attach {
            program: name.to_owned(),
            point: point.clone(),
            source: Box::new(source),
        };
        let link = match (&point, program) {
            (
                AttachPoint::TracePoint {
                    category,
                    name: event,
                },
                Program::TracePoint(p),
            ) => {
                let id = p.attach(category, event).map_err(attach_error)?;
                Link::TracePoint(p.take_link(id).map_err(attach_error)?)
            }
            (AttachPoint::RawTracePoint { name: tracepoint }, Program::RawTracePoint(p)) => {
                let id = p.attach(tracepoint).map_err(attach_error)?;
                Link::RawTracePoint(p.take_link(id).map_err(attach_error)?)
            }
            _ => {
                return Err(AttachError::KindMismatch {
                    program: name.to_owned(),
                    point,
                });
            }
        };
        Ok(Attachment {
            program: name.to_owned(),
            point,
            link,
        })
    }

    /// Attaches every program of the object, in name order. Fails (detaching what was attached)
    /// when a program's section names no attach point.
    pub fn attach_all(&mut self) -> Result<Vec<Attachment>, AttachError> {
        let names: Vec<String> = self.programs().map(|p| p.name.clone()).collect();
        let mut attached = Vec::with_capacity(names.len());
        for name in names {
            attached.push(self.attach(&name)?);
        }
        Ok(attached)
    }
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
        for bad in [
            "tracepoint/",
            "tracepoint/syscalls",
            "tracepoint/syscalls/",
            "tracepoint//x",
            "tracepoint/a/b/c",
            "raw_tp/",
            "raw_tp/a/b",
            "kprobe/do_sys_open",
            "socket",
            ".text",
        ] {
            assert_eq!(AttachPoint::from_section(bad), None, "{bad}");
        }
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
