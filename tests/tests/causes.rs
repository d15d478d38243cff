//! Six causes of one slow request, each planted among idle daemons and other load: for each,
//! `flightrec analyze` names the cause in its first or second finding, in the JSON report and
//! on the first 40 lines of the text. The request reports itself as a webserver module does
//! (thread, start, duration), so the snapshot's trigger carries what a hook call would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use flightrec_reader::analyze::{Options, Report, analyze, render};
use schemas::manifest::TriggerInfo;

use crate::analyze::{CpuWeight, Group};
use crate::util::{Privileged, TestRecorder, disk_dev_of, privileged, scratch_dir};

const CAUSES: &str = env!("CARGO_BIN_EXE_causes");

/// Children killed when the test ends, failed or not.
struct Reaped(Vec<Child>);

impl Reaped {
    fn add(&mut self, c: Child) -> u32 {
        let pid = c.id();
        self.0.push(c);
        pid
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(bin: &str, args: &[&str]) -> Child {
    Command::new(bin).args(args).spawn().expect("spawn")
}

/// Idle daemons (an event loop, a parked worker, a timer) and a process that works a little
/// every 10 ms: what surrounds a slow request on any server.
fn noise() -> Reaped {
    let mut r = Reaped(Vec::new());
    r.add(spawn(CAUSES, &["idle"]));
    r.add(spawn(CAUSES, &["idle"]));
    r.add(spawn(CAUSES, &["busy"]));
    std::thread::sleep(Duration::from_millis(100));
    r
}

/// A request as its server reports it: thread, start on the realtime clock, duration.
struct Served {
    tid: u32,
    start_realtime_ns: u64,
    duration_ns: u64,
}

/// Waits for the request the server `child` reports in `out`; the server stays up (in
/// `reaped`) so the snapshot's statedump knows it.
fn served(out: &Path, mut child: Child, reaped: &mut Reaped) -> Served {
    let until = Instant::now() + Duration::from_secs(30);
    while !out.exists() {
        if let Some(st) = child.try_wait().expect("try_wait") {
            panic!("the request's process ended before its report: {st}");
        }
        assert!(Instant::now() < until, "no report of the request in 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    reaped.add(child);
    let text = std::fs::read_to_string(out).expect("the request's report");
    let v: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    Served {
        tid: v[0] as u32,
        start_realtime_ns: v[1],
        duration_ns: v[2],
    }
}

/// Snapshots with the trigger a hook call about `req` makes, and analyzes it.
fn snapshot(rec: &TestRecorder, name: &str, req: &Served) -> (Report, String) {
    let frozen = rec.rings().freeze();
    let mut fields = serde_json::Map::new();
    fields.insert("url".into(), format!("/{name}?id=1").into());
    fields.insert("method".into(), "GET".into());
    fields.insert("duration_ms".into(), (req.duration_ns as f64 / 1e6).into());
    fields.insert("tid".into(), req.tid.into());
    fields.insert("start_realtime_ns".into(), req.start_realtime_ns.into());
    let trigger = TriggerInfo {
        source: "hook".into(),
        reason: "slow request".into(),
        fields,
    };
    let w = flightrec::snapshot::write(&frozen, &rec.config, &rec.dir, Some(name), trigger)
        .expect("write snapshot");
    // FLIGHTREC_TEST_KEEP=DIR keeps each snapshot there, to look at with `flightrec analyze`.
    if let Ok(keep) = std::env::var("FLIGHTREC_TEST_KEEP") {
        std::fs::copy(&w.path, format!("{keep}/{name}.frs")).unwrap();
    }
    let report = analyze(&w.path, &Options::default()).expect("analyze");
    let mut text = Vec::new();
    render(&report, &mut text).expect("render");
    (report, String::from_utf8(text).expect("utf-8"))
}

/// Asserts that the first or second finding contains every word of `want`, in the JSON
/// report and on the first 40 lines of the text; prints and returns its rank.
fn cause_rank(test: &str, started: Instant, r: &Report, text: &str, want: &[&str]) -> usize {
    let json = serde_json::to_value(r).expect("json");
    let findings: Vec<&str> = json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["text"].as_str().expect("text"))
        .collect();
    let has = |t: &str| want.iter().all(|w| t.contains(w));
    let rank = findings.iter().position(|t| has(t)).map(|i| i + 1);
    let Some(rank) = rank.filter(|&k| k <= 2) else {
        panic!("{test}: no finding among the first two names {want:?} (rank {rank:?}):\n{text}");
    };
    let head: Vec<&str> = text.lines().take(40).collect();
    let line = format!("  {rank}. ");
    assert!(
        head.iter().any(|l| l.starts_with(&line) && has(l)),
        "{test}: finding {rank} is not on the first 40 lines:\n{text}"
    );
    println!(
        "{test}: finding {rank} of {}: {} [{:.1}s]",
        findings.len(),
        findings[rank - 1],
        started.elapsed().as_secs_f64()
    );
    rank
}

/// The kernel name of the disk holding `dir` (`vda`).
fn disk_name(dir: &Path) -> String {
    let dev = disk_dev_of(dir).expect("the scratch dir is on a block device");
    let link = std::fs::read_link(format!("/sys/dev/block/{}:{}", dev >> 20, dev & 0xfffff))
        .expect("sysfs link of the disk");
    link.file_name().unwrap().to_string_lossy().into_owned()
}

/// One planted cause in progress: the noise around it, the recorder and a scratch dir.
struct Case {
    test: &'static str,
    name: &'static str,
    t0: Instant,
    noise: Reaped,
    rec: TestRecorder,
    dir: PathBuf,
    _p: Privileged,
}

impl Case {
    /// Starts the noise and a recorder; `None` when the test cannot run here. The rings are
    /// deep enough to keep the request's span whole on a machine whose other load (builds,
    /// other recorders) fills them with tens of thousands of events a second.
    fn start(test: &'static str, name: &'static str) -> Option<Case> {
        let p = privileged(test)?;
        let t0 = Instant::now();
        let noise = noise();
        let rec = TestRecorder::start(name, |c| c.recorder.ring_size = "32MiB".into());
        let dir = scratch_dir(&format!("{name}-data"));
        Some(Case {
            test,
            name,
            t0,
            noise,
            rec,
            dir,
            _p: p,
        })
    }

    /// Where the request's server reports it.
    fn out(&self) -> String {
        self.dir.join("request.out").to_string_lossy().into_owned()
    }

    /// Waits for the request of `server` and analyzes the snapshot its hook call takes.
    fn serve(&mut self, server: Child) -> (Report, String) {
        let s = served(Path::new(&self.out()), server, &mut self.noise);
        snapshot(&self.rec, self.name, &s)
    }

    /// The rank of the finding naming `want` (see [`cause_rank`]).
    fn expect(&self, r: &Report, text: &str, want: &[&str]) -> usize {
        cause_rank(self.test, self.t0, r, text, want)
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_slow_fdatasync_is_named_with_its_disk() {
    let Some(mut c) = Case::start("a_slow_fdatasync_is_named_with_its_disk", "cause-flush") else {
        return;
    };
    let (disk, dir) = (disk_name(&c.dir), c.dir.to_string_lossy().into_owned());
    let server = spawn(CAUSES, &["flush", &dir, "512", &c.out()]);
    let (r, text) = c.serve(server);
    // The file is named: by its openat's path record, or by the statedump (the server keeps
    // it open) when the rings overwrote the open.
    c.expect(&r, &text, &["fdatasync", &disk, "flush.dat"]);
}

#[test]
fn a_request_behind_a_lock_names_the_holder_and_its_fsync() {
    let Some(mut c) = Case::start(
        "a_request_behind_a_lock_names_the_holder_and_its_fsync",
        "cause-lock",
    ) else {
        return;
    };
    let (disk, dir) = (disk_name(&c.dir), c.dir.to_string_lossy().into_owned());
    let server = spawn(CAUSES, &["lock", &dir, "512", &c.out()]);
    let (r, text) = c.serve(server);
    c.expect(&r, &text, &["futex", "fsync", &disk, "meanwhile causes"]);
}

#[test]
fn cpu_hogs_in_another_cgroup_starve_a_request() {
    let Some(mut c) = Case::start("cpu_hogs_in_another_cgroup_starve_a_request", "cause-cpu")
    else {
        return;
    };
    let hogs = Group::new("flightrec-test-cause-hogs");
    let served_by = Group::new("flightrec-test-cause-web");
    let weight = CpuWeight::new("flightrec-test-cause-hogs", 16 * 1024);
    let workload = env!("CARGO_BIN_EXE_workload");
    let mut hog_procs = Reaped(Vec::new());
    for _ in 0..4 {
        weight.add(hog_procs.add(hogs.spawn_bin(workload, &["spin", "5000", "0"])));
    }
    std::thread::sleep(Duration::from_millis(100));
    let server = served_by.spawn_bin(CAUSES, &["cpu", "50", "0", &c.out()]);
    let req = served(Path::new(&c.out()), server, &mut c.noise);
    // The hogs exit before the snapshot, as a finished batch job's would: the statedump never
    // sees them, and only the cgroup ids their kernel records carry can name their group.
    drop(hog_procs);
    let (r, text) = snapshot(&c.rec, c.name, &req);
    drop(weight);
    c.expect(&r, &text, &["to run", &hogs.name]);
}

#[test]
fn a_query_nobody_answers_is_a_timed_out_poll() {
    let Some(mut c) = Case::start("a_query_nobody_answers_is_a_timed_out_poll", "cause-net") else {
        return;
    };
    let server = spawn(CAUSES, &["net", &c.out()]);
    let (r, text) = c.serve(server);
    c.expect(&r, &text, &["poll", "nothing answered"]);
}

#[test]
fn a_burst_of_short_lived_processes_delays_a_request() {
    let Some(mut c) = Case::start(
        "a_burst_of_short_lived_processes_delays_a_request",
        "cause-burst",
    ) else {
        return;
    };
    let true_bin = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("true(1)");
    let agent = c.noise.add(spawn(CAUSES, &["storm", "400", true_bin, "0"]));
    std::thread::sleep(Duration::from_millis(100));
    let server = spawn(CAUSES, &["cpu", "100", "0", &c.out()]);
    let (r, text) = c.serve(server);
    c.expect(&r, &text, &[&format!("causes[{agent}]")]);
}

/// Receive packet steering of `lo` set to one CPU, put back on drop: packets sent on
/// loopback are then received (the NET_RX softirq) on that CPU, as a NIC's queue irq would
/// pin them.
struct Steer {
    path: &'static str,
    before: String,
}

impl Steer {
    fn to(cpu: u32) -> Option<Steer> {
        let path = "/sys/class/net/lo/queues/rx-0/rps_cpus";
        let before = std::fs::read_to_string(path).ok()?;
        std::fs::write(path, format!("{:x}", 1u64 << cpu)).ok()?;
        Some(Steer {
            path,
            before: before.trim().to_owned(),
        })
    }
}

impl Drop for Steer {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, &self.before);
    }
}

#[test]
fn a_softirq_storm_on_the_requests_cpu_steals_its_time() {
    let test = "a_softirq_storm_on_the_requests_cpu_steals_its_time";
    let Some(mut c) = Case::start(test, "cause-softirq") else {
        return;
    };
    let Some(_steer) = Steer::to(1) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: the kernel has no receive packet steering on lo");
        }
        println!("skipped {test}: the kernel has no receive packet steering on lo");
        return;
    };
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    c.noise.add(spawn(CAUSES, &["flood", &port, "0", "1500"]));
    std::thread::sleep(Duration::from_millis(200));
    let server = spawn(CAUSES, &["cpu", "100", "1", &c.out()]);
    let (r, text) = c.serve(server);
    c.expect(&r, &text, &["interrupts", "softirq NET_RX"]);
    let story = r.story.as_ref().expect("the request's story");
    assert_eq!(story.stolen[0].name, "softirq NET_RX", "{story:#?}");
    assert!(
        (story.interrupted_ns + story.waited_interrupts_ns) * 10 >= story.duration_ns,
        "interrupts took under 10% of the request's time: {story:#?}"
    );
}
