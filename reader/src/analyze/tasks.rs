//! What the analyses know of each task: its process, name, parent and cgroup, from the
//! statedump taken at the freeze and from the events themselves (threads that came and went).
//!
//! A process's cgroup comes from the kernel records when they carry one (switches out, forks
//! and exits name the cgroup v2 id of the task, since ring layout 3), else from the statedump.
//! The records win: they are right for processes that exited before the freeze, which the
//! statedump never saw. Ids resolve to paths through the statedump's list of every cgroup
//! directory; a group removed before the freeze keeps only its id.

use std::collections::{HashMap, HashSet};

use schemas::cstr_lossy;
use schemas::event::{Event, EventData};
use schemas::manifest::Statedump;

#[derive(Clone, Debug, Default)]
struct Proc {
    ppid: u32,
    cgroup: Option<usize>,
    kernel: bool,
}

/// The task table, updated as events stream by.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    /// tid → (pid, comm).
    threads: HashMap<u32, (u32, String)>,
    procs: HashMap<u32, Proc>,
    cgroups: Vec<String>,
    cgroup_index: HashMap<String, usize>,
    /// cgroup v2 id → index in `cgroups`.
    cgroup_ids: HashMap<u64, usize>,
    /// Processes of the recorder itself.
    recorder: HashSet<u32>,
}

/// Name of the recorder's main thread (the `flightrec` binary).
pub const RECORDER_COMM: &str = "flightrec";

impl Tasks {
    /// The tasks of a statedump.
    pub fn from_statedump(sd: &Statedump) -> Tasks {
        let mut t = Tasks::default();
        for c in &sd.cgroups {
            let i = t.intern(&c.path);
            t.cgroup_ids.insert(c.id, i);
        }
        for p in &sd.processes {
            if p.cgroup_id != 0 && !p.cgroup_path.is_empty() {
                let i = t.intern(&p.cgroup_path);
                t.cgroup_ids.entry(p.cgroup_id).or_insert(i);
            }
        }
        for p in &sd.processes {
            let cg = (!p.cgroup_path.is_empty()).then(|| t.intern(&p.cgroup_path));
            // Kernel threads are children of kthreadd (pid 2), or kthreadd itself.
            let kernel = p.pid == 2 || p.ppid == 2;
            t.procs.insert(
                p.pid,
                Proc {
                    ppid: p.ppid,
                    cgroup: cg,
                    kernel,
                },
            );
            t.threads.insert(p.pid, (p.pid, p.comm.clone()));
            if p.comm == RECORDER_COMM {
                t.recorder.insert(p.pid);
            }
            for th in &p.threads {
                t.threads.insert(th.tid, (p.pid, th.comm.clone()));
            }
        }
        t
    }

    fn intern(&mut self, path: &str) -> usize {
        if let Some(&i) = self.cgroup_index.get(path) {
            return i;
        }
        self.cgroups.push(path.to_owned());
        self.cgroup_index
            .insert(path.to_owned(), self.cgroups.len() - 1);
        self.cgroups.len() - 1
    }

    /// The interned path of cgroup v2 id `id` as a kernel record carries it (0: unknown).
    fn kernel_cgroup(&mut self, id: u64) -> Option<usize> {
        if id == 0 {
            return None;
        }
        if let Some(&i) = self.cgroup_ids.get(&id) {
            return Some(i);
        }
        let i = self.intern(&format!("cgroup #{id} (removed before the snapshot)"));
        self.cgroup_ids.insert(id, i);
        Some(i)
    }

    /// Records that process `pid` was in cgroup `id` (as a kernel record says).
    fn set_cgroup(&mut self, pid: u32, id: u64) {
        if pid == 0 {
            return;
        }
        if let Some(i) = self.kernel_cgroup(id) {
            self.procs.entry(pid).or_default().cgroup = Some(i);
        }
    }

    fn set_comm(&mut self, tid: u32, pid: Option<u32>, comm: String) {
        let e = self
            .threads
            .entry(tid)
            .or_insert_with(|| (pid.unwrap_or(tid), String::new()));
        if let Some(pid) = pid {
            e.0 = pid;
        }
        if comm == RECORDER_COMM && e.0 == tid {
            self.recorder.insert(tid);
        }
        e.1 = comm;
    }

