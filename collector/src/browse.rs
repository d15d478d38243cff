//! The browse API (reader tokens).
//!
//! ```text
//! GET /v1/snapshots?host=&from_ns=&to_ns=&source=&reason=&tag=&group=&trigger_id=&limit=&cursor=
//!     {"items":[Entry...],"next_cursor":C|null}, newest first
//! GET /v1/snapshots/ID                 the catalog entry
//! GET /v1/snapshots/ID/manifest        the manifest, as in the file
//! GET /v1/snapshots/ID/analysis        `flightrec analyze --json` (docs/analyses.md)
//! GET /v1/snapshots/ID/timeline        who ran on each CPU, in columns (for the web UI)
//! GET /v1/snapshots/ID/download        the .frs file
//! GET /v1/snapshots/ID/export/FORMAT   perfetto or tracedat, as `flightrec export` writes it
//! ```
//!
//! Analyses, timelines and exports are derived once per snapshot and cached, under the size
//! limits of [`crate::derived`] (413 beyond them).

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::catalog::{Entry, Page};
use crate::error::AppError;
use crate::ingest::valid_id;

use crate::derived::cached;
pub use crate::derived::{DeriveError, load_analysis};

/// Routes of the browse API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/snapshots", get(list))
        .route("/v1/snapshots/{id}", get(one))
        .route("/v1/snapshots/{id}/manifest", get(manifest))
        .route("/v1/snapshots/{id}/analysis", get(analysis))
        .route("/v1/snapshots/{id}/timeline", get(timeline))
        .route("/v1/snapshots/{id}/download", get(download))
        .route(
            "/v1/snapshots/{id}/export/{format}",
            get(crate::derived::export),
        )
}

async fn list(
    State(st): State<AppState>,
    caller: Caller,
    Query(mut q): Query<crate::catalog::Query>,
) -> Result<Json<Page>, AppError> {
    caller.require_read()?;
    // Empty form fields mean "any".
    for f in [
        &mut q.host,
        &mut q.source,
        &mut q.reason,
        &mut q.tag,
        &mut q.group,
        &mut q.trigger_id,
        &mut q.cursor,
    ] {
        if f.as_deref().is_some_and(str::is_empty) {
            *f = None;
        }
    }
    if q.cursor
        .as_deref()
        .is_some_and(|c| !crate::catalog::valid_cursor(c))
    {
        return Err(AppError::BadRequest("bad cursor".into()));
    }
    let page = st.with_catalog(move |c| c.list(&q)).await?;
    Ok(Json(page))
}

/// The catalog entry of `id`, or 404.
pub async fn entry(st: &AppState, id: &str) -> Result<Entry, AppError> {
    if !valid_id(id) {
        return Err(AppError::NotFound("snapshot"));
    }
    let id = id.to_owned();
    st.with_catalog(move |c| c.get(&id))
        .await?
        .ok_or(AppError::NotFound("snapshot"))
}

async fn one(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Entry>, AppError> {
    caller.require_read()?;
    Ok(Json(entry(&st, &id).await?))
}

/// The manifest of an archived snapshot, read from the head of the blob.
pub async fn load_manifest(st: &AppState, e: &Entry) -> Result<serde_json::Value, AppError> {
    let head = st.archive.get_range(&e.archive_key, 0..24).await?;
    let len = u64::from_le_bytes(head[16..24].try_into().expect("8 bytes"));
    if len > schemas::file::MAX_MANIFEST_LEN {
        return Err(AppError::internal("archived manifest over the limit"));
    }
    let json = st.archive.get_range(&e.archive_key, 24..24 + len).await?;
    serde_json::from_slice(&json).map_err(AppError::internal)
}

async fn manifest(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    caller.require_read()?;
    let e = entry(&st, &id).await?;
    Ok(Json(load_manifest(&st, &e).await?))
}

async fn analysis(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    caller.require_read()?;
    let e = entry(&st, &id).await?;
    Ok(Json(load_analysis(&st, &e).await?))
}

/// Columns of a timeline: enough for a page, few enough to stay small.
pub const TIMELINE_COLUMNS: u32 = 400;

/// Who ran on each CPU: the window cut into columns, each naming the task that ran longest in
/// it (idle columns omitted), run-length encoded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Window start, `CLOCK_MONOTONIC` ns.
    pub begin_ns: u64,
    /// Window end.
    pub end_ns: u64,
    /// Number of columns.
    pub columns: u32,
    /// Per CPU.
    pub cpus: Vec<CpuTimeline>,
}

/// One CPU's row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuTimeline {
    /// CPU.
    pub cpu: u32,
    /// Runs of columns with the same task.
    pub runs: Vec<Run>,
}

/// Columns `from..to` where one task ran the most.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// First column.
    pub from: u32,
    /// One past the last column.
    pub to: u32,
    /// Thread id.
    pub tid: u32,
    /// Process id.
    pub pid: u32,
    /// Thread name.
    pub comm: String,
}

