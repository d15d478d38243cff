//! Privileged end-to-end tests of `flightrec analyze` on real snapshots with planted behaviour.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use flightrec_reader::analyze::{FindingKind, Options, Report, analyze};

use crate::readers::{have_lttng_analyses, lttng_mi};
use crate::util::{TestRecorder, privileged, workload};

fn run(rec: &TestRecorder, name: &str) -> (PathBuf, Report) {
    let path = rec.snapshot_file(name);
    let report = analyze(&path, &Options::default()).expect("analyze");
    (path, report)
}

/// A fresh cgroup v2 group, removed on drop (after its members are gone).
pub(crate) struct Group {
    path: PathBuf,
    /// Its path below the cgroup2 mount, as analyze names it (`/name`).
    pub name: String,
}

impl Group {
    pub fn new(name: &str) -> Group {
        let root = flightrec::statedump::cgroup2_mount().expect("a cgroup2 mount");
        let path = root.join(name);
        if path.exists() {
            // A crashed run left it: empty it into the root, then remove it.
            if let Ok(pids) = std::fs::read_to_string(path.join("cgroup.procs")) {
                for pid in pids.lines() {
                    let _ = std::fs::write(root.join("cgroup.procs"), pid);
                }
            }
            let _ = std::fs::remove_dir(&path);
        }
        std::fs::create_dir(&path).expect("create cgroup");
        Group {
            path,
            name: format!("/{name}"),
        }
    }

    /// Starts the workload with `args` inside this group (moved there before it execs).
    fn spawn(&self, args: &[&str]) -> Child {
        self.spawn_bin(env!("CARGO_BIN_EXE_workload"), args)
    }

