//! Privileged end-to-end tests of `flightrec export tracedat` on real snapshots: what
//! `trace-cmd report` reads from the export is compared with the snapshot itself.

use std::collections::BTreeMap;

use flightrec_reader::export::{Format, export};
use schemas::cstr_lossy;
use schemas::event::{Event, EventData, rwbs_string};

use crate::readers::{TraceLine as Line, have_trace_cmd, trace_cmd_report};
use crate::util::{self, MAGIC, TestRecorder, nr, privileged, workload};

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
            format!("id={} args=ARRAY[{}]", e.id as i64, bytes.join(", "))
        }
        // ftrace's `id` is a `long`: the -1 of a syscall exit without a syscall (a fork child's
        // first return to user space) prints signed.
        EventData::SyscallExit(e) => format!("id={} ret={}", e.id as i64, e.ret),
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
    let pid = workload(&["getpgid", "500"]);
    // A write and fsync on a real disk, for block events.
    let data_dir = util::scratch_dir("export-tracedat-data");
    workload(&["syscalls", data_dir.to_str().unwrap()]);
    let snap = rec.snapshot_file("export-tracedat");
    let out = rec.dir.join("trace.dat");
    let stats = export(&snap, Format::Tracedat, &out).expect("export");

    let (_, events) = flightrec_reader::dump::open(&snap).expect("open snapshot");
    // Path records are arguments of the entry that follows, not events of their own.
    let events: Vec<Event> = events
        .map(|e| e.expect("decodable event"))
        .filter(|e| !matches!(e.data, EventData::SyscallPath(..)))
        .collect();
    assert_eq!(stats.events, events.len() as u64);
    let lines = trace_cmd_report(&out, &["-R"]);
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
            assert_eq!(l.info, want, "event {i}: {}", ev.to_text());
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

    // The workload's 500 marked getpgid calls, in order, under its name.
    let calls: Vec<&Line> = lines
        .iter()
        .filter(|l| l.tid == pid && (l.name == "sys_enter" || l.name == "sys_exit"))
        .filter(|l| l.info.starts_with(&format!("id={} ", nr::GETPGID)))
        .collect();
    assert_eq!(calls.len(), 1000, "getpgid entries and exits of {pid}");
    let esrch = -libc::ESRCH;
    for (i, pair) in calls.chunks(2).enumerate() {
        let arg0 = (MAGIC + i as u64).to_le_bytes();
        let arg0: Vec<String> = arg0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(pair[0].name, "sys_enter", "call {i}");
        assert!(
            pair[0]
                .info
                .starts_with(&format!("id=121 args=ARRAY[{}", arg0.join(", "))),
            "call {i}: {}",
            pair[0].info
        );
        assert_eq!(pair[1].info, format!("id=121 ret={esrch}"), "call {i}");
        assert_eq!(pair[0].comm, "workload", "call {i}");
    }
}
