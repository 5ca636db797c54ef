//! Dead-path pruning before the helper check, as the kernel's verifier prunes: a branch whose
//! condition frozen `.rodata` decides (`if (targ_pid)`, a `const volatile bool` feature switch,
//! a weak ksym resolved to 0) leaves its other side dead, and a call there to a helper the user
//! engine lacks (or a kernel function) must not refuse the program. Those calls are replaced by
//! a poisoned call that traps if it ever ran, and a call on a live path is refused naming the
//! helper and the program.
//!
//! The analysis is a forward constant propagation over registers only: a register is a known
//! constant, a pointer into a frozen read-only data map at a known offset, or unknown. Loads
//! through such a pointer read the map's (frozen) initial bytes; conditional jumps with both
//! operands known have one successor. Everything else (stack, context, helpers' results) is
//! unknown, so the analysis only ever finds fewer dead paths than the verifier, never more.

use bpfmaps_abi::insn::{pseudo, RawInsn};
use bpfmaps_obj::MapSpec;
use bpfmaps_vm::{is_poisoned_call, HelperSet, POISONED_CALL_ID};

/// What a register holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    Unknown,
    Const(u64),
    /// A pointer into element 0 of frozen map `map`, `off` bytes in.
    Frozen {
        map: usize,
        off: i64,
    },
}

type State = [Value; 11];

fn join(a: &mut State, b: &State) -> bool {
    let mut changed = false;
    for (x, y) in a.iter_mut().zip(b) {
        if *x != *y && *x != Value::Unknown {
            *x = Value::Unknown;
            changed = true;
        }
    }
    changed
}

/// A call the analysis found.
pub(crate) struct DeadCall {
    pub insn: usize,
    pub id: i32,
}

/// The outcome: calls on live paths the host lacks, and the instructions rewritten.
pub(crate) struct Pruned {
    pub instructions: Vec<RawInsn>,
    /// Calls to missing helpers (or kfuncs) on a live path: (instruction, helper id, is kfunc).
    pub live_missing: Vec<(usize, i32, bool)>,
    /// Calls that were on dead paths and were poisoned.
    pub dead: Vec<DeadCall>,
}

fn frozen_bytes(maps: &[MapSpec], map: usize, off: i64, size: usize) -> Option<u64> {
    let spec = maps.get(map)?;
    if !spec.frozen {
        return None;
    }
    let value = spec.initial_value.as_deref()?;
    let start = usize::try_from(off).ok()?;
    let bytes = value.get(start..start.checked_add(size)?)?;
    let mut word = [0u8; 8];
    word[..size].copy_from_slice(bytes);
    Some(u64::from_le_bytes(word))
}

fn sign_extend(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        return v;
    }
    let shift = 64 - bits;
    (((v << shift) as i64) >> shift) as u64
}

fn alu(op: u8, a: u64, b: u64, wide: bool) -> Option<u64> {
    let (a, b) = if wide {
        (a, b)
    } else {
        (a & 0xffff_ffff, b & 0xffff_ffff)
    };
    let bits = if wide { 64 } else { 32 };
    let r = match op {
        0x00 => a.wrapping_add(b),
        0x10 => a.wrapping_sub(b),
        0x20 => a.wrapping_mul(b),
        0x30 => a.checked_div(b).unwrap_or(0),
        0x40 => a | b,
        0x50 => a & b,
        0x60 => a.wrapping_shl((b % bits) as u32),
        0x70 => a.wrapping_shr((b % bits) as u32),
        0x80 => a.wrapping_neg(),
        0x90 => a.checked_rem(b).unwrap_or(a),
        0xa0 => a ^ b,
        0xc0 => {
            let s = (b % bits) as u32;
            if wide {
                ((a as i64) >> s) as u64
            } else {
                u64::from(((a as u32 as i32) >> s) as u32)
            }
        }
        _ => return None,
    };
    Some(if wide { r } else { r & 0xffff_ffff })
}

fn branch(op: u8, a: u64, b: u64, wide: bool) -> Option<bool> {
    let (a, b) = if wide {
        (a, b)
    } else {
        (a & 0xffff_ffff, b & 0xffff_ffff)
    };
    let (sa, sb) = if wide {
        (a as i64, b as i64)
    } else {
        (i64::from(a as u32 as i32), i64::from(b as u32 as i32))
    };
    Some(match op {
        0x10 => a == b,
        0x20 => a > b,
        0x30 => a >= b,
        0x40 => a & b != 0,
        0x50 => a != b,
        0x60 => sa > sb,
        0x70 => sa >= sb,
        0xa0 => a < b,
        0xb0 => a <= b,
        0xc0 => sa < sb,
        0xd0 => sa <= sb,
        _ => return None,
    })
}

