//! What a tool's user-space half changes in an opened object before load, as libbpf's
//! `bpf_map__set_max_entries`, `bpf_map__set_value_size`, `bpf_program__set_autoload` and a
//! skeleton's `rodata->name = value` do: map sizes, programs switched off, and globals set from
//! text by their BTF type ([`ValueKind`]).
//!
//! Engine-independent: both engines load the changed [`ObjectSpec`].

use crate::btf::ValueKind;
use crate::{GlobalError, ObjectSpec};

/// Why a map of an opened object could not be resized.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapTuneError {
    /// The object has no map of that name.
    #[error("the object has no map named `{0}`")]
    UnknownMap(String),
    /// The map holds a data section (`.rodata`, `.data`, `.bss`), whose size is the section's.
    #[error("map `{0}` holds a data section: its size is the section's and cannot be changed")]
    DataSection(String),
    /// The map type has no value size to set (a ring buffer's size is its max_entries).
    #[error("map `{map}` is a {map_type} map, which has no value size to set")]
    NoValueSize {
        /// The map.
        map: String,
        /// Its type.
        map_type: bpfmaps_abi::MapType,
    },
}

/// Why a program could not be switched on or off.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the object has no program named `{0}`")]
pub struct UnknownProgram(pub String);

impl ObjectSpec {
    fn tunable_map(&mut self, name: &str) -> Result<&mut crate::MapSpec, MapTuneError> {
        let index = self
            .map_index(name)
            .ok_or_else(|| MapTuneError::UnknownMap(name.to_owned()))?;
        let map = &mut self.maps[index];
        if map.kind.is_data_section() {
            return Err(MapTuneError::DataSection(map.name.clone()));
        }
        Ok(map)
    }

    /// Sets map `name`'s max_entries (libbpf's `bpf_map__set_max_entries`). The kernel judges
    /// the value at creation (0 gives `EINVAL` there, as with libbpf).
    pub fn set_max_entries(&mut self, name: &str, max_entries: u32) -> Result<(), MapTuneError> {
        self.tunable_map(name)?.def.max_entries = max_entries;
        Ok(())
    }

    /// Sets map `name`'s value size (libbpf's `bpf_map__set_value_size`, e.g. a stack trace
    /// map's depth). The map's BTF value type no longer describes the value, so it is dropped,
    /// as libbpf drops it.
    pub fn set_value_size(&mut self, name: &str, value_size: u32) -> Result<(), MapTuneError> {
        let map = self.tunable_map(name)?;
        if map.def.map_type == bpfmaps_abi::MapType::Ringbuf {
            return Err(MapTuneError::NoValueSize {
                map: map.name.clone(),
                map_type: map.def.map_type,
            });
        }
        map.def.value_size = value_size;
        map.value_type = None;
        Ok(())
    }

