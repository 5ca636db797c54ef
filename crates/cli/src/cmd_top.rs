//! `bpfmaps top`: the openat(2) counter, live. Redraws a table every interval (clearing the screen
//! when stdout is a terminal) until Ctrl-C, `--for` or `--once`; the program is detached on exit.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use bpfmaps::top::{OpenatCounter, ProcessRow, TopConfig};
use clap::Args;
use serde_json::json;

use crate::output::{out, outln, Format};
use crate::signal;

/// Arguments of `bpfmaps top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// Seconds between samples.
    #[arg(long, default_value = "1", value_name = "S", value_parser = crate::words::parse_interval)]
    interval: Duration,
    /// Stop after this many seconds.
    #[arg(long = "for", value_name = "S", value_parser = crate::words::parse_seconds)]
    duration: Option<Duration>,
    /// Print one table after one interval and exit.
    #[arg(long)]
    once: bool,
    /// Count only this process id.
    #[arg(long)]
    pid: Option<u32>,
    /// Show at most this many processes per table (0: all).
    #[arg(long, default_value_t = 25)]
    limit: usize,
}

/// Runs `bpfmaps top`.
pub fn run(args: TopArgs, format: Format) -> Result<ExitCode> {
    let interrupted = signal::on_interrupt()?;
    let mut counter = OpenatCounter::start(TopConfig {
        target_tgid: args.pid,
    })?;
    let interval = args.interval;
    let deadline = args.duration.map(|d| Instant::now() + d);
    let live = !args.once && format == Format::Plain && std::io::stdout().is_terminal();
    loop {
        let mut wake = Instant::now() + interval;
        if let Some(d) = deadline {
            wake = wake.min(d);
        }
        if signal::sleep_until(wake, &interrupted) {
            break;
        }
        let rows = counter.sample()?;
        print_table(&rows, &args, format, live, interval);
        if args.once || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(
    rows: &[ProcessRow],
    args: &TopArgs,
    format: Format,
    live: bool,
    interval: Duration,
) {
    let shown = if args.limit == 0 {
        rows.len()
    } else {
        rows.len().min(args.limit)
    };
    if format.is_json() {
        let procs: Vec<_> = rows[..shown]
            .iter()
            .map(|r| {
                json!({"pid": r.pid, "comm": r.comm, "opens": r.opens, "delta": r.delta,
                       "rate": r.rate, "exited": r.exited})
            })
            .collect();
        format.print_json(&json!({"interval_s": interval.as_secs_f64(), "processes": procs}));
        return;
    }
    let mut out = String::new();
    if live {
        out.push_str("\x1b[H\x1b[2J");
    }
    let total: u64 = rows.iter().map(|r| r.delta).sum();
    out.push_str(&format!(
        "bpfmaps top: openat(2) per process, every {:.1}s, {} process{}, {} open{} in the last interval (Ctrl-C quits)\n",
        interval.as_secs_f64(),
        rows.len(),
        if rows.len() == 1 { "" } else { "es" },
        total,
        if total == 1 { "" } else { "s" },
    ));
    out.push_str(&format!(
        "{:>8}  {:<16} {:>10} {:>10}\n",
        "PID", "COMM", "OPENS", "RATE/s"
    ));
    for r in &rows[..shown] {
        let comm = if r.exited {
            format!("{} (exited)", r.comm)
        } else {
            r.comm.clone()
        };
        out.push_str(&format!(
            "{:>8}  {:<16} {:>10} {:>10.1}\n",
            r.pid, comm, r.opens, r.rate
        ));
    }
    out!("{out}");
    if !live {
        outln!();
    }
}
