//! Formatting map keys and values through BTF, the way bpftool's `btf_dumper` shows them in the
//! `formatted` member of `bpftool -j map dump` and in plain `bpftool map dump` output.
//!
//! [`BtfTypes`] is a type table parsed from a raw BTF blob (as the kernel hands it back for a
//! map's `btf_id`, or an object's `.BTF` section); [`BtfTypes::format`] turns the bytes of a key
//! or value into an engine-neutral [`BtfValue`] tree. The tree follows bpftool's rules exactly:
//! which integers are signed, which arrays are strings, which integers print as hex (bitfields,
//! odd widths, 128-bit integers), how enums match, how `DATASEC`s list their variables, and where
//! bpftool gives up (a kind it does not print ends the dump of the enclosing struct, array or
//! section: see [`BtfValue::Unprintable`]).
//!
//! This module does not print anything: turning a tree into bpftool's JSON or plain text is the
//! CLI's business. It never panics on bad input: a malformed blob is a [`BtfValueError`], and so
//! are bytes too short for the type they are formatted as.

use thiserror::Error;

/// `BTF_MAGIC` as read from a little-endian blob.
const BTF_MAGIC: u16 = 0xeb9f;
/// Size of `struct btf_header` (version 1).
const BTF_HEADER_SIZE: usize = 24;
/// Size of `struct btf_type` without its kind-specific trailer.
const BTF_TYPE_SIZE: usize = 12;
/// The most typedefs and modifiers followed when resolving a type (libbpf's limit).
const MAX_RESOLVE_DEPTH: usize = 32;
/// The deepest nesting of structs, arrays and sections formatted (a loop guard).
const MAX_FORMAT_DEPTH: usize = 64;
/// The size of a pointer in the BPF target.
const POINTER_SIZE: u64 = 8;

/// `BTF_INT_SIGNED`.
const INT_SIGNED: u32 = 1;
/// `BTF_INT_CHAR`.
const INT_CHAR: u32 = 2;
/// `BTF_INT_BOOL`.
const INT_BOOL: u32 = 4;

/// What bpftool prints for `void` (type id 0).
pub const VOID_TEXT: &str = "(unknown)";
/// What bpftool prints for a forward declaration.
pub const FWD_TEXT: &str = "(fwd-kind-invalid)";
/// What bpftool (v7.1) prints for a kind it does not format (float, function, tag): its
/// closing parenthesis is really missing.
pub const UNSUPPORTED_TEXT: &str = "(unsupported-kind";

/// Why a BTF blob could not be read or a value not formatted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum BtfValueError {
    /// The blob is not valid BTF.
    #[error("bad BTF at byte {offset}: {reason}")]
    BadBtf {
        /// Byte offset in the blob.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A type id past the end of the type table.
    #[error("BTF type id {0} does not exist")]
    NoSuchType(u32),
    /// The bytes end before the type being formatted does.
    #[error("{needed} bytes at offset {offset} are needed to format type [{type_id}], only {available} given")]
    ShortData {
        /// The type being formatted.
        type_id: u32,
        /// Where in the bytes it starts.
        offset: usize,
        /// How many bytes it needs from there.
        needed: usize,
        /// How many bytes there are in all.
        available: usize,
    },
}

