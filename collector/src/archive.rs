//! The archive of snapshot files, behind `object_store`'s `ObjectStore` trait: a local directory
//! by default, an S3-compatible bucket when one machine is not enough. Moving between them is a
//! configuration change (`storage.archive`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{ArchiveKind, Config};

/// Why the archive failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The object store answered with an error.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A local file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The store could not be set up from the configuration.
    #[error("archive setup: {0}")]
    Setup(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ArchiveError {
    let what = what.into();
    move |source| ArchiveError::Io { what, source }
}

/// Snapshot blobs by key.
#[derive(Clone, Debug)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    /// Root directory of a local store: its files are synced before a put returns, which
    /// `LocalFileSystem` alone does not do.
    local_root: Option<PathBuf>,
    /// What the store is, for logs and `/metrics`.
    pub description: String,
}

/// Bytes per part of a multipart put: S3 wants at least 5 MiB per part but the last.
const PART_BYTES: usize = 8 << 20;

/// Sets 0750 on `dir` and its parents up to, not including, `root`.
fn restrict_dirs(dir: &Path, root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut d = dir;
    while d != root && d.starts_with(root) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o750))?;
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    Ok(())
}

impl Archive {
    /// Opens the archive the configuration names.
    pub fn open(config: &Config) -> Result<Archive, ArchiveError> {
        match config.storage.archive {
            ArchiveKind::Local => {
                let root = config.storage.data_dir.join("archive");
                crate::private_dir(&root)
                    .map_err(io(format!("creating archive directory {}", root.display())))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&root)?;
                Ok(Archive {
                    store: Arc::new(store),
                    description: format!("local directory {}", root.display()),
                    local_root: Some(root),
                })
            }
            ArchiveKind::S3 => {
                let s3 = &config.storage.s3;
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.allow_http)
                    .with_virtual_hosted_style_request(!s3.path_style);
                if !s3.endpoint.is_empty() {
                    b = b.with_endpoint(&s3.endpoint);
                }
                if !s3.access_key_id.is_empty() {
                    b = b.with_access_key_id(&s3.access_key_id);
                }
                if !s3.secret_access_key.is_empty() {
                    b = b.with_secret_access_key(&s3.secret_access_key);
                }
                let store = b.build()?;
                Ok(Archive {
                    store: Arc::new(store),
                    description: format!(
                        "s3 bucket {} at {}",
                        s3.bucket,
                        if s3.endpoint.is_empty() {
                            "AWS"
                        } else {
                            &s3.endpoint
                        }
                    ),
                    local_root: None,
                })
            }
        }
    }

    /// Key of a snapshot: spread over 256 prefixes so no directory grows without bound.
    pub fn key(snapshot_id: &str) -> String {
        let shard = snapshot_id.get(..2).unwrap_or("00");
        format!("snapshots/{shard}/{snapshot_id}.frs")
    }

    /// Moves the verified, already synced staging file at `path` to `key`, and returns only
    /// once it is durable there. On the local store this is a rename into the layout
    /// `LocalFileSystem` reads (what its own multipart put ends with), so ingest writes every
    /// byte to disk once; elsewhere, or across filesystems, it is a copy through the store.
    pub async fn adopt_file(&self, key: &str, path: &Path) -> Result<(), ArchiveError> {
        if let Some(root) = &self.local_root {
            let dest = root.join(key);
            let src = path.to_owned();
            let moved = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
                let dir = dest.parent().expect("keys have a directory");
                crate::private_dir(dir)?;
                match std::fs::rename(&src, &dest) {
                    Ok(()) => {
                        std::fs::File::open(dir)?.sync_all()?;
                        Ok(true)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await
            .map_err(|e| ArchiveError::Setup(format!("rename task: {e}")))?
            .map_err(io(format!("moving {} into the archive", path.display())))?;
            if moved {
                return Ok(());
            }
        }
        self.put_file(key, path).await
    }

    /// Copies the file at `path` to `key`, and returns only once the copy is durable.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<(), ArchiveError> {
        let location = ObjectPath::from(key);
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(io(format!("opening {}", path.display())))?;
        let upload = self.store.put_multipart(&location).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(io(format!("reading {}", path.display())))?;
            if n == 0 {
                break;
            }
            // Bounds the parts in flight, hence memory, when the store is slower than the disk.
            w.wait_for_capacity(4).await?;
            w.write(&buf[..n]);
        }
        w.finish().await?;
        if let Some(root) = &self.local_root {
            let file = root.join(key);
            let root = root.clone();
            let sync = move || -> std::io::Result<()> {
                use std::os::unix::fs::PermissionsExt;
                // The store creates files and directories as the umask says; a snapshot holds
                // syscall arguments and command lines, so it is kept from other users.
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640))?;
                if let Some(dir) = file.parent() {
                    restrict_dirs(dir, &root)?;
                }
                std::fs::File::open(&file)?.sync_all()?;
                if let Some(dir) = file.parent() {
                    std::fs::File::open(dir)?.sync_all()?;
                }
                Ok(())
            };
            tokio::task::spawn_blocking(sync)
                .await
                .map_err(|e| ArchiveError::Setup(format!("sync task: {e}")))?
                .map_err(io(format!("syncing {key}")))?;
        }
        Ok(())
    }

    /// Root directory of a local store, if it is one.
    pub fn local_root(&self) -> Option<&Path> {
        self.local_root.as_deref()
    }

    /// The bytes of `key` as a stream.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<
        (
            u64,
            futures_util::stream::BoxStream<'static, Result<bytes::Bytes, object_store::Error>>,
        ),
        ArchiveError,
    > {
        let got = self.store.get(&ObjectPath::from(key)).await?;
        let size = got.meta.size;
        Ok((size, got.into_stream()))
    }

    /// Bytes `range` of `key`.
    pub async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, ArchiveError> {
        Ok(self.store.get_range(&ObjectPath::from(key), range).await?)
    }

    /// Copies `key` into the local file `dest` (for the analyses and exports, which read files).
    pub async fn fetch_to(&self, key: &str, dest: &Path) -> Result<u64, ArchiveError> {
        let (_, mut stream) = self.get_stream(key).await?;
        let mut out = tokio::fs::File::create(dest)
            .await
            .map_err(io(format!("creating {}", dest.display())))?;
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            out.write_all(&chunk)
                .await
                .map_err(io(format!("writing {}", dest.display())))?;
        }
        out.flush()
            .await
            .map_err(io(format!("writing {}", dest.display())))?;
        Ok(n)
    }

    /// Size of `key`, or `None` when it is absent.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, ArchiveError> {
        match self.store.head(&ObjectPath::from(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `key` (absent is fine: retention may be retried).
    pub async fn delete(&self, key: &str) -> Result<(), ArchiveError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
