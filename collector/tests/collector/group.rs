//! Group triggers: two registered recorders get one trigger id within 50 ms, and their
//! snapshots are linked in the catalog with their clock offsets.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flightrec_collector::config::RecorderToken;
use flightrec_uplink::GroupStatus;
use schemas::manifest::TriggerInfo;

use crate::util::{Server, http, upload};

const TOKENS: [(&str, &str); 3] = [
    ("web-1", "write-token-web-1-xxxx"),
    ("db-1", "write-token-db-1-xxxxx"),
    ("batch-1", "write-token-batch-1-xx"),
];
const ADMIN: &str = "admin-token-0123456789";
const READER: &str = "reader-token-0123456789";

/// Registers `host` in `group` on `srv` as its recorder would; returns its trigger channel.
pub fn join(
    srv: &Server,
    host: &str,
    token: &str,
    group: &str,
) -> (
    tokio::sync::mpsc::Receiver<TriggerInfo>,
    Arc<Mutex<GroupStatus>>,
) {
    join_via(srv.client_config(token), host, group)
}

/// Registers `host` in `group` through `cfg` (URL and token) as its recorder would.
pub fn join_via(
    mut cfg: flightrec_uplink::CollectorConfig,
    host: &str,
    group: &str,
) -> (
    tokio::sync::mpsc::Receiver<TriggerInfo>,
    Arc<Mutex<GroupStatus>>,
) {
    cfg.group = group.into();
    let client = flightrec_uplink::http_client(&cfg).unwrap();
    let st = Arc::new(Mutex::new(GroupStatus::default()));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(flightrec_uplink::group::run(
        client,
        cfg,
        host.into(),
        st.clone(),
        tx,
    ));
    (rx, st)
}

/// Fires one group trigger with `send` (which returns the collector's answer) while every
/// receiver of `rxs` waits up to 2 s for it; returns the answer, how long it took, and, in
/// `rxs` order, how long
/// after the answer's `sent_realtime_ns` each recorder had it (both on this host's realtime
/// clock, which the collector stamps the trigger with as it starts the fan-out).
pub async fn fire_and_time(
    rxs: &mut Vec<tokio::sync::mpsc::Receiver<TriggerInfo>>,
    send: impl std::future::Future<Output = serde_json::Value>,
) -> (serde_json::Value, Duration, Vec<Duration>) {
    let waits: Vec<_> = std::mem::take(rxs)
        .into_iter()
        .map(|mut rx| {
            tokio::spawn(async move {
                let t = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                    .await
                    .expect("every recorder of the group gets the trigger")
                    .unwrap();
                (schemas::clock::realtime_ns(), t, rx)
            })
        })
        .collect();
    let asked = Instant::now();
    let resp = send.await;
    let answered = asked.elapsed();
    let tid = resp["trigger_id"].as_str().unwrap().to_owned();
    let sent = resp["sent_realtime_ns"].as_u64().unwrap();
    let mut each = Vec::new();
    for w in waits {
        let (at, t, rx) = w.await.unwrap();
        assert_eq!(t.fields["trigger_id"], tid.as_str());
        each.push(Duration::from_nanos(at.saturating_sub(sent)));
        rxs.push(rx);
    }
    (resp, answered, each)
}

