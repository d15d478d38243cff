//! The collector's counters, served as Prometheus text at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters; gauges are read from the catalog when scraped.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Snapshots acknowledged.
    pub uploads_completed: AtomicU64,
    /// Upload requests that found the snapshot already archived.
    pub uploads_duplicate: AtomicU64,
    /// Chunk bytes written to staging.
    pub received_bytes: AtomicU64,
    /// Chunks accepted.
    pub chunks_received: AtomicU64,
    /// Uploads and chunks refused, by reason.
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Group triggers fanned out.
    pub group_triggers_sent: AtomicU64,
    /// Snapshots deleted by retention.
    pub retention_deleted: AtomicU64,
    /// Exports computed (not served from the cache or a computation already running).
    pub exports_computed: AtomicU64,
    /// Exports and analyses refused for their size.
    pub derived_too_large: AtomicU64,
    /// Connections: open, refused, evicted, idled out.
    pub connections: std::sync::Arc<crate::serve::ConnStats>,
}

impl Metrics {
    /// Counts a refusal.
    pub fn reject(&self, reason: &'static str) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Refusals so far for `reason`.
    pub fn rejected(&self, reason: &str) -> u64 {
        self.rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(reason)
            .copied()
            .unwrap_or(0)
    }

    /// Prometheus text exposition.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {v}");
        };
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            "collector_uploads_completed_total",
            "Snapshots verified, archived and catalogued.",
            l(&self.uploads_completed),
        );
        counter(
            "collector_uploads_duplicate_total",
            "Upload requests for a snapshot already archived.",
            l(&self.uploads_duplicate),
        );
        counter(
            "collector_upload_chunks_received_total",
            "Upload chunks accepted.",
            l(&self.chunks_received),
        );
        counter(
            "collector_upload_received_bytes_total",
            "Bytes of accepted upload chunks.",
            l(&self.received_bytes),
        );
        counter(
            "collector_group_triggers_sent_total",
            "Group triggers fanned out.",
            l(&self.group_triggers_sent),
        );
        counter(
            "collector_retention_deleted_total",
            "Snapshots deleted by retention.",
            l(&self.retention_deleted),
        );
        counter(
            "collector_exports_computed_total",
            "Exports written (cache misses).",
            l(&self.exports_computed),
        );
        counter(
            "collector_derived_too_large_total",
            "Exports and analyses refused for going over their size limit.",
            l(&self.derived_too_large),
        );
        let c = &self.connections;
        counter(
            "collector_connections_refused_total",
            "Connections closed at once: at the cap with every connection busy.",
            l(&c.refused),
        );
        counter(
            "collector_connections_evicted_total",
            "Idle connections closed to make room for a new one.",
            l(&c.evicted),
        );
        counter(
            "collector_connections_idle_closed_total",
            "Connections closed for idling past server.idle_timeout.",
            l(&c.idle_closed),
        );
        let _ = writeln!(out, "# HELP collector_connections_open Connections open.");
        let _ = writeln!(out, "# TYPE collector_connections_open gauge");
        let _ = writeln!(out, "collector_connections_open {}", l(&c.open));
        let _ = writeln!(
            out,
            "# HELP collector_uploads_rejected_total Uploads or chunks refused, by reason."
        );
        let _ = writeln!(out, "# TYPE collector_uploads_rejected_total counter");
        for (reason, n) in self
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "collector_uploads_rejected_total{{reason=\"{reason}\"}} {n}"
            );
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {v}");
        }
        out
    }
}
