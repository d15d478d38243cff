//! The shared catalog: PostgreSQL, for several collector replicas behind a load balancer.
//!
//! The same tables and queries as [`super::sqlite`]: each entry is kept whole as JSON beside
//! the columns the browse filters and the cursor sort on, with one index per filter. The
//! schema is versioned: start-up applies the missing [`MIGRATIONS`] in order, each in its own
//! transaction under an advisory lock so that replicas starting together apply it once.
//!
//! Connections come from an r2d2 pool of blocking `postgres` clients (the [`Catalog`] trait
//! is synchronous and called from `spawn_blocking`). Each checkout is validated, so after the
//! database restarts the dead connections are dropped and new ones made: the collector
//! recovers without a restart. While the database is down every call fails within
//! `connect_timeout` with one sentence saying so.
//!
//! TLS: libpq's `sslmode` and `sslrootcert` in the URL's query. `verify-full` checks the
//! server's certificate chain against `sslrootcert` (PEM; the public web roots without it)
//! and its name against the host connected to; `require` and `verify-ca` check the chain
//! only (as libpq does when it has a root certificate). Without them, or with `disable`,
//! `allow` or `prefer`, connections are plain: TLS is never tried and silently dropped.
//! rustls on ring, as the rest of the collector.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use postgres::Client;
use postgres::types::ToSql;
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    Catalog, CatalogError, Entry, GROUP_LEASE_NS, GroupMember, GroupTrigger, Page, Query, Session,
    TriggerSink, json, to_i64, to_json,
};

/// The schema, one migration per version; a migration, once released, never changes.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "
CREATE TABLE snapshots (
    snapshot_id TEXT PRIMARY KEY,
    frozen_realtime_ns BIGINT NOT NULL,
    host_id TEXT NOT NULL,
    trigger_source TEXT NOT NULL,
    trigger_reason TEXT NOT NULL,
    trigger_id TEXT,
    group_name TEXT,
    bytes BIGINT NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX snapshots_time ON snapshots (frozen_realtime_ns, snapshot_id);
CREATE INDEX snapshots_host ON snapshots (host_id, frozen_realtime_ns, snapshot_id);
CREATE INDEX snapshots_source ON snapshots (trigger_source, frozen_realtime_ns, snapshot_id);
CREATE INDEX snapshots_group ON snapshots (group_name, frozen_realtime_ns, snapshot_id);
CREATE INDEX snapshots_trigger ON snapshots (trigger_id);
CREATE TABLE tags (
    tag TEXT NOT NULL,
    snapshot_id TEXT NOT NULL REFERENCES snapshots (snapshot_id) ON DELETE CASCADE,
    PRIMARY KEY (tag, snapshot_id)
);
CREATE INDEX tags_snapshot ON tags (snapshot_id);
CREATE TABLE sessions (
    snapshot_id TEXT PRIMARY KEY,
    session TEXT NOT NULL,
    staged BIGINT NOT NULL
);
CREATE TABLE group_triggers (
    trigger_id TEXT PRIMARY KEY,
    trigger TEXT NOT NULL
);
",
    ),
    (
        2,
        "
ALTER TABLE sessions ADD COLUMN touched_ns BIGINT NOT NULL DEFAULT 0;
CREATE TABLE staged_chunks (
    snapshot_id TEXT NOT NULL REFERENCES sessions (snapshot_id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (snapshot_id, at)
);
",
    ),
    (
        3,
        "
CREATE TABLE group_members (
    group_name TEXT NOT NULL,
    host_id TEXT NOT NULL,
    since_ns BIGINT NOT NULL,
    replica TEXT NOT NULL,
    seen_ns BIGINT NOT NULL,
    PRIMARY KEY (group_name, host_id)
);
CREATE INDEX group_members_replica ON group_members (replica);
",
    ),
    (
        4,
        "ALTER TABLE staged_chunks ALTER COLUMN data SET STORAGE EXTERNAL;",
    ),
];

/// Advisory lock key held while migrations run ("flightrc" in ASCII).
const MIGRATION_LOCK: i64 = 0x666c_6967_6874_7263;

type Pool = r2d2::Pool<PostgresConnectionManager<MakeRustlsConnect>>;
type Conn = r2d2::PooledConnection<PostgresConnectionManager<MakeRustlsConnect>>;

/// Pool settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// Connections at most.
    pub max_connections: u32,
    /// How long a call waits for a connection (and so how soon it fails while the database is
    /// down).
    pub connect_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The PostgreSQL catalog.
