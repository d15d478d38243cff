//! `flightrec export --format perfetto`: a snapshot as a native Perfetto protobuf trace, the
//! format ui.perfetto.dev and trace processor read, with the kernel events as typed ftrace
//! events so the UI draws CPU scheduling tracks, thread states, syscall slices and irq tracks.
//!
//! # Wire format
//!
//! The output is a `perfetto.protos.Trace`: a sequence of `TracePacket`s, written in this order.
//!
//! | packet | sequence | content |
//! | --- | --- | --- |
//! | `clock_snapshot` | 1 | BOOTTIME, MONOTONIC and REALTIME at the freeze; BOOTTIME is the primary trace clock |
//! | `system_info` | 1 | `utsname` (Linux, kernel release and version, machine) and the CPU count |
//! | `trace_uuid` | 1 | the snapshot id, when it is 32 hex digits |
//! | `process_tree` | 2 | the manifest's statedump: processes (pid, ppid, argv) and their threads |
//! | `ftrace_events` (many) | 2 | one `FtraceEventBundle` per CPU and per ~64 KiB of events |
//! | `process_tree` | 2 | threads seen in the events but gone before the statedump (tid, tgid, last comm) |
//!
//! Packets of sequence 1 stand for what Perfetto's tracing service writes itself, sequence 2 for
//! one producer; the first packet of each says the sequence starts there.
//!
//! ## Timestamps
//!
//! Perfetto reads ftrace timestamps in the `CLOCK_BOOTTIME` domain. The snapshot's
//! `CLOCK_MONOTONIC` timestamps are converted by adding the manifest's
//! `clocks.boottime_minus_monotonic_ns` (the time the host spent suspended before the snapshot),
//! so the numbers are those a Perfetto recording on the same host would carry. The clock
//! snapshot lets the UI show wall-clock (REALTIME) time too.
//!
//! ## Events
//!
//! Each event becomes one `FtraceEvent` whose `pid` is the thread id of the current task. Every
//! kind maps to the typed message of the same name, with the kernel's tracepoint fields:
//!
//! | flightrec | Perfetto | note |
//! | --- | --- | --- |
//! | `syscall_entry_*` | `sys_enter` | `id`, the six `args` |
//! | `syscall_exit_*` | `sys_exit` | `id`, `ret` |
//! | `sched_switch` | `sched_switch` | `prev_state` in the tracepoint's encoding, see [`ftrace_prev_state`] |
//! | `sched_wakeup` | `sched_waking` | trace processor derives the Runnable state from `sched_waking` only |
//! | `sched_wakeup_new` | `sched_wakeup_new` | |
//! | `sched_process_fork` | `sched_process_fork` | `parent_pid`/`child_pid` are thread ids, as in the kernel |
//! | `sched_process_exec` | `sched_process_exec` | |
//! | `sched_process_exit` | `sched_process_exit` | |
//! | `block_rq_issue` | `block_rq_issue` | `dev` in the kernel's `dev_t` encoding |
//! | `block_rq_complete` | `block_rq_complete` | `error` |
//! | `irq_handler_entry`/`_exit` | `irq_handler_entry`/`_exit` | |
//! | `softirq_entry`/`_exit` | `softirq_entry`/`_exit` | |
//!
//! # Memory
//!
//! Events are read through the time-ordered merge of the per-CPU streams and appended to their
//! CPU's pending bundle, which is written out once it reaches [`BUNDLE_BYTES`]; so at most one
//! bundle per CPU is held, plus one name per thread seen for the closing process tree.
//!
//! The file is written under a temporary name beside the output and renamed when complete, so a
//! failed export leaves nothing behind.

pub mod proto;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use schemas::cstr_lossy;
use schemas::event::{Event, EventData, rwbs_string};
use schemas::manifest::Manifest;

use super::{ExportError, ExportStats};
use proto::{Msg, fields as f};

