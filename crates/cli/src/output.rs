//! Printing maps and elements the way bpftool does: plain text, `-j` JSON and `-p` pretty JSON.
//! Bytes print as space-separated hex in plain text and as `"0x.."` strings in JSON; per-CPU values
//! print one slot per possible CPU (value_size bytes each, the padding is not shown).
//!
//! A kernel map with BTF also prints its elements through the BTF ([`BtfFormatter`]), as
//! bpftool's `btf_dumper` does: a `formatted` member in JSON, and instead of hex in plain text,
//! where bpftool writes them with its own pretty JSON writer ([`BpftoolWriter`]).

use anyhow::{Context, Result};
use bpfmaps::{Engine, Map, MapInfo};
use bpfmaps_abi::cpus::percpu_stride;
use bpfmaps_obj::btf_value::{BtfTypes, BtfValue, VOID_TEXT};
use serde_json::{json, Value};

/// How output is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// bpftool's plain text.
    Plain,
    /// One JSON document per command.
    Json,
    /// Indented JSON.
    PrettyJson,
}

impl Format {
    /// True for either JSON form.
    pub fn is_json(self) -> bool {
        self != Format::Plain
    }

    /// Prints a JSON value in this format.
    pub fn print_json(self, v: &Value) {
        if self == Format::PrettyJson {
            outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            outln!("{v}");
        }
    }
}

/// Writes `args` to standard output and flushes it, returning the error `print!` would panic
/// with (a full disk: `ENOSPC`).
pub fn write_stdout(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.flush()
}

/// Ends the process after standard output failed: quietly for a closed pipe (`EPIPE`, with the
/// status 141 a shell shows for a tool that SIGPIPE ended, as bpftool's is), otherwise with an
/// error naming the errno (`> /dev/full`: `ENOSPC`). Nothing more can be printed there, and the
/// maps and programs a command holds are released by the kernel at exit.
pub fn stdout_failed(err: &std::io::Error) -> ! {
    let errno = bpfmaps::Errno(err.raw_os_error().unwrap_or(libc::EIO));
    if errno == bpfmaps::Errno(libc::EPIPE) {
        std::process::exit(128 + libc::SIGPIPE);
    }
    eprintln!("Error: cannot write to standard output: {errno}");
    std::process::exit(1);
}

/// `print!` that never panics: a failed write ends the process through [`stdout_failed`].
macro_rules! out {
    ($($arg:tt)*) => {
        if let Err(err) = $crate::output::write_stdout(format_args!($($arg)*)) {
            $crate::output::stdout_failed(&err)
        }
    };
}

