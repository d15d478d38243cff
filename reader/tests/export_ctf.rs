//! `flightrec export --format ctf` on synthetic snapshots, checked with independent readers:
//! babeltrace2 (its CLI and its Python bindings) and lttng-analyses (which reads through
//! babeltrace 1). Where a tool is missing the test says so and returns, except under `CI=true`.

#[path = "common/readers.rs"]
mod readers;
use readers::{PYTHON, available, entries};

#[path = "export_ctf/lttng.rs"]
mod lttng;

use std::path::{Path, PathBuf};
use std::process::Command;

use flightrec_reader::export::ctf::events::rwbs_flags_string;
use flightrec_reader::export::{ExportError, Format, export};
use flightrec_reader::synth::{SnapshotBuilder, Task, comm};
use schemas::event::{Event, EventData};
use schemas::{SchedWakeup, SyscallEntry, SyscallExit};
use serde_json::Value;

/// Monotonic time of the first planted event.
const T0: u64 = 5_000_000_000_000;
/// `CLOCK_REALTIME - CLOCK_MONOTONIC` of the synthetic host.
const REALTIME_OFFSET: i64 = 1_700_000_000_123_456_789 - 5_000_000_000_000;

const APP: Task = (100, 100, "app");
const DB: Task = (200, 200, "db");
const CHILD: Task = (300, 300, "app");
const IDLE0: Task = (0, 0, "swapper/0");
const IDLE1: Task = (0, 0, "swapper/1");

const GETPPID: u64 = 110;
const WRITE: u64 = 1;
const FSYNC: u64 = 74;
const MAGIC: u64 = 0xF11E_0000_0000;
/// sda: major 8, minor 0, in the kernel's `dev_t` encoding.
const SDA: u32 = 8 << 20;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("export-ctf-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every event kind on two CPUs, with durations chosen so each analysis has an exact answer.
fn planted() -> SnapshotBuilder {
    let mut b = SnapshotBuilder::new(2);
    b.manifest.clocks.realtime_minus_monotonic_ns = REALTIME_OFFSET;
    b.manifest.snapshot_id = "0123456789abcdef0123456789abcdef".into();
    b.manifest.host.hostname = "synthhost".into();
    b.manifest.host.kernel_release = "6.1.0-test".into();
    b.manifest.coverage.clear();
    b.process(100, 1, "app", ("/", 1), &[100, 101])
        .process(200, 1, "db", ("/", 1), &[200]);
    let t = |d: u64| T0 + d;
    // CPU 0: app runs two getppids (500 and 800 ns), a 10 us write, a block write, two irqs
    // and a softirq, wakes db onto CPU 1, forks, then sleeps.
    b.switch(t(0), 0, IDLE0, 0, APP)
        .syscall(0, APP, GETPPID, MAGIC, 1, t(1_000), t(1_500))
        .syscall(0, APP, GETPPID, MAGIC + 1, 1, t(2_000), t(2_800));
    b.event(Event {
        ts_ns: t(3_000),
        cpu: 0,
        pid: APP.0,
        tid: APP.1,
        data: EventData::SyscallEntry(SyscallEntry {
            id: WRITE,
            args: [3, 0x7fff_0000_1000, 4096, 0, 0, 0],
        }),
    });
    b.block(0, APP, SDA, 2048, 4096, 1, t(4_000), t(9_000));
    b.event(Event {
        ts_ns: t(13_000),
        cpu: 0,
        pid: APP.0,
        tid: APP.1,
        data: EventData::SyscallExit(SyscallExit {
            id: WRITE,
            ret: 4096,
        }),
    });
    b.irq(0, APP, 42, "eth0", t(20_000), t(23_000))
        .softirq(0, APP, 3, t(23_000), t(25_000))
        .irq(0, APP, 42, "eth0", t(30_000), t(31_000))
        .wakeup(t(40_000), 0, APP, DB, 1)
        .fork(t(50_000), 0, APP, CHILD);
    b.event(Event {
        ts_ns: t(50_500),
        cpu: 0,
        pid: APP.0,
        tid: APP.1,
        data: EventData::SchedWakeupNew(SchedWakeup {
            comm: comm("app"),
            tid: CHILD.1,
            pid: CHILD.0,
            prio: 120,
            target_cpu: 1,
        }),
    });
    b.switch(t(60_000), 0, APP, 1, IDLE0);
    // CPU 1: db runs after a 1 us wakeup latency, fsyncs for 10 us; the child execs and exits.
    b.switch(t(41_000), 1, IDLE1, 0, DB)
        .syscall(1, DB, FSYNC, 5, 0, t(42_000), t(52_000))
        .exec(t(55_000), 1, CHILD, "/usr/bin/true")
        .exit(t(56_000), 1, CHILD)
        .switch(t(70_000), 1, DB, 0, IDLE1);
    b
}

/// Writes `b` and exports it; returns (snapshot path, trace dir).
fn export_planted(name: &str, b: &SnapshotBuilder) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let snap = dir.join("snap.frs");
    b.write(&snap).unwrap();
    let out = dir.join("ctf");
    let stats = export(&snap, Format::Ctf, &out).unwrap();
    assert!(stats.events > 0);
    (snap, out)
}