/// A CPU's pending bundle is written once its encoded events reach this many bytes.
pub const BUNDLE_BYTES: usize = 64 * 1024;

/// `trusted_packet_sequence_id` of the packets the tracing service would write.
const SERVICE_SEQUENCE: u64 = 1;
/// `trusted_packet_sequence_id` of the process trees and ftrace bundles.
const DATA_SEQUENCE: u64 = 2;

/// Writes the snapshot at `input` as a Perfetto trace at `output`. Refuses to overwrite an
/// existing output; on error no output (and no temporary file) is left.
pub fn write(input: &Path, output: &Path) -> Result<ExportStats, ExportError> {
    super::export(input, super::Format::Perfetto, output)
}

/// [`write`] against `budget`.
pub(crate) fn write_with(
    input: &Path,
    output: &Path,
    budget: &std::sync::Arc<super::Budget>,
) -> Result<ExportStats, ExportError> {
    if output.exists() {
        return Err(ExportError::OutputExists(output.to_path_buf()));
    }
    let (manifest, events) = crate::dump::open(input)?;
    super::write_then_rename(output, |tmp| {
        let file = File::create(tmp).map_err(|e| write_error(output, e))?;
        let mut exporter = Exporter::new(BufWriter::new(budget.wrap(file)), &manifest, output);
        exporter.preamble()?;
        for ev in events {
            exporter.event(&ev.map_err(|e| ExportError::Decode(e.to_string()))?)?;
        }
        let (stats, out) = exporter.finish()?;
        let file = out
            .into_inner()
            .map_err(|e| write_error(output, e.into_error()))?;
        file.get_ref()
            .sync_all()
            .map_err(|e| write_error(output, e))?;
        Ok(stats)
    })
}

fn write_error(path: &Path, source: std::io::Error) -> ExportError {
    ExportError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// The value the kernel's `sched_switch` tracepoint reports as `prev_state` for a task that
/// left the CPU with `state` (`task_struct.__state`, as the snapshot records it, with 0 for a
/// preempted task), which is the encoding trace processor decodes for kernels since 4.14.
///
/// The tracepoint reports one bit, that of the highest `TASK_REPORT` state present, after the
/// kernel's adjustments in `__task_state_index()`: `TASK_IDLE` reports as `I` (0x80), and a task
/// waiting on an RT lock (`TASK_RTLOCK_WAIT`) or frozen (`TASK_FROZEN`) as uninterruptible.
/// The kernel also folds in `exit_state`, which the snapshot lacks: a task in `TASK_DEAD` is
/// reported as `EXIT_DEAD` (`X`), where the kernel may say `Z` for a process leader whose
/// parent has not reaped it yet.
pub fn ftrace_prev_state(state: u64) -> i64 {
    const TASK_REPORT: u64 = 0x7f;
    const TASK_UNINTERRUPTIBLE: u64 = 0x2;
    const EXIT_DEAD: u64 = 0x10;
    const TASK_DEAD: u64 = 0x80;
    const TASK_IDLE: u64 = 0x402;
    const TASK_REPORT_IDLE: u64 = 0x80;
    const TASK_RTLOCK_WAIT: u64 = 0x1000;
    const TASK_FROZEN: u64 = 0x8000;

    let mut report = state & TASK_REPORT;
    if state & TASK_IDLE == TASK_IDLE {
        report = TASK_REPORT_IDLE;
    }
    if state & (TASK_RTLOCK_WAIT | TASK_FROZEN) != 0 {
        report = TASK_UNINTERRUPTIBLE;
    }
    if report == 0 && state & TASK_DEAD != 0 {
        report = EXIT_DEAD;
    }
    if report == 0 {
        return 0;
    }
    1i64 << (63 - report.leading_zeros())
}

/// A thread the events show, for the closing process tree.
#[derive(Debug, Default)]
struct SeenThread {
    tgid: u32,
    comm: Option<String>,
}

struct Exporter<'a, W: Write> {
    out: W,
    output: &'a Path,
    manifest: &'a Manifest,
    /// BOOTTIME - MONOTONIC, added to every timestamp.
    boot_offset: i64,
    bundles: BTreeMap<u32, Msg>,
    scratch: Msg,
    payload: Msg,
    threads: HashMap<u32, SeenThread>,
    /// Parent of each process whose creation (`fork` of a new thread group) was recorded.
    parents: HashMap<u32, u32>,
    events: u64,
    bytes: u64,
    first_on_sequence: BTreeSet<u64>,
}

