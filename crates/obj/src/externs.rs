//! Extern variables and functions of an object, as libbpf resolves them:
//!
//! - **`.kconfig`** (`extern int LINUX_KERNEL_VERSION __kconfig;`, `extern bool CONFIG_X
//!   __kconfig __weak;`): laid out in an internal read-only map named like a data section
//!   (`<obj>.kconfig`), sorted as libbpf sorts them (alignment descending, size ascending, name),
//!   and filled by [`crate::ObjectSpec::fill_kconfig`] from a [`KernelConfig`]: `y`/`m`/`n` as
//!   1/2/0 for `enum libbpf_tristate`, booleans, chars, integers (range-checked), strings; a
//!   weak extern the configuration lacks stays zero, a strong one is an error naming it;
//! - **`.ksyms`** (typed ksyms and kfuncs, `bpf_ksym_exists`): listed in
//!   [`crate::ObjectSpec::externs`] with every instruction that uses them, for the kernel
//!   loader to resolve to BTF ids; [`crate::ObjectSpec::resolve_ksyms_absent`] resolves every
//!   weak one to "absent" (the user engine has no kernel symbols): `bpf_ksym_exists` is false
//!   and a kfunc call is poisoned as libbpf poisons a missing weak kfunc.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use bpfmaps_abi::insn::RawInsn;

use crate::co_re::types::{kind, Types};
use crate::elf::ElfFacts;
use crate::ObjError;

/// `BTF_VAR_GLOBAL_EXTERN`.
const BTF_VAR_GLOBAL_EXTERN: u32 = 2;
/// `BTF_INT_BOOL`.
const BTF_INT_BOOL: u32 = 4;
/// libbpf's base id for a poisoned call to a missing weak kfunc (`POISON_CALL_KFUNC_BASE`):
/// the call becomes a helper call with this id plus the extern's index.
pub const POISON_KFUNC_BASE: i32 = 2_002_000_000;

/// What a `.kconfig` extern's C type is, as libbpf classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KconfigType {
    /// `bool` (1-byte INT with the BOOL encoding).
    Bool,
    /// `enum libbpf_tristate`: 0 = n, 1 = y, 2 = m.
    Tristate,
    /// `char`: takes `y`/`n`/`m` as characters, or a number.
    Char,
    /// An integer of 2, 4 or 8 bytes (or another 1-byte int).
    Int {
        /// Whether it is signed (for the range check).
        signed: bool,
    },
    /// `char[N]`: a string value.
    CharArray,
}

/// What an extern is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExternKind {
    /// A `.kconfig` variable, at `offset` in the `.kconfig` map's value.
    Kconfig {
        /// Byte offset in the `.kconfig` map's value.
        offset: u32,
        /// Size in bytes.
        size: u32,
        /// How values are written.
        value_type: KconfigType,
    },
    /// A `.ksyms` symbol: a kernel variable (`function` false) or a kfunc.
    Ksym {
        /// True for a kernel function.
        function: bool,
        /// The `VAR`'s type (0 for a typeless `extern const void x __ksym`) or the `FUNC`'s
        /// prototype, in the object's BTF.
        type_id: u32,
        /// The `VAR` or `FUNC` type id in the object's BTF.
        btf_id: u32,
    },
}

/// One instruction that uses an extern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternSite {
    /// The program.
    pub program: String,
    /// Instruction index in its [`crate::ProgramSpec::instructions`].
    pub insn_index: usize,
    /// True for a call (kfunc), false for an `lddw` (address or `.kconfig` value).
    pub call: bool,
}

/// An extern of the object, in libbpf's order (`.kconfig` ones first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternSpec {
    /// Its name.
    pub name: String,
    /// `__weak`: may stay unresolved (zero, absent).
    pub weak: bool,
    /// What it is.
    pub kind: ExternKind,
    /// Every instruction that uses it.
    pub sites: Vec<ExternSite>,
    /// True once resolved (a `.kconfig` value written, a ksym resolved or made absent).
    pub resolved: bool,
}

