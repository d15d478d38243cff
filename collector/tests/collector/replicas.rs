//! Several collector replicas on one PostgreSQL catalog (issue 12): what one replica took in,
//! another carries on. Each replica here has its own data directory (staging, local archive),
//! as on separate machines; only the catalog is shared.

use flightrec_uplink::spool::Outcome;

use crate::pg::start_or_skip;
use crate::util::{Server, bulk, get_json, upload};

#[tokio::test]
async fn an_upload_opened_on_one_replica_resumes_byte_identical_on_another() {
    let Some(pg) =
        start_or_skip("an_upload_opened_on_one_replica_resumes_byte_identical_on_another")
    else {
        return;
    };
    let url = pg.fresh_db();
    let a = Server::start(|c| c.catalog.url = url.clone()).await;
    let b = Server::start(|c| c.catalog.url = url.clone()).await;
    let (path, sid) = bulk(b.dir.path(), 21, "web-1", 20_000);
    let bytes = std::fs::read(&path).unwrap();
    let size = bytes.len() as u64;
    crate::ingest::send_prefix(&a.url, "", &path, &sid, 1_000_000).await;
    // Replica A goes away with its staging directory: only the shared catalog remains.
    drop(a.stop().await);
    let out = upload(&b.client_config(""), &path).await.unwrap();
    assert_eq!(
        out,
        Outcome::Uploaded {
            sent: size - 1_000_000
        },
        "B resumes where A stood"
    );
    assert_eq!(b.archived(&sid).await.unwrap(), bytes);
    let (n, total) = b.state.with_catalog(|c| c.totals()).await.unwrap();
    assert_eq!((n, total), (1, size));
    // The staged bytes went with the session.
    assert!(
        b.state
            .with_catalog(|c| c.sessions())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn chunks_alternating_between_replicas_make_one_file() {
    let Some(pg) = start_or_skip("chunks_alternating_between_replicas_make_one_file") else {
        return;
    };
    let url = pg.fresh_db();
    let a = Server::start(|c| c.catalog.url = url.clone()).await;
    let b = Server::start(|c| c.catalog.url = url.clone()).await;
    let (path, sid) = bulk(a.dir.path(), 22, "web-2", 4_000);
    let bytes = std::fs::read(&path).unwrap();
    let c = crate::util::http();
    let sha = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&bytes))
    };
    let r = c
        .post(format!("{}/v1/uploads", a.url))
        .json(&serde_json::json!({"snapshot_id": sid, "size": bytes.len(), "sha256": sha}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Each chunk to the other replica, as a round-robin balancer without stickiness would.
    let mut at = 0usize;
    let mut turn = 0;
    while at < bytes.len() {
        let end = (at + 100_000).min(bytes.len());
        let body = &bytes[at..end];
        let to = if turn % 2 == 0 { &a.url } else { &b.url };
        let r = c
            .patch(format!("{to}/v1/uploads/{sid}"))
            .header("upload-offset", at)
            .header("chunk-crc32", format!("{:08x}", crc32fast::hash(body)))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        at = end;
        turn += 1;
    }
    assert!(turn >= 3);
    let r = c
        .post(format!("{}/v1/uploads/{sid}/complete", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(a.archived(&sid).await.unwrap(), bytes);
    // B sees the entry at once.
    let e = b
        .state
        .with_catalog({
            let sid = sid.clone();
            move |c| c.get(&sid)
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.bytes, bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_trigger_reaches_recorders_on_both_replicas_within_50_ms() {
    use flightrec_collector::config::RecorderToken;
    use std::time::Duration;
    let Some(pg) = start_or_skip("a_group_trigger_reaches_recorders_on_both_replicas_within_50_ms")
    else {
        return;
    };
    const ADMIN: &str = "admin-token-0123456789";
    let hosts = ["web-1", "web-2", "web-3", "web-4"];
    let token = |h: &str| format!("write-token-{h}-xxxxxxxx");
    let url = pg.fresh_db();
    let edit = |c: &mut flightrec_collector::config::Config| {
        c.catalog.url = url.clone();
        c.auth.admins = vec![ADMIN.into()];
        c.auth.recorders = hosts
            .iter()
            .map(|h| RecorderToken {
                host_id: h.to_string(),
                token: token(h),
                groups: vec!["*".into()],
            })
            .collect();
    };
    let a = Server::start(edit).await;
    let b = Server::start(edit).await;
    // Two recorders on each replica.
    let mut rxs = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let srv = if i % 2 == 0 { &a } else { &b };
        rxs.push(crate::group::join(srv, h, &token(h), "checkout").0);
    }
    for _ in 0..300 {
        if a.state.groups.members() == 2 && b.state.groups.members() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!((a.state.groups.members(), b.state.groups.members()), (2, 2));
    for round in 0..3 {
        // Sent to A: its own recorders directly, B's through the catalog's NOTIFY.
        let (_, answered, each) = crate::group::fire_and_time(&mut rxs, async {
            crate::util::http()
                .post(format!("{}/v1/trigger", a.url))
                .bearer_auth(ADMIN)
                .json(&serde_json::json!({"scope": "group", "group": "checkout", "reason": "slow"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
        .await;
        let worst = each.iter().max().copied().unwrap();
        println!(
            "round {round}: answered in {answered:?}; fan-out to A's recorders {:?}, to B's {:?}",
            [each[0], each[2]],
            [each[1], each[3]]
        );
        assert!(
            worst < Duration::from_millis(50),
            "fan-out across replicas took {worst:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_registered_on_one_replica_triggers_through_another_and_all_list_it() {
    use flightrec_collector::config::RecorderToken;
    use std::time::Duration;
    let test = "a_recorder_registered_on_one_replica_triggers_through_another_and_all_list_it";
    let Some(pg) = start_or_skip(test) else {
        return;
    };
    const ADMIN: &str = "admin-token-0123456789";
    let token = |h: &str| format!("write-token-{h}-xxxxxxxx");
    let url = pg.fresh_db();
    let edit = |c: &mut flightrec_collector::config::Config| {
        c.catalog.url = url.clone();
        c.auth.admins = vec![ADMIN.into()];
        c.auth.recorders = ["web-1", "web-2"]
            .iter()
            .map(|h| RecorderToken {
                host_id: h.to_string(),
                token: token(h),
                groups: vec!["checkout".into()],
            })
            .collect();
    };
    let a = Server::start(edit).await;
    let b = Server::start(edit).await;
    let (mut rx1, _) = crate::group::join(&a, "web-1", &token("web-1"), "checkout");
    let (mut rx2, _) = crate::group::join(&b, "web-2", &token("web-2"), "checkout");
    let hosts = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["groups"][0]["hosts"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let s = |k: &str| h[k].as_str().unwrap().to_owned();
                        (s("host_id"), s("replica"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (ra, rb) = (
        a.state.groups.replica().to_owned(),
        b.state.groups.replica().to_owned(),
    );
    assert_ne!(ra, rb);
    // Each replica lists both recorders, each with the replica its stream is on.
    let want = vec![("web-1".into(), ra.clone()), ("web-2".into(), rb.clone())];
    for srv in [&a, &b] {
        let mut seen = Vec::new();
        for _ in 0..300 {
            let v = get_json(&format!("{}/v1/groups", srv.url), ADMIN).await;
            assert_eq!(v["replica"], srv.state.groups.replica());
            seen = hosts(&v);
            if seen == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(seen, want);
    }
    // web-1, connected to A, triggers its group through B: allowed, and the recipients are
    // both replicas' recorders.
    let fire = |srv: &Server, host: &str| {
        crate::util::http()
            .post(format!("{}/v1/trigger", srv.url))
            .bearer_auth(token(host))
            .json(&serde_json::json!({"scope": "group", "group": "checkout", "reason": "slow"}))
            .send()
    };
    let r = fire(&b, "web-1").await.unwrap();
    assert_eq!(r.status(), 200);
    let resp: serde_json::Value = r.json().await.unwrap();
    assert_eq!(resp["recipients"], serde_json::json!(["web-1", "web-2"]));
    let tid = resp["trigger_id"].as_str().unwrap();
    for rx in [&mut rx1, &mut rx2] {
        let t = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("both recorders get it")
            .unwrap();
        assert_eq!(t.fields["trigger_id"], tid);
        assert_eq!(t.fields["requested_by"], "web-1");
    }
    // The trigger view on the other replica waits for both hosts' snapshots.
    let view = get_json(&format!("{}/v1/triggers/{tid}", a.url), ADMIN).await;
    assert_eq!(view["missing"], serde_json::json!(["web-1", "web-2"]));
    // A stops: its registrations leave the catalog, and web-1 may no longer trigger on B.
    drop(a.stop().await);
    let mut seen = Vec::new();
    for _ in 0..300 {
        seen = hosts(&get_json(&format!("{}/v1/groups", b.url), ADMIN).await);
        if seen.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, vec![("web-2".to_owned(), rb.clone())]);
    assert_eq!(fire(&b, "web-1").await.unwrap().status(), 403);
    assert_eq!(fire(&b, "web-2").await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_collector_leaves_no_connection_to_the_catalog() {
    use std::time::Duration;
    let Some(pg) = start_or_skip("a_stopped_collector_leaves_no_connection_to_the_catalog") else {
        return;
    };
    let url = pg.fresh_db();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let count = move || {
        let (admin, db) = (pg.url("postgres"), db.clone());
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                    &[&db],
                )
                .unwrap()
                .get(0);
            n
        })
        .join()
        .unwrap()
    };
    let srv = Server::start(|c| c.catalog.url = url.clone()).await;
    let _ = get_json(&format!("{}/v1/groups", srv.url), "").await;
    // The pool's connection and the LISTEN connection of group triggers.
    assert!(count() >= 2, "{}", count());
    drop(srv.stop().await);
    let mut left = count();
    for _ in 0..50 {
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = count();
    }
    assert_eq!(left, 0, "connections left to the catalog's database");
}
