//! Resumable, idempotent, verified snapshot upload.
//!
//! # Wire protocol
//!
//! Every request carries `Authorization: Bearer TOKEN` (a recorder's write token, bound to the
//! host id its snapshots must carry). A snapshot id names its upload session, so retrying any
//! step is harmless.
//!
//! ```text
//! POST /v1/uploads {"snapshot_id": ID, "size": BYTES, "sha256": HEX}
//!   200 {"status":"open","offset":N,"max_chunk":M}   resume at N (0 for a new upload)
//!   200 {"status":"complete","offset":BYTES}         already archived: nothing to send
//!   409 a different file with this id is archived; 413 over limits.max_snapshot_size
//!   403 the id belongs to another host's session or snapshot
//!   503 too many uploads open, in all or for this host
//! HEAD|GET /v1/uploads/ID
//!   200, header Upload-Offset: N (GET: {"status","offset","size"}); 404 no such session
//! PATCH /v1/uploads/ID   headers Upload-Offset: N, Chunk-Crc32: 8 hex digits (CRC-32 IEEE of
//!                        the body); body: the file's bytes N..N+len, len <= max_chunk
//!   200 {"offset":N+len}; 409 {"offset":CURRENT} wrong offset (resume there);
//!   422 checksum mismatch (chunk dropped, resend it); 413 past the announced size
//! POST /v1/uploads/ID/complete
//!   200 {"status":"complete","entry":{...}}  only once the file is verified, durable in the
//!                                            archive and catalogued
//!   409 not all bytes received; 422 verification failed: the session and its bytes are
//!   discarded, nothing is archived, and the error says why
//! ```
//!
//! Verification before the acknowledgement: the size and SHA-256 of the whole file, the file
//! structure (`schemas::file::Snapshot::read_index`: magic, format version, section index,
//! metadata CRC), the manifest's snapshot id and host id, the declared decoded size against
//! `limits.max_uncompressed_size` (a decompression bomb is refused before inflating anything),
//! and a full decode of every record stream (zstd checksums, exact record counts) in which
//! every record must decode to a known event kind (kind 0 or an unknown kind is refused, so
//! analysis and export never meet a record they cannot read).
//!
//! Every call is checked against the token's host: a recorder token announces, resumes,
//! writes, completes and reads back only sessions and entries of its own host id, and holds
//! at most `limits.max_open_uploads_per_host` sessions; a session that received nothing for
//! `limits.upload_expiry` is abandoned by retention.
//!
//! Staging bytes are written without a sync per chunk: the whole-file digest at the end catches
//! anything a crash lost, and `complete` syncs before it verifies.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use schemas::file::{FormatError, Snapshot};
use schemas::manifest::Manifest;
use schemas::wire::{ChunkAck, Completed, UploadStage};
use sha2::Digest;

use crate::archive::Archive;
use crate::auth::Caller;
use crate::catalog::{Entry, Session};
use crate::config::Limits;
use crate::error::AppError;
use crate::{AppState, now_realtime_ns};

pub use schemas::wire::{OpenRequest, UploadState};

/// Routes of the upload protocol.
pub fn routes(state: &AppState) -> Router<AppState> {
    let chunk_limit = state.limits.max_chunk_bytes as usize;
    Router::new()
        .route("/v1/uploads", post(open))
        .route("/v1/uploads/{id}", get(state_of).head(state_of))
        .route(
            "/v1/uploads/{id}",
            patch(chunk).layer(DefaultBodyLimit::max(chunk_limit)),
        )
        .route("/v1/uploads/{id}/complete", post(complete))
}

/// Snapshot ids are hex (32 digits from the recorder); anything else could reach a path.
pub fn valid_id(id: &str) -> bool {
    (8..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_id(id: &str) -> Result<(), AppError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(AppError::BadRequest(
            "snapshot ids are 8 to 64 hex digits".into(),
        ))
    }
}

/// The answer to a chunk sent at `at` while the upload stands at `offset`: 409 with the
/// offset to resume from.
fn wrong_offset(st: &AppState, at: u64, offset: u64) -> AppError {
    st.metrics.reject("offset");
    AppError::Conflict {
        message: format!("chunk at offset {at}, but the upload stands at {offset}"),
        offset: Some(offset),
    }
}

