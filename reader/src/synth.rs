//! Synthetic snapshots: builds a real snapshot file from events written by hand. The analyses'
//! table-driven tests, the exporters' tests and the analyze benchmark use it, so their inputs go
//! through the same encoder and decoder as a recorded snapshot.

use std::collections::BTreeMap;
use std::path::Path;

use schemas::event::{Event, EventData};
use schemas::file::{FormatError, SnapshotWriter};
use schemas::manifest::{CpuCoverage, Manifest, ProcessInfo, ThreadInfo, TriggerInfo};
use schemas::{
    BlockRq, COMM_LEN, IrqHandlerEntry, IrqHandlerExit, ProcessExec, ProcessExit, ProcessFork,
    Record, SchedSwitch, SchedWakeup, Softirq, SyscallEntry, SyscallExit, SyscallPath,
};

/// Encodes `ev` as the record the kernel side would have written.
pub fn encode(ev: &Event, seq: u64) -> Record {
    let mut r = Record {
        seq,
        ts_ns: ev.ts_ns,
        pid: ev.pid,
        tid: ev.tid,
        kind: ev.kind() as u16,
        cpu: ev.cpu,
        ..Record::ZERO
    };
    match ev.data {
        EventData::SyscallEntry(p) => r.set_payload(p),
        EventData::SyscallExit(p) => r.set_payload(p),
        EventData::SchedSwitch(p) => r.set_payload(p),
        EventData::SchedWakeup(p) | EventData::SchedWakeupNew(p) => r.set_payload(p),
        EventData::ProcessFork(p) => r.set_payload(p),
        EventData::ProcessExec(p) => r.set_payload(p),
        EventData::ProcessExit(p) => r.set_payload(p),
        EventData::BlockRqIssue(p) | EventData::BlockRqComplete(p) => r.set_payload(p),
        EventData::IrqHandlerEntry(p) => r.set_payload(p),
        EventData::IrqHandlerExit(p) => r.set_payload(p),
        EventData::SoftirqEntry(p) | EventData::SoftirqExit(p) => r.set_payload(p),
        EventData::SyscallPath(p, cut) => {
            r.set_payload(p);
            if cut {
                r.flags = schemas::record_flags::PATH_CUT;
            }
        }
    }
    r
}

/// A NUL-padded comm.
pub fn comm(s: &str) -> [u8; COMM_LEN] {
    let mut c = [0u8; COMM_LEN];
    let n = s.len().min(COMM_LEN - 1);
    c[..n].copy_from_slice(&s.as_bytes()[..n]);
    c
}

/// A task as the builder's helpers take it: (pid, tid, comm).
pub type Task<'a> = (u32, u32, &'a str);

/// Collects events per CPU and writes them as a snapshot file. Events may be added in any order;
/// each CPU's stream is sorted by time when written, as the rings are.
#[derive(Clone, Debug, Default)]
pub struct SnapshotBuilder {
    /// The manifest written; coverage is filled in from the events by [`SnapshotBuilder::write`].
    pub manifest: Manifest,
    cpus: BTreeMap<u32, Vec<Event>>,
    /// cgroup v2 ids the kernel records of a thread carry (tid → id); 0 for the others, as in
    /// files written before records carried them.
    kernel_cgroups: BTreeMap<u32, u64>,
}

impl SnapshotBuilder {
    /// An empty snapshot of a host with `ncpu` CPUs recording every event class.
    pub fn new(ncpu: u32) -> Self {
        let mut manifest = Manifest {
            snapshot_id: "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e".into(),
            name: "synthetic".into(),
            trigger: TriggerInfo {
                source: "test".into(),
                reason: "synthetic".into(),
                fields: Default::default(),
            },
            ..Default::default()
        };
        manifest.host.hostname = "synthetic".into();
        manifest.host.host_id = "synthetic".into();
        manifest.host.ncpu = ncpu;
        manifest.recorder.record_size = schemas::RECORD_SIZE as u32;
        manifest.recorder.classes = ["syscalls", "sched", "process", "block", "irq"]
            .map(String::from)
            .to_vec();
        let cpus = (0..ncpu).map(|c| (c, Vec::new())).collect();
        SnapshotBuilder {
            manifest,
            cpus,
            kernel_cgroups: BTreeMap::new(),
        }
    }

    /// From now on, the kernel records of thread `tid` (its switches out, forks and exit) carry
    /// cgroup id `id`, as the recorder writes them.
    pub fn kernel_cgroup(&mut self, tid: u32, id: u64) -> &mut Self {
        self.kernel_cgroups.insert(tid, id);
        self
    }

    fn cgroup_of(&self, tid: u32) -> u64 {
        self.kernel_cgroups.get(&tid).copied().unwrap_or(0)
    }

