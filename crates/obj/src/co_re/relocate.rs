//! The CO-RE relocation algorithm: an access spec parsed against the object's (local) BTF,
//! matched against every candidate of the target BTF, the value computed per relocation kind,
//! and the instruction patched, or poisoned when the relocation cannot be satisfied. The rules
//! are libbpf's (`relo_core.c`): the same compatibility checks, ambiguity errors, candidate
//! pruning, validation of the compiled value and load/store size adjustment.

use std::collections::HashMap;

use bpfmaps_abi::insn::RawInsn;

use super::target::{IndexedTypes, TargetBtf};
use super::types::{essential_name, kind, kind_name, kinds_core_compatible, Types, BTF_INT_SIGNED};
use super::CoreKind;

/// The most accessors a spec may have (`BPF_CORE_SPEC_MAX_LEN`).
const SPEC_MAX_LEN: usize = 64;
/// Recursion budget of the type compatibility checks.
const COMPAT_LEVELS: i32 = 32;

/// The helper id a poisoned instruction calls (`0xbad2310`, "bad relo"): a call the kernel's
/// verifier refuses only if the path reaching it is live.
pub const POISON_HELPER_ID: i32 = 0x0bad_2310;

/// One step of an access: a named member, or an array index (name `None`).
#[derive(Clone, Debug)]
struct Accessor<'a> {
    type_id: u32,
    idx: u32,
    name: Option<&'a str>,
}

/// A parsed access, in local or target terms.
#[derive(Clone, Debug)]
pub(crate) struct Spec<'a> {
    btf: &'a Types,
    root_type_id: u32,
    /// High-level accessors: named fields and array indexes.
    acc: Vec<Accessor<'a>>,
    /// Low-level access string, one entry per nesting level (anonymous members included).
    raw: Vec<u32>,
    bit_offset: u64,
}

