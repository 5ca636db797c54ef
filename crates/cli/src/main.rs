//! `bpfmaps`: eBPF maps on the kernel and user engines, with bpftool's grammar.
//!
//! A thin binary: flags are parsed here (clap for the command tree, [`words`] for bpftool's
//! keyword grammar), the work is done by the `bpfmaps` library, and [`output`] prints the result.
//! The only crate that uses `anyhow` and prints.

mod cmd_bench;
mod cmd_map;
mod cmd_prog;
mod cmd_run;
mod cmd_test_run;
mod cmd_top;
mod cmd_trace;
mod output;
mod signal;
mod words;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Format;

/// eBPF maps on two engines: the Linux kernel and bpfmaps' own user-space engine.
#[derive(Parser, Debug)]
#[command(name = "bpfmaps", version, about, propagate_version = true)]
struct Cli {
    /// Print JSON, as `bpftool -j` does.
    #[arg(short = 'j', long = "json", global = true)]
    json: bool,
    /// Print indented JSON, as `bpftool -p` does.
    #[arg(short = 'p', long = "pretty", global = true)]
    pretty: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect and change maps: list, show, dump, lookup, getnext, update, delete, create, pin, freeze,
    /// events.
    Map(cmd_map::MapArgs),
    /// List and show the kernel's loaded programs (bpftool's `prog list|show`).
    Prog(cmd_prog::ProgArgs),
    /// Load an object, attach every program, run a command (or wait), then print every map.
    Run(cmd_run::RunArgs),
    /// Count openat(2) calls per process, live.
    Top(cmd_top::TopArgs),
    /// Time map lookups and updates on both engines, side by side, with the ratio.
    Bench(cmd_bench::BenchArgs),
    /// Run one program of an object on a given context (user engine, or BPF_PROG_TEST_RUN), then print every map.
    TestRun(cmd_test_run::TestRunArgs),
    /// Print the user engine's (or with --kernel the kernel's) trace pipe as it is written.
    Trace(cmd_trace::TraceArgs),
}

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    let format = if cli.pretty {
        Format::PrettyJson
    } else if cli.json {
        Format::Json
    } else {
        Format::Plain
    };
    let result = match cli.command {
        Command::Map(args) => cmd_map::run(args, format),
        Command::Prog(args) => cmd_prog::run(args, format),
        Command::Run(args) => cmd_run::run(args, format),
        Command::Top(args) => cmd_top::run(args, format),
        Command::Bench(args) => cmd_bench::run(args, format),
        Command::TestRun(args) => cmd_test_run::run(args, format),
        Command::Trace(args) => cmd_trace::run(args, format),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            let mut message = error_message(&err);
            if let Some(hint) = privilege_hint(&err) {
                message.push('\n');
                message.push_str(hint);
            }
            if format.is_json() {
                // A closed stdout already ended the process (SIGPIPE); a full one cannot take
                // the JSON error either, so it goes to stderr as well.
                let json = serde_json::json!({ "error": message });
                if output::write_stdout(format_args!("{json}\n")).is_err() {
                    eprintln!("Error: {message}");
                }
            } else {
                eprintln!("Error: {message}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Puts SIGPIPE back to its default action, which the Rust runtime sets to "ignore". A write to
/// a closed pipe (`bpfmaps map dump … | head -1`) then ends the process quietly with the status
/// a shell reports as 141, as it ends bpftool and every C tool, instead of a "Broken pipe" error.
fn restore_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler of ours; it runs before any thread is
    // started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A clap usage error printed in the one style of every bpfmaps error (`Error: …`, as bpftool
/// prints them); help and version go out unchanged.
fn usage_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    let text = err.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    eprint!("Error: {text}");
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
}

/// An error chain as one line, each cause once: the library errors already include their
/// source's text in their own message, so a cause whose text is already there is not repeated.
fn error_message(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        // An OS error in the errno form every bpfmaps message uses (`EACCES (Permission
        // denied)`), so it is recognised when a message above already said it.
        let text = match cause
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
        {
            Some(code) => bpfmaps::Errno(code).to_string(),
            None => cause.to_string(),
        };
        if text.is_empty() || message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// What to do about an `EPERM` from the kernel engine: which privileges it needs, and the
/// engine that needs none.
fn privilege_hint(err: &anyhow::Error) -> Option<&'static str> {
    let kernel_eperm = err.chain().any(|cause| {
        cause
            .downcast_ref::<bpfmaps::kernel::sys::SysError>()
            .is_some_and(|e| e.errno == bpfmaps::Errno::EPERM)
    }) || {
        let message = error_message(err);
        message.contains("kernel engine") && message.contains("EPERM")
    };
    kernel_eperm.then_some(
        "hint: the kernel engine needs root, or CAP_BPF (with CAP_PERFMON to attach tracing \
         programs, CAP_SYS_ADMIN to list maps or open them by id); the user engine \
         (`--engine user`) needs neither",
    )
}