    /// The path record the kernel writes just before the entry of an open-family syscall `id`
    /// by `t` at `ts`; `path` longer than the record holds is cut and flagged.
    pub fn path(&mut self, ts: u64, cpu: u32, t: Task, id: u64, path: &str) -> &mut Self {
        let mut p = SyscallPath {
            id,
            path: [0; schemas::SYSCALL_PATH_LEN],
        };
        let n = path.len().min(p.path.len() - 1);
        p.path[..n].copy_from_slice(&path.as_bytes()[..n]);
        self.add(ts, cpu, t, EventData::SyscallPath(p, n < path.len()))
    }

    /// Adds one event.
    pub fn event(&mut self, ev: Event) -> &mut Self {
        self.cpus.entry(ev.cpu).or_default().push(ev);
        self
    }

    fn add(&mut self, ts_ns: u64, cpu: u32, t: Task, data: EventData) -> &mut Self {
        self.event(Event {
            ts_ns,
            cpu,
            pid: t.0,
            tid: t.1,
            data,
        })
    }

    /// A syscall `id` by `t` on `cpu` from `start` to `end` (ns), with first argument `arg0`,
    /// returning `ret`.
    #[expect(clippy::too_many_arguments, reason = "one syscall's whole description")]
    pub fn syscall(
        &mut self,
        cpu: u32,
        t: Task,
        id: u64,
        arg0: u64,
        ret: i64,
        start: u64,
        end: u64,
    ) -> &mut Self {
        let args = [arg0, 0, 0, 0, 0, 0];
        self.add(
            start,
            cpu,
            t,
            EventData::SyscallEntry(SyscallEntry { id, args }),
        );
        self.add(end, cpu, t, EventData::SyscallExit(SyscallExit { id, ret }))
    }

    /// `sched_switch` on `cpu` from `prev` (leaving in `prev_state`) to `next`.
    pub fn switch(
        &mut self,
        ts: u64,
        cpu: u32,
        prev: Task,
        prev_state: u64,
        next: Task,
    ) -> &mut Self {
        let data = EventData::SchedSwitch(SchedSwitch {
            prev_comm: comm(prev.2),
            next_comm: comm(next.2),
            next_tid: next.1,
            next_pid: next.0,
            prev_prio: 120,
            next_prio: 120,
            prev_state,
            prev_cgroup: self.cgroup_of(prev.1),
        });
        self.add(ts, cpu, prev, data)
    }

    /// `sched_wakeup` of `woken` onto `target_cpu`, raised by `waker` on `cpu`.
    pub fn wakeup(
        &mut self,
        ts: u64,
        cpu: u32,
        waker: Task,
        woken: Task,
        target_cpu: u32,
    ) -> &mut Self {
        let data = EventData::SchedWakeup(SchedWakeup {
            comm: comm(woken.2),
            tid: woken.1,
            pid: woken.0,
            prio: 120,
            target_cpu,
        });
        self.add(ts, cpu, waker, data)
    }

    /// `sched_process_fork` of `child` by `parent`.
    pub fn fork(&mut self, ts: u64, cpu: u32, parent: Task, child: Task) -> &mut Self {
        let data = EventData::ProcessFork(ProcessFork {
            parent_comm: comm(parent.2),
            child_comm: comm(child.2),
            parent_tid: parent.1,
            parent_pid: parent.0,
            child_tid: child.1,
            child_pid: child.0,
            cgroup: self.cgroup_of(parent.1),
        });
        self.add(ts, cpu, parent, data)
    }

    /// `sched_process_exec` of `filename` by `t`.
    pub fn exec(&mut self, ts: u64, cpu: u32, t: Task, filename: &str) -> &mut Self {
        let mut f = ProcessExec {
            tid: t.1,
            old_tid: t.1,
            filename: [0; schemas::EXEC_FILENAME_LEN],
        };
        let n = filename.len().min(f.filename.len() - 1);
        f.filename[..n].copy_from_slice(&filename.as_bytes()[..n]);
        self.add(ts, cpu, t, EventData::ProcessExec(f))
    }

    /// `sched_process_exit` of `t`.
    pub fn exit(&mut self, ts: u64, cpu: u32, t: Task) -> &mut Self {
        let data = EventData::ProcessExit(ProcessExit {
            comm: comm(t.2),
            tid: t.1,
            pid: t.0,
            prio: 120,
            _pad: 0,
            cgroup: self.cgroup_of(t.1),
        });
        self.add(ts, cpu, t, data)
    }

