//! flightrec's collector: receives snapshots from recorders (chunked, resumable, verified),
//! archives them through `object_store`, catalogues them in SQLite, serves a browse API and a
//! web UI, and fans group triggers out to every recorder of a group.
//!
//! [`app`] builds the whole HTTP surface from an [`AppState`]; [`serve`] runs it on a listener.
//! The wire protocol is described in `docs/collector.md` and in the rustdoc of [`ingest`] and
//! [`groups`].

pub mod archive;
pub mod auth;
pub mod browse;
pub mod catalog;
pub mod config;
pub mod derived;
pub mod error;
pub mod groups;
pub mod ingest;
pub mod metrics;
pub mod retention;
pub mod serve;
pub mod ui;

pub use serve::serve;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::archive::Archive;
use crate::catalog::Catalog;
use crate::config::{Config, Limits};
use crate::metrics::Metrics;

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The catalog could not be opened.
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    /// The archive could not be opened.
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    /// A directory or the listener failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Shared state of every handler: cheap to clone (all `Arc`s).
#[derive(Clone)]
pub struct AppState {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Its limits, parsed.
    pub limits: Limits,
    /// The catalog.
    pub catalog: Arc<dyn Catalog>,
    /// The archive.
    pub archive: Arc<Archive>,
    /// Directory of upload staging files.
    pub staging: Arc<PathBuf>,
    /// Directory of cached analyses and timelines.
    pub cache: Arc<PathBuf>,
    /// One lock per upload session: chunks of one snapshot are written one at a time.
    pub upload_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Held while a new session is counted against the quotas and opened.
    pub session_gate: Arc<tokio::sync::Mutex<()>>,
    /// Recorders registered in groups.
    pub groups: Arc<groups::Registry>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Exports and analyses being computed, for single-flight.
    pub derive_locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Derived documents refused for their size, with the answer given (computed once).
    pub too_large: Arc<Mutex<HashMap<String, String>>>,
    /// The file of the admin token generated because no token is configured.
    pub admin_token_file: Option<PathBuf>,
}

/// Name of the generated admin token's file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Creates `path` and its missing parents 0750 whatever the umask: the data directory holds
/// snapshots (syscall arguments, command lines) and tokens.
pub fn private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(path)
}

/// Creates `path` (which must not exist) 0600 whatever the umask and writes `bytes` to it.
pub fn private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The admin token in `data_dir/admin.token`, generated (0600) on the first start.
fn admin_token(data: &std::path::Path) -> Result<(String, PathBuf), StartError> {
    let path = data.join(ADMIN_TOKEN_FILE);
    let err = |what: &str, source| StartError::Io {
        what: format!("{what} {}", path.display()),
        source,
    };
    if !path.exists() {
        let token = format!(
            "{}{}",
            schemas::clock::random_id(),
            schemas::clock::random_id()
        );
        match private_file(&path, format!("{token}\n").as_bytes()) {
            Ok(()) => {}
            // Another start raced us to it: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err("writing the admin token to", e)),
        }
    }
    let text = std::fs::read_to_string(&path).map_err(|e| err("reading", e))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 || !config::valid_token(&token) {
        return Err(StartError::Config(config::ConfigError::Invalid(format!(
            "{} does not hold a valid token; delete it to have a new one generated",
            path.display()
        ))));
    }
    Ok((token, path))
}

impl AppState {
    /// Opens the catalog, archive and directories the configuration names.
    pub fn open(mut config: Config) -> Result<AppState, StartError> {
        config.check()?;
        // rustls is built without a default crypto provider (no C toolchain for aws-lc): name
        // ring once per process, before the S3 client or the TLS server needs one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data = &config.storage.data_dir;
        let dir = |name: &str| -> Result<PathBuf, StartError> {
            let p = data.join(name);
            private_dir(&p).map_err(|source| StartError::Io {
                what: format!("creating {}", p.display()),
                source,
            })?;
            Ok(p)
        };
        let staging = dir("staging")?;
        let cache = dir("cache")?;
        let catalog = catalog::open(&config)?;
        let mut admin_token_file = None;
        if !config.has_tokens() && !config.auth.open {
            let (token, path) = admin_token(data)?;
            config.auth.admins.push(token);
            admin_token_file = Some(path);
        }
        let archive = Archive::open(&config)?;
        // Group triggers sent to another replica sharing the catalog reach the recorders
        // registered here too.
        let groups = Arc::new(groups::Registry::new(&catalog));
        let registry = groups.clone();
        catalog.subscribe_triggers(Box::new(move |t| {
            let sent = registry.fan_out(Arc::new(t));
            tracing::debug!(recipients = ?sent, "group trigger from another replica");
        }))?;
        Ok(AppState {
            limits: config.limits()?,
            config: Arc::new(config),
            catalog,
            archive: Arc::new(archive),
            staging: Arc::new(staging),
            cache: Arc::new(cache),
            upload_locks: Default::default(),
            session_gate: Default::default(),
            groups,
            metrics: Default::default(),
            derive_locks: Default::default(),
            too_large: Default::default(),
            admin_token_file,
        })
    }

    /// Runs `f` on the catalog in a blocking thread.
    pub async fn with_catalog<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Catalog) -> Result<T, catalog::CatalogError> + Send + 'static,
    ) -> Result<T, error::AppError> {
        let catalog = self.catalog.clone();
        Ok(tokio::task::spawn_blocking(move || f(catalog.as_ref())).await??)
    }
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(ingest::routes(&state))
        .merge(browse::routes())
        .merge(groups::routes())
        .merge(ui::routes())
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

async fn metrics(State(st): State<AppState>) -> Result<String, error::AppError> {
    let (entries, bytes) = st.with_catalog(|c| c.totals()).await?;
    let open = st.with_catalog(|c| c.sessions()).await?.len() as u64;
    let members = st.groups.members() as u64;
    Ok(st.metrics.render(&[
        (
            "collector_catalog_snapshots",
            "Snapshots in the catalog.",
            entries,
        ),
        (
            "collector_catalog_size_bytes",
            "Bytes of the snapshots in the catalog.",
            bytes,
        ),
        ("collector_uploads_open", "Upload sessions open.", open),
        (
            "collector_group_members",
            "Recorders registered in a group through this collector (not other replicas).",
            members,
        ),
    ]))
}

/// `CLOCK_REALTIME` now, ns.
pub fn now_realtime_ns() -> u64 {
    schemas::clock::realtime_ns()
}
