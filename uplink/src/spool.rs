//! The spool directory and the loop that empties it into the collector.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use schemas::wire::{ChunkAck, ErrorBody, OpenRequest, UploadStage, UploadState};
use sha2::Digest;

use crate::bucket::TokenBucket;
use crate::{CollectorConfig, Progress, UploadError, UploadStatus};

/// A spooled snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spooled {
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    modified: SystemTime,
}

/// Snapshot files in `dir`, oldest first. Temporary files (`.NAME.tmp`) and subdirectories
/// are not snapshots yet, or any more.
pub fn list(dir: &Path) -> Vec<Spooled> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Spooled> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            if name.starts_with('.') || !name.ends_with(&format!(".{}", schemas::file::EXTENSION)) {
                return None;
            }
            let m = e.metadata().ok().filter(|m| m.is_file())?;
            Some(Spooled {
                path: e.path(),
                bytes: m.len(),
                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            })
        })
        .collect();
    out.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.path.cmp(&b.path)));
    out
}

/// Deletes the oldest files while the spool holds more than `cap` bytes; returns what it
/// dropped. Each drop is logged with its reason: losing data must never be silent.
pub fn enforce_cap(dir: &Path, cap: u64) -> Vec<Spooled> {
    let files = list(dir);
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    let mut dropped = Vec::new();
    for f in files {
        if total <= cap {
            break;
        }
        if std::fs::remove_file(&f.path).is_ok() {
            eprintln!(
                "flightrec: upload spool holds {total} bytes, over its cap of {cap} \
                 (collector.spool_max_size): dropped the oldest snapshot {} ({} bytes) without \
                 uploading it",
                f.path.display(),
                f.bytes
            );
            total -= f.bytes;
            dropped.push(f);
        }
    }
    dropped
}

/// Result of one upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sent and acknowledged.
    Uploaded {
        /// Bytes sent in this attempt (less than the file when resumed).
        sent: u64,
    },
    /// The collector already had it.
    AlreadyArchived,
}

