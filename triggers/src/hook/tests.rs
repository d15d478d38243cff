//! The router driven with `oneshot`: authentication, validation, governor answers, state.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::governor::{Budget, Decision, Governor, GovernorConfig};

const TOKEN: &str = "test-token-0123456789";

/// A service backed by a real governor on a settable clock; admitted snapshots stay pending
/// until `finish` is called.
struct Fake {
    now_ms: AtomicU64,
    governor: Mutex<Governor>,
    triggers: Mutex<Vec<Trigger>>,
    states: Mutex<HashMap<String, SnapshotInfo>>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        let mut n = 0;
        let config = GovernorConfig {
            cooldown: Duration::from_millis(1000),
            min_prefill: Duration::from_millis(0),
            source_budget: Budget {
                burst: 10,
                per_minute: 60,
            },
            max_post: Duration::from_millis(2000),
            ..GovernorConfig::default()
        };
        Arc::new(Fake {
            now_ms: AtomicU64::new(10_000),
            governor: Mutex::new(Governor::new(config, 0, move || {
                n += 1;
                format!("snap{n}")
            })),
            triggers: Mutex::new(Vec::new()),
            states: Mutex::new(HashMap::new()),
        })
    }

    fn finish(&self, id: &str) {
        let now = self.now_ms.load(Ordering::SeqCst) * 1_000_000;
        self.governor.lock().unwrap().finished(id, now);
        let mut states = self.states.lock().unwrap();
        let s = states.get_mut(id).unwrap();
        s.state = SnapshotState::Written {
            path: format!("/spool/{id}.frs"),
            file_snapshot_id: format!("file-{id}"),
        };
    }
}

impl SnapshotService for Fake {
    fn trigger(&self, trigger: Trigger) -> Result<Accepted, Refused> {
        if trigger.scope == crate::Scope::Group {
            return Err(Refused::GroupUnavailable);
        }
        let now = self.now_ms.load(Ordering::SeqCst) * 1_000_000;
        let decision = self.governor.lock().unwrap().decide(now, &trigger);
        self.triggers.lock().unwrap().push(trigger.clone());
        match decision {
            Decision::Admitted {
                snapshot_id,
                post_ms,
            } => {
                self.states.lock().unwrap().insert(
                    snapshot_id.clone(),
                    SnapshotInfo {
                        snapshot_id: snapshot_id.clone(),
                        state: SnapshotState::Pending,
                        source: trigger.source.as_str().into(),
                        reason: trigger.reason,
                        joined: 0,
                    },
                );
                Ok(Accepted {
                    snapshot_id,
                    joined: false,
                    post_ms,
                })
            }
            Decision::Joined { snapshot_id } => {
                self.states
                    .lock()
                    .unwrap()
                    .get_mut(&snapshot_id)
                    .unwrap()
                    .joined += 1;
                Ok(Accepted {
                    snapshot_id,
                    joined: true,
                    post_ms: 0,
                })
            }
            Decision::Suppressed {
                reason,
                retry_after_ms,
            } => Err(Refused::Suppressed {
                reason,
                retry_after_ms,
            }),
        }
    }

    fn snapshot(&self, snapshot_id: &str) -> Option<SnapshotInfo> {
        self.states.lock().unwrap().get(snapshot_id).cloned()
    }

    fn max_post_ms(&self) -> u64 {
        2000
    }
}

fn router(fake: &Arc<Fake>) -> Router {
    app(HookState::new(fake.clone(), TOKEN, &HookConfig::default()))
}

