//! The ftrace event formats of a trace.dat export, and the encoding of our events into records
//! of those formats.
//!
//! Each event is described once, as a list of fields; both the `format` text that trace-cmd
//! parses and the byte layout of the records come from that list, so the two cannot disagree.
//! Field names, types and order follow the kernel's own tracepoints (`include/trace/events/
//! {syscalls,sched,block,irq}.h`), so trace-cmd's plugins and KernelShark, which look fields up
//! by name, treat the events as they treat a kernel trace. Where a tracepoint's layout changed
//! across kernel versions, the simpler long-standing layout is used (fixed `char[16]` comms in
//! `sched_process_fork`, no `ioprio` in the block events, no `group_dead` in
//! `sched_process_exit`, whose value we do not record).

use schemas::event::{Event, EventData, rwbs_string};
use schemas::{EventKind, cstr_lossy};

/// How a field is stored.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ty {
    /// An integer of `size` bytes declared as `c_type`.
    Int {
        /// C type in the format text.
        c_type: &'static str,
        /// Bytes.
        size: usize,
        /// Whether trace-cmd reads it as signed.
        signed: bool,
    },
    /// An array of `len` unsigned integers of `elem` bytes each, declared as `c_type name[len]`.
    Array {
        /// C element type in the format text.
        c_type: &'static str,
        /// Bytes per element.
        elem: usize,
        /// Elements.
        len: usize,
    },
    /// A NUL-padded `char name[len]`.
    Chars(usize),
    /// A `__data_loc char[]` string: a u32 (`len << 16 | offset`) pointing into the record's
    /// dynamic area, where the NUL-terminated text follows the fixed fields.
    Str,
}

impl Ty {
    fn size(self) -> usize {
        match self {
            Ty::Int { size, .. } => size,
            Ty::Array { elem, len, .. } => elem * len,
            Ty::Chars(len) => len,
            Ty::Str => 4,
        }
    }

    /// Natural alignment, as the C compiler lays the kernel's entry structs out.
    fn align(self) -> usize {
        match self {
            Ty::Int { size, .. } => size,
            Ty::Array { elem, .. } => elem,
            Ty::Chars(_) => 1,
            Ty::Str => 4,
        }
    }
}

/// One field of an event.
#[derive(Clone, Copy, Debug)]
pub(super) struct Field {
    /// Field name.
    pub name: &'static str,
    /// Storage.
    pub ty: Ty,
}

/// One ftrace event: its system, name, id and fields.
#[derive(Debug)]
pub(super) struct EventFormat {
    /// Event system (directory under `events/`).
    pub system: &'static str,
    /// Event name.
    pub name: &'static str,
    /// The `common_type` value of its records.
    pub id: u16,
    /// Fields after the common ones, in order.
    pub fields: &'static [Field],
    /// The `print fmt` line's argument, evaluated by trace-cmd.
    pub print_fmt: &'static str,
}

/// Size of the common fields every record starts with.
const COMMON_LEN: usize = 8;

const fn int(name: &'static str, c_type: &'static str, size: usize, signed: bool) -> Field {
    Field {
        name,
        ty: Ty::Int {
            c_type,
            size,
            signed,
        },
    }
}

const fn chars(name: &'static str, len: usize) -> Field {
    Field {
        name,
        ty: Ty::Chars(len),
    }
}

const fn string(name: &'static str) -> Field {
    Field { name, ty: Ty::Str }
}

