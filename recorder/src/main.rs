//! `flightrec`: command-line entry point. Parses flags and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use flightrec::config::Config;
use flightrec::daemon::{self, Request};

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
    /// Loads the eBPF programs, pins them under the config's pin_dir and serves the control
    /// socket. Restarting keeps the recorded history: pinned rings made for the same
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
    Teardown(TeardownArgs),
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Freeze the rings and write one snapshot file; prints its path as the last line.
    ///
    /// Recording goes on while the snapshot is written. Consecutive snapshots cover
    /// consecutive windows of time.
    Record(SnapshotArgs),
}

#[derive(Args)]
struct ConfigArgs {
    /// TOML configuration file (see examples/flightrec.toml); defaults apply without one.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Control socket (overrides recorder.control_socket).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(s) = &self.socket {
            config.recorder.control_socket = s.clone();
        }
        Ok(config)
    }
}

#[derive(Args)]
struct RecordArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Ring size per CPU and epoch, e.g. 8MiB (overrides recorder.ring_size).
    #[arg(long, value_name = "SIZE")]
    ring_size: Option<String>,
    /// bpffs directory for pins (overrides recorder.pin_dir).
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Address of the HTTP trigger hook, e.g. 127.0.0.1:7341 (overrides hook.listen; the hook
    /// serves only when hook.token or hook.token_file is set).
    #[arg(long, value_name = "ADDR")]
    hook_listen: Option<String>,
    /// Check the configuration strictly, print the effective settings and exit.
    #[arg(long)]
    check_config: bool,
}

