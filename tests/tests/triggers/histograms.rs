//! The in-kernel histograms through a real Prometheus: a run-queue load planted in a cgroup
//! answers `histogram_quantile` within a bucket of the median wait computed from the recorded
//! sched_switch events, its sum and count match the kernel's own schedstat, and the
//! noisy-neighbour pair counters name the cgroup of the hogs.

use std::net::SocketAddr;
use std::process::Child;
use std::time::Duration;

use schemas::event::EventData;

use super::alerts::{can_run, get, metrics_addr, query, sample, start_prometheus, until};
use super::{Daemon, read, wait_for_snapshots};
use crate::analyze::{CpuWeight, Group};
use crate::util::{privileged, scratch_dir, workload};

/// Run-queue wait and times run of a task, from `/proc/PID/schedstat` (the kernel's own
/// accounting: time on CPU, time waiting on a run queue, timeslices).
fn schedstat(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).expect("schedstat");
    let f: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (f[1], f[2])
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// The number of the first sample of a PromQL instant query.
fn number(prom: SocketAddr, q: &str) -> Option<f64> {
    let rows = query(prom, q);
    rows.first()?["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_reads_run_queue_latency_and_the_noisy_neighbour_from_kernel_histograms() {
    let test = "prometheus_reads_run_queue_latency_and_the_noisy_neighbour_from_kernel_histograms";
    let Some(_p) = can_run(test, "prometheus (Debian package prometheus)", "prometheus") else {
        return;
    };
    // Only the sched class, in rings that hold the whole run, so the waits can be computed
    // from the snapshot's events too.
    let d = Daemon::start("hist", |c| {
        c.metrics.listen = "127.0.0.1:0".into();
        c.recorder.ring_size = "32MiB".into();
        c.events.syscalls = false;
        c.events.process = false;
        c.events.block = false;
        c.events.irq = false;
    });
    let metrics = metrics_addr(&d);
    let dir = scratch_dir("hist-prometheus");
    let (_prom, prom) = start_prometheus(
        &dir,
        &format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: flightrec\n    \
             static_configs:\n      - targets: ['{metrics}']\n"
        ),
    );

    // Three hogs and a task that works 5 ms and sleeps 1 ms, all on CPU 0, in two new groups.
    let hogs = Group::new("flightrec-test-hist-hogs");
    let victims = Group::new("flightrec-test-hist-victim");
    // The hogs' group weighs more, so that on a busy machine they, not its other load, are what
    // preempts the victim.
    let weight = CpuWeight::new("flightrec-test-hist-hogs", 16 * 1024);
    let bin = env!("CARGO_BIN_EXE_workload");
    let mut children: Vec<Child> = (0..3)
        .map(|_| hogs.spawn_bin(bin, &["spin", "20000", "0"]))
        .collect();
    for c in &children {
        weight.add(c.id());
    }
    children.push(victims.spawn_bin(bin, &["spinsleep", "4000", "5", "1", "0"]));
    std::thread::sleep(Duration::from_secs(4));
    // Stopped tasks neither run nor wait: the kernel's counters and the histograms hold still
    // while Prometheus scrapes.
    for c in &children {
        signal(c, libc::SIGSTOP);
    }
    std::thread::sleep(Duration::from_millis(200));
    let (wait_ns, runs) = children[..3]
        .iter()
        .map(|c| schedstat(c.id()))
        .fold((0, 0), |(w, n), (a, b)| (w + a, n + b));
    assert!(runs > 100, "the hogs ran only {runs} times");
    let mean_s = wait_ns as f64 / runs as f64 / 1e9;

    let sel = format!("{{cgroup=\"{}\"}}", hogs.name);
    let count_q = format!("sum(flightrec_runqueue_latency_seconds_count{sel})");
    // Two scrapes after the stop agree: Prometheus holds the final counts.
    let mut last = None;
    until(
        30,
        "prometheus scraped the stopped hogs' histogram twice",
        || {
            let n = number(prom, &count_q)?;
            let same = last == Some(n);
            last = Some(n);
            std::thread::sleep(Duration::from_millis(1100));
            same.then_some(())
        },
    );
    let prom_mean = number(
        prom,
        &format!("sum(flightrec_runqueue_latency_seconds_sum{sel}) / {count_q}"),
    )
    .expect("mean wait");
    let median = number(
        prom,
        &format!(
            "histogram_quantile(0.5, sum by (le) (flightrec_runqueue_latency_seconds_bucket{sel}))"
        ),
    )
    .expect("median wait");
    let n = number(prom, &count_q).unwrap();
    eprintln!(
        "hogs: schedstat {runs} runs, mean wait {mean_s:.6} s; histogram {n} waits, mean \
         {prom_mean:.6} s, median {median:.6} s"
    );
    // The same waits as the kernel's own accounting, and the same time (the few runs before a
    // hog moved into its group, from fork to its pre-exec write, waited in the parent's group).
    assert!(
        (runs as f64 - n).abs() <= 5.0 + runs as f64 * 0.03,
        "{n} vs {runs}"
    );
    assert!(
        (prom_mean / mean_s - 1.0).abs() < 0.1,
        "{prom_mean} vs {mean_s}"
    );
    // The median from the events: the same bucket, so within a factor of two.
    let (_, answer) = d.post(r#"{"reason":"histogram check"}"#);
    let snap = wait_for_snapshots(d.spool(), 1, Duration::from_secs(30));
    let waits = waits_of(&snap[0], &children[..3]);
    assert!(
        (waits.len() as f64 - n).abs() <= 3.0 + n * 0.01,
        "the snapshot holds {} hog waits, the histogram {n} ({answer})",
        waits.len()
    );
    let event_median = waits[waits.len() / 2] as f64 / 1e9;
    eprintln!("hogs: median wait from the events {event_median:.6} s");
    assert!(
        median > event_median / 2.0 && median < event_median * 2.0,
        "histogram median {median} s, events' median {event_median} s"
    );

    // Prometheus accepts every query of the Grafana dashboard, and the run-queue ones answer.
    for expr in dashboard().0 {
        let rows = query(prom, &as_sent(&expr));
        assert!(
            !expr.contains("runqueue") || !rows.is_empty(),
            "no data for {expr}"
        );
    }

    // The victim's preemptions are charged to the hogs' group, above every other.
    let victim_sel = format!("{{victim_cgroup=\"{}\"}}", victims.name);
    let top = query(
        prom,
        &format!("topk(1, flightrec_preempted_seconds_total{victim_sel})"),
    );
    assert_eq!(
        top.first()
            .map(|r| r["metric"]["preempting_cgroup"].clone()),
        Some(serde_json::Value::from(hogs.name.as_str())),
        "{top:?}"
    );
    let pre = number(
        prom,
        &format!(
            "flightrec_preemptions_total{{victim_cgroup=\"{}\",preempting_cgroup=\"{}\"}}",
            victims.name, hogs.name
        ),
    );
    assert!(pre.is_some_and(|p| p >= 1.0), "{pre:?}");

    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(weight);
}

/// The Grafana dashboard shipped in the docs.
const DASHBOARD: &str = include_str!("../../../docs/grafana/flightrec.json");

/// The PromQL of every panel of the dashboard, and the metric names anything in it queries
/// (panels and template variables).
fn dashboard() -> (Vec<String>, Vec<String>) {
    let d: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let exprs: Vec<String> = d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().expect("targets").iter())
        .map(|t| t["expr"].as_str().expect("expr").to_owned())
        .collect();
    let vars = d["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["definition"].as_str());
    let mut names: Vec<String> = exprs
        .iter()
        .map(String::as_str)
        .chain(vars)
        .flat_map(|e| {
            e.match_indices("flightrec_").map(|(i, _)| {
                e[i..]
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 8, "{names:?}");
    (exprs, names)
}

/// A dashboard query as Grafana sends it: its variables replaced.
fn as_sent(expr: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$cgroup", ".*")
        .replace("$disk", ".*")
        .replace("$syscall", ".*")
}

/// Without Prometheus (so it runs in the kernel matrix's guests too): with `[metrics]` on, every
/// family is loaded, every planted syscall is counted, and every histogram is well formed.
#[test]
fn kernel_histograms_count_every_planted_syscall() {
    let Some(_p) = privileged("kernel_histograms_count_every_planted_syscall") else {
        return;
    };
    let d = Daemon::start("histcount", |c| {
        c.metrics.listen = "127.0.0.1:0".into();
    });
    let addr = metrics_addr(&d);
    let series = "flightrec_syscall_latency_seconds_count{syscall=\"getpgid\"}";
    let before = sample(&get(addr, "/metrics", None).1, series).unwrap_or(0.0);
    workload(&["getpgid", "1000"]);
    let (code, text) = get(addr, "/metrics", None);
    assert_eq!(code, 200, "{text}");
    let after = sample(&text, series).unwrap_or(0.0);
    assert!(
        after - before >= 1000.0,
        "{before} then {after} getpgid calls"
    );

    // Writes made durable on the disk of the scratch directory are counted under its name.
    let dir = scratch_dir("histcount");
    if let Some(disk) = disk_of(&dir) {
        let writes =
            format!("flightrec_block_latency_seconds_count{{disk=\"{disk}\",op=\"write\"}}");
        let before = sample(&get(addr, "/metrics", None).1, &writes).unwrap_or(0.0);
        let mut f = std::fs::File::create(dir.join("data")).unwrap();
        std::io::Write::write_all(&mut f, &vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        let after = sample(&get(addr, "/metrics", None).1, &writes).unwrap_or(0.0);
        assert!(after > before, "{writes}: {before} then {after}");
    } else {
        eprintln!("the scratch directory is on no block device: block latency not checked");
    }
    for family in [
        "runqueue_latency",
        "block_latency",
        "syscall_latency",
        "hardirq",
        "softirq",
    ] {
        assert!(
            text.contains(&format!("# TYPE flightrec_{family}_seconds histogram\n")),
            "{family}"
        );
    }
    assert!(text.contains("flightrec_runqueue_latency_seconds_count{cgroup=\""));
    // Everything the Grafana dashboard queries is in the exposition: a family is declared even
    // while it has no series (no block request since the start, say).
    for name in dashboard().1 {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name}{{"))
                || l.starts_with(&format!("# TYPE {name} "))
                || l == format!("# TYPE {base} histogram")),
            "the dashboard queries {name}, which the exposition lacks"
        );
    }
    // Each series: buckets never decrease, and +Inf is the count.
    let mut last: Option<(String, f64)> = None;
    for line in text.lines().filter(|l| l.contains("_bucket{")) {
        let (head, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        let key = head.split(",le=").next().unwrap().to_owned();
        if let Some((k, v)) = &last
            && *k == key
        {
            assert!(value >= *v, "{line} after {v}");
        }
        if head.ends_with("le=\"+Inf\"}") {
            let count = key.replacen("_bucket{", "_count{", 1) + "}";
            assert_eq!(sample(&text, &count), Some(value), "{line}");
            last = None;
        } else {
            last = Some((key, value));
        }
    }
}

/// The disk holding `path`, named as the block histograms name it (the whole disk, never a
/// partition); `None` off block devices (tmpfs, overlay).
fn disk_of(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    let disk = if sys.join("partition").exists() {
        sys.parent()?
    } else {
        &sys
    };
    Some(disk.file_name()?.to_string_lossy().into_owned())
}

/// The run-queue waits of `tasks` in the snapshot at `path`, sorted: from a wakeup or a switch
/// out while still runnable to the next switch in.
fn waits_of(path: &std::path::Path, tasks: &[Child]) -> Vec<u64> {
    let (_, mut events) = read(path);
    events.sort_by_key(|e| e.ts_ns);
    let ids: Vec<u32> = tasks.iter().map(Child::id).collect();
    let mut start: std::collections::HashMap<u32, u64> = Default::default();
    let mut waits = Vec::new();
    for e in &events {
        match e.data {
            EventData::SchedSwitch(s) => {
                if ids.contains(&s.next_tid)
                    && let Some(t) = start.remove(&s.next_tid)
                {
                    waits.push(e.ts_ns - t);
                }
                if ids.contains(&e.tid) && s.prev_state == 0 {
                    start.insert(e.tid, e.ts_ns);
                }
            }
            EventData::SchedWakeup(w) | EventData::SchedWakeupNew(w) if ids.contains(&w.tid) => {
                start.insert(w.tid, e.ts_ns);
            }
            _ => {}
        }
    }
    waits.sort_unstable();
    waits
}