pub struct PgCatalog {
    /// `None` only while being dropped.
    pool: Option<Pool>,
    /// For the LISTEN connection, which is not pooled.
    config: postgres::Config,
    /// Its TLS (unused when the URL does not ask for TLS).
    tls: MakeRustlsConnect,
    /// Why the pool last failed to connect.
    last_error: LastError,
    /// This process's id in trigger notifications, so that it skips its own.
    origin: String,
    /// Tells the LISTEN thread to end.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The URL without its password, for messages.
    shown: String,
}

impl std::fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCatalog")
            .field("url", &self.shown)
            .finish()
    }
}

/// `url` with the password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    match auth {
        Some(a) => match a.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{a}@{host}"),
        },
        None => url.to_owned(),
    }
}

/// Whether `url` is a PostgreSQL URL the catalog accepts; the error is one sentence.
pub fn check_url(url: &str) -> Result<(), String> {
    parse_url(url).map(drop)
}

/// The pool's last connection error, in one line ([`one_line`]): r2d2 keeps only the
/// driver's first line, which for a refusal by the server is "db error".
#[derive(Clone, Debug, Default)]
struct LastError(Arc<std::sync::Mutex<Option<String>>>);

impl LastError {
    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl r2d2::HandleError<postgres::Error> for LastError {
    fn handle_error(&self, e: postgres::Error) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(one_line(&e));
    }
}

/// How the catalog's connections are secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    /// Plain connections.
    Off,
    /// TLS; the certificate chain is verified, not the name.
    VerifyCa,
    /// TLS; the certificate chain and the name are verified.
    VerifyFull,
}

/// The driver's configuration of `url`, its TLS mode and CA file. `sslmode` and
/// `sslrootcert` are taken off the query first: the driver knows neither `verify-ca`,
/// `verify-full` nor `sslrootcert`.
fn parse_url(url: &str) -> Result<(postgres::Config, TlsMode, Option<PathBuf>), String> {
    let shown = redact_url(url);
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "catalog.url {shown:?} must start with postgres:// (or be empty for the embedded SQLite catalog)"
        ));
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut mode, mut ca) = (TlsMode::Off, None);
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => {
                mode = match v {
                    "disable" | "allow" | "prefer" => TlsMode::Off,
                    "require" | "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    _ => {
                        return Err(format!(
                            "catalog.url {shown:?}: sslmode must be disable, require, verify-ca or verify-full, not {v:?}"
                        ));
                    }
                }
            }
            Some(("sslrootcert", v)) => ca = Some(PathBuf::from(v)),
            _ => rest.push(pair),
        }
    }
    if ca.is_some() && mode == TlsMode::Off {
        return Err(format!(
            "catalog.url {shown:?}: sslrootcert is given but sslmode does not ask for TLS (require, verify-ca or verify-full)"
        ));
    }
    let plain = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut config: postgres::Config = plain
        .parse()
        .map_err(|e| format!("catalog.url {shown:?}: {e}"))?;
    config.ssl_mode(match mode {
        TlsMode::Off => postgres::config::SslMode::Disable,
        _ => postgres::config::SslMode::Require,
    });
    Ok((config, mode, ca))
}

/// The TLS connector for `mode`: rustls on ring, trusting the certificates in `ca` (PEM) or,
/// without it, the public web roots.
fn tls_connector(mode: TlsMode, ca: Option<&std::path::Path>) -> Result<MakeRustlsConnect, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|c| c.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("catalog.url sslrootcert {shown}: {e}"))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "catalog.url sslrootcert {shown}: no usable certificate in it"
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("catalog.url: TLS: {e}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("catalog.url: TLS: {e}"))?;
    let config = match mode {
        TlsMode::VerifyCa => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier))),
        TlsMode::Off | TlsMode::VerifyFull => builder.with_webpki_verifier(verifier),
    }
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `verify-ca`: the chain up to a trusted root, whatever name the certificate is for.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

