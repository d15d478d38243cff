//! The process log, execsnoop-style: every fork of a new process, exec and process exit in the
//! window, with parents, and the lifetime of processes that both started and ended in it.

use std::collections::HashMap;

use schemas::cstr_lossy;
use schemas::event::{Event, EventData};
use serde::Serialize;

use super::{Ctx, Tasks};

/// Entries kept in the log; more are counted in `truncated`.
pub const LOG_LIMIT: usize = 10_000;

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessEvent {
    /// Time.
    pub ts_ns: u64,
    /// `fork`, `exec` or `exit`.
    pub event: &'static str,
    /// Process id (the new child's for `fork`).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Process name (after the exec for `exec`).
    pub comm: String,
    /// Parent process id.
    pub ppid: u32,
    /// Parent's name.
    pub parent_comm: String,
    /// Executed file (`exec` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Time from fork to exit (`exit` of a process forked in the window only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime_ns: Option<u64>,
}

/// The process log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessReport {
    /// New processes (threads are not counted).
    pub forks: u64,
    /// New threads.
    pub threads: u64,
    /// execs.
    pub execs: u64,
    /// Process exits.
    pub exits: u64,
    /// Processes forked and exited within the window.
    pub short_lived: u64,
    /// The log, in time order (at most [`LOG_LIMIT`] entries).
    pub log: Vec<ProcessEvent>,
    /// Entries left out of `log`.
    pub truncated: u64,
}

/// Accumulates the process log.
#[derive(Default)]
pub(crate) struct Procs {
    forked: HashMap<u32, u64>,
    forks: u64,
    threads: u64,
    execs: u64,
    exits: u64,
    short_lived: u64,
    log: Vec<ProcessEvent>,
    truncated: u64,
}

impl Procs {
    fn push(&mut self, e: ProcessEvent) {
        if self.log.len() < LOG_LIMIT {
            self.log.push(e);
        } else {
            self.truncated += 1;
        }
    }

    pub fn event(&mut self, ev: &Event, tasks: &Tasks, ctx: &Ctx) {
        match ev.data {
            EventData::ProcessFork(k) => {
                if k.child_pid == k.parent_pid {
                    self.threads += u64::from(ctx.selects(k.child_tid, tasks));
                    return;
                }
                if !(ctx.selects(k.child_tid, tasks) || ctx.selects(k.parent_tid, tasks)) {
                    return;
                }
                self.forks += 1;
                self.forked.insert(k.child_pid, ev.ts_ns);
                self.push(ProcessEvent {
                    ts_ns: ev.ts_ns,
                    event: "fork",
                    pid: k.child_pid,
                    tid: k.child_tid,
                    comm: cstr_lossy(&k.child_comm),
                    ppid: k.parent_pid,
                    parent_comm: tasks.proc_comm(k.parent_pid).to_owned(),
                    filename: None,
                    lifetime_ns: None,
                });
            }
            EventData::ProcessExec(x) => {
                let ppid = tasks.ppid_of(ev.pid).unwrap_or(0);
                if !(ctx.selects(ev.tid, tasks) || (ppid != 0 && ctx.selects(ppid, tasks))) {
                    return;
                }
                self.execs += 1;
                self.push(ProcessEvent {
                    ts_ns: ev.ts_ns,
                    event: "exec",
                    pid: ev.pid,
                    tid: ev.tid,
                    comm: tasks.comm(ev.tid).to_owned(),
                    ppid,
                    parent_comm: if ppid == 0 {
                        "?".into()
                    } else {
                        tasks.proc_comm(ppid).to_owned()
                    },
                    filename: Some(cstr_lossy(&x.filename)),
                    lifetime_ns: None,
                });
            }
            EventData::ProcessExit(x) => {
                // Only the whole process's end: its main thread exiting.
                if x.tid != x.pid {
                    return;
                }
                let ppid = tasks.ppid_of(x.pid).unwrap_or(0);
                if !(ctx.selects(x.tid, tasks) || (ppid != 0 && ctx.selects(ppid, tasks))) {
                    return;
                }
                self.exits += 1;
                let lifetime = self.forked.remove(&x.pid).map(|t| ev.ts_ns - t);
                self.short_lived += u64::from(lifetime.is_some());
                self.push(ProcessEvent {
                    ts_ns: ev.ts_ns,
                    event: "exit",
                    pid: x.pid,
                    tid: x.tid,
                    comm: cstr_lossy(&x.comm),
                    ppid,
                    parent_comm: if ppid == 0 {
                        "?".into()
                    } else {
                        tasks.proc_comm(ppid).to_owned()
                    },
                    filename: None,
                    lifetime_ns: lifetime,
                });
            }
            _ => {}
        }
    }

    pub fn finish(self, _ctx: &Ctx) -> ProcessReport {
        ProcessReport {
            forks: self.forks,
            threads: self.threads,
            execs: self.execs,
            exits: self.exits,
            short_lived: self.short_lived,
            log: self.log,
            truncated: self.truncated,
        }
    }
}
