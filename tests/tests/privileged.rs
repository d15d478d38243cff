//! Privileged end-to-end tests: real eBPF programs, real child processes, real snapshots.
//! They need root; elsewhere they print why they skip, and under `CI=true` a skip fails.

mod analyze;
mod causes;
mod collector;
mod export_ctf;
mod export_perfetto;
mod export_tracedat;
#[path = "../../reader/tests/common/readers.rs"]
mod readers;
mod triggers;
mod util;

use std::collections::HashMap;

use schemas::event::EventData;
use util::{MAGIC, TestRecorder, nr, privileged, syscalls_of, workload};

#[test]
fn snapshot_holds_exactly_the_childs_syscalls_in_order() {
    let Some(_p) = privileged("snapshot_holds_exactly_the_childs_syscalls_in_order") else {
        return;
    };
    let rec = TestRecorder::start("syscalls", |_| {});
    let data_dir = util::scratch_dir("syscalls-data");
    let disk = util::disk_dev_of(&data_dir);
    let pid = workload(&["syscalls", data_dir.to_str().unwrap()]);
    let (manifest, events) = rec.snapshot("syscalls");

    assert!(manifest.coverage.iter().all(|c| c.records_overwritten == 0));
    let calls = syscalls_of(&events, pid);
    assert!(events.iter().filter(|e| e.tid == pid).all(|e| e.pid == pid));
    let first = calls
        .iter()
        .position(|&(entry, id, arg, _)| entry && id == nr::GETPGID && arg as u64 == MAGIC)
        .expect("first marked getpgid recorded");
    let seq = &calls[first..];
    assert!(
        seq.len() >= 2006,
        "only {} syscalls after the first getpgid",
        seq.len()
    );
    // getpgid of a negative pid (the marker's low half): no such process.
    let esrch = -i64::from(libc::ESRCH);
    for i in 0..1000 {
        let (entry, exit) = (seq[2 * i], seq[2 * i + 1]);
        assert_eq!(
            (entry.0, entry.1, entry.2 as u64),
            (true, nr::GETPGID, MAGIC + i as u64),
            "getpgid #{i} entry"
        );
        assert_eq!(
            (exit.0, exit.1, exit.2),
            (false, nr::GETPGID, esrch),
            "getpgid #{i} exit"
        );
    }
    let rest: Vec<(bool, u64)> = seq[2000..2006].iter().map(|c| (c.0, c.1)).collect();
    assert_eq!(
        rest,
        vec![
            (true, nr::NANOSLEEP),
            (false, nr::NANOSLEEP),
            (true, nr::WRITE),
            (false, nr::WRITE),
            (true, nr::FSYNC),
            (false, nr::FSYNC),
        ]
    );
    // Time order, and the nanosleep really slept.
    assert!(
        seq.windows(2).all(|w| w[0].3 <= w[1].3),
        "timestamps go backwards"
    );
    let slept = seq[2001].3 - seq[2000].3;
    assert!(slept >= 20_000_000, "nanosleep took {slept} ns");
    assert!(slept < 2_000_000_000, "nanosleep took {slept} ns");
    assert_eq!(seq[2003].2, 64 * 1024, "write returned");
    assert_eq!(seq[2005].2, 0, "fsync returned");

    // The fsync's data reached the disk holding the file while the fsync ran.
    let (fsync_in, fsync_out) = (seq[2004].3, seq[2005].3);
    let disk = disk.expect("the build directory is on a block device");
    let writes: Vec<_> = events
        .iter()
        .filter(|e| e.ts_ns >= fsync_in && e.ts_ns <= fsync_out)
        .filter_map(|e| match e.data {
            EventData::BlockRqIssue(b) if b.dev == disk => Some(b),
            _ => None,
        })
        .filter(|b| schemas::event::rwbs_string(b.op, b.rwbs_flags).contains('W'))
        .collect();
    assert!(
        !writes.is_empty(),
        "no block write to dev {disk:#x} during fsync"
    );
    let completed = events.iter().any(|e| {
        matches!(e.data, EventData::BlockRqComplete(b)
            if b.dev == disk && writes.iter().any(|w| w.sector == b.sector) && e.ts_ns <= fsync_out)
    });
    assert!(completed, "no completion for the fsync's block writes");

    // The manifest describes the host and the window.
    assert_eq!(manifest.host.ncpu as usize, manifest.coverage.len());
    assert!(!manifest.host.boot_id.is_empty());
    assert!(
        manifest
            .statedump
            .processes
            .iter()
            .any(|p| p.pid == std::process::id())
    );
}

