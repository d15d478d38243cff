//! Findings, and waits ranked apart from work: idle event loops, parked workers and the
//! recorder's own threads must not crowd out the call that made a request slow.

use super::*;

/// A syscall `name` by `t` on `cpu` from `start` to `end`, with `args[1] = arg1` (the futex
/// operation); `end: None` leaves it in flight.
fn call(
    b: &mut SnapshotBuilder,
    cpu: u32,
    t: (u32, u32, &str),
    name: &str,
    arg1: u64,
    span: (u64, Option<u64>),
) {
    let id = schemas::event::syscall_id(name).unwrap();
    let (pid, tid, _) = t;
    let entry = EventData::SyscallEntry(schemas::SyscallEntry {
        id,
        args: [3, arg1, 0, 0, 0, 0],
    });
    let exit = EventData::SyscallExit(schemas::SyscallExit { id, ret: 0 });
    let events = [(span.0, entry)]
        .into_iter()
        .chain(span.1.map(|end| (end, exit)));
    for (ts_ns, data) in events {
        b.event(Event {
            ts_ns,
            cpu,
            pid,
            tid,
            data,
        });
    }
}

/// A 27 ms fdatasync of "pg" (pid 812) among idle waits of other processes that last far
/// longer: an event loop's epoll_wait (800 ms) and a parked worker's private FUTEX_WAIT
/// (700 ms) in "svc" (pid 900), a shell's wait4 (600 ms); a futex *wake* of 40 ms (work);
/// the recorder (pid 50 "flightrec", worker 51) with a 300 ms futex wait and a 60 ms write;
/// at the end, still in flight: svc's epoll_wait again, a worker exiting (exit_group) and
/// "logger"'s fsync entered 5 ms before the end.
fn idle_waits_snapshot() -> SnapshotBuilder {
    let mut b = SnapshotBuilder::new(2);
    b.process(812, 1, "pg", ("/db", 5), &[812]);
    b.process(900, 1, "svc", ("/svc", 6), &[900, 901, 902]);
    b.process(950, 1, "bash", ("/user", 7), &[950]);
    b.process(960, 1, "logger", ("/log", 8), &[960]);
    b.process(50, 1, "flightrec", ("/flightrec", 9), &[50, 51]);
    let pg = (812, 812, "pg");
    let svc = (900, 900, "svc");
    let recorder = (50, 50, "flightrec");
    // (cpu, task, syscall, args[1], (entry, exit))
    type Call<'a> = (u32, (u32, u32, &'a str), &'a str, u64, (u64, Option<u64>));
    let calls: [Call; 12] = [
        (0, pg, "write", 0, (B, Some(B + 100 * US))),
        (0, pg, "fdatasync", 0, (B + MS, Some(B + 28 * MS))),
        (1, svc, "epoll_wait", 0, (B + 2 * MS, Some(B + 802 * MS))),
        (
            1,
            (900, 901, "svc"),
            "futex",
            128,
            (B + 3 * MS, Some(B + 703 * MS)),
        ),
        (
            0,
            (950, 950, "bash"),
            "wait4",
            0,
            (B + 4 * MS, Some(B + 604 * MS)),
        ),
        (
            0,
            (900, 902, "svc"),
            "futex",
            129,
            (B + 5 * MS, Some(B + 15 * MS)),
        ),
        (
            1,
            (50, 51, "flightrec"),
            "futex",
            128,
            (B + 6 * MS, Some(B + 306 * MS)),
        ),
        (1, recorder, "write", 0, (B + 400 * MS, Some(B + 460 * MS))),
        (1, svc, "epoll_wait", 0, (B + 810 * MS, None)),
        (0, (900, 902, "svc"), "exit_group", 0, (B + 820 * MS, None)),
        (0, (960, 960, "logger"), "fsync", 0, (B + 995 * MS, None)),
        // The last event closes the window at B + 1 s.
        (0, pg, "write", 0, (B + 999 * MS, Some(B + 1000 * MS))),
    ];
    for (cpu, t, name, arg1, span) in calls {
        call(&mut b, cpu, t, name, arg1, span);
    }
    b
}

