//! `flightrec export --format perfetto` on synthetic snapshots, checked with an independent
//! decoder: the protobuf classes generated from Perfetto's own protos that ship in PyPI's
//! `perfetto` package (`tests/perfetto/decode_trace.py`). Every event must come back with the
//! values `flightrec dump --json` prints, renamed to Perfetto's fields and moved to BOOTTIME.

#[path = "common/readers.rs"]
mod readers;
use readers::{perfetto_decode as decode, perfetto_decoder as decoder};

use std::path::{Path, PathBuf};

use flightrec_reader::export::{ExportError, Format, export};
use flightrec_reader::synth::{SnapshotBuilder, Task, comm};
use schemas::event::{Event, EventData};
use schemas::{SchedWakeup, SyscallEntry, SyscallExit};
use serde_json::{Map, Value, json};

const BOOT_OFFSET: u64 = 7_000_000_123;
const REALTIME_OFFSET: i64 = 1_700_000_000_000_000_000;

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("export-perfetto-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const SERVER: Task = (100, 100, "server");
const KWORKER: Task = (50, 50, "kworker/0:1");
const SH: Task = (200, 200, "sh");
const CHILD: Task = (300, 300, "sh");
const JOB: Task = (300, 300, "job");
const JOB_THREAD: Task = (300, 301, "job");
const IDLE0: Task = (0, 0, "swapper/0");
const IDLE1: Task = (0, 0, "swapper/1");

/// Every event kind on two CPUs: a server thread blocking on I/O on CPU 0, and on CPU 1 a shell
/// forking a child that execs, starts a thread, and exits (so the child is not in the
/// statedump). Both CPUs have an event at t=2000 to pin the order of equal timestamps.
fn scenario() -> SnapshotBuilder {
    let mut b = SnapshotBuilder::new(2);
    b.manifest.clocks.boottime_minus_monotonic_ns = BOOT_OFFSET as i64;
    b.manifest.clocks.realtime_minus_monotonic_ns = REALTIME_OFFSET;
    b.manifest.host.kernel_release = "6.8.0-synthetic".into();
    b.manifest.host.kernel_version = "#1 SMP PREEMPT_DYNAMIC".into();
    b.manifest.host.machine = "x86_64".into();
    b.process(100, 1, "server", ("/srv", 11), &[100, 101])
        .process(50, 2, "kworker/0:1", ("/", 1), &[50])
        .process(200, 1, "sh", ("/", 1), &[200]);
    b.manifest.statedump.processes[0].cmdline = "/usr/bin/server --port 8080".into();
    b.manifest.statedump.processes[1].cmdline = String::new();
    b.manifest.statedump.processes[2].cmdline = "sh -c job".into();

    // CPU 0.
    b.syscall(0, SERVER, 0, 3, 10, 1000, 1500)
        .switch(2000, 0, SERVER, 1, KWORKER)
        .irq(0, KWORKER, 24, "virtio0-input", 2100, 2200)
        .softirq(0, KWORKER, 3, 2300, 2400)
        .wakeup(2500, 0, KWORKER, SERVER, 0)
        .switch(2600, 0, KWORKER, 0x402, SERVER)
        .block(0, SERVER, 8 << 20, 2048, 4096, 1, 2700, 2900)
        .switch(3000, 0, SERVER, 2, IDLE0);

    // CPU 1.
    b.fork(1100, 1, SH, CHILD);
    b.event(Event {
        ts_ns: 1150,
        cpu: 1,
        pid: SH.0,
        tid: SH.1,
        data: EventData::SchedWakeupNew(SchedWakeup {
            comm: comm(CHILD.2),
            tid: CHILD.1,
            pid: CHILD.0,
            prio: 120,
            target_cpu: 1,
        }),
    });
    b.switch(1200, 1, SH, 1, CHILD)
        .exec(1300, 1, CHILD, "/bin/job")
        // An argument beyond i64::MAX and a negative return value.
        .syscall(1, JOB, 110, u64::MAX - 15, 200, 1400, 1500)
        .fork(1600, 1, JOB, JOB_THREAD)
        .switch(1700, 1, JOB, 0, JOB_THREAD);
    b.event(Event {
        ts_ns: 1750,
        cpu: 1,
        pid: JOB_THREAD.0,
        tid: JOB_THREAD.1,
        data: EventData::SyscallEntry(SyscallEntry {
            id: 35,
            args: [1, 2, 3, 4, 5, 6],
        }),
    });
    b.event(Event {
        ts_ns: 1800,
        cpu: 1,
        pid: JOB_THREAD.0,
        tid: JOB_THREAD.1,
        data: EventData::SyscallExit(SyscallExit { id: 35, ret: -11 }),
    });
    b.exit(1900, 1, JOB_THREAD)
        .switch(1950, 1, JOB_THREAD, 0x80, JOB)
        .exit(2000, 1, JOB)
        .switch(2050, 1, JOB, 0x80, IDLE1);
    b
}

/// The Perfetto event name for a `flightrec dump` event name, and its fields as
/// (dump name, Perfetto name).
fn perfetto_names(name: &str) -> (&'static str, &'static [(&'static str, &'static str)]) {
    const SYS_ENTER: &[(&str, &str)] = &[("id", "id"), ("args", "args")];
    const SYS_EXIT: &[(&str, &str)] = &[("id", "id"), ("ret", "ret")];
    const WAKEUP: &[(&str, &str)] = &[
        ("comm", "comm"),
        ("tid", "pid"),
        ("prio", "prio"),
        ("target_cpu", "target_cpu"),
    ];
    if name.starts_with("syscall_entry_") {
        return ("sys_enter", SYS_ENTER);
    }
    if name.starts_with("syscall_exit_") {
        return ("sys_exit", SYS_EXIT);
    }
    match name {
        "sched_switch" => (
            "sched_switch",
            &[
                ("prev_comm", "prev_comm"),
                ("prev_tid", "prev_pid"),
                ("prev_prio", "prev_prio"),
                ("prev_state", "prev_state"),
                ("next_comm", "next_comm"),
                ("next_tid", "next_pid"),
                ("next_prio", "next_prio"),
            ],
        ),
        "sched_wakeup" => ("sched_waking", WAKEUP),
        "sched_wakeup_new" => ("sched_wakeup_new", WAKEUP),
        "sched_process_fork" => (
            "sched_process_fork",
            &[
                ("parent_comm", "parent_comm"),
                ("parent_tid", "parent_pid"),
                ("child_comm", "child_comm"),
                ("child_tid", "child_pid"),
            ],
        ),
        "sched_process_exec" => (
            "sched_process_exec",
            &[
                ("filename", "filename"),
                ("tid", "pid"),
                ("old_tid", "old_pid"),
            ],
        ),
        "sched_process_exit" => (
            "sched_process_exit",
            &[
                ("comm", "comm"),
                ("tid", "pid"),
                ("pid", "tgid"),
                ("prio", "prio"),
            ],
        ),
        "block_rq_issue" => (
            "block_rq_issue",
            &[
                ("dev", "dev"),
                ("sector", "sector"),
                ("nr_sector", "nr_sector"),
                ("bytes", "bytes"),
                ("rwbs", "rwbs"),
                ("comm", "comm"),
            ],
        ),
        "block_rq_complete" => (
            "block_rq_complete",
            &[
                ("dev", "dev"),
                ("sector", "sector"),
                ("nr_sector", "nr_sector"),
                ("error", "error"),
                ("rwbs", "rwbs"),
            ],
        ),
        "irq_handler_entry" => ("irq_handler_entry", &[("irq", "irq"), ("name", "name")]),
        "irq_handler_exit" => ("irq_handler_exit", &[("irq", "irq"), ("ret", "ret")]),
        "softirq_entry" => ("softirq_entry", &[("vec", "vec")]),
        "softirq_exit" => ("softirq_exit", &[("vec", "vec")]),
        other => panic!("no Perfetto mapping for {other}"),
    }
}

/// `prev_state` as the kernel's `sched_switch` tracepoint reports it, for the task states the
/// scenario uses (`task_struct.__state` → `TASK_REPORT` bit).
fn reported_state(state: u64) -> u64 {
    match state {
        0 => 0,        // preempted: R
        1 => 1,        // TASK_INTERRUPTIBLE: S
        2 => 2,        // TASK_UNINTERRUPTIBLE: D
        0x402 => 0x80, // TASK_IDLE: I
        0x80 => 0x10,  // TASK_DEAD: X
        other => panic!("scenario does not use state {other:#x}"),
    }
}

/// What the decoder must print for one `flightrec dump --json` line.
fn expected(dump: &Value) -> Value {
    let name = dump["name"].as_str().unwrap();
    let (ty, names) = perfetto_names(name);
    let mut fields = Map::new();
    for (from, to) in names {
        let mut v = dump["fields"][from].clone();
        assert!(!v.is_null(), "{name} has no field {from}");
        if *from == "prev_state" {
            v = json!(reported_state(v.as_u64().unwrap()));
        }
        fields.insert(to.to_string(), v);
    }
    json!({
        "ts": dump["ts_ns"].as_u64().unwrap() + BOOT_OFFSET,
        "cpu": dump["cpu"],
        "tid": dump["tid"],
        "type": ty,
        "fields": fields,
    })
}

/// The dump's events as JSON lines, through the same decoder as `flightrec dump --json`.
fn dump_json(snap: &Path) -> Vec<Value> {
    let (_, events) = flightrec_reader::dump::open(snap).unwrap();
    events.map(|e| e.unwrap().to_json()).collect()
}

#[test]
fn every_event_kind_round_trips_through_perfettos_own_classes() {
    let Some(cmd) = decoder("every_event_kind_round_trips_through_perfettos_own_classes") else {
        return;
    };
    let dir = scratch("all-kinds");
    let snap = dir.join("s.frs");
    scenario().write(&snap).unwrap();
    let out = dir.join("s.perfetto-trace");
    let stats = export(&snap, Format::Perfetto, &out).unwrap();
    assert_eq!(stats.bytes, std::fs::metadata(&out).unwrap().len());

    let got = decode(cmd, &out);
    assert_eq!(got["errors"], json!([]), "decoder found problems");

    let dump = dump_json(&snap);
    let kinds: std::collections::BTreeSet<&str> = dump
        .iter()
        .map(|d| perfetto_names(d["name"].as_str().unwrap()).0)
        .collect();
    assert_eq!(kinds.len(), 14, "the scenario covers every kind: {kinds:?}");
    assert_eq!(stats.events, dump.len() as u64);
    let want: Vec<Value> = dump.iter().map(expected).collect();
    let events = got["events"].as_array().unwrap();
    for (i, (g, w)) in events.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "event {i}");
    }
    assert_eq!(events.len(), want.len());

    // One bundle per CPU: the scenario is far below the bundle size.
    assert_eq!(
        got["bundles"],
        json!([{"cpu": 0, "events": 12}, {"cpu": 1, "events": 14}])
    );
    let frozen = 3000u64;
    assert_eq!(
        got["clock_snapshots"],
        json!([{
            "timestamp": frozen + BOOT_OFFSET,
            "primary": 6,
            "clocks": {
                "6": frozen + BOOT_OFFSET,
                "3": frozen,
                "1": frozen as i64 + REALTIME_OFFSET,
            },
        }])
    );
    assert_eq!(
        got["system_info"],
        json!({
            "sysname": "Linux",
            "release": "6.8.0-synthetic",
            "version": "#1 SMP PREEMPT_DYNAMIC",
            "machine": "x86_64",
            "num_cpus": 2,
        })
    );
    // The builder's snapshot id is 32 hex digits of 5e.
    assert_eq!(
        got["trace_uuid"],
        json!({"msb": 0x5e5e_5e5e_5e5e_5e5e_i64, "lsb": 0x5e5e_5e5e_5e5e_5e5e_i64})
    );
    assert_eq!(
        got["sequences"],
        json!({"1": [true, false, false], "2": [true, false, false, false]})
    );

    let trees = got["process_trees"].as_array().unwrap();
    assert_eq!(trees.len(), 2);
    assert_eq!(
        trees[0],
        json!({
            "timestamp": frozen + BOOT_OFFSET,
            "processes": [
                {"pid": 100, "ppid": 1, "cmdline": ["/usr/bin/server", "--port", "8080"]},
                {"pid": 50, "ppid": 2, "cmdline": ["kworker/0:1"], "cmdline_is_comm": true},
                {"pid": 200, "ppid": 1, "cmdline": ["sh", "-c", "job"]},
            ],
            "threads": [
                {"tid": 100, "name": "server", "tgid": 100},
                {"tid": 101, "name": "server", "tgid": 100},
                {"tid": 50, "name": "kworker/0:1", "tgid": 50},
                {"tid": 200, "name": "sh", "tgid": 200},
            ],
        })
    );
    // The child and its thread exited before the statedump: named from the events, with the
    // parent the fork recorded and the comm it had last (after exec).
    assert_eq!(
        trees[1],
        json!({
            "timestamp": frozen + BOOT_OFFSET,
            "processes": [
                {"pid": 300, "ppid": 200, "cmdline": ["job"], "cmdline_is_comm": true},
            ],
            "threads": [
                {"tid": 300, "name": "job", "tgid": 300},
                {"tid": 301, "name": "job", "tgid": 300},
            ],
        })
    );
}