#[test]
fn sched_switch_wakeup_and_irqs_of_a_sleeper() {
    let Some(_p) = privileged("sched_switch_wakeup_and_irqs_of_a_sleeper") else {
        return;
    };
    let rec = TestRecorder::start("sched", |_| {});
    let pid = workload(&["sleeper", "5", "10"]);
    // Disk I/O makes the virtio/nvme/ahci interrupt fire at least once.
    let data_dir = util::scratch_dir("sched-data");
    std::fs::write(data_dir.join("f"), vec![1u8; 4096]).unwrap();
    std::fs::File::open(data_dir.join("f"))
        .unwrap()
        .sync_all()
        .unwrap();
    let (_m, events) = rec.snapshot("sched");

    // Each sleep: switched out while sleeping, woken, switched back in, in that order.
    // Between fork and exec the child still has its parent thread's comm, and can be woken.
    let exec_ts = events
        .iter()
        .find(|e| matches!(e.data, EventData::ProcessExec(x) if x.tid == pid))
        .map_or(0, |e| e.ts_ns);
    let mut outs = 0;
    let mut unseen_ins = 0;
    let mut state = 0; // 0 running, 1 asleep, 2 woken
    for e in &events {
        match e.data {
            EventData::SchedSwitch(s) if e.tid == pid && s.prev_state != 0 => {
                assert_ne!(state, 1, "switched out twice without being woken");
                // Woken, then switched out with no switch in between: on some kernels a
                // switch out of some tasks reaches no tracepoint (docs/recorder.md, "The
                // current task"), ftrace's included. Once is that; more is ours.
                unseen_ins += u32::from(state == 2);
                state = 1;
                outs += 1;
            }
            EventData::SchedWakeup(w) if w.tid == pid => {
                assert_eq!(w.pid, pid);
                if e.ts_ns > exec_ts {
                    assert_eq!(schemas::cstr_lossy(&w.comm), "workload");
                }
                if state == 1 {
                    state = 2;
                }
            }
            EventData::SchedSwitch(s) if s.next_tid == pid => {
                assert_ne!(state, 1, "ran again before being woken");
                state = 0;
            }
            _ => {}
        }
    }
    assert!(outs >= 5, "only {outs} sleeps seen");
    if unseen_ins > 0 {
        println!("{unseen_ins} switch(es) into the sleeper reached no tracepoint");
    }
    assert!(
        unseen_ins <= 1,
        "{unseen_ins} switches into the sleeper missing"
    );

    let count = |f: fn(&EventData) -> bool| events.iter().filter(|e| f(&e.data)).count();
    let irq_in = count(|d| matches!(d, EventData::IrqHandlerEntry(_)));
    let irq_out = count(|d| matches!(d, EventData::IrqHandlerExit(_)));
    assert!(irq_in > 0, "no irq_handler_entry");
    assert!(irq_in.abs_diff(irq_out) <= 2);
    let named = events.iter().any(|e| {
        matches!(e.data, EventData::IrqHandlerEntry(i) if !schemas::cstr_lossy(&i.name).is_empty())
    });
    assert!(named, "irq handlers have no names");
    let soft_in = count(|d| matches!(d, EventData::SoftirqEntry(_)));
    assert!(soft_in > 0, "no softirq_entry");
    // Fork/exec/exit of the workload were recorded with its pid.
    let exec = events.iter().any(|e| {
        matches!(e.data, EventData::ProcessExec(x)
            if x.tid == pid && schemas::cstr_lossy(&x.filename).ends_with("workload"))
    });
    assert!(exec, "no sched_process_exec for the workload");
    let fork = events
        .iter()
        .any(|e| matches!(e.data, EventData::ProcessFork(f) if f.child_pid == pid));
    assert!(fork, "no sched_process_fork for the workload");
    let exit = events
        .iter()
        .any(|e| matches!(e.data, EventData::ProcessExit(x) if x.pid == pid));
    assert!(exit, "no sched_process_exit for the workload");
}

