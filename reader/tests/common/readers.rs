//! The independent readers the export and analysis tests check our files with, shared by the
//! unprivileged tests (`reader/tests/`) and the privileged ones (`tests/tests/`), which include
//! this file by path.
//!
//! Every probe says why a test skips when its reader is missing, and panics instead under
//! `CI=true`, where CI has installed them all.
#![allow(
    dead_code,
    reason = "each test target uses a different subset of the readers"
)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Debian's Python, which sees the distribution's `bt2`, `babeltrace` and `lttnganalyses`
/// bindings (a pyenv `python3` earlier on PATH does not).
pub const PYTHON: &str = "/usr/bin/python3";

/// Whether `probe` shows `what` can run here (`ok` judges its output); says why not, and
/// panics under `CI=true`.
pub fn available_if(
    test: &str,
    what: &str,
    probe: &mut Command,
    ok: impl FnOnce(&Output) -> bool,
) -> bool {
    let found = probe.output().is_ok_and(|o| ok(&o));
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: {what} is missing, and CI (CI=true) must run this test");
        }
        println!("skipped {test}: {what} is not installed");
    }
    found
}

/// [`available_if`] with success as the test.
pub fn available(test: &str, what: &str, probe: &mut Command) -> bool {
    available_if(test, what, probe, |o| o.status.success())
}

/// Whether `trace-cmd` runs here.
pub fn have_trace_cmd(test: &str) -> bool {
    // `trace-cmd --version` exits non-zero but prints its version.
    available_if(
        test,
        "trace-cmd (Debian package trace-cmd)",
        Command::new("trace-cmd").arg("--version"),
        |o| String::from_utf8_lossy(&o.stdout).contains("trace-cmd version"),
    )
}

/// One event line of `trace-cmd report -t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLine {
    /// Task name.
    pub comm: String,
    /// Thread id.
    pub tid: u32,
    /// CPU.
    pub cpu: u32,
    /// Timestamp, ns.
    pub ts_ns: u64,
    /// Event name.
    pub name: String,
    /// What follows the name: raw fields with `-R`, the print format's text otherwise.
    pub info: String,
}

/// Parses `  comm-tid  [cpu]  secs.nanos: name:  info`. A comm may hold `-` and spaces, so the
/// tid follows the last `-` before ` [`.
pub fn parse_trace_line(line: &str) -> TraceLine {
    let bad = || -> ! { panic!("unexpected report line {line:?}") };
    let open = line.find(" [").unwrap_or_else(|| bad());
    let (task, rest) = line.split_at(open);
    let task = task.trim_start();
    let dash = task.rfind('-').unwrap_or_else(|| bad());
    let rest = rest.trim_start().strip_prefix('[').unwrap_or_else(|| bad());
    let (cpu, rest) = rest.split_once(']').unwrap_or_else(|| bad());
    let (ts, rest) = rest.trim_start().split_once(": ").unwrap_or_else(|| bad());
    let (secs, nanos) = ts.split_once('.').unwrap_or_else(|| bad());
    assert_eq!(nanos.len(), 9, "full ns timestamps (-t) in {line:?}");
    let (name, info) = rest.split_once(':').unwrap_or_else(|| bad());
    TraceLine {
        comm: task[..dash].to_owned(),
        tid: task[dash + 1..].trim().parse().unwrap_or_else(|_| bad()),
        cpu: cpu.parse().unwrap_or_else(|_| bad()),
        ts_ns: secs.parse::<u64>().unwrap_or_else(|_| bad()) * 1_000_000_000
            + nanos.parse::<u64>().unwrap_or_else(|_| bad()),
        name: name.to_owned(),
        info: info.trim().to_owned(),
    }
}

/// Runs `trace-cmd report -t ARGS FILE` and parses its event lines; any warning fails.
pub fn trace_cmd_report(file: &Path, args: &[&str]) -> Vec<TraceLine> {
    let out = Command::new("trace-cmd")
        .arg("report")
        .arg("-t")
        .args(args)
        .arg(file)
        .output()
        .expect("run trace-cmd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "trace-cmd report failed: {stderr}");
    // Format parse failures and ring-buffer inconsistencies are reported as warnings.
    assert!(stderr.trim().is_empty(), "trace-cmd warned: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    assert!(lines.next().unwrap().starts_with("cpus="), "{stdout}");
    lines.map(parse_trace_line).collect()
}

/// The Perfetto checker (`tests/perfetto/decode_trace.py`, which parses a trace with the
/// `perfetto_trace_pb2` classes of PyPI's `perfetto`), or `None` after saying why it cannot run.
pub fn perfetto_decoder(test: &str) -> Option<Command> {
    let ok = available(
        test,
        "the perfetto Python package (pip install perfetto)",
        Command::new("python3").args([
            "-c",
            "import perfetto.protos.perfetto.trace.perfetto_trace_pb2",
        ]),
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests/perfetto/decode_trace.py");
    ok.then(|| {
        let mut cmd = Command::new("python3");
        cmd.arg(script);
        cmd
    })
}

/// Runs the Perfetto checker on `trace` and returns what it printed.
pub fn perfetto_decode(mut cmd: Command, trace: &Path) -> Value {
    let out = cmd.arg(trace).output().expect("run decode_trace.py");
    assert!(
        out.status.success(),
        "decode_trace.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("decoder prints JSON")
}

/// Whether lttng-analyses and its babeltrace 1 bindings are installed.
pub fn have_lttng_analyses(test: &str) -> bool {
    available(
        test,
        "lttng-analyses with python3-babeltrace",
        Command::new(PYTHON).args(["-c", "import lttnganalyses, babeltrace"]),
    )
}

/// Runs `lttng-SCRIPT --no-intersection TRACE` (an `-mi` script) and returns its result
/// tables.
pub fn lttng_mi(script: &str, trace: &Path) -> Vec<Value> {
    let o = Command::new(PYTHON)
        .arg(format!("/usr/bin/lttng-{script}"))
        .arg("--no-intersection")
        .arg(trace)
        .output()
        .unwrap_or_else(|e| panic!("lttng-{script}: {e}"));
    assert!(
        o.status.success(),
        "lttng-{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "lttng-{script}: {e}: {}",
            String::from_utf8_lossy(&o.stdout)
        )
    });
    v["results"].as_array().expect("results").clone()
}

/// Names of the entries of `dir`, sorted (to check an export left nothing behind).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