impl PgCatalog {
    /// Connects to `url`, applies the missing migrations and returns the catalog. Fails if
    /// the database cannot be reached now: a collector does not start without its catalog.
    pub fn open(url: &str, options: PoolOptions) -> Result<PgCatalog, CatalogError> {
        let shown = redact_url(url);
        let (mut config, mode, ca) = parse_url(url).map_err(CatalogError::Value)?;
        let tls = tls_connector(mode, ca.as_deref()).map_err(CatalogError::Value)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("flightrec-collector");
        }
        let manager = PostgresConnectionManager::new(config.clone(), tls.clone());
        let last_error = LastError::default();
        let pool = r2d2::Pool::builder()
            .max_size(options.max_connections)
            .min_idle(Some(0))
            .connection_timeout(options.connect_timeout)
            .test_on_check_out(true)
            .error_handler(Box::new(last_error.clone()))
            .build_unchecked(manager);
        let catalog = PgCatalog {
            pool: Some(pool),
            config,
            tls,
            last_error,
            origin: schemas::clock::random_id(),
            stop: Default::default(),
            shown,
        };
        // The blocking client drives its own runtime, which may not start on an async task's
        // thread: the collector opens its catalog from one.
        std::thread::scope(|s| s.spawn(|| catalog.migrate()).join())
            .map_err(|_| CatalogError::Value("catalog migration panicked".into()))??;
        Ok(catalog)
    }

    /// The notice of `t` with the trigger in it, if it fits in a NOTIFY payload.
    fn whole_notice(&self, t: &GroupTrigger) -> Option<String> {
        let whole = to_json(&Notice {
            origin: self.origin.clone(),
            trigger_id: t.trigger_id.clone(),
            trigger: Some(t.clone()),
        });
        (whole.len() < 7000).then_some(whole)
    }

    fn pool(&self) -> &Pool {
        self.pool.as_ref().expect("the pool lives until drop")
    }

    /// The URL, password hidden.
    pub fn url(&self) -> &str {
        &self.shown
    }

    fn unavailable(&self, why: impl std::fmt::Display) -> CatalogError {
        CatalogError::Unavailable(format!(
            "PostgreSQL catalog at {} is unreachable: {why}",
            self.shown
        ))
    }

    fn db(&self, e: postgres::Error) -> CatalogError {
        // Connection exceptions (08...), the server shutting down or starting (57P01..3).
        let going_away = e.code().is_some_and(|c| {
            let c = c.code();
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
        });
        if e.is_closed() || e.code().is_none() || going_away {
            // No SQLSTATE: the connection broke (refused, reset, shut down).
            self.unavailable(one_line(&e))
        } else {
            CatalogError::Pg(one_line(&e))
        }
    }

    fn conn(&self) -> Result<Conn, CatalogError> {
        match self.pool().get() {
            Ok(c) => {
                self.last_error.take();
                Ok(c)
            }
            // r2d2 says "timed out waiting for connection: <the error's first line>"; the
            // pool's error handler kept the whole of it.
            Err(e) => Err(self.unavailable(self.last_error.take().unwrap_or_else(|| {
                let why = e.to_string();
                why.strip_prefix("timed out waiting for connection: ")
                    .unwrap_or(&why)
                    .to_owned()
            }))),
        }
    }

    /// Runs `f` on a pooled connection; once more on a fresh one if the first broke mid-call
    /// (the database restarted since the connection was validated).
    fn run<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, CatalogError> {
        let mut conn = self.conn()?;
        match f(&mut conn) {
            Ok(v) => Ok(v),
            Err(e) if e.is_closed() || conn.is_closed() => {
                drop(conn);
                let mut conn = self.conn()?;
                f(&mut conn).map_err(|e| self.db(e))
            }
            Err(e) => Err(self.db(e)),
        }
    }

    fn migrate(&self) -> Result<(), CatalogError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(|e| self.db(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(|e| self.db(e))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .map_err(|e| self.db(e))?;
        let current: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(|e| self.db(e))?
            .get(0);
        let newest = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > newest {
            return Err(CatalogError::Value(format!(
                "the PostgreSQL catalog at {} has schema version {current}, newer than this \
                 collector's {newest}: upgrade the collector",
                self.shown
            )));
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.batch_execute(sql)
                .map_err(|e| CatalogError::Pg(format!("migration {version}: {}", one_line(&e))))?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[version],
            )
            .map_err(|e| self.db(e))?;
            tracing::info!(version, "catalog migration applied");
        }
        tx.commit().map_err(|e| self.db(e))
    }

    /// The schema version in force.
    pub fn schema_version(&self) -> Result<i32, CatalogError> {
        self.run(|c| {
            Ok(
                c.query_one("SELECT max(version) FROM schema_migrations", &[])?
                    .get(0),
            )
        })
    }

    /// Inserts many entries in one transaction (benchmarks and imports).
    pub fn insert_many(&self, entries: &[Entry]) -> Result<(), CatalogError> {
        self.run(|c| {
            let mut tx = c.transaction()?;
            for e in entries {
                insert_in(&mut tx, e)?;
            }
            tx.commit()
        })
    }

    /// Runs `f` if this replica takes the advisory lock `key` (held for the duration of `f`,
    /// on one connection); `None` if another replica holds it. Retention runs under one, so
    /// it runs once across replicas.
    pub fn with_advisory_lock<T>(
        &self,
        key: i64,
        f: impl FnOnce() -> T,
    ) -> Result<Option<T>, CatalogError> {
        let mut conn = self.conn()?;
        let got: bool = conn
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .map_err(|e| self.db(e))?
            .get(0);
        if !got {
            return Ok(None);
        }
        let out = f();
        // If this fails the connection is broken, and the lock went with its session.
        let _ = conn.execute("SELECT pg_advisory_unlock($1)", &[&key]);
        Ok(Some(out))
    }
}