impl<'a, W: Write> Exporter<'a, W> {
    fn new(out: W, manifest: &'a Manifest, output: &'a Path) -> Self {
        Exporter {
            out,
            output,
            manifest,
            boot_offset: manifest.clocks.boottime_minus_monotonic_ns,
            bundles: BTreeMap::new(),
            scratch: Msg::new(),
            payload: Msg::new(),
            threads: HashMap::new(),
            parents: HashMap::new(),
            events: 0,
            bytes: 0,
            first_on_sequence: BTreeSet::new(),
        }
    }

    fn boottime(&self, monotonic_ns: u64) -> u64 {
        monotonic_ns.saturating_add_signed(self.boot_offset)
    }

    /// Writes one `TracePacket` holding `body` (its data field already encoded) on `sequence`.
    fn packet(&mut self, sequence: u64, body: &Msg) -> Result<(), ExportError> {
        use proto::packet as p;
        let mut pkt = Msg::new();
        pkt.uint(p::TRUSTED_PACKET_SEQUENCE_ID, sequence);
        if self.first_on_sequence.insert(sequence) {
            pkt.bool(p::FIRST_PACKET_ON_SEQUENCE, true)
                .uint(p::SEQUENCE_FLAGS, p::SEQ_INCREMENTAL_STATE_CLEARED);
        }
        // The packet's fields are written in place rather than copied into one buffer: a
        // message's fields may come in any order, so `body` can follow the sequence fields.
        let head = proto::field_header(proto::trace::PACKET, pkt.len() + body.len());
        for part in [head.as_bytes(), pkt.as_bytes(), body.as_bytes()] {
            self.out
                .write_all(part)
                .map_err(|e| write_error(self.output, e))?;
            self.bytes += part.len() as u64;
        }
        Ok(())
    }

    /// Clock snapshot, system info, trace uuid and the statedump's process tree.
    fn preamble(&mut self) -> Result<(), ExportError> {
        use proto::{clock, packet, system_info as si, uuid};
        let m = self.manifest;
        let mono = m.frozen_monotonic_ns;
        let boot = self.boottime(mono);
        let real = mono.saturating_add_signed(m.clocks.realtime_minus_monotonic_ns);

        let mut snap = Msg::new();
        for (id, ts) in [
            (clock::BOOTTIME, boot),
            (clock::MONOTONIC, mono),
            (clock::REALTIME, real),
        ] {
            let mut c = Msg::new();
            c.uint(clock::CLOCK_ID, id).uint(clock::TIMESTAMP, ts);
            snap.message(clock::CLOCKS, &c);
        }
        snap.uint(clock::PRIMARY_TRACE_CLOCK, clock::BOOTTIME);
        let mut body = Msg::new();
        body.uint(packet::TIMESTAMP, boot)
            .message(packet::CLOCK_SNAPSHOT, &snap);
        self.packet(SERVICE_SEQUENCE, &body)?;

        // Trace processor picks the task-state encoding and the syscall table from these.
        let mut uts = Msg::new();
        uts.string(si::SYSNAME, "Linux")
            .string(si::VERSION, &m.host.kernel_version)
            .string(si::RELEASE, &m.host.kernel_release)
            .string(si::MACHINE, &m.host.machine);
        let mut info = Msg::new();
        info.message(si::UTSNAME, &uts)
            .uint(si::NUM_CPUS, u64::from(m.host.ncpu));
        let mut body = Msg::new();
        body.message(packet::SYSTEM_INFO, &info);
        self.packet(SERVICE_SEQUENCE, &body)?;

        if let Some(id) = parse_uuid(&m.snapshot_id) {
            let mut u = Msg::new();
            u.int(uuid::MSB, (id >> 64) as u64 as i64)
                .int(uuid::LSB, id as u64 as i64);
            let mut body = Msg::new();
            body.message(packet::TRACE_UUID, &u);
            self.packet(SERVICE_SEQUENCE, &body)?;
        }

        let tree = statedump_tree(m);
        let mut body = Msg::new();
        body.uint(packet::TIMESTAMP, boot)
            .message(packet::PROCESS_TREE, &tree);
        self.packet(DATA_SEQUENCE, &body)
    }