/// Uploads one snapshot file. `progress` sees the collector's offset after every chunk.
pub async fn upload_file(
    client: &reqwest::Client,
    cfg: &CollectorConfig,
    bucket: &Arc<TokenBucket>,
    path: &Path,
    mut progress: impl FnMut(&Progress),
) -> Result<Outcome, UploadError> {
    let io = |what: String| move |source| UploadError::Io { what, source };
    let p = path.to_owned();
    let (snapshot_id, size, sha256) = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&p).map_err(io(format!("opening {}", p.display())))?;
        let snap = schemas::file::Snapshot::read_index(&mut f)?;
        f.seek(SeekFrom::Start(0))
            .map_err(io(format!("reading {}", p.display())))?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .map_err(io(format!("reading {}", p.display())))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            h.update(&buf[..n]);
        }
        let sha: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok::<_, UploadError>((snap.manifest.snapshot_id, size, sha))
    })
    .await
    .map_err(|e| UploadError::Setup(format!("hash task: {e}")))??;

    let base = cfg.url.trim_end_matches('/');
    let auth = |rb: reqwest::RequestBuilder| {
        if cfg.token.is_empty() {
            rb
        } else {
            rb.bearer_auth(&cfg.token)
        }
    };
    let resp = auth(client.post(format!("{base}/v1/uploads")))
        .timeout(Duration::from_secs(60))
        .json(&OpenRequest {
            snapshot_id: snapshot_id.clone(),
            size,
            sha256,
        })
        .send()
        .await?;
    let state: UploadState = ok_json(resp).await?;
    if state.status == UploadStage::Complete {
        return Ok(Outcome::AlreadyArchived);
    }
    let mut offset = state.offset;
    let mut sent = 0u64;
    let chunk = cfg.chunk_bytes();
    let mut progress_of = |offset| {
        progress(&Progress {
            snapshot_id: snapshot_id.clone(),
            file: path.to_owned(),
            offset,
            size,
        })
    };
    progress_of(offset);
    let mut file = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut retries = 0;
    loop {
        while offset < size {
            let len = chunk.min(size - offset);
            let mut buf = vec![0u8; len as usize];
            file.seek(SeekFrom::Start(offset))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(io(format!("reading {}", path.display())))?;
            let data = Bytes::from(buf);
            let crc = crc32fast::hash(&data);
            // Slower than the rate limit would need, plus slack: a stalled collector is noticed.
            let secs = if bucket.rate() > 0 {
                len / bucket.rate() + 30
            } else {
                60
            };
            let resp = auth(client.patch(format!("{base}/v1/uploads/{snapshot_id}")))
                .timeout(Duration::from_secs(secs))
                .header("upload-offset", offset)
                .header("chunk-crc32", format!("{crc:08x}"))
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(reqwest::Body::wrap_stream(paced(data, bucket.clone())))
                .send()
                .await?;
            let status = resp.status();
            if status.is_success() {
                let ack: Option<ChunkAck> = resp.json().await.ok();
                sent += len;
                offset = ack.map_or(offset + len, |a| a.offset);
                retries = 0;
                progress_of(offset);
                continue;
            }
            let body: ErrorBody = resp.json().await.unwrap_or_default();
            retries += 1;
            match (status.as_u16(), body.offset) {
                // Out of step (a retry after a lost answer, or a collector restart): resume
                // where the collector stands.
                (409, Some(o)) if retries < 5 => offset = o,
                // The chunk was damaged on the way: send it again.
                (422, _) if retries < 5 => {}
                _ => {
                    return Err(UploadError::Status {
                        status: status.as_u16(),
                        message: body.error,
                    });
                }
            }
            progress_of(offset);
        }
        let resp = auth(client.post(format!("{base}/v1/uploads/{snapshot_id}/complete")))
            // Verification reads the whole file on the collector.
            .timeout(Duration::from_secs(600))
            .send()
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Outcome::Uploaded { sent });
        }
        let body: ErrorBody = resp.json().await.unwrap_or_default();
        match (status.as_u16(), body.offset) {
            (409, Some(o)) if retries < 5 => {
                retries += 1;
                offset = o;
            }
            (422, _) => return Err(UploadError::Rejected(body.error)),
            _ => {
                return Err(UploadError::Status {
                    status: status.as_u16(),
                    message: body.error,
                });
            }
        }
    }
}

async fn ok_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
) -> Result<T, UploadError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp.json().await?);
    }
    let body: ErrorBody = resp.json().await.unwrap_or_default();
    Err(UploadError::Status {
        status: status.as_u16(),
        message: body.error,
    })
}

/// Slices of one chunk, each released by the bucket: the bytes leave at the configured rate
/// instead of in chunk-sized bursts.
fn paced(
    data: Bytes,
    bucket: Arc<TokenBucket>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    const SLICE: usize = 64 << 10;
    futures_util::stream::unfold(0usize, move |at| {
        let data = data.clone();
        let bucket = bucket.clone();
        async move {
            if at >= data.len() {
                return None;
            }
            let end = (at + SLICE).min(data.len());
            bucket.take((end - at) as u64).await;
            Some((Ok(data.slice(at..end)), end))
        }
    })
}

/// Empties the spool into the collector, forever.
pub struct Uploader {
    cfg: CollectorConfig,
    client: reqwest::Client,
    dir: PathBuf,
    status: Arc<Mutex<UploadStatus>>,
    bucket: Arc<TokenBucket>,
    uploaded: Option<tokio::sync::broadcast::Sender<PathBuf>>,
}

impl Uploader {
    /// Also announces on `tx` the path of every file the collector acknowledged (the daemon
    /// marks its triggered snapshots uploaded from it).
    pub fn announce_to(mut self, tx: tokio::sync::broadcast::Sender<PathBuf>) -> Uploader {
        self.uploaded = Some(tx);
        self
    }

