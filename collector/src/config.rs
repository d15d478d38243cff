//! Collector configuration: TOML with a documented default for every field, checked strictly.
//! With no file at all the collector runs with the embedded defaults: loopback only, an admin
//! token generated on first start, archive and catalog under `storage.data_dir`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use schemas::config::ConfigError;
use schemas::units::{parse_duration, parse_size};

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening address and TLS.
    pub server: ServerConfig,
    /// Where snapshots and the catalog live.
    pub storage: StorageConfig,
    /// Bounds on what an upload may make the collector hold.
    pub limits: LimitsConfig,
    /// What is deleted, and when.
    pub retention: RetentionConfig,
    /// Tokens.
    pub auth: AuthConfig,
    /// Which database holds the catalog.
    pub catalog: CatalogConfig,
}

/// `[catalog]`. Empty `url`: the embedded SQLite file in `storage.data_dir`; a
/// `postgres://` URL: a PostgreSQL database, which several collector replicas can share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (libpq URL syntax; `?host=/run/postgresql`
    /// for a Unix socket), or empty for SQLite.
    pub url: String,
    /// Connections the pool opens at most.
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails (503), e.g. while the
    /// database restarts.
    #[serde(with = "schemas::units::duration")]
    pub connect_timeout: Duration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            url: String::new(),
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// `[server]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: String,
    /// PEM certificate chain; with `tls_key`, the collector speaks HTTPS only.
    pub tls_cert: PathBuf,
    /// PEM private key for `tls_cert`.
    pub tls_key: PathBuf,
    /// URL printed for people and put in links (default: derived from `listen`).
    pub public_url: String,
    /// Time a client has to send a request's headers (and, with TLS, finish the handshake)
    /// once it connects or between requests (slow-loris guard).
    #[serde(with = "schemas::units::duration")]
    pub header_timeout: Duration,
    /// A connection with no request in flight and no byte moving for this long is closed.
    #[serde(with = "schemas::units::duration")]
    pub idle_timeout: Duration,
    /// Time a request body (an upload chunk) may take to arrive, from its headers on.
    #[serde(with = "schemas::units::duration")]
    pub body_timeout: Duration,
    /// Connections served at once. A new one past the cap replaces the longest-idle
    /// connection, or is closed when every connection is busy.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7480".into(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            public_url: String::new(),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(120),
            max_connections: 512,
        }
    }
}

/// Which object store holds the archive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveKind {
    /// Files under `data_dir/archive`.
    #[default]
    Local,
    /// An S3-compatible bucket (`[storage.s3]`).
    S3,
}

/// `[storage]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Catalog database, upload staging area, and the local archive.
    pub data_dir: PathBuf,
    /// `local` or `s3`.
    pub archive: ArchiveKind,
    /// The bucket when `archive = "s3"`.
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("/var/lib/flightrec-collector"),
            archive: ArchiveKind::Local,
            s3: S3Config::default(),
        }
    }
}

/// `[storage.s3]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:3900` (empty: AWS).
    pub endpoint: String,
    /// Region name.
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Access key id (empty: from `AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// Secret key (empty: from `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: String,
    /// Allow a plain-HTTP endpoint (a store on loopback or a private network).
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`), which most self-hosted stores need.
    pub path_style: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
            path_style: true,
        }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest snapshot file accepted.
    pub max_snapshot_size: String,
    /// Largest chunk of one request.
    pub max_chunk_size: String,
    /// Largest decoded size of a snapshot's record streams (bounds decompression).
    pub max_uncompressed_size: String,
    /// Upload sessions open at once, all hosts.
    pub max_open_uploads: u32,
    /// Upload sessions one host may hold open at once, so one token cannot take them all.
    pub max_open_uploads_per_host: u32,
    /// An upload session that received nothing for this long is abandoned and its bytes
    /// deleted.
    #[serde(with = "schemas::units::duration")]
    pub upload_expiry: Duration,
    /// Largest file an export (`/export/FORMAT`) may write; a bigger one is refused.
    pub max_export_size: String,
    /// Largest decoded size of the record streams an analysis or timeline reads.
    pub max_analysis_size: String,
    /// Bytes of finished exports kept in the cache; the least recently written go first.
    pub max_cache_size: String,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_snapshot_size: "1GiB".into(),
            max_chunk_size: "16MiB".into(),
            max_uncompressed_size: "8GiB".into(),
            max_open_uploads: 256,
            max_open_uploads_per_host: 8,
            upload_expiry: Duration::from_secs(2 * 3600),
            max_export_size: "2GiB".into(),
            max_analysis_size: "2GiB".into(),
            max_cache_size: "8GiB".into(),
        }
    }
}

/// `[retention]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Delete snapshots frozen longer ago than this ("30d", "12h", "0" keeps them forever).
    pub max_age: String,
    /// Delete the oldest snapshots while the archive holds more than this ("0": no limit).
    pub max_total_size: String,
    /// How often retention runs.
    pub interval: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age: "30d".into(),
            max_total_size: "100GiB".into(),
            interval: "5m".into(),
        }
    }
}

