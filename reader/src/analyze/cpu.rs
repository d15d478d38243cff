//! CPU usage from `sched_switch`: time on CPU per thread and process, utilisation and the
//! busiest tasks of each CPU, and a coarse per-CPU timeline of who ran.

use std::collections::{BTreeMap, HashMap};

use schemas::event::{Event, EventData};
use serde::Serialize;

use super::{Ctx, Tasks};

/// Buckets of each CPU's timeline.
pub const TIMELINE_BUCKETS: usize = 100;

/// A task's share of CPU time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskTime {
    /// Thread id (for a process: its pid).
    pub tid: u32,
    /// Process id.
    pub pid: u32,
    /// Name.
    pub comm: String,
    /// Time on CPU.
    pub on_cpu_ns: u64,
    /// `on_cpu_ns` as a percentage of the time covered (of one CPU).
    pub pct: f64,
}

/// One bucket of a CPU's timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineBucket {
    /// Start (CLOCK_MONOTONIC ns).
    pub start_ns: u64,
    /// End.
    pub end_ns: u64,
    /// Percentage of the bucket the CPU ran a task other than idle.
    pub busy_pct: f64,
    /// The thread that ran longest in the bucket (none: idle throughout).
    pub tid: Option<u32>,
    /// Its name.
    pub comm: Option<String>,
}

/// One CPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuUsage {
    /// CPU.
    pub cpu: u32,
    /// Time covered: from this CPU's first event in the window to the window's end.
    pub covered_ns: u64,
    /// Time running tasks other than idle.
    pub busy_ns: u64,
    /// `busy_ns / covered_ns` in percent.
    pub usage_pct: f64,
    /// Context switches.
    pub switches: u64,
    /// Busiest threads (at most `--top`).
    pub top: Vec<TaskTime>,
    /// Who ran, in [`TIMELINE_BUCKETS`] equal slices of the window.
    pub timeline: Vec<TimelineBucket>,
}

/// A thread's scheduling.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThreadUsage {
    /// Time on CPU and share.
    #[serde(flatten)]
    pub time: TaskTime,
    /// cgroup v2 path of its process.
    pub cgroup: Option<String>,
    /// Times switched in.
    pub switches_in: u64,
    /// Times switched out while runnable (preempted or yielding).
    pub preempted: u64,
    /// Times switched out to wait (sleep, I/O, lock).
    pub blocked: u64,
}

/// A process's CPU time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessUsage {
    /// Time on CPU and share (of one CPU; above 100 % with several threads).
    #[serde(flatten)]
    pub time: TaskTime,
    /// cgroup v2 path.
    pub cgroup: Option<String>,
    /// Threads seen running.
    pub threads: u64,
}

/// The CPU analysis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuReport {
    /// Per CPU.
    pub per_cpu: Vec<CpuUsage>,
    /// Busiest processes (at most `--top`).
    pub by_process: Vec<ProcessUsage>,
    /// Busiest threads (at most `--top`).
    pub by_thread: Vec<ThreadUsage>,
    /// Time on CPU of the recorder's threads, whether ranked or not.
    #[serde(skip)]
    pub(crate) recorder_on_cpu_ns: u64,
}

#[derive(Default)]
struct PerCpu {
    first: Option<u64>,
    /// Running thread and since when, once known.
    cur: Option<(u32, u64)>,
    /// Thread of the latest event, standing in until the first switch.
    last_tid: u32,
    busy: u64,
    switches: u64,
    by_tid: HashMap<u32, u64>,
    buckets: Vec<HashMap<u32, u64>>,
}

#[derive(Default, Clone, Copy)]
struct ThreadAcc {
    on_cpu: u64,
    switches_in: u64,
    preempted: u64,
    blocked: u64,
}

/// Accumulates CPU time.
pub(crate) struct Cpu {
    begin: u64,
    end: u64,
    cpus: BTreeMap<u32, PerCpu>,
    threads: HashMap<u32, ThreadAcc>,
}

impl Cpu {
    pub fn new(ctx: &Ctx) -> Cpu {
        Cpu {
            begin: ctx.begin,
            end: ctx.end,
            cpus: BTreeMap::new(),
            threads: HashMap::new(),
        }
    }

    fn bucket_width(&self) -> u64 {
        ((self.end - self.begin) / TIMELINE_BUCKETS as u64).max(1)
    }

    /// Credits `tid` with running on `cpu` over `from..to`.
    fn run(&mut self, cpu: u32, tid: u32, from: u64, to: u64) {
        if to <= from {
            return;
        }
        let width = self.bucket_width();
        let begin = self.begin;
        let c = self.cpus.get_mut(&cpu).expect("cpu state exists");
        if tid != 0 {
            c.busy += to - from;
        }
        *c.by_tid.entry(tid).or_default() += to - from;
        if c.buckets.is_empty() {
            c.buckets = vec![HashMap::new(); TIMELINE_BUCKETS];
        }
        let mut t = from;
        while t < to {
            let i = (((t - begin) / width) as usize).min(TIMELINE_BUCKETS - 1);
            let bucket_end = if i == TIMELINE_BUCKETS - 1 {
                to
            } else {
                begin + (i as u64 + 1) * width
            };
            let seg_end = bucket_end.min(to);
            *c.buckets[i].entry(tid).or_default() += seg_end - t;
            t = seg_end;
        }
        if tid != 0 {
            self.threads.entry(tid).or_default().on_cpu += to - from;
        }
    }