/// Prints every event of a CTF trace as one JSON object per line, read with babeltrace2's
/// Python bindings: name, absolute time, cpu_id, context and payload.
const BT2_DUMP: &str = r#"
import bt2, json, sys

def py(f):
    if isinstance(f, bt2._StringFieldConst):
        return str(f)
    if isinstance(f, bt2._IntegerFieldConst):
        return int(f)
    if isinstance(f, (bt2._ArrayFieldConst,)):
        return [py(x) for x in f]
    if isinstance(f, bt2._StructureFieldConst):
        return {k: py(v) for k, v in f.items()}
    raise TypeError(type(f))

for msg in bt2.TraceCollectionMessageIterator(sys.argv[1]):
    if type(msg) is not bt2._EventMessageConst:
        continue
    ev = msg.event
    print(json.dumps({
        "name": ev.name,
        "ns_from_origin": msg.default_clock_snapshot.ns_from_origin,
        "cycles": msg.default_clock_snapshot.value,
        "cpu_id": int(ev.packet.context_field["cpu_id"]),
        "context": py(ev.common_context_field),
        "fields": py(ev.payload_field),
    }))
"#;

fn bt2_events(trace: &Path) -> Vec<Value> {
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(BT2_DUMP)
        .arg(trace)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bt2 reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn bt2_available(test: &str) -> bool {
    available(
        test,
        "babeltrace2 with python3-bt2",
        Command::new(PYTHON).args(["-c", "import bt2"]),
    ) && available(
        test,
        "babeltrace2",
        Command::new("babeltrace2").arg("--version"),
    )
}

/// The snapshot's events as `flightrec dump --json` gives them, in time order.
fn dump_json(snap: &Path) -> Vec<Value> {
    let (_m, events) = flightrec_reader::dump::open(snap).unwrap();
    events.map(|e| e.unwrap().to_json()).collect()
}

fn is_statedump(name: &str) -> bool {
    name.starts_with("lttng_statedump_")
}

/// Sorts events by (time, cpu), keeping each CPU's order for equal times: the order both the
/// snapshot merge and babeltrace's stream muxing agree on.
fn by_time_and_cpu(mut v: Vec<Value>, ts: &str, cpu: &str) -> Vec<Value> {
    v.sort_by_key(|e| (e[ts].as_u64().unwrap(), e[cpu].as_u64().unwrap()));
    v
}

#[test]
fn babeltrace2_reads_every_event_with_dumps_values() {
    let test = "babeltrace2_reads_every_event_with_dumps_values";
    if !bt2_available(test) {
        return;
    }
    let (snap, out) = export_planted("values", &planted());
    let want = dump_json(&snap);
    let got = bt2_events(&out);

    // Exactly the snapshot's events plus the statedump (start, 3 threads, end).
    assert_eq!(want.len(), 25);
    assert_eq!(got.len(), want.len() + 5);
    let names: Vec<&str> = got[..5]
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "lttng_statedump_start",
            "lttng_statedump_process_state",
            "lttng_statedump_process_state",
            "lttng_statedump_process_state",
            "lttng_statedump_end"
        ]
    );
    let threads: Vec<(u64, u64, u64, &str)> = got[1..4]
        .iter()
        .map(|e| {
            let f = &e["fields"];
            (
                f["tid"].as_u64().unwrap(),
                f["pid"].as_u64().unwrap(),
                f["ppid"].as_u64().unwrap(),
                f["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        threads,
        [
            (100, 100, 1, "app"),
            (101, 100, 1, "app"),
            (200, 200, 1, "db")
        ]
    );
    assert!(
        got[..5]
            .iter()
            .all(|e| e["cycles"] == T0 && e["cpu_id"] == 0)
    );

    let got = by_time_and_cpu(
        got.into_iter()
            .filter(|e| !is_statedump(e["name"].as_str().unwrap()))
            .collect(),
        "cycles",
        "cpu_id",
    );
    let want = by_time_and_cpu(want, "ts_ns", "cpu");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let at = format!("event #{i}: babeltrace2 {g} vs dump {w}");
        assert_eq!(g["name"], w["name"], "{at}");
        assert_eq!(g["cycles"], w["ts_ns"], "{at}");
        // Realtime-anchored clock: absolute time = monotonic + the manifest's offset.
        assert_eq!(
            g["ns_from_origin"].as_i64().unwrap(),
            w["ts_ns"].as_i64().unwrap() + REALTIME_OFFSET,
            "{at}"
        );
        assert_eq!(g["cpu_id"], w["cpu"], "{at}");
        assert_eq!(g["context"]["tid"], w["tid"], "{at}");
        assert_eq!(g["context"]["pid"], w["pid"], "{at}");
        let (gf, wf) = (
            g["fields"].as_object().unwrap(),
            w["fields"].as_object().unwrap(),
        );
        for (k, v) in wf {
            if k == "rwbs" {
                let bits = gf[k].as_u64().unwrap() as u32;
                assert_eq!(rwbs_flags_string(bits), v.as_str().unwrap(), "{at}");
            } else {
                assert_eq!(&gf[k], v, "{at}: field {k}");
            }
        }
        // Only entries of the I/O syscalls lttng-analyses reads carry more fields.
        let extra: Vec<&str> = gf
            .keys()
            .filter(|k| !wf.contains_key(*k))
            .map(String::as_str)
            .collect();
        match g["name"].as_str().unwrap() {
            "syscall_entry_write" => {
                assert_eq!(extra, ["fd", "buf", "count"], "{at}");
                assert_eq!(
                    (gf["fd"].as_u64(), gf["count"].as_u64()),
                    (Some(3), Some(4096))
                );
                assert_eq!(gf["buf"], 0x7fff_0000_1000u64);
            }
            "syscall_entry_fsync" => {
                assert_eq!(extra, ["fd"], "{at}");
                assert_eq!(gf["fd"], 5);
            }
            _ => assert!(extra.is_empty(), "{at}: extra fields {extra:?}"),
        }
    }
    // A few values straight from the plant, not only through dump.
    let first = &got[1];
    assert_eq!(first["name"], "syscall_entry_getppid");
    assert_eq!(first["fields"]["args"][0], MAGIC);
    assert_eq!(first["ns_from_origin"], 1_700_000_000_123_457_789u64);
    let rq = got.iter().find(|e| e["name"] == "block_rq_issue").unwrap();
    assert_eq!(rq["fields"]["dev"], SDA);
    assert_eq!(rq["fields"]["rwbs"], 1, "a write is odd for lttng-analyses");
    let exec = got
        .iter()
        .find(|e| e["name"] == "sched_process_exec")
        .unwrap();
    assert_eq!(exec["fields"]["filename"], "/usr/bin/true");
    assert_eq!(exec["cpu_id"], 1);
}

/// (time as printed, name, cpu) of each line of `babeltrace2 --clock-seconds` (or babeltrace 1
/// with `--clock-seconds`): `[S.NNNNNNNNN] (+delta) host name: { cpu_id = N }, ...`.
fn cli_lines(stdout: &[u8]) -> Vec<(String, String, u64)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let (time, rest) = l[1..].split_once(']').unwrap();
            let rest = rest.split_once(") synthhost ").unwrap().1;
            let (name, rest) = rest.split_once(": { cpu_id = ").unwrap();
            let cpu = rest.split_once(' ').unwrap().0.parse().unwrap();
            (time.to_owned(), name.to_owned(), cpu)
        })
        .collect()
}

