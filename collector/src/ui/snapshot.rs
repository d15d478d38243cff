//! One snapshot (`/ui/snapshots/ID`): downloads, then what answers "why was it slow" (the
//! findings and the request's story), then manifest, trigger, coverage per CPU, the timeline
//! and a summary of the analyses.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::charts::{histogram, timeline_svg};
use super::page::{esc, kv_table, ms, page, size, ui_error, utc};
use super::story::{self, Clock};
use crate::AppState;
use crate::auth::Caller;
use crate::browse::{entry, file_name, load_analysis, load_manifest, load_timeline};
use crate::error::AppError;

pub(super) async fn snapshot(
    State(st): State<AppState>,
    caller: Result<Caller, AppError>,
    Path(id): Path<String>,
) -> Response {
    match snapshot_inner(st, caller, id).await {
        Ok(r) => r,
        Err(e) => ui_error(e),
    }
}

async fn snapshot_inner(
    st: AppState,
    caller: Result<Caller, AppError>,
    id: String,
) -> Result<Response, AppError> {
    caller?.require_read()?;
    let e = entry(&st, &id).await?;
    let manifest = load_manifest(&st, &e).await?;
    let mut b = String::new();
    let _ = write!(
        b,
        "<p id=\"downloads\">Download: <a href=\"/v1/snapshots/{id}/download\">{}</a> · \
         <a href=\"/v1/snapshots/{id}/export/perfetto\">Perfetto trace</a> (open in \
         ui.perfetto.dev) · <a href=\"/v1/snapshots/{id}/export/tracedat\">trace.dat</a> · \
         <a href=\"/v1/snapshots/{id}/analysis\">analyses (JSON)</a> · \
         <a href=\"/v1/snapshots/{id}/manifest\">manifest (JSON)</a></p>",
        esc(&file_name(&e)),
        id = esc(&e.snapshot_id)
    );
    let clock = Clock {
        offset: e.realtime_minus_monotonic_ns,
    };
    let analysis = load_analysis(&st, &e).await;
    match &analysis {
        Ok(a) => {
            b.push_str(&story::findings(a));
            b.push_str(&story::request(a, clock));
        }
        Err(err) => {
            tracing::warn!(snapshot = %e.snapshot_id, error = %err, "analysis failed");
        }
    }
    b.push_str("<h2>Snapshot</h2>");
    b.push_str(&kv_table(&[
        ("id", format!("<code>{}</code>", esc(&e.snapshot_id))),
        ("name", esc(&e.name)),
        ("frozen (UTC)", utc(e.frozen_realtime_ns)),
        (
            "host",
            format!("{} ({})", esc(&e.host_id), esc(&e.hostname)),
        ),
        ("kernel", esc(&e.kernel_release)),
        ("CPUs", e.ncpu.to_string()),
        (
            "events",
            format!(
                "{} kept, {} overwritten, {} lost",
                e.records, e.overwritten, e.lost
            ),
        ),
        ("size", size(e.bytes)),
        ("sha256", format!("<code>{}</code>", esc(&e.sha256))),
        (
            "clock",
            format!(
                "realtime − monotonic = {} ns (± {} ns)",
                e.realtime_minus_monotonic_ns, e.clock_uncertainty_ns
            ),
        ),
    ]));
    b.push_str("<h2>Trigger</h2>");
    let mut rows = vec![
        ("source", esc(&e.trigger_source)),
        ("reason", esc(&e.trigger_reason)),
    ];
    if let (Some(g), Some(t)) = (&e.group, &e.trigger_id) {
        rows.push((
            "group",
            format!(
                "<a href=\"/ui/triggers/{}\">{} (all hosts)</a>",
                esc(t),
                esc(g)
            ),
        ));
    }
    b.push_str(&kv_table(&rows));
    if let Some(fields) = manifest["trigger"]["fields"]
        .as_object()
        .filter(|f| !f.is_empty())
    {
        b.push_str("<table id=\"trigger-fields\"><tr><th>field</th><th>value</th></tr>");
        for (k, v) in fields {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = write!(b, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(&v));
        }
        b.push_str("</table>");
    }
    b.push_str(
        "<h2>Coverage per CPU</h2><table id=\"coverage\"><tr><th>cpu</th><th>oldest</th>\
         <th>newest</th><th class=\"num\">kept</th><th class=\"num\">overwritten</th>\
         <th class=\"num\">lost</th></tr>",
    );
    for c in manifest["coverage"].as_array().into_iter().flatten() {
        let ts = |v: &Value| {
            v.as_u64()
                .map(|t| ms(t.saturating_sub(e.oldest_ns)))
                .unwrap_or_else(|| "-".into())
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            c["cpu"],
            ts(&c["oldest_ts_ns"]),
            ts(&c["newest_ts_ns"]),
            c["records_kept"],
            c["records_overwritten"],
            c["records_lost"]
        );
    }
    b.push_str("</table>");
    b.push_str("<h2>Who ran (per CPU)</h2>");
    match load_timeline(&st, &e).await {
        Ok(t) => b.push_str(&timeline_svg(&t, 800)),
        Err(err) => {
            tracing::warn!(snapshot = %e.snapshot_id, error = %err, "timeline failed");
            b.push_str("<p>No timeline: the snapshot could not be read.</p>");
        }
    }
    b.push_str("<h2>Summary</h2>");
    match &analysis {
        Ok(a) => {
            b.push_str(&summary(a));
            b.push_str(&story::slowest(a, clock));
            b.push_str(&histograms(a));
        }
        Err(_) => b.push_str("<p>No analysis: the snapshot could not be read.</p>"),
    }
    Ok(page(&format!("{} on {}", e.name, e.host_id), &b).into_response())
}