/// `[auth]`. With no token at all the collector generates an admin token on its first start
/// (`data_dir/admin.token`, mode 0600) unless `open` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// No tokens at all: every caller is an admin. Loopback only, and only when no token is
    /// configured; meant for a collector on a single-user machine or in a test.
    pub open: bool,
    /// Write tokens, one per recorder: each may upload only snapshots of its own host id,
    /// register in groups and fire group triggers.
    pub recorders: Vec<RecorderToken>,
    /// Tokens that may browse and download.
    pub readers: Vec<String>,
    /// Tokens that may do everything, including group triggers.
    pub admins: Vec<String>,
}

/// One recorder's write token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecorderToken {
    /// Host id the recorder writes in its snapshots (`recorder.host_id`, or its host name).
    pub host_id: String,
    /// The token (at least 16 characters).
    pub token: String,
    /// Groups the recorder may register in and trigger (`"*"`: any); none by default.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl RecorderToken {
    /// Whether this recorder may register in and trigger `group`.
    pub fn may_join(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == "*" || g == group)
    }
}

pub use schemas::config::REDACTED;

/// Limits in bytes and durations, parsed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest snapshot file.
    pub max_snapshot_bytes: u64,
    /// Largest chunk.
    pub max_chunk_bytes: u64,
    /// Largest decoded stream total.
    pub max_uncompressed_bytes: u64,
    /// Open sessions.
    pub max_open_uploads: u32,
    /// Open sessions of one host.
    pub max_open_uploads_per_host: u32,
    /// Idle time after which a session is abandoned.
    pub upload_expiry: Duration,
    /// Largest export file.
    pub max_export_bytes: u64,
    /// Largest decoded stream total an analysis reads.
    pub max_analysis_bytes: u64,
    /// Bytes of exports the cache keeps.
    pub max_cache_bytes: u64,
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let config: Config = schemas::config::read_toml(path, &[])?;
        config.check()?;
        Ok(config)
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = schemas::config::parse_toml(text, &[])?;
        config.check()?;
        Ok(config)
    }

    /// Checks values that the types alone do not constrain.
    pub fn check(&self) -> Result<(), ConfigError> {
        let addr = self.listen_addr()?;
        let limits = self.limits()?;
        if limits.max_chunk_bytes < 4096 || limits.max_chunk_bytes > 256 << 20 {
            return Err(ConfigError::Invalid(
                "limits.max_chunk_size must be between 4KiB and 256MiB".into(),
            ));
        }
        if limits.max_open_uploads == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_open_uploads must be at least 1".into(),
            ));
        }
        if !(1..=limits.max_open_uploads).contains(&limits.max_open_uploads_per_host) {
            return Err(ConfigError::Invalid(
                "limits.max_open_uploads_per_host must be 1 to limits.max_open_uploads".into(),
            ));
        }
        if limits.upload_expiry < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "limits.upload_expiry must be at least 1s".into(),
            ));
        }
        if limits.max_export_bytes == 0 || limits.max_analysis_bytes == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_export_size and limits.max_analysis_size must be above 0".into(),
            ));
        }
        self.check_server()?;
        self.retention_max_age()?;
        self.retention_max_bytes()?;
        self.retention_interval()?;
        if self.tls_enabled() == self.server.tls_key.as_os_str().is_empty() {
            return Err(ConfigError::Invalid(
                "server.tls_cert and server.tls_key go together".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for r in &self.auth.recorders {
            if r.host_id.is_empty() {
                return Err(ConfigError::Invalid(
                    "auth.recorders entry without host_id".into(),
                ));
            }
            if !seen.insert(&r.token) {
                return Err(ConfigError::Invalid(format!(
                    "auth.recorders: the token of {} is used twice",
                    r.host_id
                )));
            }
        }
        let all = self
            .auth
            .recorders
            .iter()
            .map(|r| &r.token)
            .chain(&self.auth.readers)
            .chain(&self.auth.admins);
        for t in all {
            if t.len() < 16 {
                return Err(ConfigError::Invalid(
                    "every token must be at least 16 characters".into(),
                ));
            }
            if !valid_token(t) {
                return Err(ConfigError::Invalid(
                    "tokens are letters, digits and '-', '_', '.', '~', '+', '/', '=' only \
                     (they travel in a header and a cookie)"
                        .into(),
                ));
            }
        }
        for t in &self.auth.recorders {
            if let Some(g) = t
                .groups
                .iter()
                .find(|g| *g != "*" && !crate::groups::valid_group(g))
            {
                return Err(ConfigError::Invalid(format!(
                    "auth.recorders: group {g:?} of {} is not a group name",
                    t.host_id
                )));
            }
        }
        if self.auth.open && self.has_tokens() {
            return Err(ConfigError::Invalid(
                "auth.open = true accepts anyone, which makes the tokens in [auth] pointless: \
                 set one or the other"
                    .into(),
            ));
        }
        if self.open() && !addr.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "auth.open = true makes the collector accept anyone: that is allowed on \
                 loopback only, not on {addr}"
            )));
        }
        if !self.catalog.url.is_empty() {
            crate::catalog::postgres::check_url(&self.catalog.url).map_err(ConfigError::Invalid)?;
            if !(2..=1000).contains(&self.catalog.max_connections) {
                return Err(ConfigError::Invalid(
                    "catalog.max_connections must be 2 to 1000".into(),
                ));
            }
            if !(Duration::from_millis(100)..=Duration::from_secs(300))
                .contains(&self.catalog.connect_timeout)
            {
                return Err(ConfigError::Invalid(
                    "catalog.connect_timeout must be 100ms to 5m".into(),
                ));
            }
        }
        if self.storage.archive == ArchiveKind::S3 && self.storage.s3.bucket.is_empty() {
            return Err(ConfigError::Invalid(
                "storage.archive = \"s3\" needs storage.s3.bucket".into(),
            ));
        }
        Ok(())
    }

    /// `auth.open` with no token configured: every request is allowed.
    pub fn open(&self) -> bool {
        self.auth.open && !self.has_tokens()
    }

    /// Whether any token is configured.
    pub fn has_tokens(&self) -> bool {
        !(self.auth.recorders.is_empty()
            && self.auth.readers.is_empty()
            && self.auth.admins.is_empty())
    }

    fn check_server(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        for (name, v) in [
            ("server.header_timeout", s.header_timeout),
            ("server.idle_timeout", s.idle_timeout),
            ("server.body_timeout", s.body_timeout),
        ] {
            if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&v) {
                return Err(ConfigError::Invalid(format!("{name} must be 100ms to 1h")));
            }
        }
        if !(1..=65536).contains(&s.max_connections) {
            return Err(ConfigError::Invalid(
                "server.max_connections must be 1 to 65536".into(),
            ));
        }
        Ok(())
    }

    /// The configuration with every token and the S3 secret replaced by [`REDACTED`], for
    /// `--check-config`.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        let hide = schemas::config::redact;
        c.auth.recorders.iter_mut().for_each(|r| hide(&mut r.token));
        c.auth.readers.iter_mut().for_each(hide);
        c.auth.admins.iter_mut().for_each(hide);
        hide(&mut c.storage.s3.secret_access_key);
        if !c.catalog.url.is_empty() {
            c.catalog.url = crate::catalog::postgres::redact_url(&c.catalog.url);
        }
        c
    }

    /// Whether HTTPS is configured.
    pub fn tls_enabled(&self) -> bool {
        !self.server.tls_cert.as_os_str().is_empty()
    }

    /// `server.listen` parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "server.listen {:?} is not an address:port",
                self.server.listen
            ))
        })
    }

    /// The URL people open.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        if !self.server.public_url.is_empty() {
            return self.server.public_url.trim_end_matches('/').to_owned();
        }
        let scheme = if self.tls_enabled() { "https" } else { "http" };
        format!("{scheme}://{bound}")
    }

    /// `[limits]` in bytes.
    pub fn limits(&self) -> Result<Limits, ConfigError> {
        let size = |field: &str, v: &str| {
            parse_size(v).map_err(|e| ConfigError::Invalid(format!("limits.{field}: {e}")))
        };
        Ok(Limits {
            max_snapshot_bytes: size("max_snapshot_size", &self.limits.max_snapshot_size)?,
            max_chunk_bytes: size("max_chunk_size", &self.limits.max_chunk_size)?,
            max_uncompressed_bytes: size(
                "max_uncompressed_size",
                &self.limits.max_uncompressed_size,
            )?,
            max_open_uploads: self.limits.max_open_uploads,
            max_open_uploads_per_host: self.limits.max_open_uploads_per_host,
            upload_expiry: self.limits.upload_expiry,
            max_export_bytes: size("max_export_size", &self.limits.max_export_size)?,
            max_analysis_bytes: size("max_analysis_size", &self.limits.max_analysis_size)?,
            max_cache_bytes: size("max_cache_size", &self.limits.max_cache_size)?,
        })
    }

    /// `retention.max_age`; `None` keeps snapshots forever.
    pub fn retention_max_age(&self) -> Result<Option<Duration>, ConfigError> {
        let d = parse_duration(&self.retention.max_age)
            .map_err(|e| ConfigError::Invalid(format!("retention.max_age: {e}")))?;
        Ok((!d.is_zero()).then_some(d))
    }

    /// `retention.max_total_size`; `None` for no limit.
    pub fn retention_max_bytes(&self) -> Result<Option<u64>, ConfigError> {
        let b = parse_size(&self.retention.max_total_size)
            .map_err(|e| ConfigError::Invalid(format!("retention.max_total_size: {e}")))?;
        Ok((b != 0).then_some(b))
    }

    /// `retention.interval`.
    pub fn retention_interval(&self) -> Result<Duration, ConfigError> {
        let d = parse_duration(&self.retention.interval)
            .map_err(|e| ConfigError::Invalid(format!("retention.interval: {e}")))?;
        if d < Duration::from_millis(100) {
            return Err(ConfigError::Invalid(
                "retention.interval must be at least 100ms".into(),
            ));
        }
        Ok(d)
    }
}

