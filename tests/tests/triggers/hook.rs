//! The HTTP hook: authentication, validation of requests, and a flood of 10 000 calls held to
//! the source and host budgets while the control socket stays responsive.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Daemon, TOKEN, http, read, status, wait_for_snapshots};
use crate::util::privileged;

#[test]
fn hook_auth_validation_and_a_flood_of_10000_calls() {
    let Some(_p) = privileged("hook_auth_validation_and_a_flood_of_10000_calls") else {
        return;
    };
    let d = Daemon::start("flood", |c| {
        c.governor.cooldown = std::time::Duration::ZERO;
        c.governor.source_budget.burst = 3;
        c.governor.source_budget.per_minute = 0;
        c.governor.host_budget.burst = 10;
        c.governor.host_budget.per_minute = 0;
    });

    let body = r#"{"reason":"x"}"#;
    assert_eq!(http(d.hook, "POST", "/v1/trigger", None, body).0, 401);
    assert_eq!(
        http(d.hook, "POST", "/v1/trigger", Some("not-the-token"), body).0,
        401
    );
    let (code, e) = d.post(r#"{"reason":"x","post_ms":999999}"#);
    assert_eq!(code, 400);
    assert!(
        e["error"].as_str().unwrap().contains("max")
            || e["error"].as_str().unwrap().contains("limit")
    );
    assert_eq!(d.post(r#"{"reason":"x","scope":"group"}"#).0, 501);
    assert_eq!(d.post("{").0, 400);
    assert_eq!(status(&d.config)["triggers"]["admitted"], 0);

    // 10 000 calls from two threads, distinct URLs so only the budget limits them; a third
    // thread keeps asking the control socket for status meanwhile.
    let hook = d.hook;
    let flooders: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                let mut admitted = Vec::new();
                let (mut joined, mut limited) = (0u32, 0u32);
                for i in 0..5000 {
                    let url = format!("/flood/{t}/{i}?q=1");
                    let req =
                        format!(r#"{{"reason":"flood","url":"{url}","request_id":"{t}-{i}"}}"#);
                    let (code, a) = http(hook, "POST", "/v1/trigger", Some(TOKEN), &req);
                    match (code, a["joined"].as_bool()) {
                        (202, Some(false)) => {
                            admitted.push((a["snapshot_id"].as_str().unwrap().to_owned(), url))
                        }
                        (202, Some(true)) => joined += 1,
                        (429, _) => limited += 1,
                        other => panic!("unexpected answer {other:?}: {a}"),
                    }
                }
                (admitted, joined, limited)
            })
        })
        .collect();
    let config = d.config.clone();
    let watcher = std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let t = Instant::now();
            status(&config);
            worst = worst.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
        worst
    });
    let (mut admitted, mut joined, mut limited) = (Vec::new(), 0, 0);
    for f in flooders {
        let (a, j, l) = f.join().unwrap();
        admitted.extend(a);
        joined += j;
        limited += l;
    }
    let worst = watcher.join().unwrap();
    assert_eq!(admitted.len(), 3, "admitted {admitted:?}");
    assert_eq!(joined + limited, 9997);
    assert!(
        worst < Duration::from_secs(1),
        "status took {worst:?} during the flood"
    );

    let files = wait_for_snapshots(d.spool(), 3, Duration::from_secs(20));
    assert_eq!(files.len(), 3);
    let st = status(&d.config);
    assert_eq!(st["triggers"]["admitted"], 3);
    assert_eq!(st["triggers"]["coalesced"], joined);
    assert_eq!(st["triggers"]["suppressed"]["source_budget"], limited);
    assert_eq!(st["snapshots_taken"], 3);
    for (id, url) in &admitted {
        let (code, s) = http(
            d.hook,
            "GET",
            &format!("/v1/snapshots/{id}"),
            Some(TOKEN),
            "",
        );
        assert_eq!((code, s["state"].as_str()), (200, Some("written")), "{s}");
        let (m, _) = read(Path::new(s["path"].as_str().unwrap()));
        assert_eq!(m.trigger.source, "hook");
        assert_eq!(m.trigger.fields["trigger_id"], id.as_str());
        assert_eq!(m.trigger.fields["url"], url.as_str());
        assert_eq!(m.snapshot_id, s["file_snapshot_id"].as_str().unwrap());
    }
    eprintln!("flood: 3 admitted, {joined} joined, {limited} suppressed; status worst {worst:?}");
}
