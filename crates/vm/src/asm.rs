//! An assembler for the bpf_conformance suite's syntax (`mov %r0, 1`, `ldxdw %r0, [%r1+2]`,
//! `lock fetch add [%r10-8], %r1`, `jeq %r1, 0xb, label`, `call local func`): test and benchmark
//! tooling that turns `-- asm` sections into instruction slots. The inverse of
//! [`bpfmaps_abi::insn::disassemble`].
//!
//! Rules it enforces (as the suite's own assembler does): registers are `%r0`-`%r10`; 32-bit
//! immediates are decimal in `[-2^31, 2^31)` or hexadecimal up to `0xffffffff`; memory offsets fit
//! 16 bits; jump targets are `+N`/`-N` or a label; the label `exit`, when not defined, names the
//! program's last instruction. It knows nothing about running programs.

use std::collections::HashMap;

use bpfmaps_abi::insn::{
    encode, AluOp, AtomicOp, CallTarget, Endian, Insn, JmpCond, Operand, RawInsn, Width,
};

/// Why a source line does not assemble.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct AsmError {
    /// 1-based line number in the source.
    pub line: usize,
    /// What is wrong.
    pub kind: AsmErrorKind,
}

/// The kinds of assembly errors.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AsmErrorKind {
    /// The mnemonic is not an instruction.
    #[error("invalid mnemonic {0:?}")]
    UnknownMnemonic(String),
    /// Wrong number of operands.
    #[error("invalid number of operands for {mnemonic}: expected {expected}, got {got}")]
    OperandCount {
        /// The mnemonic.
        mnemonic: String,
        /// Operands it takes.
        expected: usize,
        /// Operands given.
        got: usize,
    },
    /// Not a register `%r0`-`%r10`.
    #[error("invalid register {0:?}")]
    InvalidRegister(String),
    /// Not a number, or out of the field's range.
    #[error("invalid immediate {0:?}")]
    InvalidImmediate(String),
    /// Not a memory operand `[%rN+off]`, or its offset does not fit 16 bits.
    #[error("invalid memory operand {0:?}")]
    InvalidMemory(String),
    /// A jump target that is neither an offset nor a known label, or out of range.
    #[error("invalid jump target {0:?}")]
    InvalidTarget(String),
    /// A label defined twice.
    #[error("duplicate label {0:?}")]
    DuplicateLabel(String),
}

struct Line<'s> {
    number: usize,
    mnemonic: &'s str,
    operands: Vec<&'s str>,
}

fn err(line: usize, kind: AsmErrorKind) -> AsmError {
    AsmError { line, kind }
}

/// Assembles `source` into instruction slots.
pub fn assemble(source: &str) -> Result<Vec<RawInsn>, AsmError> {
    // Pass 1: split lines, record labels at their slot index.
    let mut lines = Vec::new();
    let mut labels: HashMap<&str, usize> = HashMap::new();
    let mut slot = 0usize;
    for (index, text) in source.lines().enumerate() {
        let number = index + 1;
        let text = text.split('#').next().unwrap_or("").trim();
        if text.is_empty() {
            continue;
        }
        if let Some(label) = text.strip_suffix(':') {
            if labels.insert(label.trim(), slot).is_some() {
                return Err(err(number, AsmErrorKind::DuplicateLabel(label.to_string())));
            }
            continue;
        }
        let (mnemonic, rest) = match text.split_once(char::is_whitespace) {
            Some((mnemonic, rest)) => (mnemonic, rest.trim()),
            None => (text, ""),
        };
        let operands: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split(',').map(str::trim).collect()
        };
        slot += if mnemonic == "lddw" { 2 } else { 1 };
        lines.push(Line {
            number,
            mnemonic,
            operands,
        });
    }
    let last_slot = slot.saturating_sub(1);
    let mut out = Vec::with_capacity(slot);
    for line in &lines {
        let here = out.len();
        let resolve = |target: &str, wide: bool| -> Result<i32, AsmError> {
            let bad = || err(line.number, AsmErrorKind::InvalidTarget(target.to_string()));
            let offset = if target.starts_with('+') || target.starts_with('-') {
                parse_int(target).ok_or_else(bad)?
            } else if let Some(&at) = labels.get(target) {
                at as i128 - here as i128 - 1
            } else if target == "exit" {
                last_slot as i128 - here as i128 - 1
            } else {
                return Err(bad());
            };
            let range = if wide {
                i128::from(i32::MIN)..=i128::from(i32::MAX)
            } else {
                i128::from(i16::MIN)..=i128::from(i16::MAX)
            };
            if range.contains(&offset) {
                Ok(offset as i32)
            } else {
                Err(bad())
            }
        };
        let insn = parse_line(line, &resolve)?;
        out.extend(encode(&insn));
    }
    Ok(out)
}

