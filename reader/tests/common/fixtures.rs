//! Synthetic snapshots shared by the analysis tests (`reader/tests/analyze.rs`) and the CLI
//! tests of the `flightrec` binary (`recorder/tests/cli.rs`), which include this file by path.

use flightrec_reader::synth::SnapshotBuilder;
use schemas::event::{Event, EventData};
use schemas::{SyscallEntry, SyscallExit};

/// One second, in ns.
pub const B: u64 = 1_000_000_000;
/// One millisecond, in ns.
pub const MS: u64 = 1_000_000;
/// One microsecond, in ns.
pub const US: u64 = 1_000;

/// Process "app" (pid 100): four reads of 1, 2, 3 and 4 µs (one fails) and a 900 ms
/// fdatasync; "db" (pid 200, threads 200 and 201): a 500 ns write on each thread, then 201
/// enters poll and never leaves; tid 300 exits a syscall whose entry is not recorded.
pub fn syscall_snapshot() -> SnapshotBuilder {
    let mut b = SnapshotBuilder::new(2);
    b.process(100, 1, "app", ("/app", 5), &[100]);
    b.process(200, 1, "db", ("/db", 6), &[200, 201]);
    let app = (100, 100, "app");
    let mut t = B;
    for (i, d) in [1, 2, 3, 4].iter().enumerate() {
        let ret = if i == 2 { -11 } else { 64 };
        b.syscall(0, app, 0, 3, ret, t, t + d * US);
        t += 10 * US;
    }
    b.syscall(0, app, 75, 3, 0, B + MS, B + 901 * MS);
    b.syscall(1, (200, 200, "db"), 1, 4, 10, B + 2 * MS, B + 2 * MS + 500);
    b.syscall(1, (200, 201, "db"), 1, 5, 10, B + 3 * MS, B + 3 * MS + 500);
    b.event(Event {
        ts_ns: B + 5 * MS,
        cpu: 1,
        pid: 200,
        tid: 201,
        data: EventData::SyscallEntry(SyscallEntry {
            id: 7,
            args: [9, 0, 0, 0, 0, 0],
        }),
    });
    b.event(Event {
        ts_ns: B + 6 * MS,
        cpu: 1,
        pid: 300,
        tid: 300,
        data: EventData::SyscallExit(SyscallExit { id: 0, ret: 0 }),
    });
    b
}

/// Every kind of event the recorder writes, on two CPUs: the content of the committed
/// format-1 file `reader/tests/fixtures/v1-all-kinds.frs`, which was written from it by the
/// format-1 writer.
pub fn all_kinds_snapshot() -> SnapshotBuilder {
    let mut b = syscall_snapshot();
    b.process(400, 1, "web", ("/web", 7), &[400, 401]);
    let web = (400, 400, "web");
    let worker = (400, 401, "web");
    let t = 2 * B;
    b.path(t, 0, web, 257, "/etc/hosts");
    b.syscall(0, web, 257, 0xffff_ff9c, 3, t, t + 3 * US);
    b.switch(t + 10 * US, 0, web, 1, worker);
    b.wakeup(t + 20 * US, 1, worker, web, 0);
    b.fork(t + 30 * US, 1, worker, (402, 402, "web"));
    b.exec(t + 40 * US, 1, (402, 402, "web"), "/usr/bin/true");
    b.exit(t + 50 * US, 1, (402, 402, "true"));
    b.block(
        0,
        web,
        (8 << 20) | 16,
        2048,
        4096,
        1,
        t + 60 * US,
        t + 900 * US,
    );
    b.irq(1, worker, 24, "virtio0-input.0", t + 70 * US, t + 72 * US);
    b.softirq(1, worker, 3, t + 73 * US, t + 80 * US);
    b
}
