//! The browse API against the library it serves: manifest, analyses, exports and the timeline
//! equal what `flightrec` computes from the same file; filters, pagination, auth, retention
//! and `/metrics`.

use std::path::{Path, PathBuf};

use flightrec_collector::config::RecorderToken;

use crate::util::{Server, http, upload};

const WRITER: &str = "write-token-web-1-xxxx";
const READER: &str = "reader-token-0123456789";

/// A snapshot with real events of every class on `host`, frozen at `frozen_s` (realtime s).
pub fn rich(dir: &Path, n: u64, host: &str, frozen_s: u64, source: &str, tags: &[&str]) -> PathBuf {
    let mut b = flightrec_reader::synth::SnapshotBuilder::new(2);
    b.manifest.snapshot_id = crate::util::id(n);
    b.manifest.name = format!("snap{n}");
    b.manifest.host.host_id = host.into();
    b.manifest.trigger.source = source.into();
    b.manifest.trigger.reason = format!("reason number {n}");
    b.manifest
        .trigger
        .fields
        .insert("tags".into(), serde_json::json!(tags));
    let app = (100, 100, "app");
    let db = (200, 201, "db-worker");
    let idle = (0, 0, "swapper/0");
    b.switch(1_000_000, 0, idle, 0, app);
    b.syscall(0, app, 0, 3, 1, 1_100_000, 1_400_000);
    b.syscall(0, app, 74, 3, 0, 1_500_000, 9_000_000);
    b.switch(2_000_000, 0, app, 1, db);
    b.wakeup(8_900_000, 1, db, app, 0);
    b.switch(9_000_000, 0, db, 0, app);
    b.switch(1_000_000, 1, idle, 0, db);
    b.block(1, db, 8 << 20, 4096, 8192, 1, 3_000_000, 7_000_000);
    b.irq(1, db, 24, "eth0", 7_100_000, 7_150_000);
    b.switch(10_000_000, 1, db, 1, idle);
    // Realtime so that the freeze (the last event, 10 ms) lands at `frozen_s`.
    let offset = (frozen_s * 1_000_000_000 - 10_000_000) as i64;
    b.manifest.clocks.realtime_minus_monotonic_ns = offset;
    if source == "hook" {
        // The webserver's report of app's request, from 1 ms to 9.5 ms: its story is the
        // fsync blocked behind db-worker's disk write.
        let f = &mut b.manifest.trigger.fields;
        f.insert("url".into(), "/checkout".into());
        f.insert("method".into(), "POST".into());
        f.insert("duration_ms".into(), 8.5.into());
        f.insert("pid".into(), 100.into());
        f.insert("tid".into(), 100.into());
        f.insert(
            "start_realtime_ns".into(),
            (offset as u64 + 1_000_000).into(),
        );
    }
    let path = dir.join(format!("rich-{n}.frs"));
    b.write(&path).unwrap();
    path
}