fn parse_int(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let value = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i128::from_str_radix(hex, 16).ok()?
    } else {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i128>().ok()?
    };
    Some(if negative { -value } else { value })
}

fn is_hex(text: &str) -> bool {
    let digits = text.trim_start_matches('-');
    digits.starts_with("0x") || digits.starts_with("0X")
}

fn parse_imm32(line: usize, text: &str) -> Result<i32, AsmError> {
    let bad = || err(line, AsmErrorKind::InvalidImmediate(text.to_string()));
    let value = parse_int(text).ok_or_else(bad)?;
    let max = if is_hex(text) {
        i128::from(u32::MAX)
    } else {
        i128::from(i32::MAX)
    };
    if value < i128::from(i32::MIN) || value > max {
        return Err(bad());
    }
    // Values above i32::MAX are hexadecimal bit patterns.
    Ok(value as u32 as i32)
}

fn parse_imm64(line: usize, text: &str) -> Result<u64, AsmError> {
    let bad = || err(line, AsmErrorKind::InvalidImmediate(text.to_string()));
    let value = parse_int(text).ok_or_else(bad)?;
    if value < i128::from(i64::MIN) || value > i128::from(u64::MAX) {
        return Err(bad());
    }
    Ok(value as u64)
}

fn parse_reg(line: usize, text: &str) -> Result<u8, AsmError> {
    let bad = || err(line, AsmErrorKind::InvalidRegister(text.to_string()));
    let number = text.strip_prefix("%r").ok_or_else(bad)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match number.parse::<u8>() {
        Ok(reg) if reg <= 10 => Ok(reg),
        _ => Err(bad()),
    }
}

fn parse_operand(line: usize, text: &str) -> Result<Operand, AsmError> {
    if text.starts_with('%') {
        Ok(Operand::Reg(parse_reg(line, text)?))
    } else {
        Ok(Operand::Imm(parse_imm32(line, text)?))
    }
}

fn parse_mem(line: usize, text: &str) -> Result<(u8, i16), AsmError> {
    let bad = || err(line, AsmErrorKind::InvalidMemory(text.to_string()));
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(bad)?
        .trim();
    let split = inner.find(['+', '-']);
    let (reg, off) = match split {
        Some(at) => (&inner[..at], parse_int(inner[at..].trim()).ok_or_else(bad)?),
        None => (inner, 0),
    };
    let reg = parse_reg(line, reg.trim())?;
    let off = i16::try_from(off).map_err(|_| bad())?;
    Ok((reg, off))
}

fn size_of(suffix: &str) -> Option<u8> {
    match suffix {
        "b" => Some(1),
        "h" => Some(2),
        "w" => Some(4),
        "dw" => Some(8),
        _ => None,
    }
}

fn alu_op(name: &str) -> Option<AluOp> {
    Some(match name {
        "add" => AluOp::Add,
        "sub" => AluOp::Sub,
        "mul" => AluOp::Mul,
        "div" => AluOp::Div,
        "sdiv" => AluOp::SDiv,
        "or" => AluOp::Or,
        "and" => AluOp::And,
        "lsh" => AluOp::Lsh,
        "rsh" => AluOp::Rsh,
        "mod" => AluOp::Mod,
        "smod" => AluOp::SMod,
        "xor" => AluOp::Xor,
        "mov" => AluOp::Mov,
        "arsh" => AluOp::Arsh,
        _ => return None,
    })
}

fn jmp_cond(name: &str) -> Option<JmpCond> {
    Some(match name {
        "jeq" => JmpCond::Eq,
        "jgt" => JmpCond::Gt,
        "jge" => JmpCond::Ge,
        "jset" => JmpCond::Set,
        "jne" => JmpCond::Ne,
        "jsgt" => JmpCond::Sgt,
        "jsge" => JmpCond::Sge,
        "jlt" => JmpCond::Lt,
        "jle" => JmpCond::Le,
        "jslt" => JmpCond::Slt,
        "jsle" => JmpCond::Sle,
        _ => return None,
    })
}

fn split_width(mnemonic: &str) -> (&str, Width) {
    match mnemonic.strip_suffix("32") {
        Some(base) => (base, Width::W32),
        None => (mnemonic, Width::W64),
    }
}