/// With a catalog that keeps upload bytes ([`crate::catalog::Catalog::shares_staging`]):
/// if the staging file here holds fewer than `want` bytes (another replica received the
/// rest), rebuilds it from the catalog. Bytes at an offset are the same whoever received them
/// (one file, each chunk checksummed), so the file is rewritten from the start.
/// Returns whether the file now holds `want` bytes (always true for a catalog of one process).
async fn sync_staging(st: &AppState, id: &str, path: &Path, want: u64) -> Result<bool, AppError> {
    if !st.catalog.shares_staging() || want == 0 {
        return Ok(true);
    }
    let on_disk = tokio::fs::metadata(path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if on_disk >= want {
        return Ok(true);
    }
    let (id2, p) = (id.to_owned(), path.to_owned());
    let got = st
        .with_catalog(move |c| {
            let mut f = open_staging(&p)
                .map_err(|e| crate::catalog::CatalogError::Value(format!("staging file: {e}")))?;
            f.set_len(0)
                .map_err(|e| crate::catalog::CatalogError::Value(format!("staging file: {e}")))?;
            c.read_staged(&id2, want, &mut |b| f.write_all(b))
        })
        .await?;
    tracing::info!(snapshot = %id, bytes = got, "upload bytes fetched from the shared catalog");
    Ok(got >= want)
}

fn staging_path(st: &AppState, id: &str) -> PathBuf {
    st.staging.join(format!("{id}.part"))
}

fn lock_for(st: &AppState, id: &str) -> Arc<tokio::sync::Mutex<()>> {
    st.upload_locks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(id.to_owned())
        .or_default()
        .clone()
}

fn unlock_entry(st: &AppState, id: &str) {
    st.upload_locks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
}

async fn open(
    State(st): State<AppState>,
    caller: Caller,
    Json(req): Json<OpenRequest>,
) -> Result<Json<UploadState>, AppError> {
    check_id(&req.snapshot_id)?;
    if caller == Caller::Reader {
        return Err(AppError::Forbidden("upload"));
    }
    if req.sha256.len() != 64 || !req.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::BadRequest("sha256 must be 64 hex digits".into()));
    }
    let sha = req.sha256.to_ascii_lowercase();
    if req.size > st.limits.max_snapshot_bytes {
        st.metrics.reject("too_large");
        return Err(AppError::TooLarge(format!(
            "snapshot of {} bytes is over the collector's limit of {} bytes",
            req.size, st.limits.max_snapshot_bytes
        )));
    }
    if req.size == 0 {
        return Err(AppError::BadRequest(
            "an empty file is not a snapshot".into(),
        ));
    }
    let id = req.snapshot_id.clone();
    let lock = lock_for(&st, &id);
    let _guard = lock.lock().await;
    let id2 = id.clone();
    if let Some(e) = st.with_catalog(move |c| c.get(&id2)).await? {
        // Another host's snapshot is none of this token's business, not even its digest.
        caller.require_host(&e.host_id)?;
        if e.sha256 == sha && e.bytes == req.size {
            st.metrics
                .uploads_duplicate
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(Json(UploadState {
                status: UploadStage::Complete,
                offset: e.bytes,
                size: e.bytes,
                max_chunk: st.limits.max_chunk_bytes,
            }));
        }
        return Err(AppError::Conflict {
            message: "a different file with this snapshot id is already archived".into(),
            offset: None,
        });
    }
    // Counting and opening under one lock: two announcements at once cannot both take the
    // last place of a quota.
    let _gate = st.session_gate.lock().await;
    let open_now = st.with_catalog(|c| c.sessions()).await?;
    let existing = open_now.iter().find(|s| s.snapshot_id == id).cloned();
    if let Some(s) = &existing {
        // Before anything is discarded: a re-announcement must come from the session's host.
        caller.require_host(&s.host_id)?;
    }
    let host = caller.host().unwrap_or("").to_owned();
    if existing.is_none() && check_quota(&st, &open_now, &host).is_err() {
        // Sessions past their expiry hold places until retention runs: free them now.
        crate::retention::expire_uploads(&st).await?;
        let open_now = st.with_catalog(|c| c.sessions()).await?;
        check_quota(&st, &open_now, &host)?;
    }
    let path = staging_path(&st, &id);
    let mut session = match existing {
        // Same file announced again: resume.
        Some(s) if s.size == req.size && s.sha256 == sha => s,
        other => {
            if other.is_some() {
                // The recorder now announces another file under this id: start over.
                let id2 = id.clone();
                st.with_catalog(move |c| c.close_session(&id2)).await?;
            }
            let _ = tokio::fs::remove_file(&path).await;
            let s = Session {
                snapshot_id: id.clone(),
                host_id: host,
                size: req.size,
                sha256: sha,
                offset: 0,
                created_realtime_ns: now_realtime_ns(),
            };
            st.with_catalog(move |c| c.open_session(&s)).await?
        }
    };
    if let Some(h) = caller.host()
        && session.host_id != h
    {
        return Err(AppError::Forbidden("resume another host's upload"));
    }
    // Bytes another replica received are in the catalog: copy them here first.
    // (Fewer there than the offset says: the check below trims the offset to them.)
    sync_staging(&st, &id, &path, session.offset).await?;
    // After a crash the staging file may hold less than the catalog says (bytes never reached
    // the disk) or more (written, offset not yet recorded): trust the smaller.
    let on_disk = tokio::fs::metadata(&path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if on_disk != session.offset {
        let offset = on_disk.min(session.offset);
        let p = path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            open_staging(&p)?.set_len(offset)
        })
        .await?
        .map_err(AppError::internal)?;
        let id2 = id.clone();
        st.with_catalog(move |c| c.set_offset(&id2, offset)).await?;
        session.offset = offset;
    }
    Ok(Json(UploadState {
        status: UploadStage::Open,
        offset: session.offset,
        size: session.size,
        max_chunk: st.limits.max_chunk_bytes,
    }))
}