/// Computes the timeline of the snapshot at `path` from its `sched_switch` events.
pub fn compute_timeline(path: &std::path::Path) -> Result<Timeline, DeriveError> {
    use std::collections::{BTreeMap, HashMap};
    let (manifest, events) = flightrec_reader::dump::open(path)?;
    let begin = manifest
        .coverage
        .iter()
        .filter_map(|c| c.oldest_ts_ns)
        .min()
        .unwrap_or(0);
    let end = manifest
        .coverage
        .iter()
        .filter_map(|c| c.newest_ts_ns)
        .max()
        .unwrap_or(begin)
        .max(begin + 1);
    let cols = TIMELINE_COLUMNS;
    let width = (end - begin).div_ceil(u64::from(cols)).max(1);
    // Per CPU: the running task and since when; time per (column, tid).
    type Task = (u32, u32, String);
    let mut running: BTreeMap<u32, (Task, u64)> = BTreeMap::new();
    // Per CPU, per column: ns run by each tid.
    type Columns = Vec<HashMap<u32, (u64, Task)>>;
    let mut time: BTreeMap<u32, Columns> = BTreeMap::new();
    let mut credit = |cpu: u32, task: &Task, from: u64, to: u64| {
        if task.0 == 0 || to <= from {
            return; // idle
        }
        let row = time
            .entry(cpu)
            .or_insert_with(|| vec![HashMap::new(); cols as usize]);
        let mut t = from;
        while t < to {
            let col = ((t - begin) / width).min(u64::from(cols) - 1);
            let col_end = (begin + (col + 1) * width).min(to);
            let slot = row[col as usize].entry(task.0).or_insert((0, task.clone()));
            slot.0 += col_end.max(t + 1) - t;
            t = col_end.max(t + 1);
        }
    };
    for ev in events {
        let ev = ev?;
        if let schemas::event::EventData::SchedSwitch(s) = &ev.data {
            let prev: Task = (ev.tid, ev.pid, schemas::cstr_lossy(&s.prev_comm));
            let since = running.get(&ev.cpu).map(|(_, t)| *t).unwrap_or_else(|| {
                manifest
                    .coverage
                    .iter()
                    .find(|c| c.cpu == ev.cpu)
                    .and_then(|c| c.oldest_ts_ns)
                    .unwrap_or(ev.ts_ns)
            });
            credit(ev.cpu, &prev, since, ev.ts_ns);
            let next: Task = (s.next_tid, s.next_pid, schemas::cstr_lossy(&s.next_comm));
            running.insert(ev.cpu, (next, ev.ts_ns));
        }
    }
    for (cpu, (task, since)) in &running {
        let last = manifest
            .coverage
            .iter()
            .find(|c| c.cpu == *cpu)
            .and_then(|c| c.newest_ts_ns)
            .unwrap_or(*since);
        credit(*cpu, task, *since, last);
    }
    let cpus = time
        .into_iter()
        .map(|(cpu, row)| {
            let mut runs: Vec<Run> = Vec::new();
            for (col, slots) in row.iter().enumerate() {
                let Some((_, (_, task))) = slots.iter().max_by_key(|(tid, (ns, _))| (*ns, **tid))
                else {
                    continue;
                };
                let col = col as u32;
                match runs.last_mut() {
                    Some(r) if r.to == col && r.tid == task.0 => r.to = col + 1,
                    _ => runs.push(Run {
                        from: col,
                        to: col + 1,
                        tid: task.0,
                        pid: task.1,
                        comm: task.2.clone(),
                    }),
                }
            }
            CpuTimeline { cpu, runs }
        })
        .collect();
    Ok(Timeline {
        begin_ns: begin,
        end_ns: end,
        columns: cols,
        cpus,
    })
}

/// The timeline of a snapshot (cached).
pub async fn load_timeline(st: &AppState, e: &Entry) -> Result<Timeline, AppError> {
    let v = cached(st, e, "timeline", |p| {
        Ok(serde_json::to_value(compute_timeline(p)?)?)
    })
    .await?;
    serde_json::from_value(v).map_err(AppError::internal)
}

async fn timeline(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Timeline>, AppError> {
    caller.require_read()?;
    let e = entry(&st, &id).await?;
    Ok(Json(load_timeline(&st, &e).await?))
}

/// A `Content-Disposition` naming `name`.
pub(crate) fn attachment(name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// File name of a download: the recorder's naming, `NAME-ID8.frs`.
pub fn file_name(e: &Entry) -> String {
    let name: String = e
        .name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect();
    format!(
        "{}-{}.frs",
        if name.is_empty() { "snapshot" } else { &name },
        &e.snapshot_id[..8.min(e.snapshot_id.len())]
    )
}

async fn download(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    caller.require_read()?;
    let e = entry(&st, &id).await?;
    let (size, stream) = st.archive.get_stream(&e.archive_key).await?;
    let body = Body::from_stream(stream.map(|r| r.map_err(std::io::Error::other)));
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(header::CONTENT_DISPOSITION, attachment(&file_name(&e)));
    Ok(resp)
}
