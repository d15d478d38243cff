//! `flightrec status`: the daemon's rings, triggers and uploads, as tables or JSON.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use flightrec::daemon::{self, Request, Response};

use super::{ConfigArgs, fmt_bytes, unexpected};

#[derive(Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: StatusArgs) -> Result<ExitCode> {
    let config = args.config.load()?;
    let resp = match daemon::request(&config.recorder.control_socket, &Request::Status) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flightrec: {:#}", anyhow::Error::new(e));
            return Ok(ExitCode::from(1));
        }
    };
    let Response::Status(st) = resp else {
        return Err(unexpected("status", resp));
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "daemon pid {} up {:.0}s, writers in the {}, rings {} per CPU ({} packets of {} \
         bytes){}, classes {}",
        st.pid,
        st.uptime_s,
        if st.epoch == 0 {
            "ring"
        } else {
            "spill (a snapshot is being copied)"
        },
        fmt_bytes(st.ring_bytes),
        st.ring_bytes / schemas::compact::PACKET_SIZE as u64,
        schemas::compact::PACKET_SIZE,
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
    // `window` is the time the held records span; `at rate` the time a full ring spans at the
    // CPU's current event rate (what a snapshot taken after that long would hold).
    println!(
        "{:>4} {:>7} {:>10} {:>12} {:>10} {:>12} {:>12}",
        "cpu", "fill", "window", "events/s", "at rate", "held", "overwritten"
    );
    for c in &st.cpus {
        let window = match (c.oldest_ts_ns, c.newest_ts_ns) {
            (Some(a), Some(b)) => format!("{:.3}s", (b - a) as f64 / 1e9),
            _ => "-".into(),
        };
        let rate = st.rates.get(c.cpu as usize).copied().unwrap_or(0.0);
        let at_rate = if rate >= 1.0 {
            fmt_span(c.capacity as f64 / rate)
        } else {
            "-".into()
        };
        println!(
            "{:>4} {:>6.1}% {:>10} {:>12.0} {:>10} {:>12} {:>12}",
            c.cpu,
            100.0 * c.held as f64 / c.capacity as f64,
            window,
            rate,
            at_rate,
            c.held,
            c.overwritten
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A span of seconds, in the unit that keeps it readable.
fn fmt_span(s: f64) -> String {
    match s {
        s if s >= 3600.0 => format!("{:.1}h", s / 3600.0),
        s if s >= 60.0 => format!("{:.1}m", s / 60.0),
        s => format!("{s:.3}s"),
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