/// Refuses a new session past the global limit or the host's share of it.
fn check_quota(st: &AppState, open_now: &[Session], host: &str) -> Result<(), AppError> {
    if open_now.len() >= st.limits.max_open_uploads as usize {
        st.metrics.reject("too_many_uploads");
        return Err(AppError::Unavailable(
            "too many uploads in progress; retry later".into(),
        ));
    }
    // Admins (host "") are trusted with the whole global limit; recorder tokens get a share.
    let mine = open_now.iter().filter(|s| s.host_id == host).count();
    if !host.is_empty() && mine >= st.limits.max_open_uploads_per_host as usize {
        st.metrics.reject("host_quota");
        return Err(AppError::Unavailable(format!(
            "this host already has {mine} uploads in progress, its limit; finish one or let \
             it expire, then retry"
        )));
    }
    Ok(())
}

/// Opens (creating it 0640 whatever the umask) a staging file for writing.
fn open_staging(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o640)
        .open(path)
}

async fn state_of(
    State(st): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, AppError> {
    check_id(&id)?;
    let s = session_for(&st, &caller, &id).await?;
    let mut resp = Json(UploadState {
        status: UploadStage::Open,
        offset: s.offset,
        size: s.size,
        max_chunk: st.limits.max_chunk_bytes,
    })
    .into_response();
    resp.headers_mut()
        .insert("upload-offset", HeaderValue::from(s.offset));
    resp.headers_mut()
        .insert("upload-length", HeaderValue::from(s.size));
    Ok(resp)
}

fn header_u64(h: &HeaderMap, name: &str) -> Result<u64, AppError> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| AppError::BadRequest(format!("header {name} must be a number")))
}

async fn session_for(st: &AppState, caller: &Caller, id: &str) -> Result<Session, AppError> {
    let id2 = id.to_owned();
    if *caller == Caller::Reader {
        return Err(AppError::Forbidden("upload"));
    }
    let Some(s) = st.with_catalog(move |c| c.session(&id2)).await? else {
        return Err(AppError::NotFound("upload session"));
    };
    caller.require_host(&s.host_id)?;
    Ok(s)
}