#[test]
fn babeltrace_clis_print_every_event_at_its_wall_clock_time() {
    let test = "babeltrace_clis_print_every_event_at_its_wall_clock_time";
    if !bt2_available(test)
        || !available(
            test,
            "babeltrace (1)",
            Command::new("babeltrace").arg("--help"),
        )
    {
        return;
    }
    let (snap, out) = export_planted("cli", &planted());
    let trace = out.join("kernel");
    let want = by_time_and_cpu(dump_json(&snap), "ts_ns", "cpu");
    for cli in ["babeltrace2", "babeltrace"] {
        let o = Command::new(cli)
            .arg("--clock-seconds")
            .arg(&trace)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cli}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let lines = cli_lines(&o.stdout);
        assert_eq!(lines.len(), want.len() + 5, "{cli}");
        assert_eq!(lines[0].0, "1700000000.123456789", "{cli}");
        let events: Vec<_> = lines.iter().filter(|l| !is_statedump(&l.1)).collect();
        let mut events = events.clone();
        events.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
        for (l, w) in events.iter().zip(&want) {
            let real = w["ts_ns"].as_i64().unwrap() + REALTIME_OFFSET;
            let time = format!("{}.{:09}", real / 1_000_000_000, real % 1_000_000_000);
            assert_eq!(
                (&l.0, l.1.as_str(), l.2),
                (
                    &time,
                    w["name"].as_str().unwrap(),
                    w["cpu"].as_u64().unwrap()
                ),
                "{cli}"
            );
        }
    }
}