async fn get_json(url: &str, token: &str) -> serde_json::Value {
    let r = http().get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

fn ids(page: &serde_json::Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_api_serves_what_the_library_computes() {
    let srv = Server::start(|c| {
        c.auth.recorders = ["web-1", "web-2"]
            .iter()
            .map(|h| RecorderToken {
                host_id: h.to_string(),
                token: format!("write-token-{h}-xxxx"),
                ..Default::default()
            })
            .collect();
        c.auth.readers = vec![READER.into()];
    })
    .await;
    // Two hours ago, so retention by age has something to find.
    let base = flightrec_collector::now_realtime_ns() / 1_000_000_000 - 7200;
    let mut files = Vec::new();
    for n in 0..7u64 {
        let host = if n % 2 == 0 { "web-1" } else { "web-2" };
        let source = if n < 4 { "hook" } else { "cli" };
        let tags: &[&str] = if n == 3 { &["slow", "eu"] } else { &["eu"] };
        let p = rich(srv.dir.path(), n, host, base + n * 60, source, tags);
        upload(&srv.client_config(&format!("write-token-{host}-xxxx")), &p)
            .await
            .unwrap();
        files.push(p);
    }
    let url = &srv.url;
    // Filters and pages.
    let all = get_json(&format!("{url}/v1/snapshots"), READER).await;
    assert_eq!(
        ids(&all),
        [
            "snap6", "snap5", "snap4", "snap3", "snap2", "snap1", "snap0"
        ]
    );
    let p1 = get_json(&format!("{url}/v1/snapshots?limit=3"), READER).await;
    assert_eq!(ids(&p1), ["snap6", "snap5", "snap4"]);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2 = get_json(
        &format!("{url}/v1/snapshots?limit=3&cursor={cursor}"),
        READER,
    )
    .await;
    assert_eq!(ids(&p2), ["snap3", "snap2", "snap1"]);
    let host = get_json(
        &format!("{url}/v1/snapshots?host=web-2&source=hook"),
        READER,
    )
    .await;
    assert_eq!(ids(&host), ["snap3", "snap1"]);
    let tag = get_json(&format!("{url}/v1/snapshots?tag=slow"), READER).await;
    assert_eq!(ids(&tag), ["snap3"]);
    let from = (base + 120) * 1_000_000_000;
    let to = (base + 300) * 1_000_000_000;
    let range = get_json(
        &format!("{url}/v1/snapshots?from_ns={from}&to_ns={to}&reason=number"),
        READER,
    )
    .await;
    assert_eq!(ids(&range), ["snap4", "snap3", "snap2"]);
    let bad = http()
        .get(format!("{url}/v1/snapshots?cursor=nonsense"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // One snapshot: everything equals the library's own output on the same file.
    let file = &files[3];
    let sid = crate::util::id(3);
    let manifest = get_json(&format!("{url}/v1/snapshots/{sid}/manifest"), READER).await;
    let want = schemas::file::Snapshot::open(file).unwrap().manifest;
    assert_eq!(manifest, serde_json::to_value(&want).unwrap());
    let analysis = get_json(&format!("{url}/v1/snapshots/{sid}/analysis"), READER).await;
    let want = flightrec_reader::analyze::analyze(file, &Default::default()).unwrap();
    assert_eq!(analysis, serde_json::to_value(&want).unwrap());
    assert_eq!(analysis["syscalls"]["by_syscall"][0]["name"], "fsync");
    // Cached the second time, same answer.
    assert_eq!(
        get_json(&format!("{url}/v1/snapshots/{sid}/analysis"), READER).await,
        analysis
    );
    let exported = perfetto_export(url, &sid).await;
    let local = srv.dir.path().join("local.perfetto-trace");
    flightrec_reader::export::export(file, flightrec_reader::export::Format::Perfetto, &local)
        .unwrap();
    assert_eq!(exported, std::fs::read(&local).unwrap());

    // Who ran: CPU 0 runs app, then db-worker from 2 ms until its history ends at 9 ms; CPU 1
    // db-worker throughout.
    let t = get_json(&format!("{url}/v1/snapshots/{sid}/timeline"), READER).await;
    assert_eq!(t["begin_ns"], 1_000_000);
    assert_eq!(t["end_ns"], 10_000_000);
    let runs = |cpu: usize| -> Vec<(String, u64, u64)> {
        t["cpus"][cpu]["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["comm"].as_str().unwrap().to_owned(),
                    r["from"].as_u64().unwrap(),
                    r["to"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    // 400 columns of 22.5 us: the switch at 2 ms falls in column 44.4 (db-worker has most of
    // it), the end of CPU 0's history at 9 ms in column 355.6.
    assert_eq!(
        runs(0),
        [("app".to_owned(), 0, 44), ("db-worker".to_owned(), 44, 356)]
    );
    assert_eq!(runs(1), [("db-worker".to_owned(), 0, 400)]);

    // Roles: a recorder may not browse, nobody without a token, readers may not upload.
    let r = http()
        .get(format!("{url}/v1/snapshots"))
        .bearer_auth(WRITER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http()
        .get(format!("{url}/v1/snapshots"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http()
        .post(format!("{url}/v1/uploads"))
        .bearer_auth(READER)
        .json(&serde_json::json!({"snapshot_id": "ab".repeat(16), "size": 10, "sha256": "0".repeat(64)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Metrics.
    let m = http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("\ncollector_uploads_completed_total 7\n"), "{m}");
    assert!(m.contains("\ncollector_catalog_snapshots 7\n"), "{m}");
    promtool_check(&m);

    // Retention: by size, then by age.
    let (_, total) = srv.state.with_catalog(|c| c.totals()).await.unwrap();
    let mut config = (*srv.state.config).clone();
    config.retention.max_age = "0".into();
    let one = std::fs::metadata(&files[0]).unwrap().len();
    config.retention.max_total_size = format!("{}", total - one - 1);
    let mut st = srv.state.clone();
    st.config = std::sync::Arc::new(config);
    // An upload opened long ago and never finished.
    srv.state
        .with_catalog(|c| {
            c.open_session(&flightrec_collector::catalog::Session {
                snapshot_id: "ab".repeat(16),
                host_id: "web-1".into(),
                size: 10,
                sha256: "0".repeat(64),
                offset: 4,
                created_realtime_ns: 1,
            })
        })
        .await
        .unwrap();
    // Through the advisory lock (nobody else holds it, so the pass runs).
    let out = flightrec_collector::retention::run_exclusive(&st)
        .await
        .unwrap()
        .expect("no other replica runs retention");
    assert_eq!(out.over_size, 2, "the two oldest go to fit the cap");
    assert_eq!(out.abandoned_uploads, 1);
    assert!(
        srv.state
            .with_catalog(|c| c.sessions())
            .await
            .unwrap()
            .is_empty()
    );
    let left = get_json(&format!("{url}/v1/snapshots"), READER).await;
    assert_eq!(ids(&left), ["snap6", "snap5", "snap4", "snap3", "snap2"]);
    assert!(srv.archived(&crate::util::id(0)).await.is_none());
    // Frozen 7080 s ago (snap2) is past a 7050 s age limit; 7020 s ago (snap3) is not.
    let mut config = (*srv.state.config).clone();
    config.retention.max_age = "7050s".into();
    config.retention.max_total_size = "0".into();
    st.config = std::sync::Arc::new(config);
    let out = flightrec_collector::retention::run_once(&st).await.unwrap();
    assert_eq!(out.expired, 1);
    let left = get_json(&format!("{url}/v1/snapshots"), READER).await;
    assert_eq!(ids(&left), ["snap6", "snap5", "snap4", "snap3"]);
    assert!(srv.archived(&crate::util::id(2)).await.is_none());
    assert!(srv.archived(&crate::util::id(3)).await.is_some());
}

/// `promtool check metrics` on the exposition, where promtool is installed.
fn promtool_check(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        crate::util::skip(
            "promtool check metrics",
            "promtool is not installed (Debian: prometheus)",
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A format-1 file (the reader's committed fixture, written by the format-1 writer) is
/// accepted, archived as it is, and analysed and exported like any other.
#[tokio::test]
async fn a_format_1_snapshot_is_accepted_analysed_and_exported() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../reader/tests/fixtures/v1-all-kinds.frs");
    let srv = Server::start(|c| {
        c.auth.recorders = vec![RecorderToken {
            host_id: "synthetic".into(),
            token: "write-token-synthetic-x".into(),
            ..Default::default()
        }];
        c.auth.readers = vec![READER.into()];
    })
    .await;
    let bytes = std::fs::read(&fixture).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
    upload(&srv.client_config("write-token-synthetic-x"), &fixture)
        .await
        .unwrap();
    let sid = schemas::file::Snapshot::open(&fixture)
        .unwrap()
        .manifest
        .snapshot_id;
    assert_eq!(srv.archived(&sid).await.unwrap(), bytes);
    let url = &srv.url;
    let analysis = get_json(&format!("{url}/v1/snapshots/{sid}/analysis"), READER).await;
    let want = flightrec_reader::analyze::analyze(&fixture, &Default::default()).unwrap();
    assert_eq!(analysis, serde_json::to_value(&want).unwrap());
    let local = srv.dir.path().join("v1.perfetto-trace");
    flightrec_reader::export::export(&fixture, flightrec_reader::export::Format::Perfetto, &local)
        .unwrap();
    assert_eq!(
        perfetto_export(url, &sid).await,
        std::fs::read(&local).unwrap()
    );
}

/// The collector's Perfetto export of snapshot `sid`, which must answer 200.
async fn perfetto_export(url: &str, sid: &str) -> Vec<u8> {
    let exported = http()
        .get(format!("{url}/v1/snapshots/{sid}/export/perfetto"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(exported.status(), 200);
    exported.bytes().await.unwrap().to_vec()
}