    /// Notes any event: the first event of a CPU starts its covered time, and its thread is
    /// the running one until the first switch says otherwise.
    pub fn seen(&mut self, ev: &Event) {
        let c = self.cpus.entry(ev.cpu).or_default();
        c.first.get_or_insert(ev.ts_ns);
        if !matches!(ev.data, EventData::SchedSwitch(_)) {
            c.last_tid = ev.tid;
        }
    }

    pub fn event(&mut self, ev: &Event, _ctx: &Ctx) {
        let EventData::SchedSwitch(s) = ev.data else {
            return;
        };
        let c = self.cpus.entry(ev.cpu).or_default();
        let first = *c.first.get_or_insert(ev.ts_ns);
        let since = c.cur.map_or(first, |(_, t)| t);
        c.cur = Some((s.next_tid, ev.ts_ns));
        c.switches += 1;
        self.run(ev.cpu, ev.tid, since, ev.ts_ns);
        if ev.tid != 0 {
            let prev = self.threads.entry(ev.tid).or_default();
            if s.prev_state == 0 {
                prev.preempted += 1;
            } else {
                prev.blocked += 1;
            }
        }
        if s.next_tid != 0 {
            self.threads.entry(s.next_tid).or_default().switches_in += 1;
        }
    }

    pub fn finish(mut self, tasks: &Tasks, ctx: &Ctx) -> CpuReport {
        let top = ctx.opts.top;
        let end = self.end;
        let open: Vec<(u32, u32, u64)> = self
            .cpus
            .iter()
            .filter_map(|(&cpu, c)| {
                let first = c.first?;
                Some(match c.cur {
                    Some((tid, since)) => (cpu, tid, since),
                    None => (cpu, c.last_tid, first),
                })
            })
            .collect();
        for (cpu, tid, since) in open {
            self.run(cpu, tid, since, end);
        }
        let width = self.bucket_width();
        let pct = |ns: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                round2(ns as f64 * 100.0 / of as f64)
            }
        };
        let window = end - self.begin;
        let task_time = |tid: u32, ns: u64, of: u64| TaskTime {
            tid,
            pid: tasks.pid_of(tid),
            comm: tasks.comm(tid).to_owned(),
            on_cpu_ns: ns,
            pct: pct(ns, of),
        };
        let per_cpu = self
            .cpus
            .iter()
            .map(|(&cpu, c)| {
                let covered = c.first.map_or(0, |f| end.saturating_sub(f));
                let mut tids: Vec<(u32, u64)> = c
                    .by_tid
                    .iter()
                    .filter(|(t, _)| **t != 0)
                    .map(|(&t, &ns)| (t, ns))
                    .collect();
                tids.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let timeline = c
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let start = self.begin + i as u64 * width;
                        let stop = if i == TIMELINE_BUCKETS - 1 {
                            end
                        } else {
                            start + width
                        };
                        let busy: u64 = b.iter().filter(|(t, _)| **t != 0).map(|(_, ns)| ns).sum();
                        let best = b
                            .iter()
                            .filter(|(t, _)| **t != 0)
                            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                            .map(|(&t, _)| t);
                        TimelineBucket {
                            start_ns: start,
                            end_ns: stop,
                            busy_pct: pct(busy, stop - start),
                            tid: best,
                            comm: best.map(|t| tasks.comm(t).to_owned()),
                        }
                    })
                    .collect();
                CpuUsage {
                    cpu,
                    covered_ns: covered,
                    busy_ns: c.busy,
                    usage_pct: pct(c.busy, covered),
                    switches: c.switches,
                    top: tids
                        .iter()
                        .take(top)
                        .map(|&(t, ns)| task_time(t, ns, covered))
                        .collect(),
                    timeline,
                }
            })
            .collect();
        let mut procs: HashMap<u32, (u64, u64)> = HashMap::new();
        for (&tid, a) in self.threads.iter().filter(|(t, _)| ctx.selects(**t, tasks)) {
            let p = procs.entry(tasks.pid_of(tid)).or_default();
            p.0 += a.on_cpu;
            p.1 += 1;
        }
        let mut by_process: Vec<ProcessUsage> = procs
            .into_iter()
            .map(|(pid, (ns, threads))| ProcessUsage {
                time: TaskTime {
                    tid: pid,
                    pid,
                    comm: tasks.proc_comm(pid).to_owned(),
                    on_cpu_ns: ns,
                    pct: pct(ns, window),
                },
                cgroup: tasks.cgroup_of(pid).map(str::to_owned),
                threads,
            })
            .collect();
        by_process.sort_by(|a, b| {
            b.time
                .on_cpu_ns
                .cmp(&a.time.on_cpu_ns)
                .then(a.time.pid.cmp(&b.time.pid))
        });
        by_process.truncate(top);
        let mut by_thread: Vec<ThreadUsage> = self
            .threads
            .iter()
            .filter(|(t, _)| ctx.selects(**t, tasks))
            .map(|(&tid, a)| ThreadUsage {
                time: task_time(tid, a.on_cpu, window),
                cgroup: tasks.cgroup_of(tasks.pid_of(tid)).map(str::to_owned),
                switches_in: a.switches_in,
                preempted: a.preempted,
                blocked: a.blocked,
            })
            .collect();
        by_thread.sort_by(|a, b| {
            b.time
                .on_cpu_ns
                .cmp(&a.time.on_cpu_ns)
                .then(a.time.tid.cmp(&b.time.tid))
        });
        by_thread.truncate(top);
        CpuReport {
            per_cpu,
            by_process,
            by_thread,
            recorder_on_cpu_ns: self
                .threads
                .iter()
                .filter(|(t, _)| tasks.is_recorder(**t))
                .map(|(_, a)| a.on_cpu)
                .sum(),
        }
    }
}

/// Rounds to two decimals, so JSON figures stay readable.
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
