//! `bpfmaps map …`: bpftool's map commands, engine-neutral. Every command opens its map through
//! the `bpfmaps` library, which picks the kernel or the user engine from the selector.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bpfmaps::events::{Event, EventStream};
use bpfmaps::{EngineChoice, Map, MapDef, MapError, MapType};
use bpfmaps_abi::update_flags::{BPF_ANY, BPF_EXIST, BPF_NOEXIST};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::output::{
    element_json_with, element_plain, hex_json, hex_plain, info_json, info_plain, out, outln,
    BpftoolWriter, BtfFormatter, Format,
};
use crate::words::EngineArg;
use crate::words::{parse_number, Words};

/// Arguments of `bpfmaps map`.
#[derive(Args, Debug)]
pub struct MapArgs {
    /// Which engine `id N`, `name NAME` and `map create` mean when both could (default: the one
    /// that has the map; for create, user unless PATH is on bpffs).
    #[arg(long, value_enum, global = true)]
    engine: Option<EngineArg>,
    #[command(subcommand)]
    command: MapCommand,
}

#[derive(Subcommand, Debug)]
enum MapCommand {
    /// List every map of both engines.
    #[command(alias = "show")]
    List {
        /// `id N | pinned PATH | name NAME`: show only this map.
        #[arg(allow_hyphen_values = true, num_args = 0..)]
        map: Vec<String>,
    },
    /// Print every element: `dump MAP`. Stack trace maps print symbolized frames.
    Dump {
        /// `MAP`
        #[arg(num_args = 2)]
        words: Vec<String>,
        /// For a stack trace map: symbolize user frames with this process's memory maps.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Print one element: `lookup MAP key BYTES`.
    Lookup {
        /// `MAP key BYTES`
        #[arg(allow_hyphen_values = true, num_args = 1..)]
        words: Vec<String>,
    },
    /// Print the key after KEY, or the first key: `getnext MAP [key BYTES]`.
    Getnext {
        /// `MAP [key BYTES]`
        #[arg(allow_hyphen_values = true, num_args = 1..)]
        words: Vec<String>,
    },
    /// Write one element: `update MAP key BYTES value BYTES [any|noexist|exist]`.
    Update {
        /// `MAP key BYTES value BYTES [FLAG]`
        #[arg(allow_hyphen_values = true, num_args = 1..)]
        words: Vec<String>,
    },
    /// Remove one element: `delete MAP key BYTES`.
    Delete {
        /// `MAP key BYTES`
        #[arg(allow_hyphen_values = true, num_args = 1..)]
        words: Vec<String>,
    },
    /// Create a map and pin it: `create PATH type TYPE key N value N entries N [name NAME] [flags N]`.
    Create {
        /// `PATH type TYPE key N value N entries N [name NAME] [flags N]`
        #[arg(allow_hyphen_values = true, num_args = 1..)]
        words: Vec<String>,
    },
    /// Pin a map at PATH: `pin MAP PATH`.
    Pin {
        /// `MAP PATH`
        #[arg(allow_hyphen_values = true, num_args = 3)]
        words: Vec<String>,
    },
    /// Freeze a map: no further writes from user space: `freeze MAP`.
    Freeze {
        /// `MAP`
        #[arg(num_args = 2)]
        words: Vec<String>,
    },
    /// Stream a RINGBUF or PERF_EVENT_ARRAY's records: `events MAP`.
    Events {
        /// `MAP`
        #[arg(num_args = 2)]
        words: Vec<String>,
        /// Stop after N records.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long = "for", value_name = "SECONDS", value_parser = crate::words::parse_seconds)]
        duration: Option<Duration>,
    },
}

/// Runs a `map` subcommand.
pub fn run(args: MapArgs, format: Format) -> Result<ExitCode> {
    let choice = match args.engine {
        None => EngineChoice::Any,
        Some(engine) => EngineChoice::Only(engine.into()),
    };
    match args.command {
        MapCommand::List { map } => list(&map, choice, format),
        MapCommand::Dump { words, pid } => dump(&words, pid, choice, format),
        MapCommand::Lookup { words } => lookup(&words, choice, format),
        MapCommand::Getnext { words } => getnext(&words, choice, format),
        MapCommand::Update { words } => update(&words, choice, format),
        MapCommand::Delete { words } => delete(&words, choice, format),
        MapCommand::Create { words } => create(&words, choice, format),
        MapCommand::Pin { words } => pin(&words, choice, format),
        MapCommand::Freeze { words } => freeze(&words, choice, format),
        MapCommand::Events {
            words,
            count,
            duration,
        } => events(&words, choice, count, duration, format),
    }
    .map(|()| ExitCode::SUCCESS)
}

fn open(w: &mut Words<'_>, choice: EngineChoice) -> Result<Map> {
    let sel = w.map_selector()?;
    Map::open(&sel, choice).with_context(|| format!("cannot open map {sel}"))
}

/// Says what a failed map operation was and why, errno name included.
fn op_error(op: &str, e: MapError) -> anyhow::Error {
    anyhow::anyhow!("{op} failed: {e}")
}

fn list(words: &[String], choice: EngineChoice, format: Format) -> Result<()> {
    if !words.is_empty() {
        let mut w = Words::new(words);
        let map = open(&mut w, choice)?;
        w.finish()?;
        let info = map.info();
        if format.is_json() {
            format.print_json(&info_json(map.engine(), &info));
        } else {
            outln!("{}", info_plain(map.engine(), &info));
        }
        return Ok(());
    }
    let listing = bpfmaps::list_maps_available(choice)?;
    if let Some(refused) = &listing.kernel_refused {
        eprintln!(
            "Note: kernel maps not listed ({refused}): listing them needs root or CAP_SYS_ADMIN; \
             user-engine maps follow"
        );
    }
    let maps = listing.maps;
    if format.is_json() {
        let v: Vec<Value> = maps.iter().map(|(e, i)| info_json(*e, i)).collect();
        format.print_json(&Value::Array(v));
    } else {
        for (engine, info) in &maps {
            outln!("{}", info_plain(*engine, info));
        }
    }
    Ok(())
}

/// Every element of `map` as `(key, value)`, in get_next_key order.
pub fn collect_elements(map: &Map) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let info = map.info();
    let ops = map.ops();
    let mut out = Vec::new();
    let mut key: Option<Vec<u8>> = None;
    let mut next = vec![0u8; info.key_size as usize];
    let mut value = vec![0u8; info.user_value_size()];
    loop {
        match ops.get_next_key(key.as_deref(), &mut next) {
            Ok(()) => {}
            Err(MapError::Errno(e)) if e == bpfmaps::Errno::ENOENT => break,
            Err(e) => return Err(op_error("get_next_key", e)),
        }
        match ops.lookup(&next, &mut value, 0) {
            Ok(()) => out.push((next.clone(), value.clone())),
            // The element went away between the two calls; keep walking.
            Err(MapError::Errno(e)) if e == bpfmaps::Errno::ENOENT => {}
            Err(e) => return Err(op_error("lookup", e)),
        }
        key = Some(next.clone());
    }
    Ok(out)
}