    /// Appends `ev` to its CPU's bundle, writing the bundle out when full.
    fn event(&mut self, ev: &Event) -> Result<(), ExportError> {
        if let EventData::SyscallPath(..) = ev.data {
            // ftrace has no such event: the path is an argument of the entry that follows.
            return Ok(());
        }
        self.learn(ev);
        let (field, payload) = self.encode_payload(ev);
        let ts = self.boottime(ev.ts_ns);
        let e = &mut self.scratch;
        e.clear();
        e.uint(proto::ftrace::TIMESTAMP, ts)
            .uint(proto::ftrace::PID, u64::from(ev.tid))
            .message(field, &payload);
        self.payload = payload;
        let bundle = self.bundles.entry(ev.cpu).or_insert_with(|| {
            let mut b = Msg::new();
            b.uint(proto::bundle::CPU, u64::from(ev.cpu));
            b
        });
        bundle.message(proto::bundle::EVENT, &self.scratch);
        self.events += 1;
        if bundle.len() >= BUNDLE_BYTES {
            self.flush_bundle(ev.cpu)?;
        }
        Ok(())
    }

    fn flush_bundle(&mut self, cpu: u32) -> Result<(), ExportError> {
        let Some(bundle) = self.bundles.remove(&cpu) else {
            return Ok(());
        };
        let mut body = Msg::new();
        body.message(proto::packet::FTRACE_EVENTS, &bundle);
        self.packet(DATA_SEQUENCE, &body)
    }

