//! Upload: round trip, idempotence, resumption after restarts (including kill -9), hostile
//! uploads, concurrency.

use std::path::Path;
use std::time::Duration;

use flightrec_collector::config::RecorderToken;
use flightrec_uplink::spool::Outcome;
use schemas::Record;
use schemas::file::SnapshotWriter;
use sha2::Digest;

use crate::util::{Server, bulk, download, http, id, manifest, upload};

fn sha(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[tokio::test]
async fn upload_is_verified_archived_catalogued_and_idempotent() {
    let srv = Server::start(|_| {}).await;
    let (path, sid) = bulk(srv.dir.path(), 1, "web-1", 20_000);
    let bytes = std::fs::read(&path).unwrap();
    let mut cfg = srv.client_config("");
    cfg.chunk_size = "256KiB".into();
    let out = upload(&cfg, &path).await.unwrap();
    assert_eq!(
        out,
        Outcome::Uploaded {
            sent: bytes.len() as u64
        }
    );
    assert_eq!(srv.archived(&sid).await.unwrap(), bytes);
    let e = srv
        .state
        .with_catalog({
            let sid = sid.clone();
            move |c| c.get(&sid)
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.host_id, "web-1");
    assert_eq!(e.records, 40_000);
    assert_eq!(e.bytes, bytes.len() as u64);
    assert_eq!(e.sha256, sha(&bytes));
    assert_eq!(e.frozen_realtime_ns, 1_795_594_724_000_000_000);
    // Again: nothing is sent, nothing changes.
    assert_eq!(upload(&cfg, &path).await.unwrap(), Outcome::AlreadyArchived);
    assert_eq!(
        srv.state.with_catalog(|c| c.totals()).await.unwrap(),
        (1, bytes.len() as u64)
    );
    // The download is the same file.
    assert_eq!(download(&srv.url, &sid).await, bytes);
    // Nothing left in staging.
    assert_eq!(
        std::fs::read_dir(srv.dir.path().join("staging"))
            .unwrap()
            .count(),
        0
    );
}

/// Sends the first `n` bytes of `path` by hand, as an uploader would before dying.
pub async fn send_prefix(url: &str, token: &str, path: &Path, sid: &str, n: usize) {
    let bytes = std::fs::read(path).unwrap();
    let c = http();
    let r = c
        .post(format!("{url}/v1/uploads"))
        .bearer_auth(token)
        .json(&serde_json::json!({"snapshot_id": sid, "size": bytes.len(), "sha256": sha(&bytes)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = &bytes[..n];
    let r = c
        .patch(format!("{url}/v1/uploads/{sid}"))
        .bearer_auth(token)
        .header("upload-offset", 0)
        .header("chunk-crc32", format!("{:08x}", crc32fast::hash(body)))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn upload_resumes_after_a_collector_restart() {
    let srv = Server::start(|_| {}).await;
    let (path, sid) = bulk(srv.dir.path(), 2, "web-1", 20_000);
    let size = std::fs::metadata(&path).unwrap().len();
    send_prefix(&srv.url, "", &path, &sid, 1_000_000).await;
    let config = (*srv.state.config).clone();
    let dir = srv.stop().await;
    let srv = Server::start_in(dir, config).await;
    // The session survived: HEAD says where to resume.
    let head = http()
        .head(format!("{}/v1/uploads/{sid}", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["upload-offset"], "1000000");
    let out = upload(&srv.client_config(""), &path).await.unwrap();
    assert_eq!(
        out,
        Outcome::Uploaded {
            sent: size - 1_000_000
        }
    );
    assert_eq!(
        srv.archived(&sid).await.unwrap(),
        std::fs::read(&path).unwrap()
    );
}

/// A collector as a child process, so it can be killed with SIGKILL.
struct Child {
    child: std::process::Child,
    url: String,
}

fn spawn_collector(config: &Path) -> Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_flightrec-collector"))
        .args(["serve", "--config"])
        .arg(config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let text = std::fs::read_to_string(config).unwrap();
    let listen = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    Child {
        child,
        url: format!("http://{listen}"),
    }
}

async fn wait_up(url: &str) {
    for _ in 0..200 {
        if let Ok(r) = http().get(format!("{url}/healthz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("collector at {url} did not come up");
}

#[tokio::test]
async fn kill_9_mid_upload_then_restart_resumes_and_archives_the_identical_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg_path = dir.path().join("collector.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\ndata_dir = \"{}\"\n\
             [auth]\nopen = true\n{}",
            dir.path().join("data").display(),
            crate::util::catalog_toml()
        ),
    )
    .unwrap();
    let (path, sid) = bulk(dir.path(), 3, "web-1", 16_000); // ~3 MiB
    let bytes = std::fs::read(&path).unwrap();
    let mut c = spawn_collector(&cfg_path);
    wait_up(&c.url).await;
    let mut cfg = flightrec_uplink::CollectorConfig {
        url: c.url.clone(),
        rate_limit: "2MiB".into(),
        chunk_size: "128KiB".into(),
        ..Default::default()
    };
    let cfg2 = cfg.clone();
    let p2 = path.clone();
    let first = tokio::spawn(async move { upload(&cfg2, &p2).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.child.kill().unwrap(); // SIGKILL
    c.child.wait().unwrap();
    let err = first
        .await
        .unwrap()
        .expect_err("the collector died mid-upload");
    println!("first attempt ended with: {err}");
    let mut c = spawn_collector(&cfg_path);
    wait_up(&c.url).await;
    let st: serde_json::Value = http()
        .get(format!("{}/v1/uploads/{sid}", c.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let held = st["offset"].as_u64().unwrap();
    assert!(
        held > 0 && held < bytes.len() as u64,
        "the collector kept part of the upload: {st}"
    );
    cfg.rate_limit = "0".into();
    let out = upload(&cfg, &path).await.unwrap();
    assert_eq!(
        out,
        Outcome::Uploaded {
            sent: bytes.len() as u64 - held
        }
    );
    assert_eq!(
        download(&c.url, &sid).await,
        bytes,
        "archived file is byte-identical"
    );
    c.child.kill().unwrap();
    c.child.wait().unwrap();
}

/// Uploads raw `bytes` under `sid` in one chunk and completes; returns the final status and
/// error text.
async fn raw_upload(url: &str, token: &str, sid: &str, bytes: &[u8]) -> (u16, String) {
    let c = http();
    let r = c
        .post(format!("{url}/v1/uploads"))
        .bearer_auth(token)
        .json(&serde_json::json!({"snapshot_id": sid, "size": bytes.len(), "sha256": sha(bytes)}))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        let s = r.status().as_u16();
        return (s, r.text().await.unwrap());
    }
    let r = c
        .patch(format!("{url}/v1/uploads/{sid}"))
        .bearer_auth(token)
        .header("upload-offset", 0)
        .header("chunk-crc32", format!("{:08x}", crc32fast::hash(bytes)))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = c
        .post(format!("{url}/v1/uploads/{sid}/complete"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

/// A snapshot of `n` all-zero records on one CPU: megabytes decoded from a few hundred bytes.
fn zeros(sid: &str, host: &str, n: usize) -> Vec<u8> {
    let mut w = SnapshotWriter::new(Vec::new(), &manifest(sid, host), 19).unwrap();
    // Kind 1 (a syscall entry with a zero payload): a known event, so only the size checks
    // can refuse it.
    let mut r = Record::ZERO;
    r.kind = 1;
    w.write_stream(0, &vec![r; n]).unwrap();
    w.finish().unwrap()
}

/// Rewrites a section header's counts and the metadata CRC, as a hostile client would.
fn patch_counts(file: &mut [u8], records: u64) {
    let mlen = u64::from_le_bytes(file[16..24].try_into().unwrap()) as usize;
    let sh = 24 + mlen;
    file[sh + 8..sh + 16].copy_from_slice(&records.to_le_bytes());
    file[sh + 24..sh + 32].copy_from_slice(&(records * 96).to_le_bytes());
    let clen = u64::from_le_bytes(file[sh + 16..sh + 24].try_into().unwrap()) as usize;
    let mut h = crc32fast::Hasher::new();
    h.update(&file[..sh + 32]);
    let tr = sh + 32 + clen;
    file[tr + 16..tr + 20].copy_from_slice(&h.finalize().to_le_bytes());
}

#[tokio::test]
async fn hostile_uploads_are_rejected_and_leave_nothing_behind() {
    let srv = Server::start(|c| {
        c.limits.max_snapshot_size = "8MiB".into();
        c.limits.max_uncompressed_size = "16MiB".into();
        c.auth.recorders = vec![RecorderToken {
            host_id: "web-1".into(),
            token: "token-of-web-1-0123".into(),
            ..Default::default()
        }];
    })
    .await;
    let tok = "token-of-web-1-0123";
    let url = srv.url.clone();
    let mut n = 100;
    let mut next_id = || {
        n += 1;
        id(n)
    };
    // A valid snapshot under a fresh id, to damage.
    let rebuilt = |sid: &str| {
        let p = srv.dir.path().join(format!("{sid}.frs"));
        crate::util::bulk_snapshot(&p, &manifest(sid, "web-1"), 2_000, 10);
        std::fs::read(&p).unwrap()
    };

    // Truncated: the trailer is cut.
    let sid = next_id();
    let mut f = rebuilt(&sid);
    f.truncate(f.len() - 10);
    let (s, e) = raw_upload(&url, tok, &sid, &f).await;
    assert_eq!((s, e.contains("truncated")), (422, true), "{e}");

    // Corrupted: one byte flipped inside a compressed stream (announced digest matches the
    // damaged file, so only the content checks can catch it).
    let sid = next_id();
    let mut f = rebuilt(&sid);
    let mid = f.len() / 2;
    f[mid] ^= 0x55;
    let (s, e) = raw_upload(&url, tok, &sid, &f).await;
    assert_eq!(s, 422, "{e}");
    assert!(e.contains("not a valid snapshot"), "{e}");

    // Another format version.
    let sid = next_id();
    let mut f = rebuilt(&sid);
    f[8] = 3;
    let (s, e) = raw_upload(&url, tok, &sid, &f).await;
    assert_eq!(s, 422);
    assert!(e.contains("unsupported snapshot format version 3"), "{e}");

    // Oversized: refused before a byte is sent.
    let sid = next_id();
    let r = http()
        .post(format!("{url}/v1/uploads"))
        .bearer_auth(tok)
        .json(
            &serde_json::json!({"snapshot_id": sid, "size": 9u64 << 20, "sha256": "0".repeat(64)}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Decompression bomb, declared: 200k records (19 MB decoded) in a few hundred bytes.
    let sid = next_id();
    let f = zeros(&sid, "web-1", 200_000);
    assert!(f.len() < 4096, "bomb is {} bytes", f.len());
    let (s, e) = raw_upload(&url, tok, &sid, &f).await;
    assert_eq!(s, 422);
    assert!(e.contains("decompression bomb"), "{e}");

    // Decompression bomb, lying: declares 100 records, inflates to 100k.
    let sid = next_id();
    let mut f = zeros(&sid, "web-1", 100_000);
    patch_counts(&mut f, 100);
    let (s, e) = raw_upload(&url, tok, &sid, &f).await;
    assert_eq!(s, 422);
    assert!(e.contains("more than its declared records"), "{e}");

    // Another host's snapshot with this host's token.
    let sid = next_id();
    let p = srv.dir.path().join("other.frs");
    crate::util::bulk_snapshot(&p, &manifest(&sid, "db-1"), 100, 3);
    let (s, e) = raw_upload(&url, tok, &sid, &std::fs::read(&p).unwrap()).await;
    assert_eq!(s, 422);
    assert!(e.contains("host id \\\"db-1\\\""), "{e}");

    // A chunk damaged in transit.
    let sid = next_id();
    let f = rebuilt(&sid);
    let c = http();
    c.post(format!("{url}/v1/uploads"))
        .bearer_auth(tok)
        .json(&serde_json::json!({"snapshot_id": sid, "size": f.len(), "sha256": sha(&f)}))
        .send()
        .await
        .unwrap();
    let r = c
        .patch(format!("{url}/v1/uploads/{sid}"))
        .bearer_auth(tok)
        .header("upload-offset", 0)
        .header("chunk-crc32", format!("{:08x}", crc32fast::hash(&f) ^ 1))
        .body(f.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // ... and completing early is refused with where to resume.
    let r = c
        .post(format!("{url}/v1/uploads/{sid}/complete"))
        .bearer_auth(tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["upload-offset"], "0");

    // No token, and a wrong one.
    let r = c
        .post(format!("{url}/v1/uploads"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Nothing was archived or catalogued, and every rejected upload left no staging bytes.
    assert_eq!(
        srv.state.with_catalog(|c| c.totals()).await.unwrap(),
        (0, 0)
    );
    let staged: Vec<_> = std::fs::read_dir(srv.dir.path().join("staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(staged.is_empty(), "staging holds {staged:?}");
    // Only the session whose chunk was damaged stays open, to be resumed.
    assert_eq!(
        srv.state
            .with_catalog(|c| c.sessions())
            .await
            .unwrap()
            .len(),
        1
    );
    let archive = srv.dir.path().join("archive");
    let blobs = walk(&archive);
    assert!(blobs.is_empty(), "archive holds {blobs:?}");
    for reason in [
        "truncated",
        "corrupt",
        "version",
        "decompression_bomb",
        "wrong_host",
        "chunk_checksum",
        "too_large",
    ] {
        assert!(srv.state.metrics.rejected(reason) >= 1, "{reason} counted");
    }
    // The good file still goes through.
    let sid = next_id();
    let f = rebuilt(&sid);
    let (s, e) = raw_upload(&url, tok, &sid, &f).await;
    assert_eq!(s, 200, "{e}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_uploads_complete() {
    let srv = Server::start(|_| {}).await;
    let mut files = Vec::new();
    for n in 0..50u64 {
        files.push(bulk(
            srv.dir.path(),
            1000 + n,
            &format!("host-{}", n % 5),
            1_500,
        ));
    }
    let cfg = {
        let mut c = srv.client_config("");
        c.chunk_size = "64KiB".into();
        c
    };
    let tasks: Vec<_> = files
        .iter()
        .map(|(p, _)| {
            let (cfg, p) = (cfg.clone(), p.clone());
            tokio::spawn(async move { upload(&cfg, &p).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(
            t.await.unwrap().unwrap(),
            Outcome::Uploaded { .. }
        ));
    }
    let total: u64 = files
        .iter()
        .map(|(p, _)| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(
        srv.state.with_catalog(|c| c.totals()).await.unwrap(),
        (50, total)
    );
    for (p, sid) in &files {
        assert_eq!(srv.archived(sid).await.unwrap(), std::fs::read(p).unwrap());
    }
}
