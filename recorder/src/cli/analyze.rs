//! `flightrec analyze`: the analyses of a snapshot file, as tables or one JSON object.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use flightrec_reader::analyze::{Filter, Options, StoryChoice, TimeSpec};

#[derive(Args)]
pub(crate) struct AnalyzeArgs {
    /// Snapshot file (*.frs).
    file: PathBuf,
    /// One JSON object (schema in docs/analyses.md) instead of tables.
    #[arg(long)]
    json: bool,
    /// Length of every "top" list.
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,
    /// Only this process id (repeatable).
    #[arg(long, value_name = "PID")]
    pid: Vec<u32>,
    /// Only this thread id (repeatable).
    #[arg(long, value_name = "TID")]
    tid: Vec<u32>,
    /// Only threads with this exact name (repeatable).
    #[arg(long, value_name = "COMM")]
    comm: Vec<String>,
    /// Only processes in this cgroup v2 path or below it, e.g. /system.slice/nginx.service
    /// (repeatable).
    #[arg(long, value_name = "PATH")]
    cgroup: Vec<String>,
    /// Start of the window: CLOCK_MONOTONIC ns (as in `dump --json`), +DURATION after the
    /// first event, or -DURATION before the last (e.g. --begin=-200ms).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    begin: Option<TimeSpec>,
    /// End of the window, in the same forms as --begin.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    end: Option<TimeSpec>,
    /// Rank the recorder's own threads with the others (by default they are left out and
    /// their cost is shown on one line).
    #[arg(long)]
    include_recorder: bool,
    /// Tell the story of this thread over the window (--begin/--end): how long it ran,
    /// waited to run and behind whom, was blocked and in what, and who woke it. By default
    /// the story is of the request the trigger names (a hook call with the worker's thread,
    /// a kernel rule's thread), else of the slowest connection served (accept to close).
    #[arg(long, value_name = "TID", conflicts_with = "no_story")]
    story: Option<u32>,
    /// Tell no story.
    #[arg(long)]
    no_story: bool,
    /// Decode everything on one thread. By default each CPU's stream is decompressed and
    /// decoded on a thread of its own while the analysis runs on this one; the report is the
    /// same either way.
    #[arg(long)]
    single_thread: bool,
}

pub(crate) fn run(args: AnalyzeArgs) -> Result<ExitCode> {
    let opts = Options {
        top: args.top,
        filter: Filter {
            pids: args.pid,
            tids: args.tid,
            comms: args.comm,
            cgroups: args.cgroup,
        },
        begin: args.begin,
        end: args.end,
        include_recorder: args.include_recorder,
        story: match (args.story, args.no_story) {
            (Some(tid), _) => StoryChoice::Thread(tid),
            (None, true) => StoryChoice::Off,
            (None, false) => StoryChoice::Auto,
        },
        decode_threads: !args.single_thread,
    };
    if !args.file.exists() {
        bail!("{}: no such file", args.file.display());
    }
    let report = flightrec_reader::analyze::analyze(&args.file, &opts)
        .with_context(|| format!("analysing {}", args.file.display()))?;
    for w in &report.warnings {
        eprintln!("flightrec: warning: {w}");
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let res = if args.json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| std::io::Write::write_all(&mut out, b"\n"))
            .and_then(|()| std::io::Write::flush(&mut out))
    } else {
        flightrec_reader::analyze::render(&report, &mut out)
    };
    match res {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