impl<'a> Spec<'a> {
    fn new(btf: &'a Types, root_type_id: u32) -> Spec<'a> {
        Spec {
            btf,
            root_type_id,
            acc: Vec::new(),
            raw: Vec::new(),
            bit_offset: 0,
        }
    }

    /// A C-like rendering: `task_struct.real_parent`, `sample.a[3]`, `E::VALUE`.
    pub(crate) fn describe(&self, kind_: CoreKind) -> String {
        let root = self.btf.type_name(self.root_type_id);
        let root_kind = self.btf.ty(self.root_type_id).map_or(0, |t| t.kind);
        let mut s = format!(
            "[{}] {} {}",
            self.root_type_id,
            kind_name(root_kind),
            if root.is_empty() { "<anon>" } else { root }
        );
        if kind_.is_type_based() {
            return s;
        }
        if kind_.is_enumval_based() {
            if let Some(a) = self.acc.first() {
                s.push_str(&format!("::{}", a.name.unwrap_or("")));
            }
            return s;
        }
        for (i, a) in self.acc.iter().enumerate() {
            match a.name {
                Some(n) => s.push_str(&format!(".{n}")),
                None if i > 0 || a.idx > 0 => s.push_str(&format!("[{}]", a.idx)),
                None => {}
            }
        }
        let raw: Vec<String> = self.raw.iter().map(u32::to_string).collect();
        s.push_str(&format!(" ({}) @ bit {}", raw.join(":"), self.bit_offset));
        s
    }
}

/// `a * b * 8` bits, or an error when it does not fit (hostile BTF).
fn bits(a: u64, b: u64) -> Result<u64, String> {
    a.checked_mul(b)
        .and_then(|x| x.checked_mul(8))
        .ok_or_else(|| "offset overflows".to_owned())
}

/// `a + b`, or an error when it does not fit.
fn add(a: u64, b: u64) -> Result<u64, String> {
    a.checked_add(b)
        .ok_or_else(|| "offset overflows".to_owned())
}

fn size_of(btf: &Types, id: u32) -> Result<u64, String> {
    btf.resolve_size(id)
        .ok_or_else(|| format!("type [{id}] has no size"))
}

/// True for a flexible array: the last member of a struct, declared with 0 elements.
fn is_flex_array(btf: &Types, parent: Option<&Accessor<'_>>, nelems: u32) -> bool {
    let Some(parent) = parent else { return false };
    if parent.name.is_none() || nelems > 0 {
        return false;
    }
    btf.ty(parent.type_id)
        .is_some_and(|t| t.vlen > 0 && parent.idx as usize == t.vlen - 1)
}

/// Parses the access string of a relocation against the local BTF.
pub(crate) fn parse_spec<'a>(
    btf: &'a Types,
    type_id: u32,
    access: &str,
    kind_: CoreKind,
) -> Result<Spec<'a>, String> {
    if access.is_empty() || access.starts_with(':') {
        return Err(format!("malformed access string `{access}`"));
    }
    let mut spec = Spec::new(btf, type_id);
    if kind_.is_type_based() {
        return if access == "0" {
            Ok(spec)
        } else {
            Err(format!(
                "a type relocation's access string must be `0`, not `{access}`"
            ))
        };
    }
    // libbpf's loop: skip one `:`, then `sscanf("%d")` (leading blanks and a sign allowed).
    let bytes = access.as_bytes();
    let mut at = 0;
    let malformed = || format!("malformed access string `{access}`");
    while at < bytes.len() {
        if bytes[at] == b':' {
            at += 1;
        }
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let negative = bytes.get(at) == Some(&b'-');
        if matches!(bytes.get(at), Some(b'-' | b'+')) {
            at += 1;
        }
        let start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        if at == start {
            return Err(malformed());
        }
        let v: i64 = access[start..at].parse().map_err(|_| malformed())?;
        if negative || v > i64::from(i32::MAX) {
            return Err(format!("access index {v} out of range in `{access}`"));
        }
        if spec.raw.len() == SPEC_MAX_LEN {
            return Err(format!("access string `{access}` nests too deep (E2BIG)"));
        }
        spec.raw.push(v as u32);
    }
    if spec.raw.is_empty() {
        return Err(malformed());
    }
    let (mut id, t) = btf
        .skip_mods(type_id)
        .ok_or_else(|| format!("local type [{type_id}] not found"))?;
    let first = spec.raw[0];
    spec.acc.push(Accessor {
        type_id: id,
        idx: first,
        name: None,
    });
    if kind_.is_enumval_based() {
        if !t.is_any_enum() || spec.raw.len() > 1 || first as usize >= t.vlen {
            return Err(format!(
                "enum value access `{access}` does not name an enumerator of [{id}]"
            ));
        }
        spec.acc[0].name = t.enumerator_name(first as usize).map(|o| btf.name(o));
        return Ok(spec);
    }
    let sz = size_of(btf, id)?;
    spec.bit_offset = bits(u64::from(first), sz)?;
    for i in 1..spec.raw.len() {
        let (cur, t) = btf
            .skip_mods(id)
            .ok_or_else(|| format!("type [{id}] not found"))?;
        id = cur;
        let idx = spec.raw[i];
        if t.is_composite() {
            let m = t
                .member(idx as usize)
                .ok_or_else(|| format!("member {idx} out of range in [{id}] (`{access}`)"))?;
            spec.bit_offset = add(spec.bit_offset, u64::from(m.bit_offset))?;
            if m.name_off != 0 {
                let name = btf.name(m.name_off);
                if name.is_empty() {
                    return Err(format!("member {idx} of [{id}] has an unreadable name"));
                }
                spec.acc.push(Accessor {
                    type_id: id,
                    idx,
                    name: Some(name),
                });
            }
            id = m.type_id;
        } else if let Some((elem, _, nelems)) = t.array() {
            let (eid, _) = btf
                .skip_mods(elem)
                .ok_or_else(|| format!("array element type [{elem}] not found"))?;
            let flex = is_flex_array(btf, spec.acc.last(), nelems);
            if !flex && idx >= nelems {
                return Err(format!(
                    "index {idx} past the {nelems} elements of array [{id}] (`{access}`)"
                ));
            }
            id = eid;
            spec.acc.push(Accessor {
                type_id: id,
                idx,
                name: None,
            });
            spec.bit_offset = add(spec.bit_offset, bits(u64::from(idx), size_of(btf, id)?)?)?;
        } else {
            return Err(format!(
                "access `{access}` (at {i}) goes into [{id}] of kind {}, not a struct, union or array",
                kind_name(t.kind)
            ));
        }
    }
    Ok(spec)
}

/// Field compatibility (libbpf's `bpf_core_fields_are_compat`).
fn fields_compatible(
    local: &Types,
    mut lid: u32,
    targ: &Types,
    mut tid: u32,
) -> Result<bool, String> {
    for _ in 0..super::types::MAX_CHAIN {
        let (l, lt) = local.skip_mods(lid).ok_or("local type chain broken")?;
        let (t, tt) = targ.skip_mods(tid).ok_or("target type chain broken")?;
        if lt.is_composite() && tt.is_composite() {
            return Ok(true);
        }
        if !kinds_core_compatible(&lt, &tt) {
            return Ok(false);
        }
        match lt.kind {
            kind::PTR | kind::FLOAT => return Ok(true),
            kind::FWD | kind::ENUM | kind::ENUM64 => {
                let ln = essential_name(local.name(lt.name_off));
                let tn = essential_name(targ.name(tt.name_off));
                return Ok(ln.is_empty() || tn.is_empty() || ln == tn);
            }
            kind::INT => return Ok(lt.int_offset() == 0 && tt.int_offset() == 0),
            kind::ARRAY => {
                lid = lt.array().map_or(0, |a| a.0);
                tid = tt.array().map_or(0, |a| a.0);
                let _ = (l, t);
            }
            _ => return Ok(false),
        }
    }
    Err("type chain too deep".to_owned())
}