async fn call(
    fake: &Arc<Fake>,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let resp = router(fake)
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

async fn post(fake: &Arc<Fake>, body: &str) -> (StatusCode, HeaderMap, serde_json::Value) {
    call(
        fake,
        "POST",
        "/v1/trigger",
        Some(TOKEN),
        Some("application/json"),
        body,
    )
    .await
}

#[tokio::test]
async fn authentication() {
    let fake = Fake::new();
    let body = r#"{"reason":"x"}"#;
    let json = Some("application/json");
    for token in [None, Some("wrong"), Some("test-token-012345678"), Some("")] {
        let (status, headers, answer) = call(&fake, "POST", "/v1/trigger", token, json, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert!(answer["error"].as_str().unwrap().contains("bearer token"));
    }
    // GET is authenticated too, and unknown paths are not revealed before the token is checked.
    let (status, ..) = call(&fake, "GET", "/v1/snapshots/snap1", None, None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, ..) = call(&fake, "GET", "/admin", None, None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(fake.triggers.lock().unwrap().is_empty());
    let (status, ..) = post(&fake, body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn validation() {
    let fake = Fake::new();
    let cases: &[(Option<&str>, String, StatusCode, &str)] = &[
        (
            Some("application/json"),
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            Some("application/json"),
            r#"{"reason":"x","colour":1}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown field `colour`",
        ),
        (
            Some("application/json"),
            r#"{"reason":""}"#.into(),
            StatusCode::BAD_REQUEST,
            "reason must not be empty",
        ),
        (
            Some("application/json"),
            r#"{"reason":"x","post_ms":2001}"#.into(),
            StatusCode::BAD_REQUEST,
            "limit of 2000",
        ),
        (
            Some("text/plain"),
            r#"{"reason":"x"}"#.into(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (
            Some("application/json"),
            format!(r#"{{"reason":"{}"}}"#, "x".repeat(20 * 1024)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
    ];
    for (ct, body, want, text) in cases {
        let (status, _, answer) = call(&fake, "POST", "/v1/trigger", Some(TOKEN), *ct, body).await;
        assert_eq!(status, *want, "{}", &body[..body.len().min(60)]);
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(text), "{error}");
    }
    assert!(fake.triggers.lock().unwrap().is_empty());
    let (status, _, answer) = post(&fake, r#"{"reason":"x","scope":"group"}"#).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert!(answer["error"].as_str().unwrap().contains("collector"));
}

#[tokio::test]
async fn admit_join_suppress_and_state() {
    let fake = Fake::new();
    let (status, _, a) = post(
        &fake,
        r#"{"reason":"slow checkout","url":"/checkout?id=7","method":"POST",
            "duration_ms":1234.5,"request_id":"req-42","post_ms":150}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(a["snapshot_id"], "snap1");
    assert_eq!(a["joined"], false);
    assert_eq!(a["post_ms"], 150);
    assert_eq!(a["status_url"], "/v1/snapshots/snap1");
    {
        let t = &fake.triggers.lock().unwrap()[0];
        assert_eq!(t.signature, "hook:/checkout");
        assert_eq!(t.fields["request_id"], "req-42");
        assert_eq!(t.fields["duration_ms"], 1234.5);
    }

    // While snap1 is being taken, another trigger joins it.
    let (status, _, a) = post(&fake, r#"{"reason":"other"}"#).await;
    assert_eq!(
        (status, a["snapshot_id"].as_str()),
        (StatusCode::ACCEPTED, Some("snap1"))
    );
    assert_eq!(a["joined"], true);

    let (status, _, s) = call(&fake, "GET", "/v1/snapshots/snap1", Some(TOKEN), None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (s["state"].as_str(), s["joined"].as_u64()),
        (Some("pending"), Some(1))
    );
    fake.finish("snap1");
    let (_, _, s) = call(&fake, "GET", "/v1/snapshots/snap1", Some(TOKEN), None, "").await;
    assert_eq!(s["state"], "written");
    assert_eq!(s["path"], "/spool/snap1.frs");
    assert_eq!(s["file_snapshot_id"], "file-snap1");
    assert_eq!(s["source"], "hook");
    assert_eq!(s["reason"], "slow checkout");

    // Cooldown: 429 with the reason, the hint in ms and Retry-After in seconds.
    fake.now_ms.fetch_add(300, Ordering::SeqCst);
    let (status, headers, a) = post(&fake, r#"{"reason":"third"}"#).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a["reason"], "cooldown");
    assert_eq!(a["retry_after_ms"], 700);
    assert_eq!(headers[header::RETRY_AFTER], "1");

    for path in [
        "/v1/snapshots/nope",
        "/v1/snapshots/..%2f..",
        "/v1/snapshotz",
    ] {
        let (status, ..) = call(&fake, "GET", path, Some(TOKEN), None, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[test]
fn tokens_compare_whole() {
    assert!(same_token(b"abc", b"abc"));
    assert!(!same_token(b"ab", b"abc"));
    assert!(!same_token(b"abcd", b"abc"));
    assert!(!same_token(b"abd", b"abc"));
    assert!(!same_token(b"", b"abc"));
}

#[test]
fn refused_calls_are_logged_at_most_once_a_second_with_a_count() {
    let mut log = RefusalLog::default();
    let t0 = std::time::Instant::now();
    assert_eq!(log.note(t0), Some(0));
    assert_eq!(log.note(t0 + Duration::from_millis(10)), None);
    assert_eq!(log.note(t0 + Duration::from_millis(900)), None);
    assert_eq!(log.note(t0 + Duration::from_millis(1000)), Some(2));
    assert_eq!(log.note(t0 + Duration::from_millis(2500)), Some(0));
}

fn alert_body(fingerprint: &str, pad: usize) -> String {
    serde_json::json!({
        "receiver": "flightrec",
        "status": "firing",
        "version": "4",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "RunQueueSlow", "cgroup": "/batch.slice"},
                "annotations": {"summary": "x".repeat(pad)},
                "startsAt": "2026-12-06T03:00:00Z",
                "fingerprint": fingerprint
            },
            {"status": "resolved", "labels": {"alertname": "Old"}, "fingerprint": "0"}
        ]
    })
    .to_string()
}

async fn alert(
    fake: &Arc<Fake>,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let (s, _, j) = call(
        fake,
        "POST",
        "/v1/alertmanager",
        token,
        Some("application/json"),
        body,
    )
    .await;
    (s, j)
}

#[tokio::test]
async fn alertmanager_alerts_take_one_snapshot_per_fingerprint() {
    let fake = Fake::new();
    // The token is checked as on every route.
    let (s, _) = alert(&fake, None, &alert_body("aa11", 10)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A firing alert is admitted; its labels are the tags; a resolved one is only counted.
    // The body is larger than a trigger's limit (16 KiB) but within the alerts' (256 KiB).
    let (s, j) = alert(&fake, Some(TOKEN), &alert_body("aa11", 20_000)).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["resolved"], 1);
    assert_eq!(j["alerts"][0]["fingerprint"], "aa11");
    assert_eq!(j["alerts"][0]["alertname"], "RunQueueSlow");
    assert_eq!(j["alerts"][0]["snapshot_id"], "snap1");
    let t = fake.triggers.lock().unwrap()[0].clone();
    assert_eq!(t.source, crate::Source::Alert);
    assert_eq!(t.fields["tags"]["cgroup"], "/batch.slice");

    // Alertmanager sends the same firing alert again every group_interval: a duplicate,
    // answered 200 (not retried), no second snapshot.
    fake.finish("snap1");
    fake.now_ms.fetch_add(5_000, Ordering::SeqCst);
    let (s, j) = alert(&fake, Some(TOKEN), &alert_body("aa11", 10)).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["alerts"][0]["suppressed"], "duplicate");
    assert!(j["alerts"][0].get("snapshot_id").is_none());

    // Bodies that are not Alertmanager's, or too large, are refused with a sentence.
    let (s, j) = alert(&fake, Some(TOKEN), r#"{"reason":"x"}"#).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{j}");
    let (s, _) = alert(&fake, Some(TOKEN), &alert_body("bb22", 300_000)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
}
