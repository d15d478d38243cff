//! Findings: the handful of things an expert looks at first, computed from the finished
//! analyses and ranked by how much of the window each problem covers.
//!
//! Waits of idle threads (event loops, parked workers, sleeping timers) are never a finding:
//! only working syscalls are ([`super::waits`]). Each finding is one sentence with its numbers
//! and the structured evidence behind it (who, what, how long, when).

use std::collections::HashMap;

use schemas::event::syscall_name;
use serde::Serialize;

use super::fds::{FdNames, fd_arg, fd_label};
use super::syscalls::WorkAcc;
use super::text::fmt_ns;
use super::{Report, Tasks};

/// At most this many findings are kept.
pub const MAX_FINDINGS: usize = 8;
/// A working syscall, a run-queue wait or an interrupt counts from this long (1 ms).
const SLOW_NS: u64 = 1_000_000;
/// A block request counts from this long (5 ms).
const SLOW_BLOCK_NS: u64 = 5_000_000;
/// Short-lived processes make a burst from this many.
const BURST: u64 = 5;

/// What a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The request (or thread) the trigger names: where its time went.
    Request,
    /// A process spent long in completed working calls of one syscall.
    SlowSyscall,
    /// A thread was still in a working syscall at the end of the window.
    BlockedSyscall,
    /// A thread waited long to run after its wakeup, and who held the CPU.
    RunQueueWait,
    /// A device's requests were slow.
    SlowBlockIo,
    /// An interrupt handler or softirq ran long at once.
    LongInterrupt,
    /// Many processes forked and exited in the window.
    ProcessBurst,
}

/// The structured facts of a finding; fields that do not apply are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Thread id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    /// Process or thread name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// Syscall name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// The fd that syscall worked or waited on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i64>,
    /// The file or socket behind `fd`, when the snapshot knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_name: Option<String>,
    /// Block device (`major:minor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Interrupt handler or softirq name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub irq: Option<String>,
    /// The longest single occurrence (call, wait, request, handler run, lifetime).
    pub duration_ns: u64,
    /// All occurrences together.
    pub total_ns: u64,
    /// Occurrences.
    pub count: u64,
    /// When the longest occurrence started (CLOCK_MONOTONIC ns), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_ns: Option<u64>,
    /// `comm[tid]` of who ran meanwhile, with ns (run-queue waits), or of the parents, with
    /// how many they started (bursts).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by: Vec<(String, u64)>,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// What it is about.
    pub kind: FindingKind,
    /// Percentage of the window the problem covers (`total_ns` over the window; for a
    /// run-queue wait or an in-flight call, its length). Findings are sorted by it.
    pub score: f64,
    /// One sentence with its numbers.
    pub text: String,
    /// The facts behind it.
    pub evidence: Evidence,
}

fn pct(ns: u64, window: u64) -> f64 {
    if window == 0 {
        return 0.0;
    }
    super::cpu::round2(ns as f64 * 100.0 / window as f64)
}