fn parse_line(
    line: &Line<'_>,
    resolve: &dyn Fn(&str, bool) -> Result<i32, AsmError>,
) -> Result<Insn, AsmError> {
    let n = line.number;
    let ops = &line.operands;
    let mnemonic = line.mnemonic;
    let count = |expected: usize| -> Result<(), AsmError> {
        if ops.len() == expected {
            Ok(())
        } else {
            Err(err(
                n,
                AsmErrorKind::OperandCount {
                    mnemonic: mnemonic.to_string(),
                    expected,
                    got: ops.len(),
                },
            ))
        }
    };
    let unknown = || err(n, AsmErrorKind::UnknownMnemonic(mnemonic.to_string()));

    match mnemonic {
        "exit" => {
            count(0)?;
            return Ok(Insn::Exit);
        }
        "lddw" => {
            count(2)?;
            let dst = parse_reg(n, ops[0])?;
            let value = parse_imm64(n, ops[1])?;
            return Ok(Insn::LoadImm64 {
                dst,
                pseudo: 0,
                imm_lo: value as u32 as i32,
                imm_hi: (value >> 32) as u32 as i32,
            });
        }
        "ja" | "ja32" => {
            count(1)?;
            let long = mnemonic == "ja32";
            return Ok(Insn::Ja {
                long,
                offset: resolve(ops[0], long)?,
            });
        }
        "call" => {
            count(1)?;
            let operand = ops[0];
            if let Some(label) = operand.strip_prefix("local") {
                return Ok(Insn::Call(CallTarget::Local(resolve(label.trim(), true)?)));
            }
            if operand.starts_with('%') {
                return Ok(Insn::Call(CallTarget::Reg(parse_reg(n, operand)?)));
            }
            return Ok(Insn::Call(CallTarget::Helper(parse_imm32(n, operand)?)));
        }
        "neg" | "neg32" => {
            count(1)?;
            let (_, width) = split_width(mnemonic);
            return Ok(Insn::Neg {
                width,
                dst: parse_reg(n, ops[0])?,
            });
        }
        "lock" => {
            // `lock [fetch] op[32] [mem], %rN`: the operation words sit before the first operand.
            let first = ops.first().copied().unwrap_or("");
            let mut words: Vec<&str> = first.split_whitespace().collect();
            let mem = if words.last().is_some_and(|w| w.starts_with('[')) {
                words.pop()
            } else {
                None
            };
            let (Some(mem), 2) = (mem, ops.len()) else {
                return Err(err(
                    n,
                    AsmErrorKind::OperandCount {
                        mnemonic: "lock".to_string(),
                        expected: 2,
                        got: ops.len().saturating_sub(usize::from(first.is_empty())),
                    },
                ));
            };
            let (fetch, name) = match words.as_slice() {
                ["fetch", name] => (true, *name),
                [name] => (false, *name),
                _ => return Err(unknown()),
            };
            let (base, width) = split_width(name);
            let op = match (base, fetch) {
                ("add", fetch) => AtomicOp::Add { fetch },
                ("or", fetch) => AtomicOp::Or { fetch },
                ("and", fetch) => AtomicOp::And { fetch },
                ("xor", fetch) => AtomicOp::Xor { fetch },
                ("xchg", false) => AtomicOp::Xchg,
                ("cmpxchg", false) => AtomicOp::Cmpxchg,
                _ => return Err(unknown()),
            };
            let size = if width == Width::W32 { 4 } else { 8 };
            let (dst, off) = parse_mem(n, mem)?;
            let src = parse_reg(n, ops[1])?;
            return Ok(Insn::Atomic {
                size,
                op,
                dst,
                src,
                off,
            });
        }
        _ => {}
    }

    if let Some(rest) = mnemonic.strip_prefix("movsx") {
        count(2)?;
        let (bits, width) = match rest {
            "832" => (8, Width::W32),
            "1632" => (16, Width::W32),
            "864" => (8, Width::W64),
            "1664" => (16, Width::W64),
            "3264" => (32, Width::W64),
            _ => return Err(unknown()),
        };
        return Ok(Insn::MovSx {
            width,
            bits,
            dst: parse_reg(n, ops[0])?,
            src: parse_reg(n, ops[1])?,
        });
    }
    for (prefix, kind) in [
        ("le", Endian::Le),
        ("be", Endian::Be),
        ("bswap", Endian::Swap),
        ("swap", Endian::Swap),
    ] {
        if let Some(bits) = mnemonic.strip_prefix(prefix) {
            if let Ok(bits @ (16 | 32 | 64)) = bits.parse::<u8>() {
                count(1)?;
                return Ok(Insn::End {
                    kind,
                    bits,
                    dst: parse_reg(n, ops[0])?,
                });
            }
        }
    }
    if let Some(suffix) = mnemonic.strip_prefix("ldxs").filter(|s| *s != "dw") {
        if let Some(size) = size_of(suffix) {
            count(2)?;
            let (src, off) = parse_mem(n, ops[1])?;
            return Ok(Insn::Load {
                size,
                signed: true,
                dst: parse_reg(n, ops[0])?,
                src,
                off,
            });
        }
    }
    if let Some(size) = mnemonic.strip_prefix("ldx").and_then(size_of) {
        count(2)?;
        let dst = parse_reg(n, ops[0])?;
        let (src, off) = parse_mem(n, ops[1])?;
        return Ok(Insn::Load {
            size,
            signed: false,
            dst,
            src,
            off,
        });
    }
    if let Some(size) = mnemonic.strip_prefix("stx").and_then(size_of) {
        count(2)?;
        let (dst, off) = parse_mem(n, ops[0])?;
        return Ok(Insn::Store {
            size,
            dst,
            off,
            src: Operand::Reg(parse_reg(n, ops[1])?),
        });
    }
    if let Some(size) = mnemonic.strip_prefix("st").and_then(size_of) {
        count(2)?;
        let (dst, off) = parse_mem(n, ops[0])?;
        return Ok(Insn::Store {
            size,
            dst,
            off,
            src: Operand::Imm(parse_imm32(n, ops[1])?),
        });
    }
    let (base, width) = split_width(mnemonic);
    if let Some(op) = alu_op(base) {
        count(2)?;
        return Ok(Insn::Alu {
            width,
            op,
            dst: parse_reg(n, ops[0])?,
            src: parse_operand(n, ops[1])?,
        });
    }
    if let Some(cond) = jmp_cond(base) {
        count(3)?;
        let offset = resolve(ops[2], false)?;
        return Ok(Insn::Jump {
            width,
            cond,
            dst: parse_reg(n, ops[0])?,
            src: parse_operand(n, ops[1])?,
            offset: offset as i16,
        });
    }
    Err(unknown())
}

