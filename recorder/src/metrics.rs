//! `GET /metrics`: the recorder's own counters in Prometheus' text exposition format, on a
//! listener of its own (`[metrics]`), read from the same [`Status`] `flightrec status --json`
//! shows, so the two never disagree.
//!
//! # Exposition
//!
//! Prometheus text format 0.0.4: `# HELP` and `# TYPE` before each family, counters end in
//! `_total`, units are base units (`_seconds`, `_bytes`), label values escaped (`\\`, `\"`,
//! `\n`). Every family is listed in docs/metrics.md. The exposition is written by hand: a
//! handful of families read from one struct at scrape time need no registry, and the format
//! is checked with `promtool check metrics` in the tests.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use schemas::config::ConfigError;

use crate::daemon::Status;

/// `[metrics]`: where `GET /metrics` listens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `GET /metrics` on, e.g. "127.0.0.1:9464"; empty: off.
    pub listen: String,
    /// Bearer token scrapers must send (`Authorization: Bearer TOKEN`); empty: see token_file.
    pub token: String,
    /// File holding the token (first line); empty with an empty token: no token asked.
    pub token_file: PathBuf,
    /// Allow a listen address that is not loopback (there is no TLS).
    pub allow_remote: bool,
    /// In-kernel latency histogram families to keep (`crate::hist::families`): unset, every
    /// family whose event class is recorded; `[]`, none.
    pub histograms: Option<Vec<String>>,
}