/// Finds the live instructions of `insns` given the frozen maps, then poisons calls on dead
/// paths that `helpers` lacks (and kernel-function calls there), and lists the live ones.
pub(crate) fn prune(insns: &[RawInsn], maps: &[MapSpec], helpers: &HelperSet) -> Pruned {
    let n = insns.len();
    let mut states: Vec<Option<State>> = vec![None; n];
    let mut work: Vec<usize> = Vec::new();
    let unknown: State = [Value::Unknown; 11];
    let push = |states: &mut Vec<Option<State>>, work: &mut Vec<usize>, at: i64, s: &State| {
        let Ok(at) = usize::try_from(at) else { return };
        if at >= states.len() {
            return;
        }
        match &mut states[at] {
            Some(old) => {
                if join(old, s) {
                    work.push(at);
                }
            }
            slot @ None => {
                *slot = Some(*s);
                work.push(at);
            }
        }
    };
    push(&mut states, &mut work, 0, &unknown);
    while let Some(i) = work.pop() {
        let Some(mut s) = states[i] else { continue };
        let insn = insns[i];
        let class = insn.code & 0x07;
        let (d, sr) = (usize::from(insn.dst & 0x0f), usize::from(insn.src & 0x0f));
        if d > 10 || sr > 10 {
            continue;
        }
        let next = i as i64 + 1;
        match class {
            0x00 if insn.code == 0x18 => {
                let hi = insns.get(i + 1).map_or(0, |x| x.imm);
                s[d] = match insn.src {
                    pseudo::IMM64 => {
                        Value::Const(u64::from(insn.imm as u32) | (u64::from(hi as u32) << 32))
                    }
                    pseudo::MAP_IDX_VALUE => Value::Frozen {
                        map: usize::try_from(insn.imm).unwrap_or(usize::MAX),
                        off: i64::from(hi),
                    },
                    pseudo::FUNC => {
                        // A callback: its body is reachable.
                        push(&mut states, &mut work, next + i64::from(insn.imm), &unknown);
                        Value::Unknown
                    }
                    _ => Value::Unknown,
                };
                push(&mut states, &mut work, next + 1, &s);
            }
            0x00 => {
                // Legacy packet loads clobber r0-r5 like a call.
                for r in s.iter_mut().take(6) {
                    *r = Value::Unknown;
                }
                push(&mut states, &mut work, next, &s);
            }
            0x01 => {
                let size = match insn.code & 0x18 {
                    0x18 => 8,
                    0x00 => 4,
                    0x08 => 2,
                    _ => 1,
                };
                let signed = insn.code & 0xe0 == 0x80;
                s[d] = match s[sr] {
                    Value::Frozen { map, off } => {
                        frozen_bytes(maps, map, off + i64::from(insn.off), size).map_or(
                            Value::Unknown,
                            |v| {
                                Value::Const(if signed {
                                    sign_extend(v, size as u32 * 8)
                                } else {
                                    v
                                })
                            },
                        )
                    }
                    _ => Value::Unknown,
                };
                push(&mut states, &mut work, next, &s);
            }
            0x02 | 0x03 => {
                if class == 0x03 && insn.code & 0xe0 == 0xc0 {
                    if insn.imm == 0xf1 {
                        s[0] = Value::Unknown;
                    } else if insn.imm & 1 != 0 {
                        s[sr] = Value::Unknown;
                    }
                }
                push(&mut states, &mut work, next, &s);
            }
            0x04 | 0x07 => {
                let wide = class == 0x07;
                let op = insn.code & 0xf0;
                let b = if insn.code & 0x08 != 0 {
                    s[sr]
                } else if wide {
                    Value::Const(i64::from(insn.imm) as u64)
                } else {
                    Value::Const(u64::from(insn.imm as u32))
                };
                s[d] = match (op, s[d], b) {
                    (0xb0, _, Value::Const(v)) if insn.off != 0 => {
                        let v = sign_extend(v, insn.off as u32);
                        Value::Const(if wide { v } else { v & 0xffff_ffff })
                    }
                    (0xb0, _, Value::Const(v)) => {
                        Value::Const(if wide { v } else { v & 0xffff_ffff })
                    }
                    (0xb0, _, p @ Value::Frozen { .. }) if wide && insn.off == 0 => p,
                    (0x00, Value::Frozen { map, off }, Value::Const(v)) if wide => Value::Frozen {
                        map,
                        off: off.wrapping_add(v as i64),
                    },
                    (0x10, Value::Frozen { map, off }, Value::Const(v)) if wide => Value::Frozen {
                        map,
                        off: off.wrapping_sub(v as i64),
                    },
                    (0x30 | 0x90, _, _) if insn.off != 0 => Value::Unknown,
                    (0x80, Value::Const(a), _) => {
                        alu(op, a, 0, wide).map_or(Value::Unknown, Value::Const)
                    }
                    (_, Value::Const(a), Value::Const(b)) => {
                        alu(op, a, b, wide).map_or(Value::Unknown, Value::Const)
                    }
                    _ => Value::Unknown,
                };
                push(&mut states, &mut work, next, &s);
            }
            0x05 | 0x06 => {
                let op = insn.code & 0xf0;
                match op {
                    0x00 => {
                        let off = if class == 0x06 {
                            i64::from(insn.imm)
                        } else {
                            i64::from(insn.off)
                        };
                        push(&mut states, &mut work, next + off, &s);
                    }
                    0x80 => {
                        if insn.src == 1 && insn.code == 0x85 {
                            push(&mut states, &mut work, next + i64::from(insn.imm), &unknown);
                        }
                        for r in s.iter_mut().take(6) {
                            *r = Value::Unknown;
                        }
                        push(&mut states, &mut work, next, &s);
                    }
                    0x90 => {}
                    _ => {
                        let wide = class == 0x05;
                        let b = if insn.code & 0x08 != 0 {
                            s[sr]
                        } else {
                            Value::Const(i64::from(insn.imm) as u64)
                        };
                        let taken = match (s[d], b) {
                            (Value::Const(a), Value::Const(b)) => branch(op, a, b, wide),
                            _ => None,
                        };
                        let target = next + i64::from(insn.off);
                        match taken {
                            Some(true) => push(&mut states, &mut work, target, &s),
                            Some(false) => push(&mut states, &mut work, next, &s),
                            None => {
                                push(&mut states, &mut work, target, &s);
                                push(&mut states, &mut work, next, &s);
                            }
                        }
                    }
                }
            }
            _ => push(&mut states, &mut work, next, &s),
        }
    }
    let mut out = insns.to_vec();
    let mut live_missing = Vec::new();
    let mut dead = Vec::new();
    for (i, insn) in insns.iter().enumerate() {
        if insn.code != 0x85
            || !(insn.src == 0 || insn.src == 2)
            || (insn.src == 0 && is_poisoned_call(insn.imm))
        {
            continue;
        }
        let kfunc = insn.src == 2;
        let missing = kfunc || insn.imm < 0 || !helpers.contains(insn.imm as u32);
        if !missing {
            continue;
        }
        if states[i].is_some() {
            live_missing.push((i, insn.imm, kfunc));
        } else {
            out[i] = RawInsn::new(0x85, 0, 0, 0, POISONED_CALL_ID);
            dead.push(DeadCall {
                insn: i,
                id: insn.imm,
            });
        }
    }
    Pruned {
        instructions: out,
        live_missing,
        dead,
    }
}