async fn chunk(
    State(st): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    check_id(&id)?;
    let at = header_u64(&headers, "upload-offset")?;
    let crc = headers
        .get("chunk-crc32")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u32::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| AppError::BadRequest("header Chunk-Crc32 must be 8 hex digits".into()))?;
    let lock = lock_for(&st, &id);
    let _guard = lock.lock().await;
    let s = session_for(&st, &caller, &id).await?;
    if at != s.offset {
        return Err(wrong_offset(&st, at, s.offset));
    }
    let len = body.len() as u64;
    if at + len > s.size {
        st.metrics.reject("past_end");
        return Err(AppError::TooLarge(format!(
            "chunk ends at {} but the snapshot was announced as {} bytes",
            at + len,
            s.size
        )));
    }
    if crc32fast::hash(&body) != crc {
        st.metrics.reject("chunk_checksum");
        return Err(AppError::Rejected(
            "chunk checksum mismatch: the chunk was damaged in transit; send it again".into(),
        ));
    }
    let path = staging_path(&st, &id);
    if !sync_staging(&st, &id, &path, at).await? {
        // The catalog holds fewer bytes than its offset says: resume from what is there
        // (the next announcement trims the offset to it).
        st.metrics.reject("offset");
        return Err(AppError::Conflict {
            message: "the upload's staged bytes are incomplete; announce it again".into(),
            offset: None,
        });
    }
    let body2 = body.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut f = open_staging(&path)?;
        // Drops bytes past the recorded offset that a crash may have left.
        f.set_len(at)?;
        f.seek(SeekFrom::Start(at))?;
        f.write_all(&body2)
    })
    .await?
    .map_err(AppError::internal)?;
    let new = at + len;
    let id2 = id.clone();
    // With a shared catalog the bytes go there too, so any replica can resume the upload.
    let moved = st
        .with_catalog(move |c| c.stage_chunk(&id2, at, &body))
        .await?;
    if !moved {
        let s = session_for(&st, &caller, &id).await?;
        return Err(wrong_offset(&st, at, s.offset));
    }
    st.metrics
        .chunks_received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    st.metrics
        .received_bytes
        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    let mut resp = Json(ChunkAck { offset: new }).into_response();
    resp.headers_mut()
        .insert("upload-offset", HeaderValue::from(new));
    Ok(resp)
}

/// Why a complete upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The staging file is not the announced size.
    #[error("received {got} bytes but {want} were announced")]
    Size {
        /// Bytes held.
        got: u64,
        /// Bytes announced.
        want: u64,
    },
    /// The whole-file digest does not match.
    #[error("SHA-256 of the received file does not match the announced one")]
    Digest,
    /// The file is of a format version this collector cannot read.
    #[error("unsupported snapshot format version {0}")]
    Version(u32),
    /// The file ends before a structure it announces.
    #[error("not a valid snapshot: it is truncated ({0} missing)")]
    Truncated(&'static str),
    /// The file is not a valid snapshot.
    #[error("not a valid snapshot: {0}")]
    Format(String),
    /// The manifest names another snapshot.
    #[error("the file's manifest is snapshot {0}, not the one uploaded")]
    WrongId(String),
    /// The manifest names another host than the token's.
    #[error("the snapshot's host id {0:?} is not the one this token writes for")]
    WrongHost(String),
    /// Decoding would exceed the limit.
    #[error(
        "record streams declare {declared} bytes decoded, over the limit of {limit} bytes \
         (decompression bomb?)"
    )]
    Bomb {
        /// Declared decoded size.
        declared: u64,
        /// The limit.
        limit: u64,
    },
    /// A record is of no event kind this collector knows (analysis and export could not read
    /// it).
    #[error("record {index} of the stream of CPU {cpu} has kind {kind}, which is no known event")]
    UnknownKind {
        /// CPU of the stream.
        cpu: u32,
        /// Index of the record in its stream, from 0.
        index: u64,
        /// The kind found.
        kind: u16,
    },
    /// Reading the staging file failed (our side).
    #[error("reading the staging file: {0}")]
    Io(#[from] std::io::Error),
}

impl Rejection {
    /// Label for `collector_uploads_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Size { .. } => "size",
            Rejection::Truncated(_) => "truncated",
            Rejection::Digest => "digest",
            Rejection::Version(_) => "version",
            Rejection::Format(_) => "corrupt",
            Rejection::WrongId(_) => "wrong_id",
            Rejection::WrongHost(_) => "wrong_host",
            Rejection::Bomb { .. } => "decompression_bomb",
            Rejection::UnknownKind { .. } => "unknown_kind",
            Rejection::Io(_) => "io",
        }
    }
}