    /// The `FtraceEvent` oneof field and the encoded typed message for `ev`. The message is
    /// built in the buffer the previous event used (handed back by [`Exporter::event`]), so the
    /// per-event path does not allocate once buffers have grown.
    fn encode_payload(&mut self, ev: &Event) -> (u32, Msg) {
        use proto::ftrace as fe;
        let mut m = std::mem::take(&mut self.payload);
        m.clear();
        let field = match ev.data {
            EventData::SyscallEntry(s) => {
                m.int(f::sys::ID, s.id as i64);
                for a in s.args {
                    m.uint(f::sys::ARGS, a);
                }
                fe::SYS_ENTER
            }
            EventData::SyscallExit(s) => {
                m.int(f::sys::ID, s.id as i64).int(f::sys::RET, s.ret);
                fe::SYS_EXIT
            }
            EventData::SchedSwitch(s) => {
                use f::sched_switch as ss;
                m.string(ss::PREV_COMM, &cstr_lossy(&s.prev_comm))
                    .int(ss::PREV_PID, i64::from(ev.tid as i32))
                    .int(ss::PREV_PRIO, i64::from(s.prev_prio))
                    .int(ss::PREV_STATE, ftrace_prev_state(s.prev_state))
                    .string(ss::NEXT_COMM, &cstr_lossy(&s.next_comm))
                    .int(ss::NEXT_PID, i64::from(s.next_tid as i32))
                    .int(ss::NEXT_PRIO, i64::from(s.next_prio));
                fe::SCHED_SWITCH
            }
            EventData::SchedWakeup(w) | EventData::SchedWakeupNew(w) => {
                use f::wakeup as wk;
                m.string(wk::COMM, &cstr_lossy(&w.comm))
                    .int(wk::PID, i64::from(w.tid as i32))
                    .int(wk::PRIO, i64::from(w.prio))
                    .int(wk::TARGET_CPU, i64::from(w.target_cpu as i32));
                if matches!(ev.data, EventData::SchedWakeup(_)) {
                    fe::SCHED_WAKING
                } else {
                    fe::SCHED_WAKEUP_NEW
                }
            }
            EventData::ProcessFork(p) => {
                m.string(f::fork::PARENT_COMM, &cstr_lossy(&p.parent_comm))
                    .int(f::fork::PARENT_PID, i64::from(p.parent_tid as i32))
                    .string(f::fork::CHILD_COMM, &cstr_lossy(&p.child_comm))
                    .int(f::fork::CHILD_PID, i64::from(p.child_tid as i32));
                fe::SCHED_PROCESS_FORK
            }
            EventData::ProcessExec(x) => {
                m.string(f::exec::FILENAME, &cstr_lossy(&x.filename))
                    .int(f::exec::PID, i64::from(x.tid as i32))
                    .int(f::exec::OLD_PID, i64::from(x.old_tid as i32));
                fe::SCHED_PROCESS_EXEC
            }
            EventData::ProcessExit(x) => {
                m.string(f::exit::COMM, &cstr_lossy(&x.comm))
                    .int(f::exit::PID, i64::from(x.tid as i32))
                    .int(f::exit::TGID, i64::from(x.pid as i32))
                    .int(f::exit::PRIO, i64::from(x.prio));
                fe::SCHED_PROCESS_EXIT
            }
            EventData::BlockRqIssue(b) => {
                use f::block as bk;
                m.uint(bk::DEV, u64::from(b.dev))
                    .uint(bk::SECTOR, b.sector)
                    .uint(bk::NR_SECTOR, u64::from(b.nr_sector))
                    .uint(bk::BYTES, u64::from(b.bytes))
                    .string(bk::RWBS, &rwbs_string(b.op, b.rwbs_flags))
                    .string(bk::COMM, &cstr_lossy(&b.comm));
                fe::BLOCK_RQ_ISSUE
            }
            EventData::BlockRqComplete(b) => {
                use f::block as bk;
                m.uint(bk::DEV, u64::from(b.dev))
                    .uint(bk::SECTOR, b.sector)
                    .uint(bk::NR_SECTOR, u64::from(b.nr_sector))
                    .int(bk::ERROR, i64::from(b.error))
                    .string(bk::RWBS, &rwbs_string(b.op, b.rwbs_flags));
                fe::BLOCK_RQ_COMPLETE
            }
            EventData::IrqHandlerEntry(i) => {
                m.int(f::irq::IRQ, i64::from(i.irq as i32))
                    .string(f::irq::NAME, &cstr_lossy(&i.name));
                fe::IRQ_HANDLER_ENTRY
            }
            EventData::IrqHandlerExit(i) => {
                m.int(f::irq::IRQ, i64::from(i.irq as i32))
                    .int(f::irq::RET, i64::from(i.ret));
                fe::IRQ_HANDLER_EXIT
            }
            EventData::SoftirqEntry(s) => {
                m.uint(f::softirq::VEC, u64::from(s.vec));
                fe::SOFTIRQ_ENTRY
            }
            EventData::SoftirqExit(s) => {
                m.uint(f::softirq::VEC, u64::from(s.vec));
                fe::SOFTIRQ_EXIT
            }
            EventData::SyscallPath(..) => unreachable!("Exporter::event skips path records"),
        };
        (field, m)
    }

