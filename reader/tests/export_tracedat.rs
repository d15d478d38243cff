//! `flightrec export --format tracedat` on synthetic snapshots, read back by `trace-cmd report`
//! (the independent reader) and compared with the snapshot as `flightrec_reader::dump` decodes it.
//!
//! Without trace-cmd the tests that need it print why and pass, except under `CI=true`.

#[path = "common/readers.rs"]
mod readers;
use readers::{have_trace_cmd, trace_cmd_report as report};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use flightrec_reader::export::{ExportError, Format, export};
use flightrec_reader::synth::{SnapshotBuilder, comm};
use schemas::event::{Event, EventData};
use schemas::{BlockRq, ProcessFork, SchedWakeup, SyscallExit, rwbs};
use serde_json::Value;

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("export-tracedat-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every event of the snapshot, as `flightrec dump` decodes it, with its JSON form.
fn dump_events(snapshot: &Path) -> Vec<(Event, Value)> {
    let (_, events) = flightrec_reader::dump::open(snapshot).unwrap();
    events
        .map(|e| {
            let e = e.unwrap();
            let json = e.to_json();
            (e, json)
        })
        .collect()
}

/// The ftrace event name of a dumped event (from its LTTng name).
fn ftrace_name(json: &Value) -> String {
    let name = json["name"].as_str().unwrap();
    if name.starts_with("syscall_entry_") {
        "sys_enter".into()
    } else if name.starts_with("syscall_exit_") {
        "sys_exit".into()
    } else {
        name.into()
    }
}

/// What `trace-cmd report -R` must print for a dumped event: ftrace's field names with the
/// values from the dump's JSON fields.
fn expected_raw(json: &Value) -> String {
    let f = &json["fields"];
    let v = |k: &str| -> String {
        match &f[k] {
            Value::String(s) => s.clone(),
            Value::Null => panic!("no field {k} in {json}"),
            other => other.to_string(),
        }
    };
    let pairs: Vec<(&str, String)> = match ftrace_name(json).as_str() {
        "sys_enter" => {
            // Arrays are printed as their bytes.
            let bytes: Vec<String> = f["args"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|a| a.as_u64().unwrap().to_le_bytes())
                .map(|b| format!("{b:02x}"))
                .collect();
            vec![
                ("id", v("id")),
                ("args", format!("ARRAY[{}]", bytes.join(", "))),
            ]
        }
        "sys_exit" => vec![("id", v("id")), ("ret", v("ret"))],
        "sched_switch" => vec![
            ("prev_comm", v("prev_comm")),
            ("prev_pid", v("prev_tid")),
            ("prev_prio", v("prev_prio")),
            ("prev_state", v("prev_state")),
            ("next_comm", v("next_comm")),
            ("next_pid", v("next_tid")),
            ("next_prio", v("next_prio")),
        ],
        "sched_wakeup" | "sched_wakeup_new" => vec![
            ("comm", v("comm")),
            ("pid", v("tid")),
            ("prio", v("prio")),
            // trace-cmd pads target_cpu to three digits even in raw output.
            (
                "target_cpu",
                format!("{:03}", f["target_cpu"].as_u64().unwrap()),
            ),
        ],
        "sched_process_fork" => vec![
            ("parent_comm", v("parent_comm")),
            ("parent_pid", v("parent_tid")),
            ("child_comm", v("child_comm")),
            ("child_pid", v("child_tid")),
        ],
        "sched_process_exec" => vec![
            ("filename", v("filename")),
            ("pid", v("tid")),
            ("old_pid", v("old_tid")),
        ],
        "sched_process_exit" => vec![("comm", v("comm")), ("pid", v("tid")), ("prio", v("prio"))],
        "block_rq_issue" => vec![
            ("dev", v("dev")),
            ("sector", v("sector")),
            ("nr_sector", v("nr_sector")),
            ("bytes", v("bytes")),
            ("rwbs", v("rwbs")),
            ("comm", v("comm")),
            ("cmd", String::new()),
        ],
        "block_rq_complete" => vec![
            ("dev", v("dev")),
            ("sector", v("sector")),
            ("nr_sector", v("nr_sector")),
            ("error", v("error")),
            ("rwbs", v("rwbs")),
            ("cmd", String::new()),
        ],
        "irq_handler_entry" => vec![("irq", v("irq")), ("name", v("name"))],
        "irq_handler_exit" => vec![("irq", v("irq")), ("ret", v("ret"))],
        "softirq_entry" | "softirq_exit" => vec![("vec", v("vec"))],
        other => panic!("unexpected event {other}"),
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

const SOFTIRQ_NAMES: [&str; 10] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

/// What `trace-cmd report -N` (no plugins: the files' own print formats) must print.
fn expected_printed(json: &Value) -> String {
    let f = &json["fields"];
    let s = |k: &str| f[k].as_str().unwrap().to_owned();
    let n = |k: &str| f[k].as_i64().unwrap();
    match ftrace_name(json).as_str() {
        "sys_enter" => {
            let args: Vec<String> = f["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| format!("{:x}", a.as_u64().unwrap()))
                .collect();
            format!("NR {} ({})", n("id"), args.join(", "))
        }
        "sys_exit" => format!("NR {} = {}", n("id"), n("ret")),
        "sched_switch" => {
            let state = match n("prev_state") {
                0 => "R".to_owned(),
                0x100 => "R+".to_owned(),
                1 => "S".to_owned(),
                2 => "D".to_owned(),
                other => panic!("no expectation for prev_state {other}"),
            };
            format!(
                "prev_comm={} prev_pid={} prev_prio={} prev_state={state} ==> next_comm={} next_pid={} next_prio={}",
                s("prev_comm"),
                n("prev_tid"),
                n("prev_prio"),
                s("next_comm"),
                n("next_tid"),
                n("next_prio")
            )
        }
        "sched_wakeup" | "sched_wakeup_new" => format!(
            "comm={} pid={} prio={} target_cpu={:03}",
            s("comm"),
            n("tid"),
            n("prio"),
            n("target_cpu")
        ),
        "sched_process_fork" => format!(
            "comm={} pid={} child_comm={} child_pid={}",
            s("parent_comm"),
            n("parent_tid"),
            s("child_comm"),
            n("child_tid")
        ),
        "sched_process_exec" => format!(
            "filename={} pid={} old_pid={}",
            s("filename"),
            n("tid"),
            n("old_tid")
        ),
        "sched_process_exit" => {
            format!("comm={} pid={} prio={}", s("comm"), n("tid"), n("prio"))
        }
        "block_rq_issue" => {
            let dev = n("dev");
            format!(
                "{},{} {} {} () {} + {} [{}]",
                dev >> 20,
                dev & 0xf_ffff,
                s("rwbs"),
                n("bytes"),
                n("sector"),
                n("nr_sector"),
                s("comm")
            )
        }
        "block_rq_complete" => {
            let dev = n("dev");
            format!(
                "{},{} {} () {} + {} [{}]",
                dev >> 20,
                dev & 0xf_ffff,
                s("rwbs"),
                n("sector"),
                n("nr_sector"),
                n("error")
            )
        }
        "irq_handler_entry" => format!("irq={} name={}", n("irq"), s("name")),
        "irq_handler_exit" => format!(
            "irq={} ret={}",
            n("irq"),
            if n("ret") != 0 {
                "handled"
            } else {
                "unhandled"
            }
        ),
        "softirq_entry" | "softirq_exit" => {
            format!(
                "vec={} [action={}]",
                n("vec"),
                SOFTIRQ_NAMES[n("vec") as usize]
            )
        }
        other => panic!("unexpected event {other}"),
    }
}

const WORKER: (u32, u32, &str) = (100, 100, "worker");
const WORKER_2: (u32, u32, &str) = (100, 101, "worker");
const DB: (u32, u32, &str) = (200, 200, "db");
const CHILD: (u32, u32, &str) = (300, 300, "child");
const IDLE: (u32, u32, &str) = (0, 0, "swapper/1");

/// Every event kind on two CPUs, with negative values, a cross-CPU time tie, a gap too long
/// for one time delta, and a thread the statedump does not know.
fn every_kind() -> SnapshotBuilder {
    let t0 = 4_000_000_000_123;
    let mut b = SnapshotBuilder::new(2);
    b.process(100, 1, "worker", ("/app", 7), &[100, 101]);
    b.process(200, 1, "db", ("/db", 8), &[200]);
    b.syscall(0, WORKER, 110, 0xF11E_0000_0000, 1, t0, t0 + 333);
    b.syscall(1, WORKER_2, 0, 3, -11, t0 + 333, t0 + 1_001);
    b.event(Event {
        ts_ns: t0 + 2_000,
        cpu: 1,
        pid: 100,
        tid: 101,
        data: EventData::SyscallExit(SyscallExit { id: 231, ret: -38 }),
    });
    b.switch(t0 + 10_000, 0, WORKER, 1, DB);
    b.switch(t0 + 20_000, 1, WORKER_2, 0x100, IDLE);
    b.wakeup(t0 + 30_000, 1, IDLE, WORKER_2, 1);
    b.event(Event {
        ts_ns: t0 + 31_000,
        cpu: 0,
        pid: 200,
        tid: 200,
        data: EventData::SchedWakeupNew(SchedWakeup {
            comm: comm("child"),
            tid: 300,
            pid: 300,
            prio: -51,
            target_cpu: 1,
        }),
    });
    b.switch(t0 + 32_000, 1, IDLE, 0, WORKER_2);
    // tid 300's names: "child" on CPU 0 at +31 µs and CPU 1 at +40 µs, then the exec'd
    // program's on CPU 0: the newest in time wins though CPU 1 is read last.
    b.fork(t0 + 40_000, 1, DB, CHILD);
    b.event(Event {
        ts_ns: t0 + 41_000,
        cpu: 0,
        pid: 200,
        tid: 200,
        data: EventData::ProcessFork(ProcessFork {
            parent_comm: comm("db"),
            child_comm: comm("db"),
            parent_tid: 200,
            parent_pid: 200,
            child_tid: 201,
            child_pid: 200,
            cgroup: 0,
        }),
    });
    b.exec(
        t0 + 50_000,
        0,
        CHILD,
        "/usr/lib/postgresql/15/bin/a-rather-long-helper-name",
    );
    b.exit(t0 + 60_000, 0, (300, 300, "a-rather-long-h"));
    b.block(
        0,
        DB,
        (8 << 20) | 16,
        123_456_789,
        65_536,
        1,
        t0 + 70_000,
        t0 + 90_000,
    );
    b.event(Event {
        ts_ns: t0 + 80_000,
        cpu: 1,
        pid: 100,
        tid: 101,
        data: EventData::BlockRqIssue(BlockRq {
            sector: 42,
            dev: (259 << 20) | 1,
            nr_sector: 8,
            bytes: 4096,
            op: 1,
            rwbs_flags: rwbs::SYNC | rwbs::META | rwbs::FUA,
            error: 0,
            comm: comm("worker"),
        }),
    });
    b.event(Event {
        ts_ns: t0 + 85_000,
        cpu: 1,
        pid: 0,
        tid: 0,
        data: EventData::BlockRqComplete(BlockRq {
            sector: 42,
            dev: (259 << 20) | 1,
            nr_sector: 8,
            bytes: 0,
            op: 0,
            rwbs_flags: rwbs::RAHEAD,
            error: -5,
            comm: [0; 16],
        }),
    });
    b.irq(1, WORKER_2, 42, "nvme0q1", t0 + 100_000, t0 + 100_777);
    // The same instant on both CPUs: trace-cmd and dump both put CPU 0 first.
    b.irq(0, DB, 9, "acpi", t0 + 100_000, t0 + 101_000);
    b.softirq(0, DB, 3, t0 + 110_000, t0 + 111_000);
    // 3 s later: a delta beyond 27 bits.
    b.softirq(1, WORKER_2, 9, t0 + 3_000_000_000, t0 + 3_000_000_500);
    b
}

#[test]
fn every_kind_on_two_cpus_reads_back_exactly() {
    let test = "every_kind_on_two_cpus_reads_back_exactly";
    let dir = scratch("every-kind");
    let snap = dir.join("s.frs");
    every_kind().write(&snap).unwrap();
    let out = dir.join("trace.dat");
    let stats = export(&snap, Format::Tracedat, &out).unwrap();
    let events = dump_events(&snap);
    assert_eq!(events.len(), 26);
    assert_eq!(stats.events, events.len() as u64);
    assert_eq!(stats.bytes, std::fs::metadata(&out).unwrap().len());
    let names: std::collections::BTreeSet<_> = events.iter().map(|(e, _)| e.kind()).collect();
    // Every kind but the path records, which ftrace has no event for.
    let exported = schemas::EventKind::ALL
        .iter()
        .filter(|&&k| k != schemas::EventKind::SyscallPath)
        .count();
    assert_eq!(names.len(), exported, "every kind");
    if !have_trace_cmd(test) {
        return;
    }

    // Comms in the first column: the statedump's, then the newest the events name (tid 300 is
    // not in the statedump), pid 0 shown as trace-cmd's "<idle>".
    let comms: HashMap<u32, &str> = [
        (100, "worker"),
        (101, "worker"),
        (200, "db"),
        (300, "a-rather-long-h"),
        (0, "<idle>"),
    ]
    .into();

    let raw = report(&out, &["-R"]);
    let printed = report(&out, &["-N"]);
    assert_eq!(raw.len(), events.len());
    assert_eq!(printed.len(), events.len());
    for (i, ((ev, json), (r, p))) in events.iter().zip(raw.iter().zip(&printed)).enumerate() {
        let at = format!("event {i}: {json}");
        assert_eq!(r.name, ftrace_name(json), "{at}");
        assert_eq!(r.cpu, ev.cpu, "{at}");
        assert_eq!(r.tid, ev.tid, "{at}");
        assert_eq!(r.ts_ns, ev.ts_ns, "{at}");
        assert_eq!(r.comm, comms[&ev.tid], "{at}");
        assert_eq!(r.info, expected_raw(json), "{at}");
        assert_eq!(
            (&p.name, p.cpu, p.tid, p.ts_ns),
            (&r.name, r.cpu, r.tid, r.ts_ns),
            "{at}"
        );
        assert_eq!(p.info, expected_printed(json), "{at}");
    }

    // With trace-cmd's plugins (what users see), sched_switch reads `prev:tid [prio] ==> ...`.
    let plugged = report(&out, &[]);
    let switch = plugged
        .iter()
        .find(|l| l.name == "sched_switch")
        .expect("a sched_switch");
    assert_eq!(switch.info, "worker:100 [120] S ==> db:200 [120]");
    // The default view prints µs: the same events, in the same order.
    let names: Vec<&str> = plugged.iter().map(|l| l.name.as_str()).collect();
    let want: Vec<String> = events.iter().map(|(_, j)| ftrace_name(j)).collect();
    assert_eq!(names, want);
}

/// A syscall-heavy snapshot: thousands of events over many pages per CPU, with gaps from 1 ns
/// to an hour.
fn many_events() -> SnapshotBuilder {
    let mut b = SnapshotBuilder::new(2);
    b.process(500, 1, "load", ("/", 1), &[500, 501]);
    for cpu in 0..2u32 {
        let task = (500, 500 + cpu, "load");
        let mut ts = 1_000_000_000 + u64::from(cpu) * 7;
        for i in 0..6_000u64 {
            // Mostly short gaps, every 97th a long one, one gap of an hour.
            let gap = match i {
                3_000 => 3_600_000_000_000,
                _ if i % 97 == 0 => (1 << 27) + i * 1_000,
                _ => 1 + (i * 7919) % 5_000,
            };
            ts += gap;
            let end = ts + (i % 3);
            b.syscall(cpu, task, 110, 0xF11E_0000_0000 + i, 500, ts, end);
            ts = end;
        }
    }
    b
}

#[test]
fn many_pages_and_long_gaps_keep_every_timestamp() {
    let test = "many_pages_and_long_gaps_keep_every_timestamp";
    let dir = scratch("many");
    let snap = dir.join("s.frs");
    many_events().write(&snap).unwrap();
    let out = dir.join("trace.dat");
    let stats = export(&snap, Format::Tracedat, &out).unwrap();
    let events = dump_events(&snap);
    assert_eq!(events.len(), 24_000);
    assert_eq!(stats.events, 24_000);
    // Per CPU, 6000 entries (4 + 64 bytes) and 6000 exits (4 + 24 bytes) need at least 142
    // pages of 4080 data bytes.
    assert!(stats.bytes >= (2 * 142 + 1) * 4096, "{} bytes", stats.bytes);
    if !have_trace_cmd(test) {
        return;
    }
    let raw = report(&out, &["-R"]);
    assert_eq!(raw.len(), events.len());
    for (i, ((ev, json), r)) in events.iter().zip(&raw).enumerate() {
        assert_eq!(
            (r.cpu, r.tid, r.ts_ns, r.name.as_str()),
            (ev.cpu, ev.tid, ev.ts_ns, ftrace_name(json).as_str()),
            "event {i}"
        );
        assert_eq!(r.info, expected_raw(json), "event {i}");
    }
}

#[test]
fn existing_output_is_refused_and_kept() {
    let dir = scratch("exists");
    let snap = dir.join("s.frs");
    every_kind().write(&snap).unwrap();
    let out = dir.join("trace.dat");
    std::fs::write(&out, b"keep me").unwrap();
    let err = flightrec_reader::export::tracedat::write(&snap, &out).unwrap_err();
    assert!(
        matches!(err, ExportError::OutputExists(ref p) if p == &out),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
}

/// Names in `dir` other than the snapshot.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "s.frs")
        .collect();
    names.sort();
    names
}

#[test]
fn corrupt_or_truncated_snapshot_leaves_no_output() {
    let dir = scratch("corrupt");
    let snap = dir.join("s.frs");
    many_events().write(&snap).unwrap();
    let good = std::fs::read(&snap).unwrap();
    let index = schemas::file::Snapshot::open(&snap).unwrap();
    let last = index.streams.last().unwrap();
    let out = dir.join("trace.dat");

    // A flipped byte in the last CPU's compressed records: found only while reading them.
    let mut bad = good.clone();
    bad[(last.offset + last.compressed_len / 2) as usize] ^= 0x5a;
    std::fs::write(&snap, &bad).unwrap();
    let err = export(&snap, Format::Tracedat, &out).unwrap_err();
    assert!(matches!(err, ExportError::Snapshot(_)), "{err:?}");
    assert_eq!(leftovers(&dir), Vec::<String>::new());

    std::fs::write(&snap, &good[..good.len() / 2]).unwrap();
    let err = export(&snap, Format::Tracedat, &out).unwrap_err();
    assert!(matches!(err, ExportError::Snapshot(_)), "{err:?}");
    assert_eq!(leftovers(&dir), Vec::<String>::new());
}

#[test]
fn unknown_event_kind_is_a_decode_error() {
    let dir = scratch("unknown-kind");
    let snap = dir.join("s.frs");
    let b = every_kind();
    let mut streams = b.records();
    streams[1].1[3].kind = 99;
    let file = std::fs::File::create(&snap).unwrap();
    let mut w = schemas::file::SnapshotWriter::new(file, &b.manifest, 1).unwrap();
    for (cpu, recs) in &streams {
        w.write_stream(*cpu, recs).unwrap();
    }
    w.finish().unwrap();
    let out = dir.join("trace.dat");
    let err = export(&snap, Format::Tracedat, &out).unwrap_err();
    match err {
        ExportError::Decode(msg) => assert!(msg.contains("unknown event kind 99"), "{msg}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(leftovers(&dir), Vec::<String>::new());
}

#[test]
fn impossible_cpu_number_is_refused() {
    let dir = scratch("bad-cpu");
    let snap = dir.join("s.frs");
    let b = every_kind();
    let (_, recs) = b.records().remove(0);
    let file = std::fs::File::create(&snap).unwrap();
    let mut w = schemas::file::SnapshotWriter::new(file, &b.manifest, 1).unwrap();
    w.write_stream(u32::MAX, &recs).unwrap();
    w.finish().unwrap();
    let out = dir.join("trace.dat");
    let err = export(&snap, Format::Tracedat, &out).unwrap_err();
    match err {
        ExportError::Decode(msg) => assert!(msg.contains("cpu 4294967295"), "{msg}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(leftovers(&dir), Vec::<String>::new());
}
