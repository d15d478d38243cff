//! Helpers shared by the collector tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flightrec_collector::AppState;
use flightrec_collector::config::Config;
use flightrec_uplink::CollectorConfig;
use flightrec_uplink::bucket::TokenBucket;
use schemas::Record;
use schemas::file::SnapshotWriter;
use schemas::manifest::Manifest;

/// Under `CI=true` a missing tool fails the test; elsewhere the test says why and returns.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot run under CI=true: {why}");
    }
    println!("skipped {test}: {why}");
}

/// The `[catalog]` section of a collector config file for this run: empty on SQLite, a fresh
/// database under `FLIGHTREC_TEST_CATALOG=postgres`.
pub fn catalog_toml() -> String {
    if crate::pg::suite_on_postgres() {
        format!("[catalog]\nurl = \"{}\"\n", crate::pg::shared().fresh_db())
    } else {
        String::new()
    }
}

/// A collector serving on a loopback port inside this process.
pub struct Server {
    pub url: String,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts a collector whose data directory is a fresh temporary one; `edit` adjusts the
    /// configuration first.
    pub async fn start(edit: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_owned();
        config.server.listen = "127.0.0.1:0".into();
        if crate::pg::suite_on_postgres() {
            config.catalog.url = crate::pg::shared().fresh_db();
        }
        edit(&mut config);
        // Tests that configure no token run the collector open, as on a developer's machine;
        // the generated admin token has its own tests.
        config.auth.open = !config.has_tokens();
        Server::start_in(dir, config).await
    }

    /// Starts a collector on `config` keeping `dir` alive with it.
    pub async fn start_in(dir: tempfile::TempDir, config: Config) -> Server {
        let listener = std::net::TcpListener::bind(config.listen_addr().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let url = config.public_url(addr);
        let state = AppState::open(config).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let st = state.clone();
        let task = tokio::spawn(async move {
            flightrec_collector::serve(st, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server {
            url,
            state,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops serving and returns the data directory (to start again on it).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    /// Recorder-side settings for this collector.
    pub fn client_config(&self, token: &str) -> CollectorConfig {
        CollectorConfig {
            url: self.url.clone(),
            token: token.into(),
            rate_limit: "0".into(),
            ..Default::default()
        }
    }

    /// The archived bytes of a snapshot, straight from the archive.
    pub async fn archived(&self, snapshot_id: &str) -> Option<Vec<u8>> {
        let key = flightrec_collector::archive::Archive::key(snapshot_id);
        let tmp = self.dir.path().join(format!("check-{snapshot_id}"));
        self.state.archive.fetch_to(&key, &tmp).await.ok()?;
        let bytes = std::fs::read(&tmp).ok();
        let _ = std::fs::remove_file(&tmp);
        bytes
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A 32-hex-digit snapshot id from `n`.
pub fn id(n: u64) -> String {
    format!(
        "{:016x}{:016x}",
        0xf11e_0000_0000_0000u64 | n,
        n.wrapping_mul(7919)
    )
}

/// A manifest for `host` with id `snapshot_id`.
pub fn manifest(snapshot_id: &str, host: &str) -> Manifest {
    let mut b = flightrec_reader::synth::SnapshotBuilder::new(2);
    b.manifest.snapshot_id = snapshot_id.into();
    b.manifest.host.host_id = host.into();
    b.manifest.host.hostname = host.into();
    b.manifest.frozen_realtime_ns = 1_795_594_724_000_000_000;
    b.manifest.clocks.realtime_minus_monotonic_ns = 1_795_000_000_000_000_000;
    b.manifest
}

/// Writes a snapshot of `records` records per CPU (2 CPUs) whose payloads are random, so it
/// barely compresses: upload tests then move about `records * 2 * 96` bytes.
pub fn bulk_snapshot(path: &Path, m: &Manifest, records: usize, seed: u64) -> u64 {
    let mut rng = Rng(seed | 1);
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = SnapshotWriter::new(file, m, 1).unwrap();
    for cpu in 0..2u32 {
        let recs: Vec<Record> = (0..records)
            .map(|i| {
                let mut r = Record::ZERO;
                r.seq = i as u64 + 1;
                r.ts_ns = 1_000_000 + i as u64 * 1000;
                r.cpu = cpu;
                r.kind = 1;
                for p in r.payload.iter_mut() {
                    *p = rng.next();
                }
                r
            })
            .collect();
        w.write_stream(cpu, &recs).unwrap();
    }
    let mut f = w.finish().unwrap();
    std::io::Write::flush(&mut f).unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// A bulk snapshot in `dir` for `host`; returns its path and id.
pub fn bulk(dir: &Path, n: u64, host: &str, records: usize) -> (PathBuf, String) {
    let sid = id(n);
    let path = dir.join(format!("bulk-{n}.frs"));
    bulk_snapshot(&path, &manifest(&sid, host), records, n + 1);
    (path, sid)
}

/// Uploads `path` with no rate limit.
pub async fn upload(
    cfg: &CollectorConfig,
    path: &Path,
) -> Result<flightrec_uplink::spool::Outcome, flightrec_uplink::UploadError> {
    let client = flightrec_uplink::http_client(cfg).unwrap();
    let bucket = Arc::new(TokenBucket::new(cfg.rate_bytes(), 64 << 10));
    flightrec_uplink::spool::upload_file(&client, cfg, &bucket, path, |_| {}).await
}

/// A plain HTTP client for API calls.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// GET `url` with bearer `token` (none if empty), its JSON body.
pub async fn get_json(url: &str, token: &str) -> serde_json::Value {
    let mut req = http().get(url);
    if !token.is_empty() {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap().json().await.unwrap()
}

/// A free TCP port on loopback (for servers the tests start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The bytes of snapshot `sid` downloaded from the collector at `base`, which must answer 200.
pub async fn download(base: &str, sid: &str) -> Vec<u8> {
    let got = http()
        .get(format!("{base}/v1/snapshots/{sid}/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200, "download of {sid} from {base}");
    got.bytes().await.unwrap().to_vec()
}
