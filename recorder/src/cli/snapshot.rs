//! `flightrec snapshot record`: freeze the rings now and write one snapshot file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use flightrec::daemon::{self, Request, Response};

use super::{ConfigArgs, fmt_bytes, unexpected};

#[derive(Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Freeze the rings and write one snapshot file; prints its path as the last line.
    ///
    /// Recording goes on while the snapshot is written. Consecutive snapshots cover
    /// consecutive windows of time.
    Record(SnapshotArgs),
}

#[derive(Args)]
pub(crate) struct SnapshotArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Directory for the file (default: recorder.spool_dir).
    #[arg(long, short = 'o', value_name = "DIR")]
    output: Option<PathBuf>,
    /// Name that starts the file name and is kept in the manifest.
    #[arg(long, short = 'n')]
    name: Option<String>,
    /// Why the snapshot is taken, kept in the manifest.
    #[arg(long)]
    reason: Option<String>,
}

pub(crate) fn run(command: SnapshotCommand) -> Result<ExitCode> {
    match command {
        SnapshotCommand::Record(args) => record(args),
    }
}

fn record(args: SnapshotArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let output = args.output.map(|p| std::path::absolute(&p).unwrap_or(p));
    let resp = daemon::request(
        &config.recorder.control_socket,
        &Request::Snapshot {
            dir: output,
            name: args.name,
            reason: args.reason,
        },
    )?;
    let Response::Snapshot(w) = resp else {
        return Err(unexpected("snapshot", resp));
    };
    eprintln!(
        "snapshot {}: {} events, {} ({} overwritten, {} lost)",
        w.snapshot_id,
        w.records,
        fmt_bytes(w.bytes),
        w.overwritten,
        w.lost
    );
    println!("{}", w.path.display());
    Ok(ExitCode::SUCCESS)
}
