//! Reference runs of raw instruction sequences on the kernel: load with `BPF_PROG_LOAD`, run with
//! `BPF_PROG_TEST_RUN`. The kernel is the oracle the user engine's interpreter is compared with.
//!
//! [`run_conformance`] runs a bpf_conformance program the way the suite defines it (r1 = input
//! memory, r2 = its length, result = the full 64-bit r0) on a socket filter:
//!
//! * The input memory is the value of a one-entry array map created for the run. A prologue looks
//!   the value up and puts its address in r1 and the length in r2, so the program's accesses are
//!   map-value accesses with constant offsets, which the verifier bounds-checks without requiring
//!   packet-style checks and, unlike stack accesses, allows unaligned.
//! * `BPF_PROG_TEST_RUN` reports only the low 32 bits of r0, so the program is run twice: once as
//!   is, once with every `exit` of the main function turned into a jump to an epilogue
//!   `r0 >>= 32; exit`. Jump and call offsets are relocated around the inserted instructions.
//!
//! This module issues no system call itself: it goes through [`crate::sys`].

use std::os::fd::{AsFd, OwnedFd};

use bpfmaps_abi::insn::{self, CallTarget, Insn, RawInsn};
use bpfmaps_abi::{Errno, MapType};

use crate::sys::{self, ProgLoadError, SysError, TestRun, TestRunResult};

/// A program loaded into the kernel, ready for [`LoadedProg::test_run`].
#[derive(Debug)]
pub struct LoadedProg {
    fd: OwnedFd,
}

/// Program types this module loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgType {
    /// `BPF_PROG_TYPE_SOCKET_FILTER`: context is an skb built from `data_in`.
    SocketFilter,
}

impl ProgType {
    fn as_u32(self) -> u32 {
        match self {
            ProgType::SocketFilter => sys::BPF_PROG_TYPE_SOCKET_FILTER,
        }
    }
}

/// Loads `slots` as a program of type `prog_type` with license `GPL`. A verifier rejection
/// carries the verifier log.
pub fn load(
    prog_type: ProgType,
    slots: &[RawInsn],
    name: &str,
) -> Result<LoadedProg, ProgLoadError> {
    let words: Vec<u64> = slots
        .iter()
        .map(|slot| u64::from_le_bytes(slot.to_bytes()))
        .collect();
    let fd = sys::prog_load_raw(prog_type.as_u32(), &words, "GPL", name)?;
    Ok(LoadedProg { fd })
}

impl LoadedProg {
    /// Runs the program once (`repeat` = 0) on packet data `data` and returns its result.
    pub fn test_run(&self, data: &[u8]) -> Result<TestRunResult, SysError> {
        sys::prog_test_run(
            self.fd.as_fd(),
            &TestRun {
                data_in: data,
                ..TestRun::default()
            },
        )
    }
}

