//! The recorder's link to the collector: uploading snapshots and registering for group
//! triggers. It needs no eBPF, so the collector's tests drive it as a real recorder would.
//!
//! Uploading:
//! Snapshots land in the spool directory first (the daemon writes there by default); the
//! uploader sends the oldest first, in chunks, through one shared [`bucket::TokenBucket`] so
//! the link is never saturated, and deletes a file only once the collector has acknowledged
//! it (verified, archived and catalogued). Every step is resumable: the collector keeps the
//! bytes it received under the snapshot id, and the uploader asks where to resume, after
//! either side restarts. The spool has a size cap; past it the oldest files are dropped, each
//! counted and logged. The protocol is in the collector's `ingest` module and
//! `docs/collector.md`.

pub mod bucket;
pub mod group;
pub mod private;
pub mod spool;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use schemas::config::ConfigError;
use schemas::units::parse_size;

/// `[collector]`: where snapshots go and which group this recorder joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// Collector base URL, e.g. `https://collector:7480` (empty: no upload, no group).
    pub url: String,
    /// This recorder's write token (empty when the collector has no tokens).
    pub token: String,
    /// PEM file of the CA that signed the collector's certificate (empty: public roots).
    pub ca_file: PathBuf,
    /// Upload bandwidth cap in bytes per second, e.g. "8MiB" ("0": no cap).
    pub rate_limit: String,
    /// Bytes per upload request.
    pub chunk_size: String,
    /// Largest total size of spooled snapshots; the oldest are dropped beyond it.
    pub spool_max_size: String,
    /// Group to register in for group triggers (empty: none).
    pub group: String,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            url: String::new(),
            token: String::new(),
            ca_file: PathBuf::new(),
            rate_limit: "8MiB".into(),
            chunk_size: "4MiB".into(),
            spool_max_size: "1GiB".into(),
            group: String::new(),
        }
    }
}

impl CollectorConfig {
    /// Whether a collector is configured.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// Checks the values.
    pub fn check(&self) -> Result<(), ConfigError> {
        let size = |field: &str, v: &str| {
            parse_size(v).map_err(|e| ConfigError::Invalid(format!("collector.{field}: {e}")))
        };
        size("rate_limit", &self.rate_limit)?;
        let chunk = size("chunk_size", &self.chunk_size)?;
        if !(4096..=(64 << 20)).contains(&chunk) {
            return Err(ConfigError::Invalid(
                "collector.chunk_size must be between 4KiB and 64MiB".into(),
            ));
        }
        size("spool_max_size", &self.spool_max_size)?;
        if self.enabled() && !(self.url.starts_with("http://") || self.url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "collector.url {:?} must start with http:// or https://",
                self.url
            )));
        }
        if !self.group.is_empty()
            && (self.group.len() > 64
                || !self
                    .group
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        {
            return Err(ConfigError::Invalid(format!(
                "collector.group {:?}: use 1 to 64 letters, digits, '.', '_' or '-'",
                self.group
            )));
        }
        if !self.group.is_empty() && !self.enabled() {
            return Err(ConfigError::Invalid(
                "collector.group needs collector.url".into(),
            ));
        }
        Ok(())
    }

    fn bytes(&self, v: &str) -> u64 {
        parse_size(v).unwrap_or(0)
    }

    /// `rate_limit` in bytes per second (0: none).
    pub fn rate_bytes(&self) -> u64 {
        self.bytes(&self.rate_limit)
    }

    /// `chunk_size` in bytes.
    pub fn chunk_bytes(&self) -> u64 {
        self.bytes(&self.chunk_size).max(4096)
    }

    /// `spool_max_size` in bytes.
    pub fn spool_max_bytes(&self) -> u64 {
        self.bytes(&self.spool_max_size)
    }
}

/// Why talking to the collector failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The request did not complete (connection refused, reset, timeout...).
    #[error("collector request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The collector answered with an error.
    #[error("collector answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Its `error` text.
        message: String,
    },
    /// The collector refused the snapshot after verifying it; retrying will not help.
    #[error("collector rejected the snapshot: {0}")]
    Rejected(String),
    /// The local file could not be read.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The local file is not a readable snapshot.
    #[error("spooled file is not a readable snapshot: {0}")]
    Format(#[from] schemas::file::FormatError),
    /// The client could not be built (bad CA file...).
    #[error("collector client: {0}")]
    Setup(String),
}

/// An HTTP client for the collector: rustls with the configured CA, if any.
pub fn http_client(cfg: &CollectorConfig) -> Result<reqwest::Client, UploadError> {
    // reqwest is built without a default crypto provider: name ours once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .user_agent(concat!("flightrec/", env!("CARGO_PKG_VERSION")));
    if !cfg.ca_file.as_os_str().is_empty() {
        let pem = std::fs::read(&cfg.ca_file).map_err(|source| UploadError::Io {
            what: format!("reading collector.ca_file {}", cfg.ca_file.display()),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| UploadError::Setup(format!("collector.ca_file: {e}")))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| UploadError::Setup(e.to_string()))
}

/// The upload in progress.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Snapshot id.
    pub snapshot_id: String,
    /// Spooled file.
    pub file: PathBuf,
    /// Bytes the collector holds.
    pub offset: u64,
    /// File size.
    pub size: u64,
}