#[test]
fn small_ring_keeps_only_the_newest_records_and_counts_the_rest() {
    let Some(_p) = privileged("small_ring_keeps_only_the_newest_records_and_counts_the_rest")
    else {
        return;
    };
    let rec = TestRecorder::start("wrap", |c| {
        c.recorder.ring_size = "64KiB".into(); // 16 packets
        c.events.sched = false;
        c.events.process = false;
        c.events.block = false;
        c.events.irq = false;
        c.filter.comms = vec!["workload".into()];
    });
    assert_eq!(rec.rings().packets(), 16);
    let n = 10_000u64;
    let pid = workload(&["getpgid", &n.to_string(), "0"]);
    let (m, events) = rec.snapshot("wrap");

    let cpu0 = &m.coverage[0];
    let written = cpu0.records_kept + cpu0.records_overwritten + cpu0.records_lost;
    assert!(written >= 2 * n, "only {written} records written on cpu 0");
    assert!(cpu0.window_end - cpu0.window_start > rec.rings().ring_bytes());
    assert_eq!(cpu0.records_lost, 0);
    // A getpgid entry (its one argument) and exit take at most 24 bytes each (16 when they
    // leave the task out): the 16 packets, less their headers and the one being filled, hold
    // at least this many.
    let kept = cpu0.records_kept;
    assert!(kept >= 15 * (4096 - 16) / 24 - 16, "{kept} records kept");
    // Every event is the workload's (the comm filter), and the kept ones are the newest
    // getpgid calls, contiguous and in order, followed by what the process did last.
    // (Events from before the workload pinned itself may sit on another CPU.)
    assert!(
        events.iter().all(|e| e.pid == pid),
        "the comm filter let others through"
    );
    let cpu0: Vec<_> = events.iter().filter(|e| e.cpu == 0).copied().collect();
    assert_eq!(cpu0.len() as u64, kept);
    let calls = syscalls_of(&cpu0, pid);
    let marked: Vec<u64> = calls
        .iter()
        .filter(|c| c.0 && c.1 == nr::GETPGID && c.2 as u64 >= MAGIC)
        .map(|c| c.2 as u64 - MAGIC)
        .collect();
    assert!(marked.len() > 200, "{} marked calls kept", marked.len());
    assert!(
        marked.windows(2).all(|w| w[1] == w[0] + 1),
        "kept calls are not contiguous"
    );
    assert_eq!(
        *marked.last().unwrap(),
        n - 1,
        "the newest call was not kept"
    );
}

#[test]
fn threads_taking_turns_on_one_cpu_keep_their_own_records() {
    let Some(_p) = privileged("threads_taking_turns_on_one_cpu_keep_their_own_records") else {
        return;
    };
    // Records leave their task out when they follow one of the same task: threads that take
    // turns on one CPU make the task change between nearly every pair of syscalls, and every
    // record must still name the thread that made the call.
    // With the sched class off too: the current-task cache is then emptied at each switch
    // by a `sched_switch` program that records nothing.
    for sched in [true, false] {
        threads_take_turns(sched);
    }
}

fn threads_take_turns(sched: bool) {
    let rec = TestRecorder::start("turns", |c| {
        c.events.sched = sched;
        c.events.block = false;
        c.filter.comms = vec!["workload".into()];
    });
    let (threads, n) = (3u64, 2000u64);
    let pid = workload(&["threads", &threads.to_string(), &n.to_string(), "0"]);
    let (m, events) = rec.snapshot("turns");
    assert!(
        m.coverage
            .iter()
            .all(|c| c.records_overwritten == 0 && c.records_lost == 0)
    );
    let ours: Vec<_> = events
        .iter()
        .filter(|e| e.pid == pid && e.cpu == 0)
        .collect();
    // Each thread's marked calls, by the thread the records name.
    let mut tid_of = std::collections::BTreeMap::new();
    let mut seen = vec![Vec::new(); threads as usize];
    for e in &ours {
        if let EventData::SyscallEntry(s) = e.data
            && s.id == nr::GETPGID
            && s.args[0] >= MAGIC
        {
            let k = (s.args[0] - MAGIC) >> 20;
            let i = (s.args[0] - MAGIC) & 0xF_FFFF;
            assert!(k < threads, "mark {:#x}", s.args[0]);
            assert_eq!(
                *tid_of.entry(k).or_insert(e.tid),
                e.tid,
                "thread {k}'s call {i} names another thread"
            );
            seen[k as usize].push(i);
        }
    }
    assert_eq!(tid_of.len() as u64, threads);
    let tids: std::collections::BTreeSet<_> = tid_of.values().collect();
    assert_eq!(
        tids.len() as u64,
        threads,
        "two threads' calls under one tid"
    );
    for (k, calls) in seen.iter().enumerate() {
        assert_eq!(*calls, (0..n).collect::<Vec<_>>(), "thread {k}'s calls");
    }
    // Each thread's syscalls pair up, entry then exit of the same call, and the threads did
    // take turns: the task changes between consecutive records on the CPU many times.
    for &tid in tid_of.values() {
        let calls = syscalls_of(&events, tid);
        let from = calls
            .iter()
            .position(|c| c.0 && c.1 == nr::GETPGID && c.2 as u64 >= MAGIC)
            .unwrap();
        for pair in calls[from..].chunks(2).take(2 * n as usize - 1) {
            assert!(
                pair.len() == 2 && pair[0].0 && !pair[1].0 && pair[0].1 == pair[1].1,
                "thread {tid}: {pair:?}"
            );
        }
    }
    let changes = ours.windows(2).filter(|w| w[0].tid != w[1].tid).count();
    assert!(
        changes as u64 >= n,
        "the task changed only {changes} times (sched {sched})"
    );
}

