//! The snapshot list (`/`): the catalog's newest snapshots, filtered by host, source, reason,
//! tag, group and age, a page at a time.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::page::{esc, page, q, size, ui_error, utc};
use crate::AppState;
use crate::auth::Caller;
use crate::catalog::Query as CatalogQuery;
use crate::error::AppError;
use crate::now_realtime_ns;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ListForm {
    host: String,
    source: String,
    reason: String,
    tag: String,
    group: String,
    since: String,
    cursor: String,
}

pub(super) async fn list(
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
