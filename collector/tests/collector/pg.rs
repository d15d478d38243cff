//! A real PostgreSQL for tests: Debian's `initdb` and `pg_ctl` (PostgreSQL 15) on a cluster in
//! a temporary directory, listening on a free loopback port and a Unix socket in that
//! directory, run as an unprivileged user (PostgreSQL refuses root: under root the cluster
//! belongs to the `postgres` user, created if missing). Stopped and removed on drop.
//!
//! `FLIGHTREC_TEST_CATALOG=postgres` runs the whole collector suite on PostgreSQL: each test's
//! collector gets a fresh database of one cluster shared by the test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::util::free_port;

/// The Debian binaries, overridable for another layout.
fn bin_dir() -> PathBuf {
    std::env::var_os("FLIGHTREC_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// A running cluster; stopped (immediately) and deleted on drop.
pub struct PgServer {
    pub port: u16,
    data: PathBuf,
    sock: PathBuf,
    user: Option<String>,
    next_db: AtomicU32,
    _dir: tempfile::TempDir,
}

/// The user to run PostgreSQL as when we are root: `postgres`, created if missing.
fn unprivileged_user() -> Result<Option<String>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let exists = |u: &str| {
        Command::new("id")
            .arg("-u")
            .arg(u)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !exists("postgres") {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg("postgres")
            .output()
            .map_err(|e| format!("useradd: {e}"))?;
        if !out.status.success() && !exists("postgres") {
            return Err(format!(
                "useradd postgres: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(Some("postgres".into()))
}

impl PgServer {
    /// Initialises and starts a cluster; `Err` says why PostgreSQL cannot run here.
    pub fn start() -> Result<PgServer, String> {
        let bin = bin_dir();
        if !bin.join("initdb").exists() || !bin.join("pg_ctl").exists() {
            return Err(format!(
                "no PostgreSQL binaries in {} (apt-get install postgresql)",
                bin.display()
            ));
        }
        let user = unprivileged_user()?;
        let dir = tempfile::Builder::new()
            .prefix("flightrec-pg")
            .tempdir()
            .map_err(|e| e.to_string())?;
        if let Some(u) = &user {
            let out = Command::new("chown")
                .args(["-R", &format!("{u}:")])
                .arg(dir.path())
                .output()
                .map_err(|e| format!("chown: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "chown: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        let data = dir.path().join("data");
        let sock = dir.path().to_owned();
        let pg = PgServer {
            port: free_port(),
            data,
            sock,
            user,
            next_db: AtomicU32::new(0),
            _dir: dir,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data.to_str().unwrap(),
                "-U",
                "flightrec",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        pg.start_again()?;
        Ok(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let path = bin_dir().join(tool);
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        // cwd the cluster's directory: the postgres user may not read ours.
        let out = cmd
            .args(args)
            .current_dir(self.sock.as_path())
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Starts the (stopped) cluster again on the same port.
    pub fn start_again(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c full_page_writes=off -c max_connections=300",
            self.port,
            self.sock.display()
        );
        let log = self.sock.join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// Restarts the cluster with TLS on (`cert` and `key`, PEM) and TCP clients refused unless
    /// they use it; the Unix socket stays as it was.
    pub fn require_tls(&self, cert: &Path, key: &Path) -> Result<(), String> {
        self.stop("fast")?;
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let dest = self.data.join(to);
            std::fs::copy(from, &dest).map_err(|e| format!("{to}: {e}"))?;
            std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| format!("{to}: {e}"))?;
            if let Some(u) = &self.user {
                let out = Command::new("chown")
                    .arg(format!("{u}:"))
                    .arg(&dest)
                    .output()
                    .map_err(|e| format!("chown: {e}"))?;
                if !out.status.success() {
                    return Err(format!("chown {to} failed"));
                }
            }
        }
        let append = |file: &str, text: &str| -> Result<(), String> {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(self.data.join(file))
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(|e| format!("{file}: {e}"))
        };
        append("postgresql.conf", "\nssl = on\n")?;
        // The first matching line decides: plain TCP is refused, TLS trusted.
        let hba = std::fs::read_to_string(self.data.join("pg_hba.conf"))
            .map_err(|e| format!("pg_hba.conf: {e}"))?;
        std::fs::write(
            self.data.join("pg_hba.conf"),
            format!("hostnossl all all 0.0.0.0/0 reject\nhostnossl all all ::/0 reject\n{hba}"),
        )
        .map_err(|e| format!("pg_hba.conf: {e}"))?;
        self.start_again()
    }

    /// Stops the cluster (`immediate`: like a crash; `fast`: a clean shutdown).
    pub fn stop(&self, mode: &str) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &["-D", self.data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        )
    }

    /// URL of database `db` over TCP on loopback.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://flightrec@127.0.0.1:{}/{db}", self.port)
    }

    /// URL of database `db` over the Unix socket.
    pub fn socket_url(&self, db: &str) -> String {
        format!(
            "postgres://flightrec@localhost/{db}?host={}&port={}",
            self.sock.display(),
            self.port
        )
    }

    /// Creates a fresh database and returns its URL.
    pub fn fresh_db(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.next_db.fetch_add(1, Ordering::Relaxed)
        );
        let admin = self.url("postgres");
        let n2 = name.clone();
        // The blocking client runs its own runtime: not on an async test's thread.
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
            c.batch_execute(&format!("CREATE DATABASE {n2}")).unwrap();
        })
        .join()
        .unwrap();
        self.url(&name)
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.sock.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
    }
}

/// Starts a cluster for `test`, or says why it cannot (skip, or fail under `CI=true`).
pub fn start_or_skip(test: &str) -> Option<PgServer> {
    match PgServer::start() {
        Ok(pg) => Some(pg),
        Err(why) => {
            crate::util::skip(test, &why);
            None
        }
    }
}

/// Whether this run puts the collector suite on PostgreSQL (`FLIGHTREC_TEST_CATALOG=postgres`).
pub fn suite_on_postgres() -> bool {
    std::env::var("FLIGHTREC_TEST_CATALOG").is_ok_and(|v| v == "postgres")
}

static SHARED: OnceLock<PgServer> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(pg) = SHARED.get() {
        let _ = pg.stop("immediate");
        let _ = std::fs::remove_dir_all(pg.sock.as_path());
    }
}

/// The cluster the suite shares when it runs on PostgreSQL, started on first use and stopped
/// when the test process exits. Under `FLIGHTREC_TEST_CATALOG=postgres` a cluster that cannot
/// start fails the test: the run asked for PostgreSQL.
pub fn shared() -> &'static PgServer {
    SHARED.get_or_init(|| {
        let pg = PgServer::start()
            .unwrap_or_else(|why| panic!("FLIGHTREC_TEST_CATALOG=postgres: {why}"));
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(stop_shared) };
        pg
    })
}