#[test]
fn a_thread_that_execs_takes_the_process_id_in_its_records() {
    let Some(_p) = privileged("a_thread_that_execs_takes_the_process_id_in_its_records") else {
        return;
    };
    // An exec from a thread other than the leader gives that thread the leader's pid under
    // the same stack: the programs' cache of the current task must not keep the old tid. With
    // the leader alive the exec sleeps until it dies (a context switch); with the leader gone
    // first, it does not switch at all.
    for (sched, leader) in [(true, "alive"), (false, "alive"), (false, "exited")] {
        let rec = TestRecorder::start("texec", |c| {
            c.events.sched = sched;
            c.events.process = sched;
            c.events.block = false;
            c.filter.comms = vec!["workload".into()];
        });
        let pid = workload(&["threadexec", "300", leader]);
        let (_, events) = rec.snapshot("texec");
        let marked: Vec<_> = events
            .iter()
            .filter(|e| {
                matches!(e.data, EventData::SyscallEntry(s)
                    if s.id == nr::GETPGID && s.args[0] >= MAGIC)
            })
            .collect();
        assert_eq!(marked.len(), 300, "sched {sched}, leader {leader}");
        assert!(
            marked.iter().all(|e| e.tid == pid && e.pid == pid),
            "sched {sched}, leader {leader}: calls after the exec under {:?}, not {pid}",
            marked
                .iter()
                .find(|e| e.tid != pid || e.pid != pid)
                .map(|e| (e.tid, e.pid))
        );
    }
}

#[test]
fn snapshots_under_load_lose_nothing_across_freezes() {
    let Some(_p) = privileged("snapshots_under_load_lose_nothing_across_freezes") else {
        return;
    };
    let rec = TestRecorder::start("flip", |c| {
        c.recorder.ring_size = "16MiB".into();
        // The spill holds what is written during a copy: here a test build reads every record
        // of the window into memory, which under emulation (the kernel matrix) takes long.
        c.recorder.spill_size = "8MiB".into();
        c.events.sched = false;
        c.events.process = false;
        c.events.block = false;
        c.events.irq = false;
        c.filter.comms = vec!["workload".into()];
    });
    let n = 300_000u64;
    let bin = env!("CARGO_BIN_EXE_workload");
    let mut child = std::process::Command::new(bin)
        .args(["getpgid", &n.to_string()])
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut frozen = Vec::new();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(5));
        frozen.push(rec.rings().freeze());
        if child.try_wait().unwrap().is_some() {
            break;
        }
    }
    frozen.push(rec.rings().freeze());

    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut exits = 0u64;
    let mut windows_with_calls = 0;
    for f in &frozen {
        let mut here = false;
        for (cpu, recs) in f.cpus.iter().enumerate() {
            let c = &f.coverage[cpu];
            assert_eq!(c.records_overwritten, 0, "ring wrapped between snapshots");
            assert_eq!(c.records_lost, 0, "records lost at a flip");
            for r in recs {
                let ev = schemas::event::Event::decode(r).unwrap();
                match ev.data {
                    EventData::SyscallEntry(s)
                        if ev.tid == pid && s.id == nr::GETPGID && s.args[0] >= MAGIC =>
                    {
                        *seen.entry(s.args[0] - MAGIC).or_default() += 1;
                        here = true;
                    }
                    EventData::SyscallExit(s) if ev.tid == pid && s.id == nr::GETPGID => exits += 1,
                    _ => {}
                }
            }
        }
        windows_with_calls += usize::from(here);
    }
    assert!(
        windows_with_calls >= 3,
        "the load spanned only {windows_with_calls} snapshots"
    );
    assert_eq!(seen.len() as u64, n, "calls missing across flips");
    assert!(
        seen.values().all(|&c| c == 1),
        "a call landed in two snapshots"
    );
    assert_eq!(exits, n);
    // Consecutive windows of each (epoch, cpu) ring are contiguous.
    for w in frozen.windows(3) {
        for cpu in 0..w[0].coverage.len() {
            assert_eq!(w[0].coverage[cpu].epoch, w[2].coverage[cpu].epoch);
            assert!(w[2].coverage[cpu].window_start >= w[0].coverage[cpu].window_end);
        }
    }
    // The same data also survives the file round trip.
    let (m, events) = rec.write_and_read(&frozen[0], "flip0");
    assert_eq!(
        events.len() as u64,
        m.coverage.iter().map(|c| c.records_kept).sum::<u64>()
    );
}