    /// Checks that every name in `names` is a program of the object.
    pub fn check_program_names<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), UnknownProgram> {
        for name in names {
            if self.program(name).is_none() {
                return Err(UnknownProgram(name.to_owned()));
            }
        }
        Ok(())
    }

    /// Drops program `name` from the load (libbpf's `bpf_program__set_autoload(prog, false)`).
    pub fn disable_program(&mut self, name: &str) -> Result<(), UnknownProgram> {
        let before = self.programs.len();
        self.programs.retain(|p| p.name != name);
        if self.programs.len() == before {
            return Err(UnknownProgram(name.to_owned()));
        }
        Ok(())
    }

    /// The bytes global `name` gets from `text`, parsed by its BTF type: `true`/`false`/`1`/`0`
    /// for `bool`; a decimal, `0x` hex or `0o` octal integer (negative for a signed type) that
    /// fits the variable's size; a string for a `char` array, NUL-padded to its size (at most
    /// size − 1 bytes, so it stays terminated); raw bytes as `hex:0a0b…` for any type.
    pub fn global_bytes_from_text(&self, name: &str, text: &str) -> Result<Vec<u8>, GlobalError> {
        let g = self.global(name).ok_or_else(|| GlobalError::Unknown {
            name: name.to_owned(),
        })?;
        let size = usize::try_from(g.size).unwrap_or(usize::MAX);
        let bad = |reason: String| GlobalError::BadValue {
            name: name.to_owned(),
            type_name: g.type_name.clone(),
            reason,
        };
        if let Some(hex) = text.strip_prefix("hex:") {
            let bytes = decode_hex(hex).map_err(bad)?;
            if bytes.len() != size {
                return Err(bad(format!(
                    "{} bytes given, the variable has {size}",
                    bytes.len()
                )));
            }
            return Ok(bytes);
        }
        match g.value_kind {
            ValueKind::Bool => match text {
                "true" | "1" => Ok(one_hot(size, 1)),
                "false" | "0" => Ok(one_hot(size, 0)),
                _ => Err(bad(format!("`{text}` is not true, false, 1 or 0"))),
            },
            ValueKind::Int { signed } => {
                if size == 0 || size > 8 {
                    return Err(bad(format!(
                        "a {size}-byte integer cannot be set from text"
                    )));
                }
                let bits = 8 * size as u32;
                let value = parse_integer(text).ok_or_else(|| {
                    bad(format!(
                        "`{text}` is not an integer (decimal, 0x hex or 0o octal)"
                    ))
                })?;
                let (min, max): (i128, i128) = if signed {
                    (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
                } else {
                    (0, (1i128 << bits) - 1)
                };
                if value < min || value > max {
                    return Err(bad(format!(
                        "{text} is out of range {min}..={max} of a {} {size}-byte integer",
                        if signed { "signed" } else { "unsigned" }
                    )));
                }
                // Two's complement, little-endian (BPF objects here are little-endian).
                let raw = value as u128;
                Ok(raw.to_le_bytes()[..size].to_vec())
            }
            ValueKind::CharArray => {
                if text.len() >= size {
                    return Err(bad(format!(
                        "`{text}` is {} bytes; the array holds at most {} and a NUL",
                        text.len(),
                        size.saturating_sub(1)
                    )));
                }
                let mut bytes = vec![0u8; size];
                bytes[..text.len()].copy_from_slice(text.as_bytes());
                Ok(bytes)
            }
            ValueKind::Other => Err(bad(
                "this type is set only as raw bytes: hex:0a0b… with exactly its size".to_owned(),
            )),
        }
    }
}

fn one_hot(size: usize, value: u8) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    if let Some(first) = bytes.first_mut() {
        *first = value;
    }
    bytes
}

/// A decimal, `0x` hex, `0o` octal or `0b` binary integer, optionally negative.
fn parse_integer(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let lower = digits.to_ascii_lowercase();
    let magnitude = if let Some(h) = lower.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if let Some(o) = lower.strip_prefix("0o") {
        i128::from_str_radix(o, 8).ok()?
    } else if let Some(b) = lower.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()?
    } else {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i128>().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("`{hex}` has an odd number of hex digits"));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| format!("`{hex}` is not hex"))?;
            u8::from_str_radix(s, 16).map_err(|_| format!("`{hex}` is not hex"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_in_every_base() {
        assert_eq!(parse_integer("42"), Some(42));
        assert_eq!(parse_integer("-42"), Some(-42));
        assert_eq!(parse_integer("0x10"), Some(16));
        assert_eq!(parse_integer("0o17"), Some(15));
        assert_eq!(parse_integer("0b101"), Some(5));
        assert_eq!(parse_integer("+1"), None);
        assert_eq!(parse_integer(""), None);
        assert_eq!(parse_integer("x"), None);
    }

    #[test]
    fn hex_bytes() {
        assert_eq!(decode_hex("0a0B ff"), Ok(vec![10, 11, 255]));
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
        assert!(decode_hex("é0").is_err());
    }
}
