//! `flightrec export`: a snapshot file converted to CTF, Perfetto or trace.dat.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use flightrec_reader::export::Format;

use super::fmt_bytes;

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// Snapshot file (*.frs).
    file: PathBuf,
    /// Output format.
    #[arg(long, short = 'f', value_enum)]
    format: Format,
    /// Output path: a directory for ctf, a file otherwise. It must not exist yet.
    #[arg(long, short = 'o', value_name = "PATH")]
    output: PathBuf,
}

pub(crate) fn run(args: ExportArgs) -> Result<ExitCode> {
    let stats = flightrec_reader::export::export(&args.file, args.format, &args.output)
        .with_context(|| {
            format!(
                "exporting {} to {}",
                args.file.display(),
                args.output.display()
            )
        })?;
    eprintln!(
        "flightrec: exported {} events ({}) to {}",
        stats.events,
        fmt_bytes(stats.bytes),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