/// The daemon's snapshot path reads the frozen rings in batches into the file instead of
/// copying the epoch first: under load, with the ring wrapped and every class on (so irq and
/// softirq programs nest inside others and publish out of time order), each CPU's stream must
/// hold every slot published in its window exactly once, in time order, as the manifest counts.
#[test]
fn streamed_snapshot_of_wrapped_rings_holds_every_published_slot_in_time_order() {
    let Some(_p) =
        privileged("streamed_snapshot_of_wrapped_rings_holds_every_published_slot_in_time_order")
    else {
        return;
    };
    let rec = TestRecorder::start("stream", |c| {
        c.recorder.ring_size = "4MiB".into(); // about 90,000 records: several reorder batches
    });
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_workload"))
        .args(["getpgid", "3000000", "0"])
        .spawn()
        .unwrap();
    // Until the workload's CPU has wrapped its ring at least once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rec.rings().status()[0].overwritten == 0 {
        assert!(std::time::Instant::now() < deadline, "ring 0 never wrapped");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let trigger = schemas::manifest::TriggerInfo {
        source: "test".into(),
        reason: "stream".into(),
        fields: Default::default(),
    };
    let frozen = rec.rings().freeze_epoch();
    let w = flightrec::snapshot::write(&frozen, &rec.config, &rec.dir, Some("stream"), trigger)
        .expect("write snapshot");
    drop(frozen);
    let _ = child.kill();
    let _ = child.wait();

    let mut f = std::fs::File::open(&w.path).unwrap();
    let (m, streams) = schemas::file::Snapshot::read_all(&mut f).unwrap();
    assert_eq!(streams.len(), m.coverage.len());
    for (recs, c) in streams.iter().zip(&m.coverage) {
        assert_eq!(recs.len() as u64, c.records_kept, "cpu {}", c.cpu);
        assert_eq!(c.records_lost, 0, "cpu {}: records lost", c.cpu);
        assert!(
            recs.windows(2).all(|p| p[0].ts_ns <= p[1].ts_ns),
            "cpu {}: stream out of time order",
            c.cpu
        );
        let mut seqs: Vec<u64> = recs.iter().map(|r| r.seq - 1).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), recs.len(), "cpu {}: a slot twice", c.cpu);
        assert_eq!(c.oldest_ts_ns, recs.first().map(|r| r.ts_ns));
        assert_eq!(c.newest_ts_ns, recs.last().map(|r| r.ts_ns));
    }
    let c0 = &m.coverage[0];
    assert!(
        c0.records_overwritten > 0 && c0.records_kept > 60_000,
        "{c0:?}"
    );
    assert_eq!(
        w.records,
        m.coverage.iter().map(|c| c.records_kept).sum::<u64>()
    );
}

#[test]
fn restart_adopts_pinned_rings_and_stale_pins_are_replaced() {
    let Some(_p) = privileged("restart_adopts_pinned_rings_and_stale_pins_are_replaced") else {
        return;
    };
    let mut rec = TestRecorder::start("pins", |c| {
        c.recorder.ring_size = "1MiB".into();
        c.filter.comms = vec!["workload".into()];
    });
    assert!(!rec.rings().adopted());
    // The daemon goes away; the programs keep recording into the pinned rings.
    rec.rings.take();
    let pid = workload(&["getpgid", "100"]);
    rec.rings = Some(flightrec::rings::Rings::start(&rec.config).unwrap());
    assert!(rec.rings().adopted(), "pinned rings were not adopted");
    let (_m, events) = rec.snapshot("adopted");
    let calls = syscalls_of(&events, pid);
    let marked = calls
        .iter()
        .filter(|c| c.0 && c.1 == nr::GETPGID && c.2 as u64 >= MAGIC)
        .count();
    assert_eq!(marked, 100, "history recorded while no daemon ran was lost");

    // A changed configuration replaces the pins instead of misreading them.
    rec.rings.take();
    rec.config.recorder.ring_size = "2MiB".into();
    rec.rings = Some(flightrec::rings::Rings::start(&rec.config).unwrap());
    assert!(!rec.rings().adopted());

    // A pin directory left half-built by a crash (no META) does not block a start.
    rec.rings.take();
    flightrec::rings::teardown(&rec.config.recorder.pin_dir).unwrap();
    std::fs::create_dir_all(&rec.config.recorder.pin_dir).unwrap();
    rec.rings = Some(flightrec::rings::Rings::start(&rec.config).unwrap());
    assert!(!rec.rings().adopted());
    let pid = workload(&["getpgid", "10"]);
    let (_m, events) = rec.snapshot("after-crash");
    assert!(!syscalls_of(&events, pid).is_empty());

    // Teardown detaches everything: nothing is recorded afterwards.
    rec.rings.take();
    assert!(flightrec::rings::teardown(&rec.config.recorder.pin_dir).unwrap());
    assert!(!rec.config.recorder.pin_dir.exists());
}