impl Drop for PgCatalog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Closing a blocking client runs its own runtime, which may not start on an async
        // task's thread, where the collector's state may be dropped: close them on another.
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

/// The NOTIFY channel of group triggers.
const TRIGGER_CHANNEL: &str = "flightrec_group_triggers";

/// A group trigger as announced to the other replicas.
#[derive(serde::Serialize, serde::Deserialize)]
struct Notice {
    origin: String,
    trigger_id: String,
    trigger: Option<GroupTrigger>,
}

/// Holds a LISTEN connection until `stop`, reconnecting whenever it breaks (the database
/// restarted), and hands each other replica's trigger to `deliver`.
fn listen_loop(
    config: &postgres::Config,
    tls: &MakeRustlsConnect,
    origin: &str,
    stop: &std::sync::atomic::AtomicBool,
    pool: &Pool,
    shown: &str,
    deliver: &TriggerSink,
) {
    use postgres::fallible_iterator::FallibleIterator;
    use std::sync::atomic::Ordering;
    let mut down_since: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let mut client = match config.connect(tls.clone()) {
            Ok(c) => c,
            Err(e) => {
                if down_since.is_none() {
                    tracing::warn!(catalog = shown, error = %one_line(&e),
                        "group triggers of other replicas are not heard until the catalog is back");
                    down_since = Some(std::time::Instant::now());
                }
                std::thread::sleep(Duration::from_millis(250));
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {TRIGGER_CHANNEL}")) {
            tracing::warn!(catalog = shown, error = %one_line(&e), "LISTEN failed");
            std::thread::sleep(Duration::from_millis(250));
            continue;
        }
        if let Some(t) = down_since.take() {
            tracing::info!(catalog = shown, after = ?t.elapsed(), "hearing other replicas' group triggers again");
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let next = client
                .notifications()
                .timeout_iter(Duration::from_millis(200))
                .next();
            match next {
                Ok(Some(note)) => {
                    let Ok(notice) = serde_json::from_str::<Notice>(note.payload()) else {
                        continue;
                    };
                    if notice.origin == origin {
                        continue;
                    }
                    let trigger = match notice.trigger {
                        Some(t) => Some(t),
                        None => load_trigger(pool, &notice.trigger_id),
                    };
                    if let Some(t) = trigger {
                        deliver(t);
                    }
                }
                Ok(None) => {
                    // Quiet: is the connection still there?
                    if client.is_closed() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(catalog = shown, error = %one_line(&e), "LISTEN connection lost");
                    break;
                }
            }
        }
    }
}

/// `members` as the arrays `UNNEST` takes: groups, hosts, registration times.
fn member_columns(members: &[GroupMember]) -> (Vec<&str>, Vec<&str>, Vec<i64>) {
    (
        members.iter().map(|m| m.group.as_str()).collect(),
        members.iter().map(|m| m.host_id.as_str()).collect(),
        members
            .iter()
            .map(|m| to_i64(m.since_realtime_ns))
            .collect(),
    )
}

/// Records or renews `members` (all of one replica). A host's registration replaces the one
/// in the table if it is as new or newer, or if that one's lease ran out.
fn upsert_members(
    c: &mut impl postgres::GenericClient,
    members: &[GroupMember],
) -> Result<u64, postgres::Error> {
    let Some(replica) = members.first().map(|m| m.replica.as_str()) else {
        return Ok(0);
    };
    let (groups, hosts, since) = member_columns(members);
    c.execute(
        &format!(
            "INSERT INTO group_members (group_name, host_id, since_ns, replica, seen_ns) \
             SELECT g, h, s, $4, {DB_NOW_NS} \
             FROM UNNEST($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS m (g, h, s) \
             ON CONFLICT (group_name, host_id) DO UPDATE \
             SET since_ns = EXCLUDED.since_ns, replica = EXCLUDED.replica, \
                 seen_ns = EXCLUDED.seen_ns \
             WHERE group_members.since_ns <= EXCLUDED.since_ns \
                OR group_members.seen_ns < {DB_NOW_NS} - $5"
        ),
        &[&groups, &hosts, &since, &replica, &to_i64(GROUP_LEASE_NS)],
    )
}

