//! The web UI end to end in headless Chromium (Debian `chromium`, driven by `playwright-core`
//! from npm through `collector/tests/ui/check.mjs`): the list and its filter form, a snapshot
//! page, a download link and the group view, checked against the catalog.

use std::path::Path;
use std::process::Command;

use crate::browse::rich;
use crate::util::{Server, http, skip, upload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_in_headless_chromium() {
    let test = "web_ui_in_headless_chromium";
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if Command::new("node").arg("--version").output().is_err() {
        return skip(test, "node is not installed");
    }
    if !ui.join("node_modules/playwright-core").exists() {
        return skip(
            test,
            "playwright-core is not installed (npm ci in collector/tests/ui)",
        );
    }
    if !Path::new(&chromium).exists() {
        return skip(test, "chromium is not installed (Debian: chromium)");
    }
    let srv = Server::start(|_| {}).await;
    let base = flightrec_collector::now_realtime_ns() / 1_000_000_000 - 600;
    let mut sizes = Vec::new();
    for n in 0..4u64 {
        let host = if n % 2 == 0 { "web-1" } else { "web-2" };
        let p = rich(srv.dir.path(), n, host, base + n * 10, "hook", &["eu"]);
        sizes.push(std::fs::metadata(&p).unwrap().len());
        upload(&srv.client_config(""), &p).await.unwrap();
    }
    // A group trigger with two hosts' snapshots (no recorder is registered, so the test
    // uploads what they would have).
    let mut trigger_id = String::new();
    for (i, host) in ["db-1", "web-1"].iter().enumerate() {
        let mut b = flightrec_reader::synth::SnapshotBuilder::new(1);
        b.manifest.snapshot_id = crate::util::id(900 + i as u64);
        b.manifest.host.host_id = host.to_string();
        b.manifest.clocks.realtime_minus_monotonic_ns =
            (base * 1_000_000_000) as i64 + i as i64 * 3_000_000;
        b.switch(1_000_000, 0, (0, 0, "swapper/0"), 0, (7, 7, "worker"));
        b.switch(5_000_000, 0, (7, 7, "worker"), 1, (0, 0, "swapper/0"));
        if trigger_id.is_empty() {
            trigger_id = crate::util::id(77);
        }
        let f = &mut b.manifest.trigger;
        f.source = "group".into();
        f.fields
            .insert("trigger_id".into(), trigger_id.clone().into());
        f.fields.insert("group".into(), "checkout".into());
        let p = srv.dir.path().join(format!("g{i}.frs"));
        b.write(&p).unwrap();
        upload(&srv.client_config(""), &p).await.unwrap();
    }
    assert_eq!(
        http()
            .get(format!("{}/", srv.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let shots = srv.dir.path().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let (url, tid, ui2, shots2, chromium2) = (
        srv.url.clone(),
        trigger_id.clone(),
        ui.clone(),
        shots.clone(),
        chromium.clone(),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(ui2.join("check.mjs"))
            .args([&url, &tid])
            .arg(&shots2)
            .env("CHROMIUM", chromium2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "check.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("the browser saw: {seen}");
    assert_eq!(seen["list_rows"], 6);
    assert_eq!(
        seen["filtered_hosts"],
        serde_json::json!(["web-2", "web-2"])
    );
    assert!(
        seen["filtered_url"]
            .as_str()
            .unwrap()
            .contains("host=web-2")
    );
    // The newest web-2 snapshot is snap3.
    assert_eq!(seen["snapshot_title"], "flightrec · snap3 on web-2");
    assert_eq!(seen["coverage_rows"], 2);
    // fsync from 1.5 ms to 9 ms: one call, no error, 7.5 ms.
    assert_eq!(
        seen["first_syscall"],
        serde_json::json!(["fsync", "1", "0", "7.500 ms", "7.500 ms"])
    );
    assert_eq!(
        seen["trigger_fields"],
        serde_json::json!([
            "tags",
            "url",
            "method",
            "duration_ms",
            "pid",
            "tid",
            "start_realtime_ns"
        ])
    );
    // The page opens with the findings and the request's story, before the snapshot's facts.
    let h2: Vec<&str> = seen["first_h2"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&h2[..3], ["Findings", "The request", "Snapshot"], "{h2:?}");
    let findings = seen["findings"].as_array().unwrap();
    let verdict = seen["verdict"].as_str().unwrap();
    assert!(
        findings[0] == verdict,
        "the story's verdict is the first finding: {findings:?}"
    );
    assert!(
        verdict.contains("fsync") && verdict.contains("db-worker"),
        "{verdict}"
    );
    // app ran from 1 ms, blocked in fsync at 2 ms, was woken at 8.9 ms and ran again at 9 ms.
    let states: Vec<&str> = seen["state_rects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        states
            .windows(3)
            .any(|w| w == ["running", "blocked", "runnable"]),
        "{states:?}"
    );
    let titles = seen["state_titles"].as_array().unwrap();
    assert!(
        titles.iter().any(|t| {
            let t = t.as_str().unwrap();
            t.starts_with("blocked 6.900 ms") && t.contains("in fsync")
        }),
        "{titles:?}"
    );
    assert_eq!(seen["axis_ticks"], 5);
    assert_eq!(seen["legend"].as_array().unwrap().len(), 3);
    let blocked = seen["blocked"].as_array().unwrap();
    assert_eq!(blocked[1], "6.900 ms", "{blocked:?}");
    assert!(blocked[2].as_str().unwrap().starts_with("fsync on fd 3"));
    assert!(
        blocked[3]
            .as_str()
            .unwrap()
            .starts_with("db-worker (pid 200, tid 201)")
    );
    // Wall-clock times: the stretch began 2 ms into the window, 8 ms before the freeze.
    assert!(
        blocked[0].as_str().unwrap().ends_with(".992"),
        "{blocked:?}"
    );
    let work = seen["slowest_work"].as_array().unwrap();
    assert_eq!(work[2], "fsync", "{work:?}");
    assert!(seen["worst_wakeups"].as_u64().unwrap() >= 1);
    // Log scale: a bucket of 1 call still gets a visible bar, and bars grow with the count.
    let (widths, counts) = (
        seen["hist_widths"].as_array().unwrap(),
        seen["hist_counts"].as_array().unwrap(),
    );
    for (w, c) in widths.iter().zip(counts) {
        if c.as_u64().unwrap() > 0 {
            assert!(w.as_u64().unwrap() >= 20, "{widths:?} for {counts:?}");
        }
    }
    assert!(seen["timeline_rects"].as_u64().unwrap() >= 2);
    assert_eq!(
        seen["timeline_titles"],
        serde_json::json!(["app (pid 100 tid 100)", "db-worker (pid 200 tid 201)"])
    );
    let h = seen["histograms"].as_array().unwrap();
    assert!(h.iter().any(|t| t == "Syscall latency"), "{h:?}");
    assert_eq!(seen["download_status"], 200);
    assert_eq!(seen["download_bytes"], sizes[3]);
    assert_eq!(seen["group_hosts"], serde_json::json!(["db-1", "web-1"]));
    assert_eq!(seen["alignment_bars"], 2);
    for name in ["list.png", "snapshot.png", "story.png", "group.png"] {
        assert!(std::fs::metadata(shots.join(name)).unwrap().len() > 1000);
    }
    if let Ok(keep) = std::env::var("FLIGHTREC_UI_SCREENSHOTS") {
        for name in ["list.png", "snapshot.png", "story.png", "group.png"] {
            let _ = std::fs::copy(shots.join(name), Path::new(&keep).join(name));
        }
    }
}