/// Type compatibility for type-based relocations (`bpf_core_types_are_compat`).
pub(crate) fn types_compatible(
    local: &Types,
    lid: u32,
    targ: &Types,
    tid: u32,
    level: i32,
) -> Result<bool, String> {
    let (Some(l0), Some(t0)) = (local.ty(lid), targ.ty(tid)) else {
        return Err("type not found".to_owned());
    };
    if !kinds_core_compatible(&l0, &t0) {
        return Ok(false);
    }
    let (mut lid, mut tid) = (lid, tid);
    for _ in 0..32 {
        let (l, lt) = local.skip_mods(lid).ok_or("local type chain broken")?;
        let (t, tt) = targ.skip_mods(tid).ok_or("target type chain broken")?;
        if !kinds_core_compatible(&lt, &tt) {
            return Ok(false);
        }
        match lt.kind {
            kind::UNKN | kind::STRUCT | kind::UNION | kind::ENUM | kind::FWD | kind::ENUM64 => {
                return Ok(true)
            }
            kind::INT => return Ok(lt.int_offset() == 0 && tt.int_offset() == 0),
            kind::PTR => {
                lid = lt.size_or_type;
                tid = tt.size_or_type;
            }
            kind::ARRAY => {
                lid = lt.array().map_or(0, |a| a.0);
                tid = tt.array().map_or(0, |a| a.0);
            }
            kind::FUNC_PROTO => {
                if lt.vlen != tt.vlen {
                    return Ok(false);
                }
                for i in 0..lt.vlen {
                    if level <= 0 {
                        return Err("type nesting too deep".to_owned());
                    }
                    let lp = local
                        .skip_mods(lt.param_type(i).unwrap_or(0))
                        .map_or(0, |x| x.0);
                    let tp = targ
                        .skip_mods(tt.param_type(i).unwrap_or(0))
                        .map_or(0, |x| x.0);
                    if !types_compatible(local, lp, targ, tp, level - 1)? {
                        return Ok(false);
                    }
                }
                lid = local.skip_mods(lt.size_or_type).map_or(0, |x| x.0);
                tid = targ.skip_mods(tt.size_or_type).map_or(0, |x| x.0);
            }
            _ => return Ok(false),
        }
        let _ = (l, t);
    }
    Err("type chain too deep".to_owned())
}

fn names_match(local: &Types, loff: u32, targ: &Types, toff: u32) -> bool {
    let ln = local.name(loff);
    let tn = targ.name(toff);
    if tn.is_empty() {
        return ln.is_empty();
    }
    essential_name(ln) == essential_name(tn)
}

