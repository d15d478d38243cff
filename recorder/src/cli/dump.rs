//! `flightrec dump`: every event of a snapshot file in time order, or a summary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use flightrec_reader::analyze::TimeSpec;
use flightrec_reader::dump::DumpFilter;

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
    /// Only events of this process id, and the switches, wakeups and forks that name its
    /// threads (repeatable).
    #[arg(long, value_name = "PID", conflicts_with = "summary")]
    pid: Vec<u32>,
    /// Only events of this thread id, and the switches, wakeups and forks that name it
    /// (repeatable).
    #[arg(long, value_name = "TID", conflicts_with = "summary")]
    tid: Vec<u32>,
    /// Only threads that had this exact name (before or after an exec; repeatable). Given
    /// with --pid or --tid, a thread must match all of them.
    #[arg(long, value_name = "COMM", conflicts_with = "summary")]
    comm: Vec<String>,
    /// First event time: CLOCK_MONOTONIC ns (as `dump --json` prints), +DURATION after the
    /// first event, or -DURATION before the last (e.g. --begin=-200ms).
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        conflicts_with = "summary"
    )]
    begin: Option<TimeSpec>,
    /// Last event time, in the same forms as --begin.
    #[arg(
        long,
        value_name = "TIME",
        allow_hyphen_values = true,
        conflicts_with = "summary"
    )]
    end: Option<TimeSpec>,
}

pub(crate) fn run(args: DumpArgs) -> Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let res = if args.summary {
        flightrec_reader::dump::summary(&args.file, &mut out)
    } else {
        let filter = DumpFilter {
            pids: args.pid,
            tids: args.tid,
            comms: args.comm,
            begin: args.begin,
            end: args.end,
        };
        flightrec_reader::dump::dump(&args.file, args.json, &filter, &mut out).inspect(|&n| {
            if n == 0 && filter != DumpFilter::default() {
                eprintln!("flightrec: warning: no event of the snapshot matches the filters");
            }
        })
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