/// The database server's clock in ns: group leases are renewed and expire by one clock, so
/// replicas whose clocks disagree do not expire each other's registrations.
const DB_NOW_NS: &str = "(extract(epoch FROM clock_timestamp()) * 1e9)::BIGINT";

fn load_trigger(pool: &Pool, trigger_id: &str) -> Option<GroupTrigger> {
    let mut c = pool.get().ok()?;
    let row = c
        .query_opt(
            "SELECT trigger FROM group_triggers WHERE trigger_id = $1",
            &[&trigger_id],
        )
        .ok()??;
    serde_json::from_str(row.get::<_, &str>(0)).ok()
}

/// A driver error in one line: its message and, for a database error, its detail.
fn one_line(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s.replace('\n', " ")
}

fn insert_in(c: &mut impl postgres::GenericClient, e: &Entry) -> Result<bool, postgres::Error> {
    let n = c.execute(
        "INSERT INTO snapshots (snapshot_id, frozen_realtime_ns, host_id, trigger_source, \
         trigger_reason, trigger_id, group_name, bytes, entry) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (snapshot_id) DO NOTHING",
        &[
            &e.snapshot_id,
            &to_i64(e.frozen_realtime_ns),
            &e.host_id,
            &e.trigger_source,
            &e.trigger_reason,
            &e.trigger_id,
            &e.group,
            &to_i64(e.bytes),
            &to_json(e),
        ],
    )?;
    if n == 0 {
        return Ok(false);
    }
    for tag in &e.tags {
        c.execute(
            "INSERT INTO tags (tag, snapshot_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[tag, &e.snapshot_id],
        )?;
    }
    Ok(true)
}

fn now_ns() -> i64 {
    to_i64(crate::now_realtime_ns())
}

fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let (ts, id) = c.split_once(':')?;
    Some((ts.parse().ok()?, id.to_owned()))
}

fn session_of(text: &str, staged: i64) -> Result<Session, CatalogError> {
    let mut s: Session = json(text)?;
    s.offset = staged as u64;
    Ok(s)
}

impl Catalog for PgCatalog {
    fn insert(&self, entry: &Entry) -> Result<bool, CatalogError> {
        self.run(|c| {
            let mut tx = c.transaction()?;
            let added = insert_in(&mut tx, entry)?;
            tx.commit()?;
            Ok(added)
        })
    }

    fn get(&self, snapshot_id: &str) -> Result<Option<Entry>, CatalogError> {
        let row = self.run(|c| {
            c.query_opt(
                "SELECT entry FROM snapshots WHERE snapshot_id = $1",
                &[&snapshot_id],
            )
        })?;
        row.map(|r| json(r.get::<_, &str>(0))).transpose()
    }