    /// An uploader of `dir`'s snapshots reporting into `status`.
    pub fn new(
        cfg: CollectorConfig,
        client: reqwest::Client,
        dir: PathBuf,
        status: Arc<Mutex<UploadStatus>>,
    ) -> Uploader {
        let bucket = Arc::new(TokenBucket::new(cfg.rate_bytes(), 64 << 10));
        Uploader {
            cfg,
            client,
            dir,
            status,
            bucket,
            uploaded: None,
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, UploadStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refresh_spool(&self) -> Vec<Spooled> {
        let files = list(&self.dir);
        let mut st = self.status();
        st.spool_files = files.len() as u64;
        st.spool_bytes = files.iter().map(|f| f.bytes).sum();
        files
    }

    /// Runs until the runtime stops: scans the spool when woken or every 2 s, uploads oldest
    /// first, and backs off (1 s doubling to 60 s) while the collector is unreachable.
    pub async fn run(self, wake: Arc<tokio::sync::Notify>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let dropped = enforce_cap(&self.dir, self.cfg.spool_max_bytes());
            self.status().spool_dropped_total += dropped.len() as u64;
            let files = self.refresh_spool();
            let mut failed = false;
            for f in files {
                if !f.path.exists() {
                    continue;
                }
                let status = self.status.clone();
                let res = upload_file(&self.client, &self.cfg, &self.bucket, &f.path, |p| {
                    status.lock().unwrap_or_else(|e| e.into_inner()).current = Some(p.clone());
                })
                .await;
                let prev_offset = self.status().current.take().map(|p| p.offset);
                match res {
                    Ok(outcome) => {
                        // Acknowledged: durable on the collector, so the spool copy can go.
                        let _ = std::fs::remove_file(&f.path);
                        let mut st = self.status();
                        st.snapshots_uploaded_total += 1;
                        if let Outcome::Uploaded { sent } = outcome {
                            st.upload_sent_bytes_total += sent;
                        }
                        st.last_uploaded =
                            f.path.file_name().map(|n| n.to_string_lossy().into_owned());
                        st.last_error = None;
                        drop(st);
                        if let Some(tx) = &self.uploaded {
                            // Nobody listening is fine: the announcement is for status only.
                            let _ = tx.send(f.path.clone());
                        }
                        backoff = Duration::from_secs(1);
                    }
                    Err(UploadError::Rejected(why))
                    | Err(UploadError::Format(schemas::file::FormatError::Corrupt(why))) => {
                        // Retrying cannot help; keep the file aside for a person to look at.
                        let aside = self.dir.join("rejected");
                        let _ = crate::private::create_dir(&aside);
                        if let Some(name) = f.path.file_name() {
                            let _ = std::fs::rename(&f.path, aside.join(name));
                        }
                        eprintln!(
                            "flightrec: snapshot {} refused ({why}); moved to {}",
                            f.path.display(),
                            aside.display()
                        );
                        let mut st = self.status();
                        st.uploads_rejected_total += 1;
                        st.last_error = Some(why);
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        eprintln!(
                            "flightrec: uploading {} failed at byte {} ({msg}); retrying in {:?}",
                            f.path.display(),
                            prev_offset.unwrap_or(0),
                            backoff
                        );
                        let mut st = self.status();
                        st.upload_failures_total += 1;
                        st.last_error = Some(msg);
                        failed = true;
                        break;
                    }
                }
                self.refresh_spool();
            }
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            } else {
                let _ = tokio::time::timeout(Duration::from_secs(2), wake.notified()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_drops_oldest_first_and_ignores_temporary_files() {
        let dir = std::env::temp_dir().join(format!("flightrec-spool-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (i, name) in ["c.frs", "a.frs", "b.frs"].iter().enumerate() {
            let p = dir.join(name);
            std::fs::write(&p, vec![0u8; 100]).unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(base + Duration::from_secs(i as u64))
                .unwrap();
        }
        // Being written, and not a snapshot: never listed, never dropped.
        std::fs::write(dir.join(".d.frs.tmp"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let names = |v: Vec<Spooled>| -> Vec<String> {
            v.iter()
                .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(list(&dir)), ["c.frs", "a.frs", "b.frs"]);
        assert_eq!(names(enforce_cap(&dir, 250)), ["c.frs"]);
        assert_eq!(names(enforce_cap(&dir, 250)), Vec::<String>::new());
        assert_eq!(names(enforce_cap(&dir, 99)), ["a.frs", "b.frs"]);
        assert!(dir.join(".d.frs.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