/// `println!` that never panics: a failed write ends the process through [`stdout_failed`].
macro_rules! outln {
    () => { $crate::output::out!("\n") };
    ($($arg:tt)*) => {
        $crate::output::out!("{}\n", format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};

/// Space-separated hex bytes: `01 00 00 00`.
pub fn hex_plain(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// bpftool's JSON byte array: `["0x01","0x00"]`.
pub fn hex_json(bytes: &[u8]) -> Value {
    Value::Array(
        bytes
            .iter()
            .map(|b| Value::String(format!("{b:#04x}")))
            .collect(),
    )
}

/// The per-CPU slots of a user-space value buffer, each cut to `value_size` bytes.
pub fn percpu_slots<'a>(info: &MapInfo, value: &'a [u8]) -> Vec<&'a [u8]> {
    let stride = percpu_stride(info.value_size as usize);
    value
        .chunks(stride.max(1))
        .map(|s| &s[..(info.value_size as usize).min(s.len())])
        .collect()
}

/// Hex bytes laid out as bpftool's `fprint_hex` does: space-separated, two spaces after every
/// 8 bytes and a new line after every 16.
pub fn hex_plain_wrapped(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push_str(if i % 16 == 0 {
                "\n"
            } else if i % 8 == 0 {
                "  "
            } else {
                " "
            });
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// One element as plain text, laid out as bpftool's `print_entry_plain`: on one line when key
/// and value together are at most 24 bytes, names on their own lines when either is over 16.
pub fn element_plain(info: &MapInfo, key: &[u8], value: &[u8]) -> String {
    if info.map_type.is_percpu() {
        let mut s = format!("key:\n{}\n", hex_plain_wrapped(key));
        let break_value = if info.value_size > 16 { '\n' } else { ' ' };
        for (cpu, slot) in percpu_slots(info, value).iter().enumerate() {
            s.push_str(&format!(
                "value (CPU {cpu:02}):{break_value}{}\n",
                hex_plain_wrapped(slot)
            ));
        }
        s.pop();
        s
    } else {
        let break_names = key.len() > 16 || value.len() > 16;
        let single_line = key.len() + value.len() <= 24 && !break_names;
        let name_end = if break_names { '\n' } else { ' ' };
        format!(
            "key:{name_end}{}{}value:{name_end}{}",
            hex_plain_wrapped(key),
            if single_line { "  " } else { "\n" },
            hex_plain_wrapped(value)
        )
    }
}

/// One element as bpftool's JSON object: `{"key": [...], "value": [...]}`, or `values` with one
/// `{cpu, value}` per CPU for per-CPU maps. (The commands use [`element_json_with`].)
#[cfg(test)]
pub fn element_json(info: &MapInfo, key: &[u8], value: &[u8]) -> Value {
    element_json_with(info, key, value, None)
}

/// [`element_json`], plus bpftool's `"formatted"` member when the map has BTF.
pub fn element_json_with(
    info: &MapInfo,
    key: &[u8],
    value: &[u8],
    btf: Option<&BtfFormatter>,
) -> Value {
    let mut element = if info.map_type.is_percpu() {
        let values: Vec<Value> = percpu_slots(info, value)
            .iter()
            .enumerate()
            .map(|(cpu, slot)| json!({"cpu": cpu, "value": hex_json(slot)}))
            .collect();
        json!({"key": hex_json(key), "values": values})
    } else {
        json!({"key": hex_json(key), "value": hex_json(value)})
    };
    if let Some(btf) = btf {
        element["formatted"] = btf_json(&btf.element(info, key, value));
    }
    element
}

/// A map's BTF, parsed once, formatting its elements as bpftool's `do_dump_btf` does.
#[derive(Debug)]
pub struct BtfFormatter {
    types: BtfTypes,
    key_type_id: u32,
    value_type_id: u32,
}

impl BtfFormatter {
    /// A formatter for `map`'s BTF: `None` for a map without BTF (or a user-engine map, whose
    /// BTF is not kept yet).
    pub fn for_map(map: &Map) -> Result<Option<BtfFormatter>> {
        let Some(kernel) = map.as_kernel() else {
            return Ok(None);
        };
        let id = kernel.id();
        let Some(btf) = kernel
            .btf()
            .with_context(|| format!("cannot read the BTF of map {id}"))?
        else {
            return Ok(None);
        };
        let types = BtfTypes::parse(&btf.btf.blob)
            .with_context(|| format!("cannot parse BTF object {} of map {id}", btf.btf.id))?;
        Ok(Some(BtfFormatter {
            types,
            key_type_id: btf.key_type_id,
            value_type_id: btf.value_type_id,
        }))
    }

    /// A formatter over an already parsed type table.
    #[cfg(test)]
    pub fn new(types: BtfTypes, key_type_id: u32, value_type_id: u32) -> BtfFormatter {
        BtfFormatter {
            types,
            key_type_id,
            value_type_id,
        }
    }

    /// Formats one value as `type_id`. Bytes too short for the type (which the kernel's own
    /// size checks rule out) print as what bpftool prints for a type it cannot show.
    fn format(&self, type_id: u32, bytes: &[u8]) -> BtfValue {
        self.types
            .format(type_id, bytes)
            .unwrap_or(BtfValue::Unprintable(""))
    }

    /// One element as bpftool's `do_dump_btf` builds it: `{key, value}` or, for per-CPU maps,
    /// `{key, values: [{cpu, value}...]}`; no `key` without a key type; formatting stops where
    /// bpftool's stops (after a key it could not print, or the first CPU slot it could not).
    pub fn element(&self, info: &MapInfo, key: &[u8], value: &[u8]) -> BtfValue {
        let mut members = Vec::new();
        if self.key_type_id != 0 {
            let formatted = self.format(self.key_type_id, key);
            let complete = formatted.is_complete();
            members.push(("key".to_owned(), formatted));
            if !complete {
                return BtfValue::Struct(members);
            }
        }
        if info.map_type.is_percpu() {
            let mut values = Vec::new();
            for (cpu, slot) in percpu_slots(info, value).iter().enumerate() {
                let formatted = self.format(self.value_type_id, slot);
                let complete = formatted.is_complete();
                let cpu = u64::try_from(cpu).unwrap_or(u64::MAX);
                values.push(BtfValue::Struct(vec![
                    ("cpu".to_owned(), BtfValue::Unsigned(cpu)),
                    ("value".to_owned(), formatted),
                ]));
                if !complete {
                    break;
                }
            }
            members.push(("values".to_owned(), BtfValue::Array(values)));
        } else {
            members.push(("value".to_owned(), self.format(self.value_type_id, value)));
        }
        BtfValue::Struct(members)
    }
}

/// A string as it reads back from bpftool's JSON: its writer escapes a backslash as `\n`, so a
/// backslash comes back as a newline.
fn bpftool_string(s: &str) -> Value {
    Value::String(s.replace('\\', "\n"))
}

/// A BTF-formatted value as bpftool's `-j` output holds it. Where bpftool writes invalid JSON
/// (`(unknown)` for void, `(unsupported-kind` for floats), the text becomes a JSON string.
pub fn btf_json(v: &BtfValue) -> Value {
    match v {
        BtfValue::Unsigned(n) => json!(n),
        BtfValue::Signed(n) => json!(n),
        BtfValue::Bool(b) => json!(b),
        BtfValue::Char(c) => Value::String(char::from(*c).to_string()),
        BtfValue::Bits(n) => Value::String(format!("{n:#x}")),
        BtfValue::String(s) | BtfValue::Enumerator(s) => bpftool_string(s),
        BtfValue::Array(items) => Value::Array(items.iter().map(btf_json).collect()),
        BtfValue::Struct(members) => {
            let mut object = serde_json::Map::new();
            for (name, value) in members {
                object.insert(name.replace('\\', "\n"), btf_json(value));
            }
            Value::Object(object)
        }
        BtfValue::Pointer(p) => json!(p),
        BtfValue::Var { name, value } => {
            let mut object = serde_json::Map::new();
            object.insert(name.replace('\\', "\n"), btf_json(value));
            Value::Object(object)
        }
        BtfValue::Datasec { name, vars } => {
            let mut object = serde_json::Map::new();
            object.insert(
                name.replace('\\', "\n"),
                Value::Array(vars.iter().map(btf_json).collect()),
            );
            Value::Object(object)
        }
        BtfValue::Void => Value::String(VOID_TEXT.to_owned()),
        BtfValue::Unprintable(text) => Value::String((*text).to_owned()),
    }
}

/// bpftool's pretty JSON writer (`json_writer.c` with `pretty` set), which plain-mode
/// `map dump` and `map lookup` use for maps with BTF. Its layout is its own: a name starts a new
/// line indented four spaces per level, values do not, so arrays of numbers stay on one line and
/// a closing bracket goes on its own line when the container is not empty.
#[derive(Debug, Default)]
pub struct BpftoolWriter {
    out: String,
    depth: usize,
    /// The separator owed before the next item (`,` after an item, none after an opening).
    separator_owed: bool,
}

impl BpftoolWriter {
    /// An empty writer.
    pub fn new() -> BpftoolWriter {
        BpftoolWriter::default()
    }

    fn end_of_record(&mut self) {
        if self.separator_owed {
            self.out.push(',');
        }
        self.separator_owed = true;
    }

    fn end_of_line(&mut self) {
        self.out.push('\n');
        for _ in 0..self.depth {
            self.out.push_str("    ");
        }
    }

    fn begin(&mut self, bracket: char) {
        self.end_of_record();
        self.out.push(bracket);
        self.depth += 1;
        self.separator_owed = false;
    }

    fn end(&mut self, bracket: char) {
        self.depth = self.depth.saturating_sub(1);
        if self.separator_owed {
            self.end_of_line();
        }
        self.out.push(bracket);
        self.separator_owed = true;
    }

    /// A quoted string, escaped as bpftool's writer escapes (a backslash becomes `\n`).
    fn quoted(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '\t' => self.out.push_str("\\t"),
                '\n' | '\\' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\u{c}' => self.out.push_str("\\f"),
                '\u{8}' => self.out.push_str("\\b"),
                '"' => self.out.push_str("\\\""),
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn name(&mut self, name: &str) {
        self.end_of_record();
        self.end_of_line();
        self.separator_owed = false;
        self.quoted(name);
        self.out.push_str(": ");
    }

    fn raw(&mut self, text: &str) {
        self.end_of_record();
        self.out.push_str(text);
    }

    fn string(&mut self, s: &str) {
        self.end_of_record();
        self.quoted(s);
    }

    /// Opens the top-level array of a dump.
    pub fn start_array(&mut self) {
        self.begin('[');
    }

    /// Closes the top-level array of a dump.
    pub fn end_array(&mut self) {
        self.end(']');
    }

    /// Writes one BTF-formatted value in plain-text mode.
    pub fn value(&mut self, v: &BtfValue) {
        match v {
            BtfValue::Unsigned(n) => self.raw(&n.to_string()),
            BtfValue::Signed(n) => self.raw(&n.to_string()),
            BtfValue::Bool(b) => self.raw(if *b { "true" } else { "false" }),
            BtfValue::Char(c) if (0x20..0x7f).contains(c) => {
                self.raw(&format!("\"{}\"", char::from(*c)))
            }
            BtfValue::Char(c) => self.raw(&format!("{c:#x}")),
            BtfValue::Bits(n) => self.raw(&format!("{n:#x}")),
            BtfValue::String(s) | BtfValue::Enumerator(s) => self.string(s),
            BtfValue::Array(items) => {
                self.begin('[');
                for item in items {
                    self.value(item);
                }
                self.end(']');
            }
            BtfValue::Struct(members) => {
                self.begin('{');
                for (name, value) in members {
                    self.name(name);
                    self.value(value);
                }
                self.end('}');
            }
            // glibc's `%p`.
            BtfValue::Pointer(0) => self.raw("(nil)"),
            BtfValue::Pointer(p) => self.raw(&format!("{p:#x}")),
            BtfValue::Var { name, value } => {
                self.begin('{');
                self.name(name);
                self.value(value);
                self.end('}');
            }
            BtfValue::Datasec { name, vars } => {
                self.begin('{');
                self.name(name);
                self.begin('[');
                for var in vars {
                    self.value(var);
                }
                self.end(']');
                self.end('}');
            }
            BtfValue::Void => self.raw(VOID_TEXT),
            BtfValue::Unprintable(text) => self.raw(text),
        }
    }

    /// The text written, with the newline bpftool's writer prints when it is destroyed.
    pub fn finish(mut self) -> String {
        self.out.push('\n');
        self.out
    }
}

/// A map's description as `map show` prints it in plain text.
pub fn info_plain(engine: Engine, info: &MapInfo) -> String {
    let mut s = format!(
        "{}: {}  name {}  flags {:#x}\n\tkey {}B  value {}B  max_entries {}  engine {}",
        info.id,
        info.map_type,
        info.name,
        info.map_flags,
        info.key_size,
        info.value_size,
        info.max_entries,
        engine
    );
    if info.frozen {
        s.push_str("\n\tfrozen");
    }
    if info.btf_id != 0 {
        s.push_str(&format!("\n\tbtf_id {}", info.btf_id));
    }
    s
}

/// A map's description as `map show -j` prints it.
pub fn info_json(engine: Engine, info: &MapInfo) -> Value {
    let mut v = json!({
        "id": info.id,
        "type": info.map_type.name(),
        "name": info.name,
        "flags": info.map_flags,
        "bytes_key": info.key_size,
        "bytes_value": info.value_size,
        "max_entries": info.max_entries,
        "frozen": u32::from(info.frozen),
        "engine": engine.to_string(),
    });
    if info.btf_id != 0 {
        v["btf_id"] = json!(info.btf_id);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfmaps_abi::MapType;

    fn info(map_type: MapType) -> MapInfo {
        MapInfo {
            map_type,
            id: 7,
            key_size: 4,
            value_size: 4,
            max_entries: 8,
            map_flags: 0,
            name: "counts".into(),
            possible_cpus: 2,
            btf_id: 0,
            frozen: false,
        }
    }

    #[test]
    fn plain_elements_look_like_bpftool() {
        let i = info(MapType::Hash);
        assert_eq!(
            element_plain(&i, &[1, 0, 0, 0], &[2, 0, 0, 0]),
            "key: 01 00 00 00  value: 02 00 00 00"
        );
        let p = info(MapType::PercpuArray);
        let v = [1, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 2, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            element_plain(&p, &[0, 0, 0, 0], &v),
            "key:\n00 00 00 00\nvalue (CPU 00): 01 00 00 00\nvalue (CPU 01): 02 00 00 00"
        );
    }

    /// A BTF blob: [1] unsigned int, [2] char, [3] char[4], [4] struct comm {u32 a; char n[4]}.
    fn comm_btf() -> BtfTypes {
        let strings = b"\0unsigned int\0char\0comm\0a\0n\0";
        let words: [u32; 23] = [
            1,
            1 << 24,
            4,
            32, // [1] INT "unsigned int"
            14,
            1 << 24,
            1,
            (1 << 24) | 8, // [2] INT "char", signed
            0,
            3 << 24,
            0,
            2,
            1,
            4, // [3] ARRAY of 4 char
            19,
            (4 << 24) | 2,
            8,
            24,
            1,
            0,
            26,
            3,
            32, // [4] STRUCT comm
        ];
        let type_len = (words.len() * 4) as u32;
        let mut blob = vec![0x9f, 0xeb, 1, 0];
        for w in [24u32, 0, type_len, type_len, strings.len() as u32] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        for w in &words {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(strings);
        BtfTypes::parse(&blob).unwrap()
    }

    #[test]
    fn btf_elements_print_as_bpftool_prints_them() {
        let btf = BtfFormatter::new(comm_btf(), 1, 4);
        let mut i = info(MapType::Hash);
        i.value_size = 8;
        let value = [7, 0, 0, 0, b'c', b'\\', b'"', 0];
        // Plain text: bpftool's pretty writer, a backslash escaped as `\n` (as bpftool does).
        let mut w = BpftoolWriter::new();
        w.start_array();
        w.value(&btf.element(&i, &[9, 0, 0, 0], &value));
        w.end_array();
        let expected = "[{\n        \"key\": 9,\n        \"value\": {\n            \"a\": 7,\n            \"n\": \"c\\n\\\"\"\n        }\n    }\n]\n";
        assert_eq!(w.finish(), expected);
        let mut empty = BpftoolWriter::new();
        empty.start_array();
        empty.end_array();
        assert_eq!(empty.finish(), "[]\n");
        // JSON: what bpftool's output parses to, next to the bytes.
        let v = element_json_with(&i, &[9, 0, 0, 0], &value, Some(&btf));
        assert_eq!(
            v["formatted"],
            json!({"key": 9, "value": {"a": 7, "n": "c\n\""}})
        );
        // Per-CPU: one `{cpu, value}` per CPU; a non-string char array prints as numbers.
        let mut p = info(MapType::PercpuHash);
        p.value_size = 8;
        let values = [[1, 0, 0, 0, 1, 2, 3, 4], [2, 0, 0, 0, b'x', 0, 0, 0]].concat();
        assert_eq!(
            btf_json(&btf.element(&p, &[5, 0, 0, 0], &values)),
            json!({"key": 5, "values": [
                {"cpu": 0, "value": {"a": 1, "n": [1, 2, 3, 4]}},
                {"cpu": 1, "value": {"a": 2, "n": "x"}}]})
        );
        let mut w = BpftoolWriter::new();
        w.value(&btf.element(&p, &[5, 0, 0, 0], &values));
        assert_eq!(
            w.finish(),
            "{\n    \"key\": 5,\n    \"values\": [{\n            \"cpu\": 0,\n            \"value\": {\n                \"a\": 1,\n                \"n\": [1,2,3,4\n                ]\n            }\n        },{\n            \"cpu\": 1,\n            \"value\": {\n                \"a\": 2,\n                \"n\": \"x\"\n            }\n        }\n    ]\n}\n"
        );
    }

    #[test]
    fn long_hex_wraps_like_bpftool() {
        let mut i = info(MapType::Array);
        i.value_size = 24;
        let value: Vec<u8> = (0..24).collect();
        assert_eq!(
            element_plain(&i, &[0, 0, 0, 0], &value),
            "key:\n00 00 00 00\nvalue:\n00 01 02 03 04 05 06 07  08 09 0a 0b 0c 0d 0e 0f\n10 11 12 13 14 15 16 17"
        );
        // 8 + 16 bytes fit one line; 8 + 17 do not, but names stay on the line.
        i.key_size = 8;
        i.value_size = 16;
        assert_eq!(element_plain(&i, &[0; 8], &[1; 16]).lines().count(), 1);
        assert_eq!(element_plain(&i, &[0; 9], &[1; 16]).lines().count(), 2);
        assert!(element_plain(&i, &[0; 9], &[1; 16]).starts_with("key: 00"));
    }

    #[test]
    fn json_elements_look_like_bpftool() {
        let p = info(MapType::PercpuHash);
        let v = [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            element_json(&p, &[9, 0, 0, 0], &v),
            json!({"key": ["0x09","0x00","0x00","0x00"], "values": [
                {"cpu": 0, "value": ["0x01","0x00","0x00","0x00"]},
                {"cpu": 1, "value": ["0x02","0x00","0x00","0x00"]}]})
        );
    }
}