    fn list(&self, q: &Query) -> Result<Page, CatalogError> {
        let limit = q.limit.unwrap_or(50).clamp(1, 1000);
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
        let mut arg = |cond: &str, v: Box<dyn ToSql + Sync>, args: &mut Vec<_>| {
            args.push(v);
            conds.push(cond.replace('?', &format!("${}", args.len())));
        };
        if let Some(h) = &q.host {
            arg("host_id = ?", Box::new(h.clone()), &mut args);
        }
        if let Some(s) = &q.source {
            arg("trigger_source = ?", Box::new(s.clone()), &mut args);
        }
        if let Some(g) = &q.group {
            arg("group_name = ?", Box::new(g.clone()), &mut args);
        }
        if let Some(t) = &q.trigger_id {
            arg("trigger_id = ?", Box::new(t.clone()), &mut args);
        }
        if let Some(r) = &q.reason {
            arg(
                "strpos(trigger_reason, ?) > 0",
                Box::new(r.clone()),
                &mut args,
            );
        }
        if let Some(t) = &q.tag {
            arg(
                "snapshot_id IN (SELECT snapshot_id FROM tags WHERE tag = ?)",
                Box::new(t.clone()),
                &mut args,
            );
        }
        if let Some(f) = q.from_ns {
            arg("frozen_realtime_ns >= ?", Box::new(to_i64(f)), &mut args);
        }
        if let Some(t) = q.to_ns {
            arg("frozen_realtime_ns < ?", Box::new(to_i64(t)), &mut args);
        }
        if let Some(c) = &q.cursor {
            let (ts, id) =
                parse_cursor(c).ok_or_else(|| CatalogError::Value("bad cursor".into()))?;
            args.push(Box::new(ts));
            args.push(Box::new(id));
            let (a, b) = (args.len() - 1, args.len());
            // A row comparison, which PostgreSQL answers from the (.., time, id) indexes.
            conds.push(format!("(frozen_realtime_ns, snapshot_id) < (${a}, ${b})"));
        }
        let mut sql = String::from("SELECT entry, frozen_realtime_ns, snapshot_id FROM snapshots");
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        args.push(Box::new(i64::from(limit) + 1));
        sql.push_str(&format!(
            " ORDER BY frozen_realtime_ns DESC, snapshot_id DESC LIMIT ${}",
            args.len()
        ));
        let refs: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref()).collect();
        let rows = self.run(|c| c.query(&sql, &refs))?;
        let mut items = Vec::new();
        let mut next_cursor = None;
        let mut last = None;
        for row in rows {
            if items.len() == limit as usize {
                next_cursor = last.take();
                break;
            }
            let ts: i64 = row.get(1);
            let id: &str = row.get(2);
            items.push(json(row.get::<_, &str>(0))?);
            last = Some(format!("{ts}:{id}"));
        }
        Ok(Page { items, next_cursor })
    }

    fn remove(&self, snapshot_id: &str) -> Result<bool, CatalogError> {
        // Tags go with the row (ON DELETE CASCADE).
        let n = self.run(|c| {
            c.execute(
                "DELETE FROM snapshots WHERE snapshot_id = $1",
                &[&snapshot_id],
            )
        })?;
        Ok(n > 0)
    }

    fn totals(&self) -> Result<(u64, u64), CatalogError> {
        let row = self.run(|c| {
            c.query_one(
                "SELECT count(*), coalesce(sum(bytes), 0)::BIGINT FROM snapshots",
                &[],
            )
        })?;
        Ok((row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64))
    }

    fn oldest(&self, n: u32, before_ns: Option<u64>) -> Result<Vec<Entry>, CatalogError> {
        let before = before_ns.map(to_i64).unwrap_or(i64::MAX);
        let rows = self.run(|c| {
            c.query(
                "SELECT entry FROM snapshots WHERE frozen_realtime_ns < $1 \
                 ORDER BY frozen_realtime_ns, snapshot_id LIMIT $2",
                &[&before, &i64::from(n)],
            )
        })?;
        rows.iter().map(|r| json(r.get::<_, &str>(0))).collect()
    }

    fn open_session(&self, s: &Session) -> Result<Session, CatalogError> {
        // Two replicas opening the same snapshot at once: one insert wins, both read it.
        let row = self.run(|c| {
            c.execute(
                "INSERT INTO sessions (snapshot_id, session, staged) VALUES ($1, $2, $3) \
                 ON CONFLICT (snapshot_id) DO NOTHING",
                &[&s.snapshot_id, &to_json(s), &to_i64(s.offset)],
            )?;
            c.query_one(
                "SELECT session, staged FROM sessions WHERE snapshot_id = $1",
                &[&s.snapshot_id],
            )
        })?;
        session_of(row.get(0), row.get(1))
    }

    fn session(&self, snapshot_id: &str) -> Result<Option<Session>, CatalogError> {
        let row = self.run(|c| {
            c.query_opt(
                "SELECT session, staged FROM sessions WHERE snapshot_id = $1",
                &[&snapshot_id],
            )
        })?;
        row.map(|r| session_of(r.get(0), r.get(1))).transpose()
    }

    fn set_offset(&self, snapshot_id: &str, offset: u64) -> Result<(), CatalogError> {
        self.run(|c| {
            c.execute(
                "UPDATE sessions SET staged = $2, touched_ns = $3 WHERE snapshot_id = $1",
                &[&snapshot_id, &to_i64(offset), &now_ns()],
            )
        })?;
        Ok(())
    }

    fn close_session(&self, snapshot_id: &str) -> Result<(), CatalogError> {
        self.run(|c| {
            c.execute(
                "DELETE FROM sessions WHERE snapshot_id = $1",
                &[&snapshot_id],
            )
        })?;
        Ok(())
    }

    fn sessions(&self) -> Result<Vec<Session>, CatalogError> {
        let rows = self.run(|c| c.query("SELECT session, staged FROM sessions", &[]))?;
        rows.iter()
            .map(|r| session_of(r.get(0), r.get(1)))
            .collect()
    }

    fn announce_trigger(&self, t: &GroupTrigger) -> Result<(), CatalogError> {
        // On its own, before the trigger is recorded: a transaction that writes nothing
        // commits without waiting for the disk, and the other replicas hear of it on commit.
        if let Some(payload) = self.whole_notice(t) {
            self.run(|c| c.execute("SELECT pg_notify($1, $2)", &[&TRIGGER_CHANNEL, &payload]))?;
        }
        Ok(())
    }

    fn insert_trigger(&self, t: &GroupTrigger) -> Result<(), CatalogError> {
        // A NOTIFY payload is at most 8000 bytes: a trigger with large fields is announced
        // by id on the commit that records it, and the listeners read it from the table.
        let by_id = self.whole_notice(t).is_none().then(|| {
            to_json(&Notice {
                origin: self.origin.clone(),
                trigger_id: t.trigger_id.clone(),
                trigger: None,
            })
        });
        self.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO group_triggers (trigger_id, trigger) VALUES ($1, $2) \
                 ON CONFLICT (trigger_id) DO UPDATE SET trigger = EXCLUDED.trigger",
                &[&t.trigger_id, &to_json(t)],
            )?;
            if let Some(payload) = &by_id {
                tx.execute("SELECT pg_notify($1, $2)", &[&TRIGGER_CHANNEL, payload])?;
            }
            tx.commit()
        })?;
        Ok(())
    }

    fn shares_groups(&self) -> bool {
        true
    }

    fn join_group(&self, members: &[GroupMember]) -> Result<(), CatalogError> {
        self.run(|c| upsert_members(c, members).map(drop))
    }

    fn renew_groups(
        &self,
        replica: &str,
        members: &[GroupMember],
        at: u64,
    ) -> Result<(), CatalogError> {
        let (groups, hosts, since) = member_columns(members);
        self.run(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "DELETE FROM group_members WHERE replica = $1 AND since_ns <= $5 \
                 AND (group_name, host_id, since_ns) \
                 NOT IN (SELECT * FROM UNNEST($2::TEXT[], $3::TEXT[], $4::BIGINT[]))",
                &[&replica, &groups, &hosts, &since, &to_i64(at)],
            )?;
            // Whoever renews also clears registrations of collectors long gone.
            tx.execute(
                &format!("DELETE FROM group_members WHERE seen_ns < {DB_NOW_NS} - $1"),
                &[&(10 * to_i64(GROUP_LEASE_NS))],
            )?;
            upsert_members(&mut tx, members)?;
            tx.commit()
        })
    }

    fn leave_group(&self, m: &GroupMember) -> Result<(), CatalogError> {
        self.run(|c| {
            c.execute(
                "DELETE FROM group_members \
                 WHERE group_name = $1 AND host_id = $2 AND replica = $3 AND since_ns = $4",
                &[
                    &m.group,
                    &m.host_id,
                    &m.replica,
                    &to_i64(m.since_realtime_ns),
                ],
            )
        })?;
        Ok(())
    }

    fn group_members(&self, group: Option<&str>) -> Result<Vec<GroupMember>, CatalogError> {
        let rows = self.run(|c| {
            c.query(
                &format!(
                    "SELECT group_name, host_id, since_ns, replica FROM group_members \
                     WHERE seen_ns >= {DB_NOW_NS} - $1 AND ($2::TEXT IS NULL OR group_name = $2) \
                     ORDER BY group_name, host_id"
                ),
                &[&to_i64(GROUP_LEASE_NS), &group],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| GroupMember {
                group: r.get(0),
                host_id: r.get(1),
                since_realtime_ns: r.get::<_, i64>(2) as u64,
                replica: r.get(3),
            })
            .collect())
    }

    fn subscribe_triggers(&self, deliver: TriggerSink) -> Result<(), CatalogError> {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let origin = self.origin.clone();
        let stop = self.stop.clone();
        let pool = self.pool().clone();
        let shown = self.shown.clone();
        std::thread::Builder::new()
            .name("catalog-listen".into())
            .spawn(move || listen_loop(&config, &tls, &origin, &stop, &pool, &shown, &deliver))
            .map_err(|e| CatalogError::Value(format!("starting the LISTEN thread: {e}")))?;
        Ok(())
    }

    fn trigger(&self, trigger_id: &str) -> Result<Option<GroupTrigger>, CatalogError> {
        let row = self.run(|c| {
            c.query_opt(
                "SELECT trigger FROM group_triggers WHERE trigger_id = $1",
                &[&trigger_id],
            )
        })?;
        row.map(|r| json(r.get::<_, &str>(0))).transpose()
    }

    fn shares_staging(&self) -> bool {
        true
    }

    fn stage_chunk(&self, snapshot_id: &str, at: u64, data: &[u8]) -> Result<bool, CatalogError> {
        let end = to_i64(at + data.len() as u64);
        let at = to_i64(at);
        self.run(|c| {
            let mut tx = c.transaction()?;
            // Moves the offset only from `at`, and locks the session row meanwhile: of two
            // replicas taking the same chunk, one wins and the other rolls back.
            let moved = tx.execute(
                "UPDATE sessions SET staged = $3, touched_ns = $4 \
                 WHERE snapshot_id = $1 AND staged = $2",
                &[&snapshot_id, &at, &end, &now_ns()],
            )?;
            if moved == 0 {
                return Ok(false);
            }
            tx.execute(
                "DELETE FROM staged_chunks WHERE snapshot_id = $1 AND at >= $2",
                &[&snapshot_id, &at],
            )?;
            tx.execute(
                "INSERT INTO staged_chunks (snapshot_id, at, data) VALUES ($1, $2, $3)",
                &[&snapshot_id, &at, &data],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn read_staged(
        &self,
        snapshot_id: &str,
        to: u64,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, CatalogError> {
        let mut conn = self.conn()?;
        let mut done = 0u64;
        // One chunk per query, so a 1 GiB upload is never held in memory whole.
        while done < to {
            let row = conn
                .query_opt(
                    "SELECT data FROM staged_chunks WHERE snapshot_id = $1 AND at = $2",
                    &[&snapshot_id, &to_i64(done)],
                )
                .map_err(|e| self.db(e))?;
            let Some(row) = row else { break };
            let data: &[u8] = row.get(0);
            if data.is_empty() {
                break;
            }
            let take = data.len().min((to - done) as usize);
            sink(&data[..take])
                .map_err(|e| CatalogError::Value(format!("writing staged bytes: {e}")))?;
            done += take as u64;
        }
        Ok(done)
    }

    fn touched_ns(&self, snapshot_id: &str) -> Result<Option<u64>, CatalogError> {
        let row = self.run(|c| {
            c.query_opt(
                "SELECT touched_ns FROM sessions WHERE snapshot_id = $1",
                &[&snapshot_id],
            )
        })?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }

    fn exclusive(&self, key: i64, f: &mut dyn FnMut()) -> Result<bool, CatalogError> {
        Ok(self.with_advisory_lock(key, f)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls() {
        assert_eq!(
            super::redact_url("postgres://fr:secret@db:5432/flightrec"),
            "postgres://fr:***@db:5432/flightrec"
        );
        assert_eq!(
            super::redact_url("postgres://db/flightrec"),
            "postgres://db/flightrec"
        );
        assert!(super::check_url("postgres://fr@127.0.0.1:5432/flightrec").is_ok());
        assert!(super::check_url("postgresql:///flightrec?host=/run/postgresql").is_ok());
        assert!(super::check_url("mysql://x/y").is_err());
    }

    #[test]
    fn tls_options() {
        use super::{TlsMode, parse_url};
        use postgres::config::SslMode;
        let (c, mode, ca) =
            parse_url("postgres://fr@db/flightrec?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x")
                .unwrap();
        assert_eq!(
            (mode, ca.as_deref()),
            (
                TlsMode::VerifyFull,
                Some(std::path::Path::new("/etc/ca.pem"))
            )
        );
        assert_eq!(c.get_ssl_mode(), SslMode::Require);
        assert_eq!(c.get_application_name(), Some("x"));
        for (q, want) in [
            ("", TlsMode::Off),
            ("?sslmode=prefer", TlsMode::Off),
            ("?sslmode=disable", TlsMode::Off),
            ("?sslmode=require", TlsMode::VerifyCa),
            ("?sslmode=verify-ca", TlsMode::VerifyCa),
        ] {
            let (c, mode, _) = parse_url(&format!("postgres://db/f{q}")).unwrap();
            assert_eq!(mode, want, "{q}");
            // Never the driver's default `prefer`: TLS is asked for, or not tried.
            let driver = if want == TlsMode::Off {
                SslMode::Disable
            } else {
                SslMode::Require
            };
            assert_eq!(c.get_ssl_mode(), driver, "{q}");
        }
        let e = parse_url("postgres://u:pw@db/f?sslmode=verify").unwrap_err();
        assert!(e.contains("sslmode must be") && !e.contains("pw"), "{e}");
        let e = parse_url("postgres://db/f?sslrootcert=/ca.pem").unwrap_err();
        assert!(e.contains("does not ask for TLS"), "{e}");
        let e = super::tls_connector(
            TlsMode::VerifyFull,
            Some(std::path::Path::new("/nonexistent/ca.pem")),
        )
        .err()
        .unwrap();
        assert!(
            e.starts_with("catalog.url sslrootcert /nonexistent/ca.pem: "),
            "{e}"
        );
    }
}
