//! Stack traces: reading a STACK_TRACE map's value as instruction pointers, and symbolizing them
//! with blazesym, user stacks in the process that recorded them (its pid is stored beside the
//! stack id, because user addresses only mean something in that address space) and kernel stacks
//! through `/proc/kallsyms`.
//!
//! Reading goes through the engine-neutral [`MapOps`], so a stack map of either engine works.
//! It does not decide which stacks to read: programs record stack ids in their own maps.

use blazesym::symbolize::source::{Kernel, Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::{MaybeDefault, Pid};
use bpfmaps_abi::{Errno, MapError, MapOps, MapType};

/// The system's kallsyms file, which kernel stacks are symbolized with.
pub const KALLSYMS_PATH: &str = "/proc/kallsyms";

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The instruction pointer as recorded.
    pub addr: u64,
    /// The function containing it (demangled), `None` when unknown.
    pub symbol: Option<String>,
    /// `addr` minus the start of the symbol (0 when the symbol is unknown).
    pub offset: u64,
    /// The module: the file of a user frame (executable or shared object), the kernel module of
    /// a kernel frame when kallsyms names one; `None` when unknown (or the core kernel).
    pub module: Option<String>,
}

/// Why a stack could not be read or symbolized.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The map is not a STACK_TRACE map.
    #[error("stack traces are read from a stack_trace map, this one is {0}")]
    NotAStackMap(MapType),
    /// The map lookup failed (other than a missing id).
    #[error("reading stack {id}: {source}")]
    Map {
        /// The stack id.
        id: u32,
        /// The map error.
        source: MapError,
    },
    /// A stack id recorded by a program is negative: `bpf_get_stackid` failed with this errno.
    #[error("the program could not record the stack: {0}")]
    NotRecorded(Errno),
    /// blazesym failed.
    #[error("symbolizing: {0}")]
    Symbolize(#[source] blazesym::Error),
}

/// The instruction pointers in a STACK_TRACE value (native-endian u64s, innermost first), with
/// the zero slots after the last frame cut. Trailing bytes that do not fill a u64 are ignored.
pub fn stack_ips(value: &[u8]) -> Vec<u64> {
    let mut ips: Vec<u64> = value
        .chunks_exact(8)
        .map(|c| {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            u64::from_ne_bytes(word)
        })
        .collect();
    while ips.last() == Some(&0) {
        ips.pop();
    }
    ips
}

/// Reads stack `id` of the STACK_TRACE map `map`: `Ok(None)` when the map holds no stack with
/// that id (`ENOENT`).
pub fn read_stack(map: &dyn MapOps, id: u32) -> Result<Option<Vec<u64>>, StackError> {
    let info = map.info();
    if info.map_type != MapType::StackTrace {
        return Err(StackError::NotAStackMap(info.map_type));
    }
    let mut value = vec![0u8; info.user_value_size()];
    match map.lookup(&id.to_ne_bytes(), &mut value, 0) {
        Ok(()) => Ok(Some(stack_ips(&value))),
        Err(MapError::Errno(Errno::ENOENT)) => Ok(None),
        Err(source) => Err(StackError::Map { id, source }),
    }
}

/// A stack id as a program recorded it (an `s32` that is `-errno` when `bpf_get_stackid`
/// failed), checked: the id to look up, or the errno.
pub fn recorded_stack_id(raw: i32) -> Result<u32, StackError> {
    u32::try_from(raw).map_err(|_| StackError::NotRecorded(Errno(raw.saturating_neg())))
}

/// Symbolizes stacks; keeps blazesym's caches between calls.
pub struct StackSymbolizer {
    symbolizer: Symbolizer,
}

impl std::fmt::Debug for StackSymbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackSymbolizer").finish_non_exhaustive()
    }
}

impl Default for StackSymbolizer {
    fn default() -> Self {
        StackSymbolizer::new()
    }
}

impl StackSymbolizer {
    /// A symbolizer that demangles Rust and C++ names.
    pub fn new() -> StackSymbolizer {
        StackSymbolizer {
            symbolizer: Symbolizer::new(),
        }
    }

    /// Symbolizes user-space `ips` of process `pid`, which must still be running (its memory
    /// maps are read from `/proc/PID/maps`).
    pub fn user_frames(&self, pid: u32, ips: &[u64]) -> Result<Vec<Frame>, StackError> {
        let process = Process {
            debug_syms: false,
            ..Process::new(Pid::from(pid))
        };
        self.frames(&Source::Process(process), ips)
    }

    /// Symbolizes kernel `ips` with `/proc/kallsyms` (no vmlinux image is searched).
    pub fn kernel_frames(&self, ips: &[u64]) -> Result<Vec<Frame>, StackError> {
        let kernel = Kernel {
            kallsyms: MaybeDefault::Some(KALLSYMS_PATH.into()),
            vmlinux: MaybeDefault::None,
            debug_syms: false,
            ..Kernel::default()
        };
        self.frames(&Source::Kernel(kernel), ips)
    }

    fn frames(&self, source: &Source<'_>, ips: &[u64]) -> Result<Vec<Frame>, StackError> {
        let symbolized = self
            .symbolizer
            .symbolize(source, Input::AbsAddr(ips))
            .map_err(StackError::Symbolize)?;
        Ok(ips
            .iter()
            .zip(symbolized)
            .map(|(&addr, sym)| match sym {
                Symbolized::Sym(sym) => Frame {
                    addr,
                    symbol: Some(sym.name.into_owned()),
                    offset: u64::try_from(sym.offset).unwrap_or(u64::MAX),
                    module: sym.module.map(|m| m.to_string_lossy().into_owned()),
                },
                Symbolized::Unknown(_) => Frame {
                    addr,
                    symbol: None,
                    offset: 0,
                    module: None,
                },
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_zero_slots_are_cut() {
        let mut value = Vec::new();
        for ip in [0xffff_ffff_8100_0000u64, 0x4000, 0, 7, 0, 0] {
            value.extend_from_slice(&ip.to_ne_bytes());
        }
        assert_eq!(stack_ips(&value), vec![0xffff_ffff_8100_0000, 0x4000, 0, 7]);
        assert_eq!(stack_ips(&[0u8; 16]), Vec::<u64>::new());
        assert_eq!(stack_ips(&[1u8; 7]), Vec::<u64>::new());
    }

    #[test]
    fn negative_recorded_ids_are_errnos() {
        assert_eq!(recorded_stack_id(12).unwrap(), 12);
        assert!(matches!(
            recorded_stack_id(-14),
            Err(StackError::NotRecorded(Errno::EFAULT))
        ));
        assert!(matches!(
            recorded_stack_id(-17),
            Err(StackError::NotRecorded(Errno::EEXIST))
        ));
    }
}