/// The stricter "type matches" relation of `bpf_core_type_matches()`.
pub(crate) fn types_match(
    local: &Types,
    lid: u32,
    targ: &Types,
    tid: u32,
    behind_ptr: bool,
    level: i32,
) -> Result<bool, String> {
    if level <= 0 {
        return Err("type nesting too deep".to_owned());
    }
    let (mut lid, mut tid, mut behind_ptr) = (lid, tid, behind_ptr);
    for _ in 0..32 {
        let (_, lt) = local.skip_mods(lid).ok_or("local type chain broken")?;
        let (_, tt) = targ.skip_mods(tid).ok_or("target type chain broken")?;
        if !names_match(local, lt.name_off, targ, tt.name_off) {
            return Ok(false);
        }
        match lt.kind {
            kind::UNKN => return Ok(tt.kind == kind::UNKN),
            kind::FWD => {
                return Ok(if behind_ptr && tt.kind != kind::FWD {
                    (tt.kind == kind::STRUCT && !lt.kflag) || (tt.kind == kind::UNION && lt.kflag)
                } else {
                    tt.kind == kind::FWD && lt.kflag == tt.kflag
                })
            }
            kind::ENUM | kind::ENUM64 => {
                if !tt.is_any_enum() || lt.size_or_type != tt.size_or_type || lt.vlen > tt.vlen {
                    return Ok(false);
                }
                for i in 0..lt.vlen {
                    let ln = lt.enumerator_name(i).unwrap_or(0);
                    let found = (0..tt.vlen)
                        .any(|j| names_match(local, ln, targ, tt.enumerator_name(j).unwrap_or(0)));
                    if !found {
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
            kind::STRUCT | kind::UNION => {
                if behind_ptr {
                    if lt.kind == tt.kind {
                        return Ok(true);
                    }
                    return Ok(tt.kind == kind::FWD && (lt.kind == kind::UNION) == tt.kflag);
                }
                if lt.kind != tt.kind || lt.vlen > tt.vlen {
                    return Ok(false);
                }
                for i in 0..lt.vlen {
                    let lm = lt.member(i).ok_or("member out of range")?;
                    let mut matched = false;
                    for j in 0..tt.vlen {
                        let tm = tt.member(j).ok_or("member out of range")?;
                        if !names_match(local, lm.name_off, targ, tm.name_off) {
                            continue;
                        }
                        if types_match(local, lm.type_id, targ, tm.type_id, behind_ptr, level - 1)?
                        {
                            matched = true;
                            break;
                        }
                    }
                    if !matched {
                        return Ok(false);
                    }
                }
                return Ok(true);
            }
            kind::INT => {
                return Ok(tt.kind == kind::INT
                    && lt.size_or_type == tt.size_or_type
                    && (lt.int_encoding() & BTF_INT_SIGNED)
                        == (tt.int_encoding() & BTF_INT_SIGNED))
            }
            kind::PTR => {
                if tt.kind != kind::PTR {
                    return Ok(false);
                }
                behind_ptr = true;
                lid = lt.size_or_type;
                tid = tt.size_or_type;
            }
            kind::ARRAY => {
                let (Some(la), Some(ta)) = (lt.array(), tt.array()) else {
                    return Ok(false);
                };
                if la.2 != ta.2 {
                    return Ok(false);
                }
                lid = la.0;
                tid = ta.0;
            }
            kind::FUNC_PROTO => {
                if tt.kind != kind::FUNC_PROTO || lt.vlen != tt.vlen {
                    return Ok(false);
                }
                for i in 0..lt.vlen {
                    let lp = lt.param_type(i).unwrap_or(0);
                    let tp = tt.param_type(i).unwrap_or(0);
                    if !types_match(local, lp, targ, tp, behind_ptr, level - 1)? {
                        return Ok(false);
                    }
                }
                lid = lt.size_or_type;
                tid = tt.size_or_type;
            }
            _ => return Ok(false),
        }
    }
    Err("type chain too deep".to_owned())
}

/// Finds the target member matching local accessor `local_acc` in composite `tid`, searching
/// through anonymous members, extending `spec`. Returns the matched member's type id.
fn match_member<'t>(
    local: &Types,
    local_acc: &Accessor<'_>,
    targ: &'t Types,
    tid: u32,
    spec: &mut Spec<'t>,
) -> Result<Option<u32>, String> {
    let (tid, tt) = targ.skip_mods(tid).ok_or("target type chain broken")?;
    if !tt.is_composite() {
        return Ok(None);
    }
    let lt = local.ty(local_acc.type_id).ok_or("local type not found")?;
    let lm = lt
        .member(local_acc.idx as usize)
        .ok_or("local member out of range")?;
    let lname = local.name(lm.name_off);
    for i in 0..tt.vlen {
        let m = tt.member(i).ok_or("member out of range")?;
        if spec.raw.len() == SPEC_MAX_LEN {
            return Err("struct/union/array nesting too deep (E2BIG)".to_owned());
        }
        spec.bit_offset = add(spec.bit_offset, u64::from(m.bit_offset))?;
        spec.raw.push(i as u32);
        let tname = targ.name(m.name_off);
        if tname.is_empty() {
            if let Some(found) = match_member(local, local_acc, targ, m.type_id, spec)? {
                return Ok(Some(found));
            }
        } else if tname == lname {
            if fields_compatible(local, lm.type_id, targ, m.type_id)? {
                spec.acc.push(Accessor {
                    type_id: tid,
                    idx: i as u32,
                    name: Some(tname),
                });
                return Ok(Some(m.type_id));
            }
            // Named match of an incompatible type: no match at all (the spec is discarded).
            return Ok(None);
        }
        spec.bit_offset -= u64::from(m.bit_offset);
        spec.raw.pop();
    }
    Ok(None)
}

/// Matches a local spec against candidate `tid` of `targ`; `None` when it does not match.
fn match_spec<'t>(
    local: &Spec<'_>,
    kind_: CoreKind,
    targ: &'t Types,
    tid: u32,
) -> Result<Option<Spec<'t>>, String> {
    let mut spec = Spec::new(targ, tid);
    if kind_.is_type_based() {
        let ok = if kind_ == CoreKind::TypeMatches {
            types_match(
                local.btf,
                local.root_type_id,
                targ,
                tid,
                false,
                COMPAT_LEVELS,
            )?
        } else {
            types_compatible(local.btf, local.root_type_id, targ, tid, COMPAT_LEVELS)?
        };
        return Ok(ok.then_some(spec));
    }
    if kind_.is_enumval_based() {
        let (tid, tt) = targ.skip_mods(tid).ok_or("target type chain broken")?;
        if !tt.is_any_enum() {
            return Ok(None);
        }
        let lname = essential_name(local.acc[0].name.unwrap_or(""));
        for i in 0..tt.vlen {
            let n = targ.name(tt.enumerator_name(i).unwrap_or(0));
            if essential_name(n) == lname {
                spec.acc.push(Accessor {
                    type_id: tid,
                    idx: i as u32,
                    name: Some(n),
                });
                spec.raw.push(i as u32);
                return Ok(Some(spec));
            }
        }
        return Ok(None);
    }
    let mut tid = tid;
    for (i, la) in local.acc.iter().enumerate() {
        let (cur, tt) = targ.skip_mods(tid).ok_or("target type chain broken")?;
        tid = cur;
        if la.name.is_some() {
            match match_member(local.btf, la, targ, tid, &mut spec)? {
                Some(next) => tid = next,
                None => return Ok(None),
            }
        } else {
            if i > 0 {
                let Some((elem, _, nelems)) = tt.array() else {
                    return Ok(None);
                };
                let flex = is_flex_array(targ, spec.acc.last(), nelems);
                if !flex && la.idx >= nelems {
                    return Ok(None);
                }
                tid = targ
                    .skip_mods(elem)
                    .ok_or("array element type chain broken")?
                    .0;
            }
            if spec.raw.len() == SPEC_MAX_LEN {
                return Err("struct/union/array nesting too deep (E2BIG)".to_owned());
            }
            spec.acc.push(Accessor {
                type_id: tid,
                idx: la.idx,
                name: None,
            });
            spec.raw.push(la.idx);
            spec.bit_offset = add(
                spec.bit_offset,
                bits(u64::from(la.idx), size_of(targ, tid)?)?,
            )?;
        }
    }
    Ok(Some(spec))
}

