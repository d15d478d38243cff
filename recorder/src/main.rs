//! `flightrec`: command-line entry point. Parses flags and calls the library.

mod cli;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use cli::analyze::{self, AnalyzeArgs};
use cli::dump::{self, DumpArgs};
use cli::export::{self, ExportArgs};
use cli::record::{self, RecordArgs};
use cli::snapshot::{self, SnapshotCommand};
use cli::status::{self, StatusArgs};
use cli::teardown::{self, TeardownArgs};
use cli::trigger::{self, TriggerArgs};

/// Flight-recorder snapshot tracer: keeps the last moments of kernel activity (syscalls,
/// scheduling, block I/O, interrupts) in in-kernel rings and writes them to a file on demand.
///
/// Typical use: run `flightrec record` as a daemon (root), then `flightrec snapshot record` when
/// something slow happens, and `flightrec dump FILE` to read what the kernel saw.
#[derive(Parser)]
#[command(name = "flightrec", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the recorder daemon in the foreground (needs root).
    ///
    /// Loads the eBPF programs, pins them under the config's pin_dir, drops its capabilities
    /// and serves the control socket. Restarting keeps the recorded history: pinned rings made for the same
    /// configuration are adopted. Recording continues in the kernel after the daemon exits;
    /// `flightrec teardown` stops it.
    Record(RecordArgs),
    /// Show the daemon's rings: fill, covered time window, event rates, overwrites.
    ///
    /// Exits 0 when a daemon answers, 1 otherwise.
    Status(StatusArgs),
    /// Snapshots (`flightrec snapshot record`).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Ask the daemon for a snapshot through the trigger governor.
    ///
    /// Unlike `snapshot record`, which always freezes, this goes through the same policy as the
    /// HTTP hook and the kernel rules: cooldown, budgets, dedupe by reason, coalescing with a
    /// snapshot being taken, and the pre-trigger fill. With --post, recording goes on that long
    /// before the freeze, to catch what happens right after the problem.
    ///
    /// Prints the snapshot's path once written (or its id with --no-wait). Exits 0 when a
    /// snapshot was admitted or joined, 1 when the governor suppressed the trigger (the reason
    /// and when to retry are printed), 2 on errors.
    ///
    /// Examples:
    ///   flightrec trigger --reason "checkout p99 alarm"
    ///   flightrec trigger --reason "deploy 42 smoke test" --post 200ms
    #[command(verbatim_doc_comment)]
    Trigger(TriggerArgs),
    /// Print every event of a snapshot file in time order.
    Dump(DumpArgs),
    /// Find the cause in a snapshot: slowest syscalls, CPU usage, scheduling latency and who
    /// caused it, block I/O latency, interrupts, and the processes that came and went.
    ///
    /// Every analysis states the window it covers and whether rings overwrote history in it.
    /// Filters (--pid, --tid, --comm, --cgroup; repeatable; different kinds must all match)
    /// select the tasks analysed; interrupts and per-CPU usage stay system-wide.
    ///
    /// Examples:
    ///   flightrec analyze snap.frs
    ///   flightrec analyze snap.frs --comm postgres --top 20
    ///   flightrec analyze snap.frs --begin=-200ms --json | jq .syscalls.slowest
    #[command(verbatim_doc_comment)]
    Analyze(AnalyzeArgs),
    /// Convert a snapshot for other tools: CTF (babeltrace2, lttng-analyses, Trace Compass),
    /// Perfetto (ui.perfetto.dev) or trace.dat (trace-cmd report, KernelShark).
    ///
    /// Examples:
    ///   flightrec export snap.frs --format ctf -o snap-ctf && babeltrace2 snap-ctf
    ///   flightrec export snap.frs --format perfetto -o snap.perfetto-trace
    ///   flightrec export snap.frs --format tracedat -o trace.dat && trace-cmd report trace.dat
    #[command(verbatim_doc_comment)]
    Export(ExportArgs),
    /// Detach the programs and remove the pinned rings (the recorded history is lost).
    ///
    /// Everything in the pin directory goes, subdirectories included. Refused while a daemon
    /// runs on that directory: stop it first.
    Teardown(TeardownArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // The whole chain: each layer says what it was doing.
            let mut msg = format!("flightrec: error: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!("\n  caused by: {cause}"));
            }
            eprintln!("{msg}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Record(args) => record::run(args),
        Command::Status(args) => status::run(args),
        Command::Snapshot { command } => snapshot::run(command),
        Command::Trigger(args) => trigger::run(args),
        Command::Dump(args) => dump::run(args),
        Command::Analyze(args) => analyze::run(args),
        Command::Export(args) => export::run(args),
        Command::Teardown(args) => teardown::run(args),
    }
}