    /// Remembers the thread group and latest comm of every thread the event names, for
    /// threads the statedump does not know (they exited before the snapshot).
    fn learn(&mut self, ev: &Event) {
        let mut see = |tid: u32, tgid: u32, comm: Option<&[u8]>| {
            if tid == 0 {
                // The per-CPU idle tasks all have tid 0; trace processor knows them.
                return;
            }
            let t = self.threads.entry(tid).or_default();
            t.tgid = tgid;
            if let Some(c) = comm {
                t.comm = Some(cstr_lossy(c));
            }
        };
        match &ev.data {
            EventData::SchedSwitch(s) => {
                see(ev.tid, ev.pid, Some(&s.prev_comm));
                see(s.next_tid, s.next_pid, Some(&s.next_comm));
            }
            EventData::SchedWakeup(w) | EventData::SchedWakeupNew(w) => {
                see(ev.tid, ev.pid, None);
                see(w.tid, w.pid, Some(&w.comm));
            }
            EventData::ProcessFork(p) => {
                see(p.parent_tid, p.parent_pid, Some(&p.parent_comm));
                see(p.child_tid, p.child_pid, Some(&p.child_comm));
                if p.child_tid == p.child_pid && p.child_pid != p.parent_pid {
                    self.parents.insert(p.child_pid, p.parent_pid);
                }
            }
            EventData::ProcessExit(x) => see(x.tid, x.pid, Some(&x.comm)),
            _ => see(ev.tid, ev.pid, None),
        }
    }

    /// Writes the pending bundles and the process tree of threads the statedump lacks.
    fn finish(mut self) -> Result<(ExportStats, W), ExportError> {
        let cpus: Vec<u32> = self.bundles.keys().copied().collect();
        for cpu in cpus {
            self.flush_bundle(cpu)?;
        }
        let tree = learned_tree(self.manifest, &self.threads, &self.parents);
        if !tree.is_empty() {
            let mut body = Msg::new();
            body.uint(
                proto::packet::TIMESTAMP,
                self.boottime(self.manifest.frozen_monotonic_ns),
            )
            .message(proto::packet::PROCESS_TREE, &tree);
            self.packet(DATA_SEQUENCE, &body)?;
        }
        self.out.flush().map_err(|e| write_error(self.output, e))?;
        let stats = ExportStats {
            events: self.events,
            bytes: self.bytes,
        };
        Ok((stats, self.out))
    }
}

/// The snapshot id as a 128-bit number, when it is one (32 hex digits).
fn parse_uuid(id: &str) -> Option<u128> {
    if id.len() != 32 {
        return None;
    }
    u128::from_str_radix(id, 16).ok()
}

/// `ProcessTree` of the statedump. The command line was stored with its arguments joined by
/// spaces, so it is split back on spaces; a process without one (a kernel thread) gets its
/// comm, flagged as such.
fn statedump_tree(m: &Manifest) -> Msg {
    use proto::process_tree as pt;
    let mut tree = Msg::new();
    for p in &m.statedump.processes {
        let mut proc = Msg::new();
        proc.int(pt::PROCESS_PID, i64::from(p.pid as i32))
            .int(pt::PROCESS_PPID, i64::from(p.ppid as i32));
        if p.cmdline.is_empty() {
            proc.string(pt::PROCESS_CMDLINE, &p.comm)
                .bool(pt::PROCESS_CMDLINE_IS_COMM, true);
        } else {
            for arg in p.cmdline.split(' ') {
                proc.string(pt::PROCESS_CMDLINE, arg);
            }
        }
        tree.message(pt::PROCESSES, &proc);
    }
    for p in &m.statedump.processes {
        for t in &p.threads {
            let mut th = Msg::new();
            th.int(pt::THREAD_TID, i64::from(t.tid as i32))
                .string(pt::THREAD_NAME, &t.comm)
                .int(pt::THREAD_TGID, i64::from(p.pid as i32));
            tree.message(pt::THREADS, &th);
        }
    }
    tree
}

