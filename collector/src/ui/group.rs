//! A group trigger (`/ui/triggers/ID`): its hosts' snapshots side by side, their windows
//! aligned on a common clock.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::charts::{colour, timeline_svg};
use super::page::{esc, kv_table, ms, ms_signed, page, ui_error, utc};
use crate::AppState;
use crate::auth::Caller;
use crate::browse::load_timeline;
use crate::error::AppError;

pub(super) async fn group(
    State(st): State<AppState>,
    caller: Result<Caller, AppError>,
    Path(id): Path<String>,
) -> Response {
    match group_inner(st, caller, id).await {
        Ok(r) => r,
        Err(e) => ui_error(e),
    }
}

async fn group_inner(
    st: AppState,
    caller: Result<Caller, AppError>,
    id: String,
) -> Result<Response, AppError> {
    caller?.require_read()?;
    if !crate::ingest::valid_id(&id) {
        return Err(AppError::NotFound("trigger"));
    }
    let view = crate::groups::load_trigger(&st, &id).await?;
    let mut b = String::new();
    if let Some(t) = &view.trigger {
        b.push_str(&kv_table(&[
            ("trigger id", format!("<code>{}</code>", esc(&t.trigger_id))),
            ("group", esc(&t.group)),
            ("reason", esc(&t.reason)),
            ("requested by", esc(&t.requested_by)),
            ("sent (UTC)", utc(t.sent_realtime_ns)),
            ("sent to", esc(&t.recipients.join(", "))),
        ]));
    }
    if !view.missing.is_empty() {
        let _ = write!(
            b,
            "<p>No snapshot (yet) from: {}</p>",
            esc(&view.missing.join(", "))
        );
    }
    // A common time axis: each host's window on the realtime clock, from its own clock
    // offsets, so the hosts' histories line up.
    let spans: Vec<(u64, u64)> = view
        .snapshots
        .iter()
        .map(|e| {
            let rt = |mono: u64| mono.saturating_add_signed(e.realtime_minus_monotonic_ns);
            (rt(e.oldest_ns), rt(e.newest_ns))
        })
        .collect();
    let t0 = spans.iter().map(|s| s.0).min().unwrap_or(0);
    let t1 = spans
        .iter()
        .map(|s| s.1)
        .max()
        .unwrap_or(t0 + 1)
        .max(t0 + 1);
    let width = 800.0;
    let mut svg = format!(
        "<svg id=\"alignment\" width=\"{}\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
        width + 120.0,
        22 * spans.len() + 24
    );
    for (i, (e, (a, z))) in view.snapshots.iter().zip(&spans).enumerate() {
        let x = |t: u64| 120.0 + width * (t - t0) as f64 / (t1 - t0) as f64;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text><rect x=\"{:.1}\" y=\"{}\" \
             width=\"{:.1}\" height=\"16\" fill=\"{}\"/>",
            i * 22 + 13,
            esc(&e.host_id),
            x(*a),
            i * 22,
            (x(*z) - x(*a)).max(1.0),
            colour(i as u32 + 1)
        );
    }
    if let Some(t) = &view.trigger
        && (t0..=t1).contains(&t.sent_realtime_ns)
    {
        let x = 120.0 + width * (t.sent_realtime_ns - t0) as f64 / (t1 - t0) as f64;
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"0\" y2=\"{}\" stroke=\"red\"/>",
            22 * spans.len()
        );
    }
    let _ = write!(
        svg,
        "<text x=\"120\" y=\"{}\" font-size=\"11\">{} → {} UTC (red: trigger sent)</text></svg>",
        22 * spans.len() + 18,
        utc(t0),
        utc(t1)
    );
    b.push_str("<h2>Windows on a common clock</h2>");
    b.push_str(&svg);
    b.push_str("<div class=\"cols\" id=\"hosts\">");
    for e in &view.snapshots {
        let _ = write!(
            b,
            "<div class=\"col host\"><h3>{}</h3><p><a href=\"/ui/snapshots/{id}\">{}</a> · \
             <a href=\"/v1/snapshots/{id}/download\">download</a></p>",
            esc(&e.host_id),
            utc(e.frozen_realtime_ns),
            id = esc(&e.snapshot_id)
        );
        b.push_str(&kv_table(&[
            (
                "events",
                format!("{} ({} overwritten)", e.records, e.overwritten),
            ),
            ("window", ms(e.newest_ns.saturating_sub(e.oldest_ns))),
            (
                "realtime − monotonic",
                format!("{} ns", e.realtime_minus_monotonic_ns),
            ),
            (
                "clock vs collector",
                e.host_clock_offset_ns
                    .map(|o| format!("{} (incl. fan-out delay)", ms_signed(o)))
                    .unwrap_or_else(|| "-".into()),
            ),
        ]));
        if let Ok(t) = load_timeline(&st, e).await {
            b.push_str(&timeline_svg(&t, 300));
        }
        b.push_str("</div>");
    }
    b.push_str("</div>");
    let title = view
        .trigger
        .as_ref()
        .map(|t| format!("group {} trigger", t.group))
        .unwrap_or_else(|| "group trigger".into());
    Ok(page(&title, &b).into_response())
}