/// The `map dump -j` array of one map (also used by `run -j`). A map with BTF gets bpftool's
/// `formatted` member on every element.
pub fn dump_json(map: &Map) -> Result<Value> {
    let info = map.info();
    let btf = BtfFormatter::for_map(map)?;
    let elems = collect_elements(map)?;
    Ok(Value::Array(
        elems
            .iter()
            .map(|(k, v)| element_json_with(&info, k, v, btf.as_ref()))
            .collect(),
    ))
}

/// Prints one map's elements in plain text, ending with bpftool's `Found N elements`. A map
/// with BTF prints as bpftool prints it: its formatted elements in one pretty JSON array, and
/// no count.
pub fn dump_plain(map: &Map) -> Result<()> {
    let info = map.info();
    let btf = BtfFormatter::for_map(map)?;
    let elems = collect_elements(map)?;
    if let Some(btf) = &btf {
        let mut writer = BpftoolWriter::new();
        writer.start_array();
        for (k, v) in &elems {
            writer.value(&btf.element(&info, k, v));
        }
        writer.end_array();
        out!("{}", writer.finish());
        return Ok(());
    }
    for (k, v) in &elems {
        outln!("{}", element_plain(&info, k, v));
    }
    outln!(
        "Found {} element{}",
        elems.len(),
        if elems.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

fn check_dumpable(map: &Map) -> Result<()> {
    let t = map.info().map_type;
    match t {
        MapType::Ringbuf | MapType::PerfEventArray => {
            bail!("map dump is not supported for {t} maps: their records are a stream (use `bpfmaps map events`)")
        }
        _ => Ok(()),
    }
}

fn dump(words: &[String], pid: Option<u32>, choice: EngineChoice, format: Format) -> Result<()> {
    let mut w = Words::new(words);
    let map = open(&mut w, choice)?;
    w.finish()?;
    check_dumpable(&map)?;
    if map.info().map_type == MapType::StackTrace && !format.is_json() {
        return dump_stacks_plain_for(&map, pid);
    }
    if format.is_json() {
        format.print_json(&dump_json(&map)?);
        Ok(())
    } else {
        dump_plain(&map)
    }
}

fn lookup(words: &[String], choice: EngineChoice, format: Format) -> Result<()> {
    let mut w = Words::new(words);
    let map = open(&mut w, choice)?;
    w.expect("key")?;
    let key = w.bytes(&[])?;
    w.finish()?;
    let info = map.info();
    let mut value = vec![0u8; info.user_value_size()];
    map.ops()
        .lookup(&key, &mut value, 0)
        .map_err(|e| op_error("lookup", e))?;
    let btf = BtfFormatter::for_map(&map)?;
    if format.is_json() {
        format.print_json(&element_json_with(&info, &key, &value, btf.as_ref()));
    } else if let Some(btf) = &btf {
        let mut writer = BpftoolWriter::new();
        writer.value(&btf.element(&info, &key, &value));
        out!("{}", writer.finish());
    } else {
        outln!("{}", element_plain(&info, &key, &value));
    }
    Ok(())
}

fn getnext(words: &[String], choice: EngineChoice, format: Format) -> Result<()> {
    let mut w = Words::new(words);
    let map = open(&mut w, choice)?;
    let key = if w.eat("key") {
        Some(w.bytes(&[])?)
    } else {
        None
    };
    w.finish()?;
    let mut next = vec![0u8; map.info().key_size as usize];
    map.ops()
        .get_next_key(key.as_deref(), &mut next)
        .map_err(|e| op_error("getnext", e))?;
    if format.is_json() {
        let k = key.as_deref().map(hex_json).unwrap_or(Value::Null);
        format.print_json(&json!({"key": k, "next_key": hex_json(&next)}));
    } else {
        match &key {
            Some(k) => outln!("key:\n{}", hex_plain(k)),
            None => outln!("key: None"),
        }
        outln!("next key:\n{}", hex_plain(&next));
    }
    Ok(())
}

fn update(words: &[String], choice: EngineChoice, format: Format) -> Result<()> {
    let mut w = Words::new(words);
    let map = open(&mut w, choice)?;
    let info = map.info();
    w.expect("key")?;
    let key = w.bytes(&["value"])?;
    w.expect("value")?;
    let value = w.bytes(&["any", "noexist", "exist"])?;
    let flags = match w.peek() {
        None => BPF_ANY,
        Some("any") => BPF_ANY,
        Some("noexist") => BPF_NOEXIST,
        Some("exist") => BPF_EXIST,
        Some(other) => {
            bail!("unknown update flag `{other}` (expected any, noexist or exist)")
        }
    };
    if w.peek().is_some() {
        w.next_word("flag")?;
    }
    w.finish()?;
    // As bpftool does, a per-CPU map takes one value and writes it to every CPU's slot.
    let value = if info.map_type.is_percpu() && value.len() == info.value_size as usize {
        let stride = bpfmaps_abi::cpus::percpu_stride(value.len());
        let mut all = vec![0u8; info.user_value_size()];
        for slot in all.chunks_mut(stride) {
            slot[..value.len()].copy_from_slice(&value);
        }
        all
    } else {
        value
    };
    map.ops()
        .update(&key, &value, flags)
        .map_err(|e| op_error("update", e))?;
    if format.is_json() {
        format.print_json(&Value::Null);
    }
    Ok(())
}

fn delete(words: &[String], choice: EngineChoice, format: Format) -> Result<()> {
    let mut w = Words::new(words);
    let map = open(&mut w, choice)?;
    w.expect("key")?;
    let key = w.bytes(&[])?;
    w.finish()?;
    map.ops().delete(&key).map_err(|e| op_error("delete", e))?;
    if format.is_json() {
        format.print_json(&Value::Null);
    }
    Ok(())
}

fn create(words: &[String], choice: EngineChoice, format: Format) -> Result<()> {
    let mut w = Words::new(words);
    let path = PathBuf::from(w.next_word("PATH")?);
    let mut map_type = None;
    let (mut key, mut value, mut entries, mut flags) = (None, None, None, None);
    let mut name = None;
    while let Some(kw) = w.peek() {
        w.next_word("keyword")?;
        let arg = w.next_word(&format!("a value after `{kw}`"))?;
        let num = || -> Result<u32> {
            let n = parse_number(arg)?;
            u32::try_from(n).with_context(|| format!("`{arg}` is too large for {kw}"))
        };
        match kw {
            "type" => {
                Words::once(&map_type, kw)?;
                map_type = Some(arg.parse::<MapType>()?);
            }
            "key" => {
                Words::once(&key, kw)?;
                key = Some(num()?);
            }
            "value" => {
                Words::once(&value, kw)?;
                value = Some(num()?);
            }
            "entries" => {
                Words::once(&entries, kw)?;
                entries = Some(num()?);
            }
            "flags" => {
                Words::once(&flags, kw)?;
                flags = Some(num()?);
            }
            "name" => {
                Words::once(&name, kw)?;
                name = Some(arg.to_owned());
            }
            other => {
                bail!("unknown keyword `{other}` (expected type, key, value, entries, name, flags)")
            }
        }
    }
    let map_type = map_type.context("missing `type TYPE`")?;
    let def = MapDef {
        map_type,
        key_size: key.context("missing `key N`")?,
        value_size: value.context("missing `value N`")?,
        max_entries: entries.context("missing `entries N`")?,
        map_flags: flags.unwrap_or(0),
        name: name.unwrap_or_default(),
    };
    let map = bpfmaps::create_pinned_map(&path, &def, choice)
        .with_context(|| format!("cannot create map at {}", path.display()))?;
    if format.is_json() {
        format.print_json(&info_json(map.engine(), &map.info()));
    }
    Ok(())
}

fn pin(words: &[String], choice: EngineChoice, format: Format) -> Result<()> {
    let mut w = Words::new(words);
    let map = open(&mut w, choice)?;
    let path = PathBuf::from(w.next_word("PATH")?);
    w.finish()?;
    map.pin(&path)
        .with_context(|| format!("cannot pin map at {}", path.display()))?;
    if format.is_json() {
        format.print_json(&Value::Null);
    }
    Ok(())
}

fn freeze(words: &[String], choice: EngineChoice, format: Format) -> Result<()> {
    let mut w = Words::new(words);
    let map = open(&mut w, choice)?;
    w.finish()?;
    map.ops().freeze().map_err(|e| op_error("freeze", e))?;
    if format.is_json() {
        format.print_json(&Value::Null);
    }
    Ok(())
}

fn events(
    words: &[String],
    choice: EngineChoice,
    count: Option<u64>,
    duration: Option<Duration>,
    format: Format,
) -> Result<()> {
    let mut w = Words::new(words);
    let map = open(&mut w, choice)?;
    w.finish()?;
    let info = map.info();
    let mut stream = EventStream::open(&map).context("cannot read events")?;
    // Say on stderr when the reader is in place, so a caller knows events from now on arrive.
    eprintln!(
        "reading {} events of map {} ({}), Ctrl-C stops",
        info.map_type, info.id, info.name
    );
    let deadline = duration.map(|d| Instant::now() + d);
    let mut seen = 0u64;
    let mut lost = 0u64;
    while count.is_none_or(|c| seen < c) {
        let timeout = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(t) => Some(t),
                None => break,
            },
            None => None,
        };
        let Some(event) = stream
            .next_event(timeout)
            .context("reading events failed")?
        else {
            continue;
        };
        match event {
            Event::Record { cpu, data } => {
                seen += 1;
                if format.is_json() {
                    let mut v = json!({"data": hex_json(&data)});
                    if let Some(cpu) = cpu {
                        v["cpu"] = json!(cpu);
                    }
                    format.print_json(&v);
                } else {
                    match cpu {
                        Some(cpu) => outln!("CPU {cpu:02}: {}", hex_plain(&data)),
                        None => outln!("{}", hex_plain(&data)),
                    }
                }
            }
            Event::Lost { cpu, count } => {
                lost += count;
                if format.is_json() {
                    format.print_json(&json!({"lost": count, "cpu": cpu}));
                } else {
                    outln!("CPU {cpu:02}: lost {count} samples");
                }
            }
        }
    }
    if !format.is_json() {
        eprintln!("{seen} records, {lost} lost");
    }
    Ok(())
}

