//! A flat, bounds-checked view of a BTF blob for CO-RE: one owned byte buffer and an index of
//! type-record offsets, so parsing the kernel's multi-megabyte BTF costs one pass and no
//! per-type allocation. Split BTF (a kernel module's, on top of vmlinux) continues the base's
//! type ids and string offsets, as the kernel lays it out.

use std::sync::Arc;

use crate::ObjError;

/// `BTF_MAGIC` as read from a little-endian blob.
const BTF_MAGIC: u16 = 0xeb9f;
/// Size of `struct btf_header`.
const HEADER_SIZE: usize = 24;
/// Size of the common part of `struct btf_type`.
const TYPE_SIZE: usize = 12;
/// How many modifiers/typedefs are followed before a chain is called a cycle.
pub(crate) const MAX_CHAIN: usize = 32;

/// BTF kind numbers (`BTF_KIND_*`).
pub(crate) mod kind {
    pub const UNKN: u8 = 0;
    pub const INT: u8 = 1;
    pub const PTR: u8 = 2;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const FWD: u8 = 7;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const FUNC: u8 = 12;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const FLOAT: u8 = 16;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}

/// `BTF_INT_SIGNED` in an INT's encoding bits.
pub(crate) const BTF_INT_SIGNED: u32 = 1;

fn rd(data: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

fn to_usize(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Bytes after the common part of a type of kind `k` with `vlen` entries.
fn trailer_len(k: u8, vlen: usize) -> Option<usize> {
    Some(match k {
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::ARRAY => 12,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => vlen * 12,
        kind::ENUM | kind::FUNC_PROTO => vlen * 8,
        kind::PTR
        | kind::FWD
        | kind::TYPEDEF
        | kind::VOLATILE
        | kind::CONST
        | kind::RESTRICT
        | kind::FUNC
        | kind::FLOAT
        | kind::TYPE_TAG => 0,
        _ => return None,
    })
}

/// A parsed BTF blob (a whole `.BTF`, vmlinux, or a module's split BTF on top of a base).
#[derive(Debug)]
pub(crate) struct Types {
    data: Vec<u8>,
    /// Start of the type section in `data`.
    type_start: usize,
    /// Start and length of the string section in `data`.
    str_start: usize,
    str_len: usize,
    /// Offset of each type record (relative to `type_start`), index = id - `first_id`.
    offsets: Vec<u32>,
    /// The id of this blob's first type: 1 for a base blob, the base's type count for split BTF.
    first_id: u32,
    /// The string offset where this blob's strings start (the base's string length when split).
    first_str: u32,
    base: Option<Arc<Types>>,
}

/// One type record, borrowed from its blob.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ty<'a> {
    /// `BTF_KIND_*`.
    pub kind: u8,
    /// The `kind_flag` bit.
    pub kflag: bool,
    /// Number of members, enumerators or parameters.
    pub vlen: usize,
    /// Offset of the name in the (combined) string section.
    pub name_off: u32,
    /// `size` or `type`, depending on the kind.
    pub size_or_type: u32,
    trailer: &'a [u8],
}

/// A struct or union member.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Member {
    pub name_off: u32,
    pub type_id: u32,
    /// Bit offset from the start of the composite.
    pub bit_offset: u32,
    /// Bitfield size in bits, 0 when the member is not a bitfield.
    pub bitfield_size: u32,
}

impl<'a> Ty<'a> {
    fn word(&self, at: usize) -> u32 {
        rd(self.trailer, at).unwrap_or(0)
    }

    /// A STRUCT/UNION's member `i`.
    pub fn member(&self, i: usize) -> Option<Member> {
        if !self.is_composite() || i >= self.vlen {
            return None;
        }
        let base = i * 12;
        let raw_off = self.word(base + 8);
        let (bit_offset, bitfield_size) = if self.kflag {
            (raw_off & 0x00ff_ffff, raw_off >> 24)
        } else {
            (raw_off, 0)
        };
        Some(Member {
            name_off: self.word(base),
            type_id: self.word(base + 4),
            bit_offset,
            bitfield_size,
        })
    }

