//! A small, bounds-checked reader of the `.BTF` and `.BTF.ext` sections: just what the loader
//! needs beyond aya-obj (whose BTF accessors are crate-private). It validates the layout before
//! aya-obj sees it, names types for formatting, lists `DATASEC` variables (global variables and
//! their linkage) and collects CO-RE relocation records.
//!
//! It does not resolve CO-RE relocations, dedup, or write BTF. Every offset read here is checked;
//! a malformed section gives [`ObjError::BadBtf`] naming the byte offset.

use crate::ObjError;

/// `BTF_MAGIC` as read from a little-endian file.
const BTF_MAGIC: u16 = 0xeb9f;
/// Size of `struct btf_header`.
const BTF_HEADER_SIZE: usize = 24;
/// Size of `struct btf_type` without its kind-specific trailer.
const BTF_TYPE_SIZE: usize = 12;
/// Size of `struct btf_ext_header` up to and including the line info fields (the CO-RE fields
/// after them are optional, as in libbpf).
const BTF_EXT_HEADER_MIN: usize = 24;
/// Smallest record sizes of the three `.BTF.ext` subsections.
const FUNC_INFO_MIN_REC: u32 = 8;
const LINE_INFO_MIN_REC: u32 = 16;
const CORE_RELO_MIN_REC: u32 = 16;
/// The most type indirections followed when resolving a type (cycles stop here).
const MAX_RESOLVE_DEPTH: usize = 32;

/// BTF kinds (`BTF_KIND_*`), numbered as in `include/uapi/linux/btf.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BtfKind {
    /// `BTF_KIND_UNKN`: type id 0, `void`.
    Void = 0,
    /// `BTF_KIND_INT`.
    Int = 1,
    /// `BTF_KIND_PTR`.
    Ptr = 2,
    /// `BTF_KIND_ARRAY`.
    Array = 3,
    /// `BTF_KIND_STRUCT`.
    Struct = 4,
    /// `BTF_KIND_UNION`.
    Union = 5,
    /// `BTF_KIND_ENUM`.
    Enum = 6,
    /// `BTF_KIND_FWD`.
    Fwd = 7,
    /// `BTF_KIND_TYPEDEF`.
    Typedef = 8,
    /// `BTF_KIND_VOLATILE`.
    Volatile = 9,
    /// `BTF_KIND_CONST`.
    Const = 10,
    /// `BTF_KIND_RESTRICT`.
    Restrict = 11,
    /// `BTF_KIND_FUNC`.
    Func = 12,
    /// `BTF_KIND_FUNC_PROTO`.
    FuncProto = 13,
    /// `BTF_KIND_VAR`.
    Var = 14,
    /// `BTF_KIND_DATASEC`.
    Datasec = 15,
    /// `BTF_KIND_FLOAT`.
    Float = 16,
    /// `BTF_KIND_DECL_TAG`.
    DeclTag = 17,
    /// `BTF_KIND_TYPE_TAG`.
    TypeTag = 18,
    /// `BTF_KIND_ENUM64`.
    Enum64 = 19,
}

impl BtfKind {
    fn from_u32(kind: u32) -> Option<BtfKind> {
        use BtfKind::*;
        Some(match kind {
            1 => Int,
            2 => Ptr,
            3 => Array,
            4 => Struct,
            5 => Union,
            6 => Enum,
            7 => Fwd,
            8 => Typedef,
            9 => Volatile,
            10 => Const,
            11 => Restrict,
            12 => Func,
            13 => FuncProto,
            14 => Var,
            15 => Datasec,
            16 => Float,
            17 => DeclTag,
            18 => TypeTag,
            19 => Enum64,
            _ => return None,
        })
    }

    /// Bytes that follow the 12-byte common part of a type of this kind with `vlen` entries.
    fn trailer_size(self, vlen: usize) -> usize {
        use BtfKind::*;
        match self {
            Int | Var | DeclTag => 4,
            Array => 12,
            Struct | Union | Datasec | Enum64 => vlen.saturating_mul(12),
            Enum | FuncProto => vlen.saturating_mul(8),
            Void | Ptr | Fwd | Typedef | Volatile | Const | Restrict | Func | Float | TypeTag => 0,
        }
    }

