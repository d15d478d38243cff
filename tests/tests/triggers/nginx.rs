//! nginx with the Lua module in front of a slow upstream: one slow request among fast ones
//! reports to the hook and yields exactly one snapshot, holding the upstream's slow work.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{Daemon, TOKEN, free_port, read, snapshots_in, status, wait_for_snapshots};
use crate::util::{nr, privileged, scratch_dir, syscalls_of};

const NGINX: &str = "/usr/sbin/nginx";

/// Whether nginx and its Lua module are installed; when not, the test `name` skips with the
/// reason (a failure under `CI=true`, which installs them).
fn nginx_installed(name: &str) -> bool {
    let lua = Path::new("/usr/lib/nginx/modules/ngx_http_lua_module.so");
    let reason = if !Path::new(NGINX).exists() {
        "nginx is not installed (apt-get install nginx libnginx-mod-http-lua)"
    } else if !lua.exists() {
        "nginx's Lua module is not installed (apt-get install libnginx-mod-http-lua)"
    } else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{name} cannot run under CI=true: {reason}");
    }
    println!("skipped {name}: {reason}");
    false
}

/// A child killed when the test ends, failed or not.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GET through nginx; the answer's status.
fn get(port: u16, path: &str, request_id: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: demo\r\nX-Request-Id: {request_id}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// nginx with the flightrec module in front of the workload's HTTP upstream (which answers
/// `requests` requests, sleeping 300 ms on paths under /slow), reporting to `d`'s hook.
struct Nginx {
    server: Reaped,
    upstream: Reaped,
    port: u16,
}

impl Nginx {
    fn start(d: &Daemon, name: &str, requests: u32) -> Nginx {
        let dir = scratch_dir(name);
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let port_file = dir.join("upstream.port");
        let upstream = Reaped(
            Command::new(env!("CARGO_BIN_EXE_workload"))
                .arg("http")
                .arg(&port_file)
                .arg(requests.to_string())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let upstream_port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.parse::<u16>().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "upstream did not start");
            std::thread::sleep(Duration::from_millis(20));
        };

        let nginx_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../triggers/webserver/nginx");
        let port = free_port();
        let conf = std::fs::read_to_string(nginx_dir.join("nginx.conf.template"))
            .unwrap()
            .replace("@PREFIX@", dir.to_str().unwrap())
            .replace(
                "@LUA_DIR@",
                nginx_dir.canonicalize().unwrap().to_str().unwrap(),
            )
            .replace("@PORT@", &port.to_string())
            .replace("@UPSTREAM@", &format!("127.0.0.1:{upstream_port}"))
            .replace("@THRESHOLD_MS@", "200")
            .replace("@HOOK_HOST@", &d.hook.ip().to_string())
            .replace("@HOOK_PORT@", &d.hook.port().to_string())
            .replace("@HOOK_TOKEN@", TOKEN);
        assert!(!conf.contains('@'), "placeholder left in the template");
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut server = Reaped(
            Command::new(NGINX)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                server.0.try_wait().unwrap().is_none(),
                "nginx exited; see {}",
                dir.join("error.log").display()
            );
            assert!(Instant::now() < deadline, "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx {
            server,
            upstream,
            port,
        }
    }
}

impl Drop for Nginx {
    /// Stops nginx with SIGTERM, which its master passes on to the workers (a SIGKILL would
    /// leave them running, holding the test's output open), then the upstream.
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.server.0.id() as i32, libc::SIGTERM) };
        let _ = self.server.0.wait();
    }
}