fn summary(a: &Value) -> String {
    let mut b = String::new();
    let w = &a["window"];
    let _ = write!(
        b,
        "<p id=\"window\">{} events over {}; {}</p>",
        w["events"],
        ms(w["duration_ns"].as_u64().unwrap_or(0)),
        if a["completeness"]["complete"].as_bool() == Some(true) {
            "complete (nothing overwritten)".to_owned()
        } else {
            format!(
                "rings overwrote {} records before the freeze",
                a["completeness"]["overwritten"]
            )
        }
    );
    let sys = &a["syscalls"];
    if sys["status"] == "ok" {
        b.push_str(
            "<h3>Syscalls</h3><table id=\"syscalls\"><tr><th>syscall</th>\
             <th class=\"num\">calls</th><th class=\"num\">errors</th><th class=\"num\">p99</th>\
             <th class=\"num\">max</th></tr>",
        );
        for s in sys["by_syscall"].as_array().into_iter().flatten().take(10) {
            let _ = write!(
                b,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(s["name"].as_str().unwrap_or("?")),
                s["count"],
                s["errors"],
                ms(s["p99_ns"].as_u64().unwrap_or(0)),
                ms(s["max_ns"].as_u64().unwrap_or(0))
            );
        }
        b.push_str("</table>");
    }
    b
}

fn histograms(a: &Value) -> String {
    let mut b = String::new();
    if a["syscalls"]["status"] == "ok" {
        b.push_str(&histogram("Syscall latency", &a["syscalls"]["histogram"]));
    }
    if a["sched"]["status"] == "ok" {
        b.push_str(&histogram(
            "Scheduling latency (wakeup to running)",
            &a["sched"]["histogram"],
        ));
    }
    if a["block"]["status"] == "ok" {
        for d in a["block"]["devices"].as_array().into_iter().flatten() {
            b.push_str(&histogram(
                &format!("Block I/O latency, {}", d["dev"].as_str().unwrap_or("?")),
                &d["histogram"],
            ));
        }
    }
    b
}
