//! Privileged end-to-end tests of `flightrec export tracedat` on real snapshots: what
//! `trace-cmd report` reads from the export is compared with the snapshot itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use flightrec::export::{Format, export};
use schemas::cstr_lossy;
use schemas::event::{Event, EventData, rwbs_string};

use crate::util::{self, MAGIC, TestRecorder, nr, privileged, workload};

/// Whether `trace-cmd` can run here; says why not (or panics under `CI=true`).
fn have_trace_cmd(test: &str) -> bool {
    // `trace-cmd --version` exits non-zero but prints its version.
    let found = Command::new("trace-cmd")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("trace-cmd version"));
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: trace-cmd is not installed, and CI must run this test");
        }
        println!("skipped {test}: trace-cmd is not installed (Debian package trace-cmd)");
    }
    found
}

/// One line of `trace-cmd report -t -R`: comm, tid, cpu, ns, event name, raw fields.
#[derive(Debug)]
struct Line {
    comm: String,
    tid: u32,
    cpu: u32,
    ts_ns: u64,
    name: String,
    fields: String,
}

fn parse_line(line: &str) -> Line {
    let bad = || -> ! { panic!("unexpected report line {line:?}") };
    // Comms may hold '-' and spaces: the tid follows the last '-' before " [cpu]".
    let open = line.find(" [").unwrap_or_else(|| bad());
    let (task, rest) = line.split_at(open);
    let task = task.trim_start();
    let dash = task.rfind('-').unwrap_or_else(|| bad());
    let rest = rest.trim_start().strip_prefix('[').unwrap_or_else(|| bad());
    let (cpu, rest) = rest.split_once(']').unwrap_or_else(|| bad());
    let (ts, rest) = rest.trim_start().split_once(": ").unwrap_or_else(|| bad());
    let (secs, nanos) = ts.split_once('.').unwrap_or_else(|| bad());
    let (name, fields) = rest.split_once(':').unwrap_or_else(|| bad());
    Line {
        comm: task[..dash].to_owned(),
        tid: task[dash + 1..].trim().parse().unwrap_or_else(|_| bad()),
        cpu: cpu.parse().unwrap_or_else(|_| bad()),
        ts_ns: secs.parse::<u64>().unwrap() * 1_000_000_000 + nanos.parse::<u64>().unwrap(),
        name: name.to_owned(),
        fields: fields.trim().to_owned(),
    }
}