#[cfg(test)]
mod tests {
    use bpfmaps_abi::{MapDef, MapType};
    use bpfmaps_obj::{MapKind, MapSpec, Pinning};

    use super::*;

    const EXIT: RawInsn = RawInsn::new(0x95, 0, 0, 0, 0);
    const R0_0: RawInsn = RawInsn::new(0xb7, 0, 0, 0, 0);
    /// `call 80` (get_current_cgroup_id, not provided by the test's helper set).
    const CALL_80: RawInsn = RawInsn::new(0x85, 0, 0, 0, 80);

    fn rodata(bytes: &[u8]) -> Vec<MapSpec> {
        vec![MapSpec {
            name: "x.rodata".to_owned(),
            def: MapDef {
                map_type: MapType::Array,
                key_size: 4,
                value_size: bytes.len() as u32,
                max_entries: 1,
                map_flags: 0x80,
                name: "x.rodata".to_owned(),
            },
            kind: MapKind::Rodata,
            section: ".rodata".to_owned(),
            pinning: Pinning::None,
            map_extra: 0,
            initial_value: Some(bytes.to_vec()),
            frozen: true,
            key_type: None,
            value_type: None,
            inner: None,
        }]
    }

    /// `r1 = &rodata[0]; r1 = *(u8 *)(r1 + 0); if r1 == 0 goto +1; call 80; r0 = 0; exit`.
    fn switch() -> Vec<RawInsn> {
        vec![
            RawInsn::new(0x18, 1, pseudo::MAP_IDX_VALUE, 0, 0),
            RawInsn::new(0, 0, 0, 0, 0),
            RawInsn::new(0x71, 1, 1, 0, 0),
            RawInsn::new(0x15, 1, 0, 1, 0),
            CALL_80,
            R0_0,
            EXIT,
        ]
    }