impl MetricsConfig {
    /// Whether the endpoint is on.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// Checks the values; does not read the token file.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let addr = self.listen_addr()?;
        if !addr.ip().is_loopback() && !self.allow_remote {
            return Err(ConfigError::Invalid(format!(
                "metrics.listen {addr} is not a loopback address; there is no TLS, so set \
                 metrics.allow_remote = true only behind something that adds it"
            )));
        }
        if !self.token.is_empty() && !self.token_file.as_os_str().is_empty() {
            return Err(ConfigError::Invalid(
                "set metrics.token or metrics.token_file, not both".into(),
            ));
        }
        if !self.token.is_empty() && self.token.len() < 16 {
            return Err(ConfigError::Invalid(
                "metrics.token must be at least 16 characters".into(),
            ));
        }
        Ok(())
    }

    /// The listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "metrics.listen {:?} must be IP:PORT, e.g. 127.0.0.1:9464",
                self.listen
            ))
        })
    }

    /// The token scrapers must send, if any.
    pub fn load_token(&self) -> Result<Option<String>, ConfigError> {
        if !self.token.is_empty() {
            return Ok(Some(self.token.clone()));
        }
        if self.token_file.as_os_str().is_empty() {
            return Ok(None);
        }
        schemas::config::read_token_file("metrics.token_file", &self.token_file).map(Some)
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes families into one exposition.
pub(crate) struct Exposition(pub(crate) String);

impl Exposition {
    pub(crate) fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    pub(crate) fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The exposition of `status`, then of the histograms pinned in `pin_dir` that `histograms`
/// (`crate::hist::families`) has on.
pub fn render(status: &Status, pin_dir: &std::path::Path, histograms: u32) -> String {
    let mut e = Exposition(String::with_capacity(4096));
    e.family(
        "flightrec_build_info",
        "gauge",
        "The recorder's version and ring layout; always 1.",
    );
    e.sample(
        "flightrec_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("ring_layout", &schemas::RING_LAYOUT_VERSION.to_string()),
        ],
        1,
    );
    e.one(
        "flightrec_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        status.uptime_s,
    );
    e.one(
        "flightrec_ring_bytes",
        "gauge",
        "Bytes of one CPU's main ring (its spill is a sixteenth more).",
        status.ring_bytes,
    );

    let cpus: Vec<(String, &crate::rings::CpuStatus)> =
        status.cpus.iter().map(|c| (c.cpu.to_string(), c)).collect();
    e.family(
        "flightrec_events_written_total",
        "counter",
        "Events recorded on this CPU since the rings were created (main ring and spill).",
    );
    for (cpu, c) in &cpus {
        e.sample("flightrec_events_written_total", &[("cpu", cpu)], c.total);
    }
    e.family(
        "flightrec_window_events",
        "gauge",
        "Events the ring of this CPU holds now (bytes held at the window's average event size).",
    );
    for (cpu, c) in &cpus {
        e.sample("flightrec_window_events", &[("cpu", cpu)], c.held);
    }
    e.family(
        "flightrec_window_overwritten_events",
        "gauge",
        "Events of the current window overwritten on this CPU (the ring wrapped).",
    );
    for (cpu, c) in &cpus {
        e.sample(
            "flightrec_window_overwritten_events",
            &[("cpu", cpu)],
            c.overwritten,
        );
    }
    e.family(
        "flightrec_window_seconds",
        "gauge",
        "Time from the oldest event the active ring of this CPU holds to now.",
    );
    for (cpu, c) in &cpus {
        let secs = c.oldest_ts_ns.map_or(0.0, |t| {
            status.now_monotonic_ns.saturating_sub(t) as f64 / 1e9
        });
        e.sample("flightrec_window_seconds", &[("cpu", cpu)], secs);
    }

    e.family(
        "flightrec_snapshots_total",
        "counter",
        "Snapshots by outcome: written to a file, or failed.",
    );
    e.sample(
        "flightrec_snapshots_total",
        &[("outcome", "written")],
        status.snapshots_taken,
    );
    e.sample(
        "flightrec_snapshots_total",
        &[("outcome", "failed")],
        status.snapshots_failed,
    );
    e.family(
        "flightrec_triggers_total",
        "counter",
        "Governor decisions by trigger source and outcome (admitted, coalesced, or the reason it was suppressed).",
    );
    for (source, c) in &status.triggers.by_source {
        e.sample(
            "flightrec_triggers_total",
            &[("source", source), ("outcome", "admitted")],
            c.admitted,
        );
        e.sample(
            "flightrec_triggers_total",
            &[("source", source), ("outcome", "coalesced")],
            c.coalesced,
        );
        for (reason, n) in &c.suppressed {
            e.sample(
                "flightrec_triggers_total",
                &[("source", source), ("outcome", reason)],
                n,
            );
        }
    }
    e.one(
        "flightrec_rule_hits_total",
        "counter",
        "Kernel latency rule hits received from the eBPF programs.",
        status.rule_hits,
    );
    e.family(
        "flightrec_hook_requests_total",
        "counter",
        "HTTP hook requests answered, by status code.",
    );
    for (code, n) in &status.hook_requests {
        e.sample("flightrec_hook_requests_total", &[("code", code)], n);
    }
    if let Some(c) = &status.collector {
        let u = &c.upload;
        e.one(
            "flightrec_upload_sent_bytes_total",
            "counter",
            "Snapshot bytes the collector accepted.",
            u.upload_sent_bytes_total,
        );
        e.one(
            "flightrec_uploads_total",
            "counter",
            "Snapshots acknowledged by the collector.",
            u.snapshots_uploaded_total,
        );
        e.one(
            "flightrec_upload_failures_total",
            "counter",
            "Upload attempts that failed and will be retried.",
            u.upload_failures_total,
        );
        e.one(
            "flightrec_uploads_rejected_total",
            "counter",
            "Snapshots the collector refused after verification.",
            u.uploads_rejected_total,
        );
        e.one(
            "flightrec_spool_dropped_total",
            "counter",
            "Spooled snapshots dropped before upload (spool over its cap).",
            u.spool_dropped_total,
        );
        e.one(
            "flightrec_spool_files",
            "gauge",
            "Snapshots waiting in the spool.",
            u.spool_files,
        );
        e.one(
            "flightrec_spool_bytes",
            "gauge",
            "Bytes of the snapshots waiting in the spool.",
            u.spool_bytes,
        );
    }
    crate::hist::render(&mut e, pin_dir, histograms);
    e.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn config_checks() {
        let ok = MetricsConfig {
            listen: "127.0.0.1:9464".into(),
            ..MetricsConfig::default()
        };
        assert!(ok.check().is_ok());
        assert!(MetricsConfig::default().check().is_ok(), "off is fine");
        let remote = MetricsConfig {
            listen: "0.0.0.0:9464".into(),
            ..MetricsConfig::default()
        };
        assert!(
            remote
                .check()
                .unwrap_err()
                .to_string()
                .contains("not a loopback")
        );
        let short = MetricsConfig {
            token: "short".into(),
            ..ok.clone()
        };
        assert!(short.check().is_err());
        let bad = MetricsConfig {
            listen: "localhost".into(),
            ..MetricsConfig::default()
        };
        assert!(bad.check().unwrap_err().to_string().contains("IP:PORT"));
    }
}
