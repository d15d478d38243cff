//! The web UI: server-rendered HTML over the same catalog, archive and analyses as the JSON
//! API, no scripts. Pages: the snapshot list with filters (`/`), one snapshot
//! (`/ui/snapshots/ID`), and a group trigger's snapshots side by side (`/ui/triggers/ID`).
//! With tokens configured, `/login` stores a reader token in a cookie.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::Value;

use crate::AppState;
use crate::auth::{COOKIE, Caller};
use crate::browse::{Timeline, entry, file_name, load_analysis, load_manifest, load_timeline};
use crate::catalog::Query as CatalogQuery;
use crate::error::AppError;
use crate::now_realtime_ns;

/// Routes of the UI.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(list))
        .route("/ui/snapshots/{id}", get(snapshot))
        .route("/ui/triggers/{id}", get(group))
        .route("/login", get(login))
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Escapes a query-string value.
fn q(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;\
text-align:left}th{background:#f2f2f2}.num{text-align:right}h1 a{color:inherit;\
text-decoration:none}form input,form select{margin-right:.6em}.cols{display:flex;gap:1em;\
align-items:flex-start}.col{border:1px solid #ccc;padding:.5em;flex:1}code{font-size:12px}\
.bar{fill:#4a7fb5}.hist td.bar{width:200px}";

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{} — flightrec</title>\
         <style>{STYLE}</style></head><body><h1><a href=\"/\">flightrec</a> · {}</h1>{body}\
         </body></html>",
        esc(title),
        esc(title)
    ))
}

fn login_page(status: StatusCode) -> Response {
    let body = "<p>This collector needs a reader token.</p><form action=\"/login\" \
                method=\"get\"><input type=\"password\" name=\"token\" placeholder=\"token\">\
                <button>Sign in</button></form>";
    (status, page("sign in", body)).into_response()
}

fn ui_error(e: AppError) -> Response {
    match e {
        AppError::Unauthorized => login_page(StatusCode::UNAUTHORIZED),
        AppError::NotFound(what) => (
            StatusCode::NOT_FOUND,
            page("not found", &format!("<p>{} not found.</p>", esc(what))),
        )
            .into_response(),
        other => {
            let status = other.into_response().status();
            (
                status,
                page(
                    "error",
                    "<p>The request failed; see the collector's log.</p>",
                ),
            )
                .into_response()
        }
    }
}

/// UTC time of a realtime timestamp, to the millisecond.
pub fn utc(ns: u64) -> String {
    let stamp = schemas::clock::utc_stamp(ns);
    // YYYYmmddTHHMMSSZ -> YYYY-mm-dd HH:MM:SS.mmm
    format!(
        "{}-{}-{} {}:{}:{}.{:03}",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15],
        ns / 1_000_000 % 1000
    )
}

fn size(b: u64) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListForm {
    host: String,
    source: String,
    reason: String,
    tag: String,
    group: String,
    since: String,
    cursor: String,
}

async fn list(
    State(st): State<AppState>,
    caller: Result<Caller, AppError>,
    Query(f): Query<ListForm>,
) -> Response {
    match list_inner(st, caller, f).await {
        Ok(r) => r,
        Err(e) => ui_error(e),
    }
}

async fn list_inner(
    st: AppState,
    caller: Result<Caller, AppError>,
    f: ListForm,
) -> Result<Response, AppError> {
    caller?.require_read()?;
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let since_ns: Option<u64> = match f.since.as_str() {
        "1h" => Some(3600),
        "24h" => Some(86_400),
        "7d" => Some(7 * 86_400),
        _ => None,
    }
    .map(|s| now_realtime_ns().saturating_sub(s * 1_000_000_000));
    let query = CatalogQuery {
        host: opt(&f.host),
        source: opt(&f.source),
        reason: opt(&f.reason),
        tag: opt(&f.tag),
        group: opt(&f.group),
        from_ns: since_ns,
        cursor: opt(&f.cursor),
        limit: Some(50),
        ..Default::default()
    };
    if !f.cursor.is_empty() && !crate::catalog::valid_cursor(&f.cursor) {
        return Err(AppError::BadRequest("bad cursor".into()));
    }
    let page_ = st.with_catalog(move |c| c.list(&query)).await?;
    let mut b = String::new();
    let input = |name: &str, v: &str| {
        format!(
            "<label>{name} <input name=\"{name}\" value=\"{}\" size=\"12\"></label>",
            esc(v)
        )
    };
    let _ = write!(
        b,
        "<form id=\"filters\" method=\"get\" action=\"/\">{}{}{}{}{}<label>since <select \
         name=\"since\">",
        input("host", &f.host),
        input("source", &f.source),
        input("reason", &f.reason),
        input("tag", &f.tag),
        input("group", &f.group)
    );
    for (v, label) in [
        ("", "any time"),
        ("1h", "1 hour"),
        ("24h", "24 hours"),
        ("7d", "7 days"),
    ] {
        let sel = if f.since == v { " selected" } else { "" };
        let _ = write!(b, "<option value=\"{v}\"{sel}>{label}</option>");
    }
    b.push_str("</select></label><button>Filter</button></form>");
    b.push_str(
        "<table id=\"snapshots\"><tr><th>frozen (UTC)</th><th>host</th><th>name</th>\
         <th>trigger</th><th>reason</th><th>group</th><th>tags</th><th class=\"num\">events</th>\
         <th class=\"num\">size</th></tr>",
    );
    for e in &page_.items {
        let group = match (&e.group, &e.trigger_id) {
            (Some(g), Some(t)) => format!("<a href=\"/ui/triggers/{}\">{}</a>", esc(t), esc(g)),
            _ => String::new(),
        };
        let _ = write!(
            b,
            "<tr class=\"snapshot\"><td><a href=\"/ui/snapshots/{id}\">{}</a></td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{group}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            utc(e.frozen_realtime_ns),
            esc(&e.host_id),
            esc(&e.name),
            esc(&e.trigger_source),
            esc(&e.trigger_reason),
            esc(&e.tags.join(", ")),
            e.records,
            size(e.bytes),
            id = esc(&e.snapshot_id),
        );
    }
    b.push_str("</table>");
    if page_.items.is_empty() {
        b.push_str("<p>No snapshot matches.</p>");
    }
    if let Some(c) = &page_.next_cursor {
        let _ = write!(
            b,
            "<p><a id=\"next\" href=\"/?host={}&amp;source={}&amp;reason={}&amp;tag={}&amp;\
             group={}&amp;since={}&amp;cursor={}\">older snapshots</a></p>",
            q(&f.host),
            q(&f.source),
            q(&f.reason),
            q(&f.tag),
            q(&f.group),
            q(&f.since),
            q(c)
        );
    }
    Ok(page("snapshots", &b).into_response())
}

