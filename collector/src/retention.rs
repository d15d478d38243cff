//! Retention: snapshots frozen longer ago than `retention.max_age` are deleted, then the oldest
//! while the archive holds more than `retention.max_total_size`. The catalog entry goes first,
//! so a listed snapshot always has its blob; a crash in between leaves an unlisted blob, never
//! a dangling entry.

use std::sync::atomic::Ordering;

use crate::catalog::Entry;
use crate::error::AppError;
use crate::{AppState, now_realtime_ns};

/// What one pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Deleted for their age.
    pub expired: u64,
    /// Deleted to get under the size cap.
    pub over_size: u64,
    /// Upload sessions that received nothing for `limits.upload_expiry`.
    pub abandoned_uploads: u64,
}

async fn delete(st: &AppState, e: Entry) -> Result<(), AppError> {
    let id = e.snapshot_id.clone();
    if st.with_catalog(move |c| c.remove(&id)).await? {
        st.archive.delete(&e.archive_key).await?;
        for kind in ["analysis", "timeline"] {
            let _ = tokio::fs::remove_file(st.cache.join(format!("{}.{kind}.json", e.snapshot_id)))
                .await;
        }
        for ext in ["perfetto-trace", "dat"] {
            let file = crate::derived::export_file(&e.snapshot_id, ext);
            let _ = tokio::fs::remove_file(st.cache.join(file)).await;
        }
        st.metrics.retention_deleted.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// One retention pass.
pub async fn run_once(st: &AppState) -> Result<Outcome, AppError> {
    let mut out = Outcome::default();
    let max_age = st.config.retention_max_age().map_err(AppError::internal)?;
    if let Some(age) = max_age {
        let cutoff = now_realtime_ns().saturating_sub(age.as_nanos() as u64);
        loop {
            let batch = st
                .with_catalog(move |c| c.oldest(100, Some(cutoff)))
                .await?;
            if batch.is_empty() {
                break;
            }
            for e in batch {
                tracing::info!(snapshot = %e.snapshot_id, host = %e.host_id, "retention: expired");
                delete(st, e).await?;
                out.expired += 1;
            }
        }
    }
    out.abandoned_uploads = expire_uploads(st).await?;
    if let Some(cap) = st
        .config
        .retention_max_bytes()
        .map_err(AppError::internal)?
    {
        let (_, mut total) = st.with_catalog(|c| c.totals()).await?;
        while total > cap {
            let batch = st.with_catalog(|c| c.oldest(100, None)).await?;
            if batch.is_empty() {
                break;
            }
            for e in batch {
                if total <= cap {
                    break;
                }
                total = total.saturating_sub(e.bytes);
                tracing::info!(
                    snapshot = %e.snapshot_id, host = %e.host_id, bytes = e.bytes,
                    "retention: archive over its size cap"
                );
                delete(st, e).await?;
                out.over_size += 1;
            }
        }
    }
    Ok(out)
}

/// Abandons upload sessions that received nothing for `limits.upload_expiry`: their recorder
/// dropped the snapshot (spool cap) or was replaced, and they would otherwise hold staging
/// bytes and a place in the session quotas forever. The last activity is the staging file's
/// modification time (every chunk writes it), or the session's creation before any chunk.
pub async fn expire_uploads(st: &AppState) -> Result<u64, AppError> {
    let expiry = st.limits.upload_expiry.as_nanos() as u64;
    let stale = now_realtime_ns().saturating_sub(expiry);
    let mut n = 0;
    for s in st.with_catalog(|c| c.sessions()).await? {
        let staged = st.staging.join(format!("{}.part", s.snapshot_id));
        let written = tokio::fs::metadata(&staged)
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        // With a shared catalog another replica may be receiving this upload: its last
        // chunk's time is in the catalog.
        let id = s.snapshot_id.clone();
        let touched = st
            .with_catalog(move |c| c.touched_ns(&id))
            .await?
            .unwrap_or(0);
        if s.created_realtime_ns.max(written).max(touched) < stale {
            tracing::info!(snapshot = %s.snapshot_id, host = %s.host_id, "retention: abandoned upload");
            let id = s.snapshot_id.clone();
            st.with_catalog(move |c| c.close_session(&id)).await?;
            let _ = tokio::fs::remove_file(staged).await;
            n += 1;
        }
    }
    Ok(n)
}

/// Removes this collector's staging files of uploads that are no longer open (finished or
/// expired through another replica sharing the catalog), once untouched for a minute.
pub async fn sweep_staging(st: &AppState) -> Result<u64, AppError> {
    if !st.catalog.shares_staging() {
        return Ok(0);
    }
    let open: std::collections::HashSet<String> = st
        .with_catalog(|c| c.sessions())
        .await?
        .into_iter()
        .map(|s| s.snapshot_id)
        .collect();
    let mut n = 0;
    let mut dir = match tokio::fs::read_dir(st.staging.as_path()).await {
        Ok(d) => d,
        Err(_) => return Ok(0),
    };
    let minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    while let Ok(Some(e)) = dir.next_entry().await {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix(".part") else {
            continue;
        };
        let old = e
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .is_some_and(|t| t < minute_ago);
        if old && !open.contains(id) && tokio::fs::remove_file(e.path()).await.is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// Advisory lock key of a retention pass ("retentio"): with a shared catalog, one replica
/// at a time runs it, and the others skip their turn.
pub const RETENTION_LOCK: i64 = 0x7265_7465_6e74_696f;

/// One pass of [`run_once`] unless another collector sharing the catalog is running one;
/// `None` if it was.
pub async fn run_exclusive(st: &AppState) -> Result<Option<Outcome>, AppError> {
    let handle = tokio::runtime::Handle::current();
    let st2 = st.clone();
    st.with_catalog(move |c| {
        let mut out = None;
        let ran = c.exclusive(RETENTION_LOCK, &mut || {
            out = Some(handle.block_on(run_once(&st2)));
        })?;
        Ok(ran.then_some(out).flatten())
    })
    .await?
    .transpose()
}

/// Runs retention every `retention.interval`, forever (skipping a turn another replica is
/// already taking).
pub async fn run(st: AppState) {
    let every = st
        .config
        .retention_interval()
        .unwrap_or(std::time::Duration::from_secs(300));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(e) = run_exclusive(&st).await {
            tracing::warn!(error = %e, "retention pass failed");
        }
        // Every replica, lock or not: its own disk.
        if let Err(e) = sweep_staging(&st).await {
            tracing::warn!(error = %e, "staging sweep failed");
        }
    }
}