/// What `.kconfig` externs are filled from: the kernel's version and configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// `LINUX_KERNEL_VERSION` (`KERNEL_VERSION(a, b, c)`, patch capped at 255).
    pub version: u32,
    /// `CONFIG_*` lines (`CONFIG_BPF` → `y`), `None` when no configuration was read.
    pub entries: Option<HashMap<String, String>>,
    /// `LINUX_HAS_BPF_COOKIE`.
    pub has_bpf_cookie: bool,
    /// `LINUX_HAS_SYSCALL_WRAPPER`.
    pub has_syscall_wrapper: bool,
}

/// `KERNEL_VERSION(a, b, c)` as the kernel's headers define it.
pub fn kernel_version_code(major: u32, minor: u32, patch: u32) -> u32 {
    (major << 16) + (minor << 8) + patch.min(255)
}

/// The leading `a.b.c` of `text` as three numbers (`sscanf("%u.%u.%u")`).
fn three_numbers(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.splitn(3, '.');
    let num = |s: &str| -> Option<u32> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    let a = num(parts.next()?)?;
    let b = num(parts.next()?)?;
    let c = num(parts.next()?)?;
    Some((a, b, c))
}

/// The kernel version the libbpf way: Ubuntu's `/proc/version_signature`, then a Debian
/// `uname -v` ("Debian 6.1.55-1"), then `uname -r`.
pub fn libbpf_kernel_version(
    version_signature: Option<&str>,
    uname_release: &str,
    uname_version: &str,
) -> Option<u32> {
    if let Some(sig) = version_signature {
        // "Ubuntu 5.15.0-91.101-generic 5.15.131": the third word.
        if let Some((a, b, c)) = sig.split_whitespace().nth(2).and_then(three_numbers) {
            return Some(kernel_version_code(a, b, c));
        }
    }
    if let Some(at) = uname_version.find("Debian ") {
        if let Some((a, b, c)) = three_numbers(&uname_version[at + 7..]) {
            return Some(kernel_version_code(a, b, c));
        }
    }
    three_numbers(uname_release).map(|(a, b, c)| kernel_version_code(a, b, c))
}

/// Parses the `CONFIG_X=value` lines of a kernel configuration (comments and other lines
/// ignored).
pub fn parse_kernel_config(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn uname() -> (String, String) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = std::fs::read_to_string("/proc/sys/kernel/version").unwrap_or_default();
    (release.trim().to_owned(), version.trim().to_owned())
}

impl KernelConfig {
    /// The running kernel's: version as libbpf computes it, and, when `with_config`, the
    /// configuration from `/proc/config.gz` or else `/boot/config-$(uname -r)`.
    pub fn from_system(with_config: bool) -> Result<KernelConfig, ObjError> {
        let (release, version) = uname();
        let signature = std::fs::read_to_string("/proc/version_signature").ok();
        let code = libbpf_kernel_version(signature.as_deref(), &release, &version).unwrap_or(0);
        let entries = if with_config {
            Some(parse_kernel_config(&read_system_config(&release)?))
        } else {
            None
        };
        Ok(KernelConfig {
            version: code,
            entries,
            // BPF cookies exist since 5.15; x86-64 syscalls go through wrappers since 4.17.
            has_bpf_cookie: code >= kernel_version_code(5, 15, 0),
            has_syscall_wrapper: cfg!(target_arch = "x86_64")
                && code >= kernel_version_code(4, 17, 0),
        })
    }
}

fn read_system_config(release: &str) -> Result<String, ObjError> {
    let gz = Path::new("/proc/config.gz");
    if let Ok(bytes) = std::fs::read(gz) {
        let mut text = String::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_string(&mut text)
            .map_err(|e| ObjError::Io {
                path: gz.display().to_string(),
                reason: format!("not a gzip-compressed kernel configuration: {e}"),
            })?;
        return Ok(text);
    }
    let boot = format!("/boot/config-{release}");
    std::fs::read_to_string(&boot).map_err(|e| ObjError::Io {
        path: boot.clone(),
        reason: format!("{e} (and /proc/config.gz is not readable): CONFIG_ externs need the kernel configuration"),
    })
}

