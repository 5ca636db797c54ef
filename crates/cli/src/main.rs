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
    let cli = Cli::parse();
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
            if format.is_json() {
                format.print_json(&serde_json::json!({ "error": format!("{err:#}") }));
            } else {
                eprintln!("Error: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}