/// A formatted key or value: what bpftool's `btf_dumper` prints, as a tree.
#[derive(Clone, Debug, PartialEq)]
pub enum BtfValue {
    /// An unsigned integer of 8, 16, 32 or 64 bits (decimal).
    Unsigned(u64),
    /// A signed integer of 8, 16, 32 or 64 bits, or an enum value without a name (decimal).
    Signed(i64),
    /// A `BTF_INT_BOOL` integer (`true`/`false`; any non-zero byte is true).
    Bool(bool),
    /// A `BTF_INT_CHAR` integer: bpftool prints a printable byte as a one-character string and
    /// any other byte as a hex number (plain text) or `\u00XX` (JSON).
    Char(u8),
    /// A bitfield, an integer whose width is not 8, 16, 32 or 64 bits, or a 128-bit integer:
    /// bpftool prints these as `0x` hex (a JSON string in JSON mode).
    Bits(u128),
    /// A `char` array holding printable ASCII up to a NUL, without the NUL.
    String(String),
    /// Any other array, element by element.
    Array(Vec<BtfValue>),
    /// A struct or union: members in BTF order, by name (anonymous members have the name "").
    Struct(Vec<(String, BtfValue)>),
    /// An enum value that matches an enumerator: its name.
    Enumerator(String),
    /// A pointer, as the address it holds.
    Pointer(u64),
    /// A `VAR`: `{name: value}`.
    Var {
        /// The variable's name.
        name: String,
        /// Its value.
        value: Box<BtfValue>,
    },
    /// A `DATASEC` (the value of a `.data`/`.bss`/`.rodata` map): `{name: [vars...]}`.
    Datasec {
        /// The section's name (`.rodata`).
        name: String,
        /// Its variables, usually [`BtfValue::Var`]s, in BTF order.
        vars: Vec<BtfValue>,
    },
    /// `void` (type id 0): bpftool prints [`VOID_TEXT`] and carries on.
    Void,
    /// Something bpftool cannot print: it writes this text (possibly empty) verbatim and stops
    /// formatting the enclosing containers, so this is always the last leaf of the tree.
    Unprintable(&'static str),
}

impl BtfValue {
    /// False when formatting stopped early at a [`BtfValue::Unprintable`] leaf (bpftool then
    /// also skips what follows the key, such as the value).
    pub fn is_complete(&self) -> bool {
        match self {
            BtfValue::Unprintable(_) => false,
            BtfValue::Array(items) => items.last().is_none_or(BtfValue::is_complete),
            BtfValue::Struct(members) => members.last().is_none_or(|(_, v)| v.is_complete()),
            BtfValue::Var { value, .. } => value.is_complete(),
            BtfValue::Datasec { vars, .. } => vars.last().is_none_or(BtfValue::is_complete),
            _ => true,
        }
    }
}

/// One member of a struct or union.
#[derive(Clone, Debug)]
struct Member {
    name: String,
    type_id: u32,
    /// Offset in bits from the start of the struct.
    bit_offset: u32,
    /// Width in bits when the member is a bitfield of a `kind_flag` struct, else 0.
    bitfield_size: u32,
}

/// One variable of a `DATASEC`.
#[derive(Clone, Debug)]
struct SecVar {
    type_id: u32,
    offset: u32,
}

/// A parsed BTF type.
#[derive(Clone, Debug)]
enum Type {
    Void,
    Int {
        name: String,
        size: u32,
        encoding: u32,
        bit_offset: u32,
        bits: u32,
    },
    Ptr,
    Array {
        elem: u32,
        nelems: u32,
    },
    Struct {
        size: u32,
        members: Vec<Member>,
    },
    Enum {
        size: u32,
        values: Vec<(String, i32)>,
    },
    Enum64 {
        size: u32,
        values: Vec<(String, u64)>,
    },
    Fwd,
    /// A typedef of the type.
    Typedef(u32),
    /// Volatile, const or restrict: a modifier of the type.
    Modifier(u32),
    /// `TYPE_TAG`: skipped when resolving, but not printable by itself in bpftool v7.1.
    Tagged(u32),
    Var {
        name: String,
        type_id: u32,
    },
    Datasec {
        name: String,
        size: u32,
        vars: Vec<SecVar>,
    },
    Float {
        size: u32,
    },
    /// Func, func proto, decl tag: no size, not printable.
    Other,
}

/// A BTF type table, parsed from a raw blob.
#[derive(Clone, Debug)]
pub struct BtfTypes {
    /// Index 0 is `void`.
    types: Vec<Type>,
}

fn bad(offset: usize, reason: impl Into<String>) -> BtfValueError {
    BtfValueError::BadBtf {
        offset,
        reason: reason.into(),
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let bytes: [u8; 4] = data.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn to_usize(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// The NUL-terminated string at `offset` of the string section (lossy UTF-8).
fn string_at(strings: &[u8], offset: u32, at: usize) -> Result<String, BtfValueError> {
    let rest = strings
        .get(to_usize(offset)..)
        .ok_or_else(|| bad(at, format!("name offset {offset} past the strings")))?;
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

impl BtfTypes {
    /// Parses a raw BTF blob (header, type section, string section; little-endian).
    pub fn parse(blob: &[u8]) -> Result<BtfTypes, BtfValueError> {
        if blob.len() < BTF_HEADER_SIZE {
            return Err(bad(
                0,
                format!("{} bytes is shorter than the header", blob.len()),
            ));
        }
        let magic = u16::from_le_bytes([blob[0], blob[1]]);
        if magic != BTF_MAGIC {
            return Err(bad(0, format!("bad magic {magic:#06x}")));
        }
        let field = |at| {
            read_u32(blob, at)
                .map(to_usize)
                .ok_or_else(|| bad(at, "truncated header"))
        };
        let hdr_len = field(4)?;
        let (type_off, type_len) = (field(8)?, field(12)?);
        let (str_off, str_len) = (field(16)?, field(20)?);
        if hdr_len < BTF_HEADER_SIZE || hdr_len > blob.len() {
            return Err(bad(4, format!("header length {hdr_len} out of range")));
        }
        let section = |off: usize, len: usize, what: &str| {
            let start = hdr_len.checked_add(off);
            let end = start.and_then(|s| s.checked_add(len));
            match (start, end) {
                (Some(s), Some(e)) if e <= blob.len() => Ok((s, &blob[s..e])),
                _ => Err(bad(hdr_len, format!("{what} ({off}+{len}) past the end"))),
            }
        };
        let (types_start, type_data) = section(type_off, type_len, "type section")?;
        let (_, strings) = section(str_off, str_len, "string section")?;

        let mut types = vec![Type::Void];
        let mut at = 0usize;
        while at < type_data.len() {
            let abs = types_start.saturating_add(at);
            let head = |i: usize| {
                read_u32(type_data, at.saturating_add(i * 4))
                    .ok_or_else(|| bad(abs, "truncated type record"))
            };
            let (name_off, info, size_or_type) = (head(0)?, head(1)?, head(2)?);
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let vlen = to_usize(info & 0xffff);
            let trailer_len = match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => vlen.saturating_mul(12),
                6 | 13 => vlen.saturating_mul(8),
                2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(bad(abs, format!("unknown type kind {kind}"))),
            };
            let trailer_start = at.saturating_add(BTF_TYPE_SIZE);
            let trailer_end = trailer_start.saturating_add(trailer_len);
            let trailer = type_data
                .get(trailer_start..trailer_end)
                .ok_or_else(|| bad(abs, "type record runs past the type section"))?;
            let word = |i: usize| read_u32(trailer, i * 4).unwrap_or(0);
            let name = || string_at(strings, name_off, abs);
            let ty = match kind {
                1 => {
                    let int = word(0);
                    Type::Int {
                        name: name()?,
                        size: size_or_type,
                        encoding: (int >> 24) & 0x0f,
                        bit_offset: (int >> 16) & 0xff,
                        bits: int & 0xff,
                    }
                }
                2 => Type::Ptr,
                3 => Type::Array {
                    elem: word(0),
                    nelems: word(2),
                },
                4 | 5 => {
                    let mut members = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let raw_offset = word(i * 3 + 2);
                        let (bit_offset, bitfield_size) = if kind_flag {
                            (raw_offset & 0x00ff_ffff, raw_offset >> 24)
                        } else {
                            (raw_offset, 0)
                        };
                        members.push(Member {
                            name: string_at(strings, word(i * 3), abs)?,
                            type_id: word(i * 3 + 1),
                            bit_offset,
                            bitfield_size,
                        });
                    }
                    Type::Struct {
                        size: size_or_type,
                        members,
                    }
                }
                6 => {
                    let mut values = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let value = i32::from_le_bytes(word(i * 2 + 1).to_le_bytes());
                        values.push((string_at(strings, word(i * 2), abs)?, value));
                    }
                    Type::Enum {
                        size: size_or_type,
                        values,
                    }
                }
                19 => {
                    let mut values = Vec::with_capacity(vlen);
                    for i in 0..vlen {
                        let value = u64::from(word(i * 3 + 1)) | (u64::from(word(i * 3 + 2)) << 32);
                        values.push((string_at(strings, word(i * 3), abs)?, value));
                    }
                    Type::Enum64 {
                        size: size_or_type,
                        values,
                    }
                }
                7 => Type::Fwd,
                8 => Type::Typedef(size_or_type),
                9..=11 => Type::Modifier(size_or_type),
                18 => Type::Tagged(size_or_type),
                14 => Type::Var {
                    name: name()?,
                    type_id: size_or_type,
                },
                15 => Type::Datasec {
                    name: name()?,
                    size: size_or_type,
                    vars: (0..vlen)
                        .map(|i| SecVar {
                            type_id: word(i * 3),
                            offset: word(i * 3 + 1),
                        })
                        .collect(),
                },
                16 => Type::Float { size: size_or_type },
                _ => Type::Other,
            };
            types.push(ty);
            at = trailer_end;
        }
        Ok(BtfTypes { types })
    }

    /// The number of types, `void` included.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Always false: a table holds at least `void`.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    fn get(&self, id: u32) -> Result<&Type, BtfValueError> {
        self.types
            .get(to_usize(id))
            .ok_or(BtfValueError::NoSuchType(id))
    }

    /// libbpf's `btf__resolve_type`: skips typedefs, modifiers, type tags and vars. `None` when
    /// that ends at `void`, loops, or leaves the table.
    fn resolve_type(&self, mut id: u32) -> Option<u32> {
        for _ in 0..MAX_RESOLVE_DEPTH {
            match self.types.get(to_usize(id))? {
                Type::Void => return None,
                Type::Typedef(next) | Type::Modifier(next) | Type::Tagged(next) => id = *next,
                Type::Var { type_id, .. } => id = *type_id,
                _ => return Some(id),
            }
        }
        None
    }

    /// libbpf's `btf__resolve_size`: the size in bytes of type `id`, `None` when it has none.
    pub fn resolve_size(&self, id: u32) -> Option<u64> {
        let mut id = id;
        let mut multiplier: u64 = 1;
        for _ in 0..MAX_RESOLVE_DEPTH {
            let size = match self.types.get(to_usize(id))? {
                Type::Ptr => POINTER_SIZE,
                Type::Int { size, .. }
                | Type::Struct { size, .. }
                | Type::Enum { size, .. }
                | Type::Enum64 { size, .. }
                | Type::Datasec { size, .. }
                | Type::Float { size } => u64::from(*size),
                Type::Array { elem, nelems } => {
                    multiplier = multiplier.checked_mul(u64::from(*nelems))?;
                    id = *elem;
                    continue;
                }
                Type::Typedef(next) | Type::Modifier(next) | Type::Tagged(next) => {
                    id = *next;
                    continue;
                }
                Type::Var { type_id, .. } => {
                    id = *type_id;
                    continue;
                }
                _ => return None,
            };
            return size.checked_mul(multiplier);
        }
        None
    }

    /// Formats `bytes` as type `type_id`, the way bpftool's `btf_dumper_type` does.
    pub fn format(&self, type_id: u32, bytes: &[u8]) -> Result<BtfValue, BtfValueError> {
        let mut cursor = Cursor { types: self, bytes };
        cursor.do_type(type_id, 0, 0, 0)
    }
}

/// The bytes being formatted; every read is bounds-checked against them.
struct Cursor<'a> {
    types: &'a BtfTypes,
    bytes: &'a [u8],
}