#[test]
fn a_long_window_is_cut_into_bounded_bundles_per_cpu() {
    let Some(cmd) = decoder("a_long_window_is_cut_into_bounded_bundles_per_cpu") else {
        return;
    };
    let dir = scratch("bundles");
    let snap = dir.join("s.frs");
    let mut b = SnapshotBuilder::new(2);
    let n = 20_000u64;
    for i in 0..n {
        let cpu = (i % 2) as u32;
        b.syscall(cpu, SERVER, 110, i, 1, 10 * i, 10 * i + 5);
    }
    b.write(&snap).unwrap();
    let out = dir.join("s.perfetto-trace");
    let stats = export(&snap, Format::Perfetto, &out).unwrap();
    assert_eq!(stats.events, 2 * n);

    let got = decode(cmd, &out);
    assert_eq!(got["errors"], json!([]));
    let bundles = got["bundles"].as_array().unwrap();
    // The events here encode to 14-40 bytes (sys_exit to sys_enter), about 23 on average, so
    // ~920 KB of events make about 14 bundles of at most 64 KiB: 4700 of the smallest events.
    assert!(bundles.len() >= 12, "{} bundles", bundles.len());
    let mut per_cpu = [0u64; 2];
    let mut last_of_cpu = [usize::MAX; 2];
    for (i, b) in bundles.iter().enumerate() {
        let (cpu, events) = (b["cpu"].as_u64().unwrap(), b["events"].as_u64().unwrap());
        assert!(events <= 4700, "bundle of {events} events");
        per_cpu[cpu as usize] += events;
        last_of_cpu[cpu as usize] = i;
    }
    // Bundles are written as they fill, not cut short, except each CPU's last.
    for (i, b) in bundles.iter().enumerate() {
        if !last_of_cpu.contains(&i) {
            assert!(b["events"].as_u64().unwrap() >= 2000, "bundle {i}: {b}");
        }
    }
    assert_eq!(per_cpu, [n, n]);
    // Every argument and timestamp came through, in order.
    let events = got["events"].as_array().unwrap();
    let entries: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e["type"] == "sys_enter")
        .map(|e| {
            (
                e["ts"].as_u64().unwrap(),
                e["fields"]["args"][0].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(u64, u64)> = (0..n).map(|i| (10 * i, i)).collect();
    assert_eq!(entries, want);
}

/// Files in `dir` other than the snapshot.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "s.frs")
        .collect()
}

#[test]
fn an_existing_output_is_left_alone() {
    let dir = scratch("exists");
    let snap = dir.join("s.frs");
    scenario().write(&snap).unwrap();
    let out = dir.join("s.perfetto-trace");
    std::fs::write(&out, b"keep me").unwrap();
    let err = export(&snap, Format::Perfetto, &out).unwrap_err();
    assert!(
        matches!(err, ExportError::OutputExists(ref p) if p == &out),
        "{err:?}"
    );
    // The exporter's own entry refuses too, for callers that skip `export`.
    let err = flightrec_reader::export::perfetto::write(&snap, &out).unwrap_err();
    assert!(matches!(err, ExportError::OutputExists(_)), "{err:?}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
}

#[test]
fn a_corrupt_stream_leaves_no_output_behind() {
    let dir = scratch("corrupt");
    let snap = dir.join("s.frs");
    scenario().write(&snap).unwrap();
    // The last byte before the 24-byte trailer is part of the last zstd frame's checksum: the
    // index still reads, every record decodes, and only the end of the last stream fails, so
    // the exporter has written most of the trace by then.
    let mut bytes = std::fs::read(&snap).unwrap();
    let at = bytes.len() - 24 - 1;
    bytes[at] ^= 0xff;
    std::fs::write(&snap, &bytes).unwrap();
    let out = dir.join("s.perfetto-trace");
    let err = export(&snap, Format::Perfetto, &out).unwrap_err();
    assert!(matches!(err, ExportError::Decode(_)), "{err:?}");
    assert_eq!(leftovers(&dir), Vec::<String>::new());

    // A truncated file fails before anything is written.
    std::fs::write(&snap, &bytes[..bytes.len() / 2]).unwrap();
    let err = export(&snap, Format::Perfetto, &out).unwrap_err();
    assert!(matches!(err, ExportError::Snapshot(_)), "{err:?}");
    assert_eq!(leftovers(&dir), Vec::<String>::new());
}