    /// True for the kinds whose `size_or_type` field is a referenced type id.
    fn refers_to_type(self) -> bool {
        use BtfKind::*;
        matches!(
            self,
            Ptr | Typedef | Volatile | Const | Restrict | Func | Var | DeclTag | TypeTag
        )
    }
}

/// A type, what a caller needs to name and size a key or value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BtfTypeInfo {
    /// The type id in the object's BTF.
    pub id: u32,
    /// The kind of the type after resolving typedefs and modifiers.
    pub kind: BtfKind,
    /// The C name as written (`struct value_t`, `__u32`, `u64[4]`); `void` for id 0.
    pub name: String,
    /// The size in bytes, when the type has one.
    pub size: Option<u32>,
}

/// What a global variable holds, as far as setting it from text needs to know (its size is
/// [`crate::GlobalVar::size`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// `bool` / `_Bool`.
    Bool,
    /// An integer, enum or `char` of the variable's size.
    Int {
        /// True for a signed integer.
        signed: bool,
    },
    /// An array of 1-byte integers: a string, NUL-padded.
    CharArray,
    /// A struct, union, pointer, float or other array: set as raw bytes only.
    Other,
}

/// One variable of a `DATASEC`: a global variable of a data section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DatasecVar {
    /// The variable's name.
    pub name: String,
    /// The `VAR` type id.
    pub var_type_id: u32,
    /// The variable's type (the `VAR`'s referenced type).
    pub type_id: u32,
    /// `BTF_VAR_STATIC` (0), `BTF_VAR_GLOBAL_ALLOCATED` (1) or `BTF_VAR_GLOBAL_EXTERN` (2).
    pub linkage: u32,
    /// Offset inside the section as BTF records it (clang leaves 0; fixed up from symbols).
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// A parsed type record.
#[derive(Clone, Debug)]
struct TypeRecord {
    kind: BtfKind,
    name_off: u32,
    vlen: usize,
    size_or_type: u32,
    /// The kind-specific trailer bytes.
    trailer: Vec<u8>,
}

/// The object's `.BTF`, validated.
#[derive(Clone, Debug)]
pub(crate) struct BtfInfo {
    strings: Vec<u8>,
    /// Index 0 is `void`.
    types: Vec<TypeRecord>,
}