#[derive(Args)]
struct TriggerArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Why a snapshot is wanted; kept in the manifest, and the dedupe signature.
    #[arg(long)]
    reason: String,
    /// Keep recording this long after the trigger, then freeze (e.g. 200ms, 2s).
    #[arg(long, value_name = "DURATION")]
    post: Option<String>,
    /// Print the snapshot id and return without waiting for the file.
    #[arg(long)]
    no_wait: bool,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SnapshotArgs {
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

#[derive(Args)]
struct DumpArgs {
    /// Snapshot file (*.frs).
    file: PathBuf,
    /// One JSON object per line: ts_ns, cpu, name, tid, pid, fields.
    #[arg(long, conflicts_with = "summary")]
    json: bool,
    /// Print a summary instead: coverage, event counts by name, busiest threads.
    #[arg(long)]
    summary: bool,
}

#[derive(Args)]
struct AnalyzeArgs {
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
    begin: Option<flightrec_reader::analyze::TimeSpec>,
    /// End of the window, in the same forms as --begin.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    end: Option<flightrec_reader::analyze::TimeSpec>,
}

#[derive(Args)]
struct ExportArgs {
    /// Snapshot file (*.frs).
    file: PathBuf,
    /// Output format.
    #[arg(long, short = 'f', value_enum)]
    format: flightrec_reader::export::Format,
    /// Output path: a directory for ctf, a file otherwise. It must not exist yet.
    #[arg(long, short = 'o', value_name = "PATH")]
    output: PathBuf,
}

#[derive(Args)]
struct TeardownArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// bpffs directory of the pins (overrides recorder.pin_dir).
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
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

fn fmt_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn print_collector(c: &flightrec_uplink::CollectorStatus) {
    let u = &c.upload;
    let rate = match u.rate_limit_bytes_per_second {
        0 => "no rate limit".to_owned(),
        r => format!("{}/s", fmt_bytes(r)),
    };
    println!(
        "upload to {} ({rate}): {} uploaded ({}), spool {} files ({}), {} dropped, {} \
         rejected, {} failed attempts",
        u.url,
        u.snapshots_uploaded_total,
        fmt_bytes(u.upload_sent_bytes_total),
        u.spool_files,
        fmt_bytes(u.spool_bytes),
        u.spool_dropped_total,
        u.uploads_rejected_total,
        u.upload_failures_total
    );
    if let Some(p) = &u.current {
        println!(
            "  uploading {}: {} of {} ({:.0}%)",
            p.file.display(),
            fmt_bytes(p.offset),
            fmt_bytes(p.size),
            100.0 * p.offset as f64 / p.size.max(1) as f64
        );
    }
    if let Some(e) = &u.last_error {
        println!("  last error: {e}");
    }
    if let Some(g) = &c.group {
        println!(
            "group {}: {}, {} triggers received{}",
            g.group,
            if g.connected {
                "registered"
            } else {
                "not connected"
            },
            g.group_triggers_received_total,
            g.last_trigger_id
                .as_ref()
                .map(|t| format!(", last {t}"))
                .unwrap_or_default()
        );
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Record(args) => {
            let mut config = args.config.load()?;
            if let Some(size) = args.ring_size {
                config.recorder.ring_size = size;
            }
            if let Some(dir) = args.pin_dir {
                config.recorder.pin_dir = dir;
            }
            if let Some(addr) = args.hook_listen {
                config.hook.listen = addr;
            }
            config.check()?;
            if args.check_config {
                println!("{}", toml::to_string_pretty(&config)?);
                eprintln!(
                    "flightrec: configuration is valid ({} records of {} bytes per ring)",
                    config.ring_slots()?,
                    schemas::RECORD_SIZE
                );
                return Ok(ExitCode::SUCCESS);
            }
            let socket = config.recorder.control_socket.clone();
            daemon::run(config.clone(), |rings| {
                let bytes = rings.slots() * schemas::RECORD_SIZE as u64;
                eprintln!(
                    "flightrec: recording {} on {} CPUs, {} per ring ({} total in the kernel), \
                     {} pins in {}; control socket {}",
                    config.events.enabled().join(","),
                    rings.ncpu(),
                    fmt_bytes(bytes),
                    fmt_bytes(bytes * 2 * rings.ncpu() as u64),
                    if rings.adopted() {
                        "adopted existing"
                    } else {
                        "created"
                    },
                    rings.pin_dir().display(),
                    socket.display()
                );
            })
            .context("recorder daemon")?;
            eprintln!(
                "flightrec: daemon stopped; recording continues in the kernel \
                 (`flightrec teardown` stops it)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => {
            let config = args.config.load()?;
            let resp = match daemon::request(&config.recorder.control_socket, &Request::Status) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("flightrec: {e}");
                    return Ok(ExitCode::from(1));
                }
            };
            let Some(st) = resp.status else {
                bail!("daemon error: {}", resp.error.unwrap_or_default());
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&st)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "daemon pid {} up {:.0}s, epoch {}, rings {} per CPU{}, classes {}",
                st.pid,
                st.uptime_s,
                st.epoch,
                fmt_bytes(st.ring_bytes),
                if st.adopted {
                    " (adopted from a previous run)"
                } else {
                    ""
                },
                st.classes.join(",")
            );
            println!(
                "snapshots: {} taken, {} failed",
                st.snapshots_taken, st.snapshots_failed
            );
            let t = &st.triggers;
            let suppressed: Vec<String> = t
                .suppressed
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!(
                "triggers: {} admitted, {} coalesced, suppressed: {}; kernel rule hits {}; hook {}",
                t.admitted,
                t.coalesced,
                if suppressed.is_empty() {
                    "none".to_owned()
                } else {
                    suppressed.join(", ")
                },
                st.rule_hits,
                st.hook_listen.as_deref().unwrap_or("off")
            );
            if let Some(c) = &st.collector {
                print_collector(c);
            }
            println!(
                "{:>4} {:>7} {:>10} {:>12} {:>12} {:>12}",
                "cpu", "fill", "window", "events/s", "held", "overwritten"
            );
            for c in &st.cpus {
                let window = match (c.oldest_ts_ns, c.newest_ts_ns) {
                    (Some(a), Some(b)) => format!("{:.3}s", (b - a) as f64 / 1e9),
                    _ => "-".into(),
                };
                let rate = st.rates.get(c.cpu as usize).copied().unwrap_or(0.0);
                println!(
                    "{:>4} {:>6.1}% {:>10} {:>12.0} {:>12} {:>12}",
                    c.cpu,
                    100.0 * c.held as f64 / c.capacity as f64,
                    window,
                    rate,
                    c.held,
                    c.overwritten
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot {
            command: SnapshotCommand::Record(args),
        } => {
            let config = args.config.load()?;
            let output = args.output.map(|p| std::path::absolute(&p).unwrap_or(p));
            let resp = daemon::request(
                &config.recorder.control_socket,
                &Request::Snapshot {
                    dir: output,
                    name: args.name,
                    reason: args.reason,
                },
            )
            .map_err(anyhow::Error::msg)?;
            let Some(w) = resp.snapshot else {
                bail!("snapshot failed: {}", resp.error.unwrap_or_default());
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
        Command::Trigger(args) => {
            let config = args.config.load()?;
            let post_ms = match &args.post {
                Some(p) => Some(
                    schemas::units::parse_duration(p)
                        .map_err(|e| anyhow::anyhow!("--post: {e}"))?
                        .as_millis() as u64,
                ),
                None => None,
            };
            let socket = &config.recorder.control_socket;
            let resp = daemon::request(
                socket,
                &Request::Trigger {
                    reason: args.reason,
                    post_ms,
                },
            )
            .map_err(anyhow::Error::msg)?;
            if let Some(s) = resp.suppressed {
                let retry = s
                    .retry_after_ms
                    .map_or_else(String::new, |ms| format!("; retry in {ms} ms"));
                eprintln!(
                    "flightrec: suppressed by the trigger governor: {}{retry}",
                    s.reason
                );
                return Ok(ExitCode::from(1));
            }
            let Some(a) = resp.trigger else {
                bail!("trigger failed: {}", resp.error.unwrap_or_default());
            };
            eprintln!(
                "flightrec: {} snapshot {} (post window {} ms)",
                if a.joined { "joined" } else { "admitted as" },
                a.snapshot_id,
                a.post_ms
            );
            if args.no_wait {
                println!("{}", a.snapshot_id);
                return Ok(ExitCode::SUCCESS);
            }
            let deadline =
                std::time::Instant::now() + std::time::Duration::from_millis(a.post_ms + 60_000);
            loop {
                let resp = daemon::request(
                    socket,
                    &Request::SnapshotState {
                        id: a.snapshot_id.clone(),
                    },
                )
                .map_err(anyhow::Error::msg)?;
                use triggers::hook::SnapshotState;
                match resp.state.map(|s| s.state) {
                    Some(
                        SnapshotState::Written { path, .. } | SnapshotState::Uploaded { path, .. },
                    ) => {
                        println!("{path}");
                        return Ok(ExitCode::SUCCESS);
                    }
                    Some(SnapshotState::Pending) => {}
                    Some(other) => bail!("snapshot {}: {other:?}", a.snapshot_id),
                    None => bail!(
                        "snapshot {}: {}",
                        a.snapshot_id,
                        resp.error.unwrap_or_default()
                    ),
                }
                if std::time::Instant::now() > deadline {
                    bail!("snapshot {} was not written in time", a.snapshot_id);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Command::Dump(args) => {
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
                Err(e) => {
                    Err(anyhow::Error::new(e).context(format!("reading {}", args.file.display())))
                }
            }
        }
        Command::Analyze(args) => {
            use flightrec_reader::analyze::{Filter, Options};
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
            };
            if !args.file.exists() {
                bail!("{}: no such file", args.file.display());
            }
            let report = flightrec_reader::analyze::analyze(&args.file, &opts)
                .with_context(|| format!("analysing {}", args.file.display()))?;
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
        Command::Export(args) => {
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
        Command::Teardown(args) => {
            let mut config = args.config.load()?;
            if let Some(dir) = args.pin_dir {
                config.recorder.pin_dir = dir;
            }
            let dir = &config.recorder.pin_dir;
            if flightrec::rings::teardown(dir)? {
                eprintln!(
                    "flightrec: removed pinned rings and programs in {}",
                    dir.display()
                );
            } else {
                eprintln!("flightrec: nothing pinned in {}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