/// `ProcessTree` of the threads seen in the events that the statedump lacks, in tid order.
/// Their processes are listed too when the fork that created them was recorded (so the parent
/// is known), named by the comm of their main thread.
fn learned_tree(
    m: &Manifest,
    threads: &HashMap<u32, SeenThread>,
    parents: &HashMap<u32, u32>,
) -> Msg {
    use proto::process_tree as pt;
    let known_tids: BTreeSet<u32> = m
        .statedump
        .processes
        .iter()
        .flat_map(|p| p.threads.iter().map(|t| t.tid).chain([p.pid]))
        .collect();
    let known_pids: BTreeSet<u32> = m.statedump.processes.iter().map(|p| p.pid).collect();
    let mut tree = Msg::new();
    let new_pids: BTreeMap<u32, u32> = parents
        .iter()
        .filter(|(pid, _)| !known_pids.contains(pid))
        .map(|(&pid, &ppid)| (pid, ppid))
        .collect();
    for (pid, ppid) in new_pids {
        let name = threads
            .get(&pid)
            .and_then(|t| t.comm.clone())
            .unwrap_or_default();
        let mut proc = Msg::new();
        proc.int(pt::PROCESS_PID, i64::from(pid as i32))
            .int(pt::PROCESS_PPID, i64::from(ppid as i32))
            .string(pt::PROCESS_CMDLINE, &name)
            .bool(pt::PROCESS_CMDLINE_IS_COMM, true);
        tree.message(pt::PROCESSES, &proc);
    }
    let new_tids: BTreeMap<u32, &SeenThread> = threads
        .iter()
        .filter(|(tid, _)| !known_tids.contains(tid))
        .map(|(&tid, t)| (tid, t))
        .collect();
    for (tid, t) in new_tids {
        let mut th = Msg::new();
        th.int(pt::THREAD_TID, i64::from(tid as i32));
        if let Some(name) = &t.comm {
            th.string(pt::THREAD_NAME, name);
        }
        th.int(pt::THREAD_TGID, i64::from(t.tgid as i32));
        tree.message(pt::THREADS, &th);
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prev_state_table() {
        // (task_struct.__state, what the sched_switch tracepoint reports), from the kernel's
        // TASK_* definitions and __trace_sched_switch_state().
        let cases = [
            (0x0, 0x0),    // preempted or yielded: R
            (0x1, 0x1),    // TASK_INTERRUPTIBLE: S
            (0x2, 0x2),    // TASK_UNINTERRUPTIBLE: D
            (0x102, 0x2),  // TASK_KILLABLE: D
            (0x402, 0x80), // TASK_IDLE: I
            (0x4, 0x4),    // __TASK_STOPPED: T
            (0x8, 0x8),    // __TASK_TRACED: t
            (0x10c, 0x8),  // TASK_TRACED with WAKEKILL and STOPPED: highest bit wins
            (0x40, 0x40),  // TASK_PARKED: P
            (0x80, 0x10),  // TASK_DEAD: X
            (0x1000, 0x2), // TASK_RTLOCK_WAIT: D
            (0x8000, 0x2), // TASK_FROZEN: D
            (0x2001, 0x1), // TASK_FREEZABLE | TASK_INTERRUPTIBLE: S
            (0x100, 0x0),  // TASK_WAKEKILL alone reports nothing
        ];
        for (state, want) in cases {
            assert_eq!(ftrace_prev_state(state), want, "state {state:#x}");
        }
    }

    #[test]
    fn uuid_from_snapshot_id() {
        assert_eq!(
            parse_uuid("0123456789abcdef0011223344556677"),
            Some(0x0123456789abcdef0011223344556677)
        );
        assert_eq!(parse_uuid("synthetic"), None);
        assert_eq!(parse_uuid("0123456789abcdef001122334455667z"), None);
    }
}