const SYS_ENTER: &[Field] = &[
    int("id", "long", 8, true),
    Field {
        name: "args",
        ty: Ty::Array {
            c_type: "unsigned long",
            elem: 8,
            len: 6,
        },
    },
];
const SYS_EXIT: &[Field] = &[int("id", "long", 8, true), int("ret", "long", 8, true)];
const SCHED_SWITCH: &[Field] = &[
    chars("prev_comm", 16),
    int("prev_pid", "pid_t", 4, true),
    int("prev_prio", "int", 4, true),
    int("prev_state", "long", 8, true),
    chars("next_comm", 16),
    int("next_pid", "pid_t", 4, true),
    int("next_prio", "int", 4, true),
];
const SCHED_WAKEUP: &[Field] = &[
    chars("comm", 16),
    int("pid", "pid_t", 4, true),
    int("prio", "int", 4, true),
    int("target_cpu", "int", 4, true),
];
const PROCESS_FORK: &[Field] = &[
    chars("parent_comm", 16),
    int("parent_pid", "pid_t", 4, true),
    chars("child_comm", 16),
    int("child_pid", "pid_t", 4, true),
];
const PROCESS_EXEC: &[Field] = &[
    string("filename"),
    int("pid", "pid_t", 4, true),
    int("old_pid", "pid_t", 4, true),
];
const PROCESS_EXIT: &[Field] = &[
    chars("comm", 16),
    int("pid", "pid_t", 4, true),
    int("prio", "int", 4, true),
];
/// `RWBS_LEN` of the kernels whose block layout we follow: the longest text `rwbs_string` can
/// build ("FDEFASM", 7 characters) fits with its NUL.
const RWBS_LEN: usize = 8;
const BLOCK_RQ_ISSUE: &[Field] = &[
    int("dev", "dev_t", 4, false),
    int("sector", "sector_t", 8, false),
    int("nr_sector", "unsigned int", 4, false),
    int("bytes", "unsigned int", 4, false),
    chars("rwbs", RWBS_LEN),
    chars("comm", 16),
    string("cmd"),
];
const BLOCK_RQ_COMPLETE: &[Field] = &[
    int("dev", "dev_t", 4, false),
    int("sector", "sector_t", 8, false),
    int("nr_sector", "unsigned int", 4, false),
    int("error", "int", 4, true),
    chars("rwbs", RWBS_LEN),
    string("cmd"),
];
const IRQ_HANDLER_ENTRY: &[Field] = &[int("irq", "int", 4, true), string("name")];
const IRQ_HANDLER_EXIT: &[Field] = &[int("irq", "int", 4, true), int("ret", "int", 4, true)];
const SOFTIRQ: &[Field] = &[int("vec", "unsigned int", 4, false)];

const SOFTIRQ_FMT: &str = r#""vec=%u [action=%s]", REC->vec, __print_symbolic(REC->vec, { 0, "HI" }, { 1, "TIMER" }, { 2, "NET_TX" }, { 3, "NET_RX" }, { 4, "BLOCK" }, { 5, "IRQ_POLL" }, { 6, "TASKLET" }, { 7, "SCHED" }, { 8, "HRTIMER" }, { 9, "RCU" })"#;
const WAKEUP_FMT: &str =
    r#""comm=%s pid=%d prio=%d target_cpu=%03d", REC->comm, REC->pid, REC->prio, REC->target_cpu"#;