#[test]
fn layout_metadata_and_packet_headers() {
    let (_snap, out) = export_planted("layout", &planted());
    let dir = out.join("kernel");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["channel0_0", "channel0_1", "metadata"]);
    let meta = std::fs::read_to_string(dir.join("metadata")).unwrap();
    assert!(meta.starts_with("/* CTF 1.8 */\n"));
    for want in [
        "uuid = \"01234567-89ab-cdef-0123-456789abcdef\";",
        "domain = \"kernel\";",
        "tracer_name = \"lttng-modules\";",
        "tracer_major = 2;",
        "tracer_minor = 13;",
        "tracer_patchlevel = 0;",
        "hostname = \"synthhost\";",
        "offset_s = 1699995000;",
        "offset = 123456789;",
        "freq = 1000000000;",
    ] {
        assert!(meta.contains(want), "metadata lacks {want}:\n{meta}");
    }
    // One class per syscall name that occurs, and none for those that do not.
    assert!(meta.contains("name = \"syscall_entry_getppid\";"));
    assert!(!meta.contains("syscall_entry_read\""));
    let uuid = flightrec_reader::export::ctf::tsdl::parse_uuid("0123456789abcdef0123456789abcdef")
        .unwrap();
    for (cpu, f) in ["channel0_0", "channel0_1"].iter().enumerate() {
        let b = std::fs::read(dir.join(f)).unwrap();
        assert_eq!(&b[0..4], &0xC1FC_1FC1u32.to_le_bytes());
        assert_eq!(&b[4..20], &uuid, "packet uuid is the trace uuid");
        assert_eq!(
            u64::from_le_bytes(b[24..32].try_into().unwrap()),
            cpu as u64
        );
        assert_eq!(
            u32::from_le_bytes(b[80..84].try_into().unwrap()),
            cpu as u32,
            "cpu_id"
        );
    }
}

#[test]
fn existing_output_is_refused_and_left_alone() {
    let dir = scratch("exists");
    let snap = dir.join("snap.frs");
    planted().write(&snap).unwrap();
    let out = dir.join("ctf");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), b"mine").unwrap();
    let err = export(&snap, Format::Ctf, &out).unwrap_err();
    assert!(
        matches!(err, ExportError::OutputExists(ref p) if p == &out),
        "{err}"
    );
    // The exporter's own entry refuses too, not only the dispatcher.
    let err = flightrec_reader::export::ctf::write(&snap, &out).unwrap_err();
    assert!(matches!(err, ExportError::OutputExists(_)), "{err}");
    assert_eq!(std::fs::read(out.join("keep")).unwrap(), b"mine");
}