impl Cursor<'_> {
    fn take(&self, type_id: u32, offset: usize, len: usize) -> Result<&[u8], BtfValueError> {
        offset
            .checked_add(len)
            .and_then(|end| self.bytes.get(offset..end))
            .ok_or(BtfValueError::ShortData {
                type_id,
                offset,
                needed: len,
                available: self.bytes.len(),
            })
    }

    fn uint(&self, type_id: u32, offset: usize, len: usize) -> Result<u64, BtfValueError> {
        let bytes = self.take(type_id, offset, len)?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// `nr_bits` bits starting `bit_offset` bits into the byte at `offset` (little-endian).
    fn bits(
        &self,
        type_id: u32,
        offset: usize,
        bit_offset: u32,
        nr_bits: u32,
    ) -> Result<BtfValue, BtfValueError> {
        let nr_bits = nr_bits.min(128);
        let total = bit_offset.saturating_add(nr_bits);
        let len = to_usize(total.div_ceil(8));
        let bytes = self.take(type_id, offset, len)?;
        let mut low: u128 = 0;
        for (i, &b) in bytes.iter().take(16).enumerate() {
            low |= u128::from(b) << (8 * i);
        }
        let mut value = low >> bit_offset;
        if let Some(&extra) = bytes.get(16) {
            if bit_offset > 0 {
                value |= u128::from(extra) << (128 - bit_offset);
            }
        }
        if nr_bits < 128 {
            value &= (1u128 << nr_bits) - 1;
        }
        Ok(BtfValue::Bits(value))
    }

    fn do_type(
        &mut self,
        type_id: u32,
        bit_offset: u32,
        offset: usize,
        depth: usize,
    ) -> Result<BtfValue, BtfValueError> {
        if depth > MAX_FORMAT_DEPTH {
            return Ok(BtfValue::Unprintable(UNSUPPORTED_TEXT));
        }
        let types = self.types;
        match types.get(type_id)? {
            Type::Void => Ok(BtfValue::Void),
            Type::Int {
                encoding,
                bit_offset: int_offset,
                bits,
                ..
            } => self.int(type_id, *encoding, *int_offset, *bits, bit_offset, offset),
            Type::Struct { members, .. } => {
                let mut out = Vec::with_capacity(members.len());
                for m in members {
                    let at = offset.saturating_add(to_usize(m.bit_offset / 8));
                    let value = if m.bitfield_size != 0 {
                        self.bits(m.type_id, at, m.bit_offset % 8, m.bitfield_size)?
                    } else {
                        self.do_type(m.type_id, m.bit_offset % 8, at, depth + 1)?
                    };
                    let complete = value.is_complete();
                    out.push((m.name.clone(), value));
                    if !complete {
                        break;
                    }
                }
                Ok(BtfValue::Struct(out))
            }
            Type::Array { elem, nelems } => {
                if let Some(s) = self.str_array(*elem, *nelems, offset) {
                    return Ok(BtfValue::String(s));
                }
                let Some(elem_size) = types.resolve_size(*elem) else {
                    return Ok(BtfValue::Unprintable(""));
                };
                let elem_size = usize::try_from(elem_size).unwrap_or(usize::MAX);
                // Check the whole array first so a huge element count cannot run long.
                self.take(type_id, offset, elem_size.saturating_mul(to_usize(*nelems)))?;
                let mut out = Vec::new();
                for i in 0..to_usize(*nelems) {
                    let value = self.do_type(
                        *elem,
                        0,
                        offset.saturating_add(i.saturating_mul(elem_size)),
                        depth + 1,
                    )?;
                    let complete = value.is_complete();
                    out.push(value);
                    if !complete {
                        break;
                    }
                }
                Ok(BtfValue::Array(out))
            }
            Type::Enum { size, values } => {
                let value: i64 = match size {
                    1 | 2 | 4 | 8 => {
                        let len = to_usize(*size);
                        let raw = self.uint(type_id, offset, len)?;
                        let shift = 64 - 8 * len as u32;
                        (i64::from_le_bytes(raw.to_le_bytes()) << shift) >> shift
                    }
                    _ => return Ok(BtfValue::Unprintable("")),
                };
                Ok(match values.iter().find(|(_, v)| i64::from(*v) == value) {
                    Some((name, _)) => BtfValue::Enumerator(name.clone()),
                    None => BtfValue::Signed(value),
                })
            }
            Type::Enum64 { values, .. } => {
                let value = self.uint(type_id, offset, 8)?;
                Ok(match values.iter().find(|(_, v)| *v == value) {
                    Some((name, _)) => BtfValue::Enumerator(name.clone()),
                    None => BtfValue::Signed(i64::from_le_bytes(value.to_le_bytes())),
                })
            }
            Type::Ptr => Ok(BtfValue::Pointer(self.uint(type_id, offset, 8)?)),
            Type::Fwd => Ok(BtfValue::Unprintable(FWD_TEXT)),
            Type::Typedef(_) | Type::Modifier(_) => match types.resolve_type(type_id) {
                Some(resolved) => self.do_type(resolved, bit_offset, offset, depth + 1),
                None => Ok(BtfValue::Unprintable("")),
            },
            Type::Var {
                name,
                type_id: inner,
            } => {
                let value = self.do_type(*inner, bit_offset, offset, depth + 1)?;
                Ok(BtfValue::Var {
                    name: name.clone(),
                    value: Box::new(value),
                })
            }
            Type::Datasec { name, vars, .. } => {
                let mut out = Vec::with_capacity(vars.len());
                for var in vars {
                    let at = offset.saturating_add(to_usize(var.offset));
                    let value = self.do_type(var.type_id, 0, at, depth + 1)?;
                    let complete = value.is_complete();
                    out.push(value);
                    if !complete {
                        break;
                    }
                }
                Ok(BtfValue::Datasec {
                    name: name.clone(),
                    vars: out,
                })
            }
            Type::Tagged(_) | Type::Float { .. } | Type::Other => {
                Ok(BtfValue::Unprintable(UNSUPPORTED_TEXT))
            }
        }
    }

    /// bpftool's `btf_dumper_int`.
    fn int(
        &self,
        type_id: u32,
        encoding: u32,
        int_offset: u32,
        bits: u32,
        bit_offset: u32,
        offset: usize,
    ) -> Result<BtfValue, BtfValueError> {
        let bitfield = |c: &Self| {
            let total = bit_offset.saturating_add(int_offset);
            c.bits(
                type_id,
                offset.saturating_add(to_usize(total / 8)),
                total % 8,
                bits,
            )
        };
        if bit_offset != 0 || int_offset != 0 || !bits.is_multiple_of(8) {
            return bitfield(self);
        }
        if bits == 128 {
            return self.bits(type_id, offset, 0, 128);
        }
        let width = match bits {
            8 | 16 | 32 | 64 => to_usize(bits / 8),
            _ => 0,
        };
        match encoding {
            0 if width == 0 => bitfield(self),
            0 => Ok(BtfValue::Unsigned(self.uint(type_id, offset, width)?)),
            INT_SIGNED if width == 0 => bitfield(self),
            INT_SIGNED => {
                let raw = self.uint(type_id, offset, width)?;
                let shift = 64 - 8 * width as u32;
                Ok(BtfValue::Signed(
                    (i64::from_le_bytes(raw.to_le_bytes()) << shift) >> shift,
                ))
            }
            INT_CHAR => Ok(BtfValue::Char(self.take(type_id, offset, 1)?[0])),
            INT_BOOL => Ok(BtfValue::Bool(self.take(type_id, offset, 1)?[0] != 0)),
            _ => Ok(BtfValue::Unprintable("")),
        }
    }

    /// bpftool's `is_str_array`: a `char` array (`BTF_INT_CHAR` or named `char`, modifiers but
    /// not typedefs skipped) whose bytes are printable ASCII up to a NUL. Returns the string.
    fn str_array(&self, elem: u32, nelems: u32, offset: usize) -> Option<String> {
        if nelems == 0 {
            return None;
        }
        let mut id = elem;
        let mut elem_type = None;
        for _ in 0..MAX_RESOLVE_DEPTH {
            match self.types.types.get(to_usize(id))? {
                Type::Modifier(next) | Type::Tagged(next) => id = *next,
                other => {
                    elem_type = Some(other);
                    break;
                }
            }
        }
        let Some(Type::Int {
            name,
            size,
            encoding,
            ..
        }) = elem_type
        else {
            return None;
        };
        if *size != 1 || (*encoding != INT_CHAR && name != "char") {
            return None;
        }
        let window = self.bytes.get(offset..)?;
        let window = &window[..window.len().min(to_usize(nelems))];
        let end = window.iter().position(|&b| b == 0)?;
        let text = &window[..end];
        if text.iter().all(|b| (0x20..0x7f).contains(b)) {
            Some(String::from_utf8_lossy(text).into_owned())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian BTF blob under construction: types are added in id order from 1.
    #[derive(Default)]
    struct Blob {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Blob {
        fn new() -> Blob {
            Blob {
                types: Vec::new(),
                strings: vec![0],
            }
        }

        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            at
        }

        fn words(&mut self, words: &[u32]) {
            for w in words {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }

        fn head(&mut self, name: &str, kind: u32, vlen: u32, kind_flag: bool, size_or_type: u32) {
            let name = self.name(name);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
            self.words(&[name, info, size_or_type]);
        }

        fn int(&mut self, name: &str, size: u32, encoding: u32, bits: u32) {
            self.head(name, 1, 0, false, size);
            self.words(&[(encoding << 24) | bits]);
        }

        fn array(&mut self, elem: u32, nelems: u32) {
            self.head("", 3, 0, false, 0);
            self.words(&[elem, 1, nelems]);
        }

        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            flag: bool,
            members: &[(&str, u32, u32)],
        ) {
            self.head(name, kind, members.len() as u32, flag, size);
            for (member, type_id, offset) in members {
                let member = self.name(member);
                self.words(&[member, *type_id, *offset]);
            }
        }

        fn enumeration(&mut self, size: u32, values: &[(&str, i32)]) {
            self.head("e", 6, values.len() as u32, false, size);
            for (name, value) in values {
                let name = self.name(name);
                self.words(&[name, *value as u32]);
            }
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            for w in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// Types 1..: u32, int, char, char[4], _Bool, struct s {u32 a; int b:3; int c:5; char n[4]},
    /// enum e (size 1), u8[2], typedef, const, pointer, float, struct with a float, __int128.
    fn table() -> BtfTypes {
        let mut b = Blob::new();
        b.int("unsigned int", 4, 0, 32); // 1
        b.int("int", 4, INT_SIGNED, 32); // 2
        b.int("char", 1, INT_SIGNED, 8); // 3
        b.array(3, 4); // 4
        b.int("_Bool", 1, INT_BOOL, 8); // 5
        b.composite(
            4,
            "s",
            12,
            true,
            &[
                ("a", 1, 0),
                ("b", 2, (3 << 24) | 32),
                ("c", 2, (5 << 24) | 35),
                ("n", 4, 64),
            ],
        ); // 6
        b.enumeration(1, &[("ONE", 1), ("MINUS", -1)]); // 7
        b.int("unsigned char", 1, 0, 8); // 8
        b.array(8, 2); // 9
        b.head("u32_t", 8, 0, false, 1); // 10 typedef
        b.head("", 10, 0, false, 10); // 11 const
        b.head("", 2, 0, false, 6); // 12 pointer
        b.head("float", 16, 0, false, 4); // 13
        b.composite(
            4,
            "f",
            12,
            false,
            &[("x", 1, 0), ("f", 13, 32), ("y", 1, 64)],
        ); // 14
        b.int("__int128", 16, INT_SIGNED, 128); // 15
        b.int("weird", 4, 0, 24); // 16
        b.int("c", 1, INT_CHAR, 8); // 17
        BtfTypes::parse(&b.build()).unwrap()
    }

    fn check(type_id: u32, bytes: &[u8], expected: BtfValue) {
        assert_eq!(table().format(type_id, bytes).unwrap(), expected);
    }

    #[test]
    fn integers_follow_their_encoding_and_width() {
        check(
            1,
            &0xfffffffeu32.to_le_bytes(),
            BtfValue::Unsigned(0xfffffffe),
        );
        check(2, &(-2i32).to_le_bytes(), BtfValue::Signed(-2));
        check(3, &[0x80], BtfValue::Signed(-128));
        check(5, &[2], BtfValue::Bool(true));
        check(5, &[0], BtfValue::Bool(false));
        check(17, b"x", BtfValue::Char(b'x'));
        check(
            15,
            &[1; 16],
            BtfValue::Bits(0x0101_0101_0101_0101_0101_0101_0101_0101),
        );
        check(16, &[1, 2, 3, 4], BtfValue::Bits(0x030201));
    }

    #[test]
    fn char_arrays_are_strings_only_when_printable_up_to_a_nul() {
        check(4, b"ab\0z", BtfValue::String("ab".into()));
        check(4, b"\0\0\0\0", BtfValue::String(String::new()));
        let numbers = |v: &[i64]| BtfValue::Array(v.iter().map(|&n| BtfValue::Signed(n)).collect());
        check(4, b"abcd", numbers(&[97, 98, 99, 100]));
        check(4, b"a\tb\0", numbers(&[97, 9, 98, 0]));
        check(
            9,
            &[1, 255],
            BtfValue::Array(vec![BtfValue::Unsigned(1), BtfValue::Unsigned(255)]),
        );
    }

    #[test]
    fn structs_bitfields_enums_and_modifiers() {
        // a = 7, b = -1 as 3 bits (0b111), c = 0b10101 at bit 35, n = "hi".
        let mut bytes = vec![7, 0, 0, 0];
        let bits: u32 = 0b111 | (0b10101 << 3);
        bytes.extend_from_slice(&bits.to_le_bytes());
        bytes.extend_from_slice(b"hi\0\0");
        check(
            6,
            &bytes,
            BtfValue::Struct(vec![
                ("a".into(), BtfValue::Unsigned(7)),
                ("b".into(), BtfValue::Bits(0b111)),
                ("c".into(), BtfValue::Bits(0b10101)),
                ("n".into(), BtfValue::String("hi".into())),
            ]),
        );
        check(7, &[1], BtfValue::Enumerator("ONE".into()));
        check(7, &[0xff], BtfValue::Enumerator("MINUS".into()));
        check(7, &[5], BtfValue::Signed(5));
        check(11, &9u32.to_le_bytes(), BtfValue::Unsigned(9));
        check(12, &0x1234u64.to_le_bytes(), BtfValue::Pointer(0x1234));
        check(0, &[], BtfValue::Void);
    }

    #[test]
    fn formatting_stops_where_bpftool_stops() {
        let v = table()
            .format(14, &[1, 0, 0, 0, 0, 0, 0x80, 0x3f, 2, 0, 0, 0])
            .unwrap();
        assert_eq!(
            v,
            BtfValue::Struct(vec![
                ("x".into(), BtfValue::Unsigned(1)),
                ("f".into(), BtfValue::Unprintable(UNSUPPORTED_TEXT)),
            ])
        );
        assert!(!v.is_complete());
        assert!(table().format(6, &[0; 12]).unwrap().is_complete());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(
            table().format(6, &[0; 5]),
            Err(BtfValueError::ShortData {
                type_id: 4,
                offset: 8,
                needed: 4,
                available: 5
            })
        );
        assert_eq!(
            table().format(99, &[0; 4]),
            Err(BtfValueError::NoSuchType(99))
        );
        assert!(BtfTypes::parse(&[0; 10]).is_err());
        let mut blob = Blob::new();
        blob.int("int", 4, INT_SIGNED, 32);
        let mut bytes = blob.build();
        for cut in 0..bytes.len() {
            let _ = BtfTypes::parse(&bytes[..cut]);
        }
        bytes[24 + 7] = 0x7f; // kind 31
        assert!(matches!(
            BtfTypes::parse(&bytes),
            Err(BtfValueError::BadBtf { .. })
        ));
    }
}
