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
        // The budgets alone limit the flood: with a pre-trigger fill, how many calls are
        // admitted would depend on how long the flood lasts.
        c.governor.min_prefill = std::time::Duration::ZERO;
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
                let mut answers = Answers::default();
                for i in 0..5000 {
                    answers.call(hook, &format!("{t}-{i}"));
                }
                answers
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
    let mut answers = Answers::default();
    for f in flooders {
        answers.merge(f.join().unwrap());
    }
    let worst = watcher.join().unwrap();
    assert!(
        worst < Duration::from_secs(1),
        "status took {worst:?} during the flood"
    );
    // Calls while a snapshot is pending join it, so how many of the three tokens the flood
    // spent depends on how long its snapshots took; a few more calls, spaced out, spend the
    // rest (bounded).
    assert!(
        (1..=3).contains(&answers.admitted.len()),
        "{:?}",
        answers.admitted
    );
    let mut calls = 10_000;
    while answers.admitted.len() < 3 && calls < 10_200 {
        std::thread::sleep(Duration::from_millis(50));
        answers.call(d.hook, &format!("late-{calls}"));
        calls += 1;
    }
    let Answers {
        admitted,
        joined,
        limited,
    } = answers;
    assert_eq!(admitted.len(), 3, "admitted {admitted:?}");
    assert_eq!(admitted.len() as u32 + joined + limited, calls);

    let files = wait_for_snapshots(d.spool(), 3, Duration::from_secs(20));
    assert_eq!(files.len(), 3);
    let st = status(&d.config);
    assert_eq!(st["triggers"]["admitted"], 3);
    assert_eq!(st["triggers"]["coalesced"], joined);
    assert_eq!(
        st["triggers"]["suppressed"]["source_budget"]
            .as_u64()
            .unwrap_or(0),
        u64::from(limited)
    );
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

/// The hook's answers to flood calls, by kind.
#[derive(Default)]
struct Answers {
    /// (snapshot id, url) of each admitted call.
    admitted: Vec<(String, String)>,
    joined: u32,
    limited: u32,
}

impl Answers {
    /// Sends one trigger with a URL and request id made of `key`, and counts its answer.
    fn call(&mut self, hook: std::net::SocketAddr, key: &str) {
        let url = format!("/flood/{key}?q=1");
        let req = format!(r#"{{"reason":"flood","url":"{url}","request_id":"{key}"}}"#);
        let (code, a) = http(hook, "POST", "/v1/trigger", Some(TOKEN), &req);
        match (code, a["joined"].as_bool()) {
            (202, Some(false)) => self
                .admitted
                .push((a["snapshot_id"].as_str().unwrap().to_owned(), url)),
            (202, Some(true)) => self.joined += 1,
            (429, _) => self.limited += 1,
            other => panic!("unexpected answer {other:?}: {a}"),
        }
    }

    fn merge(&mut self, other: Answers) {
        self.admitted.extend(other.admitted);
        self.joined += other.joined;
        self.limited += other.limited;
    }
}
