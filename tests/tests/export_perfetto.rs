//! Privileged end-to-end tests of `flightrec export perfetto` on real snapshots, decoded with
//! the protobuf classes of PyPI's `perfetto` package (`tests/perfetto/decode_trace.py`).

use std::collections::BTreeMap;

use flightrec_reader::export::perfetto::ftrace_prev_state;
use flightrec_reader::export::{Format, export};
use schemas::event::{Event, EventData};
use serde_json::{Value, json};

use crate::readers::perfetto_decoder as decoder;
use crate::util::{MAGIC, TestRecorder, nr, privileged, workload};

/// The Perfetto ftrace event a snapshot event becomes.
fn perfetto_type(e: &Event) -> &'static str {
    match e.data {
        EventData::SyscallEntry(_) => "sys_enter",
        EventData::SyscallExit(_) => "sys_exit",
        EventData::SchedSwitch(_) => "sched_switch",
        EventData::SchedWakeup(_) => "sched_waking",
        EventData::SchedWakeupNew(_) => "sched_wakeup_new",
        EventData::ProcessFork(_) => "sched_process_fork",
        EventData::ProcessExec(_) => "sched_process_exec",
        EventData::ProcessExit(_) => "sched_process_exit",
        EventData::BlockRqIssue(_) => "block_rq_issue",
        EventData::BlockRqComplete(_) => "block_rq_complete",
        EventData::IrqHandlerEntry(_) => "irq_handler_entry",
        EventData::IrqHandlerExit(_) => "irq_handler_exit",
        EventData::SoftirqEntry(_) => "softirq_entry",
        EventData::SoftirqExit(_) => "softirq_exit",
        EventData::SyscallPath(..) => unreachable!("path records are filtered out"),
    }
}

