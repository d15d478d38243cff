//! The collector end to end with real recorder daemons: two `flightrec record` processes with
//! different host ids, pin dirs, sockets and spools, one `flightrec-collector`, all on
//! loopback. A group trigger yields two linked snapshots in the archive; a snapshot spooled
//! while the collector is down survives a kill -9 of its recorder and is uploaded after the
//! restart.
//!
//! The binaries are the workspace's own, next to this test's executable (`cargo test
//! --workspace` builds them).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{privileged, scratch_dir};

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p flightrec -p flightrec-collector)",
        path.display()
    );
    path
}

/// A minimal HTTP/1.1 exchange on loopback (no client library in this crate).
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    http_as(addr, method, path, body, None)
}

/// [`http`] with a bearer token.
fn http_as(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.unwrap_or("");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", path, None);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Proc(Child);

impl Proc {
    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
    fn term(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Recorder {
    config: PathBuf,
    spool: PathBuf,
    pins: PathBuf,
    proc: Option<Proc>,
    /// Address of its trigger hook.
    hook: String,
}

/// The recorders' hook token.
const HOOK_TOKEN: &str = "e2e-hook-token-0123456789";

impl Recorder {
    fn new(dir: &Path, name: &str, collector: &str) -> Recorder {
        let pins = PathBuf::from(format!("/sys/fs/bpf/flightrec-test-coll-{name}"));
        let spool = dir.join(format!("spool-{name}"));
        let config = dir.join(format!("{name}.toml"));
        let hook = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        // No cooldown or pre-fill wait: this test fires several triggers within seconds.
        std::fs::write(
            &config,
            format!(
                "[recorder]\nring_size = \"2MiB\"\npin_dir = \"{}\"\ncontrol_socket = \"{}\"\n\
                 spool_dir = \"{}\"\nhost_id = \"{name}\"\n\
                 [hook]\nlisten = \"{hook}\"\ntoken = \"{HOOK_TOKEN}\"\n\
                 [governor]\ncooldown = \"0s\"\nmin_prefill = \"0s\"\n\
                 [collector]\nurl = \"http://{collector}\"\ngroup = \"e2e\"\n",
                pins.display(),
                dir.join(format!("{name}.sock")).display(),
                spool.display()
            ),
        )
        .unwrap();
        let _ = flightrec::rings::teardown(&pins);
        Recorder {
            config,
            spool,
            pins,
            proc: None,
            hook,
        }
    }

    fn start(&mut self) {
        let child = Command::new(bin("flightrec"))
            .arg("record")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .spawn()
            .expect("start flightrec record");
        self.proc = Some(Proc(child));
        let cfg = self.config.clone();
        wait_for("the recorder's control socket", 30, || {
            Command::new(bin("flightrec"))
                .args(["status", "-c"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .ok()
                .filter(|s| s.success())
        });
    }

    fn status(&self) -> serde_json::Value {
        let out = Command::new(bin("flightrec"))
            .args(["status", "--json", "-c"])
            .arg(&self.config)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn snapshot(&self) -> PathBuf {
        let out = Command::new(bin("flightrec"))
            .args(["snapshot", "record", "--name", "spooled", "-c"])
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }

    fn spooled(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.spool)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "frs"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.term();
        }
        let _ = flightrec::rings::teardown(&self.pins);
    }
}

fn start_collector(config: &Path) -> Proc {
    let child = Command::new(bin("flightrec-collector"))
        .args(["serve", "--config"])
        .arg(config)
        .stderr(Stdio::null())
        .spawn()
        .expect("start the collector");
    Proc(child)
}

#[test]
fn collector_group_trigger_and_spool_survive_real_daemons() {
    let Some(_p) = privileged("collector_group_trigger_and_spool_survive_real_daemons") else {
        return;
    };
    let dir = scratch_dir("collector-e2e");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let ccfg = dir.join("collector.toml");
    std::fs::write(
        &ccfg,
        format!(
            // An open collector on loopback: the test's recorders carry no tokens.
            "[server]\nlisten = \"{addr}\"\n[storage]\ndata_dir = \"{}\"\n[auth]\nopen = true\n",
            dir.join("collector").display()
        ),
    )
    .unwrap();
    let mut collector = start_collector(&ccfg);
    wait_for("the collector", 30, || {
        TcpStream::connect(&addr)
            .ok()
            .and_then(|_| (http(&addr, "GET", "/healthz", None).0 == 200).then_some(()))
    });
    let mut a = Recorder::new(&dir, "host-a", &addr);
    let mut b = Recorder::new(&dir, "host-b", &addr);
    a.start();
    b.start();
    wait_for("both recorders in group e2e", 30, || {
        let g = get_json(&addr, "/v1/groups");
        let hosts: Vec<String> = g["groups"][0]["hosts"]
            .as_array()?
            .iter()
            .map(|h| h["host_id"].as_str().unwrap_or("").to_owned())
            .collect();
        (hosts == ["host-a", "host-b"]).then_some(())
    });
    // Some activity for the rings.
    crate::util::workload(&["getpgid", "50"]);

    let (status, body) = http(
        &addr,
        "POST",
        "/v1/trigger",
        Some(
            r#"{"scope":"group","group":"e2e","reason":"e2e slow request","fields":{"url":"/slow"}}"#,
        ),
    );
    assert_eq!(status, 200, "{body}");
    let t: serde_json::Value = serde_json::from_str(&body).unwrap();
    let tid = t["trigger_id"].as_str().unwrap().to_owned();
    assert_eq!(t["recipients"], serde_json::json!(["host-a", "host-b"]));
    let view = wait_for("both hosts' snapshots of the trigger", 60, || {
        let v = get_json(&addr, &format!("/v1/triggers/{tid}"));
        (v["snapshots"].as_array()?.len() == 2).then_some(v)
    });
    println!("group view: {view}");
    let snaps = view["snapshots"].as_array().unwrap();
    for (s, host) in snaps.iter().zip(["host-a", "host-b"]) {
        assert_eq!(s["host_id"], host);
        assert_eq!(s["trigger_id"], tid.as_str());
        assert_eq!(s["group"], "e2e");
        assert_eq!(s["trigger_source"], "group");
        assert!(s["records"].as_u64().unwrap() > 0);
        let off = s["host_clock_offset_ns"].as_i64().unwrap();
        assert!((0..1_000_000_000).contains(&off), "offset {off}");
        let id = s["snapshot_id"].as_str().unwrap();
        let m = get_json(&addr, &format!("/v1/snapshots/{id}/manifest"));
        assert_eq!(m["trigger"]["fields"]["trigger_id"], tid.as_str());
        assert_eq!(m["trigger"]["fields"]["url"], "/slow");
        assert_eq!(m["host"]["host_id"], host);
    }
    // Uploaded snapshots leave the spools.
    wait_for("empty spools", 30, || {
        (a.spooled().is_empty() && b.spooled().is_empty()).then_some(())
    });
    assert_eq!(
        a.status()["collector"]["upload"]["snapshots_uploaded_total"],
        1
    );
    assert_eq!(
        b.status()["collector"]["group"]["group_triggers_received_total"],
        1
    );

    // A hook trigger with scope group on host-a goes to the collector, which fans it out to
    // both recorders; the hook answers with the group trigger id.
    let (status, body) = http_as(
        &a.hook,
        "POST",
        "/v1/trigger",
        Some(r#"{"reason":"slow via nginx","scope":"group","url":"/slow2"}"#),
        Some(HOOK_TOKEN),
    );
    assert_eq!(status, 202, "{body}");
    let tid2 = serde_json::from_str::<serde_json::Value>(&body).unwrap()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(tid2, tid);
    let view = wait_for(
        "both hosts' snapshots of the hook's group trigger",
        60,
        || {
            let v = get_json(&addr, &format!("/v1/triggers/{tid2}"));
            (v["snapshots"].as_array()?.len() == 2).then_some(v)
        },
    );
    for (s, host) in view["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["host-a", "host-b"])
    {
        assert_eq!(
            (s["host_id"].as_str(), s["trigger_source"].as_str()),
            (Some(host), Some("group"))
        );
        let m = get_json(
            &addr,
            &format!(
                "/v1/snapshots/{}/manifest",
                s["snapshot_id"].as_str().unwrap()
            ),
        );
        assert_eq!(m["trigger"]["fields"]["url"], "/slow2");
        assert_eq!(m["trigger"]["fields"]["source"], "hook");
    }

    // A local hook trigger: the id the hook answers is the file's snapshot id, and the hook
    // reports the snapshot uploaded once the collector acknowledged it.
    let (status, body) = http_as(
        &a.hook,
        "POST",
        "/v1/trigger",
        Some(r#"{"reason":"slow local","url":"/slow3"}"#),
        Some(HOOK_TOKEN),
    );
    assert_eq!(status, 202, "{body}");
    let sid3 = serde_json::from_str::<serde_json::Value>(&body).unwrap()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let state = wait_for("the hook's snapshot uploaded", 60, || {
        let (st, body) = http_as(
            &a.hook,
            "GET",
            &format!("/v1/snapshots/{sid3}"),
            None,
            Some(HOOK_TOKEN),
        );
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (st == 200 && v["state"] == "uploaded").then_some(v)
    });
    assert_eq!(state["file_snapshot_id"], sid3.as_str());
    let entry = get_json(&addr, &format!("/v1/snapshots/{sid3}"));
    assert_eq!(
        (entry["host_id"].as_str(), entry["trigger_source"].as_str()),
        (Some("host-a"), Some("hook"))
    );

    // Collector down: a snapshot stays spooled; kill -9 its recorder; bring both back.
    collector.kill9();
    let file = a.snapshot();
    let sid = schemas::file::Snapshot::open(&file)
        .unwrap()
        .manifest
        .snapshot_id;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.spooled(), vec![file.clone()]);
    a.proc.take().unwrap().kill9();
    assert!(file.exists(), "the spooled snapshot survives kill -9");
    let size = std::fs::metadata(&file).unwrap().len();
    let _collector = start_collector(&ccfg);
    wait_for("the collector again", 30, || {
        TcpStream::connect(&addr)
            .ok()
            .and_then(|_| (http(&addr, "GET", "/healthz", None).0 == 200).then_some(()))
    });
    a.start();
    let entry = wait_for("the spooled snapshot in the catalog", 60, || {
        let (status, body) = http(&addr, "GET", &format!("/v1/snapshots/{sid}"), None);
        (status == 200).then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap())
    });
    assert_eq!(entry["host_id"], "host-a");
    assert_eq!(entry["bytes"], size);
    assert_eq!(entry["sha256"].as_str().unwrap().len(), 64);
    wait_for("the spool emptied", 30, || {
        a.spooled().is_empty().then_some(())
    });
}
