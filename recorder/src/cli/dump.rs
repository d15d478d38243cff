//! `flightrec dump`: every event of a snapshot file in time order, or a summary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub(crate) struct DumpArgs {
    /// Snapshot file (*.frs).
    file: PathBuf,
    /// One JSON object per line: ts_ns, cpu, name, tid, pid, fields.
    #[arg(long, conflicts_with = "summary")]
    json: bool,
    /// Print a summary instead: coverage, event counts by name, busiest threads.
    #[arg(long)]
    summary: bool,
}

pub(crate) fn run(args: DumpArgs) -> Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let res = if args.summary {
        flightrec_reader::dump::summary(&args.file, &mut out)
    } else {
        flightrec_reader::dump::dump(&args.file, args.json, &mut out)
    };
    match res {
        Ok(_) => Ok(ExitCode::SUCCESS),
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(flightrec_reader::dump::DumpError::Write(e))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", args.file.display()))),
    }
}
