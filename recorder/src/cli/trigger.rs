//! `flightrec trigger`: ask the daemon for a snapshot through the trigger governor and wait
//! for the file.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use flightrec::daemon::{self, Request, Response};

use super::{ConfigArgs, unexpected};

#[derive(Args)]
pub(crate) struct TriggerArgs {
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

pub(crate) fn run(args: TriggerArgs) -> Result<ExitCode> {
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
    )?;
    let a = match resp {
        Response::Trigger(a) => a,
        Response::Suppressed(s) => {
            let retry = s
                .retry_after_ms
                .map_or_else(String::new, |ms| format!("; retry in {ms} ms"));
            eprintln!(
                "flightrec: suppressed by the trigger governor: {}{retry}",
                s.reason
            );
            return Ok(ExitCode::from(1));
        }
        other => return Err(unexpected("trigger", other)),
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(a.post_ms + 60_000);
    loop {
        let resp = daemon::request(
            socket,
            &Request::SnapshotState {
                id: a.snapshot_id.clone(),
            },
        )?;
        use triggers::hook::SnapshotState;
        let Response::State(info) = resp else {
            return Err(unexpected("snapshot_state", resp));
        };
        match info.state {
            SnapshotState::Written { path, .. } | SnapshotState::Uploaded { path, .. } => {
                println!("{path}");
                return Ok(ExitCode::SUCCESS);
            }
            SnapshotState::Pending => {}
            other => bail!("snapshot {}: {other:?}", a.snapshot_id),
        }
        if std::time::Instant::now() > deadline {
            bail!("snapshot {} was not written in time", a.snapshot_id);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
