//! Issue 10's probes that need the collector as a process of its own: the default collector
//! (no config at all), and its memory over a flood of requests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::{bulk, http, upload};

/// `flightrec-collector serve` with no config, on a fresh data directory and a loopback port
/// of its own, under umask 000; killed on drop.
struct Child {
    child: std::process::Child,
    url: String,
    data: PathBuf,
    log: String,
    _tmp: tempfile::TempDir,
}

impl Child {
    async fn start() -> Child {
        use std::os::unix::process::CommandExt;
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let log_path = tmp.path().join("collector.log");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flightrec-collector"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stderr(std::fs::File::create(&log_path).unwrap());
        // SAFETY: umask is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            })
        };
        let mut c = Child {
            child: cmd.spawn().unwrap(),
            url: String::new(),
            data,
            log: String::new(),
            _tmp: tmp,
        };
        for _ in 0..400 {
            c.log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Some(url) = c.log.lines().find_map(|l| {
                l.strip_prefix("flightrec-collector: listening on ")
                    .and_then(|r| r.split_whitespace().next())
            }) && c.log.contains("admin token")
            {
                c.url = url.to_owned();
                return c;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("collector did not come up: {}", c.log);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Probe 6: with no config every local user was admin, and `/login?token=` put unvalidated
/// text into `Set-Cookie`. A collector started with nothing generates an admin token (0600,
/// under umask 000), says where it is, refuses anonymous calls, and `/login` sets a cookie for
/// that token only, never for injected attributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe6_default_collector_generates_an_admin_token_and_refuses_anonymous_writes() {
    let c = Child::start().await;
    let token_file = c.data.join("admin.token");
    assert!(
        c.log
            .contains(&format!("the admin token is in {}", token_file.display())),
        "{}",
        c.log
    );
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&c.data), 0o750);
    let admin = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(admin.len() >= 32, "{admin:?}");

    let h = http();
    let anon = h
        .post(format!("{}/v1/uploads", c.url))
        .json(&serde_json::json!({"snapshot_id": "a", "size": 1, "sha256": "0".repeat(64)}))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let list = |tok: Option<&str>| {
        let mut r = h.get(format!("{}/v1/snapshots", c.url));
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    assert_eq!(list(None).await.unwrap().status(), 401);
    assert_eq!(list(Some(&admin)).await.unwrap().status(), 200);
    // The admin token uploads; the archive is private under umask 000.
    let (path, sid) = bulk(&c.data.join(".."), 1, "web-1", 1_000);
    let cfg = flightrec_uplink::CollectorConfig {
        url: c.url.clone(),
        token: admin.clone(),
        rate_limit: "0".into(),
        ..Default::default()
    };
    upload(&cfg, &path).await.unwrap();
    let archived: Vec<_> = walk(&c.data)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&sid))
        .collect();
    assert!(!archived.is_empty());
    for p in walk(&c.data) {
        let m = mode(&p);
        if p.is_dir() {
            assert_eq!(m & 0o027, 0, "{} is {m:o}", p.display());
        } else {
            assert_eq!(m & 0o037, 0, "{} is {m:o}", p.display());
        }
    }

    // /login: injected attributes and line breaks never reach Set-Cookie.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |token: String| {
        let url = format!("{}/login", c.url);
        let r = no_redirect.get(url).query(&[("token", token)]);
        async move { r.send().await.unwrap() }
    };
    for bad in [
        "x; Domain=evil".to_owned(),
        format!("{admin}; Domain=evil"),
        format!("{admin}\r\nSet-Cookie: flightrec_token=evil"),
        format!("{admin}\nX-Injected: 1"),
    ] {
        let r = login(bad.clone()).await;
        assert_eq!(r.status(), 401, "{bad:?}");
        assert!(r.headers().get("set-cookie").is_none(), "{bad:?}");
        assert!(r.headers().get("x-injected").is_none(), "{bad:?}");
    }
    let r = login(admin.clone()).await;
    assert_eq!(r.status(), 303);
    let cookies: Vec<_> = r.headers().get_all("set-cookie").iter().collect();
    assert_eq!(cookies.len(), 1);
    assert_eq!(
        cookies[0].to_str().unwrap(),
        format!("flightrec_token={admin}; Path=/; HttpOnly; SameSite=Strict")
    );
}

/// Every file and directory under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Probe 8: the collector's memory over a flood. 20 000 requests from 4 clients (health
/// checks, catalog pages, refused anonymous and malformed uploads) leave its RSS within 20 MB
/// of where a warm-up left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe8_collector_rss_stays_flat_over_a_20k_request_flood() {
    let c = Child::start().await;
    let admin = std::fs::read_to_string(c.data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let run = |n: usize, tag: usize| {
        let (h, url, admin) = (http(), c.url.clone(), admin.clone());
        async move {
            let mut answered = 0;
            for i in 0..n {
                let r = match (i + tag) % 4 {
                    0 => h.get(format!("{url}/healthz")),
                    1 => h
                        .get(format!("{url}/v1/snapshots?host=web-{i}"))
                        .bearer_auth(&admin),
                    2 => h.get(format!("{url}/v1/snapshots/{i:032x}")),
                    _ => h
                        .post(format!("{url}/v1/uploads"))
                        .bearer_auth(&admin)
                        .header("content-type", "application/json")
                        .body(format!("{{\"snapshot_id\": {i}")),
                };
                answered += usize::from(r.send().await.is_ok());
            }
            answered
        }
    };
    assert_eq!(run(400, 0).await, 400, "warm-up");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = c.child.id();
    let before = rss_kb(pid);
    let t0 = std::time::Instant::now();
    let tasks: Vec<_> = (0..4).map(|t| tokio::spawn(run(5000, t))).collect();
    let mut answered = 0;
    for t in tasks {
        answered += t.await.unwrap();
    }
    let took = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = rss_kb(pid);
    println!(
        "collector VmRSS: {before} kB before, {after} kB after 20000 requests in {:.1} s \
         ({answered} answered)",
        took.as_secs_f64()
    );
    assert_eq!(answered, 20_000);
    assert!(
        after < before + 20 * 1024,
        "RSS grew from {before} kB to {after} kB"
    );
}
