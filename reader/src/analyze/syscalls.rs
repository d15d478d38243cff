//! Syscall latency: each entry matched with the same thread's next exit of the same syscall.
//! Stats per syscall and per process, the slowest calls, and calls still in flight at the end
//! of the window (the fsync that was blocked when the trigger fired). Calls that wait for an
//! event ([`super::waits`]) are ranked apart from work, so idle event loops do not hide it.

use std::collections::HashMap;

use schemas::event::{Event, EventData, syscall_name};
use serde::Serialize;

use super::fds::fd_arg;
use super::stats::{LatencyStats, Log2Hist};
use super::waits::{is_wait, never_returns};
use super::{Ctx, Tasks, TopN};

/// One syscall's figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyscallStats {
    /// Syscall name (x86-64).
    pub name: String,
    /// Syscall number.
    pub id: u64,
    /// Calls that returned a negative value.
    pub errors: u64,
    /// Latency of the completed calls.
    #[serde(flatten)]
    pub latency: LatencyStats,
}

/// One process's syscalls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessSyscalls {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// cgroup v2 path, if known.
    pub cgroup: Option<String>,
    /// Completed calls.
    pub count: u64,
    /// Calls that returned an error.
    pub errors: u64,
    /// Time spent in completed calls.
    pub total_ns: u64,
    /// Part of `total_ns` spent in calls that work; the rest waited for events.
    pub work_ns: u64,
    /// Per syscall, most total time first (at most `--top`).
    pub syscalls: Vec<SyscallStats>,
}

/// One completed call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyscallCall {
    /// Thread id.
    pub tid: u32,
    /// Process id.
    pub pid: u32,
    /// Thread name.
    pub comm: String,
    /// Syscall name.
    pub syscall: String,
    /// Syscall number.
    pub id: u64,
    /// Entry time (CLOCK_MONOTONIC ns).
    pub entry_ns: u64,
    /// Exit time.
    pub exit_ns: u64,
    /// `exit_ns - entry_ns`.
    pub duration_ns: u64,
    /// Return value.
    pub ret: i64,
    /// First argument (often the file descriptor).
    pub arg0: u64,
    /// The fd it worked or waited on, for syscalls whose first argument is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i64>,
    /// The file or socket behind `fd` when the call entered, when the snapshot knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_name: Option<String>,
    /// Whether the call waits for an event (`epoll_wait`, futex wait...) rather than works.
    pub wait: bool,
}

/// A call entered and not exited by the end of the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InFlightCall {
    /// Thread id.
    pub tid: u32,
    /// Process id.
    pub pid: u32,
    /// Thread name.
    pub comm: String,
    /// Syscall name.
    pub syscall: String,
    /// Syscall number.
    pub id: u64,
    /// Entry time.
    pub entry_ns: u64,
    /// Time from entry to the end of the window.
    pub elapsed_ns: u64,
    /// First argument.
    pub arg0: u64,
    /// The fd it works or waits on, for syscalls whose first argument is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<i64>,
    /// The file or socket behind `fd` when the call entered, when the snapshot knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd_name: Option<String>,
    /// Whether the call waits for an event rather than works.
    pub wait: bool,
}

/// The syscall analysis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyscallReport {
    /// Completed calls.
    pub calls: u64,
    /// Completed calls that returned an error.
    pub errors: u64,
    /// Exits whose entry is not in the window (started before it, or recorded only half).
    pub unmatched_exits: u64,
    /// Per syscall, most total time first (all of them).
    pub by_syscall: Vec<SyscallStats>,
    /// Per process, most time in working calls first, then most total time (at most `--top`).
    pub by_process: Vec<ProcessSyscalls>,
    /// Slowest completed calls, waits and work together (at most `--top`).
    pub slowest: Vec<SyscallCall>,
    /// Slowest completed calls that work (at most `--top`).
    pub slowest_work: Vec<SyscallCall>,
    /// Slowest completed calls that wait for an event (at most `--top`).
    pub slowest_waits: Vec<SyscallCall>,
    /// Calls still in flight at the end of the window, longest first, waits and work together
    /// (at most `--top`); `exit` and `exit_group`, which never return, are left out.
    pub in_flight: Vec<InFlightCall>,
    /// In-flight calls that work (at most `--top`).
    pub in_flight_work: Vec<InFlightCall>,
    /// In-flight calls that wait (at most `--top`).
    pub in_flight_waits: Vec<InFlightCall>,
    /// Latency histogram of all completed calls.
    pub histogram: Log2Hist,
}

