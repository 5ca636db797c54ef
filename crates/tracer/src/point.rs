//! Syscall tracepoints by section name, and syscall names to numbers.

use crate::syscall_table;
use crate::TraceError;

/// A syscall tracepoint a program can attach to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TracePoint {
    /// `syscalls:sys_enter_NAME`.
    SysEnter {
        /// The syscall's tracepoint name (`openat`).
        name: String,
        /// Its number on this architecture.
        nr: u32,
    },
    /// `syscalls:sys_exit_NAME`.
    SysExit {
        /// The syscall's tracepoint name.
        name: String,
        /// Its number on this architecture.
        nr: u32,
    },
    /// `raw_syscalls:sys_enter`: every syscall.
    RawSysEnter,
    /// `raw_syscalls:sys_exit`: every syscall.
    RawSysExit,
}

impl TracePoint {
    /// The tracefs category: `syscalls` or `raw_syscalls`.
    pub fn category(&self) -> &'static str {
        match self {
            TracePoint::SysEnter { .. } | TracePoint::SysExit { .. } => "syscalls",
            _ => "raw_syscalls",
        }
    }

    /// The tracefs event name: `sys_enter_openat`, `sys_exit`...
    pub fn event_name(&self) -> String {
        match self {
            TracePoint::SysEnter { name, .. } => format!("sys_enter_{name}"),
            TracePoint::SysExit { name, .. } => format!("sys_exit_{name}"),
            TracePoint::RawSysEnter => "sys_enter".into(),
            TracePoint::RawSysExit => "sys_exit".into(),
        }
    }

    /// True for the exit events.
    pub fn is_exit(&self) -> bool {
        matches!(self, TracePoint::SysExit { .. } | TracePoint::RawSysExit)
    }

    /// The syscall number, `None` for the raw (every syscall) events.
    pub fn nr(&self) -> Option<u32> {
        match self {
            TracePoint::SysEnter { nr, .. } | TracePoint::SysExit { nr, .. } => Some(*nr),
            _ => None,
        }
    }

    /// The tracepoint of a program section (`tracepoint/syscalls/sys_enter_openat`,
    /// `tp/raw_syscalls/sys_exit`...): `Ok(None)` when the section is not a syscall tracepoint,
    /// an error when it names a syscall tracepoint that does not exist.
    pub fn from_section(section: &str) -> Result<Option<TracePoint>, TraceError> {
        let Some(rest) = section
            .strip_prefix("tracepoint/")
            .or_else(|| section.strip_prefix("tp/"))
        else {
            return Ok(None);
        };
        let point = match rest.split_once('/') {
            Some(("raw_syscalls", "sys_enter")) => TracePoint::RawSysEnter,
            Some(("raw_syscalls", "sys_exit")) => TracePoint::RawSysExit,
            Some(("raw_syscalls", _)) => return Err(TraceError::NoSuchTracepoint(rest.into())),
            Some(("syscalls", event)) => {
                let (exit, name) = if let Some(name) = event.strip_prefix("sys_enter_") {
                    (false, name)
                } else if let Some(name) = event.strip_prefix("sys_exit_") {
                    (true, name)
                } else {
                    return Err(TraceError::NoSuchTracepoint(rest.into()));
                };
                let nr = syscall_number(name)
                    .ok_or_else(|| TraceError::NoSuchTracepoint(rest.into()))?;
                let name = name.to_owned();
                if exit {
                    TracePoint::SysExit { name, nr }
                } else {
                    TracePoint::SysEnter { name, nr }
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(point))
    }
}

/// The number of the syscall whose tracepoints are named `sys_enter_NAME`, on this architecture
/// (the built-in table; tracefs does not give numbers).
pub fn syscall_number(name: &str) -> Option<u32> {
    if cfg!(target_arch = "x86_64") {
        syscall_table::X86_64
            .binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes()))
            .ok()
            .map(|i| syscall_table::X86_64[i].1)
    } else {
        None
    }
}