fn bad(section: &'static str, offset: usize, reason: impl Into<String>) -> ObjError {
    ObjError::BadBtf {
        section,
        offset,
        reason: reason.into(),
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let bytes: [u8; 4] = data.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn usize_of(v: u32) -> usize {
    // u32 always fits in usize on the 32- and 64-bit hosts Rust supports for this crate.
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl BtfInfo {
    /// Validates and reads a `.BTF` section.
    pub(crate) fn parse(data: &[u8]) -> Result<BtfInfo, ObjError> {
        const S: &str = ".BTF";
        if data.len() < BTF_HEADER_SIZE {
            return Err(bad(
                S,
                0,
                format!("{} bytes is shorter than the header", data.len()),
            ));
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        if magic != BTF_MAGIC {
            return Err(bad(
                S,
                0,
                format!("bad magic {magic:#06x} (expected 0xeb9f little-endian)"),
            ));
        }
        let field = |at| read_u32(data, at).ok_or_else(|| bad(S, at, "truncated header"));
        let hdr_len = usize_of(field(4)?);
        let type_off = usize_of(field(8)?);
        let type_len = usize_of(field(12)?);
        let str_off = usize_of(field(16)?);
        let str_len = usize_of(field(20)?);
        if hdr_len < BTF_HEADER_SIZE || hdr_len > data.len() {
            return Err(bad(S, 4, format!("header length {hdr_len} out of range")));
        }
        let range = |off: usize, len: usize, what: &str| {
            let start = hdr_len.checked_add(off);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(s), Some(e)) if e <= data.len() => Ok(s..e),
                _ => Err(bad(
                    S,
                    hdr_len,
                    format!("{what} ({off}+{len}) past the section end"),
                )),
            }
        };
        let types_range = range(type_off, type_len, "type section")?;
        let strings_range = range(str_off, str_len, "string section")?;
        let strings = data[strings_range.clone()].to_vec();
        if strings.first() != Some(&0) || strings.last() != Some(&0) {
            return Err(bad(
                S,
                strings_range.start,
                "string section must start and end with NUL",
            ));
        }

        let mut types = vec![TypeRecord {
            kind: BtfKind::Void,
            name_off: 0,
            vlen: 0,
            size_or_type: 0,
            trailer: Vec::new(),
        }];
        let type_data = &data[types_range.clone()];
        let mut at = 0usize;
        while at < type_data.len() {
            let abs = types_range.start.saturating_add(at);
            let head = |i: usize| {
                read_u32(type_data, at.saturating_add(i * 4))
                    .ok_or_else(|| bad(S, abs, "truncated type record"))
            };
            let name_off = head(0)?;
            let info = head(1)?;
            let size_or_type = head(2)?;
            let kind_raw = (info >> 24) & 0x1f;
            let kind = BtfKind::from_u32(kind_raw)
                .ok_or_else(|| bad(S, abs, format!("unknown type kind {kind_raw}")))?;
            let vlen = usize_of(info & 0xffff);
            let trailer_start = at.saturating_add(BTF_TYPE_SIZE);
            let trailer_end = trailer_start.saturating_add(kind.trailer_size(vlen));
            let trailer = type_data
                .get(trailer_start..trailer_end)
                .ok_or_else(|| bad(S, abs, "type record runs past the type section"))?
                .to_vec();
            if usize_of(name_off) >= strings.len() {
                return Err(bad(
                    S,
                    abs,
                    format!("name offset {name_off} past the strings"),
                ));
            }
            let record = TypeRecord {
                kind,
                name_off,
                vlen,
                size_or_type,
                trailer,
            };
            record
                .check_member_names(strings.len())
                .map_err(|reason| bad(S, abs, reason))?;
            types.push(record);
            at = trailer_end;
        }
        let count = types.len();
        let info = BtfInfo { strings, types };
        for (id, t) in info.types.iter().enumerate().skip(1) {
            if t.kind.refers_to_type() && usize_of(t.size_or_type) >= count {
                return Err(bad(
                    S,
                    types_range.start,
                    format!("type [{id}] refers to missing type {}", t.size_or_type),
                ));
            }
        }
        Ok(info)
    }

    /// The NUL-terminated string at `offset` (empty when out of range or not UTF-8).
    fn string(&self, offset: u32) -> &str {
        let Some(rest) = self.strings.get(usize_of(offset)..) else {
            return "";
        };
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn record(&self, id: u32) -> Option<&TypeRecord> {
        self.types.get(usize_of(id))
    }

    /// Follows typedefs and modifiers from `id` to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..MAX_RESOLVE_DEPTH {
            let t = self.record(id)?;
            match t.kind {
                BtfKind::Typedef
                | BtfKind::Volatile
                | BtfKind::Const
                | BtfKind::Restrict
                | BtfKind::TypeTag => id = t.size_or_type,
                _ => return Some(id),
            }
        }
        None
    }

    /// The size in bytes of type `id`, if it has one.
    pub(crate) fn type_size(&self, id: u32) -> Option<u32> {
        self.type_size_depth(id, 0)
    }

    fn type_size_depth(&self, id: u32, depth: usize) -> Option<u32> {
        if depth > MAX_RESOLVE_DEPTH {
            return None;
        }
        let id = self.resolve(id)?;
        let t = self.record(id)?;
        match t.kind {
            BtfKind::Int
            | BtfKind::Struct
            | BtfKind::Union
            | BtfKind::Enum
            | BtfKind::Enum64
            | BtfKind::Float
            | BtfKind::Datasec => Some(t.size_or_type),
            BtfKind::Ptr => Some(8),
            BtfKind::Array => {
                let elem = read_u32(&t.trailer, 0)?;
                let n = read_u32(&t.trailer, 8)?;
                self.type_size_depth(elem, depth + 1)?.checked_mul(n)
            }
            BtfKind::Var => self.type_size_depth(t.size_or_type, depth + 1),
            _ => None,
        }
    }

    /// The C spelling of type `id` (`struct value_t`, `__u32`, `char[16]`, `void *`).
    pub(crate) fn type_name(&self, id: u32) -> String {
        self.type_name_depth(id, 0)
    }

    fn type_name_depth(&self, id: u32, depth: usize) -> String {
        if depth > MAX_RESOLVE_DEPTH {
            return "...".to_owned();
        }
        let Some(t) = self.record(id) else {
            return format!("<bad type {id}>");
        };
        let name = self.string(t.name_off);
        let anon = |what: &str| {
            if name.is_empty() {
                format!("{what} <anon>")
            } else {
                format!("{what} {name}")
            }
        };
        match t.kind {
            BtfKind::Void => "void".to_owned(),
            BtfKind::Struct => anon("struct"),
            BtfKind::Union => anon("union"),
            BtfKind::Enum | BtfKind::Enum64 => anon("enum"),
            BtfKind::Fwd => format!(
                "{} {name}",
                if t.is_union_fwd() { "union" } else { "struct" }
            ),
            BtfKind::Ptr => format!("{} *", self.type_name_depth(t.size_or_type, depth + 1)),
            BtfKind::Const => format!("const {}", self.type_name_depth(t.size_or_type, depth + 1)),
            BtfKind::Volatile => format!(
                "volatile {}",
                self.type_name_depth(t.size_or_type, depth + 1)
            ),
            BtfKind::Restrict => self.type_name_depth(t.size_or_type, depth + 1),
            BtfKind::TypeTag => self.type_name_depth(t.size_or_type, depth + 1),
            BtfKind::Array => {
                let elem = read_u32(&t.trailer, 0).unwrap_or(0);
                let n = read_u32(&t.trailer, 8).unwrap_or(0);
                format!("{}[{n}]", self.type_name_depth(elem, depth + 1))
            }
            BtfKind::FuncProto => "fn".to_owned(),
            _ => name.to_owned(),
        }
    }

    /// Name, kind and size of type `id`.
    pub(crate) fn type_info(&self, id: u32) -> Option<BtfTypeInfo> {
        let resolved = self.resolve(id)?;
        let kind = self.record(resolved)?.kind;
        Some(BtfTypeInfo {
            id,
            kind,
            name: self.type_name(id),
            size: self.type_size(id),
        })
    }

    /// What a value of type `id` is, for parsing a global's value from text: `bool`, an integer
    /// (`char` included) with its signedness, a `char` array (a string), or anything else.
    pub(crate) fn value_kind(&self, id: u32) -> ValueKind {
        let Some(t) = self.resolve(id).and_then(|r| self.record(r)) else {
            return ValueKind::Other;
        };
        match t.kind {
            BtfKind::Int => {
                let encoding = read_u32(&t.trailer, 0).unwrap_or(0);
                // `BTF_INT_ENCODING(VAL)` is bits 24..28: SIGNED 1, CHAR 2, BOOL 4.
                let flags = (encoding >> 24) & 0x0f;
                if flags & 4 != 0 {
                    ValueKind::Bool
                } else {
                    ValueKind::Int {
                        signed: flags & 1 != 0,
                    }
                }
            }
            BtfKind::Enum | BtfKind::Enum64 => ValueKind::Int {
                // `kind_flag` marks a signed enum.
                signed: false,
            },
            BtfKind::Array => {
                let elem = read_u32(&t.trailer, 0).unwrap_or(0);
                let is_char = self
                    .resolve(elem)
                    .and_then(|e| self.record(e))
                    .is_some_and(|e| e.kind == BtfKind::Int && e.size_or_type == 1);
                if is_char {
                    ValueKind::CharArray
                } else {
                    ValueKind::Other
                }
            }
            _ => ValueKind::Other,
        }
    }

    /// The id of the `DATASEC` named `section`, if any.
    pub(crate) fn datasec_id(&self, section: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == BtfKind::Datasec && self.string(t.name_off) == section)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// The variables of the `DATASEC` with id `datasec_id`, in BTF order. Entries that are not
    /// `VAR`s (functions of `.ksyms`) are skipped.
    pub(crate) fn datasec_vars(&self, datasec_id: u32) -> Vec<DatasecVar> {
        let Some(ds) = self.record(datasec_id) else {
            return Vec::new();
        };
        let mut vars = Vec::new();
        for i in 0..ds.vlen {
            let base = i * 12;
            let (Some(var_id), Some(offset), Some(size)) = (
                read_u32(&ds.trailer, base),
                read_u32(&ds.trailer, base + 4),
                read_u32(&ds.trailer, base + 8),
            ) else {
                continue;
            };
            let Some(var) = self.record(var_id) else {
                continue;
            };
            if var.kind != BtfKind::Var {
                continue;
            }
            vars.push(DatasecVar {
                name: self.string(var.name_off).to_owned(),
                var_type_id: var_id,
                type_id: var.size_or_type,
                linkage: read_u32(&var.trailer, 0).unwrap_or(0),
                offset,
                size,
            });
        }
        vars
    }

    /// True when `offset` is a valid string offset (used to check `.BTF.ext` section names).
    fn has_string(&self, offset: u32) -> bool {
        usize_of(offset) < self.strings.len()
    }

    /// The name of `FUNC` type `id` ("" when it is not one).
    pub(crate) fn func_name(&self, id: u32) -> &str {
        match self.record(id) {
            Some(t) if t.kind == BtfKind::Func => self.string(t.name_off),
            _ => "",
        }
    }

    /// The string at `offset`, for `.BTF.ext` section names and access strings.
    pub(crate) fn string_at(&self, offset: u32) -> &str {
        self.string(offset)
    }
}

impl TypeRecord {
    fn is_union_fwd(&self) -> bool {
        // The kind_flag bit is not kept; a forward declaration is shown as a struct.
        false
    }

    /// Checks that every name offset in the trailer (members, enumerators, parameters) lies in
    /// the string section.
    fn check_member_names(&self, strings_len: usize) -> Result<(), String> {
        let stride = match self.kind {
            BtfKind::Struct | BtfKind::Union | BtfKind::Enum64 => 12,
            BtfKind::Enum | BtfKind::FuncProto => 8,
            _ => return Ok(()),
        };
        for i in 0..self.vlen {
            let off = read_u32(&self.trailer, i * stride).unwrap_or(u32::MAX);
            if usize_of(off) >= strings_len {
                return Err(format!("member {i} name offset {off} past the strings"));
            }
        }
        Ok(())
    }
}

/// One CO-RE relocation record of `.BTF.ext` (`struct bpf_core_relo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreRelocation {
    /// The program section it belongs to.
    pub section: String,
    /// Byte offset of the instruction inside that section.
    pub insn_offset: u32,
    /// The local BTF type id the access is expressed against.
    pub type_id: u32,
    /// The access string (`0:1` = second member of the first element).
    pub access: String,
    /// `enum bpf_core_relo_kind` (0 = field byte offset, 8 = type exists, ...).
    pub kind: u32,
}