#[derive(Clone, Copy)]
struct Pending {
    id: u64,
    ts: u64,
    arg0: u64,
    arg1: u64,
    pid: u32,
}

#[derive(Default)]
struct Acc {
    durations: Vec<u64>,
    errors: u64,
}

/// Time one process spent in one syscall's working calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WorkAcc {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    /// Thread, entry time and first argument of the longest call.
    pub longest: (u32, u64, u64),
}

/// Accumulates syscall latencies.
#[derive(Default)]
pub(crate) struct Syscalls {
    pending: HashMap<u32, Pending>,
    per: HashMap<(u32, u64), Acc>,
    /// Working calls per (pid, syscall), for the findings.
    work: HashMap<(u32, u64), WorkAcc>,
    slowest: Option<[TopN<SyscallCall>; 3]>,
    unmatched: u64,
}

/// Splits `v` (longest first) into its first `top` entries, of its work and of its waits.
fn split<T: Clone>(v: Vec<T>, top: usize, wait: impl Fn(&T) -> bool) -> [Vec<T>; 3] {
    let work = v.iter().filter(|x| !wait(x)).take(top).cloned().collect();
    let waits = v.iter().filter(|x| wait(x)).take(top).cloned().collect();
    let mut all = v;
    all.truncate(top);
    [all, work, waits]
}

fn name_of(id: u64) -> String {
    syscall_name(id).map_or_else(|| format!("syscall_{id}"), str::to_owned)
}

impl Syscalls {
    pub fn event(&mut self, ev: &Event, tasks: &Tasks, ctx: &Ctx) {
        match ev.data {
            EventData::SyscallEntry(e) => {
                if ctx.selects(ev.tid, tasks) {
                    let p = Pending {
                        id: e.id,
                        ts: ev.ts_ns,
                        arg0: e.args[0],
                        arg1: e.args[1],
                        pid: ev.pid,
                    };
                    self.pending.insert(ev.tid, p);
                } else {
                    self.pending.remove(&ev.tid);
                }
            }
            EventData::SyscallExit(x) => {
                let Some(p) = self.pending.remove(&ev.tid) else {
                    if ctx.selects(ev.tid, tasks) {
                        self.unmatched += 1;
                    }
                    return;
                };
                if p.id != x.id {
                    // The entry of this exit was not recorded.
                    self.unmatched += 1;
                    return;
                }
                let d = ev.ts_ns - p.ts;
                let acc = self.per.entry((p.pid, x.id)).or_default();
                acc.durations.push(d);
                acc.errors += u64::from(x.ret < 0);
                // Unknown numbers are never waits: their "syscall_N" names are in no list.
                let wait = is_wait(syscall_name(x.id).unwrap_or(""), p.arg1);
                if !wait {
                    let w = self.work.entry((p.pid, x.id)).or_default();
                    w.count += 1;
                    w.total_ns += d;
                    if d >= w.max_ns {
                        w.max_ns = d;
                        w.longest = (ev.tid, p.ts, p.arg0);
                    }
                }
                let call = || SyscallCall {
                    tid: ev.tid,
                    pid: p.pid,
                    comm: tasks.comm(ev.tid).to_owned(),
                    fd: fd_arg(&name_of(x.id), p.arg0),
                    fd_name: None,
                    syscall: name_of(x.id),
                    id: x.id,
                    entry_ns: p.ts,
                    exit_ns: ev.ts_ns,
                    duration_ns: d,
                    ret: x.ret,
                    arg0: p.arg0,
                    wait,
                };
                let [all, work, waits] = self
                    .slowest
                    .get_or_insert_with(|| std::array::from_fn(|_| TopN::new(ctx.opts.top)));
                if wait { waits } else { work }.push_with(d, call);
                all.push_with(d, call);
            }
            _ => {}
        }
    }

