//! What every page shares: the HTML frame and its style, escaping, the error pages, and the
//! formatting of times, sizes and durations.

use std::fmt::Write as _;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::login::login_page;
use crate::error::AppError;

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
pub(super) fn q(s: &str) -> String {
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

pub(super) fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{} — flightrec</title>\
         <style>{STYLE}</style></head><body><h1><a href=\"/\">flightrec</a> · {}</h1>{body}\
         </body></html>",
        esc(title),
        esc(title)
    ))
}

pub(super) fn ui_error(e: AppError) -> Response {
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

pub(super) fn size(b: u64) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

pub(super) fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

pub(super) fn ms_signed(ns: i64) -> String {
    format!("{:+.3} ms", ns as f64 / 1e6)
}

pub(super) fn kv_table(rows: &[(&str, String)]) -> String {
    let mut b = String::from("<table>");
    for (k, v) in rows {
        let _ = write!(b, "<tr><th>{}</th><td>{}</td></tr>", esc(k), v);
    }
    b.push_str("</table>");
    b
}
