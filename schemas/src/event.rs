//! Records decoded into named events with LTTng's kernel event and field names, shared by
//! `flightrec dump`, the analyses and the exporters.

use serde_json::{Map, Value, json};

use crate::{
    BlockRq, EventKind, IrqHandlerEntry, IrqHandlerExit, ProcessExec, ProcessExit, ProcessFork,
    Record, SchedSwitch, SchedWakeup, Softirq, SyscallEntry, SyscallExit, SyscallPath, cstr_lossy,
    record_flags, rwbs,
};

/// A record that could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The record's kind is not one this build knows.
    #[error("unknown event kind {kind} in record at ts {ts_ns} on cpu {cpu}")]
    UnknownKind {
        /// The kind value found.
        kind: u16,
        /// The record's timestamp.
        ts_ns: u64,
        /// The record's CPU.
        cpu: u32,
    },
}

/// A decoded event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `CLOCK_MONOTONIC` ns.
    pub ts_ns: u64,
    /// CPU.
    pub cpu: u32,
    /// Thread group id of the current task.
    pub pid: u32,
    /// Thread id of the current task.
    pub tid: u32,
    /// Type-specific fields.
    pub data: EventData,
}

/// Type-specific fields of an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventData {
    /// `syscall_entry_*`.
    SyscallEntry(SyscallEntry),
    /// `syscall_exit_*`.
    SyscallExit(SyscallExit),
    /// `sched_switch`.
    SchedSwitch(SchedSwitch),
    /// `sched_wakeup`.
    SchedWakeup(SchedWakeup),
    /// `sched_wakeup_new`.
    SchedWakeupNew(SchedWakeup),
    /// `sched_process_fork`.
    ProcessFork(ProcessFork),
    /// `sched_process_exec`.
    ProcessExec(ProcessExec),
    /// `sched_process_exit`.
    ProcessExit(ProcessExit),
    /// `block_rq_issue`.
    BlockRqIssue(BlockRq),
    /// `block_rq_complete`.
    BlockRqComplete(BlockRq),
    /// `irq_handler_entry`.
    IrqHandlerEntry(IrqHandlerEntry),
    /// `irq_handler_exit`.
    IrqHandlerExit(IrqHandlerExit),
    /// `softirq_entry`.
    SoftirqEntry(Softirq),
    /// `softirq_exit`.
    SoftirqExit(Softirq),
    /// The path argument of the open-family syscall entry that follows on the same thread, and
    /// whether it was cut.
    SyscallPath(SyscallPath, bool),
}

/// x86-64 name of syscall `id`, if it has one.
pub fn syscall_name(id: u64) -> Option<&'static str> {
    usize::try_from(id)
        .ok()
        .and_then(syscalls::x86_64::Sysno::new)
        .map(|s| s.name())
}

/// x86-64 number of the syscall called `name`.
pub fn syscall_id(name: &str) -> Option<u64> {
    name.parse::<syscalls::x86_64::Sysno>()
        .ok()
        .map(|s| s.id() as u64)
}

/// The kernel's `rwbs` string for a block request (`blk_fill_rwbs`).
pub fn rwbs_string(op: u32, flags: u32) -> String {
    let mut s = String::with_capacity(8);
    if flags & rwbs::PREFLUSH != 0 {
        s.push('F');
    }
    // REQ_OP_* values: READ 0, WRITE 1, FLUSH 2, DISCARD 3, SECURE_ERASE 5, ZONE_APPEND 7.
    match op {
        1 | 7 => s.push('W'),
        3 => s.push('D'),
        5 => s.push_str("DE"),
        2 => s.push('F'),
        0 => s.push('R'),
        _ => s.push('N'),
    }
    if flags & rwbs::FUA != 0 {
        s.push('F');
    }
    if flags & rwbs::RAHEAD != 0 {
        s.push('A');
    }
    if flags & rwbs::SYNC != 0 {
        s.push('S');
    }
    if flags & rwbs::META != 0 {
        s.push('M');
    }
    s
}

/// Splits a kernel `dev_t` (`major << 20 | minor`) into major and minor.
pub fn dev_major_minor(dev: u32) -> (u32, u32) {
    (dev >> 20, dev & 0xF_FFFF)
}

/// Formats a kernel `dev_t` as `major:minor`, the way the analyses and rule hits name disks.
pub fn dev_name(dev: u32) -> String {
    let (ma, mi) = dev_major_minor(dev);
    format!("{ma}:{mi}")
}