/// Prints a STACK_TRACE map stack by stack, kernel frames symbolized with kallsyms and user
/// frames with `pid`'s memory maps when given (otherwise as addresses).
pub fn dump_stacks_plain_for(map: &Map, pid: Option<u32>) -> Result<()> {
    use bpfmaps::kernel::stack::{stack_ips, StackSymbolizer};
    let symbolizer = StackSymbolizer::new();
    let elems = collect_elements(map)?;
    for (key, value) in &elems {
        let id = u32::from_ne_bytes(key[..4].try_into().context("stack id is not 4 bytes")?);
        let ips = stack_ips(value);
        outln!("stack {id} ({} frames):", ips.len());
        // Kernel text lives in the upper half of the address space.
        let kernel = ips.first().is_some_and(|ip| *ip >= 0xffff_8000_0000_0000);
        let frames = if kernel {
            symbolizer.kernel_frames(&ips).ok()
        } else {
            pid.and_then(|p| symbolizer.user_frames(p, &ips).ok())
        };
        match frames {
            Some(frames) => {
                for f in frames {
                    match &f.symbol {
                        Some(s) => outln!("    {:#018x} {s}+{:#x}", f.addr, f.offset),
                        None => outln!("    {:#018x} ?", f.addr),
                    }
                }
            }
            None => {
                for ip in ips {
                    outln!("    {ip:#018x}");
                }
            }
        }
    }
    outln!(
        "Found {} stack{}",
        elems.len(),
        if elems.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// [`dump_stacks_plain_for`] without a process to symbolize user frames with.
pub fn dump_stacks_plain(map: &Map) -> Result<()> {
    dump_stacks_plain_for(map, None)
}
