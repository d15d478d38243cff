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
pub mod error;
pub mod groups;
pub mod ingest;
pub mod metrics;
pub mod retention;
pub mod ui;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::archive::Archive;
use crate::catalog::Catalog;
use crate::catalog::sqlite::SqliteCatalog;
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
    /// Recorders registered in groups.
    pub groups: Arc<groups::Registry>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// Opens the catalog, archive and directories the configuration names.
    pub fn open(config: Config) -> Result<AppState, StartError> {
        config.check()?;
        // rustls is built without a default crypto provider (no C toolchain for aws-lc): name
        // ring once per process, before the S3 client or the TLS server needs one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let data = &config.storage.data_dir;
        let dir = |name: &str| -> Result<PathBuf, StartError> {
            let p = data.join(name);
            std::fs::create_dir_all(&p).map_err(|source| StartError::Io {
                what: format!("creating {}", p.display()),
                source,
            })?;
            Ok(p)
        };
        let staging = dir("staging")?;
        let cache = dir("cache")?;
        let catalog = SqliteCatalog::open(&data.join("catalog.sqlite"))?;
        let archive = Archive::open(&config)?;
        Ok(AppState {
            limits: config.limits()?,
            config: Arc::new(config),
            catalog: Arc::new(catalog),
            archive: Arc::new(archive),
            staging: Arc::new(staging),
            cache: Arc::new(cache),
            upload_locks: Default::default(),
            groups: Default::default(),
            metrics: Default::default(),
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
            "Recorders registered in a group.",
            members,
        ),
    ]))
}

/// Loads the TLS certificate and key named in the configuration.
fn tls_config(config: &Config) -> Result<Arc<rustls::ServerConfig>, StartError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&config.server.tls_cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            StartError::Tls(format!("reading {}: {e}", config.server.tls_cert.display()))
        })?;
    let key = PrivateKeyDer::from_pem_file(&config.server.tls_key).map_err(|e| {
        StartError::Tls(format!("reading {}: {e}", config.server.tls_key.display()))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Serves `state` on `listener` (plain HTTP or HTTPS as configured) with retention running,
/// until `shutdown` resolves.
pub async fn serve(
    state: AppState,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| StartError::Io { what, source }
    };
    listener
        .set_nonblocking(true)
        .map_err(io("configuring the listener"))?;
    let retention = tokio::spawn(retention::run(state.clone()));
    let tls = state
        .config
        .tls_enabled()
        .then(|| tls_config(&state.config))
        .transpose()?;
    let router = app(state);
    let res = match tls {
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
            });
            axum_server::from_tcp_rustls(
                listener,
                axum_server::tls_rustls::RustlsConfig::from_config(tls),
            )
            .handle(handle)
            .serve(router.into_make_service())
            .await
            .map_err(io("serving HTTPS"))
        }
        None => {
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(io("adopting the listener"))?;
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(io("serving HTTP"))
        }
    };
    retention.abort();
    res
}

/// `CLOCK_REALTIME` now, ns.
pub fn now_realtime_ns() -> u64 {
    schemas::clock::realtime_ns()
}
