//! Events as CTF sees them: a class name and an ordered list of typed payload fields.
//!
//! The type of every field is carried by its [`Value`], so the TSDL declaration of a class
//! (written once, from the first event of that class) and the bytes of every event of the class
//! come from the same code and cannot disagree.

use schemas::event::{Event, EventData, syscall_name};
use schemas::manifest::Manifest;
use schemas::{COMM_LEN, rwbs};

/// One payload field value, with the CTF type it is declared and encoded as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `unsigned int`.
    U32(u32),
    /// `int`.
    I32(i32),
    /// `unsigned long` / `u64`.
    U64(u64),
    /// `long` / `s64`.
    I64(i64),
    /// A pointer or address, shown in hex.
    Hex64(u64),
    /// A NUL-padded task comm, declared like LTTng's `char[16]` text arrays.
    Comm([u8; COMM_LEN]),
    /// A NUL-terminated string.
    Str(String),
    /// The six syscall argument registers.
    Args([u64; 6]),
}

impl Value {
    /// The TSDL type of the field, to be followed by the field name (and `[16]` / `[6]`, which
    /// [`Value::tsdl_suffix`] gives). `size` and `align` are in bits.
    pub fn tsdl_type(&self) -> &'static str {
        match self {
            Value::U32(_) => {
                "integer { size = 32; align = 8; signed = 0; encoding = none; base = 10; }"
            }
            Value::I32(_) => {
                "integer { size = 32; align = 8; signed = 1; encoding = none; base = 10; }"
            }
            Value::U64(_) | Value::Args(_) => {
                "integer { size = 64; align = 8; signed = 0; encoding = none; base = 10; }"
            }
            Value::I64(_) => {
                "integer { size = 64; align = 8; signed = 1; encoding = none; base = 10; }"
            }
            Value::Hex64(_) => {
                "integer { size = 64; align = 8; signed = 0; encoding = none; base = 16; }"
            }
            Value::Comm(_) => {
                "integer { size = 8; align = 8; signed = 0; encoding = UTF8; base = 10; }"
            }
            Value::Str(_) => "string { encoding = UTF8; }",
        }
    }

    /// What follows the field name in its declaration.
    pub fn tsdl_suffix(&self) -> &'static str {
        match self {
            Value::Comm(_) => "[16]",
            Value::Args(_) => "[6]",
            _ => "",
        }
    }

    /// Appends the value's bytes (little-endian; every type is byte-aligned, so no padding).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::U64(v) | Value::Hex64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Comm(c) => {
                // Bytes after the terminator are whatever the kernel left there; zero them so
                // the export does not carry stale memory.
                let end = c.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
                out.extend_from_slice(&c[..end]);
                out.resize(out.len() + COMM_LEN - end, 0);
            }
            Value::Str(s) => {
                out.extend(s.bytes().filter(|&b| b != 0));
                out.push(0);
            }
            Value::Args(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        }
    }
}

