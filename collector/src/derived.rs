//! What the collector derives from an archived snapshot: analyses, timelines and exports.
//!
//! A snapshot's records compress extremely well when they repeat, so a small upload can stand
//! for a huge decoded stream and a far larger export (tens of kilobytes became gigabytes of
//! trace.dat). Three bounds keep one reader from turning that into disk, CPU or memory:
//!
//! - **Size caps.** An analysis or timeline is refused (413) when the snapshot's decoded record
//!   streams exceed `limits.max_analysis_size`; an export stops as soon as it would write more
//!   than `limits.max_export_size`, leaves nothing behind, and is refused (413). A refusal is
//!   remembered, so asking again costs nothing.
//! - **Single flight.** One computation per snapshot and kind at a time: concurrent requests
//!   for the same derivation wait for the first and then share its cached result (or refusal).
//! - **A bounded cache.** Finished exports stay in `data_dir/cache` while they fit in
//!   `limits.max_cache_size`; the least recently written are deleted first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::Caller;
use crate::browse::{attachment, entry, file_name};
use crate::catalog::Entry;
use crate::error::AppError;

/// Why a derived document (analysis, timeline) of a snapshot could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum DeriveError {
    /// The analyses failed.
    #[error("analysing the snapshot")]
    Analyze(#[from] flightrec_reader::analyze::AnalyzeError),
    /// The snapshot could not be opened.
    #[error("opening the snapshot")]
    Open(#[from] schemas::file::FormatError),
    /// An event could not be read.
    #[error("reading an event")]
    Read(#[from] flightrec_reader::dump::ReadError),
    /// The result could not be turned into JSON.
    #[error("encoding the result")]
    Json(#[from] serde_json::Error),
}

/// The lock of one derivation (`key`), shared by every request for it.
fn flight(st: &AppState, key: &str) -> Arc<tokio::sync::Mutex<()>> {
    st.derive_locks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.to_owned())
        .or_default()
        .clone()
}

/// Forgets the lock of `key` once its result is in the cache: later requests find the result
/// there, and the map does not grow with every snapshot ever derived.
fn land(st: &AppState, key: &str) {
    st.derive_locks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(key);
}

fn refused(st: &AppState, key: &str) -> Option<AppError> {
    st.too_large
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .map(|m| AppError::TooLarge(m.clone()))
}

fn refuse(st: &AppState, key: &str, message: String) -> AppError {
    st.metrics.derived_too_large.fetch_add(1, Ordering::Relaxed);
    st.too_large
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.to_owned(), message.clone());
    AppError::TooLarge(message)
}

/// Copies the blob of `e` to a temporary directory for the library functions that read files.
async fn local_copy(st: &AppState, e: &Entry) -> Result<(tempfile::TempDir, PathBuf), AppError> {
    let dir = tempfile::Builder::new()
        .prefix("fetch-")
        .tempdir_in(st.cache.as_path())
        .map_err(AppError::internal)?;
    let path = dir.path().join(format!("{}.frs", e.snapshot_id));
    st.archive.fetch_to(&e.archive_key, &path).await?;
    Ok((dir, path))
}

/// Writes `bytes` to `path` through a temporary file, 0640 whatever the umask.
async fn write_cache(path: PathBuf, bytes: Vec<u8>) {
    let _ = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let _ = std::fs::remove_file(&tmp);
        crate::private_file(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path)
    })
    .await;
}

/// A derived JSON document of a snapshot, computed once and cached on disk: snapshots never
/// change once archived. Refused when the snapshot decodes to more than
/// `limits.max_analysis_size`.
pub(crate) async fn cached(
    st: &AppState,
    e: &Entry,
    kind: &'static str,
    compute: fn(&Path) -> Result<serde_json::Value, DeriveError>,
) -> Result<serde_json::Value, AppError> {
    let path = st.cache.join(format!("{}.{kind}.json", e.snapshot_id));
    let read = |path: PathBuf| async move {
        let text = tokio::fs::read(&path).await.ok()?;
        serde_json::from_slice::<serde_json::Value>(&text).ok()
    };
    if let Some(v) = read(path.clone()).await {
        return Ok(v);
    }
    let decoded = e.records.saturating_mul(schemas::RECORD_SIZE as u64);
    let limit = st.limits.max_analysis_bytes;
    if decoded > limit {
        st.metrics.derived_too_large.fetch_add(1, Ordering::Relaxed);
        return Err(AppError::TooLarge(format!(
            "this snapshot decodes to {decoded} bytes of records, over this collector's limit \
             of {limit} bytes for an {kind} (limits.max_analysis_size); download it and run \
             `flightrec analyze` locally"
        )));
    }
    let key = format!("{}.{kind}", e.snapshot_id);
    let lock = flight(st, &key);
    let _guard = lock.lock().await;
    // The request we waited for may have computed it.
    if let Some(v) = read(path.clone()).await {
        return Ok(v);
    }
    let (_dir, file) = local_copy(st, e).await?;
    let v = tokio::task::spawn_blocking(move || compute(&file))
        .await?
        .map_err(|e| AppError::internal_chain(&e))?;
    write_cache(path, serde_json::to_vec(&v).expect("serialisable")).await;
    land(st, &key);
    Ok(v)
}