    /// Learns names, thread groups and parents from one event.
    pub fn observe(&mut self, ev: &Event) {
        if ev.tid != 0 && !self.threads.contains_key(&ev.tid) {
            self.threads.insert(ev.tid, (ev.pid, String::new()));
        }
        match ev.data {
            EventData::SchedSwitch(s) => {
                self.set_comm(ev.tid, Some(ev.pid), cstr_lossy(&s.prev_comm));
                self.set_comm(s.next_tid, Some(s.next_pid), cstr_lossy(&s.next_comm));
                self.set_cgroup(ev.pid, s.prev_cgroup);
            }
            EventData::SchedWakeup(w) | EventData::SchedWakeupNew(w) => {
                self.set_comm(w.tid, Some(w.pid), cstr_lossy(&w.comm));
            }
            EventData::ProcessFork(f) => {
                self.set_comm(f.child_tid, Some(f.child_pid), cstr_lossy(&f.child_comm));
                if f.child_pid != f.parent_pid {
                    // A new process: same cgroup as its parent until it moves (which the
                    // statedump at the freeze shows for those still alive).
                    let parent = self.procs.get(&f.parent_pid).cloned().unwrap_or_default();
                    let cgroup = self.kernel_cgroup(f.cgroup).or(parent.cgroup);
                    self.procs.entry(f.child_pid).or_insert(Proc {
                        ppid: f.parent_pid,
                        cgroup,
                        kernel: parent.kernel || f.parent_pid == 2,
                    });
                }
            }
            EventData::ProcessExec(x) => {
                let path = cstr_lossy(&x.filename);
                let base = path.rsplit('/').next().unwrap_or(&path);
                // The kernel keeps the first 15 bytes of the file name as the new comm.
                let comm: String = base.chars().take(15).collect();
                self.set_comm(ev.tid, Some(ev.pid), comm);
            }
            EventData::ProcessExit(x) => {
                self.set_comm(x.tid, Some(x.pid), cstr_lossy(&x.comm));
                self.set_cgroup(x.pid, x.cgroup);
            }
            _ => {}
        }
    }

    /// Process id of thread `tid` (itself when unknown).
    pub fn pid_of(&self, tid: u32) -> u32 {
        self.threads.get(&tid).map_or(tid, |t| t.0)
    }

    /// Whether some thread of the snapshot is named `comm`.
    pub fn has_comm(&self, comm: &str) -> bool {
        self.threads.values().any(|(_, c)| c == comm)
    }

    /// Whether process `pid` appears in the snapshot.
    pub fn has_pid(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid) || self.threads.values().any(|(p, _)| *p == pid)
    }

    /// Name of thread `tid` (`swapper/N` style names for 0, `?` when unknown).
    pub fn comm(&self, tid: u32) -> &str {
        if tid == 0 {
            return "swapper";
        }
        match self.threads.get(&tid) {
            Some((_, c)) if !c.is_empty() => c,
            _ => "?",
        }
    }

    /// Name of process `pid`: its main thread's name, else any of its threads'.
    pub fn proc_comm(&self, pid: u32) -> &str {
        match self.comm(pid) {
            "?" => self
                .threads
                .values()
                .find(|(p, c)| *p == pid && !c.is_empty())
                .map_or("?", |(_, c)| c.as_str()),
            c => c,
        }
    }

    /// Parent process id of `pid`, if known.
    pub fn ppid_of(&self, pid: u32) -> Option<u32> {
        self.procs.get(&pid).map(|p| p.ppid)
    }

    /// cgroup v2 path of process `pid`, if known.
    pub fn cgroup_of(&self, pid: u32) -> Option<&str> {
        let i = self.procs.get(&pid)?.cgroup?;
        Some(&self.cgroups[i])
    }

    /// Whether thread `tid` belongs to the recorder: a process whose main thread is named
    /// [`RECORDER_COMM`], all its threads (tokio workers included).
    pub fn is_recorder(&self, tid: u32) -> bool {
        tid != 0 && self.recorder.contains(&self.pid_of(tid))
    }

    /// Process ids of the recorder, smallest first.
    pub fn recorder_pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.recorder.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Whether thread `tid` is the idle task or a kernel thread.
    pub fn is_system(&self, tid: u32) -> bool {
        tid == 0 || self.procs.get(&self.pid_of(tid)).is_some_and(|p| p.kernel)
    }
}