#[test]
fn pid_filter_follows_children_and_cgroup_filter_selects_members() {
    let Some(_p) = privileged("pid_filter_follows_children_and_cgroup_filter_selects_members")
    else {
        return;
    };
    // pid filter on this test process: the workload it forks is followed, others are not.
    let me = std::process::id();
    let rec = TestRecorder::start("pidfilter", |c| {
        c.recorder.ring_size = "4MiB".into();
        c.filter.pids = vec![me];
        c.filter.follow_children = true;
    });
    let pid = workload(&["getpgid", "50"]);
    let other = std::process::Command::new("true").status().unwrap();
    assert!(other.success());
    let (_m, events) = rec.snapshot("pidfilter");
    let marked = syscalls_of(&events, pid)
        .iter()
        .filter(|c| c.0 && c.1 == nr::GETPGID && c.2 as u64 >= MAGIC)
        .count();
    assert_eq!(marked, 50, "the forked child was not followed");
    let syscall_pids: std::collections::HashSet<u32> = events
        .iter()
        .filter(|e| matches!(e.data, EventData::SyscallEntry(_)))
        .map(|e| e.pid)
        .collect();
    // Only this process and its children (workload, true) made recorded syscalls.
    assert!(syscall_pids.contains(&me) && syscall_pids.contains(&pid));
    assert!(
        syscall_pids.len() <= 3,
        "unfiltered processes recorded: {syscall_pids:?}"
    );
    drop(rec);

    // cgroup filter: a child placed in a fresh cgroup v2 group before it execs.
    let Some(root) = flightrec::statedump::cgroup2_mount() else {
        panic!("no cgroup2 mount");
    };
    let group = root.join("flightrec-test-filter");
    let _ = std::fs::remove_dir(&group);
    std::fs::create_dir(&group).expect("create cgroup");
    let rec = TestRecorder::start("cgfilter", |c| {
        c.recorder.ring_size = "4MiB".into();
        c.filter.cgroups = vec!["/flightrec-test-filter".into()];
    });
    let procs = group.join("cgroup.procs");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_workload"));
    cmd.args(["getpgid", "30"]);
    // SAFETY: the closure only writes a file, which is async-signal-safe enough for a test.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    let mut child = cmd.spawn().unwrap();
    let in_group = child.id();
    assert!(child.wait().unwrap().success());
    let outside = workload(&["getpgid", "30"]);
    let (m, events) = rec.snapshot("cgfilter");
    let count = |pid| {
        syscalls_of(&events, pid)
            .iter()
            .filter(|c| c.0 && c.1 == nr::GETPGID && c.2 as u64 >= MAGIC)
            .count()
    };
    assert_eq!(count(in_group), 30);
    assert_eq!(
        count(outside),
        0,
        "a process outside the cgroup was recorded"
    );
    assert!(
        events
            .iter()
            .filter(|e| matches!(e.data, EventData::SyscallEntry(_)))
            .all(|e| e.pid == in_group),
        "syscalls of other cgroups were recorded"
    );
    assert_eq!(
        m.recorder.filter.cgroups,
        vec!["/flightrec-test-filter".to_string()]
    );
    drop(rec);
    std::fs::remove_dir(&group).expect("remove cgroup");
}

#[test]
fn open_paths_and_cgroup_ids_are_recorded_in_the_kernel() {
    let Some(_p) = privileged("open_paths_and_cgroup_ids_are_recorded_in_the_kernel") else {
        return;
    };
    let Some(root) = flightrec::statedump::cgroup2_mount() else {
        panic!("no cgroup2 mount");
    };
    let group = root.join("flightrec-test-kcgroup");
    let _ = std::fs::remove_dir(&group);
    std::fs::create_dir(&group).expect("create cgroup");
    let group_id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&group).unwrap());
    let rec = TestRecorder::start("kcgroup", |c| {
        c.recorder.ring_size = "8MiB".into();
    });
    // The workload opens DIR/workload.dat, writes, fsyncs and exits, all inside the group.
    let data_dir = util::scratch_dir("kcgroup-data");
    let file = data_dir.join("workload.dat");
    let procs = group.join("cgroup.procs");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_workload"));
    cmd.args(["syscalls", data_dir.to_str().unwrap()]);
    // SAFETY: the closure only writes a file, which is async-signal-safe enough for a test.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    assert!(child.wait().unwrap().success());
    // The group is gone before the snapshot, as a finished job's transient group would be.
    std::fs::remove_dir(&group).expect("remove cgroup");
    let (_m, events) = rec.snapshot("kcgroup");

    // The open's path record comes right before its entry on the same thread, same time.
    let mine: Vec<&schemas::event::Event> = events.iter().filter(|e| e.tid == pid).collect();
    let full = file.to_str().unwrap();
    let at = mine
        .iter()
        .position(|e| matches!(e.data, EventData::SyscallPath(p, _) if full.starts_with(schemas::cstr_lossy(&p.path).as_str()) && p.path[0] == b'/'))
        .expect("no path record of the workload's open");
    let EventData::SyscallPath(path, cut) = mine[at].data else {
        unreachable!()
    };
    let got = schemas::cstr_lossy(&path.path);
    assert_eq!(
        cut,
        full.len() >= schemas::SYSCALL_PATH_LEN - 1,
        "cut flag for {full}"
    );
    if !cut {
        assert_eq!(got, full);
    }
    let entry = mine[at + 1];
    assert!(
        matches!(entry.data, EventData::SyscallEntry(s) if s.id == path.id && s.id == nr::OPENAT),
        "the path is not followed by its openat entry: {:?}",
        entry.data
    );
    assert_eq!(entry.ts_ns, mine[at].ts_ns);

    // Every switch out after it joined the group (it has by its open) and its exit carry the
    // (now removed) group's id.
    let switches: Vec<u64> = mine[at..]
        .iter()
        .filter_map(|e| match e.data {
            EventData::SchedSwitch(s) => Some(s.prev_cgroup),
            _ => None,
        })
        .collect();
    assert!(!switches.is_empty(), "the workload never switched out");
    assert!(
        switches.iter().all(|&c| c == group_id),
        "switch-out cgroups {switches:?}, want {group_id}"
    );
    let exit = events
        .iter()
        .find_map(|e| match e.data {
            EventData::ProcessExit(x) if x.tid == pid => Some(x),
            _ => None,
        })
        .expect("no exit of the workload");
    assert_eq!(exit.cgroup, group_id);
}

