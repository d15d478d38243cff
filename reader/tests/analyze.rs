//! Table-driven tests of `flightrec analyze`: small synthetic snapshots whose expected results
//! were worked out by hand (see the comment above each).

#[path = "common/fixtures.rs"]
#[allow(dead_code, reason = "each test crate uses some of the shared fixtures")]
mod fixtures;

use std::path::PathBuf;

use fixtures::{B, MS, US, syscall_snapshot};
use flightrec_reader::analyze::{Filter, FindingKind, Options, Report, Section, TimeSpec, analyze};
use flightrec_reader::synth::SnapshotBuilder;
use schemas::BlockRq;
use schemas::event::{Event, EventData};

fn write(name: &str, b: &SnapshotBuilder) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("analyze");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.frs"));
    b.write(&path).unwrap();
    path
}

fn run(name: &str, b: &SnapshotBuilder, opts: &Options) -> Report {
    analyze(&write(name, b), opts).unwrap()
}

fn ok<T>(s: &Section<T>) -> &T {
    match s {
        Section::Ok(t) => t,
        Section::NotRecorded { reason } => panic!("section not computed: {reason}"),
    }
}

#[test]
fn syscall_latency_per_syscall_process_and_call() {
    let r = run("syscalls", &syscall_snapshot(), &Options::default());
    assert_eq!(r.window.begin_ns, B);
    assert_eq!(r.window.end_ns, B + 901 * MS);
    let s = ok(&r.syscalls);
    assert_eq!((s.calls, s.errors, s.unmatched_exits), (7, 1, 1));
    let names: Vec<&str> = s.by_syscall.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["fdatasync", "read", "write"]);
    let read = &s.by_syscall[1];
    assert_eq!(read.errors, 1);
    let l = &read.latency;
    assert_eq!(
        (
            l.count, l.min_ns, l.avg_ns, l.p50_ns, l.p99_ns, l.max_ns, l.total_ns
        ),
        (4, 1000, 2500, 2000, 4000, 4000, 10_000)
    );
    assert_eq!(s.by_syscall[2].latency.count, 2);
    // The slowest call is the fdatasync, with who made it.
    let slow = &s.slowest[0];
    assert_eq!(
        (
            slow.syscall.as_str(),
            slow.tid,
            slow.pid,
            slow.comm.as_str(),
            slow.duration_ns,
            slow.ret
        ),
        ("fdatasync", 100, 100, "app", 900 * MS, 0)
    );
    assert_eq!(s.slowest.len(), 7);
    assert_eq!(s.slowest[1].duration_ns, 4000);
    // Per process: app first, with its five calls and one error.
    let p = &s.by_process[0];
    assert_eq!(
        (p.pid, p.comm.as_str(), p.count, p.errors),
        (100, "app", 5, 1)
    );
    assert_eq!(p.cgroup.as_deref(), Some("/app"));
    assert_eq!(s.by_process[1].count, 2);
    // poll is still in flight at the end of the window.
    assert_eq!(s.in_flight.len(), 1);
    let f = &s.in_flight[0];
    assert_eq!((f.tid, f.syscall.as_str(), f.arg0), (201, "poll", 9));
    assert_eq!(f.elapsed_ns, 896 * MS);
    // Histogram: 0.5 µs ×2 and 1 µs in 0–1, 2 and 3 µs in 2–3, 4 µs in 4–7, 900 ms last.
    let h: Vec<(u64, u64)> = s
        .histogram
        .buckets
        .iter()
        .map(|b| (b.low, b.count))
        .collect();
    assert_eq!(h[0], (0, 3));
    assert_eq!(h[1], (2, 2));
    assert_eq!(h[2], (4, 1));
    assert_eq!(*h.last().unwrap(), (524_288, 1));
    assert_eq!(h.iter().map(|x| x.1).sum::<u64>(), 7);
}