    /// The first trailer word (a VAR's linkage, an INT's encoding word).
    pub fn first_word(&self) -> u32 {
        self.word(0)
    }

    /// The three words of 12-byte trailer entry `i` (a DATASEC's type, offset, size).
    pub fn member_raw(&self, i: usize) -> (u32, u32, u32) {
        (
            self.word(i * 12),
            self.word(i * 12 + 4),
            self.word(i * 12 + 8),
        )
    }

    /// An ARRAY's (element type, index type, element count).
    pub fn array(&self) -> Option<(u32, u32, u32)> {
        (self.kind == kind::ARRAY).then(|| (self.word(0), self.word(4), self.word(8)))
    }

    /// The name offset of enumerator `i` of an ENUM or ENUM64.
    pub fn enumerator_name(&self, i: usize) -> Option<u32> {
        if i >= self.vlen {
            return None;
        }
        match self.kind {
            kind::ENUM => Some(self.word(i * 8)),
            kind::ENUM64 => Some(self.word(i * 12)),
            _ => None,
        }
    }

    /// The value of enumerator `i` as libbpf's CO-RE reads it: an ENUM's 32-bit value
    /// sign-extended (libbpf reads `struct btf_enum`'s `__s32 val` into a `__u64`, whatever the
    /// enum's signedness); an ENUM64's two halves.
    pub fn enumerator_value(&self, i: usize) -> Option<u64> {
        if i >= self.vlen {
            return None;
        }
        match self.kind {
            kind::ENUM => {
                let v = self.word(i * 8 + 4);
                Some(i64::from(v as i32) as u64)
            }
            kind::ENUM64 => {
                let lo = u64::from(self.word(i * 12 + 4));
                let hi = u64::from(self.word(i * 12 + 8));
                Some(hi << 32 | lo)
            }
            _ => None,
        }
    }

    /// A FUNC_PROTO parameter's type.
    pub fn param_type(&self, i: usize) -> Option<u32> {
        (self.kind == kind::FUNC_PROTO && i < self.vlen).then(|| self.word(i * 8 + 4))
    }

    /// An INT's encoding bits (`BTF_INT_SIGNED`, `CHAR`, `BOOL`).
    pub fn int_encoding(&self) -> u32 {
        (self.word(0) >> 24) & 0x0f
    }

    /// An INT's bit offset (deprecated bitfield-like integers have a non-zero one).
    pub fn int_offset(&self) -> u32 {
        (self.word(0) >> 16) & 0xff
    }

    /// STRUCT or UNION.
    pub fn is_composite(&self) -> bool {
        matches!(self.kind, kind::STRUCT | kind::UNION)
    }

    /// ENUM or ENUM64.
    pub fn is_any_enum(&self) -> bool {
        matches!(self.kind, kind::ENUM | kind::ENUM64)
    }

    /// Whether a modifier or typedef (skipped when resolving).
    pub fn is_mod_or_typedef(&self) -> bool {
        matches!(
            self.kind,
            kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG
        )
    }
}

/// The kinds CO-RE treats as the same: equal, or both some enum.
pub(crate) fn kinds_core_compatible(a: &Ty<'_>, b: &Ty<'_>) -> bool {
    a.kind == b.kind || (a.is_any_enum() && b.is_any_enum())
}

/// The name kind libbpf prints for a type (`struct`, `int`, ...).
pub(crate) fn kind_name(k: u8) -> &'static str {
    match k {
        kind::UNKN => "void",
        kind::INT => "int",
        kind::PTR => "ptr",
        kind::ARRAY => "array",
        kind::STRUCT => "struct",
        kind::UNION => "union",
        kind::ENUM => "enum",
        kind::FWD => "fwd",
        kind::TYPEDEF => "typedef",
        kind::VOLATILE => "volatile",
        kind::CONST => "const",
        kind::RESTRICT => "restrict",
        kind::FUNC => "func",
        kind::FUNC_PROTO => "func_proto",
        kind::VAR => "var",
        kind::DATASEC => "datasec",
        kind::FLOAT => "float",
        kind::DECL_TAG => "decl_tag",
        kind::TYPE_TAG => "type_tag",
        kind::ENUM64 => "enum64",
        _ => "unknown",
    }
}