/// Whether `t` may be a token: characters that need no quoting in a header or a cookie.
pub fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 256
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("30d", Some(30 * 86_400_000)),
            ("12h", Some(12 * 3_600_000)),
            ("5m", Some(300_000)),
            ("250ms", Some(250)),
            ("0", Some(0)),
            ("5", None),
            ("5w", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_duration(text).ok().map(|d| d.as_millis() as u64),
                want,
                "{text}"
            );
        }
    }

    #[test]
    fn strict_and_safe() {
        assert!(Config::parse("").is_ok());
        assert!(Config::parse("[server]\nlisen = \"x\"").is_err());
        // Open beyond loopback is refused; with a token, or a generated one, it is fine.
        assert!(Config::parse("[server]\nlisten = \"0.0.0.0:7480\"\n[auth]\nopen = true").is_err());
        assert!(Config::parse("[server]\nlisten = \"0.0.0.0:7480\"").is_ok());
        assert!(Config::parse("[auth]\nopen = true\nreaders = [\"0123456789abcdef\"]").is_err());
        assert!(Config::parse("[auth]\nreaders = [\"0123456789abcdef; Domain=x\"]").is_err());
        let with_token =
            "[server]\nlisten = \"0.0.0.0:7480\"\n[auth]\nreaders = [\"0123456789abcdef\"]";
        assert!(Config::parse(with_token).is_ok());
        assert!(Config::parse("[auth]\nreaders = [\"short\"]").is_err());
        assert!(Config::parse("[server]\ntls_cert = \"/c.pem\"").is_err());
        assert!(Config::parse("[storage]\narchive = \"s3\"").is_err());
        assert!(Config::parse("[retention]\nmax_age = \"1 fortnight\"").is_err());
    }

    #[test]
    fn example_config_is_valid_and_matches_defaults() {
        let text = include_str!("../examples/collector.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
    }
}