#[test]
fn filters_select_tasks() {
    let b = syscall_snapshot();
    let by = |filter: Filter| {
        let opts = Options {
            filter,
            ..Options::default()
        };
        ok(&run("syscalls-filter", &b, &opts).syscalls).calls
    };
    let f = |pids: &[u32], tids: &[u32], comms: &[&str], cgroups: &[&str]| Filter {
        pids: pids.to_vec(),
        tids: tids.to_vec(),
        comms: comms.iter().map(|s| s.to_string()).collect(),
        cgroups: cgroups.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(by(f(&[200], &[], &[], &[])), 2);
    assert_eq!(by(f(&[], &[201], &[], &[])), 1);
    assert_eq!(by(f(&[], &[], &["app"], &[])), 5);
    assert_eq!(by(f(&[], &[], &[], &["/db"])), 2);
    assert_eq!(by(f(&[], &[], &[], &["/"])), 7);
    // Kinds combine with AND.
    assert_eq!(by(f(&[100], &[], &["db"], &[])), 0);
}

#[test]
fn a_filter_that_matches_no_task_is_warned_about() {
    let b = syscall_snapshot();
    let run_with = |pids: &[u32], comms: &[&str]| {
        let opts = Options {
            filter: Filter {
                pids: pids.to_vec(),
                comms: comms.iter().map(|s| s.to_string()).collect(),
                ..Filter::default()
            },
            ..Options::default()
        };
        run("filter-warnings", &b, &opts)
    };
    assert!(run_with(&[100], &["app", "db"]).warnings.is_empty());
    let r = run_with(&[4242], &["ap", "db"]);
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    assert!(r.warnings[0].contains("--comm \"ap\""), "{:?}", r.warnings);
    assert!(r.warnings[1].contains("--pid 4242"), "{:?}", r.warnings);
    let mut text = Vec::new();
    flightrec_reader::analyze::render(&r, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.contains("warning  --comm \"ap\" matches no thread"),
        "{text}"
    );
}

#[test]
fn window_bounds_restrict_events() {
    let b = syscall_snapshot();
    let opts = Options {
        begin: Some(TimeSpec::FromStart(2 * MS)),
        end: Some(TimeSpec::Absolute(B + 4 * MS)),
        ..Options::default()
    };
    let r = run("syscalls-window", &b, &opts);
    assert_eq!(
        (r.window.begin_ns, r.window.end_ns),
        (B + 2 * MS, B + 4 * MS)
    );
    let s = ok(&r.syscalls);
    // Only the two writes lie inside; the fdatasync started before the window.
    assert_eq!(s.calls, 2);
    assert_eq!(s.by_syscall[0].name, "write");
    let opts = Options {
        begin: Some(TimeSpec::Absolute(B + 5 * MS)),
        end: Some(TimeSpec::Absolute(B + 4 * MS)),
        ..Options::default()
    };
    let err = analyze(&write("syscalls-empty", &b), &opts).unwrap_err();
    assert!(err.to_string().contains("window is empty"), "{err}");
}

/// CPU 0: swapper → A (pid 100) at 0, A blocks for B (pid 200) at 3 ms, B blocks to idle at
/// 5 ms, A back at 10 ms (the window's end). CPU 1 never switches: its only task, tid 300,
/// runs from its first event at 1 ms to the end.
#[test]
fn cpu_time_per_thread_cpu_and_timeline() {
    let mut b = SnapshotBuilder::new(2);
    let (idle, a, bb, c) = (
        (0, 0, "swapper/0"),
        (100, 100, "a"),
        (200, 200, "b"),
        (300, 300, "c"),
    );
    b.switch(B, 0, idle, 0, a);
    b.switch(B + 3 * MS, 0, a, 1, bb);
    b.switch(B + 5 * MS, 0, bb, 1, idle);
    b.switch(B + 10 * MS, 0, idle, 0, a);
    b.syscall(1, c, 39, 0, 300, B + MS, B + 2 * MS);
    let r = run("cpu", &b, &Options::default());
    let cpu = ok(&r.cpu);
    let c0 = &cpu.per_cpu[0];
    assert_eq!(
        (c0.covered_ns, c0.busy_ns, c0.usage_pct, c0.switches),
        (10 * MS, 5 * MS, 50.0, 4)
    );
    assert_eq!(
        (c0.top[0].tid, c0.top[0].on_cpu_ns, c0.top[0].pct),
        (100, 3 * MS, 30.0)
    );
    assert_eq!((c0.top[1].tid, c0.top[1].on_cpu_ns), (200, 2 * MS));
    let c1 = &cpu.per_cpu[1];
    assert_eq!(
        (c1.covered_ns, c1.busy_ns, c1.usage_pct),
        (9 * MS, 9 * MS, 100.0)
    );
    // Timeline: 100 slices of 100 µs.
    assert_eq!(c0.timeline.len(), 100);
    assert_eq!(
        (c0.timeline[0].tid, c0.timeline[0].busy_pct),
        (Some(100), 100.0)
    );
    assert_eq!(c0.timeline[30].tid, Some(200));
    assert_eq!((c0.timeline[60].tid, c0.timeline[60].busy_pct), (None, 0.0));
    assert_eq!(c0.timeline[99].end_ns, B + 10 * MS);
    let t = cpu.by_thread.iter().find(|t| t.time.tid == 100).unwrap();
    assert_eq!(
        (t.time.on_cpu_ns, t.switches_in, t.blocked, t.preempted),
        (3 * MS, 2, 1, 0)
    );
    assert_eq!(t.time.pct, 30.0);
    assert_eq!(cpu.by_process[0].time.pid, 300);
    assert_eq!(cpu.by_process[0].time.on_cpu_ns, 9 * MS);
}

/// One CPU. The sleeper V (pid 10, cgroup /b) is woken at 1 ms while hog H1 (/a) runs; H1 is
/// preempted by kworker K (system) at 3 ms, K blocks for S (pid 11, /b) at 4 ms, S is
/// preempted by V at 4.5 ms: V waited 3.5 ms, charged 2 ms to H1, 1 ms to K and 0.5 ms to S.
/// A wakeup of V while it runs (6 ms) is ignored. H2 (/a) preempts V at 7 ms; V is woken at
/// 8 ms (and again at 8.2 ms, ignored) and preempts H2 at 10 ms: 2 ms more, charged to H2.
fn sched_snapshot() -> SnapshotBuilder {
    let mut b = SnapshotBuilder::new(1);
    b.process(10, 1, "sleeper", ("/b", 2), &[10]);
    b.process(11, 1, "buddy", ("/b", 2), &[11]);
    b.process(20, 1, "hog", ("/a", 3), &[20]);
    b.process(21, 1, "hog", ("/a", 3), &[21]);
    b.process(30, 2, "kworker/0:1", ("/", 1), &[30]);
    let (idle, v, s) = ((0, 0, "swapper/0"), (10, 10, "sleeper"), (11, 11, "buddy"));
    let (h1, h2, k) = ((20, 20, "hog"), (21, 21, "hog"), (30, 30, "kworker/0:1"));
    b.switch(B, 0, idle, 0, h1);
    b.wakeup(B + MS, 0, h1, v, 0);
    b.switch(B + 3 * MS, 0, h1, 0, k);
    b.switch(B + 4 * MS, 0, k, 1, s);
    b.switch(B + 4 * MS + 500 * US, 0, s, 0, v);
    b.wakeup(B + 6 * MS, 0, v, v, 0);
    b.switch(B + 7 * MS, 0, v, 0, h2);
    b.wakeup(B + 8 * MS, 0, h2, v, 0);
    b.wakeup(B + 8 * MS + 200 * US, 0, h2, v, 0);
    b.switch(B + 10 * MS, 0, h2, 0, v);
    b
}

#[test]
fn wakeup_latency_and_noisy_neighbour_attribution() {
    let r = run("sched", &sched_snapshot(), &Options::default());
    let s = ok(&r.sched);
    let l = &s.latency;
    assert_eq!(
        (
            l.count, l.min_ns, l.avg_ns, l.p50_ns, l.p99_ns, l.max_ns, l.total_ns
        ),
        (
            2,
            2 * MS,
            2_750_000,
            2 * MS,
            3_500_000,
            3_500_000,
            5_500_000
        )
    );
    // 2 ms → bucket 1024–2047 µs... 2000 µs; 3.5 ms → 2048–4095 µs.
    let h: Vec<(u64, u64)> = s
        .histogram
        .buckets
        .iter()
        .map(|b| (b.low, b.count))
        .collect();
    assert_eq!(h, vec![(1024, 1), (2048, 1)]);
    assert_eq!(
        (
            s.delay_ns.same_cgroup,
            s.delay_ns.other_cgroup,
            s.delay_ns.system,
            s.delay_ns.unknown
        ),
        (500 * US, 4 * MS, MS, 0)
    );
    let p = &s.preemptions;
    assert_eq!(
        (p.same_cgroup, p.other_cgroup, p.system, p.unknown),
        (1, 2, 1, 0)
    );
    let vb = &s.by_victim_cgroup[0];
    assert_eq!(vb.cgroup, "/b");
    assert_eq!(
        (
            vb.delay_ns.other_cgroup,
            vb.delay_ns.system,
            vb.delay_ns.same_cgroup
        ),
        (4 * MS, MS, 500 * US)
    );
    assert_eq!(
        (vb.preemptions.same_cgroup, vb.preemptions.other_cgroup),
        (1, 1)
    );
    let d: Vec<(&str, &str, &str, u64)> = vb
        .top_delayers
        .iter()
        .map(|c| (c.cgroup.as_str(), c.comm.as_str(), c.class, c.value))
        .collect();
    assert_eq!(
        d,
        vec![
            ("/a", "hog", "other_cgroup", 4 * MS),
            ("/", "kworker/0:1", "system", MS),
            ("/b", "buddy", "same_cgroup", 500 * US),
        ]
    );
    let va = &s.by_victim_cgroup[1];
    assert_eq!(va.cgroup, "/a");
    assert_eq!((va.preemptions.system, va.preemptions.other_cgroup), (1, 1));
    assert_eq!(va.top_preemptors[0].comm, "kworker/0:1");
    // The worst wakeup, with who delayed it.
    let w = &s.worst[0];
    assert_eq!(
        (w.tid, w.latency_ns, w.waker_tid, w.wakeup_ns),
        (10, 3_500_000, 20, B + MS)
    );
    let by: Vec<(u32, u64)> = w.delayed_by.iter().map(|d| (d.tid, d.ns)).collect();
    assert_eq!(by, vec![(20, 2 * MS), (30, MS), (11, 500 * US)]);
    assert_eq!(s.by_cgroup[0].cgroup, "/b");
    assert_eq!(s.by_process[0].pid, Some(10));
    // Filtered to /a: no wakeups there, but the hogs' two preemptions.
    let opts = Options {
        filter: Filter {
            cgroups: vec!["/a".into()],
            ..Filter::default()
        },
        ..Options::default()
    };
    let r = run("sched-a", &sched_snapshot(), &opts);
    let s = ok(&r.sched);
    assert_eq!(s.latency.count, 0);
    assert_eq!((s.preemptions.system, s.preemptions.other_cgroup), (1, 1));
}

/// Device 8:0: a 4 KiB write issued at 0 by "app" completing at 2 ms, an 8 KiB read from 1 to
/// 1.5 ms, a flush (0 sectors, ignored) and a write issued at 3 ms still in flight at 10 ms.
/// Queue depth: 1 over 0–1 ms, 2 over 1–1.5, 1 over 1.5–2, 0 over 2–3, 1 over 3–10: mean 0.95.
#[test]
fn block_latency_throughput_and_queue_depth() {
    let mut b = SnapshotBuilder::new(1);
    let dev = 8 << 20;
    let app = (100, 100, "app");
    b.block(0, app, dev, 1000, 4096, 1, B, B + 2 * MS);
    b.block(0, app, dev, 2000, 8192, 0, B + MS, B + 1_500_000);
    let rq = |sector, nr_sector| BlockRq {
        sector,
        dev,
        nr_sector,
        bytes: nr_sector * 512,
        op: 1,
        comm: flightrec_reader::synth::comm("app"),
        ..BlockRq::default()
    };
    let ev = |ts, data| Event {
        ts_ns: ts,
        cpu: 0,
        pid: 100,
        tid: 100,
        data,
    };
    b.event(ev(B + 2_500_000, EventData::BlockRqIssue(rq(0, 0))));
    b.event(ev(B + 2_600_000, EventData::BlockRqComplete(rq(0, 0))));
    b.event(ev(B + 3 * MS, EventData::BlockRqIssue(rq(3000, 8))));
    b.syscall(0, app, 39, 0, 100, B + 9 * MS, B + 10 * MS);
    let r = run("block", &b, &Options::default());
    let s = ok(&r.block);
    assert_eq!((s.requests, s.in_flight), (2, 1));
    let d = &s.devices[0];
    assert_eq!(d.dev, "8:0");
    assert_eq!(
        (d.latency.min_ns, d.latency.max_ns, d.latency.avg_ns),
        (500 * US, 2 * MS, 1_250_000)
    );
    assert_eq!(
        (d.reads, d.read_bytes, d.writes, d.write_bytes),
        (1, 8192, 1, 4096)
    );
    assert_eq!(
        (d.read_bytes_per_s, d.write_bytes_per_s),
        (819_200.0, 409_600.0)
    );
    assert_eq!((d.max_queue_depth, d.avg_queue_depth), (2, 0.95));
    assert_eq!(d.queue_depth[10], 2);
    assert_eq!(d.queue_depth[25], 0);
    assert_eq!(d.queue_depth[50], 1);
    let q = &s.slowest[0];
    assert_eq!(
        (
            q.latency_ns,
            q.tid,
            q.comm.as_str(),
            q.rwbs.as_str(),
            q.sector,
            q.bytes
        ),
        (2 * MS, 100, "app", "W", 1000, 4096)
    );
}

#[test]
fn irq_and_softirq_durations() {
    let mut b = SnapshotBuilder::new(2);
    let t = (100, 100, "app");
    b.irq(0, t, 36, "virtio1-req.0", B, B + 2 * US);
    b.irq(1, t, 36, "virtio1-req.0", B + 10 * US, B + 14 * US);
    b.softirq(0, t, 1, B + 20 * US, B + 30 * US);
    // An exit whose entry was overwritten is not counted.
    b.event(Event {
        ts_ns: B + 40 * US,
        cpu: 1,
        pid: 100,
        tid: 100,
        data: EventData::IrqHandlerExit(schemas::IrqHandlerExit { irq: 36, ret: 1 }),
    });
    let r = run("irq", &b, &Options::default());
    let s = ok(&r.irq);
    assert_eq!(s.hard.len(), 1);
    let h = &s.hard[0];
    assert_eq!((h.irq, h.name.as_str()), (36, "virtio1-req.0"));
    let d = &h.duration;
    assert_eq!(
        (d.count, d.min_ns, d.avg_ns, d.max_ns, d.total_ns),
        (2, 2000, 3000, 4000, 6000)
    );
    assert_eq!(s.soft.len(), 1);
    assert_eq!(
        (
            s.soft[0].vec,
            s.soft[0].name.as_str(),
            s.soft[0].duration.total_ns
        ),
        (1, "TIMER", 10_000)
    );
    assert_eq!((s.hard_total_ns, s.soft_total_ns), (6000, 10_000));
}

#[test]
fn process_log_with_parents_and_lifetimes() {
    let mut b = SnapshotBuilder::new(1);
    b.process(50, 1, "sh", ("/", 1), &[50]);
    let sh = (50, 50, "sh");
    b.fork(B + MS, 0, sh, (51, 51, "sh"));
    b.exec(B + 1_200_000, 0, (51, 51, "sh"), "/usr/bin/true");
    b.exit(B + 1_500_000, 0, (51, 51, "true"));
    b.fork(B + 2 * MS, 0, sh, (50, 52, "sh"));
    let r = run("procs", &b, &Options::default());
    let p = ok(&r.processes);
    assert_eq!(
        (p.forks, p.threads, p.execs, p.exits, p.short_lived),
        (1, 1, 1, 1, 1)
    );
    let log: Vec<(&str, u32, u32, &str, &str)> = p
        .log
        .iter()
        .map(|e| {
            (
                e.event,
                e.pid,
                e.ppid,
                e.comm.as_str(),
                e.parent_comm.as_str(),
            )
        })
        .collect();
    assert_eq!(
        log,
        vec![
            ("fork", 51, 50, "sh", "sh"),
            ("exec", 51, 50, "true", "sh"),
            ("exit", 51, 50, "true", "sh"),
        ]
    );
    assert_eq!(p.log[1].filename.as_deref(), Some("/usr/bin/true"));
    assert_eq!(p.log[2].lifetime_ns, Some(500 * US));
}

#[test]
fn an_analysis_whose_class_was_not_recorded_says_so() {
    let mut b = syscall_snapshot();
    b.manifest.recorder.classes = vec!["syscalls".into()];
    let r = run("not-recorded", &b, &Options::default());
    assert!(r.syscalls.ok().is_some());
    match &r.block {
        Section::NotRecorded { reason } => assert!(reason.contains("`block`"), "{reason}"),
        Section::Ok(_) => panic!("block analysed without block events"),
    }
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["sched"]["status"], "not_recorded");
    assert_eq!(json["syscalls"]["status"], "ok");
    let mut text = Vec::new();
    flightrec_reader::analyze::render(&r, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("not available: the block I/O analysis needs the `block` event class"));
}