    /// Starts `bin` with `args` inside this group.
    pub fn spawn_bin(&self, bin: &str, args: &[&str]) -> Child {
        let procs = self.path.join("cgroup.procs");
        let mut cmd = Command::new(bin);
        cmd.args(args);
        // SAFETY: the closure only writes a file.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        cmd.spawn().expect("spawn workload")
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A group of the cgroup v1 `cpu` controller with a CPU weight, when the machine has one
/// (hosts where cgroup v2 lacks the controller): the neighbour's weight, as a container
/// runtime sets it, so that on a busy machine its hogs take the CPU rather than whatever else
/// runs there. Removed on drop, after its members are gone.
pub(crate) struct CpuWeight(Option<PathBuf>);

impl CpuWeight {
    pub fn new(name: &str, shares: u32) -> CpuWeight {
        let dir = Path::new("/sys/fs/cgroup/cpu").join(name);
        if !Path::new("/sys/fs/cgroup/cpu/cpu.shares").exists() {
            return CpuWeight(None);
        }
        let _ = std::fs::create_dir(&dir);
        std::fs::write(dir.join("cpu.shares"), shares.to_string()).expect("cpu.shares");
        CpuWeight(Some(dir))
    }

    pub fn add(&self, pid: u32) {
        if let Some(dir) = &self.0 {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("join cpu group");
        }
    }
}

impl Drop for CpuWeight {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn a_200ms_poll_is_the_slowest_syscall() {
    let Some(_p) = privileged("a_200ms_poll_is_the_slowest_syscall") else {
        return;
    };
    let rec = TestRecorder::start("an-poll", |_| {});
    // Waiting with WNOHANG polls keeps this process's own wait4 short: blocking in wait4 for
    // the whole poll would rightly rank as slow as the poll itself.
    let mut child = Command::new(env!("CARGO_BIN_EXE_workload"))
        .args(["poll", "200"])
        .spawn()
        .expect("spawn workload");
    let pid = child.id();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            assert!(st.success());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (_, r) = run(&rec, "an-poll");
    let s = r.syscalls.ok().expect("syscalls recorded");
    let top = &s.slowest[0];
    assert_eq!(
        (top.pid, top.tid, top.syscall.as_str(), top.ret),
        (pid, pid, "poll", 0),
        "slowest calls: {:#?}",
        &s.slowest[..3.min(s.slowest.len())]
    );
    assert!(
        (200_000_000..400_000_000).contains(&top.duration_ns),
        "poll took {} ns",
        top.duration_ns
    );
    assert_eq!(top.comm, "workload");
    let poll = s.by_syscall.iter().find(|x| x.name == "poll").unwrap();
    assert!(poll.latency.max_ns == top.duration_ns);
    assert_eq!(
        r.window.events,
        r.completeness.cpus.iter().map(|c| c.kept).sum::<u64>()
    );
}

#[test]
fn cpu_hogs_in_one_cgroup_delay_and_preempt_a_task_in_another() {
    let Some(_p) = privileged("cpu_hogs_in_one_cgroup_delay_and_preempt_a_task_in_another") else {
        return;
    };
    let hogs = Group::new("flightrec-test-hogs");
    let victims = Group::new("flightrec-test-victim");
    // The hogs' group weighs more, so that on a busy machine they, not its other load, are
    // what delays the victim.
    let weight = CpuWeight::new("flightrec-test-hogs", 16 * 1024);
    let rec = TestRecorder::start("an-noisy", |c| c.recorder.ring_size = "16MiB".into());
    // Two hogs and a task that works 5 ms then sleeps 1 ms, all on CPU 0, for about a second.
    // All are still alive at the snapshot, so the statedump knows the cgroups they moved to.
    let mut hog_a = hogs.spawn(&["spin", "5000", "0"]);
    let mut hog_b = hogs.spawn(&["spin", "5000", "0"]);
    weight.add(hog_a.id());
    weight.add(hog_b.id());
    let mut victim = victims.spawn(&["spinsleep", "1000", "5", "1", "0"]);
    let vpid = victim.id();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let (_, r) = run(&rec, "an-noisy");
    for h in [&mut hog_a, &mut hog_b, &mut victim] {
        let _ = h.kill();
        let _ = h.wait();
    }
    drop(weight);
    let s = r.sched.ok().expect("sched recorded");
    let v = s
        .by_victim_cgroup
        .iter()
        .find(|g| g.cgroup == victims.name)
        .unwrap_or_else(|| {
            panic!(
                "no victim group {}: {:#?}",
                victims.name, s.by_victim_cgroup
            )
        });
    let delayer = &v.top_delayers[0];
    assert_eq!(
        (
            delayer.cgroup.as_str(),
            delayer.comm.as_str(),
            delayer.class
        ),
        (hogs.name.as_str(), "workload", "other_cgroup"),
        "delayers: {:#?}",
        v.top_delayers
    );
    assert!(v.delay_ns.other_cgroup > v.delay_ns.same_cgroup + v.delay_ns.system);
    let preemptor = &v.top_preemptors[0];
    assert_eq!(
        (preemptor.cgroup.as_str(), preemptor.class),
        (hogs.name.as_str(), "other_cgroup"),
        "preemptors: {:#?}",
        v.top_preemptors
    );
    let pr = &v.preemptions;
    assert!(
        pr.other_cgroup >= 1 && pr.other_cgroup > pr.same_cgroup + pr.system,
        "{pr:?}"
    );
    // The victim's wakeups are there, with its cgroup.
    let p = s
        .by_process
        .iter()
        .chain(s.by_cgroup.iter())
        .find(|g| g.cgroup == victims.name);
    assert!(p.is_some(), "no latency entry for the victim cgroup");
    let cpu = r.cpu.ok().unwrap();
    let hog_time: u64 = cpu
        .by_process
        .iter()
        .filter(|p| p.cgroup.as_deref() == Some(hogs.name.as_str()))
        .map(|p| p.time.on_cpu_ns)
        .sum();
    assert!(hog_time > 0, "hogs not among the busiest processes");
    assert!(
        cpu.by_thread
            .iter()
            .any(|t| t.time.tid == vpid || t.time.pid == vpid)
            || hog_time > 0
    );
}

#[test]
fn a_burst_of_short_lived_execs_shows_with_its_parent() {
    let Some(_p) = privileged("a_burst_of_short_lived_execs_shows_with_its_parent") else {
        return;
    };
    let rec = TestRecorder::start("an-execs", |_| {});
    let true_bin = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("true(1)");
    let parent = workload(&["execs", "20", true_bin]);
    let (_, r) = run(&rec, "an-execs");
    let p = r.processes.ok().expect("process events recorded");
    let execs: Vec<_> = p
        .log
        .iter()
        .filter(|e| e.event == "exec" && e.filename.as_deref() == Some(true_bin))
        .collect();
    assert_eq!(execs.len(), 20, "log: {:#?}", p.log);
    for e in &execs {
        assert_eq!(
            (e.ppid, e.parent_comm.as_str(), e.comm.as_str()),
            (parent, "workload", "true")
        );
    }
    let children: Vec<u32> = execs.iter().map(|e| e.pid).collect();
    let forks = p
        .log
        .iter()
        .filter(|e| e.event == "fork" && children.contains(&e.pid))
        .count();
    assert_eq!(forks, 20);
    let exits: Vec<_> = p
        .log
        .iter()
        .filter(|e| e.event == "exit" && children.contains(&e.pid))
        .collect();
    assert_eq!(exits.len(), 20);
    assert!(
        exits
            .iter()
            .all(|e| e.lifetime_ns.is_some_and(|l| l > 0 && l < 1_000_000_000))
    );
    assert!(p.short_lived >= 20);
}

fn num(v: &serde_json::Value) -> f64 {
    v["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Asserts count and min/max exactly and the mean to the microsecond.
fn same(
    what: &str,
    theirs: &[serde_json::Value],
    ours: &flightrec_reader::analyze::stats::LatencyStats,
) {
    assert_eq!(num(&theirs[1]) as u64, ours.count, "{what}: count");
    assert_eq!(num(&theirs[2]) as u64, ours.min_ns, "{what}: min");
    assert!(
        (num(&theirs[3]) - ours.avg_ns as f64).abs() < 1000.0,
        "{what}: avg {} vs {}",
        num(&theirs[3]),
        ours.avg_ns
    );
    assert_eq!(num(&theirs[4]) as u64, ours.max_ns, "{what}: max");
}

/// lttng-analyses, reading our CTF export, and `flightrec analyze` agree on one real snapshot:
/// syscall stats of a planted workload, scheduling latency, disk latency and interrupts.
#[test]
fn lttng_analyses_agree_with_analyze() {
    let Some(_p) = privileged("lttng_analyses_agree_with_analyze") else {
        return;
    };
    if !have_lttng_analyses("lttng_analyses_agree_with_analyze") {
        return;
    }
    let rec = TestRecorder::start("an-lttng", |c| c.recorder.ring_size = "16MiB".into());
    let data = crate::util::scratch_dir("an-lttng-data");
    let io = workload(&["syscalls", data.to_str().unwrap()]);
    let sleeper = workload(&["sleeper", "20", "2"]);
    // A slow flush (32 MiB dirtied, then fdatasync), so the report has findings to compare.
    let out = data.join("flush.out");
    let mut flusher = Command::new(env!("CARGO_BIN_EXE_causes"))
        .args(["flush", data.to_str().unwrap(), "32", out.to_str().unwrap()])
        .spawn()
        .expect("spawn causes");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !out.exists() {
        assert!(
            std::time::Instant::now() < until,
            "the flush never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let flush_pid = flusher.id();
    let path = rec.snapshot_file("an-lttng");
    let _ = flusher.kill();
    let _ = flusher.wait();
    let opts = Options {
        top: 100_000,
        ..Options::default()
    };
    let r = analyze(&path, &opts).expect("analyze");
    let trace = path.with_extension("ctf");
    flightrec_reader::export::export(&path, flightrec_reader::export::Format::Ctf, &trace)
        .expect("export");
    let kernel = trace.join("kernel");

    // Syscalls of the planted workload: every syscall row.
    let sys = r.syscalls.ok().unwrap();
    let ours = sys
        .by_process
        .iter()
        .find(|p| p.pid == io)
        .expect("workload in by_process");
    let tables = lttng_mi("syscallstats-mi", &kernel);
    let title = format!("TID: {io})");
    let table = tables
        .iter()
        .find(|t| {
            t["class"]["title"]
                .as_str()
                .is_some_and(|s| s.contains(&title))
        })
        .expect("lttng table of the workload");
    let rows = table["data"].as_array().unwrap();
    assert_eq!(rows.len(), ours.syscalls.len(), "syscalls of the workload");
    for row in rows {
        let row = row.as_array().unwrap();
        let name = row[0]["name"].as_str().unwrap();
        let mine = ours
            .syscalls
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        same(&format!("syscall {name}"), row, &mine.latency);
    }
    assert!(
        ours.syscalls
            .iter()
            .any(|s| s.name == "getpgid" && s.latency.count == 1000)
    );

    // Scheduling latency: every wakeup, and the sleeper's.
    let sched = r.sched.ok().unwrap();
    let log = lttng_mi("schedlog-mi", &kernel);
    let rows: Vec<&Vec<serde_json::Value>> = log
        .iter()
        .flat_map(|t| t["data"].as_array().unwrap())
        .map(|r| r.as_array().unwrap())
        .collect();
    let lat: Vec<u64> = rows.iter().map(|r| num(&r[2]) as u64).collect();
    assert_eq!(lat.len() as u64, sched.latency.count, "wakeups");
    assert_eq!(lat.iter().min().copied().unwrap_or(0), sched.latency.min_ns);
    assert_eq!(lat.iter().max().copied().unwrap_or(0), sched.latency.max_ns);
    assert_eq!(lat.iter().sum::<u64>(), sched.latency.total_ns);
    // Columns: wakeup, switch, latency, priority, CPU, wakee, waker.
    let theirs: Vec<u64> = rows
        .iter()
        .filter(|r| r[5]["tid"].as_u64() == Some(u64::from(sleeper)))
        .map(|r| num(&r[2]) as u64)
        .collect();
    let mine = sched
        .by_process
        .iter()
        .find(|g| g.pid == Some(sleeper))
        .expect("sleeper wakeups");
    assert!(theirs.len() >= 20, "sleeper woke {} times", theirs.len());
    assert_eq!(theirs.len() as u64, mine.latency.count);
    assert_eq!(theirs.iter().sum::<u64>(), mine.latency.total_ns);

    // Disk latency per device.
    let block = r.block.ok().unwrap();
    let io_tables = lttng_mi("iolatencystats-mi", &kernel);
    let disks = io_tables
        .iter()
        .find(|t| t["class"] == "disk-latency-stats")
        .expect("disk table");
    let disks = disks["data"].as_array().unwrap();
    assert_eq!(disks.len(), block.devices.len(), "disks");
    assert!(!disks.is_empty(), "the fsync wrote to no disk");
    for row in disks {
        let row = row.as_array().unwrap();
        let name = row[0]["name"]
            .as_str()
            .unwrap()
            .trim_matches(['(', ')'])
            .replace(',', ":");
        // lttng names disks major:minor; analyze by their kernel name when the statedump has it.
        let kernel_name = std::fs::read_link(format!("/sys/dev/block/{name}"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let dev = block
            .devices
            .iter()
            .find(|d| d.dev == name || Some(&d.dev) == kernel_name.as_ref())
            .expect("device");
        same(&format!("disk {name}"), row, &dev.latency);
    }

    // Interrupts: every hard irq and softirq vector.
    let irq = r.irq.ok().unwrap();
    let irq_tables = lttng_mi("irqstats-mi", &kernel);
    for t in &irq_tables {
        for row in t["data"].as_array().unwrap() {
            let row = row.as_array().unwrap();
            let nr = row[0]["nr"].as_u64().unwrap() as u32;
            if row[0]["hard"] == true {
                let mine = irq.hard.iter().find(|h| h.irq == nr).expect("irq");
                same(&format!("irq {nr}"), row, &mine.duration);
            } else {
                let mine = irq.soft.iter().find(|s| s.vec == nr).expect("softirq");
                same(&format!("softirq {nr}"), row, &mine.duration);
            }
        }
    }
    let hard_rows: usize = irq_tables
        .iter()
        .filter(|t| t["class"] == "hard-stats")
        .map(|t| t["data"].as_array().unwrap().len())
        .sum();
    assert_eq!(hard_rows, irq.hard.len());

    // The findings, where lttng-analyses measures the same thing: a process's slowest calls
    // of one syscall (syscallstats of its thread, for single-threaded processes), a device's
    // slowest request (iolatencystats), one wakeup's wait to run (schedlog).
    let (manifest, _) = flightrec_reader::dump::open(&path).expect("open snapshot");
    let single_threaded = |pid: u32| {
        manifest
            .statedump
            .processes
            .iter()
            .any(|p| p.pid == pid && p.threads.len() == 1)
    };
    let mut compared = Vec::new();
    for f in &r.findings {
        let e = &f.evidence;
        match f.kind {
            FindingKind::SlowSyscall => {
                let pid = e.pid.expect("pid");
                // Tables are per thread, the finding per process: compare processes of one
                // thread (at the freeze), whose table is titled `comm (PID, TID: PID)`. Only
                // the planted ones: a process of the machine's that forked or exec'd in the
                // window is counted differently by a per-thread table.
                if !single_threaded(pid) || ![io, sleeper, flush_pid].contains(&pid) {
                    continue;
                }
                let title = format!("({pid}, TID: {pid})");
                let Some(t) = tables.iter().find(|t| {
                    t["class"]["title"]
                        .as_str()
                        .is_some_and(|s| s.contains(&title))
                }) else {
                    continue;
                };
                let name = e.syscall.as_deref().unwrap();
                let row = t["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_array().unwrap())
                    .find(|r| r[0]["name"].as_str() == Some(name))
                    .unwrap_or_else(|| panic!("lttng has no {name} of pid {pid}"));
                assert_eq!(num(&row[4]) as u64, e.duration_ns, "{}: longest", f.text);
                assert_eq!(num(&row[1]) as u64, e.count, "{}: calls", f.text);
                compared.push(format!("{name} of {pid}"));
            }
            FindingKind::SlowBlockIo => {
                let dev = e.dev.as_deref().unwrap();
                let row = disks
                    .iter()
                    .map(|r| r.as_array().unwrap())
                    .find(|r| {
                        let mm = r[0]["name"]
                            .as_str()
                            .unwrap()
                            .trim_matches(['(', ')'])
                            .replace(',', ":");
                        let kname = std::fs::read_link(format!("/sys/dev/block/{mm}"))
                            .ok()
                            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
                        mm == dev || kname.as_deref() == Some(dev)
                    })
                    .unwrap_or_else(|| panic!("lttng has no disk {dev}"));
                assert_eq!(num(&row[4]) as u64, e.duration_ns, "{}: slowest", f.text);
                assert_eq!(num(&row[1]) as u64, e.count, "{}: requests", f.text);
                compared.push(format!("disk {dev}"));
            }
            FindingKind::RunQueueWait => {
                let tid = u64::from(e.tid.expect("tid"));
                assert!(
                    rows.iter()
                        .any(|r| r[5]["tid"].as_u64() == Some(tid)
                            && num(&r[2]) as u64 == e.duration_ns),
                    "{}: lttng-schedlog has no wakeup of {tid} waiting {} ns",
                    f.text,
                    e.duration_ns
                );
                compared.push(format!("wakeup of {tid}"));
            }
            _ => {}
        }
    }
    println!("findings compared with lttng-analyses: {compared:?}");
    assert!(
        compared
            .iter()
            .any(|c| c == &format!("fdatasync of {flush_pid}")),
        "the planted fdatasync is not a finding lttng-analyses could check: {compared:?}\n{:#?}",
        r.findings
    );
    let _ = std::fs::remove_dir_all(&trace);
}
