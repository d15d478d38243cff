//! Privileged end-to-end tests of `flightrec export --format ctf` on real snapshots: babeltrace2
//! and lttng-analyses read the export and must agree with the snapshot itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use flightrec_reader::export::{Format, export};
use schemas::event::{Event, EventData};

use crate::readers::{PYTHON, available};
use crate::util::{MAGIC, TestRecorder, nr, privileged, workload};

/// One line of `babeltrace2 --clock-cycles`: (cycles = monotonic ns, name, tid, pid, rest).
fn parse_line<'a>(line: &'a str, host: &str) -> (u64, &'a str, u32, u32, &'a str) {
    let (cycles, rest) = line[1..].split_once(']').expect("timestamp");
    let rest = rest
        .split_once(&format!(") {host} "))
        .map_or(rest, |(_, r)| r);
    let (name, rest) = rest.split_once(": ").expect("name");
    let ctx = rest.split_once("{ tid = ").expect("context").1;
    let (tid, ctx) = ctx.split_once(", pid = ").expect("pid");
    let (pid, payload) = ctx.split_once(" }").expect("context end");
    (
        cycles.parse().expect("cycles"),
        name,
        tid.parse().expect("tid"),
        pid.parse().expect("pid"),
        payload,
    )
}

/// The integer after `key = ` in a babeltrace2 payload.
fn field(payload: &str, key: &str) -> i64 {
    let v = payload
        .split_once(&format!("{key} = "))
        .unwrap_or_else(|| panic!("no {key} in {payload}"))
        .1;
    let end = v.find([',', ' ']).unwrap_or(v.len());
    v[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} in {payload}"))
}

#[test]
fn ctf_export_of_a_real_snapshot_matches_the_snapshot() {
    let test = "ctf_export_of_a_real_snapshot_matches_the_snapshot";
    let Some(_p) = privileged(test) else {
        return;
    };
    if !available(
        test,
        "babeltrace2",
        Command::new("babeltrace2").arg("--version"),
    ) {
        return;
    }
    let rec = TestRecorder::start("export-ctf", |_| {});
    let pid = workload(&["getpgid", "500"]);
    let snap = rec.snapshot_file("export-ctf");
    let out = rec.dir.join("ctf");
    let stats = export(&snap, Format::Ctf, &out).expect("export");

    let (m, events) = flightrec_reader::dump::open(&snap).expect("open snapshot");
    // Path records are arguments of the entry that follows, not events of their own.
    let events: Vec<Event> = events
        .map(|e| e.expect("decodable event"))
        .filter(|e| !matches!(e.data, EventData::SyscallPath(..)))
        .collect();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        *want.entry(e.name()).or_default() += 1;
    }

    let trace = out.join("kernel");
    let o = Command::new("babeltrace2")
        .arg("--clock-cycles")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).expect("utf-8 output");
    let lines: Vec<_> = text
        .lines()
        .map(|l| parse_line(l, &m.host.hostname))
        .collect();
    assert_eq!(lines.len() as u64, stats.events);
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for l in lines
        .iter()
        .filter(|l| !l.1.starts_with("lttng_statedump_"))
    {
        *got.entry(l.1.to_owned()).or_default() += 1;
    }
    assert_eq!(got, want, "babeltrace2's per-name counts");
    // One statedump event per open fd and per disk the manifest lists.
    let statedump = |name: &str| lines.iter().filter(|l| l.1 == name).count();
    let fds: usize = m.statedump.processes.iter().map(|p| p.fds.len()).sum();
    assert!(fds > 0, "the statedump lists no open fd");
    assert_eq!(statedump("lttng_statedump_file_descriptor"), fds);
    assert_eq!(
        statedump("lttng_statedump_block_device"),
        m.statedump.disks.len()
    );

    // The workload's getpgids: each MAGIC-tagged entry and its exit, at the snapshot's times.
    let calls: Vec<(bool, i64, u64)> = events
        .iter()
        .filter(|e| e.tid == pid)
        .filter_map(|e| match e.data {
            EventData::SyscallEntry(s) if s.id == nr::GETPGID => {
                Some((true, s.args[0] as i64, e.ts_ns))
            }
            EventData::SyscallExit(s) if s.id == nr::GETPGID => Some((false, s.ret, e.ts_ns)),
            _ => None,
        })
        .collect();
    let exported: Vec<(bool, i64, u64)> = lines
        .iter()
        .filter(|l| l.2 == pid)
        .filter_map(|l| match l.1 {
            "syscall_entry_getpgid" => {
                assert_eq!(l.3, pid);
                let arg0 = l.4.split_once("[0] = ").expect("args").1;
                let arg0 = &arg0[..arg0.find(',').expect("args")];
                Some((true, arg0.parse::<u64>().expect("arg0") as i64, l.0))
            }
            "syscall_exit_getpgid" => Some((false, field(l.4, "ret"), l.0)),
            _ => None,
        })
        .collect();
    assert_eq!(exported, calls);
    let tagged: Vec<i64> = exported
        .iter()
        .filter(|c| c.0 && c.1 as u64 >= MAGIC)
        .map(|c| c.1 - MAGIC as i64)
        .collect();
    assert_eq!(
        tagged,
        (0..500).collect::<Vec<i64>>(),
        "all 500 tagged calls in order"
    );
    // getpgid of a negative pid: no such process.
    assert!(
        exported
            .iter()
            .filter(|c| !c.0)
            .all(|c| c.1 == -i64::from(libc::ESRCH))
    );

    lttng_syscallstats_agrees(test, &trace, pid, &calls);
}

/// lttng-syscallstats on the export counts the workload's getpgids and their min/max latency as
/// the snapshot has them.
fn lttng_syscallstats_agrees(test: &str, trace: &Path, pid: u32, calls: &[(bool, i64, u64)]) {
    if !available(
        test,
        "lttng-analyses with python3-babeltrace",
        Command::new(PYTHON).args(["-c", "import lttnganalyses, babeltrace"]),
    ) {
        return;
    }
    let latencies: Vec<u64> = calls
        .windows(2)
        .filter(|w| w[0].0 && !w[1].0)
        .map(|w| w[1].2 - w[0].2)
        .collect();
    let o = Command::new(PYTHON)
        .args(["/usr/bin/lttng-syscallstats-mi", "--no-intersection"])
        .arg(trace)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("mi json");
    let title = format!("TID: {pid})");
    let table = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["class"]["title"]
                .as_str()
                .is_some_and(|t| t.contains(&title))
        })
        .unwrap_or_else(|| panic!("no table for tid {pid}: {v}"));
    let row = table["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0]["name"] == "getpgid")
        .expect("getpgid row");
    assert_eq!(row[1]["value"], latencies.len() as u64, "getpgid count");
    assert_eq!(row[2]["value"], *latencies.iter().min().unwrap(), "min");
    assert_eq!(row[4]["value"], *latencies.iter().max().unwrap(), "max");
}