#[path = "analyze/findings.rs"]
mod findings;

#[path = "analyze/story.rs"]
mod story;

/// One CPU. Sleeper V (pid 10, /b) is woken at 1 ms while hog H1 (pid 40) runs; H1 is preempted
/// by hog H2 (pid 42) at 3 ms, which V preempts at 4 ms: V waited 3 ms, 2 ms behind H1 and 1 ms
/// behind H2. Both hogs exited before the freeze, so the statedump does not know them; their
/// kernel records carry their cgroup ids: H1's group (id 5, /batch.slice) still exists and is in
/// the statedump's cgroup list, H2's (id 99) was removed.
#[test]
fn hogs_gone_before_the_snapshot_are_charged_to_their_cgroups() {
    let mut b = SnapshotBuilder::new(1);
    b.process(10, 1, "sleeper", ("/b", 2), &[10]);
    b.manifest.statedump.cgroups = vec![
        schemas::manifest::CgroupInfo {
            id: 2,
            path: "/b".into(),
        },
        schemas::manifest::CgroupInfo {
            id: 5,
            path: "/batch.slice".into(),
        },
    ];
    b.kernel_cgroup(10, 2)
        .kernel_cgroup(40, 5)
        .kernel_cgroup(42, 99);
    let (idle, v) = ((0, 0, "swapper/0"), (10, 10, "sleeper"));
    let (h1, h2) = ((40, 40, "xz"), (42, 42, "xz"));
    b.switch(B, 0, idle, 0, h1);
    b.wakeup(B + MS, 0, h1, v, 0);
    b.switch(B + 3 * MS, 0, h1, 0, h2);
    b.switch(B + 4 * MS, 0, h2, 0, v);
    b.switch(B + 5 * MS, 0, v, 1, idle);
    let r = run("gone-hogs", &b, &Options::default());
    let s = ok(&r.sched);
    assert_eq!(
        (s.delay_ns.other_cgroup, s.delay_ns.unknown),
        (3 * MS, 0),
        "the hogs' time is charged to other cgroups, not to unknown ones"
    );
    let vb = &s.by_victim_cgroup[0];
    assert_eq!(vb.cgroup, "/b");
    let d: Vec<(&str, &str, u64)> = vb
        .top_delayers
        .iter()
        .map(|c| (c.cgroup.as_str(), c.class, c.value))
        .collect();
    assert_eq!(
        d,
        vec![
            ("/batch.slice", "other_cgroup", 2 * MS),
            (
                "cgroup #99 (removed before the snapshot)",
                "other_cgroup",
                MS
            ),
        ]
    );
}