/// The length of `name` without its `___flavor` suffix: everything from the last `X___Y`
/// separator (X and Y not underscores) on is ignored, as libbpf does.
pub(crate) fn essential_name(name: &str) -> &str {
    let b = name.as_bytes();
    if b.len() >= 5 {
        for i in (0..=b.len() - 5).rev() {
            if b[i] != b'_'
                && b[i + 1] == b'_'
                && b[i + 2] == b'_'
                && b[i + 3] == b'_'
                && b[i + 4] != b'_'
            {
                return &name[..i + 1];
            }
        }
    }
    name
}

impl Types {
    /// Parses a complete BTF blob (`source` names it in errors).
    pub(crate) fn parse(data: Vec<u8>, source: &str) -> Result<Types, ObjError> {
        Types::parse_with_base(data, source, None)
    }

    /// Parses `data` as split BTF on top of `base` when given.
    pub(crate) fn parse_with_base(
        data: Vec<u8>,
        source: &str,
        base: Option<Arc<Types>>,
    ) -> Result<Types, ObjError> {
        let bad = |offset: usize, reason: String| ObjError::BadTargetBtf {
            what: source.to_owned(),
            offset,
            reason,
        };
        if data.len() < HEADER_SIZE {
            return Err(bad(
                0,
                format!("{} bytes is shorter than the BTF header", data.len()),
            ));
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        if magic != BTF_MAGIC {
            return Err(bad(0, format!("bad magic {magic:#06x} (expected 0xeb9f)")));
        }
        let field = |at: usize| to_usize(rd(&data, at).unwrap_or(0));
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(4), field(8), field(12), field(16), field(20));
        if hdr_len < HEADER_SIZE || hdr_len > data.len() {
            return Err(bad(4, format!("header length {hdr_len} out of range")));
        }
        let span = |off: usize, len: usize| {
            let s = hdr_len.checked_add(off)?;
            let e = s.checked_add(len)?;
            (e <= data.len()).then_some(s)
        };
        let type_start = span(type_off, type_len)
            .ok_or_else(|| bad(8, "type section past the end".to_owned()))?;
        let str_start = span(str_off, str_len)
            .ok_or_else(|| bad(16, "string section past the end".to_owned()))?;
        let strings = &data[str_start..str_start + str_len];
        if base.is_none() && strings.first() != Some(&0) {
            return Err(bad(
                str_start,
                "string section must start with NUL".to_owned(),
            ));
        }
        if !strings.is_empty() && strings.last() != Some(&0) {
            return Err(bad(
                str_start,
                "string section must end with NUL".to_owned(),
            ));
        }
        let (first_id, first_str) = match &base {
            Some(b) => (b.type_count(), b.string_end()),
            None => (1, 0),
        };
        let types = &data[type_start..type_start + type_len];
        let mut offsets = Vec::with_capacity(type_len / 24);
        let mut at = 0usize;
        while at < types.len() {
            let info = rd(types, at + 4)
                .ok_or_else(|| bad(type_start + at, "truncated type record".to_owned()))?;
            let k = ((info >> 24) & 0x1f) as u8;
            let vlen = to_usize(info & 0xffff);
            let tl = trailer_len(k, vlen)
                .ok_or_else(|| bad(type_start + at, format!("unknown type kind {k}")))?;
            let end = at + TYPE_SIZE + tl;
            if end > types.len() {
                return Err(bad(
                    type_start + at,
                    "type record runs past the type section".to_owned(),
                ));
            }
            offsets
                .push(u32::try_from(at).map_err(|_| bad(type_start + at, "too large".to_owned()))?);
            at = end;
        }
        Ok(Types {
            data,
            type_start,
            str_start,
            str_len,
            offsets,
            first_id,
            first_str,
            base,
        })
    }