#[test]
fn broken_snapshot_fails_without_leaving_output() {
    let dir = scratch("broken");
    let snap = dir.join("snap.frs");
    planted().write(&snap).unwrap();
    // Damage the last CPU's compressed records: the index still reads, so the export starts
    // and has written CPU 0's stream when it meets the damage.
    let mut bytes = std::fs::read(&snap).unwrap();
    let at = bytes.len() - 24 - 8;
    bytes[at] ^= 0xff;
    bytes[at - 5] ^= 0xff;
    std::fs::write(&snap, &bytes).unwrap();
    let out = dir.join("ctf");
    let err = export(&snap, Format::Ctf, &out).unwrap_err();
    assert!(matches!(err, ExportError::Snapshot(_)), "{err}");
    assert_eq!(entries(&dir), ["snap.frs"], "nothing but the input is left");

    // Not a snapshot at all.
    std::fs::write(&snap, b"not a snapshot").unwrap();
    let err = export(&snap, Format::Ctf, &out).unwrap_err();
    assert!(matches!(err, ExportError::Snapshot(_)), "{err}");
    assert_eq!(entries(&dir), ["snap.frs"]);
}

/// A packet's context fields: (begin, end, content bits, packet bits, seq, discarded, cpu).
fn packets(stream: &[u8]) -> Vec<(u64, u64, u64, u64, u64, u64, u32)> {
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let p = &stream[at..];
        let ctx = (
            u64_at(p, 32),
            u64_at(p, 40),
            u64_at(p, 48),
            u64_at(p, 56),
            u64_at(p, 64),
            u64_at(p, 72),
            u32::from_le_bytes(p[80..84].try_into().unwrap()),
        );
        out.push(ctx);
        at += (ctx.3 / 8) as usize;
    }
    out
}