fn compute_analysis(path: &Path) -> Result<serde_json::Value, DeriveError> {
    let opts = flightrec_reader::analyze::Options::default();
    let report = flightrec_reader::analyze::analyze(path, &opts)?;
    Ok(serde_json::to_value(&report)?)
}

/// The analyses of a snapshot (`flightrec analyze --json`).
pub async fn load_analysis(st: &AppState, e: &Entry) -> Result<serde_json::Value, AppError> {
    cached(st, e, "analysis", compute_analysis).await
}

/// File name of a cached export.
pub fn export_file(snapshot_id: &str, ext: &str) -> String {
    format!("export-{snapshot_id}.{ext}")
}

/// Deletes the least recently written exports while the cache holds more than
/// `limits.max_cache_size` of them; `keep` (the one just written) goes last.
fn trim_cache(cache: &Path, max: u64, keep: &Path) -> std::io::Result<()> {
    let mut files = Vec::new();
    for d in std::fs::read_dir(cache)? {
        let d = d?;
        if !d.file_name().to_string_lossy().starts_with("export-") {
            continue;
        }
        let m = d.metadata()?;
        if m.is_file() {
            files.push((d.path() == keep, m.modified()?, m.len(), d.path()));
        }
    }
    let mut total: u64 = files.iter().map(|f| f.2).sum();
    // Oldest first, the kept file after every other.
    files.sort_by_key(|f| (f.0, f.1));
    for (_, _, len, path) in files {
        if total <= max {
            break;
        }
        std::fs::remove_file(&path)?;
        total -= len;
    }
    Ok(())
}

/// Runs (once, whatever the number of requests waiting) the export of `e` into the cache.
async fn compute_export(
    st: &AppState,
    e: &Entry,
    fmt: flightrec_reader::export::Format,
    cached: &Path,
    key: &str,
) -> Result<(), AppError> {
    let (dir, input) = local_copy(st, e).await?;
    let output = dir.path().join("export.out");
    let out2 = output.clone();
    let limit = st.limits.max_export_bytes;
    st.metrics.exports_computed.fetch_add(1, Ordering::Relaxed);
    let res = tokio::task::spawn_blocking(move || {
        flightrec_reader::export::export_limited(&input, fmt, &out2, limit)
    })
    .await?;
    match res {
        Ok(_) => {}
        Err(flightrec_reader::export::ExportError::TooLarge { limit }) => {
            return Err(refuse(
                st,
                key,
                format!(
                    "this export would be larger than this collector's limit of {limit} bytes \
                     (limits.max_export_size); download the snapshot and run `flightrec \
                     export` locally"
                ),
            ));
        }
        Err(err) => return Err(AppError::internal_chain(&err)),
    }
    let (cached, cache, max) = (
        cached.to_owned(),
        st.cache.as_ref().clone(),
        st.limits.max_cache_bytes,
    );
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o640))?;
        std::fs::rename(&output, &cached)?;
        trim_cache(&cache, max, &cached)
    })
    .await?
    .map_err(AppError::internal)?;
    Ok(())
}

/// `GET /v1/snapshots/ID/export/FORMAT`.
pub(crate) async fn export(
    State(st): State<AppState>,
    caller: Caller,
    UrlPath((id, format)): UrlPath<(String, String)>,
) -> Result<Response, AppError> {
    caller.require_read()?;
    let (fmt, ext) = match format.as_str() {
        "perfetto" => (flightrec_reader::export::Format::Perfetto, "perfetto-trace"),
        "tracedat" => (flightrec_reader::export::Format::Tracedat, "dat"),
        _ => {
            return Err(AppError::BadRequest(
                "export formats served: perfetto, tracedat (ctf is a directory: use \
                 `flightrec export` on the download)"
                    .into(),
            ));
        }
    };
    let e = entry(&st, &id).await?;
    let key = format!("{}.{ext}", e.snapshot_id);
    let path = st.cache.join(export_file(&e.snapshot_id, ext));
    if let Some(err) = refused(&st, &key) {
        return Err(err);
    }
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => {
            let lock = flight(&st, &key);
            let _guard = lock.lock().await;
            if let Some(err) = refused(&st, &key) {
                return Err(err);
            }
            if tokio::fs::metadata(&path).await.is_err() {
                compute_export(&st, &e, fmt, &path, &key).await?;
            }
            // Opened before the lock goes: a trim by another export cannot take it away.
            let f = tokio::fs::File::open(&path)
                .await
                .map_err(AppError::internal)?;
            land(&st, &key);
            f
        }
    };
    let size = file.metadata().await.map_err(AppError::internal)?.len();
    let stream = tokio_util::io::ReaderStream::new(file);
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    let base = file_name(&e);
    h.insert(
        header::CONTENT_DISPOSITION,
        attachment(&format!("{}.{ext}", base.trim_end_matches(".frs"))),
    );
    Ok(resp)
}