/// Validates a `.BTF.ext` section against `btf` and returns its CO-RE relocation records.
pub(crate) fn parse_btf_ext(data: &[u8], btf: &BtfInfo) -> Result<Vec<CoreRelocation>, ObjError> {
    const S: &str = ".BTF.ext";
    if data.len() < BTF_EXT_HEADER_MIN {
        return Err(bad(
            S,
            0,
            format!("{} bytes is shorter than the header", data.len()),
        ));
    }
    let magic = u16::from_le_bytes([data[0], data[1]]);
    if magic != BTF_MAGIC {
        return Err(bad(S, 0, format!("bad magic {magic:#06x}")));
    }
    let hdr_len = usize_of(read_u32(data, 4).ok_or_else(|| bad(S, 4, "truncated header"))?);
    if hdr_len < BTF_EXT_HEADER_MIN || hdr_len > data.len() || !hdr_len.is_multiple_of(4) {
        return Err(bad(S, 4, format!("header length {hdr_len} out of range")));
    }
    // A header field that the header is too short to hold reads as zero, as in libbpf.
    let field = |at: usize| {
        if at + 4 <= hdr_len {
            read_u32(data, at).unwrap_or(0)
        } else {
            0
        }
    };
    let subsections = [
        ("func_info", field(8), field(12), FUNC_INFO_MIN_REC),
        ("line_info", field(16), field(20), LINE_INFO_MIN_REC),
        ("core_relo", field(24), field(28), CORE_RELO_MIN_REC),
    ];
    let mut relocations = Vec::new();
    for (what, off, len, min_rec) in subsections {
        if len == 0 {
            continue;
        }
        let start = hdr_len.checked_add(usize_of(off));
        let end = start.and_then(|s| s.checked_add(usize_of(len)));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(bad(S, hdr_len, format!("{what} range overflows")));
        };
        let Some(sub) = data.get(start..end) else {
            return Err(bad(
                S,
                start,
                format!("{what} ({start}..{end}) past the section end"),
            ));
        };
        let rec_size =
            read_u32(sub, 0).ok_or_else(|| bad(S, start, format!("{what} too short")))?;
        if rec_size < min_rec || !rec_size.is_multiple_of(4) {
            return Err(bad(
                S,
                start,
                format!("{what} record size {rec_size} invalid"),
            ));
        }
        let rec_size = usize_of(rec_size);
        let mut at = 4usize;
        while at < sub.len() {
            let sec_name = read_u32(sub, at);
            let num = read_u32(sub, at + 4);
            let (Some(sec_name), Some(num)) = (sec_name, num) else {
                return Err(bad(
                    S,
                    start + at,
                    format!("truncated {what} section header"),
                ));
            };
            if !btf.has_string(sec_name) {
                return Err(bad(
                    S,
                    start + at,
                    format!("{what} section name offset {sec_name} past the strings"),
                ));
            }
            let records_start = at + 8;
            let records_len = usize_of(num).checked_mul(rec_size);
            let records_end = records_len.and_then(|l| l.checked_add(records_start));
            let Some(records) = records_end.and_then(|e| sub.get(records_start..e)) else {
                return Err(bad(
                    S,
                    start + at,
                    format!("{what}: {num} records run past the subsection"),
                ));
            };
            // aya-obj rebases line info by subtracting the first record's instruction offset, and
            // the kernel wants both lists sorted: offsets must never decrease.
            if what != "core_relo" {
                let offsets: Vec<u32> = records
                    .chunks_exact(rec_size)
                    .map(|r| read_u32(r, 0).unwrap_or(0))
                    .collect();
                if offsets.windows(2).any(|w| w[1] < w[0]) {
                    return Err(bad(S, start + at, format!("{what} offsets are not sorted")));
                }
            }
            if what == "core_relo" {
                let section = btf.string_at(sec_name).to_owned();
                for rec in records.chunks_exact(rec_size) {
                    let access_off = read_u32(rec, 8).unwrap_or(u32::MAX);
                    if !btf.has_string(access_off) {
                        return Err(bad(
                            S,
                            start + at,
                            "CO-RE access string offset past the strings",
                        ));
                    }
                    relocations.push(CoreRelocation {
                        section: section.clone(),
                        insn_offset: read_u32(rec, 0).unwrap_or(0),
                        type_id: read_u32(rec, 4).unwrap_or(0),
                        access: btf.string_at(access_off).to_owned(),
                        kind: read_u32(rec, 12).unwrap_or(0),
                    });
                }
            }
            at = records_start + records.len();
        }
    }
    Ok(relocations)
}