impl Event {
    /// Decodes one record.
    pub fn decode(r: &Record) -> Result<Event, DecodeError> {
        let kind = EventKind::from_u16(r.kind).ok_or(DecodeError::UnknownKind {
            kind: r.kind,
            ts_ns: r.ts_ns,
            cpu: r.cpu,
        })?;
        let data = match kind {
            EventKind::SyscallEntry => EventData::SyscallEntry(r.payload()),
            EventKind::SyscallExit => EventData::SyscallExit(r.payload()),
            EventKind::SchedSwitch => EventData::SchedSwitch(r.payload()),
            EventKind::SchedWakeup => EventData::SchedWakeup(r.payload()),
            EventKind::SchedWakeupNew => EventData::SchedWakeupNew(r.payload()),
            EventKind::ProcessFork => EventData::ProcessFork(r.payload()),
            EventKind::ProcessExec => EventData::ProcessExec(r.payload()),
            EventKind::ProcessExit => EventData::ProcessExit(r.payload()),
            EventKind::BlockRqIssue => EventData::BlockRqIssue(r.payload()),
            EventKind::BlockRqComplete => EventData::BlockRqComplete(r.payload()),
            EventKind::IrqHandlerEntry => EventData::IrqHandlerEntry(r.payload()),
            EventKind::IrqHandlerExit => EventData::IrqHandlerExit(r.payload()),
            EventKind::SoftirqEntry => EventData::SoftirqEntry(r.payload()),
            EventKind::SoftirqExit => EventData::SoftirqExit(r.payload()),
            EventKind::SyscallPath => {
                EventData::SyscallPath(r.payload(), r.flags & record_flags::PATH_CUT != 0)
            }
        };
        Ok(Event {
            ts_ns: r.ts_ns,
            cpu: r.cpu,
            pid: r.pid,
            tid: r.tid,
            data,
        })
    }

    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self.data {
            EventData::SyscallEntry(_) => EventKind::SyscallEntry,
            EventData::SyscallExit(_) => EventKind::SyscallExit,
            EventData::SchedSwitch(_) => EventKind::SchedSwitch,
            EventData::SchedWakeup(_) => EventKind::SchedWakeup,
            EventData::SchedWakeupNew(_) => EventKind::SchedWakeupNew,
            EventData::ProcessFork(_) => EventKind::ProcessFork,
            EventData::ProcessExec(_) => EventKind::ProcessExec,
            EventData::ProcessExit(_) => EventKind::ProcessExit,
            EventData::BlockRqIssue(_) => EventKind::BlockRqIssue,
            EventData::BlockRqComplete(_) => EventKind::BlockRqComplete,
            EventData::IrqHandlerEntry(_) => EventKind::IrqHandlerEntry,
            EventData::IrqHandlerExit(_) => EventKind::IrqHandlerExit,
            EventData::SoftirqEntry(_) => EventKind::SoftirqEntry,
            EventData::SoftirqExit(_) => EventKind::SoftirqExit,
            EventData::SyscallPath(..) => EventKind::SyscallPath,
        }
    }

    /// LTTng kernel event name (`syscall_entry_getppid`, `sched_switch`, ...).
    pub fn name(&self) -> String {
        let fixed = match self.data {
            EventData::SyscallEntry(e) => {
                return format!("syscall_entry_{}", syscall_name(e.id).unwrap_or("unknown"));
            }
            EventData::SyscallExit(e) => {
                return format!("syscall_exit_{}", syscall_name(e.id).unwrap_or("unknown"));
            }
            EventData::SchedSwitch(_) => "sched_switch",
            EventData::SchedWakeup(_) => "sched_wakeup",
            EventData::SchedWakeupNew(_) => "sched_wakeup_new",
            EventData::ProcessFork(_) => "sched_process_fork",
            EventData::ProcessExec(_) => "sched_process_exec",
            EventData::ProcessExit(_) => "sched_process_exit",
            EventData::BlockRqIssue(_) => "block_rq_issue",
            EventData::BlockRqComplete(_) => "block_rq_complete",
            EventData::IrqHandlerEntry(_) => "irq_handler_entry",
            EventData::IrqHandlerExit(_) => "irq_handler_exit",
            EventData::SoftirqEntry(_) => "softirq_entry",
            EventData::SoftirqExit(_) => "softirq_exit",
            EventData::SyscallPath(..) => "syscall_path",
        };
        fixed.to_owned()
    }

    /// The event's fields, with LTTng's field names, in LTTng's order.
    pub fn fields(&self) -> Map<String, Value> {
        let v = match self.data {
            EventData::SyscallEntry(e) => json!({ "id": e.id, "args": e.args }),
            EventData::SyscallExit(e) => json!({ "id": e.id, "ret": e.ret }),
            EventData::SchedSwitch(e) => json!({
                "prev_comm": cstr_lossy(&e.prev_comm),
                "prev_tid": self.tid,
                "prev_prio": e.prev_prio,
                "prev_state": e.prev_state,
                "next_comm": cstr_lossy(&e.next_comm),
                "next_tid": e.next_tid,
                "next_prio": e.next_prio,
                "next_pid": e.next_pid,
            }),
            EventData::SchedWakeup(e) | EventData::SchedWakeupNew(e) => json!({
                "comm": cstr_lossy(&e.comm),
                "tid": e.tid,
                "prio": e.prio,
                "target_cpu": e.target_cpu,
                "pid": e.pid,
            }),
            EventData::ProcessFork(e) => json!({
                "parent_comm": cstr_lossy(&e.parent_comm),
                "parent_tid": e.parent_tid,
                "parent_pid": e.parent_pid,
                "child_comm": cstr_lossy(&e.child_comm),
                "child_tid": e.child_tid,
                "child_pid": e.child_pid,
            }),
            EventData::ProcessExec(e) => json!({
                "filename": cstr_lossy(&e.filename),
                "tid": e.tid,
                "old_tid": e.old_tid,
            }),
            EventData::ProcessExit(e) => json!({
                "comm": cstr_lossy(&e.comm),
                "tid": e.tid,
                "prio": e.prio,
                "pid": e.pid,
            }),
            EventData::BlockRqIssue(e) => json!({
                "dev": e.dev,
                "sector": e.sector,
                "nr_sector": e.nr_sector,
                "bytes": e.bytes,
                "rwbs": rwbs_string(e.op, e.rwbs_flags),
                "comm": cstr_lossy(&e.comm),
            }),
            EventData::BlockRqComplete(e) => json!({
                "dev": e.dev,
                "sector": e.sector,
                "nr_sector": e.nr_sector,
                "error": e.error,
                "rwbs": rwbs_string(e.op, e.rwbs_flags),
            }),
            EventData::IrqHandlerEntry(e) => json!({ "irq": e.irq, "name": cstr_lossy(&e.name) }),
            EventData::IrqHandlerExit(e) => json!({ "irq": e.irq, "ret": e.ret }),
            EventData::SoftirqEntry(e) | EventData::SoftirqExit(e) => json!({ "vec": e.vec }),
            EventData::SyscallPath(e, cut) => json!({
                "id": e.id,
                "path": cstr_lossy(&e.path),
                "cut": cut,
            }),
        };
        match v {
            Value::Object(m) => m,
            _ => unreachable!("fields are built as objects"),
        }
    }

    /// One JSON object: `ts_ns`, `cpu`, `name`, `tid`, `pid` and `fields`.
    pub fn to_json(&self) -> Value {
        json!({
            "ts_ns": self.ts_ns,
            "cpu": self.cpu,
            "name": self.name(),
            "tid": self.tid,
            "pid": self.pid,
            "fields": self.fields(),
        })
    }

    /// One line of text in babeltrace's spirit:
    /// `[ts] cpu N name: { tid = .., pid = .. }, { field = value, .. }`.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "[{}.{:09}] cpu {} {}: {{ tid = {}, pid = {} }}, {{ ",
            self.ts_ns / 1_000_000_000,
            self.ts_ns % 1_000_000_000,
            self.cpu,
            self.name(),
            self.tid,
            self.pid
        );
        let fields = self.fields();
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            s.push_str(k);
            s.push_str(" = ");
            s.push_str(&v.to_string());
        }
        s.push_str(" }");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rwbs_table() {
        let cases = [
            (0, 0, "R"),
            (1, rwbs::SYNC, "WS"),
            (1, rwbs::SYNC | rwbs::META, "WSM"),
            (1, rwbs::PREFLUSH | rwbs::FUA | rwbs::SYNC, "FWFS"),
            (2, rwbs::PREFLUSH, "FF"),
            (3, 0, "D"),
            (5, 0, "DE"),
            (0, rwbs::RAHEAD, "RA"),
            (9, 0, "N"),
        ];
        for (op, flags, want) in cases {
            assert_eq!(rwbs_string(op, flags), want, "op {op} flags {flags:#x}");
        }
    }

    #[test]
    fn syscall_names() {
        assert_eq!(syscall_name(110), Some("getppid"));
        assert_eq!(syscall_name(35), Some("nanosleep"));
        assert_eq!(syscall_name(74), Some("fsync"));
        assert_eq!(syscall_name(100_000), None);
        assert_eq!(syscall_id("fdatasync"), Some(75));
    }

    #[test]
    fn decode_names_and_fields() {
        let mut r = Record {
            ts_ns: 1_500_000_001,
            pid: 10,
            tid: 11,
            cpu: 1,
            kind: EventKind::SyscallExit as u16,
            ..Record::ZERO
        };
        r.set_payload(SyscallExit { id: 110, ret: 42 });
        let e = Event::decode(&r).unwrap();
        assert_eq!(e.name(), "syscall_exit_getppid");
        assert_eq!(e.fields()["ret"], 42);
        assert_eq!(
            e.to_text(),
            "[1.500000001] cpu 1 syscall_exit_getppid: { tid = 11, pid = 10 }, { id = 110, ret = 42 }"
        );
        r.kind = 99;
        assert!(matches!(
            Event::decode(&r),
            Err(DecodeError::UnknownKind { kind: 99, .. })
        ));
    }
}