/// A real process's fds named by analyze: a file it opened, fsynced and closed inside the
/// window (named by its openat's path record: the statedump no longer lists it), and a
/// connected loopback TCP socket it still holds at the snapshot (named by the statedump with
/// both addresses).
#[test]
fn fds_are_named_by_open_records_and_by_the_statedump() {
    let Some(_p) = privileged("fds_are_named_by_open_records_and_by_the_statedump") else {
        return;
    };
    let rec = TestRecorder::start("fdnames", |c| c.recorder.ring_size = "8MiB".into());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let file = format!("/tmp/flightrec-fdnames-{}.dat", std::process::id());
    let script = format!(
        "import os, socket, sys\n\
         f = open({file:?}, 'w'); f.write('x' * 4096); f.flush(); os.fsync(f.fileno()); f.close()\n\
         s = socket.create_connection(('127.0.0.1', {port})); s.sendall(b'query')\n\
         print('ready', flush=True)\n\
         sys.stdin.read()\n"
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let (_conn, peer) = listener.accept().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    let pid = child.id();
    let path = rec.snapshot_file("fdnames");
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_file(&file);

    let (m, _) = flightrec_reader::dump::open(&path).unwrap();
    let p = m.statedump.processes.iter().find(|p| p.pid == pid).unwrap();
    let sock = format!("tcp {peer}->127.0.0.1:{port}");
    assert!(
        p.fds
            .iter()
            .any(|f| f.socket.as_deref() == Some(sock.as_str())),
        "{:?}",
        p.fds
    );
    assert!(!p.fds.iter().any(|f| f.target == file), "{:?}", p.fds);

    let opts = flightrec_reader::analyze::Options {
        top: 1000,
        filter: flightrec_reader::analyze::Filter {
            pids: vec![pid],
            ..Default::default()
        },
        ..Default::default()
    };
    let r = flightrec_reader::analyze::analyze(&path, &opts).unwrap();
    let calls = &r.syscalls.ok().expect("syscalls recorded").slowest;
    let named = |syscall: &str| -> Vec<Option<&str>> {
        calls
            .iter()
            .filter(|c| c.syscall == syscall)
            .map(|c| c.fd_name.as_deref())
            .collect()
    };
    assert_eq!(named("fsync"), [Some(file.as_str())], "{calls:#?}");
    assert!(
        named("sendto").contains(&Some(sock.as_str())),
        "{:?}",
        named("sendto")
    );
}

/// A record reserved in the kernel's ring and never written (a program stalled between its
/// reservation and its write) is waited for, then counted lost: the walk stops there, never
/// misreads what the ring held before, and recording goes on behind it.
#[test]
fn a_torn_record_is_waited_for_then_counted_lost_and_never_misread() {
    let Some(_p) = privileged("a_torn_record_is_waited_for_then_counted_lost_and_never_misread")
    else {
        return;
    };
    let rec = TestRecorder::start("torn", |c| {
        c.recorder.ring_size = "1MiB".into();
        c.events.sched = false;
        c.events.process = false;
        c.events.block = false;
        c.events.irq = false;
        c.filter.comms = vec!["workload".into()];
    });
    let first = workload(&["getpgid", "2000", "0"]);
    // A hole of three records' size where the next record of CPU 0 would go.
    let mut reserved = false;
    for _ in 0..100 {
        reserved = rec.rings().reserve_unwritten(0, 72);
        if reserved {
            break;
        }
        workload(&["getpgid", "1", "0"]);
    }
    assert!(reserved, "no room to reserve in CPU 0's packet");
    let second = workload(&["getpgid", "2000", "0"]);
    let started = std::time::Instant::now();
    let f = rec.rings().freeze();
    let waited = started.elapsed();
    let c0 = &f.coverage[0];
    assert_eq!(c0.records_lost, 1, "{c0:?}");
    assert!(
        waited >= std::time::Duration::from_millis(100),
        "waited {waited:?}"
    );
    // What comes after the hole in its packet is lost with it; everything else is whole:
    // the calls before it, and those after it in later packets.
    let calls = |pid: u32| -> Vec<u64> {
        f.cpus[0]
            .iter()
            .filter(|r| r.tid == pid && r.kind == schemas::EventKind::SyscallEntry as u16)
            .map(|r| r.payload::<schemas::SyscallEntry>())
            .filter(|e| e.id == nr::GETPGID && e.args[0] >= MAGIC)
            .map(|e| e.args[0] - MAGIC)
            .collect()
    };
    assert_eq!(calls(first), (0..2000).collect::<Vec<_>>());
    let later = calls(second);
    assert!(later.len() > 1500, "{} calls after the hole", later.len());
    assert!(later.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(*later.last().unwrap(), 1999);
    // Recording goes on: the next window holds the next calls whole.
    let third = workload(&["getpgid", "500", "0"]);
    let g = rec.rings().freeze();
    assert_eq!(g.coverage[0].records_lost, 0);
    let n = g.cpus[0]
        .iter()
        .filter(|r| r.tid == third && r.kind == schemas::EventKind::SyscallEntry as u16)
        .count();
    assert!(n >= 500, "{n} entries of the third workload");
}

/// Writers keep recording into the spill while a snapshot holds the frozen ring; folded back,
/// those records are in the next snapshot. A spill that wraps during a long copy loses its
/// oldest records, counted in the next snapshot's `records_lost`, and nothing else.
#[test]
fn the_spill_records_during_a_copy_and_is_folded_back() {
    let Some(_p) = privileged("the_spill_records_during_a_copy_and_is_folded_back") else {
        return;
    };
    let rec = TestRecorder::start("spill", |c| {
        c.recorder.ring_size = "1MiB".into(); // 256 packets; a 16-packet spill
        c.events.sched = false;
        c.events.process = false;
        c.events.block = false;
        c.events.irq = false;
        c.filter.comms = vec!["workload".into()];
    });
    assert_eq!(rec.rings().spill_packets(), 16);
    // A copy during which 300 calls are made: they fit in the spill.
    let frozen = rec.rings().freeze_epoch();
    let during = workload(&["getpgid", "300", "0"]);
    assert_eq!(rec.rings().active_epoch(), 1, "writers are in the spill");
    drop(frozen);
    assert_eq!(
        rec.rings().active_epoch(),
        0,
        "writers are back in the main ring"
    );
    let after = workload(&["getpgid", "300", "0"]);
    let f = rec.rings().freeze();
    assert_eq!(f.coverage[0].records_lost, 0);
    let entries = |pid: u32| {
        f.cpus[0]
            .iter()
            .filter(|r| r.tid == pid && r.kind == schemas::EventKind::SyscallEntry as u16)
            .map(|r| r.payload::<schemas::SyscallEntry>())
            .filter(|e| e.id == nr::GETPGID && e.args[0] >= MAGIC)
            .count()
    };
    assert_eq!((entries(during), entries(after)), (300, 300));
    assert!(
        f.cpus[0].windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
        "the folded spill is not in its place in time"
    );
    // A copy during which far more than the spill holds is recorded: it wraps.
    let frozen = rec.rings().freeze_epoch();
    let flood = workload(&["getpgid", "20000", "0"]);
    drop(frozen);
    let f = rec.rings().freeze();
    let c0 = &f.coverage[0];
    assert!(c0.records_lost > 20_000, "{c0:?}");
    let kept: Vec<u64> = f.cpus[0]
        .iter()
        .filter(|r| r.tid == flood && r.kind == schemas::EventKind::SyscallEntry as u16)
        .map(|r| r.payload::<schemas::SyscallEntry>())
        .filter(|e| e.id == nr::GETPGID && e.args[0] >= MAGIC)
        .map(|e| e.args[0] - MAGIC)
        .collect();
    // The spill's newest records survive, contiguous, up to the last call.
    assert!(!kept.is_empty() && kept.len() < 20_000);
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(*kept.last().unwrap(), 19_999);
}
