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
    /// Most bytes the export may write (all files): a small crafted snapshot can otherwise
    /// expand to fill the disk. Sizes as in the configs: "16GiB", "512MiB".
    #[arg(long, value_name = "SIZE", default_value = "16GiB", value_parser = parse_size)]
    max_output_size: u64,
}

fn parse_size(text: &str) -> Result<u64, String> {
    match schemas::units::parse_size(text) {
        Ok(0) => Err("the limit must be above 0".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn run(args: ExportArgs) -> Result<ExitCode> {
    let stats = flightrec_reader::export::export_limited(
        &args.file,
        args.format,
        &args.output,
        args.max_output_size,
    )
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