/// A small real snapshot of `host` taken for `trigger`.
fn snapshot(dir: &std::path::Path, host: &str, n: u64, trigger: TriggerInfo) -> std::path::PathBuf {
    let mut b = flightrec_reader::synth::SnapshotBuilder::new(2);
    b.manifest.snapshot_id = crate::util::id(n);
    b.manifest.host.host_id = host.into();
    b.manifest.trigger = trigger;
    b.manifest.clocks.realtime_minus_monotonic_ns = 1_795_000_000_000_000_000 + n as i64 * 1000;
    b.switch(1_000, 0, (0, 0, "swapper/0"), 0, (100, 100, "app"));
    b.syscall(0, (100, 100, "app"), 0, 3, 10, 2_000, 50_000);
    b.switch(60_000, 0, (100, 100, "app"), 1, (0, 0, "swapper/0"));
    let path = dir.join(format!("{host}.frs"));
    b.write(&path).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_trigger_reaches_every_recorder_within_50_ms_and_links_the_snapshots() {
    let srv = Server::start(|c| {
        c.auth.recorders = TOKENS
            .iter()
            .map(|(h, t)| RecorderToken {
                host_id: h.to_string(),
                token: t.to_string(),
                // The batch host may join its own group only; the others any.
                groups: vec![if *h == "batch-1" { "nightly" } else { "*" }.into()],
            })
            .collect();
        c.auth.admins = vec![ADMIN.into()];
        c.auth.readers = vec![READER.into()];
    })
    .await;
    let (mut rx_web, st_web) = join(&srv, "web-1", TOKENS[0].1, "checkout");
    let (mut rx_db, _) = join(&srv, "db-1", TOKENS[1].1, "checkout");
    // Another group: must not receive this group's trigger.
    let (mut rx_batch, _) = join(&srv, "batch-1", TOKENS[2].1, "nightly");
    // A token registering for another host is refused.
    let r = http()
        .get(format!(
            "{}/v1/groups/checkout/listen?host_id=db-1",
            srv.url
        ))
        .bearer_auth(TOKENS[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    for _ in 0..200 {
        if srv.state.groups.members() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(srv.state.groups.members(), 3);

    let asked = Instant::now();
    let resp: serde_json::Value = http()
        .post(format!("{}/v1/trigger", srv.url))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({
            "scope": "group", "group": "checkout", "reason": "slow checkout",
            "fields": {"url": "/checkout", "duration_ms": 812, "tags": ["slow", "checkout"]}
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tid = resp["trigger_id"].as_str().unwrap().to_owned();
    assert_eq!(resp["recipients"], serde_json::json!(["db-1", "web-1"]));
    let mut got = Vec::new();
    for rx in [&mut rx_web, &mut rx_db] {
        let t = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let waited = asked.elapsed();
        let sent = t.fields["sent_realtime_ns"].as_u64().unwrap();
        let received = t.fields["received_realtime_ns"].as_u64().unwrap();
        println!(
            "trigger received after {waited:?} (collector send to recorder receipt {} us)",
            (received - sent) / 1000
        );
        // The fan-out itself: from the collector sending to the recorder holding it. The
        // whole request (connection, parsing, an unoptimised build sharing two cores with the
        // other tests) only gets a sanity bound.
        assert!(
            received - sent < 50_000_000,
            "fan-out took {} us",
            (received - sent) / 1000
        );
        assert!(waited < Duration::from_secs(1), "took {waited:?}");
        assert_eq!(t.source, "group");
        assert_eq!(t.reason, "slow checkout");
        assert_eq!(t.fields["trigger_id"], tid.as_str());
        assert_eq!(t.fields["group"], "checkout");
        assert_eq!(t.fields["url"], "/checkout");
        got.push(t);
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(100), rx_batch.recv())
            .await
            .is_err(),
        "another group's recorder got the trigger"
    );
    assert_eq!(st_web.lock().unwrap().group_triggers_received_total, 1);

    // Each host's snapshot for the trigger; the catalog links them.
    for (i, (host, token)) in TOKENS[..2].iter().enumerate() {
        let p = snapshot(srv.dir.path(), host, 500 + i as u64, got[i].clone());
        upload(&srv.client_config(token), &p).await.unwrap();
    }
    let view: serde_json::Value = http()
        .get(format!("{}/v1/triggers/{tid}", srv.url))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let snaps = view["snapshots"].as_array().unwrap();
    let hosts: Vec<_> = snaps
        .iter()
        .map(|s| s["host_id"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["db-1", "web-1"]);
    assert_eq!(view["missing"], serde_json::json!([]));
    assert_eq!(view["trigger"]["requested_by"], "collector");
    for s in snaps {
        assert_eq!(s["trigger_id"], tid.as_str());
        assert_eq!(s["group"], "checkout");
        assert_eq!(s["tags"], serde_json::json!(["slow", "checkout"]));
        let off = s["host_clock_offset_ns"].as_i64().unwrap();
        assert!((0..50_000_000).contains(&off), "offset {off}");
    }
    assert_eq!(
        snaps[0]["realtime_minus_monotonic_ns"].as_i64().unwrap(),
        1_795_000_000_000_000_000 + 501_000
    );
    // The same set by filter.
    let page: serde_json::Value = http()
        .get(format!("{}/v1/snapshots?group=checkout&tag=slow", srv.url))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);

    // A recorder may fire its own group, not another.
    let mut cfg = srv.client_config(TOKENS[0].1);
    cfg.group = "checkout".into();
    let client = flightrec_uplink::http_client(&cfg).unwrap();
    let id2 =
        flightrec_uplink::group::trigger_group(&client, &cfg, "from web-1", Default::default())
            .await
            .unwrap();
    let t = tokio::time::timeout(Duration::from_secs(2), rx_db.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.fields["trigger_id"], id2.as_str());
    assert_eq!(t.fields["requested_by"], "web-1");
    cfg.group = "nightly".into();
    let err = flightrec_uplink::group::trigger_group(&client, &cfg, "x", Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    // Readers cannot fire triggers.
    let r = http()
        .post(format!("{}/v1/trigger", srv.url))
        .bearer_auth(READER)
        .json(&serde_json::json!({"scope": "group", "group": "checkout"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}
