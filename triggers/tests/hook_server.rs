//! The hook served for real on loopback: a flood, slow-loris clients, and the tower layer in
//! front of an axum app.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use triggers::client::HookClient;
use triggers::governor::{Budget, Decision, Governor, GovernorConfig};
use triggers::hook::{
    self, Accepted, HookConfig, HookState, Refused, SnapshotInfo, SnapshotService, SnapshotState,
};
use triggers::trigger::{HookRequest, Trigger};

const TOKEN: &str = "server-test-token-0123";

/// A service whose snapshots finish the moment they are admitted.
struct Instant_ {
    governor: Mutex<Governor>,
    start: Instant,
    seen: Mutex<Vec<Trigger>>,
    admitted: AtomicU64,
}

impl Instant_ {
    fn new(config: GovernorConfig) -> Arc<Instant_> {
        let mut n = 0;
        Arc::new(Instant_ {
            governor: Mutex::new(Governor::new(config, 0, move || {
                n += 1;
                format!("s{n}")
            })),
            start: Instant::now(),
            seen: Mutex::new(Vec::new()),
            admitted: AtomicU64::new(0),
        })
    }
}

impl SnapshotService for Instant_ {
    fn trigger(&self, trigger: Trigger) -> Result<Accepted, Refused> {
        let now = self.start.elapsed().as_nanos() as u64;
        let mut g = self.governor.lock().unwrap();
        self.seen.lock().unwrap().push(trigger.clone());
        match g.decide(now, &trigger) {
            Decision::Admitted {
                snapshot_id,
                post_ms,
            } => {
                g.finished(&snapshot_id, now);
                self.admitted.fetch_add(1, Ordering::SeqCst);
                Ok(Accepted {
                    snapshot_id,
                    joined: false,
                    post_ms,
                })
            }
            Decision::Joined { snapshot_id } => Ok(Accepted {
                snapshot_id,
                joined: true,
                post_ms: 0,
            }),
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
        Some(SnapshotInfo {
            snapshot_id: snapshot_id.into(),
            state: SnapshotState::Pending,
            source: "hook".into(),
            reason: String::new(),
            joined: 0,
        })
    }

    fn max_post_ms(&self) -> u64 {
        1000
    }
}

async fn start(service: Arc<dyn SnapshotService>, config: HookConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = hook::app(HookState::new(service, TOKEN, &config));
    tokio::spawn(async move {
        hook::serve(listener, app, &config, std::future::pending()).await;
    });
    addr
}

fn flood_policy() -> GovernorConfig {
    GovernorConfig {
        cooldown: Duration::from_millis(0),
        min_prefill: Duration::from_millis(0),
        dedupe_window: Duration::from_millis(60_000),
        source_budget: Budget {
            burst: 5,
            per_minute: 0,
        },
        host_budget: Budget {
            burst: 100,
            per_minute: 0,
        },
        ..GovernorConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_admits_exactly_the_budget_and_the_hook_stays_responsive() {
    let service = Instant_::new(flood_policy());
    let addr = start(service.clone(), HookConfig::default()).await;
    let client = HookClient::new(addr, TOKEN);
    // 4 connections × 2500 calls, distinct URLs so dedupe does not hide the budget.
    let mut tasks = Vec::new();
    for c in 0..4 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = client.connect().await.unwrap();
            let (mut ok, mut limited) = (0u32, 0u32);
            for i in 0..2500 {
                let req = HookRequest {
                    reason: "flood".into(),
                    url: Some(format!("/p/{c}/{i}")),
                    ..HookRequest::default()
                };
                match conn.trigger(&req).await.unwrap().status {
                    202 => ok += 1,
                    429 => limited += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            (ok, limited)
        }));
    }
    let started = Instant::now();
    // While the flood runs, a separate client still gets answers quickly.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let a = client
            .connect()
            .await
            .unwrap()
            .snapshot("s1")
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (o, l) = t.await.unwrap();
        ok += o;
        limited += l;
    }
    assert_eq!((ok, limited), (5, 9995));
    assert_eq!(service.admitted.load(Ordering::SeqCst), 5);
    assert_eq!(service.seen.lock().unwrap().len(), 10_000);
    assert!(
        worst < Duration::from_millis(500),
        "a status call took {worst:?} during the flood"
    );
    eprintln!(
        "10000 hook calls in {:?}; slowest status call during them {worst:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_clients_are_cut_off_and_others_are_served() {
    let service = Instant_::new(flood_policy());
    let config = HookConfig {
        header_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(300),
        max_connections: 8,
        ..HookConfig::default()
    };
    let addr = start(service.clone(), config).await;

    // Headers trickling in: cut when the header timeout passes.
    let mut slow_headers = TcpStream::connect(addr).await.unwrap();
    slow_headers
        .write_all(b"POST /v1/trigger HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Full headers, but a body that never completes: cut by the request deadline (408).
    let mut slow_body = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/trigger HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"reason\""
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();

    let t = Instant::now();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(3), slow_headers.read_to_end(&mut buf))
        .await
        .expect("the header timeout closes the connection")
        .unwrap_or(0);
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert!(
        n == 0 || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), slow_body.read_to_end(&mut buf))
        .await
        .expect("the request deadline ends the request");
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );

    // Idle sockets fill the cap; a caller past it replaces the oldest of them and is served.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = HookClient::new(addr, TOKEN)
        .trigger(&HookRequest {
            reason: "past the cap".into(),
            ..HookRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(a.status, 202, "{}", a.body);
    let mut one = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(1), idle[0].read(&mut one))
        .await
        .expect("the oldest idle connection made room")
        .unwrap_or(0);
    assert_eq!(n, 0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let a = HookClient::new(addr, TOKEN)
        .trigger(&HookRequest {
            reason: "after the loris".into(),
            ..HookRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(a.status, 202, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_layer_reports_only_slow_requests() {
    use axum::routing::get;
    use triggers::tower::SlowRequestLayer;

    let service = Instant_::new(GovernorConfig {
        min_prefill: Duration::from_millis(0),
        ..GovernorConfig::default()
    });
    let hook_addr = start(service.clone(), HookConfig::default()).await;
    let app = axum::Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(150)).await;
                "slow"
            }),
        )
        .layer(SlowRequestLayer::new(
            Duration::from_millis(100),
            HookClient::new(hook_addr, TOKEN),
        ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let get = |path: &'static str, id: &'static str| async move {
        let mut s = TcpStream::connect(app_addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: app\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    };
    for i in 0..5 {
        get("/fast", ["f0", "f1", "f2", "f3", "f4"][i]).await;
    }
    get("/slow?item=9", "req-slow-1").await;
    // The report is sent after the response: wait for it.
    let deadline = Instant::now() + Duration::from_secs(3);
    while service.seen.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = service.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let t = &seen[0];
    assert_eq!(t.signature, "hook:/slow");
    assert_eq!(t.fields["url"], "/slow?item=9");
    assert_eq!(t.fields["method"], "GET");
    assert_eq!(t.fields["request_id"], "req-slow-1");
    assert_eq!(t.fields["tags"]["status"], "200");
    let ms = t.fields["duration_ms"].as_f64().unwrap();
    assert!((150.0..1000.0).contains(&ms), "{ms}");
    assert_eq!(service.admitted.load(Ordering::SeqCst), 1);
}