    /// One past the highest type id (`btf__type_cnt`).
    pub(crate) fn type_count(&self) -> u32 {
        self.first_id
            .saturating_add(u32::try_from(self.offsets.len()).unwrap_or(u32::MAX))
    }

    fn string_end(&self) -> u32 {
        self.first_str
            .saturating_add(u32::try_from(self.str_len).unwrap_or(u32::MAX))
    }

    /// The type with id `id` (`void` for 0), `None` when out of range.
    pub(crate) fn ty(&self, id: u32) -> Option<Ty<'_>> {
        if id == 0 {
            return Some(Ty {
                kind: kind::UNKN,
                kflag: false,
                vlen: 0,
                name_off: 0,
                size_or_type: 0,
                trailer: &[],
            });
        }
        if id < self.first_id {
            return self.base.as_ref()?.ty(id);
        }
        let at = self.type_start + to_usize(*self.offsets.get(to_usize(id - self.first_id))?);
        let info = rd(&self.data, at + 4)?;
        let k = ((info >> 24) & 0x1f) as u8;
        let vlen = to_usize(info & 0xffff);
        let tl = trailer_len(k, vlen)?;
        Some(Ty {
            kind: k,
            kflag: info >> 31 == 1,
            vlen,
            name_off: rd(&self.data, at)?,
            size_or_type: rd(&self.data, at + 8)?,
            trailer: self.data.get(at + TYPE_SIZE..at + TYPE_SIZE + tl)?,
        })
    }

    /// The string at `offset` ("" when out of range or not UTF-8).
    pub(crate) fn name(&self, offset: u32) -> &str {
        if offset < self.first_str {
            return self.base.as_ref().map_or("", |b| b.name(offset));
        }
        let rel = to_usize(offset - self.first_str);
        if rel >= self.str_len {
            return "";
        }
        let rest = &self.data[self.str_start + rel..self.str_start + self.str_len];
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// The name of type `id`.
    pub(crate) fn type_name(&self, id: u32) -> &str {
        self.ty(id).map_or("", |t| self.name(t.name_off))
    }

    /// Follows modifiers and typedefs from `id`; returns the id reached and its type.
    pub(crate) fn skip_mods(&self, mut id: u32) -> Option<(u32, Ty<'_>)> {
        for _ in 0..MAX_CHAIN {
            let t = self.ty(id)?;
            if !t.is_mod_or_typedef() {
                return Some((id, t));
            }
            id = t.size_or_type;
        }
        None
    }

    /// The size of type `id` in bytes, as `btf__resolve_size` computes it (`None` for types
    /// without a size: void, functions, forward declarations).
    pub(crate) fn resolve_size(&self, id: u32) -> Option<u64> {
        let mut id = id;
        let mut nelems: u64 = 1;
        for _ in 0..MAX_CHAIN {
            let t = self.ty(id)?;
            match t.kind {
                kind::INT
                | kind::STRUCT
                | kind::UNION
                | kind::ENUM
                | kind::ENUM64
                | kind::DATASEC
                | kind::FLOAT => return nelems.checked_mul(u64::from(t.size_or_type)),
                kind::PTR => return nelems.checked_mul(8),
                kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::TYPE_TAG
                | kind::VAR
                | kind::DECL_TAG => id = t.size_or_type,
                kind::ARRAY => {
                    let (elem, _, n) = t.array()?;
                    nelems = nelems.checked_mul(u64::from(n))?;
                    id = elem;
                }
                _ => return None,
            }
        }
        None
    }

    /// Every type id of this blob (not of its base), with its name offset and kind.
    pub(crate) fn own_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.first_id..self.type_count()
    }
}