/// What one side (local or target) of a field relocation computes.
#[derive(Default)]
struct FieldValue {
    val: u64,
    /// The load/store size the field wants (0 when not applicable).
    size: u32,
    /// The field's type, for deciding whether a size change is safe.
    type_id: u32,
    validate: bool,
}

enum Fail {
    /// The relocation cannot be satisfied: poison the instruction.
    Poison,
    /// The load fails.
    Error(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Error(s)
    }
}

fn element_size(btf: &Types, id: u32) -> Result<u32, String> {
    let (mut eid, mut t) = btf.skip_mods(id).ok_or("type chain broken")?;
    while let Some((elem, _, _)) = t.array() {
        (eid, t) = btf.skip_mods(elem).ok_or("type chain broken")?;
    }
    u32::try_from(size_of(btf, eid)?).map_err(|_| "field too large".to_owned())
}

fn calc_field(kind_: CoreKind, spec: Option<&Spec<'_>>) -> Result<FieldValue, Fail> {
    if kind_ == CoreKind::FieldExists {
        return Ok(FieldValue {
            val: u64::from(spec.is_some()),
            validate: true,
            ..FieldValue::default()
        });
    }
    let spec = spec.ok_or(Fail::Poison)?;
    let btf = spec.btf;
    let acc = spec.acc.last().ok_or_else(|| "empty access".to_owned())?;
    if acc.name.is_none() {
        // An array element (or the root itself).
        return match kind_ {
            CoreKind::FieldByteOffset => Ok(FieldValue {
                val: spec.bit_offset / 8,
                size: element_size(btf, acc.type_id)?,
                type_id: acc.type_id,
                validate: true,
            }),
            CoreKind::FieldByteSize => Ok(FieldValue {
                val: size_of(btf, acc.type_id)?,
                validate: true,
                ..FieldValue::default()
            }),
            _ => Err(Fail::Error(format!(
                "relocation {} cannot be applied to an array element",
                kind_.name()
            ))),
        };
    }
    let t = btf
        .ty(acc.type_id)
        .ok_or_else(|| "type not found".to_owned())?;
    let m = t
        .member(acc.idx as usize)
        .ok_or_else(|| "member out of range".to_owned())?;
    let (field_type_id, mt) = btf
        .skip_mods(m.type_id)
        .ok_or_else(|| "field type chain broken".to_owned())?;
    let bit_off = spec.bit_offset;
    let mut bit_sz = u64::from(m.bitfield_size);
    let bitfield = bit_sz > 0;
    let (byte_off, byte_sz) = if bitfield {
        let mut byte_sz = u64::from(mt.size_or_type);
        if byte_sz == 0 {
            return Err(Fail::Error("bitfield of a zero-sized type".to_owned()));
        }
        let mut byte_off = bit_off / 8 / byte_sz * byte_sz;
        while bit_off.saturating_add(bit_sz) - byte_off * 8 > byte_sz * 8 {
            if byte_sz >= 8 {
                return Err(Fail::Error(
                    "bitfield cannot be read with a 64-bit load (E2BIG)".to_owned(),
                ));
            }
            byte_sz *= 2;
            byte_off = bit_off / 8 / byte_sz * byte_sz;
        }
        (byte_off, byte_sz)
    } else {
        let byte_sz = size_of(btf, field_type_id)?;
        bit_sz = byte_sz.wrapping_mul(8);
        (bit_off / 8, byte_sz)
    };
    let mut out = FieldValue {
        validate: !bitfield,
        ..FieldValue::default()
    };
    match kind_ {
        CoreKind::FieldByteOffset => {
            out.val = byte_off;
            if !bitfield {
                out.size = element_size(btf, field_type_id)?;
                out.type_id = field_type_id;
            }
        }
        CoreKind::FieldByteSize => out.val = byte_sz,
        CoreKind::FieldSigned => {
            out.val = u64::from(
                (mt.is_any_enum() && mt.kflag)
                    || (mt.kind == kind::INT && mt.int_encoding() & BTF_INT_SIGNED != 0),
            );
            out.validate = true;
        }
        CoreKind::FieldLshiftU64 => {
            out.val = 64u64.wrapping_sub(
                bit_off
                    .wrapping_add(bit_sz)
                    .wrapping_sub(byte_off.wrapping_mul(8)),
            );
        }
        CoreKind::FieldRshiftU64 => {
            out.val = 64u64.wrapping_sub(bit_sz);
            out.validate = true;
        }
        _ => {
            return Err(Fail::Error(format!(
                "unsupported CO-RE relocation kind {}",
                kind_.name()
            )))
        }
    }
    Ok(out)
}