/// Why a conformance program has no kernel result.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The program does not decode or uses a construct the rewriting does not handle.
    #[error("cannot prepare the program: {0}")]
    Unsupported(&'static str),
    /// The verifier (or `BPF_PROG_LOAD`) refused the program.
    #[error("{0}")]
    Rejected(#[from] ProgLoadError),
    /// Another system call failed.
    #[error("{0}")]
    Sys(#[from] SysError),
}

impl ReferenceError {
    /// Whether the kernel's verifier refused the program (as opposed to an environment problem
    /// such as missing privileges).
    pub fn is_verifier_rejection(&self) -> bool {
        matches!(self, ReferenceError::Rejected(error)
            if error.errno == Errno::EACCES || error.errno == Errno::EINVAL)
    }
}

/// Relative branch offset from new slot `from` to new slot `to`.
fn offset_between(from: usize, to: usize) -> i64 {
    to as i64 - from as i64 - 1
}

/// Rewrites `slots` into `prologue ++ main ++ epilogue ++ subprograms`, where `main` is the
/// slots before the first local-call target. With `high_half`, every `exit` in `main` jumps to
/// an epilogue returning `r0 >> 32`; otherwise there is no epilogue.
fn rewrite(
    slots: &[RawInsn],
    prologue: &[RawInsn],
    high_half: bool,
) -> Result<Vec<RawInsn>, ReferenceError> {
    let decoded = insn::decode_program(slots)
        .map_err(|_| ReferenceError::Unsupported("the program does not decode"))?;
    let target_of = |index: usize, insn: &Insn| -> Option<i64> {
        match *insn {
            Insn::Ja { offset, .. } => Some(index as i64 + 1 + i64::from(offset)),
            Insn::Jump { offset, .. } => Some(index as i64 + 1 + i64::from(offset)),
            Insn::Call(CallTarget::Local(offset)) => Some(index as i64 + 1 + i64::from(offset)),
            _ => None,
        }
    };
    let main_end = decoded
        .iter()
        .filter_map(|(index, insn)| match insn {
            Insn::Call(CallTarget::Local(_)) => target_of(*index, insn),
            _ => None,
        })
        .filter(|&target| target >= 0)
        .map(|target| target as usize)
        .min()
        .unwrap_or(slots.len())
        .min(slots.len());
    let epilogue: Vec<RawInsn> = if high_half {
        vec![
            RawInsn::new(0x77, 0, 0, 0, 32),
            RawInsn::new(0x95, 0, 0, 0, 0),
        ]
    } else {
        Vec::new()
    };
    let place = |old: usize| -> usize {
        prologue.len() + old + if old >= main_end { epilogue.len() } else { 0 }
    };
    let epilogue_at = prologue.len() + main_end;

    let mut out: Vec<RawInsn> = prologue.to_vec();
    for (index, insn) in &decoded {
        let first = out.len();
        out.extend_from_slice(&slots[*index..*index + insn.slots()]);
        let new_index = place(*index);
        if high_half && *index < main_end && *insn == Insn::Exit {
            let offset = offset_between(new_index, epilogue_at);
            let offset = i16::try_from(offset)
                .map_err(|_| ReferenceError::Unsupported("epilogue out of jump range"))?;
            out[first] = RawInsn::new(0x05, 0, 0, offset, 0);
        } else if let Some(target) = target_of(*index, insn) {
            if target < 0 || target as usize >= slots.len() {
                // Let the verifier reject it as the original would be.
                continue;
            }
            let offset = offset_between(new_index, place(target as usize));
            match insn {
                Insn::Ja { long: true, .. } | Insn::Call(_) => {
                    out[first].imm = i32::try_from(offset)
                        .map_err(|_| ReferenceError::Unsupported("offset out of range"))?;
                }
                _ => {
                    out[first].off = i16::try_from(offset)
                        .map_err(|_| ReferenceError::Unsupported("offset out of range"))?;
                }
            }
        }
        if *index + insn.slots() == main_end {
            out.extend_from_slice(&epilogue);
        }
    }
    Ok(out)
}

/// The prologue: look up key 0 of the input map, r1 = its value's address, r2 = `len`, r0 = 0.
fn prologue(map_fd: i32, len: u64) -> Result<Vec<RawInsn>, ReferenceError> {
    let len = i32::try_from(len).map_err(|_| ReferenceError::Unsupported("memory too large"))?;
    Ok(vec![
        RawInsn::new(0x62, 10, 0, -4, 0), // *(u32 *)(r10 - 4) = 0
        RawInsn::new(0x18, 1, insn::pseudo::MAP_FD, 0, map_fd), // r1 = map
        RawInsn::new(0, 0, 0, 0, 0),
        RawInsn::new(0xbf, 2, 10, 0, 0), // r2 = r10
        RawInsn::new(0x07, 2, 0, 0, -4), // r2 += -4
        RawInsn::new(
            0x85,
            0,
            0,
            0,
            bpfmaps_abi::helper::ids::map_lookup_elem as i32,
        ),
        RawInsn::new(0x55, 0, 0, 1, 0),   // if r0 != 0 goto +1
        RawInsn::new(0x95, 0, 0, 0, 0),   // exit
        RawInsn::new(0xbf, 1, 0, 0, 0),   // r1 = r0
        RawInsn::new(0xb7, 2, 0, 0, len), // r2 = len
        RawInsn::new(0xb7, 0, 0, 0, 0),   // r0 = 0
    ])
}

/// What the kernel computed for a conformance program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReferenceResult {
    /// The full 64-bit r0.
    pub r0: u64,
}

/// Runs a conformance-style program (r1 = `mem`, r2 = its length) on the kernel and returns its
/// 64-bit r0, or why the kernel would not run it.
pub fn run_conformance(slots: &[RawInsn], mem: &[u8]) -> Result<ReferenceResult, ReferenceError> {
    let value_size = u32::try_from(mem.len().max(1))
        .map_err(|_| ReferenceError::Unsupported("memory too large"))?;
    let run_half = |high: bool| -> Result<u32, ReferenceError> {
        // A fresh map per run: the program may write its memory.
        let map = sys::map_create(&sys::MapCreate {
            map_type: MapType::Array.as_u32(),
            key_size: 4,
            value_size,
            max_entries: 1,
            map_flags: 0,
            name: "conf_mem",
            ..Default::default()
        })?;
        let mut value = mem.to_vec();
        value.resize(value_size as usize, 0);
        sys::map_update_elem(map.as_fd(), &0u32.to_le_bytes(), &value, 0)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&map);
        let program = rewrite(slots, &prologue(fd, mem.len() as u64)?, high)?;
        let prog = load(ProgType::SocketFilter, &program, "conformance")?;
        // A socket filter needs at least an Ethernet header of packet data.
        let packet = [0u8; 64];
        Ok(prog.test_run(&packet)?.retval)
    };
    let low = run_half(false)?;
    let high = run_half(true)?;
    Ok(ReferenceResult {
        r0: u64::from(low) | (u64::from(high) << 32),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_relocates_branches_around_the_epilogue() {
        // 0: call local +2 (to 3)  1: exit  2: ja -3 (to 0)  3: mov r0, 1  4: exit
        let slots = [
            RawInsn::new(0x85, 0, 1, 0, 2),
            RawInsn::new(0x95, 0, 0, 0, 0),
            RawInsn::new(0x05, 0, 0, -3, 0),
            RawInsn::new(0xb7, 0, 0, 0, 1),
            RawInsn::new(0x95, 0, 0, 0, 0),
        ];
        let pro = [RawInsn::new(0xb7, 0, 0, 0, 0)];
        let out = rewrite(&slots, &pro, true).unwrap();
        // prologue(1) + main(3) + epilogue(2) + subprog(2)
        assert_eq!(out.len(), 8);
        assert_eq!(out[1], RawInsn::new(0x85, 0, 1, 0, 4)); // to new 6
        assert_eq!(out[2], RawInsn::new(0x05, 0, 0, 1, 0)); // exit -> epilogue at 4
        assert_eq!(out[3], RawInsn::new(0x05, 0, 0, -3, 0)); // to new 1
        assert_eq!(out[4], RawInsn::new(0x77, 0, 0, 0, 32));
        assert_eq!(out[7], RawInsn::new(0x95, 0, 0, 0, 0)); // subprogram exit kept
        let plain = rewrite(&slots, &pro, false).unwrap();
        assert_eq!(&plain[1..], &slots[..]);
    }
}
