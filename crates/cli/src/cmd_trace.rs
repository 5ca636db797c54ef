//! `bpfmaps trace [--for S] [--kernel]`: prints a trace pipe as lines are written to it, like
//! `cat /sys/kernel/tracing/trace_pipe`. By default the user engine's pipe (what
//! `bpf_trace_printk` writes on the user engine: `<pin root>/trace_pipe`, consumed as it is read;
//! see `bpfmaps_runtime::trace`); with `--kernel`, the kernel's `trace_pipe` (tracefs is mounted
//! first when missing). Runs until Ctrl-C, or for `--for` seconds. Output is the raw lines in both
//! modes (`-j` does not change it).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bpfmaps_runtime::trace::TracePipeReader;
use clap::Args;

use crate::output::Format;

/// How often an empty pipe is polled again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Arguments of `bpfmaps trace`.
#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long = "for", value_name = "SECONDS", value_parser = crate::words::parse_seconds)]
    duration: Option<Duration>,
    /// Read the kernel's trace pipe (`/sys/kernel/tracing/trace_pipe`) instead of the user
    /// engine's.
    #[arg(long)]
    kernel: bool,
}

/// Runs `bpfmaps trace`.
pub fn run(args: TraceArgs, _format: Format) -> Result<ExitCode> {
    let deadline = args.duration.map(|d| Instant::now() + d);
    let interrupted = crate::signal::on_interrupt()?;
    let mut source: Box<dyn FnMut() -> Result<Vec<u8>>> = if args.kernel {
        bpfmaps::kernel::fs::ensure_tracefs().context("mounting tracefs")?;
        let path = Path::new(bpfmaps::kernel::fs::TRACEFS_PATH).join("trace_pipe");
        let mut pipe = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Box::new(move || read_available(&mut pipe, &path))
    } else {
        let root = bpfmaps::user::pin_root();
        let mut reader = TracePipeReader::open(&root)
            .with_context(|| format!("opening the trace pipe under {}", root.display()))?;
        Box::new(move || {
            reader
                .take()
                .with_context(|| format!("reading {}", reader.path().display()))
        })
    };
    let stdout = std::io::stdout();
    loop {
        let text = source()?;
        if !text.is_empty() {
            let mut out = stdout.lock();
            out.write_all(&text).context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
            continue;
        }
        let now = Instant::now();
        let wake = match deadline {
            Some(deadline) if now >= deadline => break,
            Some(deadline) => (now + POLL_INTERVAL).min(deadline),
            None => now + POLL_INTERVAL,
        };
        if crate::signal::sleep_until(wake, &interrupted) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a non-blocking read of the kernel's trace pipe returns now (empty when nothing).
fn read_available(pipe: &mut File, path: &Path) -> Result<Vec<u8>> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buffer) {
            Ok(n) => {
                buffer.truncate(n);
                return Ok(buffer);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}