/// A file that passed verification.
#[derive(Debug)]
pub struct Verified {
    /// Its manifest.
    pub manifest: Manifest,
    /// Records decoded.
    pub records: u64,
}

fn format_rejection(e: FormatError) -> Rejection {
    match e {
        FormatError::UnsupportedVersion(v) => Rejection::Version(v),
        FormatError::Truncated(what) => Rejection::Truncated(what),
        FormatError::Io(io) => Rejection::Io(io),
        other => Rejection::Format(other.to_string()),
    }
}

/// Verifies the staged file at `path` against its session (see the module docs). Hashing runs
/// on a second thread while the streams decode.
pub fn verify(path: &Path, session: &Session, limits: &Limits) -> Result<Verified, Rejection> {
    let file = std::fs::File::open(path)?;
    file.sync_all()?;
    let got = file.metadata()?.len();
    if got != session.size {
        return Err(Rejection::Size {
            got,
            want: session.size,
        });
    }
    std::thread::scope(|scope| {
        let hasher = scope.spawn(|| -> std::io::Result<String> {
            let mut f = std::fs::File::open(path)?;
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(hex(&h.finalize()))
        });
        let decoded = decode_all(path, session, limits);
        let digest = hasher
            .join()
            .map_err(|_| Rejection::Io(std::io::Error::other("hash thread panicked")))??;
        if digest != session.sha256 {
            return Err(Rejection::Digest);
        }
        decoded
    })
}

