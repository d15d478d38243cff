//! The archive on a real S3 server: Garage (single node, sqlite metadata,
//! `replication_factor = 1`) on loopback, started by the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use flightrec_collector::config::ArchiveKind;
use flightrec_uplink::spool::Outcome;

use crate::util::{Server, bulk, download, free_port, http, skip, upload};

/// The garage binary: on PATH or in ~/.cargo/bin.
pub fn garage_bin() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("garage"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/garage"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// A Garage node; killed on drop.
pub struct Garage {
    child: std::process::Child,
    bin: PathBuf,
    config: PathBuf,
    /// S3 endpoint URL.
    pub endpoint: String,
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Garage {
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a single-node Garage on free loopback ports with its state in `dir`.
    pub fn start(bin: PathBuf, dir: &Path) -> Garage {
        let (rpc, s3) = (free_port(), free_port());
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) as u8))
            .collect();
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                meta = dir.join("meta").display(),
                data = dir.join("data").display(),
            ),
        )
        .unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Garage {
            child,
            bin,
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
        }
    }

    /// Waits for the node, gives it a role, makes a bucket and a key; returns (key id, secret).
    pub fn setup(&self, bucket: &str) -> (String, String) {
        let mut node = None;
        for _ in 0..100 {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.config)
                .arg("status")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            node = text
                .lines()
                .skip_while(|l| !l.starts_with("ID"))
                .nth(1)
                .and_then(|l| l.split_whitespace().next())
                .map(str::to_owned);
            if out.status.success() && node.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let node = node.expect("garage node id");
        self.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        self.cli(&["layout", "apply", "--version", "1"]);
        self.cli(&["bucket", "create", bucket]);
        let key = self.cli(&["key", "create", "flightrec-test"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in {key}"))
        };
        let (id, secret) = (field("Key ID:"), field("Secret key:"));
        self.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            bucket,
            "--key",
            "flightrec-test",
        ]);
        (id, secret)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_on_garage_s3() {
    let Some(bin) = garage_bin() else {
        skip(
            "archive_on_garage_s3",
            "garage is not installed (cargo install garage --locked)",
        );
        return;
    };
    let gdir = tempfile::tempdir().unwrap();
    let garage = Garage::start(bin, gdir.path());
    let (key_id, secret) = tokio::task::block_in_place(|| garage.setup("flightrec"));
    let s3 = |c: &mut flightrec_collector::config::Config| {
        c.storage.archive = ArchiveKind::S3;
        c.storage.s3.endpoint = garage.endpoint.clone();
        c.storage.s3.region = "garage".into();
        c.storage.s3.bucket = "flightrec".into();
        c.storage.s3.access_key_id = key_id.clone();
        c.storage.s3.secret_access_key = secret.clone();
        c.storage.s3.allow_http = true;
        c.storage.s3.path_style = true;
    };
    let srv = Server::start(s3).await;
    // Over 8 MiB: a multipart upload of two parts.
    let (path, sid) = bulk(srv.dir.path(), 4242, "web-1", 75_000);
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 9 << 20, "{} bytes", bytes.len());
    let out = upload(&srv.client_config(""), &path).await.unwrap();
    assert!(matches!(out, Outcome::Uploaded { .. }));
    // Nothing in the local archive directory: the blob is in the bucket.
    assert!(!srv.dir.path().join("archive").exists());
    let key = flightrec_collector::archive::Archive::key(&sid);
    assert_eq!(
        srv.state.archive.size(&key).await.unwrap(),
        Some(bytes.len() as u64)
    );
    assert_eq!(download(&srv.url, &sid).await, bytes);
    let m: serde_json::Value = http()
        .get(format!("{}/v1/snapshots/{sid}/manifest", srv.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["snapshot_id"], sid.as_str());
    // Retention deletes from the bucket too.
    let mut config = (*srv.state.config).clone();
    config.retention.max_total_size = "1".into();
    let mut st = srv.state.clone();
    st.config = std::sync::Arc::new(config);
    let out = flightrec_collector::retention::run_once(&st).await.unwrap();
    assert_eq!(out.over_size, 1);
    assert_eq!(srv.state.archive.size(&key).await.unwrap(), None);
}
