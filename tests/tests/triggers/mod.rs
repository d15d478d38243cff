//! Triggers end to end, with a real daemon (in this process, on its own thread): the HTTP hook
//! (auth, validation, a flood), coalescing and cooldown, kernel latency rules that freeze in the
//! eBPF program, and nginx with the Lua module in front of a slow upstream.
//!
//! This module holds what they share: the test daemon, an HTTP client for its hook and the
//! snapshots it spools; the tests live in one submodule per kind of trigger.

mod alerts;
mod governor;
mod histograms;
mod hook;
mod nginx;
mod rules;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flightrec::config::Config;
use flightrec::daemon::{self, Request};
use schemas::event::Event;
use schemas::manifest::Manifest;
use serde_json::Value;

use crate::util::scratch_dir;

const TOKEN: &str = "privileged-test-token-42";

/// A daemon with its own pins, socket, spool and hook port; stopped and torn down on drop.
struct Daemon {
    handle: Option<daemon::Handle>,
    config: Config,
    hook: SocketAddr,
}

impl Daemon {
    fn start(name: &str, edit: impl FnOnce(&mut Config)) -> Daemon {
        let dir = scratch_dir(&format!("trig-{name}"));
        let mut config = Config::default();
        config.recorder.pin_dir = PathBuf::from(format!("/sys/fs/bpf/flightrec-test-trig-{name}"));
        config.recorder.ring_size = "4MiB".into();
        config.recorder.control_socket = dir.join("control.sock");
        config.recorder.spool_dir = dir.join("spool");
        config.hook.listen = "127.0.0.1:0".into();
        config.hook.token = TOKEN.into();
        config.governor.min_prefill = std::time::Duration::ZERO;
        edit(&mut config);
        flightrec::rings::teardown(&config.recorder.pin_dir).expect("clear stale pins");
        let handle = daemon::spawn(config.clone()).expect("daemon starts");
        let st = status(&config);
        let hook = st["hook_listen"]
            .as_str()
            .expect("hook on")
            .parse()
            .unwrap();
        Daemon {
            handle: Some(handle),
            config,
            hook,
        }
    }

    fn spool(&self) -> &Path {
        &self.config.recorder.spool_dir
    }

    fn post(&self, body: &str) -> (u16, Value) {
        http(self.hook, "POST", "/v1/trigger", Some(TOKEN), body)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop().expect("daemon stops cleanly");
        }
        let _ = flightrec::rings::teardown(&self.config.recorder.pin_dir);
    }
}

fn status(config: &Config) -> Value {
    let resp = daemon::request(&config.recorder.control_socket, &Request::Status).unwrap();
    let daemon::Response::Status(status) = resp else {
        panic!("status answered {resp:?}");
    };
    serde_json::to_value(status).unwrap()
}

/// One HTTP/1.1 request on a fresh connection; the answer's status and JSON body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {out:?}"));
    let json = out
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// A loopback port nobody listens on now (for servers that take a port, not a listener).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The snapshot files in `dir`, oldest first.
fn snapshots_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "frs"))
                .collect()
        })
        .unwrap_or_default();
    files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    files
}

/// Waits until `dir` holds at least `n` snapshots, then a little longer to catch extra ones.
fn wait_for_snapshots(dir: &Path, n: usize, timeout: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + timeout;
    while snapshots_in(dir).len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} snapshots in {}",
            snapshots_in(dir).len(),
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    snapshots_in(dir)
}

fn read(path: &Path) -> (Manifest, Vec<Event>) {
    let (m, events) = flightrec_reader::dump::open(path).expect("open snapshot");
    (m, events.map(|e| e.expect("decodable")).collect())
}
