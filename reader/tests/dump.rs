//! `dump`'s filters on a hand-built snapshot: threads by id, process and name (names learnt
//! from the statedump and the events, an exec's new name included), the switches, wakeups and
//! forks that name a chosen thread, and time bounds in every form `--begin`/`--end` take.

#[path = "common/fixtures.rs"]
#[allow(dead_code, reason = "each test crate uses some of the shared fixtures")]
mod fixtures;

use std::path::PathBuf;

use flightrec_reader::analyze::TimeSpec;
use flightrec_reader::dump::{DumpFilter, dump};
use flightrec_reader::synth::{SnapshotBuilder, Task};

const APP: Task = (10, 10, "app");
const WORKER: Task = (10, 11, "app-worker");
const SHELL: Task = (20, 20, "sh");
const CHILD: Task = (21, 21, "sh");
const IDLE: Task = (0, 0, "swapper/0");

fn sys(name: &str) -> u64 {
    schemas::event::syscall_id(name).unwrap()
}

/// app runs on CPU 0, reads, wakes its worker and leaves; on CPU 1 the shell writes, forks a
/// child that execs grep and opens a file.
fn snapshot() -> PathBuf {
    let mut b = SnapshotBuilder::new(2);
    b.switch(1000, 0, IDLE, 0, APP)
        .syscall(0, APP, sys("read"), 3, 10, 2000, 3000)
        .syscall(1, SHELL, sys("write"), 1, 5, 2500, 2600)
        .wakeup(4000, 0, APP, WORKER, 1)
        .fork(5000, 1, SHELL, CHILD)
        .exec(6000, 1, CHILD, "/usr/bin/grep")
        .syscall(1, CHILD, sys("openat"), 0, 3, 7000, 8000)
        .switch(9000, 0, APP, 1, IDLE);
    // One file a call: the tests run in parallel and must not read a file another rewrites.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dump-filter");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("filters-{}-{n}.frs", std::process::id()));
    b.write(&path).unwrap();
    path
}

/// The timestamps of the events `filter` lets through, from the JSON lines.
fn times(filter: &DumpFilter) -> Vec<u64> {
    let mut out = Vec::new();
    let n = dump(&snapshot(), true, filter, &mut out).unwrap();
    let ts: Vec<u64> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["ts_ns"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(n as usize, ts.len());
    ts
}

fn comms(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn no_filter_prints_every_event() {
    assert_eq!(
        times(&DumpFilter::default()),
        [
            1000, 2000, 2500, 2600, 3000, 4000, 5000, 6000, 7000, 8000, 9000
        ]
    );
}

#[test]
fn a_thread_brings_the_events_that_name_it() {
    // The worker did nothing itself: only its wakeup names it.
    let worker = DumpFilter {
        tids: vec![11],
        ..Default::default()
    };
    assert_eq!(times(&worker), [4000]);
    // The process: the switch into app, its read, the wakeup it raised, its switch out.
    let app = DumpFilter {
        pids: vec![10],
        ..Default::default()
    };
    assert_eq!(times(&app), [1000, 2000, 3000, 4000, 9000]);
    // Every kind must match: pid 10 and a tid of another process choose nothing.
    let none = DumpFilter {
        pids: vec![10],
        tids: vec![20],
        ..Default::default()
    };
    assert!(times(&none).is_empty());
}

#[test]
fn a_name_matches_before_and_after_an_exec() {
    // The child was "sh" when forked and "grep" after its exec: both names choose it, so the
    // fork that names it comes too; the shell is never "grep".
    let grep = DumpFilter {
        comms: comms(&["grep"]),
        ..Default::default()
    };
    assert_eq!(times(&grep), [5000, 6000, 7000, 8000]);
    let sh = DumpFilter {
        comms: comms(&["sh"]),
        ..Default::default()
    };
    assert_eq!(times(&sh), [2500, 2600, 5000, 6000, 7000, 8000]);
    let nobody = DumpFilter {
        comms: comms(&["nginx"]),
        ..Default::default()
    };
    assert!(times(&nobody).is_empty());
}

#[test]
fn time_bounds_take_absolute_and_relative_forms() {
    let absolute = DumpFilter {
        begin: Some(TimeSpec::Absolute(2500)),
        end: Some(TimeSpec::Absolute(6000)),
        ..Default::default()
    };
    assert_eq!(times(&absolute), [2500, 2600, 3000, 4000, 5000, 6000]);
    // 6 us before the last event (9000) is 3000; 1.5 us after the first (1000) is 2500.
    let app_tail = DumpFilter {
        pids: vec![10],
        begin: Some("-6us".parse().unwrap()),
        ..Default::default()
    };
    assert_eq!(times(&app_tail), [3000, 4000, 9000]);
    let head = DumpFilter {
        end: Some("+1.5us".parse().unwrap()),
        ..Default::default()
    };
    assert_eq!(times(&head), [1000, 2000, 2500]);
}

/// A file written by the format-1 writer (committed, with every kind of event) reads as the
/// same events as the same snapshot written now, and analyze and every export take it.
#[test]
fn format_1_files_in_archives_still_decode_everywhere() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let v1 = root.join("tests/fixtures/v1-all-kinds.frs");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("format-1");
    std::fs::create_dir_all(&dir).unwrap();
    let now = dir.join("now.frs");
    fixtures::all_kinds_snapshot().write(&now).unwrap();
    let version =
        |p: &PathBuf| u32::from_le_bytes(std::fs::read(p).unwrap()[8..12].try_into().unwrap());
    assert_eq!(
        (version(&v1), version(&now)),
        (1, schemas::file::FORMAT_VERSION)
    );

    let events = |p: &PathBuf| -> Vec<schemas::event::Event> {
        let (_, ev) = flightrec_reader::dump::open(p).unwrap();
        ev.map(|e| e.unwrap()).collect()
    };
    let (old, new) = (events(&v1), events(&now));
    assert_eq!(old, new);
    let kinds: std::collections::BTreeSet<_> = old.iter().map(|e| e.name()).collect();
    for k in [
        "syscall_path",
        "sched_switch",
        "sched_wakeup",
        "sched_process_fork",
        "sched_process_exec",
        "sched_process_exit",
        "block_rq_issue",
        "block_rq_complete",
        "irq_handler_entry",
        "irq_handler_exit",
        "softirq_entry",
        "softirq_exit",
    ] {
        assert!(
            kinds.iter().any(|n| n.as_str() == k),
            "no {k} in the fixture: {kinds:?}"
        );
    }

    let opts = flightrec_reader::analyze::Options::default();
    let report = |p: &PathBuf| {
        let r = flightrec_reader::analyze::analyze(p, &opts).unwrap();
        serde_json::to_value(&r).unwrap()
    };
    let (mut a, mut b) = (report(&v1), report(&now));
    // The file is the one thing that differs.
    for r in [&mut a, &mut b] {
        r.as_object_mut().unwrap().remove("file");
    }
    assert_eq!(a, b);
    use flightrec_reader::export::{Format, export};
    for (format, name) in [
        (Format::Ctf, "ctf"),
        (Format::Perfetto, "pftrace"),
        (Format::Tracedat, "dat"),
    ] {
        let out = dir.join(format!("v1.{name}"));
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::remove_file(&out);
        let stats = export(&v1, format, &out).unwrap();
        assert!(stats.events > 0, "{name}: nothing exported");
    }
}