#[test]
fn waits_rank_apart_from_work_and_the_recorder_is_left_out() {
    // (include_recorder, first finding as (pid, syscall), slowest work as (pid, syscall, ms),
    // slowest waits as (tid, syscall, ms))
    type Calls = &'static [(u32, &'static str, u64)];
    let cases: [(bool, (u32, &str), Calls, Calls); 2] = [
        (
            false,
            (812, "fdatasync"),
            &[
                (812, "fdatasync", 27),
                (900, "futex", 10),
                (812, "write", 1),
            ],
            &[
                (900, "epoll_wait", 800),
                (901, "futex", 700),
                (950, "wait4", 600),
            ],
        ),
        (
            true,
            (50, "write"),
            &[
                (50, "write", 60),
                (812, "fdatasync", 27),
                (900, "futex", 10),
            ],
            &[
                (900, "epoll_wait", 800),
                (901, "futex", 700),
                (950, "wait4", 600),
                (51, "futex", 300),
            ],
        ),
    ];
    let b = idle_waits_snapshot();
    for (include_recorder, first, work, waits) in cases {
        let opts = Options {
            include_recorder,
            ..Options::default()
        };
        let r = run("idle-waits", &b, &opts);
        let s = ok(&r.syscalls);
        // Findings: the slowest work first; waits are never findings.
        let f = &r.findings[0];
        assert_eq!(f.kind, FindingKind::SlowSyscall, "{:#?}", r.findings);
        assert_eq!(
            (
                f.evidence.pid.unwrap(),
                f.evidence.syscall.as_deref().unwrap()
            ),
            first,
            "{:#?}",
            r.findings
        );
        // Every finding, in order: the idle waits are none of them.
        let mut want = vec![
            (FindingKind::SlowSyscall, 812, "fdatasync"),
            (FindingKind::SlowSyscall, 900, "futex"),
            (FindingKind::BlockedSyscall, 960, "fsync"),
            (FindingKind::SlowSyscall, 812, "write"),
        ];
        if include_recorder {
            want.insert(0, (FindingKind::SlowSyscall, 50, "write"));
        }
        let got: Vec<(FindingKind, u32, &str)> = r
            .findings
            .iter()
            .map(|f| {
                let e = &f.evidence;
                (f.kind, e.pid.unwrap(), e.syscall.as_deref().unwrap())
            })
            .collect();
        assert_eq!(got, want, "{:#?}", r.findings);
        let blocked = r
            .findings
            .iter()
            .find(|f| f.kind == FindingKind::BlockedSyscall)
            .expect("the in-flight fsync is a finding");
        assert_eq!(blocked.evidence.tid, Some(960));
        assert_eq!(blocked.evidence.duration_ns, 5 * MS);
        let got_work: Vec<(u32, &str, u64)> = s
            .slowest_work
            .iter()
            .map(|c| (c.pid, c.syscall.as_str(), c.duration_ns / MS))
            .collect();
        assert_eq!(&got_work[..work.len()], work, "recorder {include_recorder}");
        assert!(s.slowest_work.iter().all(|c| !c.wait));
        let got_waits: Vec<(u32, &str, u64)> = s
            .slowest_waits
            .iter()
            .map(|c| (c.tid, c.syscall.as_str(), c.duration_ns / MS))
            .collect();
        assert_eq!(got_waits, waits, "recorder {include_recorder}");
        assert!(s.slowest_waits.iter().all(|c| c.wait));
        // In flight: the blocked fsync is work, the epoll_wait a wait, exit_group nowhere.
        let flying = |v: &[_]| -> Vec<(u32, String)> {
            v.iter()
                .map(|c: &flightrec_reader::analyze::InFlightCall| (c.tid, c.syscall.clone()))
                .collect()
        };
        assert_eq!(flying(&s.in_flight_work), [(960, "fsync".to_owned())]);
        assert_eq!(flying(&s.in_flight_waits), [(900, "epoll_wait".to_owned())]);
        assert!(s.in_flight.iter().all(|c| c.syscall != "exit_group"));
        assert_eq!(s.in_flight.len(), 2);
        // The recorder: costed either way, ranked only when asked for.
        assert_eq!(r.recorder.pids, [50]);
        assert_eq!(r.recorder.events, 4);
        assert_eq!(r.recorder.included, include_recorder);
        // Processes rank by their working time: pg before the idle svc and bash.
        let procs: Vec<(u32, u64)> = s.by_process.iter().map(|p| (p.pid, p.work_ns)).collect();
        let mut want = vec![(812, 28_100 * US), (900, 10 * MS), (950, 0)];
        if include_recorder {
            want.insert(0, (50, 60 * MS));
        }
        assert_eq!(procs, want);
        let ranked =
            s.slowest.iter().any(|c| c.pid == 50) || s.by_process.iter().any(|p| p.pid == 50);
        assert_eq!(ranked, include_recorder);
        let mut text = Vec::new();
        flightrec_reader::analyze::render(&r, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let (findings, syscalls) = (
            text.find("== Findings ==").unwrap(),
            text.find("== Syscalls ==").unwrap(),
        );
        assert!(findings < syscalls, "{text}");
        let first_line = text[findings..].lines().nth(1).unwrap();
        assert!(
            first_line.contains(&format!("pid {} ", first.0)) && first_line.contains(first.1),
            "{text}"
        );
    }
}