fn decode_all(path: &Path, session: &Session, limits: &Limits) -> Result<Verified, Rejection> {
    let mut f = std::io::BufReader::new(std::fs::File::open(path)?);
    let snap = Snapshot::read_index(&mut f).map_err(format_rejection)?;
    if snap.manifest.snapshot_id != session.snapshot_id {
        return Err(Rejection::WrongId(snap.manifest.snapshot_id));
    }
    if !session.host_id.is_empty() && snap.manifest.host.host_id != session.host_id {
        return Err(Rejection::WrongHost(snap.manifest.host.host_id));
    }
    let declared = snap
        .streams
        .iter()
        // What decoding inflates: the records, or a packet stream's packets when larger.
        .map(|s| {
            s.record_count
                .saturating_mul(schemas::RECORD_SIZE as u64)
                .max(s.uncompressed_len)
        })
        .fold(0u64, u64::saturating_add);
    if declared > limits.max_uncompressed_bytes {
        return Err(Rejection::Bomb {
            declared,
            limit: limits.max_uncompressed_bytes,
        });
    }
    let mut records = 0u64;
    for info in &snap.streams {
        let reader = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(path)?);
        for (index, rec) in Snapshot::stream(info, reader)
            .map_err(format_rejection)?
            .enumerate()
        {
            let rec = rec.map_err(format_rejection)?;
            if schemas::event::Event::decode(&rec).is_err() {
                return Err(Rejection::UnknownKind {
                    cpu: info.cpu,
                    index: index as u64,
                    kind: rec.kind,
                });
            }
            records += 1;
        }
    }
    Ok(Verified {
        manifest: snap.manifest,
        records,
    })
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The catalogue's tags of a trigger's `tags` field: a list of words as given (group
/// triggers, tools), or the hook's map of `key: value` as `key=value` words, so `?tag=` and
/// the Tags column work for both.
fn tag_list(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(text) => format!("{k}={text}"),
                None => format!("{k}={v}"),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The catalog entry of a verified snapshot.
pub fn entry_for(manifest: &Manifest, records: u64, bytes: u64, sha256: &str) -> Entry {
    let fields = &manifest.trigger.fields;
    let text = |k: &str| fields.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let num = |k: &str| fields.get(k).and_then(|v| v.as_u64());
    let tags = fields.get("tags").map(tag_list).unwrap_or_default();
    let host_clock_offset_ns = match (num("received_realtime_ns"), num("sent_realtime_ns")) {
        (Some(r), Some(s)) => Some(r as i64 - s as i64),
        _ => None,
    };
    let cov = &manifest.coverage;
    Entry {
        snapshot_id: manifest.snapshot_id.clone(),
        name: manifest.name.clone(),
        host_id: manifest.host.host_id.clone(),
        hostname: manifest.host.hostname.clone(),
        kernel_release: manifest.host.kernel_release.clone(),
        frozen_realtime_ns: manifest.frozen_realtime_ns,
        frozen_monotonic_ns: manifest.frozen_monotonic_ns,
        trigger_source: manifest.trigger.source.clone(),
        trigger_reason: manifest.trigger.reason.clone(),
        trigger_id: text("trigger_id"),
        group: text("group"),
        tags,
        ncpu: manifest.host.ncpu,
        records,
        overwritten: cov.iter().map(|c| c.records_overwritten).sum(),
        lost: cov.iter().map(|c| c.records_lost).sum(),
        oldest_ns: cov.iter().filter_map(|c| c.oldest_ts_ns).min().unwrap_or(0),
        newest_ns: cov.iter().filter_map(|c| c.newest_ts_ns).max().unwrap_or(0),
        realtime_minus_monotonic_ns: manifest.clocks.realtime_minus_monotonic_ns,
        clock_uncertainty_ns: manifest.clocks.uncertainty_ns,
        host_clock_offset_ns,
        bytes,
        sha256: sha256.to_owned(),
        archive_key: Archive::key(&manifest.snapshot_id),
        received_realtime_ns: now_realtime_ns(),
    }
}

async fn complete(
    State(st): State<AppState>,
    caller: Caller,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, AppError> {
    check_id(&id)?;
    let lock = lock_for(&st, &id);
    let _guard = lock.lock().await;
    let id2 = id.clone();
    if let Some(e) = st.with_catalog(move |c| c.get(&id2)).await? {
        // A retry after an acknowledgement the recorder did not see; only its own host (or
        // an admin) may read the entry this way.
        caller.require_host(&e.host_id)?;
        return Ok(Json(Completed {
            status: UploadStage::Complete,
            entry: e,
        })
        .into_response());
    }
    let s = session_for(&st, &caller, &id).await?;
    if s.offset != s.size {
        return Err(AppError::Conflict {
            message: format!("only {} of {} bytes received", s.offset, s.size),
            offset: Some(s.offset),
        });
    }
    let path = staging_path(&st, &id);
    if !sync_staging(&st, &id, &path, s.size).await? {
        return Err(AppError::Conflict {
            message: "the upload's staged bytes are incomplete; announce it again".into(),
            offset: None,
        });
    }
    let (p, s2, limits) = (path.clone(), s.clone(), st.limits);
    let verified = tokio::task::spawn_blocking(move || verify(&p, &s2, &limits)).await?;
    let verified = match verified {
        Ok(v) => v,
        Err(Rejection::Io(e)) => return Err(AppError::internal(e)),
        Err(r) => {
            st.metrics.reject(r.reason());
            tracing::warn!(snapshot = %id, host = %s.host_id, reason = %r, "upload rejected");
            let id2 = id.clone();
            st.with_catalog(move |c| c.close_session(&id2)).await?;
            let _ = tokio::fs::remove_file(&path).await;
            unlock_entry(&st, &id);
            return Err(AppError::Rejected(format!("snapshot rejected: {r}")));
        }
    };
    let entry = entry_for(&verified.manifest, verified.records, s.size, &s.sha256);
    st.archive.adopt_file(&entry.archive_key, &path).await?;
    let e2 = entry.clone();
    st.with_catalog(move |c| c.insert(&e2)).await?;
    st.metrics
        .uploads_completed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        snapshot = %id, host = %entry.host_id, bytes = entry.bytes, records = entry.records,
        "snapshot archived"
    );
    let id2 = id.clone();
    st.with_catalog(move |c| c.close_session(&id2)).await?;
    let _ = tokio::fs::remove_file(&path).await;
    unlock_entry(&st, &id);
    Ok((
        StatusCode::OK,
        Json(Completed {
            status: UploadStage::Complete,
            entry,
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tag_tests {
    use super::tag_list;

    #[test]
    fn hook_tag_maps_and_tag_lists_are_both_catalogued() {
        let hook = serde_json::json!({"service": "shop", "tier": "web", "n": 3});
        assert_eq!(tag_list(&hook), ["service=shop", "tier=web", "n=3"]);
        let list = serde_json::json!(["slow", "checkout", 7]);
        assert_eq!(tag_list(&list), ["slow", "checkout"]);
        assert!(tag_list(&serde_json::json!("slow")).is_empty());
    }
}