fn report(file: &Path) -> Vec<Line> {
    let out = Command::new("trace-cmd")
        .args(["report", "-t", "-R"])
        .arg(file)
        .output()
        .expect("run trace-cmd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "trace-cmd report failed: {stderr}");
    assert!(stderr.trim().is_empty(), "trace-cmd warned: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    assert!(lines.next().unwrap().starts_with("cpus="));
    lines.map(parse_line).collect()
}

/// The ftrace name of an event.
fn ftrace_name(ev: &Event) -> String {
    match ev.data {
        EventData::SyscallEntry(_) => "sys_enter".into(),
        EventData::SyscallExit(_) => "sys_exit".into(),
        _ => ev.name(),
    }
}

/// The raw fields `trace-cmd report -R` must print for `ev`, for the kinds this test samples.
fn expected_fields(ev: &Event) -> Option<String> {
    Some(match &ev.data {
        EventData::SyscallEntry(e) => {
            let bytes: Vec<String> = e
                .args
                .iter()
                .flat_map(|a| a.to_le_bytes())
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("id={} args=ARRAY[{}]", e.id, bytes.join(", "))
        }
        EventData::SyscallExit(e) => format!("id={} ret={}", e.id, e.ret),
        EventData::SchedSwitch(e) => format!(
            "prev_comm={} prev_pid={} prev_prio={} prev_state={} next_comm={} next_pid={} next_prio={}",
            cstr_lossy(&e.prev_comm),
            ev.tid,
            e.prev_prio,
            e.prev_state as i64,
            cstr_lossy(&e.next_comm),
            e.next_tid,
            e.next_prio
        ),
        EventData::SchedWakeup(e) | EventData::SchedWakeupNew(e) => format!(
            "comm={} pid={} prio={} target_cpu={:03}",
            cstr_lossy(&e.comm),
            e.tid,
            e.prio,
            e.target_cpu
        ),
        EventData::BlockRqIssue(e) => format!(
            "dev={} sector={} nr_sector={} bytes={} rwbs={} comm={} cmd=",
            e.dev,
            e.sector,
            e.nr_sector,
            e.bytes,
            rwbs_string(e.op, e.rwbs_flags),
            cstr_lossy(&e.comm)
        ),
        EventData::IrqHandlerEntry(e) => format!("irq={} name={}", e.irq, cstr_lossy(&e.name)),
        EventData::SoftirqEntry(e) | EventData::SoftirqExit(e) => format!("vec={}", e.vec),
        _ => return None,
    })
}

#[test]
fn real_snapshot_reads_back_in_trace_cmd() {
    let test = "real_snapshot_reads_back_in_trace_cmd";
    let Some(_p) = privileged(test) else {
        return;
    };
    if !have_trace_cmd(test) {
        return;
    }
    let rec = TestRecorder::start("export-tracedat", |_| {});
    let pid = workload(&["getppid", "500"]);
    // A write and fsync on a real disk, for block events.
    let data_dir = util::scratch_dir("export-tracedat-data");
    workload(&["syscalls", data_dir.to_str().unwrap()]);
    let snap = rec.snapshot_file("export-tracedat");
    let out = rec.dir.join("trace.dat");
    let stats = export(&snap, Format::Tracedat, &out).expect("export");

    let (_, events) = flightrec::dump::open(&snap).expect("open snapshot");
    let events: Vec<Event> = events.map(|e| e.expect("decodable event")).collect();
    assert_eq!(stats.events, events.len() as u64);
    let lines = report(&out);
    assert_eq!(lines.len(), events.len(), "events read back");

    let mut want_counts: BTreeMap<String, u64> = BTreeMap::new();
    for ev in &events {
        *want_counts.entry(ftrace_name(ev)).or_default() += 1;
    }
    let mut got_counts: BTreeMap<String, u64> = BTreeMap::new();
    for l in &lines {
        *got_counts.entry(l.name.clone()).or_default() += 1;
    }
    assert_eq!(got_counts, want_counts, "events per name");
    println!("{test}: {} events read back: {got_counts:?}", lines.len());

    // Same order (both merge the CPU streams by time, ties to the lower CPU), same CPU, thread,
    // ns and fields.
    let mut compared = 0;
    for (i, (ev, l)) in events.iter().zip(&lines).enumerate() {
        assert_eq!(
            (l.cpu, l.tid, l.ts_ns, l.name.as_str()),
            (ev.cpu, ev.tid, ev.ts_ns, ftrace_name(ev).as_str()),
            "event {i}: {}",
            ev.to_text()
        );
        if let Some(want) = expected_fields(ev) {
            assert_eq!(l.fields, want, "event {i}: {}", ev.to_text());
            compared += 1;
        }
    }
    assert!(
        compared >= 1000,
        "only {compared} events compared field by field"
    );
    if util::disk_dev_of(&data_dir).is_some() {
        assert!(
            got_counts.contains_key("block_rq_issue"),
            "no block events: {got_counts:?}"
        );
    }

    // The workload's 500 marked getppid calls, in order, under its name.
    let calls: Vec<&Line> = lines
        .iter()
        .filter(|l| l.tid == pid && (l.name == "sys_enter" || l.name == "sys_exit"))
        .filter(|l| l.fields.starts_with(&format!("id={} ", nr::GETPPID)))
        .collect();
    assert_eq!(calls.len(), 1000, "getppid entries and exits of {pid}");
    let parent = std::process::id();
    for (i, pair) in calls.chunks(2).enumerate() {
        let arg0 = (MAGIC + i as u64).to_le_bytes();
        let arg0: Vec<String> = arg0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(pair[0].name, "sys_enter", "call {i}");
        assert!(
            pair[0]
                .fields
                .starts_with(&format!("id=110 args=ARRAY[{}", arg0.join(", "))),
            "call {i}: {}",
            pair[0].fields
        );
        assert_eq!(pair[1].fields, format!("id=110 ret={parent}"), "call {i}");
        assert_eq!(pair[0].comm, "workload", "call {i}");
    }
}
