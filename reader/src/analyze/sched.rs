//! Scheduling latency (wakeup → running) and who made tasks wait.
//!
//! Latency follows lttng-analyses' definition so both agree on the same trace: a thread's first
//! `sched_wakeup`/`sched_wakeup_new` since it last ran, ignored while it is seen running on a
//! CPU, to its next `sched_switch` in. While it waits, the time each other task runs on the
//! CPU it was woken onto is charged to that task ("delayed by"), and a `sched_switch` that
//! takes a CPU from a still-runnable thread counts as a preemption of it by the next thread.
//! Both are classified as Netflix's noisy-neighbour work does: by a task of the same cgroup, of
//! another cgroup, or by the system (kernel threads; idle never delays anyone).

use std::collections::HashMap;

use schemas::event::{Event, EventData};
use serde::Serialize;

use super::stats::{LatencyStats, Log2Hist};
use super::{Ctx, Tasks, TopN};

/// Latency of one group of tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupLatency {
    /// Process id (per-process lists) or absent (per-cgroup lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Process name (per-process lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// cgroup v2 path (`?` when unknown).
    pub cgroup: String,
    /// Wakeup latency.
    #[serde(flatten)]
    pub latency: LatencyStats,
    /// Its histogram.
    pub histogram: Log2Hist,
}

/// Time or counts split by who was responsible, relative to the waiting task's cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Attribution {
    /// By tasks of the same cgroup.
    pub same_cgroup: u64,
    /// By tasks of other cgroups.
    pub other_cgroup: u64,
    /// By kernel threads.
    pub system: u64,
    /// By tasks whose cgroup is unknown (exited before the freeze, parent unknown).
    pub unknown: u64,
}

impl Attribution {
    fn add(&mut self, class: Class, v: u64) {
        match class {
            Class::Same => self.same_cgroup += v,
            Class::Other => self.other_cgroup += v,
            Class::System => self.system += v,
            Class::Unknown => self.unknown += v,
        }
    }
}

/// A task (grouped by cgroup and name) charged for delaying others.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Culprit {
    /// Its cgroup (`?` when unknown).
    pub cgroup: String,
    /// Its process name.
    pub comm: String,
    /// Its class relative to the victims' cgroup: `same_cgroup`, `other_cgroup`, `system`,
    /// `unknown`.
    pub class: &'static str,
    /// ns of waiting charged (delays) or number of preemptions (preemptors).
    pub value: u64,
}

/// What the tasks of one cgroup suffered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VictimGroup {
    /// The victims' cgroup.
    pub cgroup: String,
    /// ns they waited after a wakeup, charged to whoever ran meanwhile.
    pub delay_ns: Attribution,
    /// Times they were preempted, by preemptor class.
    pub preemptions: Attribution,
    /// Who delayed them most (ns, at most `--top`).
    pub top_delayers: Vec<Culprit>,
    /// Who preempted them most (count, at most `--top`).
    pub top_preemptors: Vec<Culprit>,
}

/// One charge of waiting time to a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delay {
    /// Thread that ran.
    pub tid: u32,
    /// Its name.
    pub comm: String,
    /// Its cgroup.
    pub cgroup: String,
    /// ns it ran while the woken thread waited.
    pub ns: u64,
}

/// One wakeup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WakeupLatency {
    /// Woken thread.
    pub tid: u32,
    /// Its process.
    pub pid: u32,
    /// Its name.
    pub comm: String,
    /// Its cgroup.
    pub cgroup: String,
    /// Wakeup time.
    pub wakeup_ns: u64,
    /// Switch-in time.
    pub switch_in_ns: u64,
    /// `switch_in_ns - wakeup_ns`.
    pub latency_ns: u64,
    /// CPU it was woken onto.
    pub target_cpu: u32,
    /// CPU it ran on.
    pub cpu: u32,
    /// Thread that woke it (0: interrupt or unknown).
    pub waker_tid: u32,
    /// Who ran on the target CPU meanwhile, longest first (at most 3).
    pub delayed_by: Vec<Delay>,
}

/// The scheduling analysis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SchedReport {
    /// Wakeup latency of all (filtered) threads.
    pub latency: LatencyStats,
    /// Its histogram.
    pub histogram: Log2Hist,
    /// Per process, worst p99 first (at most `--top`).
    pub by_process: Vec<GroupLatency>,
    /// Per cgroup, worst p99 first (all).
    pub by_cgroup: Vec<GroupLatency>,
    /// Worst wakeups (at most `--top`).
    pub worst: Vec<WakeupLatency>,
    /// Waiting time after wakeups, charged to whoever ran (all victims).
    pub delay_ns: Attribution,
    /// Preemptions of (filtered) threads, by preemptor class.
    pub preemptions: Attribution,
    /// Per victim cgroup (most delayed first).
    pub by_victim_cgroup: Vec<VictimGroup>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    Same,
    Other,
    System,
    Unknown,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Same => "same_cgroup",
            Class::Other => "other_cgroup",
            Class::System => "system",
            Class::Unknown => "unknown",
        }
    }
}