/// The outcome of computing one relocation against one candidate (or none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Resolution {
    pub orig_val: u64,
    pub new_val: u64,
    pub poison: bool,
    pub validate: bool,
    pub fail_memsz_adjust: bool,
    pub orig_sz: u32,
    pub new_sz: u32,
}

fn calc_type(kind_: CoreKind, spec: Option<&Spec<'_>>) -> Result<u64, String> {
    let Some(spec) = spec else { return Ok(0) };
    match kind_ {
        CoreKind::TypeIdTarget => Ok(u64::from(spec.root_type_id)),
        CoreKind::TypeExists | CoreKind::TypeMatches => Ok(1),
        CoreKind::TypeSize => size_of(spec.btf, spec.root_type_id),
        _ => Err(format!(
            "unsupported CO-RE relocation kind {}",
            kind_.name()
        )),
    }
}

fn calc_enumval(kind_: CoreKind, spec: Option<&Spec<'_>>) -> Result<u64, Fail> {
    match kind_ {
        CoreKind::EnumvalExists => Ok(u64::from(spec.is_some())),
        CoreKind::EnumvalValue => {
            let spec = spec.ok_or(Fail::Poison)?;
            let a = &spec.acc[0];
            spec.btf
                .ty(a.type_id)
                .and_then(|t| t.enumerator_value(a.idx as usize))
                .ok_or_else(|| Fail::Error("enumerator not found".to_owned()))
        }
        _ => Err(Fail::Error(format!(
            "unsupported CO-RE relocation kind {}",
            kind_.name()
        ))),
    }
}

/// Computes a relocation's original (local) and new (target) values.
pub(crate) fn calc_relo(
    kind_: CoreKind,
    local: &Spec<'_>,
    targ: Option<&Spec<'_>>,
) -> Result<Resolution, String> {
    let mut res = Resolution {
        validate: true,
        ..Resolution::default()
    };
    if kind_.is_field_based() {
        let orig = match calc_field(kind_, Some(local)) {
            Ok(v) => v,
            Err(Fail::Poison) => {
                res.poison = true;
                return Ok(res);
            }
            Err(Fail::Error(e)) => return Err(e),
        };
        res.orig_val = orig.val;
        res.orig_sz = orig.size;
        res.validate = orig.validate;
        let new = match calc_field(kind_, targ) {
            Ok(v) => v,
            Err(Fail::Poison) => {
                res.poison = true;
                return Ok(res);
            }
            Err(Fail::Error(e)) => return Err(e),
        };
        res.new_val = new.val;
        res.new_sz = new.size;
        if res.orig_sz != res.new_sz {
            let targ_btf = targ.map(|s| s.btf);
            let ot = local.btf.ty(orig.type_id);
            let nt = targ_btf.and_then(|b| b.ty(new.type_id));
            let safe = match (ot, nt) {
                (Some(o), Some(n)) if o.kind == kind::PTR && n.kind == kind::PTR => true,
                (Some(o), Some(n)) if o.kind == kind::INT && n.kind == kind::INT => {
                    o.int_encoding() != BTF_INT_SIGNED && n.int_encoding() != BTF_INT_SIGNED
                }
                _ => false,
            };
            res.fail_memsz_adjust = !safe;
        }
    } else if kind_.is_type_based() {
        res.orig_val = calc_type(kind_, Some(local))?;
        res.new_val = calc_type(kind_, targ)?;
        if kind_ == CoreKind::TypeIdTarget {
            res.validate = false;
        }
    } else {
        for (side, spec) in [(0, Some(local)), (1, targ)] {
            match calc_enumval(kind_, spec) {
                Ok(v) if side == 0 => res.orig_val = v,
                Ok(v) => res.new_val = v,
                Err(Fail::Poison) => {
                    res.poison = true;
                    return Ok(res);
                }
                Err(Fail::Error(e)) => return Err(e),
            }
        }
    }
    Ok(res)
}

