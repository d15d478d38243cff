//! The governor: triggers from the CLI and the hook coalesce into one snapshot during its post
//! window, and a cooldown suppresses the next one.

use std::time::Duration;

use flightrec::daemon::{self, Request};

use super::{Daemon, read, status, wait_for_snapshots};
use crate::util::privileged;

#[test]
fn coalescing_post_window_and_cooldown() {
    let Some(_p) = privileged("coalescing_post_window_and_cooldown") else {
        return;
    };
    let d = Daemon::start("coalesce", |c| {
        c.governor.cooldown = std::time::Duration::from_secs(2);
    });
    let sent = flightrec::rings::monotonic_ns();
    let (code, a) = d.post(r#"{"reason":"first","url":"/a","post_ms":400}"#);
    assert_eq!(
        (code, a["joined"].as_bool(), a["post_ms"].as_u64()),
        (202, Some(false), Some(400))
    );
    let id = a["snapshot_id"].as_str().unwrap().to_owned();

    // During the post window: the CLI's trigger and another hook call join it.
    let cli = daemon::request(
        &d.config.recorder.control_socket,
        &Request::Trigger {
            reason: "operator".into(),
            post_ms: None,
        },
    )
    .unwrap();
    let daemon::Response::Trigger(joined) = cli else {
        panic!("joined: {cli:?}");
    };
    assert!(joined.joined);
    assert_eq!(joined.snapshot_id, id);
    let (code, b) = d.post(r#"{"reason":"second","url":"/b"}"#);
    assert_eq!((code, b["snapshot_id"].as_str()), (202, Some(id.as_str())));

    let files = wait_for_snapshots(d.spool(), 1, Duration::from_secs(10));
    assert_eq!(files.len(), 1);
    let (m, _) = read(&files[0]);
    assert_eq!(m.trigger.fields["trigger_id"], id.as_str());
    let joined = m.trigger.fields["joined"].as_array().unwrap();
    let sources: Vec<&str> = joined
        .iter()
        .map(|j| j["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["cli", "hook"]);
    assert_eq!(joined[1]["fields"]["url"], "/b");
    let waited = m.frozen_monotonic_ns - sent;
    assert!(waited >= 400_000_000, "froze {waited} ns after the trigger");
    assert!(
        waited < 2_000_000_000,
        "froze {waited} ns after the trigger"
    );

    // Written, but within the cooldown: suppressed with the time left.
    let (code, c) = d.post(r#"{"reason":"third","url":"/c"}"#);
    assert_eq!((code, c["reason"].as_str()), (429, Some("cooldown")));
    let left = c["retry_after_ms"].as_u64().unwrap();
    assert!(left > 0 && left <= 2000, "{left}");
    std::thread::sleep(Duration::from_millis(left + 50));
    let (code, e) = d.post(r#"{"reason":"fourth","url":"/d"}"#);
    assert_eq!((code, e["joined"].as_bool()), (202, Some(false)));
    wait_for_snapshots(d.spool(), 2, Duration::from_secs(10));
    let st = status(&d.config);
    assert_eq!(st["triggers"]["admitted"], 2);
    assert_eq!(st["triggers"]["coalesced"], 2);
    assert_eq!(st["triggers"]["suppressed"]["cooldown"], 1);
    assert_eq!(st["triggers"]["by_source"]["cli"]["coalesced"], 1);
}