#[cfg(test)]
mod tests {
    use bpfmaps_abi::insn::{decode_program, disassemble};

    use super::*;

    #[test]
    fn assembles_labels_and_the_implicit_exit_label() {
        let slots =
            assemble("mov %r0, 1\njeq %r0, 1, exit\nja done\ndone:\nmov %r0, 2\nexit").unwrap();
        assert_eq!(slots[1], RawInsn::new(0x15, 0, 0, 2, 1));
        assert_eq!(slots[2], RawInsn::new(0x05, 0, 0, 0, 0));
    }

    #[test]
    fn rejects_what_the_suite_calls_invalid() {
        let kind = |src: &str| assemble(src).unwrap_err().kind;
        assert!(matches!(
            kind("mov32 %r0, 2147483648"),
            AsmErrorKind::InvalidImmediate(_)
        ));
        assert!(matches!(
            kind("mov32 %r0, 0x100000000"),
            AsmErrorKind::InvalidImmediate(_)
        ));
        assert!(matches!(
            kind("ja NOT_A_LABEL"),
            AsmErrorKind::InvalidTarget(_)
        ));
        assert!(matches!(
            kind("lock or [%r10-8]"),
            AsmErrorKind::OperandCount { .. }
        ));
        assert!(matches!(kind("lock"), AsmErrorKind::OperandCount { .. }));
        assert!(matches!(
            kind("ldxq %r0, %r1"),
            AsmErrorKind::UnknownMnemonic(_)
        ));
        assert!(matches!(
            kind("ldxb %r0, %r1"),
            AsmErrorKind::InvalidMemory(_)
        ));
        assert!(matches!(
            kind("ldxb %r0, [%r1+0x10000]"),
            AsmErrorKind::InvalidMemory(_)
        ));
        assert!(matches!(
            kind("lddw %r0"),
            AsmErrorKind::OperandCount { .. }
        ));
        assert!(matches!(
            kind("or %r0, %r50"),
            AsmErrorKind::InvalidRegister(_)
        ));
        assert_eq!(assemble("mov32 %r0, 0xffffffff").unwrap()[0].imm, -1);
    }

    #[test]
    fn disassembly_reassembles_to_the_same_slots() {
        let source = "lddw %r0, 0x1122334455667788\nstxdw [%r10-8], %r0\n\
            lock fetch xor32 [%r10-8], %r1\nlock cmpxchg [%r10-8], %r1\nldxsh %r2, [%r10-8]\n\
            movsx3264 %r3, %r2\nbe16 %r3\nbswap64 %r3\nsdiv32 %r3, -3\nsmod %r3, %r2\n\
            jsle32 %r3, %r2, -3\nja32 +0\ncall 5\ncall %r2\nneg %r3\nexit";
        let slots = assemble(source).unwrap();
        let text: Vec<String> = decode_program(&slots)
            .unwrap()
            .iter()
            .map(|(_, insn)| disassemble(insn))
            .collect();
        assert_eq!(assemble(&text.join("\n")).unwrap(), slots);
    }
}
