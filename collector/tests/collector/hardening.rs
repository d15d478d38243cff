//! Issue 10's probes of the collector, rerun as tests: each one failed before its fix.

use std::time::Duration;

use flightrec_collector::config::RecorderToken;
use schemas::Record;
use schemas::file::SnapshotWriter;
use sha2::Digest;
use tokio::io::AsyncReadExt;

use crate::util::{Server, bulk, http, id, manifest, upload};

const READER: &str = "reader-token-0123456789";
const WEB1: &str = "write-token-web-1-xxxx";
const WEB2: &str = "write-token-web-2-xxxx";

fn tokens(c: &mut flightrec_collector::config::Config) {
    c.auth.recorders = vec![
        RecorderToken {
            host_id: "web-1".into(),
            token: WEB1.into(),
            groups: vec!["web".into()],
        },
        RecorderToken {
            host_id: "web-2".into(),
            token: WEB2.into(),
            groups: vec!["web".into(), "db".into()],
        },
    ];
    c.auth.readers = vec![READER.into()];
}

fn sha(b: &[u8]) -> String {
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// `streams` streams (one a CPU) of `per_stream` identical records of `kind`.
fn identical(sid: &str, host: &str, kind: u16, per_stream: usize, streams: usize) -> Vec<u8> {
    let mut w = SnapshotWriter::new(Vec::new(), &manifest(sid, host), 19).unwrap();
    let mut r = Record::ZERO;
    r.kind = kind;
    r.ts_ns = 1_000_000;
    let recs = vec![r; per_stream];
    for cpu in 0..streams {
        w.write_stream(cpu as u32, &recs).unwrap();
    }
    w.finish().unwrap()
}

async fn announce(url: &str, tok: &str, sid: &str, f: &[u8], digest: &str) -> u16 {
    http()
        .post(format!("{url}/v1/uploads"))
        .bearer_auth(tok)
        .json(&serde_json::json!({"snapshot_id": sid, "size": f.len(), "sha256": digest}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe4_tokens_are_bound_to_their_host() {
    let srv = Server::start(tokens).await;
    let url = srv.url.clone();
    let (path, sid) = bulk(srv.dir.path(), 40, "web-2", 2_000);
    let f = std::fs::read(&path).unwrap();
    assert_eq!(announce(&url, WEB2, &sid, &f, &sha(&f)).await, 200);
    let r = http()
        .patch(format!("{url}/v1/uploads/{sid}"))
        .bearer_auth(WEB2)
        .header("upload-offset", 0)
        .header(
            "chunk-crc32",
            format!("{:08x}", crc32fast::hash(&f[..4096])),
        )
        .body(f[..4096].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // web-1 re-announcing web-2's id with another digest is refused and discards nothing.
    assert_eq!(announce(&url, WEB1, &sid, &f, &"0".repeat(64)).await, 403);
    let staged = srv.dir.path().join("staging").join(format!("{sid}.part"));
    assert_eq!(std::fs::metadata(&staged).unwrap().len(), 4096);
    let c = http();
    let s = c
        .get(format!("{url}/v1/uploads/{sid}"))
        .bearer_auth(WEB1)
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), 403);
    let s = c
        .post(format!("{url}/v1/uploads/{sid}/complete"))
        .bearer_auth(WEB1)
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), 403);
    // web-2 resumes and completes; web-1 still cannot read the entry back.
    upload(&srv.client_config(WEB2), &path).await.unwrap();
    let s = c
        .post(format!("{url}/v1/uploads/{sid}/complete"))
        .bearer_auth(WEB1)
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), 403);
    assert_eq!(announce(&url, WEB1, &sid, &f, &sha(&f)).await, 403);
    let s = c
        .get(format!("{url}/v1/snapshots/{sid}"))
        .bearer_auth(WEB1)
        .send()
        .await
        .unwrap();
    assert_eq!(s.status(), 403);
    // Groups: only those the token's configuration names.
    let listen = |tok: &'static str, group: &'static str, host: &'static str| {
        let c = c.clone();
        let url = url.clone();
        async move {
            c.get(format!("{url}/v1/groups/{group}/listen?host_id={host}"))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(listen(WEB1, "db", "web-1").await, 403);
    assert_eq!(listen(WEB1, "web", "web-2").await, 403);
    assert_eq!(listen(WEB1, "web", "web-1").await, 200);
    let t = c
        .post(format!("{url}/v1/trigger"))
        .bearer_auth(WEB1)
        .json(&serde_json::json!({"scope": "group", "group": "db", "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(t.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe3_one_host_cannot_take_every_upload_session() {
    let srv = Server::start(|c| {
        tokens(c);
        c.limits.max_open_uploads = 6;
        c.limits.max_open_uploads_per_host = 3;
        c.limits.upload_expiry = Duration::from_secs(1);
    })
    .await;
    let url = srv.url.clone();
    let f = vec![1u8; 100];
    let mut codes = Vec::new();
    for n in 0..10 {
        codes.push(announce(&url, WEB1, &id(500 + n), &f, &sha(&f)).await);
    }
    assert_eq!(codes, [200, 200, 200, 503, 503, 503, 503, 503, 503, 503]);
    // Another host still uploads.
    let (path, _) = bulk(srv.dir.path(), 600, "web-2", 1_000);
    upload(&srv.client_config(WEB2), &path).await.unwrap();
    // Silent sessions expire after upload_expiry, not days: web-1 gets its places back.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(announce(&url, WEB1, &id(700), &f, &sha(&f)).await, 200);
    let left = srv.state.with_catalog(|c| c.sessions()).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe7_records_of_no_known_kind_are_refused_at_upload() {
    let srv = Server::start(tokens).await;
    for (n, kind) in [(800u64, 0u16), (801, 99)] {
        let sid = id(n);
        let f = identical(&sid, "web-1", kind, 100, 1);
        let p = srv.dir.path().join(format!("{sid}.frs"));
        std::fs::write(&p, &f).unwrap();
        let err = upload(&srv.client_config(WEB1), &p).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("has kind {kind}, which is no known event")),
            "{msg}"
        );
    }
    // A valid upload after them loses nothing.
    let (path, sid) = bulk(srv.dir.path(), 802, "web-1", 1_000);
    upload(&srv.client_config(WEB1), &path).await.unwrap();
    assert_eq!(
        srv.archived(&sid).await.unwrap(),
        std::fs::read(&path).unwrap()
    );
    assert_eq!(srv.state.with_catalog(|c| c.totals()).await.unwrap().0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe1_export_amplification_is_capped_and_computed_once() {
    let srv = Server::start(|c| {
        tokens(c);
        c.limits.max_export_size = "16MiB".into();
        c.limits.max_analysis_size = "64MiB".into();
    })
    .await;
    // 2.75 M identical records: a few tens of kilobytes, 264 MB decoded.
    let sid = id(900);
    let f = identical(&sid, "web-1", 1, 250_000, 11);
    assert!(f.len() < 200_000, "{} bytes", f.len());
    let p = srv.dir.path().join("bomb.frs");
    std::fs::write(&p, &f).unwrap();
    upload(&srv.client_config(WEB1), &p).await.unwrap();
    for format in ["tracedat", "perfetto"] {
        let before = srv
            .state
            .metrics
            .exports_computed
            .load(std::sync::atomic::Ordering::Relaxed);
        let reqs = (0..8).map(|_| {
            http()
                .get(format!("{}/v1/snapshots/{sid}/export/{format}", srv.url))
                .bearer_auth(READER)
                .send()
        });
        for r in futures_util::future::join_all(reqs).await {
            let r = r.unwrap();
            assert_eq!(r.status(), 413);
            let body = r.text().await.unwrap();
            assert!(body.contains("limit of 16777216 bytes"), "{body}");
        }
        let after = srv
            .state
            .metrics
            .exports_computed
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            after - before,
            1,
            "{format}: one computation for 8 requests"
        );
    }
    // The cache holds nothing of the refused exports.
    let held: u64 = walk(&srv.dir.path().join("cache"))
        .iter()
        .map(|m| m.1)
        .sum();
    assert!(held < 1 << 20, "cache holds {held} bytes");
    let r = http()
        .get(format!("{}/v1/snapshots/{sid}/analysis", srv.url))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("max_analysis_size"));
    // The library path (`flightrec export`) holds the same cap and leaves nothing.
    let out = srv.dir.path().join("local.dat");
    let err = flightrec_reader::export::export_limited(
        &p,
        flightrec_reader::export::Format::Tracedat,
        &out,
        16 << 20,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        flightrec_reader::export::ExportError::TooLarge { .. }
    ));
    assert!(!out.exists());
    assert!(
        !std::fs::read_dir(srv.dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("partial"))
    );
}

/// Every file under `dir`: (mode, size, path).
fn walk(dir: &std::path::Path) -> Vec<(u32, u64, std::path::PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        out.push((m.permissions().mode() & 0o777, m.len(), e.path()));
        if m.is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe2_idle_connections_are_closed_and_never_lock_out_a_client() {
    let srv = Server::start(|c| {
        c.server.header_timeout = Duration::from_secs(1);
        c.server.idle_timeout = Duration::from_secs(2);
        c.server.max_connections = 16;
    })
    .await;
    let addr = srv.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // A legitimate client is served at once, past the cap.
    for _ in 0..5 {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_millis(800))
            .build()
            .unwrap();
        let r = c.get(format!("{}/healthz", srv.url)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let open = srv
        .state
        .metrics
        .connections
        .open
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(open <= 16, "{open} connections open past a cap of 16");
    // Every idle socket is closed within the header timeout (plus slack).
    for mut s in idle {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "still open: {r:?}");
    }
}