/// Every event, indexed by `EventKind as usize - 1`; ids are the `EventKind` values, which are
/// never reused.
pub(super) const EVENTS: [EventFormat; 14] = [
    EventFormat {
        system: "raw_syscalls",
        name: "sys_enter",
        id: EventKind::SyscallEntry as u16,
        fields: SYS_ENTER,
        print_fmt: r#""NR %ld (%lx, %lx, %lx, %lx, %lx, %lx)", REC->id, REC->args[0], REC->args[1], REC->args[2], REC->args[3], REC->args[4], REC->args[5]"#,
    },
    EventFormat {
        system: "raw_syscalls",
        name: "sys_exit",
        id: EventKind::SyscallExit as u16,
        fields: SYS_EXIT,
        print_fmt: r#""NR %ld = %ld", REC->id, REC->ret"#,
    },
    EventFormat {
        system: "sched",
        name: "sched_switch",
        id: EventKind::SchedSwitch as u16,
        fields: SCHED_SWITCH,
        // State letters of the kernel's TASK_REPORT bits; 0x100 (TASK_REPORT_MAX) marks a
        // preempted task.
        print_fmt: r#""prev_comm=%s prev_pid=%d prev_prio=%d prev_state=%s%s ==> next_comm=%s next_pid=%d next_prio=%d", REC->prev_comm, REC->prev_pid, REC->prev_prio, (REC->prev_state & 0xff) ? __print_flags(REC->prev_state & 0xff, "|", { 0x01, "S" }, { 0x02, "D" }, { 0x04, "T" }, { 0x08, "t" }, { 0x10, "X" }, { 0x20, "Z" }, { 0x40, "P" }, { 0x80, "I" }) : "R", REC->prev_state & 0x100 ? "+" : "", REC->next_comm, REC->next_pid, REC->next_prio"#,
    },
    EventFormat {
        system: "sched",
        name: "sched_wakeup",
        id: EventKind::SchedWakeup as u16,
        fields: SCHED_WAKEUP,
        print_fmt: WAKEUP_FMT,
    },
    EventFormat {
        system: "sched",
        name: "sched_wakeup_new",
        id: EventKind::SchedWakeupNew as u16,
        fields: SCHED_WAKEUP,
        print_fmt: WAKEUP_FMT,
    },
    EventFormat {
        system: "sched",
        name: "sched_process_fork",
        id: EventKind::ProcessFork as u16,
        fields: PROCESS_FORK,
        print_fmt: r#""comm=%s pid=%d child_comm=%s child_pid=%d", REC->parent_comm, REC->parent_pid, REC->child_comm, REC->child_pid"#,
    },
    EventFormat {
        system: "sched",
        name: "sched_process_exec",
        id: EventKind::ProcessExec as u16,
        fields: PROCESS_EXEC,
        print_fmt: r#""filename=%s pid=%d old_pid=%d", __get_str(filename), REC->pid, REC->old_pid"#,
    },
    EventFormat {
        system: "sched",
        name: "sched_process_exit",
        id: EventKind::ProcessExit as u16,
        fields: PROCESS_EXIT,
        print_fmt: r#""comm=%s pid=%d prio=%d", REC->comm, REC->pid, REC->prio"#,
    },
    EventFormat {
        system: "block",
        name: "block_rq_issue",
        id: EventKind::BlockRqIssue as u16,
        fields: BLOCK_RQ_ISSUE,
        print_fmt: r#""%d,%d %s %u (%s) %llu + %u [%s]", ((unsigned int) ((REC->dev) >> 20)), ((unsigned int) ((REC->dev) & ((1U << 20) - 1))), REC->rwbs, REC->bytes, __get_str(cmd), (unsigned long long)REC->sector, REC->nr_sector, REC->comm"#,
    },
    EventFormat {
        system: "block",
        name: "block_rq_complete",
        id: EventKind::BlockRqComplete as u16,
        fields: BLOCK_RQ_COMPLETE,
        print_fmt: r#""%d,%d %s (%s) %llu + %u [%d]", ((unsigned int) ((REC->dev) >> 20)), ((unsigned int) ((REC->dev) & ((1U << 20) - 1))), REC->rwbs, __get_str(cmd), (unsigned long long)REC->sector, REC->nr_sector, REC->error"#,
    },
    EventFormat {
        system: "irq",
        name: "irq_handler_entry",
        id: EventKind::IrqHandlerEntry as u16,
        fields: IRQ_HANDLER_ENTRY,
        print_fmt: r#""irq=%d name=%s", REC->irq, __get_str(name)"#,
    },
    EventFormat {
        system: "irq",
        name: "irq_handler_exit",
        id: EventKind::IrqHandlerExit as u16,
        fields: IRQ_HANDLER_EXIT,
        print_fmt: r#""irq=%d ret=%s", REC->irq, REC->ret ? "handled" : "unhandled""#,
    },
    EventFormat {
        system: "irq",
        name: "softirq_entry",
        id: EventKind::SoftirqEntry as u16,
        fields: SOFTIRQ,
        print_fmt: SOFTIRQ_FMT,
    },
    EventFormat {
        system: "irq",
        name: "softirq_exit",
        id: EventKind::SoftirqExit as u16,
        fields: SOFTIRQ,
        print_fmt: SOFTIRQ_FMT,
    },
];