    /// Working calls per (pid, syscall) so far.
    pub fn work(&self) -> &HashMap<(u32, u64), WorkAcc> {
        &self.work
    }

    pub fn finish(mut self, tasks: &Tasks, ctx: &Ctx) -> SyscallReport {
        let top = ctx.opts.top;
        // Per syscall over all processes, and per process.
        let mut all: HashMap<u64, Acc> = HashMap::new();
        let mut procs: HashMap<u32, Vec<SyscallStats>> = HashMap::new();
        let mut every = Vec::new();
        for ((pid, id), acc) in &mut self.per {
            let a = all.entry(*id).or_default();
            a.durations.extend_from_slice(&acc.durations);
            a.errors += acc.errors;
            every.extend_from_slice(&acc.durations);
            procs.entry(*pid).or_default().push(SyscallStats {
                name: name_of(*id),
                id: *id,
                errors: acc.errors,
                latency: LatencyStats::of(&mut acc.durations),
            });
        }
        let order = |v: &mut Vec<SyscallStats>| {
            v.sort_by(|a, b| {
                b.latency
                    .total_ns
                    .cmp(&a.latency.total_ns)
                    .then(a.name.cmp(&b.name))
            })
        };
        let mut by_syscall: Vec<SyscallStats> = all
            .into_iter()
            .map(|(id, mut acc)| SyscallStats {
                name: name_of(id),
                id,
                errors: acc.errors,
                latency: LatencyStats::of(&mut acc.durations),
            })
            .collect();
        order(&mut by_syscall);
        let mut by_process: Vec<ProcessSyscalls> = procs
            .into_iter()
            .map(|(pid, mut v)| {
                order(&mut v);
                let count = v.iter().map(|s| s.latency.count).sum();
                let errors = v.iter().map(|s| s.errors).sum();
                let total_ns = v.iter().map(|s| s.latency.total_ns).sum();
                v.truncate(top);
                let work_ns = self
                    .work
                    .iter()
                    .filter(|((p, _), _)| *p == pid)
                    .map(|(_, w)| w.total_ns)
                    .sum();
                ProcessSyscalls {
                    work_ns,
                    pid,
                    comm: tasks.proc_comm(pid).to_owned(),
                    cgroup: tasks.cgroup_of(pid).map(str::to_owned),
                    count,
                    errors,
                    total_ns,
                    syscalls: v,
                }
            })
            .collect();
        by_process.sort_by(|a, b| {
            (b.work_ns, b.total_ns)
                .cmp(&(a.work_ns, a.total_ns))
                .then(a.pid.cmp(&b.pid))
        });
        by_process.truncate(top);
        let mut in_flight: Vec<InFlightCall> = self
            .pending
            .iter()
            .filter_map(|(&tid, p)| {
                let syscall = name_of(p.id);
                (!never_returns(&syscall)).then(|| InFlightCall {
                    tid,
                    pid: p.pid,
                    comm: tasks.comm(tid).to_owned(),
                    wait: is_wait(&syscall, p.arg1),
                    syscall,
                    id: p.id,
                    entry_ns: p.ts,
                    elapsed_ns: ctx.end.saturating_sub(p.ts),
                    arg0: p.arg0,
                    fd: fd_arg(&name_of(p.id), p.arg0),
                    fd_name: None,
                })
            })
            .collect();
        in_flight.sort_by(|a, b| b.elapsed_ns.cmp(&a.elapsed_ns).then(a.tid.cmp(&b.tid)));
        let [in_flight, in_flight_work, in_flight_waits] = split(in_flight, top, |c| c.wait);
        let [slowest, slowest_work, slowest_waits] = self
            .slowest
            .map(|t| t.map(TopN::into_sorted))
            .unwrap_or_default();
        SyscallReport {
            calls: by_syscall.iter().map(|s| s.latency.count).sum(),
            errors: by_syscall.iter().map(|s| s.errors).sum(),
            unmatched_exits: self.unmatched,
            histogram: Log2Hist::of(&every),
            by_syscall,
            by_process,
            slowest,
            slowest_work,
            slowest_waits,
            in_flight,
            in_flight_work,
            in_flight_waits,
        }
    }
}
