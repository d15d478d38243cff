//! `flightrec export --format ctf` on synthetic snapshots, checked with independent readers:
//! babeltrace2 (its CLI and its Python bindings) and lttng-analyses (which reads through
//! babeltrace 1). Where a tool is missing the test says so and returns, except under `CI=true`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use flightrec::export::ctf::events::rwbs_flags_string;
use flightrec::export::{ExportError, Format, export};
use flightrec::synth::{SnapshotBuilder, Task, comm};
use schemas::event::{Event, EventData};
use schemas::{SchedWakeup, SyscallEntry, SyscallExit, rwbs};
use serde_json::Value;

/// Debian's Python, which sees the distribution's `bt2` and `babeltrace` bindings.
const PYTHON: &str = "/usr/bin/python3";

/// Monotonic time of the first planted event.
const T0: u64 = 5_000_000_000_000;
/// `CLOCK_REALTIME - CLOCK_MONOTONIC` of the synthetic host.
const REALTIME_OFFSET: i64 = 1_700_000_000_123_456_789 - 5_000_000_000_000;

const APP: Task = (100, 100, "app");
const WORKER: Task = (100, 101, "app-worker");
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

/// Returns false (after saying why) when `what` cannot run here; panics under `CI=true`.
fn available(test: &str, what: &str, probe: &mut Command) -> bool {
    let ok = probe.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: {what} is missing under CI=true");
        }
        println!("skipped {test}: {what} is not installed");
    }
    ok
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

#[test]
fn scratch_print() {
    let (_snap, out) = export_planted("scratch", &planted());
    let o = Command::new("babeltrace2")
        .arg(out.join("kernel"))
        .output()
        .unwrap();
    println!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for e in bt2_events(&out) {
        println!("{e}");
    }
    let _ = (rwbs_flags_string(0), rwbs::SYNC, BTreeMap::<u8, u8>::new());
    let _: Option<ExportError> = None;
}