    /// A block request on `dev` issued by `t` at `issue` and completed at `complete` (on the
    /// same CPU, in interrupt context of `t` for simplicity). `op` is a `schemas::rwbs` op.
    #[expect(
        clippy::too_many_arguments,
        reason = "one block request's whole description"
    )]
    pub fn block(
        &mut self,
        cpu: u32,
        t: Task,
        dev: u32,
        sector: u64,
        bytes: u32,
        op: u32,
        issue: u64,
        complete: u64,
    ) -> &mut Self {
        let rq = BlockRq {
            sector,
            dev,
            nr_sector: bytes / 512,
            bytes,
            op,
            rwbs_flags: 0,
            error: 0,
            comm: comm(t.2),
        };
        self.add(issue, cpu, t, EventData::BlockRqIssue(rq));
        self.add(
            complete,
            cpu,
            (0, 0, "swapper/0"),
            EventData::BlockRqComplete(BlockRq {
                comm: [0; COMM_LEN],
                bytes: 0,
                ..rq
            }),
        )
    }

    /// An irq handler `irq` named `name` running on `cpu` over `t` from `start` to `end`.
    pub fn irq(
        &mut self,
        cpu: u32,
        t: Task,
        irq: u32,
        name: &str,
        start: u64,
        end: u64,
    ) -> &mut Self {
        let mut e = IrqHandlerEntry {
            irq,
            _pad: 0,
            name: [0; schemas::IRQ_NAME_LEN],
        };
        let n = name.len().min(e.name.len() - 1);
        e.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.add(start, cpu, t, EventData::IrqHandlerEntry(e));
        self.add(
            end,
            cpu,
            t,
            EventData::IrqHandlerExit(IrqHandlerExit { irq, ret: 1 }),
        )
    }

    /// A softirq of vector `vec` on `cpu` over `t` from `start` to `end`.
    pub fn softirq(&mut self, cpu: u32, t: Task, vec: u32, start: u64, end: u64) -> &mut Self {
        self.add(
            start,
            cpu,
            t,
            EventData::SoftirqEntry(Softirq { vec, _pad: 0 }),
        );
        self.add(
            end,
            cpu,
            t,
            EventData::SoftirqExit(Softirq { vec, _pad: 0 }),
        )
    }

    /// Adds a process (and its threads) to the statedump.
    pub fn process(
        &mut self,
        pid: u32,
        ppid: u32,
        comm: &str,
        cgroup: (&str, u64),
        tids: &[u32],
    ) -> &mut Self {
        self.manifest.statedump.processes.push(ProcessInfo {
            pid,
            ppid,
            comm: comm.into(),
            cmdline: comm.into(),
            cgroup_path: cgroup.0.into(),
            cgroup_id: cgroup.1,
            container_id: None,
            threads: tids
                .iter()
                .map(|&tid| ThreadInfo {
                    tid,
                    comm: comm.into(),
                })
                .collect(),
            fds: Vec::new(),
            fds_omitted: 0,
        });
        self
    }

    /// The records of each CPU, time-ordered, with sequence numbers from 1.
    pub fn records(&self) -> Vec<(u32, Vec<Record>)> {
        self.cpus
            .iter()
            .map(|(&cpu, evs)| {
                let mut evs = evs.clone();
                evs.sort_by_key(|e| e.ts_ns);
                let recs = evs
                    .iter()
                    .enumerate()
                    .map(|(i, e)| encode(e, i as u64 + 1))
                    .collect();
                (cpu, recs)
            })
            .collect()
    }

    /// Writes the snapshot to `path`, with per-CPU coverage computed from the events (nothing
    /// overwritten or lost).
    pub fn write(&self, path: &Path) -> Result<(), FormatError> {
        let streams = self.records();
        let mut manifest = self.manifest.clone();
        manifest.coverage = streams
            .iter()
            .map(|(cpu, recs)| CpuCoverage {
                cpu: *cpu,
                oldest_ts_ns: recs.first().map(|r| r.ts_ns),
                newest_ts_ns: recs.last().map(|r| r.ts_ns),
                records_kept: recs.len() as u64,
                window_start: 0,
                window_end: recs.len() as u64,
                ..Default::default()
            })
            .collect();
        manifest.frozen_monotonic_ns = streams
            .iter()
            .filter_map(|(_, r)| r.last().map(|r| r.ts_ns))
            .max()
            .unwrap_or(0);
        manifest.frozen_realtime_ns = manifest
            .frozen_monotonic_ns
            .saturating_add_signed(manifest.clocks.realtime_minus_monotonic_ns);
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut w = SnapshotWriter::new(file, &manifest, 3)?;
        for (cpu, recs) in &streams {
            w.write_stream(*cpu, recs)?;
        }
        let mut file = w.finish()?;
        std::io::Write::flush(&mut file)?;
        Ok(())
    }
}