struct Waiting {
    ts: u64,
    target_cpu: u32,
    waker: u32,
    delayers: HashMap<u32, u64>,
}

#[derive(Default)]
struct VictimAcc {
    delay: Attribution,
    preempt: Attribution,
    delayers: HashMap<(String, String, Class), u64>,
    preemptors: HashMap<(String, String, Class), u64>,
}

/// Accumulates scheduling latency.
#[derive(Default)]
pub(crate) struct Sched {
    /// Running thread per CPU (from switches only, as lttng-analyses).
    running: HashMap<u32, (u32, u64)>,
    waiting: HashMap<u32, Waiting>,
    samples: Vec<(u32, u64)>,
    worst: Option<TopN<WakeupLatency>>,
    delay: Attribution,
    preempt: Attribution,
    victims: HashMap<String, VictimAcc>,
}

fn classify(tasks: &Tasks, victim_pid: u32, culprit: u32) -> Class {
    if tasks.is_system(culprit) {
        return Class::System;
    }
    match (
        tasks.cgroup_of(victim_pid),
        tasks.cgroup_of(tasks.pid_of(culprit)),
    ) {
        (Some(a), Some(b)) if a == b => Class::Same,
        (Some(_), Some(_)) => Class::Other,
        _ => Class::Unknown,
    }
}

fn cgroup_name(tasks: &Tasks, pid: u32) -> String {
    tasks.cgroup_of(pid).unwrap_or("?").to_owned()
}

impl Sched {
    pub fn event(&mut self, ev: &Event, tasks: &Tasks, ctx: &Ctx) {
        match ev.data {
            EventData::SchedWakeup(w) | EventData::SchedWakeupNew(w) => {
                if self.running.values().any(|&(t, _)| t == w.tid) || w.tid == 0 {
                    return;
                }
                if !ctx.selects(w.tid, tasks) {
                    return;
                }
                let waker = self.running.get(&ev.cpu).map_or(0, |r| r.0);
                self.waiting.entry(w.tid).or_insert(Waiting {
                    ts: ev.ts_ns,
                    target_cpu: w.target_cpu,
                    waker,
                    delayers: HashMap::new(),
                });
            }
            EventData::SchedSwitch(s) => {
                let prev = ev.tid;
                let since = self.running.get(&ev.cpu).map(|r| r.1);
                // Charge the time `prev` just ran to the threads waiting for this CPU.
                if prev != 0
                    && let Some(since) = since
                {
                    for (&wtid, w) in self.waiting.iter_mut() {
                        if w.target_cpu == ev.cpu && wtid != prev {
                            let from = since.max(w.ts);
                            if ev.ts_ns > from {
                                *w.delayers.entry(prev).or_default() += ev.ts_ns - from;
                            }
                        }
                    }
                }
                // A runnable thread losing its CPU is preempted by the next one.
                if s.prev_state == 0 && prev != 0 && s.next_tid != 0 && ctx.selects(prev, tasks) {
                    let vpid = tasks.pid_of(prev);
                    let class = classify(tasks, vpid, s.next_tid);
                    self.preempt.add(class, 1);
                    let v = self.victims.entry(cgroup_name(tasks, vpid)).or_default();
                    v.preempt.add(class, 1);
                    let key = (
                        cgroup_name(tasks, tasks.pid_of(s.next_tid)),
                        tasks.proc_comm(tasks.pid_of(s.next_tid)).to_owned(),
                        class,
                    );
                    *v.preemptors.entry(key).or_default() += 1;
                }
                self.running.insert(ev.cpu, (s.next_tid, ev.ts_ns));
                if let Some(w) = self.waiting.remove(&s.next_tid) {
                    self.woke(s.next_tid, w, ev, tasks, ctx);
                }
            }
            _ => {}
        }
    }