/// The fields of one event: `(name without the leading underscore, value)`.
pub type Fields = Vec<(&'static str, Value)>;

fn text_comm(s: &str) -> [u8; COMM_LEN] {
    schemas_comm(s.as_bytes())
}

fn schemas_comm(bytes: &[u8]) -> [u8; COMM_LEN] {
    let mut c = [0u8; COMM_LEN];
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let n = end.min(COMM_LEN - 1);
    c[..n].copy_from_slice(&bytes[..n]);
    c
}

/// LTTng's integer encoding of a block request's `rwbs` (lttng-modules' `RWBS_FLAG_*` bits),
/// which lttng-analyses reads (bit 0 set = write). `flightrec dump` prints the kernel's string
/// form of the same information; [`rwbs_flags_string`] converts back.
pub fn lttng_rwbs(op: u32, flags: u32) -> u32 {
    const WRITE: u32 = 1 << 0;
    const DISCARD: u32 = 1 << 1;
    const READ: u32 = 1 << 2;
    const RAHEAD: u32 = 1 << 3;
    const SYNC: u32 = 1 << 5;
    const META: u32 = 1 << 6;
    const SECURE: u32 = 1 << 7;
    const FLUSH: u32 = 1 << 8;
    const FUA: u32 = 1 << 9;
    const PREFLUSH: u32 = 1 << 10;
    // REQ_OP_* values, as in `schemas::event::rwbs_string`.
    let mut v = match op {
        1 | 7 => WRITE,
        3 => DISCARD,
        5 => DISCARD | SECURE,
        2 => FLUSH,
        0 => READ,
        _ => 0,
    };
    for (bit, lttng) in [
        (rwbs::PREFLUSH, PREFLUSH),
        (rwbs::FUA, FUA),
        (rwbs::RAHEAD, RAHEAD),
        (rwbs::SYNC, SYNC),
        (rwbs::META, META),
    ] {
        if flags & bit != 0 {
            v |= lttng;
        }
    }
    v
}

/// The kernel's `rwbs` string for an LTTng `rwbs` integer, as `flightrec dump` prints it.
pub fn rwbs_flags_string(v: u32) -> String {
    let mut s = String::new();
    if v & (1 << 10) != 0 {
        s.push('F');
    }
    if v & 1 != 0 {
        s.push('W');
    } else if v & (1 << 7) != 0 {
        s.push_str("DE");
    } else if v & (1 << 1) != 0 {
        s.push('D');
    } else if v & (1 << 8) != 0 {
        s.push('F');
    } else if v & (1 << 2) != 0 {
        s.push('R');
    } else {
        s.push('N');
    }
    for (bit, c) in [(1 << 9, 'F'), (1 << 3, 'A'), (1 << 5, 'S'), (1 << 6, 'M')] {
        if v & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// How a syscall argument register is typed when it is given its own named field.
#[derive(Clone, Copy)]
enum Arg {
    U32,
    I32,
    U64,
    I64,
    Ptr,
    /// A user pointer to a path: the recorder keeps the pointer, not the string, so the field
    /// holds the pointer as text (lttng-analyses expects a string here).
    Path,
}

/// Named arguments (register index, LTTng field name, type) of the syscalls whose entry fields
/// lttng-analyses reads (`linuxautomaton/io.py` and `sv.py`); the names are those of the
/// kernel's `SYSCALL_DEFINE`s, which LTTng uses. Other syscalls keep `args` only.
fn named_args(name: &str) -> &'static [(usize, &'static str, Arg)] {
    use Arg::*;
    match name {
        "read" | "write" => &[(0, "fd", U32), (1, "buf", Ptr), (2, "count", U64)],
        "pread64" | "pwrite64" => &[
            (0, "fd", U32),
            (1, "buf", Ptr),
            (2, "count", U64),
            (3, "pos", I64),
        ],
        "readv" | "writev" => &[(0, "fd", U64), (1, "vec", Ptr), (2, "vlen", U64)],
        "preadv" | "pwritev" => &[
            (0, "fd", U64),
            (1, "vec", Ptr),
            (2, "vlen", U64),
            (3, "pos_l", U64),
            (4, "pos_h", U64),
        ],
        "recvfrom" => &[
            (0, "fd", I32),
            (1, "ubuf", Ptr),
            (2, "size", U64),
            (3, "flags", U32),
            (4, "addr", Ptr),
            (5, "addr_len", Ptr),
        ],
        "sendto" => &[
            (0, "fd", I32),
            (1, "buff", Ptr),
            (2, "len", U64),
            (3, "flags", U32),
            (4, "addr", Ptr),
            (5, "addr_len", I32),
        ],
        "recvmsg" | "sendmsg" => &[(0, "fd", I32), (1, "msg", Ptr), (2, "flags", U32)],
        "splice" => &[
            (0, "fd_in", I32),
            (1, "off_in", Ptr),
            (2, "fd_out", I32),
            (3, "off_out", Ptr),
            (4, "len", U64),
            (5, "flags", U32),
        ],
        "close" | "fsync" | "fdatasync" => &[(0, "fd", U32)],
        "sync_file_range" => &[
            (0, "fd", I32),
            (1, "offset", I64),
            (2, "nbytes", I64),
            (3, "flags", U32),
        ],
        "open" => &[(0, "filename", Path), (1, "flags", I32), (2, "mode", U32)],
        "openat" => &[
            (0, "dfd", I32),
            (1, "filename", Path),
            (2, "flags", I32),
            (3, "mode", U32),
        ],
        "dup" => &[(0, "fildes", U32)],
        "dup2" => &[(0, "oldfd", U32), (1, "newfd", U32)],
        "dup3" => &[(0, "oldfd", U32), (1, "newfd", U32), (2, "flags", I32)],
        "fcntl" => &[(0, "fd", U32), (1, "cmd", U32), (2, "arg", U64)],
        "socket" => &[(0, "family", I32), (1, "type", I32), (2, "protocol", I32)],
        _ => &[],
    }
}

/// The payload of `ev`, in declaration order. Field names match `Event::fields` (what
/// `flightrec dump` prints), plus the named syscall arguments of [`named_args`].
pub fn fields(ev: &Event, out: &mut Fields) {
    fields_with_path(ev, None, out);
}

/// [`fields`], with the path the kernel recorded for this syscall entry (its `SyscallPath`
/// record) as the `filename` string; without one, `filename` holds the pointer as text.
pub fn fields_with_path(ev: &Event, path: Option<&str>, out: &mut Fields) {
    use Value::*;
    out.clear();
    match ev.data {
        EventData::SyscallEntry(e) => {
            out.push(("id", U64(e.id)));
            out.push(("args", Args(e.args)));
            for &(i, name, ty) in named_args(syscall_name(e.id).unwrap_or("")) {
                let a = e.args[i];
                // Registers are truncated to the C type of the parameter, as the kernel does.
                let v = match ty {
                    Arg::U32 => U32(a as u32),
                    Arg::I32 => I32(a as i32),
                    Arg::U64 => U64(a),
                    Arg::I64 => I64(a as i64),
                    Arg::Ptr => Hex64(a),
                    Arg::Path => Str(path.map_or_else(|| format!("{a:#x}"), str::to_owned)),
                };
                out.push((name, v));
            }
        }
        EventData::SyscallExit(e) => {
            out.push(("id", U64(e.id)));
            out.push(("ret", I64(e.ret)));
        }
        EventData::SchedSwitch(e) => {
            out.push(("prev_comm", Comm(e.prev_comm)));
            out.push(("prev_tid", I32(ev.tid as i32)));
            out.push(("prev_prio", I32(e.prev_prio)));
            out.push(("prev_state", I64(e.prev_state as i64)));
            out.push(("next_comm", Comm(e.next_comm)));
            out.push(("next_tid", I32(e.next_tid as i32)));
            out.push(("next_prio", I32(e.next_prio)));
            out.push(("next_pid", I32(e.next_pid as i32)));
        }
        EventData::SchedWakeup(e) | EventData::SchedWakeupNew(e) => {
            out.push(("comm", Comm(e.comm)));
            out.push(("tid", I32(e.tid as i32)));
            out.push(("prio", I32(e.prio)));
            out.push(("target_cpu", I32(e.target_cpu as i32)));
            out.push(("pid", I32(e.pid as i32)));
        }
        EventData::ProcessFork(e) => {
            out.push(("parent_comm", Comm(e.parent_comm)));
            out.push(("parent_tid", I32(e.parent_tid as i32)));
            out.push(("parent_pid", I32(e.parent_pid as i32)));
            out.push(("child_comm", Comm(e.child_comm)));
            out.push(("child_tid", I32(e.child_tid as i32)));
            out.push(("child_pid", I32(e.child_pid as i32)));
        }
        EventData::ProcessExec(e) => {
            out.push(("filename", Str(schemas::cstr_lossy(&e.filename))));
            out.push(("tid", I32(e.tid as i32)));
            out.push(("old_tid", I32(e.old_tid as i32)));
        }
        EventData::ProcessExit(e) => {
            out.push(("comm", Comm(e.comm)));
            out.push(("tid", I32(e.tid as i32)));
            out.push(("prio", I32(e.prio)));
            out.push(("pid", I32(e.pid as i32)));
        }
        EventData::BlockRqIssue(e) => {
            out.push(("dev", U32(e.dev)));
            out.push(("sector", U64(e.sector)));
            out.push(("nr_sector", U32(e.nr_sector)));
            out.push(("bytes", U32(e.bytes)));
            out.push(("rwbs", U32(lttng_rwbs(e.op, e.rwbs_flags))));
            out.push(("comm", Comm(e.comm)));
        }
        EventData::BlockRqComplete(e) => {
            out.push(("dev", U32(e.dev)));
            out.push(("sector", U64(e.sector)));
            out.push(("nr_sector", U32(e.nr_sector)));
            out.push(("error", I32(e.error)));
            out.push(("rwbs", U32(lttng_rwbs(e.op, e.rwbs_flags))));
        }
        EventData::IrqHandlerEntry(e) => {
            out.push(("irq", I32(e.irq as i32)));
            out.push(("name", Str(schemas::cstr_lossy(&e.name))));
        }
        EventData::IrqHandlerExit(e) => {
            out.push(("irq", I32(e.irq as i32)));
            out.push(("ret", I32(e.ret)));
        }
        EventData::SoftirqEntry(e) | EventData::SoftirqExit(e) => {
            out.push(("vec", U32(e.vec)));
        }
        // Not an event of its own in CTF: the exporter skips these records.
        EventData::SyscallPath(..) => {}
    }
}

/// Name of the event that opens the statedump.
pub const STATEDUMP_START: &str = "lttng_statedump_start";
/// Name of the per-thread statedump event lttng-analyses reads thread names and pids from.
pub const STATEDUMP_PROCESS: &str = "lttng_statedump_process_state";
/// Name of the event that closes the statedump.
pub const STATEDUMP_END: &str = "lttng_statedump_end";
/// Name of the statedump event of one open fd of a process.
pub const STATEDUMP_FD: &str = "lttng_statedump_file_descriptor";
/// Name of the statedump event naming a block device.
pub const STATEDUMP_BLOCK_DEVICE: &str = "lttng_statedump_block_device";

/// The statedump of `m` as LTTng events: start, one `lttng_statedump_process_state` per thread
/// (the main thread included even when the manifest lists only other threads), one
/// `lttng_statedump_file_descriptor` per open fd the manifest lists (`filename` as LTTng writes
/// it: the path, `socket:[INODE]`, `pipe:[INODE]`, `anon_inode:[eventfd]`; `flags` and `fmode`
/// are not recorded and read 0), one `lttng_statedump_block_device` per disk, end.
pub fn statedump(m: &Manifest) -> Vec<(&'static str, Fields)> {
    let mut evs = vec![(STATEDUMP_START, Vec::new())];
    for p in &m.statedump.processes {
        // LTTng's `type`: 0 user thread, 1 kernel thread; kernel threads have no command line.
        let kind = i32::from(p.cmdline.is_empty());
        let mut threads: Vec<(u32, &str)> =
            p.threads.iter().map(|t| (t.tid, t.comm.as_str())).collect();
        if !threads.iter().any(|t| t.0 == p.pid) {
            threads.insert(0, (p.pid, p.comm.as_str()));
        }
        for (tid, comm) in threads {
            evs.push((
                STATEDUMP_PROCESS,
                vec![
                    ("tid", Value::I32(tid as i32)),
                    ("pid", Value::I32(p.pid as i32)),
                    ("ppid", Value::I32(p.ppid as i32)),
                    ("name", Value::Comm(text_comm(comm))),
                    ("type", Value::I32(kind)),
                ],
            ));
        }
        for f in &p.fds {
            evs.push((
                STATEDUMP_FD,
                vec![
                    ("pid", Value::I32(p.pid as i32)),
                    ("fd", Value::I32(f.fd as i32)),
                    ("flags", Value::U32(0)),
                    ("fmode", Value::U32(0)),
                    ("filename", Value::Str(f.target.clone())),
                ],
            ));
        }
    }
    for d in &m.statedump.disks {
        evs.push((
            STATEDUMP_BLOCK_DEVICE,
            vec![
                ("dev", Value::U32(d.dev)),
                ("diskname", Value::Str(d.name.clone())),
            ],
        ));
    }
    evs.push((STATEDUMP_END, Vec::new()));
    evs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rwbs_round_trips_through_lttng_bits() {
        let all = rwbs::PREFLUSH | rwbs::FUA | rwbs::RAHEAD | rwbs::SYNC | rwbs::META;
        for op in [0, 1, 2, 3, 5, 7, 9] {
            for flags in 0..=all {
                let want = schemas::event::rwbs_string(op, flags);
                assert_eq!(
                    rwbs_flags_string(lttng_rwbs(op, flags)),
                    want,
                    "op {op} flags {flags:#x}"
                );
            }
        }
        assert_eq!(lttng_rwbs(1, rwbs::SYNC), 0b10_0001);
        assert_eq!(lttng_rwbs(0, 0) % 2, 0, "reads are even for lttng-analyses");
    }

    #[test]
    fn encodings_have_the_declared_sizes() {
        let cases = [
            (Value::U32(7), 4),
            (Value::I32(-1), 4),
            (Value::U64(1), 8),
            (Value::I64(-2), 8),
            (Value::Hex64(3), 8),
            (Value::Comm(text_comm("bash")), 16),
            (Value::Str("ab".into()), 3),
            (Value::Args([1; 6]), 48),
        ];
        for (v, n) in cases {
            let mut b = Vec::new();
            v.encode(&mut b);
            assert_eq!(b.len(), n, "{v:?}");
        }
        let mut b = Vec::new();
        Value::Comm(*b"abc\0garbage-left").encode(&mut b);
        assert_eq!(&b, b"abc\0\0\0\0\0\0\0\0\0\0\0\0\0");
    }
}