/// The findings of `r`, computed after every analysis; `work` is the time of each process's
/// working syscalls, per (pid, syscall number).
pub(crate) fn find(
    r: &Report,
    work: &HashMap<(u32, u64), WorkAcc>,
    tasks: &Tasks,
    fds: &FdNames,
) -> Vec<Finding> {
    let window = r.window.duration_ns;
    let mut out = Vec::new();
    let mut push = |kind, covered: u64, text: String, evidence: Evidence| {
        out.push(Finding {
            kind,
            score: pct(covered, window),
            text: format!("{text} ({:.1}% of the window)", pct(covered, window)),
            evidence,
        });
    };

    // Slow working syscalls, per process and syscall.
    let mut per_pid: HashMap<u32, u64> = HashMap::new();
    for (&(pid, _), w) in work {
        *per_pid.entry(pid).or_default() += w.total_ns;
    }
    for (&(pid, id), w) in work {
        if w.max_ns < SLOW_NS {
            continue;
        }
        let name = syscall_name(id).map_or_else(|| format!("syscall_{id}"), str::to_owned);
        let comm = tasks.proc_comm(pid).to_owned();
        let calls = if w.count == 1 { "call" } else { "calls" };
        let (_, at, arg0) = w.longest;
        let fd = fd_arg(&name, arg0);
        let fd_name = fd.and_then(|fd| fds.name_at(pid, fd, at));
        let on = fd.map_or(String::new(), |fd| {
            format!(" on {}", fd_label(fd, fd_name.as_deref()))
        });
        push(
            FindingKind::SlowSyscall,
            w.total_ns,
            format!(
                "pid {pid} ({comm}) spent {} in {name} ({} {calls}, longest {}{on}), \
                 of its {} in working syscalls",
                fmt_ns(w.total_ns),
                w.count,
                fmt_ns(w.max_ns),
                fmt_ns(per_pid[&pid]),
            ),
            Evidence {
                pid: Some(pid),
                comm: Some(comm),
                syscall: Some(name),
                fd,
                fd_name,
                duration_ns: w.max_ns,
                total_ns: w.total_ns,
                count: w.count,
                ..Evidence::default()
            },
        );
    }
    if let Some(s) = r.syscalls.ok() {
        for c in s.in_flight_work.iter().filter(|c| c.elapsed_ns >= SLOW_NS) {
            push(
                FindingKind::BlockedSyscall,
                c.elapsed_ns,
                format!(
                    "tid {} of pid {} ({}) was still in {}{} after {} at the end of the window",
                    c.tid,
                    c.pid,
                    c.comm,
                    c.syscall,
                    c.fd.map_or(String::new(), |fd| format!(
                        " on {}",
                        fd_label(fd, c.fd_name.as_deref())
                    )),
                    fmt_ns(c.elapsed_ns)
                ),
                Evidence {
                    pid: Some(c.pid),
                    tid: Some(c.tid),
                    comm: Some(c.comm.clone()),
                    syscall: Some(c.syscall.clone()),
                    fd: c.fd,
                    fd_name: c.fd_name.clone(),
                    duration_ns: c.elapsed_ns,
                    total_ns: c.elapsed_ns,
                    count: 1,
                    at_ns: Some(c.entry_ns),
                    ..Evidence::default()
                },
            );
        }
    }

    // The worst run-queue waits, and who held the CPU.
    if let Some(s) = r.sched.ok() {
        for w in s.worst.iter().filter(|w| w.latency_ns >= SLOW_NS).take(3) {
            let by: Vec<(String, u64)> = w
                .delayed_by
                .iter()
                .map(|d| (format!("{}[{}]", d.comm, d.tid), d.ns))
                .collect();
            let held = match by.first() {
                Some((who, ns)) => format!("; {who} held it for {}", fmt_ns(*ns)),
                None => String::new(),
            };
            push(
                FindingKind::RunQueueWait,
                w.latency_ns,
                format!(
                    "tid {} of pid {} ({}) waited {} to run on CPU {} after its wakeup{held}",
                    w.tid,
                    w.pid,
                    w.comm,
                    fmt_ns(w.latency_ns),
                    w.target_cpu
                ),
                Evidence {
                    pid: Some(w.pid),
                    tid: Some(w.tid),
                    comm: Some(w.comm.clone()),
                    cpu: Some(w.target_cpu),
                    duration_ns: w.latency_ns,
                    total_ns: w.latency_ns,
                    count: 1,
                    at_ns: Some(w.wakeup_ns),
                    by,
                    ..Evidence::default()
                },
            );
        }
    }

    // Slow block requests, by device.
    if let Some(b) = r.block.ok() {
        for d in b
            .devices
            .iter()
            .filter(|d| d.latency.max_ns >= SLOW_BLOCK_NS)
        {
            let slow = b.slowest.iter().find(|q| q.dev == d.dev);
            let who = slow.map_or_else(String::new, |q| {
                format!(", issued by {}[{}]", q.comm, q.tid)
            });
            push(
                FindingKind::SlowBlockIo,
                d.latency.max_ns,
                format!(
                    "device {}: {} request{}, p99 {}, slowest {}{who}",
                    d.dev,
                    d.latency.count,
                    if d.latency.count == 1 { "" } else { "s" },
                    fmt_ns(d.latency.p99_ns),
                    fmt_ns(d.latency.max_ns)
                ),
                Evidence {
                    pid: slow.map(|q| q.pid),
                    tid: slow.map(|q| q.tid),
                    comm: slow.map(|q| q.comm.clone()),
                    dev: Some(d.dev.clone()),
                    duration_ns: d.latency.max_ns,
                    total_ns: d.latency.total_ns,
                    count: d.latency.count,
                    at_ns: slow.map(|q| q.issue_ns),
                    ..Evidence::default()
                },
            );
        }
    }

    // Interrupt handlers and softirqs that ran long at once.
    if let Some(i) = r.irq.ok() {
        let hard = i
            .hard
            .iter()
            .map(|h| (format!("irq {} ({})", h.irq, h.name), &h.duration));
        let soft = i
            .soft
            .iter()
            .map(|s| (format!("softirq {}", s.name), &s.duration));
        for (name, l) in hard.chain(soft).filter(|(_, l)| l.max_ns >= SLOW_NS) {
            push(
                FindingKind::LongInterrupt,
                l.total_ns,
                format!(
                    "{name} ran up to {} at once, {} in {} runs",
                    fmt_ns(l.max_ns),
                    fmt_ns(l.total_ns),
                    l.count
                ),
                Evidence {
                    irq: Some(name),
                    duration_ns: l.max_ns,
                    total_ns: l.total_ns,
                    count: l.count,
                    ..Evidence::default()
                },
            );
        }
    }

    // Bursts of short-lived processes, with the parents that started them.
    if let Some(p) = r.processes.ok()
        && p.short_lived >= BURST
    {
        let mut parents: HashMap<String, u64> = HashMap::new();
        let (mut total, mut longest) = (0u64, 0u64);
        for e in p.log.iter().filter(|e| e.lifetime_ns.is_some()) {
            let l = e.lifetime_ns.unwrap_or(0);
            total += l;
            longest = longest.max(l);
            *parents
                .entry(format!("{}[{}]", e.parent_comm, e.ppid))
                .or_default() += 1;
        }
        let mut by: Vec<(String, u64)> = parents.into_iter().collect();
        by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let most = by
            .first()
            .map_or_else(String::new, |(who, n)| format!(", {n} of them by {who}"));
        push(
            FindingKind::ProcessBurst,
            total.min(window),
            format!(
                "{} short-lived processes forked and exited in the window{most}",
                p.short_lived
            ),
            Evidence {
                duration_ns: longest,
                total_ns: total,
                count: p.short_lived,
                by,
                ..Evidence::default()
            },
        );
    }

    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.evidence.total_ns.cmp(&a.evidence.total_ns))
            .then(a.text.cmp(&b.text))
    });
    out.truncate(MAX_FINDINGS);
    out
}

/// The lead finding of a snapshot whose request has a story: its verdict.
pub(crate) fn of_story(s: &super::Story, window: u64) -> Finding {
    Finding {
        kind: FindingKind::Request,
        score: pct(s.duration_ns, window),
        text: s.verdict.clone(),
        evidence: Evidence {
            pid: Some(s.who.pid),
            tid: Some(s.who.tid),
            comm: Some(s.who.comm.clone()),
            syscall: s.blocked.first().and_then(|b| b.syscall.clone()),
            fd: s.blocked.first().and_then(|b| b.fd),
            fd_name: s.blocked.first().and_then(|b| b.fd_name.clone()),
            duration_ns: s.duration_ns,
            total_ns: s.duration_ns,
            count: 1,
            at_ns: Some(s.begin_ns),
            by: s
                .ran_instead
                .iter()
                .map(|r| (format!("{}[{}]", r.who.comm, r.who.tid), r.ns))
                .collect(),
            ..Evidence::default()
        },
    }
}