/// The format of events of `kind`.
pub(super) fn format_of(kind: EventKind) -> &'static EventFormat {
    &EVENTS[kind as usize - 1]
}

/// Offsets of `fields` after the common fields, and the size of the fixed part of a record.
fn layout(fields: &[Field]) -> (Vec<usize>, usize) {
    let mut offsets = Vec::with_capacity(fields.len());
    let mut at = COMMON_LEN;
    for f in fields {
        at = at.next_multiple_of(f.ty.align());
        offsets.push(at);
        at += f.ty.size();
    }
    (offsets, at)
}

impl EventFormat {
    /// The `format` file trace-cmd parses: name, id, fields with offset, size and sign, and
    /// the print format.
    pub(super) fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let line = |s: &mut String, decl: &str, offset: usize, size: usize, signed: bool| {
            let _ = writeln!(
                s,
                "\tfield:{decl};\toffset:{offset};\tsize:{size};\tsigned:{};",
                u8::from(signed)
            );
        };
        let _ = writeln!(s, "name: {}\nID: {}\nformat:", self.name, self.id);
        line(&mut s, "unsigned short common_type", 0, 2, false);
        line(&mut s, "unsigned char common_flags", 2, 1, false);
        line(&mut s, "unsigned char common_preempt_count", 3, 1, false);
        line(&mut s, "int common_pid", 4, 4, true);
        s.push('\n');
        let (offsets, _) = layout(self.fields);
        for (f, off) in self.fields.iter().zip(offsets) {
            let (decl, signed) = match f.ty {
                Ty::Int { c_type, signed, .. } => (format!("{c_type} {}", f.name), signed),
                Ty::Array { c_type, len, .. } => (format!("{c_type} {}[{len}]", f.name), false),
                Ty::Chars(len) => (format!("char {}[{len}]", f.name), false),
                Ty::Str => (format!("__data_loc char[] {}", f.name), false),
            };
            line(&mut s, &decl, off, f.ty.size(), signed);
        }
        let _ = writeln!(s, "\nprint fmt: {}", self.print_fmt);
        s
    }
}

/// A field value, in the order of the event's fields.
#[derive(Clone, Copy, Debug)]
enum Val<'a> {
    /// An integer (signed values as two's complement), truncated to the field's size.
    Int(u64),
    /// The elements of an array field.
    Ints(&'a [u64]),
    /// NUL-padded or NUL-terminated text for a `Chars` or `Str` field; a NUL in it ends it.
    Text(&'a [u8]),
}

/// Encodes events into ftrace records, reusing the layouts computed once.
pub(super) struct Encoder {
    layouts: Vec<(Vec<usize>, usize)>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            layouts: EVENTS.iter().map(|e| layout(e.fields)).collect(),
        }
    }
}