/// Uploader state for `flightrec status`; counters are named as their metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UploadStatus {
    /// Collector URL.
    pub url: String,
    /// Rate limit, bytes per second (0: none).
    pub rate_limit_bytes_per_second: u64,
    /// Snapshots waiting in the spool.
    pub spool_files: u64,
    /// Their bytes.
    pub spool_bytes: u64,
    /// Snapshots acknowledged by the collector and removed from the spool.
    pub snapshots_uploaded_total: u64,
    /// Chunk bytes the collector accepted.
    pub upload_sent_bytes_total: u64,
    /// Spooled snapshots dropped (spool over its cap) before being uploaded.
    pub spool_dropped_total: u64,
    /// Snapshots the collector refused after verification (moved to `spool/rejected`).
    pub uploads_rejected_total: u64,
    /// Attempts that failed and will be retried.
    pub upload_failures_total: u64,
    /// The upload in progress.
    pub current: Option<Progress>,
    /// Last snapshot acknowledged.
    pub last_uploaded: Option<String>,
    /// Last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// Group registration state for `flightrec status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupStatus {
    /// Group name.
    pub group: String,
    /// Whether the event stream is open now.
    pub connected: bool,
    /// Connections opened.
    pub group_connects_total: u64,
    /// Group triggers received.
    pub group_triggers_received_total: u64,
    /// Last trigger id received.
    pub last_trigger_id: Option<String>,
    /// Last connection error.
    pub last_error: Option<String>,
}

/// Everything `flightrec status` shows about the collector link.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorStatus {
    /// The uploader.
    pub upload: UploadStatus,
    /// Group registration, when a group is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupStatus>,
}

/// The daemon's handle on the uploader and group client.
#[derive(Clone, Debug, Default)]
pub struct Collector {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    upload: Arc<Mutex<UploadStatus>>,
    group: Option<Arc<Mutex<GroupStatus>>>,
    wake: Arc<tokio::sync::Notify>,
    uploaded: tokio::sync::broadcast::Sender<std::path::PathBuf>,
    client: reqwest::Client,
    cfg: CollectorConfig,
}

impl Collector {
    /// Starts the uploader over `spool_dir` and, with a group configured, the group client for
    /// `host_id`, on the current tokio runtime. Group triggers come out of the receiver as the
    /// trigger to record in the snapshot. Disabled (and the receiver never yields) without a
    /// collector URL.
    pub fn start(
        cfg: &CollectorConfig,
        spool_dir: &Path,
        host_id: &str,
    ) -> Result<
        (
            Collector,
            tokio::sync::mpsc::Receiver<schemas::manifest::TriggerInfo>,
        ),
        UploadError,
    > {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        if !cfg.enabled() {
            return Ok((Collector::default(), rx));
        }
        let client = http_client(cfg)?;
        let wake = Arc::new(tokio::sync::Notify::new());
        let upload = Arc::new(Mutex::new(UploadStatus {
            url: cfg.url.clone(),
            rate_limit_bytes_per_second: cfg.rate_bytes(),
            ..Default::default()
        }));
        let (uploaded, _) = tokio::sync::broadcast::channel(64);
        let uploader = spool::Uploader::new(
            cfg.clone(),
            client.clone(),
            spool_dir.to_owned(),
            upload.clone(),
        )
        .announce_to(uploaded.clone());
        tokio::spawn(uploader.run(wake.clone()));
        let group = (!cfg.group.is_empty()).then(|| {
            let st = Arc::new(Mutex::new(GroupStatus {
                group: cfg.group.clone(),
                ..Default::default()
            }));
            tokio::spawn(crate::group::run(
                client.clone(),
                cfg.clone(),
                host_id.to_owned(),
                st.clone(),
                tx,
            ));
            st
        });
        Ok((
            Collector {
                inner: Some(Arc::new(Inner {
                    upload,
                    group,
                    wake,
                    uploaded,
                    client,
                    cfg: cfg.clone(),
                })),
            },
            rx,
        ))
    }

    /// Tells the uploader a snapshot was spooled, so it starts now instead of at its next scan.
    pub fn nudge(&self) {
        if let Some(i) = &self.inner {
            i.wake.notify_one();
        }
    }

    /// Paths of the spool files the collector acknowledges from now on; `None` without a
    /// collector.
    pub fn uploaded(&self) -> Option<tokio::sync::broadcast::Receiver<std::path::PathBuf>> {
        Some(self.inner.as_ref()?.uploaded.subscribe())
    }

    /// Asks the collector to fan `reason` out to this recorder's whole group (a trigger with
    /// `scope: group`); returns the group trigger id. `None` without a collector and a group.
    pub async fn trigger_group(
        &self,
        reason: &str,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Option<Result<String, UploadError>> {
        let i = self.inner.as_ref()?;
        if i.cfg.group.is_empty() {
            return None;
        }
        Some(crate::group::trigger_group(&i.client, &i.cfg, reason, fields).await)
    }

    /// Whether group triggers can be sent (a collector and a group are configured).
    pub fn has_group(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| !i.cfg.group.is_empty())
    }

    /// State for `flightrec status`; `None` without a collector.
    pub fn status(&self) -> Option<CollectorStatus> {
        let i = self.inner.as_ref()?;
        Some(CollectorStatus {
            upload: i.upload.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            group: i
                .group
                .as_ref()
                .map(|g| g.lock().unwrap_or_else(|e| e.into_inner()).clone()),
        })
    }
}
