//! Printing maps and elements the way bpftool does: plain text, `-j` JSON and `-p` pretty JSON.
//! Bytes print as space-separated hex in plain text and as `"0x.."` strings in JSON; per-CPU values
//! print one slot per possible CPU (value_size bytes each, the padding is not shown).

use bpfmaps::{Engine, MapInfo};
use bpfmaps_abi::cpus::percpu_stride;
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
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            println!("{v}");
        }
    }
}

/// Space-separated hex bytes: `01 00 00 00`.
pub fn hex_plain(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// bpftool's JSON byte array: `["0x01","0x00"]`.
pub fn hex_json(bytes: &[u8]) -> Value {
    Value::Array(bytes.iter().map(|b| Value::String(format!("{b:#04x}"))).collect())
}

/// The per-CPU slots of a user-space value buffer, each cut to `value_size` bytes.
pub fn percpu_slots<'a>(info: &MapInfo, value: &'a [u8]) -> Vec<&'a [u8]> {
    let stride = percpu_stride(info.value_size as usize);
    value.chunks(stride.max(1)).map(|s| &s[..(info.value_size as usize).min(s.len())]).collect()
}

/// One element as plain text.
pub fn element_plain(info: &MapInfo, key: &[u8], value: &[u8]) -> String {
    if info.map_type.is_percpu() {
        let mut s = format!("key:\n{}\n", hex_plain(key));
        for (cpu, slot) in percpu_slots(info, value).iter().enumerate() {
            s.push_str(&format!("value (CPU {cpu:02}): {}\n", hex_plain(slot)));
        }
        s.pop();
        s
    } else if key.len() > 16 || value.len() > 16 {
        format!("key:\n{}\nvalue:\n{}", hex_plain(key), hex_plain(value))
    } else {
        format!("key: {}  value: {}", hex_plain(key), hex_plain(value))
    }
}

/// One element as bpftool's JSON object: `{"key": [...], "value": [...]}`, or `values` with one
/// `{cpu, value}` per CPU for per-CPU maps.
pub fn element_json(info: &MapInfo, key: &[u8], value: &[u8]) -> Value {
    if info.map_type.is_percpu() {
        let values: Vec<Value> = percpu_slots(info, value)
            .iter()
            .enumerate()
            .map(|(cpu, slot)| json!({"cpu": cpu, "value": hex_json(slot)}))
            .collect();
        json!({"key": hex_json(key), "values": values})
    } else {
        json!({"key": hex_json(key), "value": hex_json(value)})
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
        assert_eq!(element_plain(&i, &[1, 0, 0, 0], &[2, 0, 0, 0]), "key: 01 00 00 00  value: 02 00 00 00");
        let p = info(MapType::PercpuArray);
        let v = [1, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd, 2, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            element_plain(&p, &[0, 0, 0, 0], &v),
            "key:\n00 00 00 00\nvalue (CPU 00): 01 00 00 00\nvalue (CPU 01): 02 00 00 00"
        );
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
