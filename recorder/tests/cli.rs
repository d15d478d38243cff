//! The `flightrec` binary end to end: config checking (any user), and as root the README's main
//! job: daemon, status, `snapshot record`, `dump --json`, teardown.

#[path = "../../reader/tests/common/fixtures.rs"]
#[allow(dead_code, reason = "each test crate uses some of the shared fixtures")]
mod fixtures;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn flightrec() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flightrec"))
}

fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/flightrec.toml")
}

#[test]
fn check_config_accepts_the_example_and_names_the_bad_key() {
    let ok = flightrec()
        .args(["record", "--check-config", "--config"])
        .arg(example_config())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ring_size = \"8MiB\""));

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let bad = dir.join("bad-config.toml");
    std::fs::write(&bad, "[recorder]\nring_sise = \"1MiB\"\n").unwrap();
    let out = flightrec()
        .args(["record", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ring_sise"), "{err}");

    let out = flightrec()
        .args(["record", "--check-config", "--ring-size", "12XB"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit"));
}

#[test]
fn status_without_daemon_exits_1_with_a_hint() {
    let out = flightrec()
        .args(["status", "--socket", "/nonexistent/flightrec.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("flightrec record"));
}

#[test]
fn dump_rejects_a_file_that_is_not_a_snapshot() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("not-a-snapshot.frs");
    std::fs::write(&path, b"hello, world, this is not a snapshot").unwrap();
    let out = flightrec().arg("dump").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a flightrec snapshot"));
}

#[test]
fn daemon_snapshot_record_and_dump() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("daemon_snapshot_record_and_dump needs root and cannot be skipped in CI");
        }
        println!("skipped daemon_snapshot_record_and_dump: needs root to load eBPF programs");
        return;
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-e2e");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let sock = tmp.join("control.sock");
    let pins = "/sys/fs/bpf/flightrec-test-cli";
    let _ = flightrec().args(["teardown", "--pin-dir", pins]).output();
    // The daemon writes snapshots only where root allows: this test's directory.
    let config = tmp.join("recorder.toml");
    std::fs::write(
        &config,
        format!(
            "[recorder]\nsnapshot_dirs = [{:?}]\n",
            tmp.display().to_string()
        ),
    )
    .unwrap();

    let mut daemon = flightrec()
        .arg("record")
        .arg("--config")
        .arg(&config)
        .args(["--ring-size", "2MiB", "--pin-dir", pins, "--socket"])
        .arg(&sock)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = flightrec()
            .arg("status")
            .arg("--socket")
            .arg(&sock)
            .output()
            .unwrap();
        if st.status.success() {
            let text = String::from_utf8_lossy(&st.stdout);
            assert!(text.contains("events/s"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "daemon did not come up");
        assert!(daemon.try_wait().unwrap().is_none(), "daemon exited early");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Something to record.
    let _ = Command::new("ls").arg("/proc").output().unwrap();
    let out = flightrec()
        .args(["snapshot", "record", "--name", "e2e", "-o"])
        .arg(&tmp)
        .arg("--socket")
        .arg(&sock)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let path = PathBuf::from(stdout.lines().last().expect("a path"));
    assert!(path.starts_with(&tmp) && path.exists(), "{path:?}");
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("e2e-")
    );

    let dump = flightrec()
        .arg("dump")
        .arg("--json")
        .arg(&path)
        .output()
        .unwrap();
    assert!(dump.status.success());
    let text = String::from_utf8(dump.stdout).unwrap();
    let mut last_ts = 0;
    let mut n = 0;
    let mut saw_ls = false;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["ts_ns", "cpu", "name", "tid", "pid", "fields"] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
        let ts = v["ts_ns"].as_u64().unwrap();
        assert!(ts >= last_ts, "dump is not in time order");
        last_ts = ts;
        saw_ls |= v["name"] == "sched_process_exec"
            && v["fields"]["filename"]
                .as_str()
                .unwrap_or("")
                .ends_with("/ls");
        n += 1;
    }
    assert!(n > 10, "only {n} events");
    assert!(saw_ls, "the exec of ls is missing");

    let st = flightrec()
        .args(["status", "--json", "--socket"])
        .arg(&sock)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["snapshots_taken"], 1);

    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    assert!(!sock.exists(), "socket left behind");
    let td = flightrec()
        .args(["teardown", "--pin-dir", pins])
        .output()
        .unwrap();
    assert!(td.status.success());
    assert!(!Path::new(pins).exists());
}

#[test]
fn cli_prints_tables_and_json_and_rejects_bad_input() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("analyze");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cli.frs");
    fixtures::syscall_snapshot().write(&path).unwrap();
    let out = flightrec().arg("analyze").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "== Findings ==",
        "pid 100 (app) spent 900.00ms",
        "== Syscalls ==",
        "fdatasync",
        "900.00ms",
        "== CPU ==",
        "== Processes ==",
        "poll",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let out = flightrec()
        .args(["analyze", "--json", "--top", "1", "--comm", "app"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    // The story (none here: no request is named, no connection served) and the findings come
    // first, before the tables they summarise.
    assert!(
        out.stdout
            .starts_with(b"{\n  \"story\": null,\n  \"findings\": ["),
        "{}",
        String::from_utf8_lossy(&out.stdout[..200.min(out.stdout.len())])
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "flightrec-analyze/1");
    assert_eq!(v["findings"][0]["evidence"]["syscall"], "fdatasync");
    assert_eq!(v["recorder"]["included"], false);
    assert_eq!(v["syscalls"]["calls"], 5);
    assert_eq!(v["syscalls"]["slowest"].as_array().unwrap().len(), 1);
    assert_eq!(v["syscalls"]["slowest"][0]["syscall"], "fdatasync");
    assert_eq!(v["filter"]["comms"][0], "app");
    let out = flightrec()
        .args(["analyze", "--json", "--include-recorder"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["recorder"]["included"], true);
    let out = flightrec()
        .args(["analyze", "--begin", "soon"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad time"));
    let out = flightrec()
        .args(["analyze", "/nonexistent.frs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let garbage = path.with_extension("bad");
    std::fs::write(&garbage, b"not a snapshot").unwrap();
    let out = flightrec().arg("analyze").arg(&garbage).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("analysing"));
}

#[test]
fn dump_filters_by_thread_and_time_and_warns_when_nothing_matches() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dump-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cli.frs");
    fixtures::syscall_snapshot().write(&path).unwrap();
    let all = flightrec()
        .args(["dump", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(all.status.success());
    let lines = |o: &[u8]| String::from_utf8_lossy(o).lines().count();
    let out = flightrec()
        .args([
            "dump",
            "--json",
            "--comm",
            "app",
            "--begin=+0s",
            "--end=-0s",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (n, total) = (lines(&out.stdout), lines(&all.stdout));
    // app (pid 100, named in the statedump) made 5 calls: 10 of the file's events.
    assert_eq!(n, 10, "{n} of {total}");
    assert!(total > n);
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["pid"], 100, "{l}");
    }

    let out = flightrec()
        .args(["dump", "--tid", "424242"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no event of the snapshot matches"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = flightrec()
        .args(["dump", "--begin", "soon"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad time"));
    let out = flightrec()
        .args(["dump", "--summary", "--pid", "1"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--summary takes no filter");
}