    fn woke(&mut self, tid: u32, w: Waiting, ev: &Event, tasks: &Tasks, ctx: &Ctx) {
        let latency = ev.ts_ns - w.ts;
        let pid = tasks.pid_of(tid);
        self.samples.push((tid, latency));
        let vcg = cgroup_name(tasks, pid);
        let v = self.victims.entry(vcg.clone()).or_default();
        let mut delayers: Vec<(u32, u64)> = w.delayers.into_iter().collect();
        delayers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for &(culprit, ns) in &delayers {
            let class = classify(tasks, pid, culprit);
            self.delay.add(class, ns);
            v.delay.add(class, ns);
            let cpid = tasks.pid_of(culprit);
            let key = (
                cgroup_name(tasks, cpid),
                tasks.proc_comm(cpid).to_owned(),
                class,
            );
            *v.delayers.entry(key).or_default() += ns;
        }
        self.worst
            .get_or_insert_with(|| TopN::new(ctx.opts.top))
            .push(
                latency,
                WakeupLatency {
                    tid,
                    pid,
                    comm: tasks.comm(tid).to_owned(),
                    cgroup: vcg,
                    wakeup_ns: w.ts,
                    switch_in_ns: ev.ts_ns,
                    latency_ns: latency,
                    target_cpu: w.target_cpu,
                    cpu: ev.cpu,
                    waker_tid: w.waker,
                    delayed_by: delayers
                        .iter()
                        .take(3)
                        .map(|&(t, ns)| Delay {
                            tid: t,
                            comm: tasks.comm(t).to_owned(),
                            cgroup: cgroup_name(tasks, tasks.pid_of(t)),
                            ns,
                        })
                        .collect(),
                },
            );
    }

    pub fn finish(self, tasks: &Tasks, ctx: &Ctx) -> SchedReport {
        let top = ctx.opts.top;
        let mut all: Vec<u64> = self.samples.iter().map(|s| s.1).collect();
        let histogram = Log2Hist::of(&all);
        let latency = LatencyStats::of(&mut all);
        let mut per_pid: HashMap<u32, Vec<u64>> = HashMap::new();
        let mut per_cg: HashMap<String, Vec<u64>> = HashMap::new();
        for &(tid, l) in &self.samples {
            let pid = tasks.pid_of(tid);
            per_pid.entry(pid).or_default().push(l);
            per_cg.entry(cgroup_name(tasks, pid)).or_default().push(l);
        }
        let group = |pid: Option<u32>, cgroup: String, mut v: Vec<u64>| GroupLatency {
            pid,
            comm: pid.map(|p| tasks.proc_comm(p).to_owned()),
            cgroup,
            histogram: Log2Hist::of(&v),
            latency: LatencyStats::of(&mut v),
        };
        let worst_first = |a: &GroupLatency, b: &GroupLatency| {
            b.latency
                .p99_ns
                .cmp(&a.latency.p99_ns)
                .then(b.latency.max_ns.cmp(&a.latency.max_ns))
                .then(a.cgroup.cmp(&b.cgroup))
                .then(a.pid.cmp(&b.pid))
        };
        let mut by_process: Vec<GroupLatency> = per_pid
            .into_iter()
            .map(|(pid, v)| group(Some(pid), cgroup_name(tasks, pid), v))
            .collect();
        by_process.sort_by(worst_first);
        by_process.truncate(top);
        let mut by_cgroup: Vec<GroupLatency> = per_cg
            .into_iter()
            .map(|(cg, v)| group(None, cg, v))
            .collect();
        by_cgroup.sort_by(worst_first);
        let culprits = |m: HashMap<(String, String, Class), u64>| {
            let mut v: Vec<Culprit> = m
                .into_iter()
                .map(|((cgroup, comm, class), value)| Culprit {
                    cgroup,
                    comm,
                    class: class.name(),
                    value,
                })
                .collect();
            v.sort_by(|a, b| {
                b.value
                    .cmp(&a.value)
                    .then(a.cgroup.cmp(&b.cgroup))
                    .then(a.comm.cmp(&b.comm))
            });
            v.truncate(top);
            v
        };
        let mut by_victim_cgroup: Vec<VictimGroup> = self
            .victims
            .into_iter()
            .map(|(cgroup, v)| VictimGroup {
                cgroup,
                delay_ns: v.delay,
                preemptions: v.preempt,
                top_delayers: culprits(v.delayers),
                top_preemptors: culprits(v.preemptors),
            })
            .collect();
        let total = |a: &Attribution| a.same_cgroup + a.other_cgroup + a.system + a.unknown;
        by_victim_cgroup.sort_by(|a, b| {
            total(&b.delay_ns)
                .cmp(&total(&a.delay_ns))
                .then(total(&b.preemptions).cmp(&total(&a.preemptions)))
                .then(a.cgroup.cmp(&b.cgroup))
        });
        SchedReport {
            latency,
            histogram,
            by_process,
            by_cgroup,
            worst: self.worst.map(TopN::into_sorted).unwrap_or_default(),
            delay_ns: self.delay,
            preemptions: self.preempt,
            by_victim_cgroup,
        }
    }
}