/// Candidate target types per local type id, pruned as relocations rule candidates out
/// (libbpf's candidate cache: a later relocation of the same type sees only the survivors).
pub(crate) struct CandidateCache<'t> {
    target: &'t TargetBtf,
    by_local: HashMap<u32, Vec<(&'t IndexedTypes, u32)>>,
}

impl<'t> CandidateCache<'t> {
    pub(crate) fn new(target: &'t TargetBtf) -> CandidateCache<'t> {
        CandidateCache {
            target,
            by_local: HashMap::new(),
        }
    }

    fn candidates(
        &mut self,
        local: &Types,
        local_id: u32,
    ) -> Result<&mut Vec<(&'t IndexedTypes, u32)>, String> {
        if !self.by_local.contains_key(&local_id) {
            let lt = local
                .ty(local_id)
                .ok_or_else(|| format!("local type [{local_id}] not found"))?;
            let name = local.name(lt.name_off);
            if name.is_empty() {
                return Err("CO-RE relocations of anonymous types are not supported".to_owned());
            }
            let essential = essential_name(name);
            let main = self.target.main();
            let mut cands: Vec<(&'t IndexedTypes, u32)> = main
                .candidates(essential, &lt)
                .into_iter()
                .map(|id| (main, id))
                .collect();
            if cands.is_empty() {
                for module in self.target.modules() {
                    cands.extend(
                        module
                            .candidates(essential, &lt)
                            .into_iter()
                            .map(|id| (module, id)),
                    );
                }
            }
            self.by_local.insert(local_id, cands);
        }
        Ok(self.by_local.get_mut(&local_id).expect("inserted above"))
    }
}

/// Resolves one relocation: the local spec's rendering and the resolution.
pub(crate) fn resolve(
    local_btf: &Types,
    type_id: u32,
    access: &str,
    kind_: CoreKind,
    cache: &mut CandidateCache<'_>,
) -> Result<(String, Resolution), String> {
    let lt = local_btf
        .ty(type_id)
        .ok_or_else(|| format!("local type [{type_id}] not found"))?;
    let local = parse_spec(local_btf, type_id, access, kind_).map_err(|e| {
        format!(
            "parsing [{type_id}] {} {} + {access} failed: {e}",
            kind_name(lt.kind),
            local_btf.name(lt.name_off)
        )
    })?;
    let described = local.describe(kind_);
    if kind_ == CoreKind::TypeIdLocal {
        return Ok((
            described,
            Resolution {
                orig_val: u64::from(type_id),
                new_val: u64::from(type_id),
                ..Resolution::default()
            },
        ));
    }
    let cands = cache.candidates(local_btf, type_id)?;
    let mut kept = Vec::new();
    let mut best: Option<(Resolution, u64)> = None;
    for &(blob, id) in cands.iter() {
        let Some(spec) = match_spec(&local, kind_, &blob.types, id)
            .map_err(|e| format!("error matching candidate [{id}] in {}: {e}", blob.name))?
        else {
            continue;
        };
        let res = calc_relo(kind_, &local, Some(&spec))?;
        match &best {
            None => best = Some((res, spec.bit_offset)),
            Some((b, off)) if *off != spec.bit_offset => {
                return Err(format!(
                    "field offset ambiguity: candidates give bit offsets {off} and {} ({described})",
                    spec.bit_offset
                ));
            }
            Some((b, _)) if b.poison != res.poison || b.new_val != res.new_val => {
                return Err(format!(
                    "relocation decision ambiguity: candidates give {} {} and {} {} ({described})",
                    if b.poison { "failure" } else { "success" },
                    b.new_val,
                    if res.poison { "failure" } else { "success" },
                    res.new_val
                ));
            }
            Some(_) => {}
        }
        kept.push((blob, id));
    }
    if !kept.is_empty() {
        *cands = kept;
    }
    let res = match best {
        Some((res, _)) => res,
        None => calc_relo(kind_, &local, None)?,
    };
    Ok((described, res))
}

/// Patches instruction `at` of `insns` with a resolution (libbpf's `bpf_core_patch_insn`).
/// Returns whether it was poisoned and the value the instruction held before.
pub(crate) fn patch(
    insns: &mut [RawInsn],
    at: usize,
    res: &Resolution,
) -> Result<(bool, u64), String> {
    use bpfmaps_abi::insn::class;
    let insn = *insns
        .get(at)
        .ok_or_else(|| format!("instruction {at} out of range"))?;
    let is_lddw = insn.code == crate::insn::opcode::LDDW;
    let poison = |insns: &mut [RawInsn]| {
        if is_lddw {
            if let Some(next) = insns.get_mut(at + 1) {
                *next = poisoned();
            }
        }
        insns[at] = poisoned();
    };
    if res.poison {
        poison(insns);
        return Ok((true, res.orig_val));
    }
    let old;
    match insn.code & 0x07 {
        class::ALU | class::ALU64 => {
            if insn.code & 0x08 != 0 {
                return Err(format!(
                    "instruction {at}: ALU with a register operand cannot be relocated"
                ));
            }
            if res.validate && i64::from(insn.imm) as u64 != res.orig_val {
                return Err(format!(
                    "unexpected instruction {at} (ALU/ALU64) value: got {}, expected {} -> {}",
                    insn.imm, res.orig_val, res.new_val
                ));
            }
            old = i64::from(insn.imm) as u64;
            insns[at].imm = res.new_val as i32;
        }
        class::LDX | class::ST | class::STX => {
            if res.validate && i64::from(insn.off) as u64 != res.orig_val {
                return Err(format!(
                    "unexpected instruction {at} (LDX/ST/STX) value: got {}, expected {} -> {}",
                    insn.off, res.orig_val, res.new_val
                ));
            }
            if res.new_val > i16::MAX as u64 {
                return Err(format!(
                    "instruction {at} (LDX/ST/STX) offset too big: {} (ERANGE)",
                    res.new_val
                ));
            }
            if res.fail_memsz_adjust {
                // libbpf poisons an access whose size would change unsafely.
                poison(insns);
                return Ok((true, res.orig_val));
            }
            old = i64::from(insn.off) as u64;
            insns[at].off = res.new_val as i16;
            if res.new_sz != res.orig_sz {
                let bytes = match insn.code & 0x18 {
                    0x18 => 8,
                    0x00 => 4,
                    0x08 => 2,
                    _ => 1,
                };
                if bytes != res.orig_sz {
                    return Err(format!(
                        "instruction {at} (LDX/ST/STX) unexpected memory size: got {bytes}, expected {}",
                        res.orig_sz
                    ));
                }
                let size_bits = match res.new_sz {
                    8 => 0x18,
                    4 => 0x00,
                    2 => 0x08,
                    1 => 0x10,
                    other => {
                        return Err(format!(
                            "instruction {at} (LDX/ST/STX) invalid new memory size {other}"
                        ))
                    }
                };
                insns[at].code = (insn.code & !0x18) | size_bits;
            }
        }
        class::LD => {
            let next = insns.get(at + 1).copied();
            let ok = is_lddw
                && insn.src == 0
                && insn.off == 0
                && next.is_some_and(|n| n.code == 0 && n.dst == 0 && n.src == 0 && n.off == 0);
            let Some(next) = next.filter(|_| ok) else {
                return Err(format!("instruction {at} (LDIMM64) has an unexpected form"));
            };
            let imm = u64::from(insn.imm as u32) | (u64::from(next.imm as u32) << 32);
            if res.validate && imm != res.orig_val {
                return Err(format!(
                    "unexpected instruction {at} (LDIMM64) value: got {imm}, expected {} -> {}",
                    res.orig_val, res.new_val
                ));
            }
            old = imm;
            insns[at].imm = res.new_val as u32 as i32;
            insns[at + 1].imm = (res.new_val >> 32) as u32 as i32;
        }
        _ => {
            return Err(format!(
                "instruction {at} (code {:#04x}) cannot carry a CO-RE relocation",
                insn.code
            ))
        }
    }
    Ok((false, old))
}

/// The instruction libbpf writes in place of one whose relocation cannot be satisfied.
pub fn poisoned() -> RawInsn {
    RawInsn::new(crate::insn::opcode::CALL, 0, 0, 0, POISON_HELPER_ID)
}