/// An extern symbol the loader knows how to resolve, before its sites are known.
pub(crate) struct Planned {
    pub spec: ExternSpec,
    align: u32,
}

fn extern_error(name: &str, reason: impl Into<String>) -> ObjError {
    ObjError::BadExtern {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

fn kconfig_type(btf: &Types, id: u32) -> Option<KconfigType> {
    let (_, t) = btf.skip_mods(id)?;
    match t.kind {
        kind::INT => {
            let enc = t.int_encoding();
            if enc & BTF_INT_BOOL != 0 {
                return (t.size_or_type == 1).then_some(KconfigType::Bool);
            }
            if t.size_or_type == 1 {
                return Some(KconfigType::Char);
            }
            let sz = t.size_or_type;
            if !(1..=8).contains(&sz) || !sz.is_power_of_two() {
                return None;
            }
            Some(KconfigType::Int {
                signed: enc & 1 != 0,
            })
        }
        kind::ENUM | kind::ENUM64 => {
            let ok = btf.name(t.name_off) == "libbpf_tristate"
                && (t.kind == kind::ENUM64 || t.size_or_type == 4);
            ok.then_some(KconfigType::Tristate)
        }
        kind::ARRAY => {
            let (elem, _, n) = t.array()?;
            (n > 0 && kconfig_type(btf, elem) == Some(KconfigType::Char))
                .then_some(KconfigType::CharArray)
        }
        _ => None,
    }
}

/// `btf__align_of`: the alignment of type `id`.
fn align_of(btf: &Types, id: u32) -> Option<u32> {
    let (_, t) = btf.skip_mods(id)?;
    match t.kind {
        kind::INT | kind::ENUM | kind::ENUM64 | kind::FLOAT => Some(t.size_or_type.clamp(1, 8)),
        kind::PTR => Some(8),
        kind::ARRAY => align_of(btf, t.array()?.0),
        kind::STRUCT | kind::UNION => {
            let mut max = 1;
            for i in 0..t.vlen {
                max = max.max(align_of(btf, t.member(i)?.type_id)?);
            }
            Some(max)
        }
        _ => None,
    }
}

/// Finds every extern symbol of the object in its BTF `.kconfig`/`.ksyms` sections and lays the
/// `.kconfig` ones out. An extern relocation to anything else is [`ObjError::UnresolvedExtern`].
pub(crate) fn collect(facts: &ElfFacts, btf: Option<&Types>) -> Result<Vec<ExternSpec>, ObjError> {
    let mut names: Vec<&str> = Vec::new();
    for r in &facts.extern_relocations {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    let unresolved = |name: &str| {
        let r = facts
            .extern_relocations
            .iter()
            .find(|r| r.name == name)
            .expect("name comes from a relocation");
        ObjError::UnresolvedExtern {
            symbol: name.to_owned(),
            section: facts
                .section(r.section)
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            offset: r.offset,
        }
    };
    let mut planned: Vec<Planned> = Vec::new();
    for name in names {
        let Some(btf) = btf else {
            return Err(unresolved(name));
        };
        let weak = facts
            .symbols
            .iter()
            .any(|s| s.name == name && s.section.is_none() && s.weak);
        // The extern's VAR or FUNC, and the DATASEC holding it.
        let mut found = None;
        for ds in btf.own_ids() {
            let Some(t) = btf.ty(ds) else { continue };
            if t.kind != kind::DATASEC {
                continue;
            }
            let sec = btf.name(t.name_off);
            if sec != ".kconfig" && sec != ".ksyms" {
                continue;
            }
            for i in 0..t.vlen {
                let Some((var, _, _)) = datasec_entry(btf, ds, i) else {
                    continue;
                };
                let Some(v) = btf.ty(var) else { continue };
                if btf.name(v.name_off) == name {
                    found = Some((sec == ".kconfig", var, v));
                }
            }
        }
        let Some((is_kconfig, var, v)) = found else {
            return Err(unresolved(name));
        };
        let is_func = v.kind == kind::FUNC;
        if !is_func && (v.kind != kind::VAR || var_linkage(btf, var) != BTF_VAR_GLOBAL_EXTERN) {
            return Err(extern_error(name, "its BTF is not an extern variable"));
        }
        if is_kconfig {
            if is_func {
                return Err(extern_error(name, "extern functions cannot be in .kconfig"));
            }
            let size = btf
                .resolve_size(v.size_or_type)
                .filter(|&s| s > 0)
                .and_then(|s| u32::try_from(s).ok())
                .ok_or_else(|| extern_error(name, "its type has no size"))?;
            let align = align_of(btf, v.size_or_type)
                .ok_or_else(|| extern_error(name, "its type has no alignment"))?;
            let value_type = kconfig_type(btf, v.size_or_type).ok_or_else(|| {
                extern_error(
                    name,
                    "its type is unsupported (bool, char, integers, enum libbpf_tristate, char arrays)",
                )
            })?;
            planned.push(Planned {
                spec: ExternSpec {
                    name: name.to_owned(),
                    weak,
                    kind: ExternKind::Kconfig {
                        offset: 0,
                        size,
                        value_type,
                    },
                    sites: Vec::new(),
                    resolved: false,
                },
                align,
            });
        } else {
            let type_id = if is_func {
                v.size_or_type
            } else {
                btf.skip_mods(v.size_or_type).map_or(0, |x| x.0)
            };
            planned.push(Planned {
                spec: ExternSpec {
                    name: name.to_owned(),
                    weak,
                    kind: ExternKind::Ksym {
                        function: is_func,
                        type_id,
                        btf_id: var,
                    },
                    sites: Vec::new(),
                    resolved: false,
                },
                align: 0,
            });
        }
    }
    // libbpf's order: kcfg before ksym; kcfg by alignment descending, size ascending; then name.
    planned.sort_by(|a, b| {
        let rank = |p: &Planned| match p.spec.kind {
            ExternKind::Kconfig { size, .. } => (0, u32::MAX - p.align, size),
            ExternKind::Ksym { .. } => (1, 0, 0),
        };
        rank(a)
            .cmp(&rank(b))
            .then_with(|| a.spec.name.cmp(&b.spec.name))
    });
    let mut off = 0u32;
    for p in &mut planned {
        if let ExternKind::Kconfig { offset, size, .. } = &mut p.spec.kind {
            *offset = off.div_ceil(p.align) * p.align;
            off = *offset + *size;
        }
    }
    Ok(planned.into_iter().map(|p| p.spec).collect())
}

fn datasec_entry(btf: &Types, ds: u32, i: usize) -> Option<(u32, u32, u32)> {
    let t = btf.ty(ds)?;
    (t.kind == kind::DATASEC && i < t.vlen).then(|| {
        let m = t.member_raw(i);
        (m.0, m.1, m.2)
    })
}

fn var_linkage(btf: &Types, var: u32) -> u32 {
    btf.ty(var).map_or(0, |t| t.first_word())
}

/// The size of the `.kconfig` map's value: the end of the last `.kconfig` extern.
pub(crate) fn kconfig_size(externs: &[ExternSpec]) -> u32 {
    externs
        .iter()
        .filter_map(|e| match e.kind {
            ExternKind::Kconfig { offset, size, .. } => Some(offset + size),
            ExternKind::Ksym { .. } => None,
        })
        .max()
        .unwrap_or(0)
}

/// Writes `value` (a configuration value: `y`, `m`, `n`, a number, a quoted string) into `slot`
/// the way libbpf does for extern `e`.
pub(crate) fn write_value(
    name: &str,
    value_type: KconfigType,
    slot: &mut [u8],
    value: &str,
) -> Result<(), ObjError> {
    let bad = |why: String| extern_error(name, why);
    let size = slot.len();
    match value.as_bytes().first() {
        Some(c @ (b'y' | b'n' | b'm')) => {
            let c = *c;
            match value_type {
                KconfigType::Bool if c == b'm' => {
                    return Err(bad(format!(
                        "value '{}' implies tristate or char type",
                        char::from(c)
                    )))
                }
                KconfigType::Bool => slot[0] = u8::from(c == b'y'),
                KconfigType::Tristate => {
                    let v: u32 = match c {
                        b'y' => 1,
                        b'm' => 2,
                        _ => 0,
                    };
                    slot[..4].copy_from_slice(&v.to_le_bytes());
                }
                KconfigType::Char => slot[0] = c,
                _ => {
                    return Err(bad(format!(
                        "value '{}' implies bool, tristate, or char type",
                        char::from(c)
                    )))
                }
            }
        }
        Some(b'"') => {
            if value_type != KconfigType::CharArray {
                return Err(bad(format!("value '{value}' implies char array type")));
            }
            if value.len() < 2 || !value.ends_with('"') {
                return Err(bad(format!("invalid string config '{value}'")));
            }
            let inner = &value.as_bytes()[1..value.len() - 1];
            let len = inner.len().min(size - 1);
            slot[..len].copy_from_slice(&inner[..len]);
            slot[len] = 0;
        }
        _ => {
            let num = parse_u64(value)
                .ok_or_else(|| bad(format!("value '{value}' isn't a valid integer")))?;
            if !matches!(value_type, KconfigType::Int { .. } | KconfigType::Char) {
                return Err(bad(format!("value '{value}' implies integer type")));
            }
            write_number(name, value_type, slot, num)?;
        }
    }
    Ok(())
}

/// `strtoull(value, 0)`: decimal, `0x` hex or leading-`0` octal, a leading `-` negating.
fn parse_u64(value: &str) -> Option<u64> {
    let (neg, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let v = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        u64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if neg { v.wrapping_neg() } else { v })
}

/// `set_kcfg_value_num`: range-checked against the extern's size and signedness.
pub(crate) fn write_number(
    name: &str,
    value_type: KconfigType,
    slot: &mut [u8],
    value: u64,
) -> Result<(), ObjError> {
    let bad = |why: String| extern_error(name, why);
    if !matches!(
        value_type,
        KconfigType::Int { .. } | KconfigType::Char | KconfigType::Bool
    ) {
        return Err(bad(format!(
            "value '{value}' implies integer, char, or boolean type"
        )));
    }
    if value_type == KconfigType::Bool && value > 1 {
        return Err(bad(format!("value '{value}' isn't boolean compatible")));
    }
    let size = slot.len();
    let bits = size * 8;
    let signed = matches!(value_type, KconfigType::Int { signed: true });
    let fits = size == 8
        || if signed {
            value.wrapping_add(1u64 << (bits - 1)) < (1u64 << bits)
        } else {
            value >> bits == 0
        };
    if !fits {
        return Err(bad(format!(
            "value '{value}' doesn't fit in {size} bytes (ERANGE)"
        )));
    }
    if ![1, 2, 4, 8].contains(&size) {
        return Err(bad(format!("{size}-byte integers are not supported")));
    }
    slot.copy_from_slice(&value.to_le_bytes()[..size]);
    Ok(())
}

/// The poisoned call libbpf writes for a missing weak kfunc (extern index `index`).
pub(crate) fn poisoned_kfunc_call(index: usize) -> RawInsn {
    let id = POISON_KFUNC_BASE.saturating_add(i32::try_from(index).unwrap_or(i32::MAX));
    RawInsn::new(crate::insn::opcode::CALL, 0, 0, 0, id)
}
