//! `bpfmaps prog list|show`: the kernel's loaded programs, printed as `bpftool prog` prints them
//! (the plain form and the JSON members: id, type, name, tag, gpl_compatible, loaded_at, uid,
//! bytes_xlated, jited, bytes_jited, bytes_memlock, map_ids, btf_id).
//!
//! Kernel engine only: the user engine keeps no registry of loaded programs to list (its
//! programs live inside the process that loaded them).

use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bpfmaps::kernel::prog_info::{list_prog_ids, ProgInfo};
use bpfmaps::kernel::sys;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::output::Format;

/// Arguments of `bpfmaps prog`.
#[derive(Args, Debug)]
pub struct ProgArgs {
    #[command(subcommand)]
    command: ProgCommand,
}

#[derive(Subcommand, Debug)]
enum ProgCommand {
    /// Every loaded program (the same as `show` without a selector).
    #[command(visible_alias = "list")]
    Show {
        /// `id N`, `pinned PATH`, `name NAME` or `tag TAG`; nothing: every program.
        #[arg(num_args = 0..)]
        selector: Vec<String>,
    },
}

/// Runs `bpfmaps prog`.
pub fn run(args: ProgArgs, format: Format) -> Result<ExitCode> {
    let ProgCommand::Show { selector } = args.command;
    let infos = select(&selector)?;
    if format.is_json() {
        let all: Vec<Value> = infos.iter().map(info_json).collect();
        // bpftool prints one object for a single id or pin, an array otherwise.
        let single = matches!(selector.first().map(String::as_str), Some("id" | "pinned"));
        match (single, all.as_slice()) {
            (true, [one]) => format.print_json(one),
            _ => format.print_json(&Value::Array(all)),
        }
    } else {
        for info in &infos {
            print!("{}", info_plain(info));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn all_infos() -> Result<Vec<ProgInfo>> {
    let mut infos = Vec::new();
    for id in list_prog_ids().context("cannot list programs")? {
        match ProgInfo::from_id(id) {
            Ok(info) => infos.push(info),
            // A program unloaded between the listing and the open is simply gone.
            Err(bpfmaps::kernel::Error::Sys(e)) if e.errno == bpfmaps::Errno::ENOENT => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read program {id}")),
        }
    }
    Ok(infos)
}

fn select(words: &[String]) -> Result<Vec<ProgInfo>> {
    match words {
        [] => all_infos(),
        [kw, value] if kw == "id" => {
            let id: u32 = crate::words::parse_number(value)
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .with_context(|| format!("`{value}` is not a program id"))?;
            Ok(vec![
                ProgInfo::from_id(id).with_context(|| format!("cannot open program id {id}"))?
            ])
        }
        [kw, path] if kw == "pinned" => {
            let fd = sys::obj_get(Path::new(path), 0)
                .with_context(|| format!("cannot open the pin {path}"))?;
            Ok(vec![ProgInfo::from_fd(fd.as_fd()).with_context(|| {
                format!("{path} is not a pinned program")
            })?])
        }
        [kw, name] if kw == "name" => {
            let found: Vec<ProgInfo> = all_infos()?
                .into_iter()
                .filter(|p| &p.name == name)
                .collect();
            if found.is_empty() {
                bail!("no program named {name:?}");
            }
            Ok(found)
        }
        [kw, tag] if kw == "tag" => {
            let found: Vec<ProgInfo> = all_infos()?.into_iter().filter(|p| &p.tag == tag).collect();
            if found.is_empty() {
                bail!("no program with tag {tag}");
            }
            Ok(found)
        }
        _ => bail!(
            "expected `id N`, `pinned PATH`, `name NAME` or `tag TAG`, got `{}`",
            words.join(" ")
        ),
    }
}

/// bpftool's `prog show -j` object.
fn info_json(info: &ProgInfo) -> Value {
    let mut v = json!({
        "id": info.id,
        "type": info.type_name(),
    });
    if !info.name.is_empty() {
        v["name"] = json!(info.name);
    }
    v["tag"] = json!(info.tag);
    v["gpl_compatible"] = json!(info.gpl_compatible);
    v["loaded_at"] = json!(info.loaded_at);
    v["uid"] = json!(info.uid);
    v["bytes_xlated"] = json!(info.bytes_xlated);
    v["jited"] = json!(info.jited);
    if info.jited {
        v["bytes_jited"] = json!(info.bytes_jited);
    }
    v["bytes_memlock"] = json!(info.bytes_memlock);
    if !info.map_ids.is_empty() {
        v["map_ids"] = json!(info.map_ids);
    }
    if info.btf_id != 0 {
        v["btf_id"] = json!(info.btf_id);
    }
    v
}

/// bpftool's plain form of one program.
fn info_plain(info: &ProgInfo) -> String {
    let mut out = format!("{}: {}  ", info.id, info.type_name());
    if !info.name.is_empty() {
        out.push_str(&format!("name {}  ", info.name));
    }
    out.push_str(&format!("tag {}", info.tag));
    if info.gpl_compatible {
        out.push_str("  gpl");
    }
    out.push('\n');
    out.push_str(&format!(
        "\tloaded_at {}  uid {}\n",
        utc_timestamp(info.loaded_at),
        info.uid
    ));
    out.push_str(&format!("\txlated {}B", info.bytes_xlated));
    if info.jited {
        out.push_str(&format!("  jited {}B", info.bytes_jited));
    } else {
        out.push_str("  not jited");
    }
    out.push_str(&format!("  memlock {}B", info.bytes_memlock));
    if !info.map_ids.is_empty() {
        let ids: Vec<String> = info.map_ids.iter().map(u32::to_string).collect();
        out.push_str(&format!("  map_ids {}", ids.join(",")));
    }
    out.push('\n');
    if info.btf_id != 0 {
        out.push_str(&format!("\tbtf_id {}\n", info.btf_id));
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS+0000` for seconds since the epoch (bpftool prints local time; this is
/// UTC, which it equals on a machine in UTC).
fn utc_timestamp(epoch_seconds: u64) -> String {
    let days = i64::try_from(epoch_seconds / 86_400).unwrap_or(0);
    let secs = epoch_seconds % 86_400;
    // Days to a civil date (proleptic Gregorian), from the era-based algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+0000",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00+0000");
        assert_eq!(utc_timestamp(1_796_291_726), "2026-12-03T09:55:26+0000");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00+0000");
    }
}