#[test]
fn nginx_slow_request_yields_one_snapshot() {
    let Some(_p) = privileged("nginx_slow_request_yields_one_snapshot") else {
        return;
    };
    if !nginx_installed("nginx_slow_request_yields_one_snapshot") {
        return;
    }
    let d = Daemon::start("nginx", |c| {
        c.governor.cooldown = std::time::Duration::ZERO;
    });
    let nginx = Nginx::start(&d, "trig-nginx-prefix", 4);
    let (port, upstream_pid) = (nginx.port, nginx.upstream.0.id());

    assert_eq!(get(port, "/fast/1", "req-fast-1"), 200);
    assert_eq!(get(port, "/fast/2", "req-fast-2"), 200);
    let t = Instant::now();
    assert_eq!(get(port, "/slow/checkout?item=7", "req-slow-1"), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(get(port, "/fast/3", "req-fast-3"), 200);
    let files = wait_for_snapshots(d.spool(), 1, Duration::from_secs(10));
    // More time for a wrong extra report from the fast requests to show up.
    std::thread::sleep(Duration::from_millis(1000));
    let files_after = snapshots_in(d.spool());

    drop(nginx);
    assert_eq!(files_after, files, "exactly one snapshot");
    assert_eq!(files.len(), 1);

    let (m, events) = read(&files[0]);
    let f = &m.trigger.fields;
    assert_eq!(m.trigger.source, "hook");
    assert_eq!(f["url"], "/slow/checkout?item=7");
    assert_eq!(f["method"], "GET");
    assert_eq!(f["request_id"], "req-slow-1");
    assert_eq!(f["tags"]["status"], "200");
    let ms = f["duration_ms"].as_f64().unwrap();
    assert!((300.0..2000.0).contains(&ms), "duration {ms}");
    assert_eq!(status(&d.config)["triggers"]["admitted"], 1);
    assert_eq!(
        status(&d.config)["triggers"]["by_source"]["hook"]["admitted"],
        1
    );

    // The upstream's syscalls while the request was slow: its 300 ms nanosleep, then the
    // write of the answer, all before the freeze.
    let calls = syscalls_of(&events, upstream_pid);
    let sleep_in = calls
        .iter()
        .position(|c| c.0 && c.1 == nr::NANOSLEEP)
        .expect("the upstream's nanosleep entry");
    let (enter, exit) = (calls[sleep_in], calls[sleep_in + 1]);
    assert_eq!((exit.0, exit.1), (false, nr::NANOSLEEP));
    assert!(
        exit.3 - enter.3 >= 300_000_000,
        "slept {} ns",
        exit.3 - enter.3
    );
    assert!(
        calls[sleep_in + 2..]
            .iter()
            // std's TcpStream writes with sendto (44).
            .any(|c| !c.0 && (c.1 == nr::WRITE || c.1 == 44) && c.2 > 0),
        "the upstream's answer write after the sleep"
    );
    assert!(calls.iter().all(|c| c.3 <= m.frozen_monotonic_ns));

    // The request's story: the worker the hook named spent the request blocked waiting for
    // the upstream's answer, and analyze says so first.
    let r = flightrec_reader::analyze::analyze(&files[0], &Default::default()).expect("analyze");
    let story = r
        .story
        .as_ref()
        .expect("the hook names the worker and the request's start");
    assert_eq!(story.source, "hook");
    assert_eq!(u64::from(story.who.tid), f["tid"].as_u64().unwrap());
    let wait = &story.blocked[0];
    println!("nginx story: {}", story.verdict);
    assert!(
        wait.duration_ns >= 250_000_000,
        "the longest wait is not the upstream's: {story:#?}"
    );
    assert_eq!(
        (wait.syscall.as_deref(), wait.ready_fd_connected),
        (Some("epoll_wait"), true),
        "the wait did not end with the upstream connection's answer: {story:#?}"
    );
    assert_eq!(r.findings[0].text, story.verdict);
    assert!(
        story.verdict.contains("epoll_wait")
            && story.verdict.contains("a connection it had opened"),
        "{}",
        story.verdict
    );
}

/// A 240-byte URI with bytes that are not UTF-8 and a control character once decoded, and a
/// 200-byte request id: the module cuts and cleans them, so the hook takes the report (it
/// answered 400 before, and the slow request was never looked at).
#[test]
fn nginx_reports_a_long_hostile_uri_instead_of_losing_it() {
    let name = "nginx_reports_a_long_hostile_uri_instead_of_losing_it";
    let Some(_p) = privileged(name) else {
        return;
    };
    if !nginx_installed(name) {
        return;
    }
    let d = Daemon::start("nginx-uri", |_| {});
    let nginx = Nginx::start(&d, "trig-nginx-uri-prefix", 1);
    let path = format!("/slow/%FF%0A%C3%A9/{}?q=1", "x".repeat(240));
    let id = "r".repeat(200);
    assert_eq!(get(nginx.port, &path, &id), 200);
    let files = wait_for_snapshots(d.spool(), 1, Duration::from_secs(10));
    drop(nginx);
    assert_eq!(files.len(), 1, "the report reached the hook");

    let (m, _) = read(&files[0]);
    let f = &m.trigger.fields;
    // The raw URI is under the URL limit and kept whole, escapes and all.
    assert_eq!(f["url"], path.as_str());
    // The reason holds the decoded path: the stray byte became U+FFFD, the newline %0A, the
    // valid é stayed; cut to the hook's 256 bytes on a character boundary.
    let reason = m.trigger.reason.as_str();
    assert!(
        reason.starts_with("slow request: GET /slow/\u{FFFD}%0A\u{e9}/xxx"),
        "{reason:?}"
    );
    assert!(reason.ends_with("x..."), "{reason:?}");
    assert!(reason.len() <= 256, "{} bytes", reason.len());
    assert_eq!(f["request_id"], format!("{}...", "r".repeat(125)).as_str());
    assert_eq!(f["method"], "GET");
}