fn kv_table(rows: &[(&str, String)]) -> String {
    let mut b = String::from("<table>");
    for (k, v) in rows {
        let _ = write!(b, "<tr><th>{}</th><td>{}</td></tr>", esc(k), v);
    }
    b.push_str("</table>");
    b
}

fn histogram(title: &str, h: &Value) -> String {
    let Some(buckets) = h["buckets"].as_array().filter(|b| !b.is_empty()) else {
        return String::new();
    };
    let max = buckets
        .iter()
        .filter_map(|b| b["count"].as_u64())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut b = format!(
        "<h3>{}</h3><table class=\"hist\"><tr><th>µs</th><th class=\"num\">count</th>\
         <th></th></tr>",
        esc(title)
    );
    for k in buckets {
        let count = k["count"].as_u64().unwrap_or(0);
        let w = 200 * count / max;
        let _ = write!(
            b,
            "<tr><td>{} – {}</td><td class=\"num\">{count}</td><td><svg width=\"200\" \
             height=\"10\"><rect class=\"bar\" width=\"{w}\" height=\"10\"/></svg></td></tr>",
            k["low"], k["high"]
        );
    }
    b.push_str("</table>");
    b
}

/// Colour of a task in timelines: stable per pid.
fn colour(pid: u32) -> String {
    let h = pid.wrapping_mul(2_654_435_761) % 360;
    format!("hsl({h},55%,55%)")
}

fn timeline_svg(t: &Timeline, width: u32) -> String {
    let row = 18;
    let label = 50;
    let height = row * t.cpus.len() as u32 + 20;
    let scale = f64::from(width) / f64::from(t.columns.max(1));
    let mut b = format!(
        "<svg class=\"timeline\" width=\"{}\" height=\"{height}\" \
         xmlns=\"http://www.w3.org/2000/svg\">",
        width + label
    );
    for (i, cpu) in t.cpus.iter().enumerate() {
        let y = i as u32 * row;
        let _ = write!(
            b,
            "<text x=\"0\" y=\"{}\" font-size=\"11\">cpu {}</text>",
            y + 12,
            cpu.cpu
        );
        for r in &cpu.runs {
            let _ = write!(
                b,
                "<rect x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\">\
                 <title>{} (pid {} tid {})</title></rect>",
                f64::from(label) + f64::from(r.from) * scale,
                (f64::from(r.to - r.from) * scale).max(0.5),
                row - 2,
                colour(r.pid),
                esc(&r.comm),
                r.pid,
                r.tid
            );
        }
    }
    let _ = write!(
        b,
        "<text x=\"{label}\" y=\"{}\" font-size=\"11\">{} window</text></svg>",
        height - 4,
        ms(t.end_ns - t.begin_ns)
    );
    b
}

async fn snapshot(
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
    match load_analysis(&st, &e).await {
        Ok(a) => b.push_str(&summary(&a)),
        Err(err) => {
            tracing::warn!(snapshot = %e.snapshot_id, error = %err, "analysis failed");
            b.push_str("<p>No analysis: the snapshot could not be read.</p>");
        }
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
        b.push_str(&histogram("Syscall latency", &sys["histogram"]));
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

async fn group(
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

fn ms_signed(ns: i64) -> String {
    format!("{:+.3} ms", ns as f64 / 1e6)
}

#[derive(Deserialize)]
struct LoginForm {
    token: Option<String>,
}

async fn login(Query(f): Query<LoginForm>) -> Response {
    match f.token.filter(|t| !t.is_empty()) {
        None => login_page(StatusCode::OK),
        Some(token) => {
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
            let mut resp = (StatusCode::SEE_OTHER, "").into_response();
            resp.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/"));
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(q("a b&c"), "a%20b%26c");
        assert_eq!(utc(1_795_594_724_123_000_000), "2026-11-25 08:18:44.123");
    }
}