fn until_nul(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

impl Encoder {
    /// Replaces `out` with the record of `ev`: common fields, fixed fields, then the text of its
    /// `__data_loc` fields.
    pub(super) fn encode(&self, ev: &Event, out: &mut Vec<u8>) {
        let rwbs;
        let tid = u64::from(ev.tid);
        // ftrace's "pid" fields are thread ids (task->pid), which is what we record as tid.
        let vals: &[Val] = match &ev.data {
            EventData::SyscallEntry(e) => &[Val::Int(e.id), Val::Ints(&e.args)],
            EventData::SyscallExit(e) => &[Val::Int(e.id), Val::Int(e.ret as u64)],
            EventData::SchedSwitch(e) => &[
                Val::Text(&e.prev_comm),
                Val::Int(tid),
                Val::Int(e.prev_prio as u64),
                Val::Int(e.prev_state),
                Val::Text(&e.next_comm),
                Val::Int(e.next_tid.into()),
                Val::Int(e.next_prio as u64),
            ],
            EventData::SchedWakeup(e) | EventData::SchedWakeupNew(e) => &[
                Val::Text(&e.comm),
                Val::Int(e.tid.into()),
                Val::Int(e.prio as u64),
                Val::Int(e.target_cpu.into()),
            ],
            EventData::ProcessFork(e) => &[
                Val::Text(&e.parent_comm),
                Val::Int(e.parent_tid.into()),
                Val::Text(&e.child_comm),
                Val::Int(e.child_tid.into()),
            ],
            EventData::ProcessExec(e) => &[
                Val::Text(&e.filename),
                Val::Int(e.tid.into()),
                Val::Int(e.old_tid.into()),
            ],
            EventData::ProcessExit(e) => &[
                Val::Text(&e.comm),
                Val::Int(e.tid.into()),
                Val::Int(e.prio as u64),
            ],
            EventData::BlockRqIssue(e) => {
                rwbs = rwbs_string(e.op, e.rwbs_flags);
                &[
                    Val::Int(e.dev.into()),
                    Val::Int(e.sector),
                    Val::Int(e.nr_sector.into()),
                    Val::Int(e.bytes.into()),
                    Val::Text(rwbs.as_bytes()),
                    Val::Text(&e.comm),
                    Val::Text(b""),
                ]
            }
            EventData::BlockRqComplete(e) => {
                rwbs = rwbs_string(e.op, e.rwbs_flags);
                &[
                    Val::Int(e.dev.into()),
                    Val::Int(e.sector),
                    Val::Int(e.nr_sector.into()),
                    Val::Int(e.error as u64),
                    Val::Text(rwbs.as_bytes()),
                    Val::Text(b""),
                ]
            }
            EventData::IrqHandlerEntry(e) => &[Val::Int(e.irq.into()), Val::Text(&e.name)],
            EventData::IrqHandlerExit(e) => &[Val::Int(e.irq.into()), Val::Int(e.ret as u64)],
            EventData::SoftirqEntry(e) | EventData::SoftirqExit(e) => &[Val::Int(e.vec.into())],
            EventData::SyscallPath(..) => unreachable!("for_each_event skips path records"),
        };
        let kind = ev.kind();
        let fmt = format_of(kind);
        let (offsets, fixed) = &self.layouts[kind as usize - 1];
        debug_assert_eq!(vals.len(), fmt.fields.len(), "{}", fmt.name);
        out.clear();
        out.resize(*fixed, 0);
        out[0..2].copy_from_slice(&fmt.id.to_le_bytes());
        // common_flags and common_preempt_count stay 0: the context is not recorded.
        out[4..8].copy_from_slice(&ev.tid.to_le_bytes());
        for ((f, &off), val) in fmt.fields.iter().zip(offsets).zip(vals) {
            match (f.ty, *val) {
                (Ty::Int { size, .. }, Val::Int(v)) => {
                    out[off..off + size].copy_from_slice(&v.to_le_bytes()[..size]);
                }
                (Ty::Array { elem, len, .. }, Val::Ints(vs)) => {
                    for (i, v) in vs.iter().take(len).enumerate() {
                        let at = off + i * elem;
                        out[at..at + elem].copy_from_slice(&v.to_le_bytes()[..elem]);
                    }
                }
                (Ty::Chars(len), Val::Text(t)) => {
                    // Keep one NUL so a full-length name still ends inside the field.
                    let t = until_nul(t);
                    let n = t.len().min(len - 1);
                    out[off..off + n].copy_from_slice(&t[..n]);
                }
                (Ty::Str, Val::Text(t)) => {
                    let t = until_nul(t);
                    let at = out.len();
                    out.extend_from_slice(t);
                    out.push(0);
                    let loc = ((t.len() as u32 + 1) << 16) | at as u32;
                    out[off..off + 4].copy_from_slice(&loc.to_le_bytes());
                }
                (ty, v) => unreachable!("{}.{}: {ty:?} given {v:?}", fmt.name, f.name),
            }
        }
    }
}

/// The comms an event names, as (tid, comm): they fill the cmdlines table for threads the
/// statedump does not know. An exec names the comm the kernel gives the task: the file name's
/// last component, cut to `TASK_COMM_LEN - 1` bytes.
pub(super) fn comms_of(ev: &Event) -> Vec<(u32, String)> {
    let exec_comm;
    let pairs: [Option<(u32, &[u8])>; 2] = match &ev.data {
        EventData::SchedSwitch(e) => [
            Some((ev.tid, &e.prev_comm)),
            Some((e.next_tid, &e.next_comm)),
        ],
        EventData::SchedWakeup(e) | EventData::SchedWakeupNew(e) => [Some((e.tid, &e.comm)), None],
        EventData::ProcessFork(e) => [
            Some((e.parent_tid, &e.parent_comm)),
            Some((e.child_tid, &e.child_comm)),
        ],
        EventData::ProcessExec(e) => {
            let path = until_nul(&e.filename);
            let base = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
            exec_comm = &base[..base.len().min(schemas::COMM_LEN - 1)];
            [Some((e.tid, exec_comm)), None]
        }
        EventData::ProcessExit(e) => [Some((e.tid, &e.comm)), None],
        EventData::BlockRqIssue(e) => [Some((ev.tid, &e.comm)), None],
        _ => [None, None],
    };
    pairs
        .into_iter()
        .flatten()
        .map(|(tid, c)| (tid, cstr_lossy(c)))
        .filter(|(_, c)| !c.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel_offsets() {
        // (event, field, offset) as in the kernel's format files.
        let cases = [
            ("sys_enter", "args", 16),
            ("sys_exit", "ret", 16),
            ("sched_switch", "prev_pid", 24),
            ("sched_switch", "prev_state", 32),
            ("sched_switch", "next_comm", 40),
            ("sched_switch", "next_prio", 60),
            ("sched_wakeup", "target_cpu", 32),
            ("sched_process_exec", "old_pid", 16),
            ("block_rq_issue", "sector", 16),
            ("block_rq_issue", "comm", 40),
            ("block_rq_issue", "cmd", 56),
            ("irq_handler_entry", "name", 12),
        ];
        for (event, field, want) in cases {
            let e = EVENTS.iter().find(|e| e.name == event).unwrap();
            let (offsets, _) = layout(e.fields);
            let i = e.fields.iter().position(|f| f.name == field).unwrap();
            assert_eq!(offsets[i], want, "{event}.{field}");
        }
        for (i, e) in EVENTS.iter().enumerate() {
            assert_eq!(usize::from(e.id), i + 1, "{} id", e.name);
        }
    }

    #[test]
    fn data_loc_points_at_the_text() {
        let mut f = schemas::IrqHandlerEntry::default();
        f.name[..4].copy_from_slice(b"eth0");
        let ev = Event {
            ts_ns: 1,
            cpu: 0,
            pid: 7,
            tid: 8,
            data: EventData::IrqHandlerEntry(f),
        };
        let mut out = Vec::new();
        Encoder::default().encode(&ev, &mut out);
        assert_eq!(
            &out[0..2],
            &(EventKind::IrqHandlerEntry as u16).to_le_bytes()
        );
        assert_eq!(&out[4..8], &8u32.to_le_bytes());
        let loc = u32::from_le_bytes(out[12..16].try_into().unwrap());
        let (len, off) = ((loc >> 16) as usize, (loc & 0xffff) as usize);
        assert_eq!((off, len), (16, 5));
        assert_eq!(&out[off..off + len], b"eth0\0");
    }

    #[test]
    fn exec_names_the_base_name_as_comm() {
        let mut f = schemas::ProcessExec {
            tid: 9,
            old_tid: 9,
            ..Default::default()
        };
        let path = b"/usr/lib/x/a-very-long-program-name";
        f.filename[..path.len()].copy_from_slice(path);
        let ev = Event {
            ts_ns: 1,
            cpu: 0,
            pid: 9,
            tid: 9,
            data: EventData::ProcessExec(f),
        };
        assert_eq!(comms_of(&ev), vec![(9, "a-very-long-pro".to_owned())]);
    }
}