#[test]
fn a_real_snapshot_decodes_with_perfettos_classes() {
    let test = "a_real_snapshot_decodes_with_perfettos_classes";
    let Some(_p) = privileged(test) else {
        return;
    };
    let Some(mut cmd) = decoder(test) else {
        return;
    };
    let rec = TestRecorder::start("export-perfetto", |_| {});
    let pid = workload(&["getpgid", "500"]);
    let snap = rec.snapshot_file("export-perfetto");
    let out = rec.dir.join("snap.perfetto-trace");
    let stats = export(&snap, Format::Perfetto, &out).expect("export");

    let (manifest, events) = flightrec_reader::dump::open(&snap).expect("open snapshot");
    // Path records are arguments of the entry that follows, not events of their own.
    let events: Vec<Event> = events
        .map(|e| e.expect("decodable event"))
        .filter(|e| !matches!(e.data, EventData::SyscallPath(..)))
        .collect();
    let boot = manifest.clocks.boottime_minus_monotonic_ns as u64;
    let output = cmd.arg(&out).output().expect("run decode_trace.py");
    assert!(
        output.status.success(),
        "decode_trace.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_slice(&output.stdout).expect("decoder prints JSON");
    assert_eq!(got["errors"], json!([]), "decoder found problems");
    let trace = got["events"].as_array().unwrap();
    assert_eq!(stats.events, events.len() as u64);
    assert_eq!(trace.len(), events.len());

    // Counts per type agree, and so do time, CPU and thread of every event (both sides are in
    // (time, CPU) order).
    let mut want_counts: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &events {
        *want_counts.entry(perfetto_type(e)).or_default() += 1;
    }
    let mut got_counts: BTreeMap<&str, u64> = BTreeMap::new();
    for t in trace {
        *got_counts.entry(t["type"].as_str().unwrap()).or_default() += 1;
    }
    assert_eq!(got_counts, want_counts);
    for (i, (t, e)) in trace.iter().zip(&events).enumerate() {
        let key = (
            t["ts"].as_u64(),
            t["cpu"].as_u64(),
            t["tid"].as_u64(),
            &t["type"],
        );
        let want = (
            Some(e.ts_ns + boot),
            Some(u64::from(e.cpu)),
            Some(u64::from(e.tid)),
            &json!(perfetto_type(e)),
        );
        assert_eq!(key, want, "event {i}");
    }

    // The workload's 500 marked getpgid calls, with their arguments and results.
    let calls: Vec<(&str, u64, i64)> = trace
        .iter()
        .filter(|t| t["tid"] == pid && t["fields"]["id"] == nr::GETPGID)
        .map(|t| {
            let f = &t["fields"];
            match t["type"].as_str().unwrap() {
                "sys_enter" => ("enter", f["args"][0].as_u64().unwrap(), 0),
                _ => ("exit", 0, f["ret"].as_i64().unwrap()),
            }
        })
        .collect();
    let esrch = -i64::from(libc::ESRCH);
    let want: Vec<(&str, u64, i64)> = (0..500)
        .flat_map(|i| [("enter", MAGIC + i, 0), ("exit", 0, esrch)])
        .collect();
    assert_eq!(calls, want);

    // Every switch of the workload in or out, field by field.
    let switches = |pick: &dyn Fn(&Event) -> Option<Value>| -> Vec<Value> {
        events.iter().filter_map(pick).collect()
    };
    let want_switches = switches(&|e| match e.data {
        EventData::SchedSwitch(s) if e.tid == pid || s.next_tid == pid => Some(json!({
            "ts": e.ts_ns + boot,
            "prev_pid": e.tid,
            "prev_comm": schemas::cstr_lossy(&s.prev_comm),
            "prev_state": ftrace_prev_state(s.prev_state),
            "next_pid": s.next_tid,
            "next_comm": schemas::cstr_lossy(&s.next_comm),
        })),
        _ => None,
    });
    assert!(!want_switches.is_empty(), "the workload was never switched");
    let got_switches: Vec<Value> = trace
        .iter()
        .filter(|t| t["type"] == "sched_switch")
        .filter(|t| t["fields"]["prev_pid"] == pid || t["fields"]["next_pid"] == pid)
        .map(|t| {
            let f = &t["fields"];
            json!({
                "ts": t["ts"],
                "prev_pid": f["prev_pid"],
                "prev_comm": f["prev_comm"],
                "prev_state": f["prev_state"],
                "next_pid": f["next_pid"],
                "next_comm": f["next_comm"],
            })
        })
        .collect();
    assert_eq!(got_switches, want_switches);
    // Every reported state is one bit of TASK_REPORT (or 0 for runnable).
    for t in trace.iter().filter(|t| t["type"] == "sched_switch") {
        let s = t["fields"]["prev_state"].as_u64().unwrap();
        assert!(
            s == 0 || (s.is_power_of_two() && s <= 0x80),
            "prev_state {s:#x}"
        );
    }

    // Clocks at the freeze.
    let mono = manifest.frozen_monotonic_ns;
    assert_eq!(
        got["clock_snapshots"][0]["clocks"],
        json!({
            "6": mono + boot,
            "3": mono,
            "1": mono.saturating_add_signed(manifest.clocks.realtime_minus_monotonic_ns),
        })
    );
    assert_eq!(got["system_info"]["release"], manifest.host.kernel_release);
    assert_eq!(got["system_info"]["machine"], manifest.host.machine);

    // The statedump has this test process; the workload, gone by then, comes from the events
    // with the parent its fork recorded.
    let trees = got["process_trees"].as_array().unwrap();
    let me = std::process::id();
    assert!(
        trees[0]["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"] == me && p["ppid"].is_u64()),
        "this process is not in the statedump tree"
    );
    assert!(
        trees[0]["threads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["tid"] == me && t["tgid"] == me)
    );
    assert!(
        trees[1]["processes"].as_array().unwrap().contains(&json!({
            "pid": pid,
            "ppid": me,
            "cmdline": ["workload"],
            "cmdline_is_comm": true,
        })),
        "{}",
        trees[1]
    );
    assert!(
        trees[1]["threads"]
            .as_array()
            .unwrap()
            .contains(&json!({"tid": pid, "tgid": pid, "name": "workload"})),
        "{}",
        trees[1]
    );
}