/// Findings other than syscalls, one snapshot each: the expected kinds in order, and the first
/// finding's evidence as (tid, duration, dev or irq name, count).
#[test]
fn findings_name_run_queue_waits_slow_devices_long_interrupts_and_bursts() {
    let app = (100, 100, "app");
    let mut block = SnapshotBuilder::new(1);
    // 8:0: a 20 ms write; 8:16: a 2 ms read, below the 5 ms that makes a slow device.
    block.block(0, app, 8 << 20, 1000, 4096, 1, B, B + 20 * MS);
    block.block(0, app, (8 << 20) | 16, 10, 4096, 0, B + MS, B + 3 * MS);
    block.syscall(0, app, 39, 0, 100, B + 100 * MS - US, B + 100 * MS);
    let mut irq = SnapshotBuilder::new(1);
    // A 2 ms hard irq; a 10 µs softirq is no finding.
    irq.irq(0, app, 36, "virtio1-req.0", B, B + 2 * MS);
    irq.softirq(0, app, 1, B + 3 * MS, B + 3 * MS + 10 * US);
    irq.syscall(0, app, 39, 0, 100, B + 100 * MS - US, B + 100 * MS);
    let mut burst = SnapshotBuilder::new(1);
    burst.process(50, 1, "sh", ("/", 1), &[50]);
    for i in 0..6u32 {
        let child = (60 + i, 60 + i, "true");
        let t = B + u64::from(i) * 10 * MS;
        burst.fork(t, 0, (50, 50, "sh"), child);
        burst.exit(t + 2 * MS, 0, child);
    }
    burst.syscall(
        0,
        (50, 50, "sh"),
        39,
        0,
        100,
        B + 100 * MS - US,
        B + 100 * MS,
    );
    type First<'a> = (Option<u32>, u64, Option<&'a str>, u64);
    let cases: [(&str, SnapshotBuilder, &[FindingKind], First); 4] = [
        (
            "findings-sched",
            sched_snapshot(),
            &[FindingKind::RunQueueWait, FindingKind::RunQueueWait],
            (Some(10), 3_500_000, None, 1),
        ),
        (
            "findings-block",
            block,
            &[FindingKind::SlowBlockIo],
            (Some(100), 20 * MS, Some("8:0"), 1),
        ),
        (
            "findings-irq",
            irq,
            &[FindingKind::LongInterrupt],
            (None, 2 * MS, Some("irq 36 (virtio1-req.0)"), 1),
        ),
        (
            "findings-burst",
            burst,
            &[FindingKind::ProcessBurst],
            (None, 2 * MS, None, 6),
        ),
    ];
    for (name, b, kinds, first) in cases {
        let r = run(name, &b, &Options::default());
        let got: Vec<FindingKind> = r.findings.iter().map(|f| f.kind).collect();
        assert_eq!(got, kinds, "{name}: {:#?}", r.findings);
        let e = &r.findings[0].evidence;
        let what = e.dev.as_deref().or(e.irq.as_deref());
        assert_eq!((e.tid, e.duration_ns, what, e.count), first, "{name}");
    }
    // Who held the CPU and who started the burst are named.
    let r = run("findings-sched", &sched_snapshot(), &Options::default());
    assert_eq!(r.findings[0].evidence.by[0].1, 2 * MS);
    assert!(r.findings[0].text.contains("[20] held it for 2.00ms"));
    let mut burst = SnapshotBuilder::new(1);
    burst.process(50, 1, "sh", ("/", 1), &[50]);
    for i in 0..5u32 {
        let child = (60 + i, 60 + i, "true");
        burst.fork(B + u64::from(i) * MS, 0, (50, 50, "sh"), child);
        burst.exit(B + u64::from(i) * MS + US, 0, child);
    }
    let r = run("findings-burst-5", &burst, &Options::default());
    assert_eq!(r.findings[0].evidence.by, [("sh[50]".to_owned(), 5)]);
}