#[test]
fn big_streams_are_cut_into_bounded_packets_that_carry_lost_counts() {
    use schemas::file::SnapshotWriter;
    use schemas::manifest::CpuCoverage;
    let n = 20_000u64;
    let mut b = SnapshotBuilder::new(1);
    b.switch(T0, 0, IDLE0, 0, APP);
    for i in 0..n {
        b.syscall(
            0,
            APP,
            GETPPID,
            MAGIC + i,
            1,
            T0 + 10 + 4 * i,
            T0 + 12 + 4 * i,
        );
    }
    // Written by hand so the coverage can say records were lost and overwritten.
    let mut m = b.manifest.clone();
    let recs = b.records().remove(0).1;
    m.coverage = vec![CpuCoverage {
        cpu: 0,
        oldest_ts_ns: Some(T0),
        newest_ts_ns: recs.last().map(|r| r.ts_ns),
        records_kept: recs.len() as u64,
        records_overwritten: 1000,
        records_lost: 7,
        ..Default::default()
    }];
    m.frozen_monotonic_ns = T0 + 10 * n;
    let dir = scratch("big");
    let snap = dir.join("snap.frs");
    let f = std::io::BufWriter::new(std::fs::File::create(&snap).unwrap());
    let mut w = SnapshotWriter::new(f, &m, 1).unwrap();
    w.write_stream(0, &recs).unwrap();
    std::io::Write::flush(&mut w.finish().unwrap()).unwrap();

    let out = dir.join("ctf");
    let stats = export(&snap, Format::Ctf, &out).unwrap();
    assert_eq!(
        stats.events,
        2 * n + 1 + 2,
        "records + statedump start and end"
    );
    let stream = std::fs::read(out.join("kernel/channel0_0")).unwrap();
    let ps = packets(&stream);
    assert!(ps.len() > 4, "{} packets", ps.len());
    let max = flightrec_reader::export::ctf::stream::MAX_PACKET as u64 * 8;
    for (i, p) in ps.iter().enumerate() {
        assert_eq!(p.4, i as u64, "packet_seq_num");
        assert!(
            p.2 <= p.3 && p.2 <= max && p.3 % (4096 * 8) == 0,
            "sizes {p:?}"
        );
        assert!(p.0 <= p.1, "{p:?}");
        assert_eq!((p.5, p.6), (7, 0), "events_discarded and cpu_id");
        if i > 0 {
            assert!(ps[i - 1].1 <= p.0, "packets overlap: {:?} {p:?}", ps[i - 1]);
        }
    }
    assert_eq!(ps[0].0, T0);
    assert_eq!(ps.last().unwrap().1, T0 + 12 + 4 * (n - 1));
    let meta = std::fs::read_to_string(out.join("kernel/metadata")).unwrap();
    assert!(meta.contains("flightrec_records_overwritten = 1000;"));

    if !bt2_available("big_streams_are_cut_into_bounded_packets_that_carry_lost_counts") {
        return;
    }
    let o = Command::new("babeltrace2")
        .arg(out.join("kernel"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let lines = String::from_utf8_lossy(&o.stdout).lines().count() as u64;
    assert_eq!(lines, stats.events);
    // The lost records are reported, once.
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("discarded").count(), 1, "{err}");
}

/// The fd and disk statedump, and the kernel's path of an `openat`, as babeltrace2 reads them:
/// `lttng_statedump_file_descriptor` per open fd (`filename` as LTTng writes it),
/// `lttng_statedump_block_device` per disk, and `syscall_entry_openat`'s `filename` as the
/// path string; an entry with no path record keeps the pointer as text.
#[test]
fn babeltrace2_reads_fds_disks_and_openat_filenames() {
    if !bt2_available("babeltrace2_reads_fds_disks_and_openat_filenames") {
        return;
    }
    let mut b = SnapshotBuilder::new(1);
    b.manifest.snapshot_id = "00112233445566778899aabbccddeeff".into();
    b.process(100, 1, "app", ("/", 1), &[100]);
    b.manifest.statedump.processes[0].fds = vec![
        schemas::manifest::FdInfo {
            fd: 3,
            target: "/var/lib/db/wal".into(),
            socket: None,
        },
        schemas::manifest::FdInfo {
            fd: 4,
            target: "socket:[77]".into(),
            socket: Some("tcp 127.0.0.1:40312->127.0.0.1:5432".into()),
        },
    ];
    b.manifest
        .statedump
        .disks
        .push(schemas::manifest::DiskInfo {
            dev: SDA,
            name: "sda".into(),
        });
    let openat = schemas::event::syscall_id("openat").unwrap();
    let entry = |ts: u64, ptr: u64| Event {
        ts_ns: ts,
        cpu: 0,
        pid: APP.0,
        tid: APP.1,
        data: EventData::SyscallEntry(SyscallEntry {
            id: openat,
            args: [-100i64 as u64, ptr, 0, 0, 0, 0],
        }),
    };
    let exit = |ts: u64, ret: i64| Event {
        ts_ns: ts,
        cpu: 0,
        pid: APP.0,
        tid: APP.1,
        data: EventData::SyscallExit(SyscallExit { id: openat, ret }),
    };
    b.path(T0, 0, APP, openat, "/etc/hosts");
    b.event(entry(T0, 0x7fff_0000_1000));
    b.event(exit(T0 + 1000, 5));
    b.event(entry(T0 + 2000, 0x7fff_0000_2000));
    b.event(exit(T0 + 3000, 6));
    let (_snap, out) = export_planted("fds-disks-filenames", &b);
    let evs = bt2_events(&out);
    let named = |name: &str| -> Vec<&Value> { evs.iter().filter(|e| e["name"] == name).collect() };
    let fds: Vec<(i64, i64, &str)> = named("lttng_statedump_file_descriptor")
        .iter()
        .map(|e| {
            let f = &e["fields"];
            (
                f["pid"].as_i64().unwrap(),
                f["fd"].as_i64().unwrap(),
                f["filename"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(fds, [(100, 3, "/var/lib/db/wal"), (100, 4, "socket:[77]")]);
    let disks: Vec<(u64, &str)> = named("lttng_statedump_block_device")
        .iter()
        .map(|e| {
            (
                e["fields"]["dev"].as_u64().unwrap(),
                e["fields"]["diskname"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(disks, [(u64::from(SDA), "sda")]);
    let files: Vec<&str> = named("syscall_entry_openat")
        .iter()
        .map(|e| e["fields"]["filename"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["/etc/hosts", "0x7fff00002000"]);
    // No event of its own for the path record.
    assert!(!evs.iter().any(|e| e["name"] == "syscall_path"));
}
