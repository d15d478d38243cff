//! `flightrec record`: the recorder daemon in the foreground, or with `--check-config` the
//! effective configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use flightrec::daemon;

use super::{ConfigArgs, fmt_bytes};

#[derive(Args)]
pub(crate) struct RecordArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Ring size per CPU, e.g. 8MiB (overrides recorder.ring_size; rounded down to a power of two of 4 KiB packets).
    #[arg(long, value_name = "SIZE")]
    ring_size: Option<String>,
    /// bpffs directory for pins (overrides recorder.pin_dir). The daemon owns it (0700) and
    /// locks it while it runs: one daemon per pin directory.
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Address of the HTTP trigger hook, e.g. 127.0.0.1:7341 (overrides hook.listen; the hook
    /// serves only when hook.token or hook.token_file is set).
    #[arg(long, value_name = "ADDR")]
    hook_listen: Option<String>,
    /// Check the configuration strictly, print the effective settings (tokens redacted) and
    /// exit.
    #[arg(long)]
    check_config: bool,
    /// Benchmarks only: the syscall programs return at once (`empty`) or after one clock read
    /// (`clock`) instead of recording, for the floors of bench/syscall_overhead.sh.
    #[arg(long, hide = true, value_parser = ["empty", "clock"])]
    bench_floor: Option<String>,
}

pub(crate) fn run(args: RecordArgs) -> Result<ExitCode> {
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
    config.syscall_floor = match args.bench_floor.as_deref() {
        Some("empty") => schemas::floor::EMPTY,
        Some(_) => schemas::floor::CLOCK,
        None => schemas::floor::RECORD,
    };
    config.check()?;
    // Said with --check-config, or once the rings are up: a refusal to start stays one line.
    let ring_note = config.ring_size_note()?;
    if args.check_config {
        if let Some(note) = &ring_note {
            eprintln!("flightrec: {note}");
        }
        println!("{}", toml::to_string_pretty(&config.redacted())?);
        eprintln!(
            "flightrec: configuration is valid ({} packets of {} bytes per ring)",
            config.ring_packets()?,
            schemas::compact::PACKET_SIZE
        );
        return Ok(ExitCode::SUCCESS);
    }
    let socket = config.recorder.control_socket.clone();
    daemon::run(config.clone(), |rings| {
        if let Some(note) = &ring_note {
            eprintln!("flightrec: {note}");
        }
        let bytes = rings.ring_bytes();
        let spill = rings.spill_packets() * schemas::compact::PACKET_SIZE as u64;
        eprintln!(
            "flightrec: recording {} on {} CPUs, {} per ring ({} total in the kernel), \
             {} pins in {}; control socket {}",
            config.events.enabled().join(","),
            rings.ncpu(),
            fmt_bytes(bytes),
            fmt_bytes((bytes + spill) * rings.ncpu() as u64),
            if rings.adopted() {
                "adopted existing"
            } else {
                "created"
            },
            rings.pin_dir().display(),
            socket.display()
        );
    })?;
    eprintln!(
        "flightrec: daemon stopped; recording continues in the kernel \
         (`flightrec teardown` stops it)"
    );
    Ok(ExitCode::SUCCESS)
}