    fn helpers() -> HelperSet {
        HelperSet::new([1, 2, 3])
    }

    #[test]
    fn a_frozen_switch_off_makes_the_call_dead_and_on_makes_it_live() {
        let off = prune(&switch(), &rodata(&[0]), &helpers());
        assert!(off.live_missing.is_empty());
        assert_eq!(
            off.dead.iter().map(|d| (d.insn, d.id)).collect::<Vec<_>>(),
            [(4, 80)]
        );
        assert_eq!(off.instructions[4].imm, POISONED_CALL_ID);
        let on = prune(&switch(), &rodata(&[1]), &helpers());
        assert_eq!(on.live_missing, [(4, 80, false)]);
        assert_eq!(on.instructions, switch());
        // A writable (not frozen) map decides nothing.
        let mut maps = rodata(&[0]);
        maps[0].frozen = false;
        assert_eq!(prune(&switch(), &maps, &helpers()).live_missing.len(), 1);
    }

    #[test]
    fn unknown_values_loops_and_callbacks_keep_paths_live() {
        // A branch on the context: both sides live.
        let ctx = [
            RawInsn::new(0x79, 2, 1, 0, 0),
            RawInsn::new(0x15, 2, 0, 1, 0),
            CALL_80,
            R0_0,
            EXIT,
        ];
        assert_eq!(prune(&ctx, &[], &helpers()).live_missing.len(), 1);
        // A counted loop: the counter's value is joined to unknown, the exit is live.
        let looped = [
            RawInsn::new(0xb7, 1, 0, 0, 0),
            RawInsn::new(0x07, 1, 0, 0, 1),
            RawInsn::new(0xa5, 1, 0, -2, 10),
            CALL_80,
            R0_0,
            EXIT,
        ];
        assert_eq!(prune(&looped, &[], &helpers()).live_missing.len(), 1);
        // A callback's body (an lddw function reference) is live.
        let callback = [
            RawInsn::new(0x18, 2, pseudo::FUNC, 0, 3),
            RawInsn::new(0, 0, 0, 0, 0),
            R0_0,
            EXIT,
            CALL_80,
            R0_0,
            EXIT,
        ];
        assert_eq!(
            prune(&callback, &[], &helpers()).live_missing,
            [(4, 80, false)]
        );
        // A bpf-to-bpf callee is live.
        let local = [RawInsn::new(0x85, 0, 1, 0, 2), R0_0, EXIT, CALL_80, EXIT];
        assert_eq!(
            prune(&local, &[], &helpers()).live_missing,
            [(3, 80, false)]
        );
    }

    #[test]
    fn jmp32_compares_the_low_halves_and_constants_fold() {
        // r1 = 1 << 32; if w1 == 0 goto +1 (taken: the low half is 0); call 80 is dead.
        let prog = [
            RawInsn::new(0x18, 1, 0, 0, 0),
            RawInsn::new(0, 0, 0, 0, 1),
            RawInsn::new(0x16, 1, 0, 1, 0),
            CALL_80,
            R0_0,
            EXIT,
        ];
        assert!(prune(&prog, &[], &helpers()).live_missing.is_empty());
        // The same test as a 64-bit jump: not taken, the call is live.
        let mut wide = prog;
        wide[2].code = 0x15;
        assert_eq!(prune(&wide, &[], &helpers()).live_missing.len(), 1);
        // r1 = 6; r1 *= 7; if r1 != 42 goto +1: falls through to the call.
        let folded = [
            RawInsn::new(0xb7, 1, 0, 0, 6),
            RawInsn::new(0x27, 1, 0, 0, 7),
            RawInsn::new(0x55, 1, 0, 1, 42),
            CALL_80,
            R0_0,
            EXIT,
        ];
        assert_eq!(prune(&folded, &[], &helpers()).live_missing.len(), 1);
        let mut skipped = folded;
        skipped[2].imm = 41;
        assert!(prune(&skipped, &[], &helpers()).live_missing.is_empty());
    }
}
