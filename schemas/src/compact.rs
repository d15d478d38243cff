//! The compact ring format: variable-size records in fixed-size packets, written by the eBPF
//! programs and read back by the recorder (specified in docs/recorder.md, "Ring format").
//!
//! # Packets
//!
//! Each CPU's ring is a run of [`PACKET_SIZE`]-byte packets. A writer reserves bytes with a
//! compare-and-swap on its CPU's byte position (`CpuHead::head`, counted from the ring's
//! creation, so `position / PACKET_SIZE` is the packet's absolute number). A record never
//! straddles two packets: a writer whose record does not fit in the rest of the packet pads
//! that rest ([`KIND_PAD`]) and opens the next packet, writing its [`PacketHeader`] (absolute
//! number + 1, and the opener's full timestamp). So a reader can start at any packet of a
//! wrapped ring and find every record boundary by walking the lengths.
//!
//! # Records
//!
//! A record is an 8-byte header, an optional 8-byte full timestamp, the task (`tid`, `pid`),
//! then the kind's body, all a multiple of 8 bytes (so the programs store whole aligned words).
//! The task is left out ([`flag::SAME_TASK`]) when the record directly follows, in the same
//! packet, a record of the same task: most records do (a syscall's entry and exit, a path and
//! its entry). The header is stored last, in one 8-byte store, so a reader that finds a valid
//! header finds the whole record; a reserved record not yet written still holds an older
//! lap's bytes, whose lap tag differs ([`header`]).
//!
//! # Leaving out the task
//!
//! Each CPU's head keeps the task and end position of the last record a program reserved
//! (`CpuHead::last_task`, `last_end`: the task stored first). A writer leaves its task out
//! only when the position it reserves at is that end and the task is its own; the
//! reservation is a compare-and-swap from that very position, so no record can have come in
//! between. A program nested in another (an irq inside a syscall program) that reads the pair
//! half-updated sees an end that is not the head and writes its task. The first record of a
//! packet always carries its task, so a reader starting at any packet knows every record's.
//!
//! Timestamps keep their low 30 bits in the header. The reader rebuilds the rest from the
//! latest full timestamp before it in the packet (the packet's base, or a record flagged
//! [`flag::FULL_TS`]). A writer writes a full timestamp whenever its time is not within
//! [`FULL_TS_EVERY_NS`] after the last full one written on its CPU (`CpuHead::hint`), which
//! keeps every record within half the 30-bit range of the reader's reference.
//!
//! # Bodies
//!
//! Syscall entries carry only the arguments the syscall has (a per-syscall count table given
//! to the programs at load time), exits only the return value; both keep the syscall number in
//! the header (`aux`) when it is below [`AUX_ESCAPE`]. Every other kind
//! stores its payload struct as is.

/// Bytes of one packet.
pub const PACKET_SIZE: usize = 4096;
/// `log2(PACKET_SIZE)`.
pub const PACKET_SHIFT: u32 = 12;
/// Bytes of a [`PacketHeader`], where a packet's first record starts.
pub const PACKET_HEADER_SIZE: usize = 16;
/// Size of the largest record a program writes (a `sched_switch` with a full timestamp).
pub const MAX_RECORD: usize = 8 + 8 + 8 + 64;

/// The start of every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketHeader {
    /// Absolute packet number + 1 (0: never written).
    pub seq: u64,
    /// `CLOCK_MONOTONIC` ns of the record that opened the packet: the first reference for
    /// rebuilding the packet's timestamps.
    pub base_ts: u64,
}
const _: () = assert!(core::mem::size_of::<PacketHeader>() == PACKET_HEADER_SIZE);

/// Record kind of padding (the unused end of a packet, or a folded hole).
pub const KIND_PAD: u32 = 31;
/// `aux` value meaning "the syscall number is in the body" (numbers at or above it).
pub const AUX_ESCAPE: u64 = 511;
/// A writer stores a full timestamp when its time is not within this many ns after the last
/// full one of its CPU: half the range the 30-bit low part can tell apart around a reference.
pub const FULL_TS_EVERY_NS: u64 = 1 << 28;
/// Bits of the timestamp kept in a record header.
pub const TS_BITS: u32 = 30;

/// Bits of a record header's `flags` field.
pub mod flag {
    /// A full 8-byte timestamp follows the header.
    pub const FULL_TS: u64 = 1;
    /// The task is left out: it is the previous record's (in the same packet).
    pub const SAME_TASK: u64 = 2;
    /// A syscall path that did not fit and was cut.
    pub const PATH_CUT: u64 = 4;
}

/// The record header word: `ts_low:30 | len4:6 | kind:5 | flags:3 | aux:9 | lap:11`, low bits
/// first. `len4` is the record's length in 4-byte units; `lap` is the low bits of the number
/// of times the ring had wrapped when the record's packet was opened
/// (`packet number >> log2(packets per ring)`), so a stale record of an earlier lap left in a
/// reserved but unwritten place is told apart from a written one.
pub mod header {
    /// Shift of the 6-bit length (4-byte units).
    pub const LEN_SHIFT: u32 = 30;
    /// Shift of the 5-bit kind.
    pub const KIND_SHIFT: u32 = 36;
    /// Shift of the 3-bit flags.
    pub const FLAGS_SHIFT: u32 = 41;
    /// Shift of the 9-bit aux field (syscall number).
    pub const AUX_SHIFT: u32 = 44;
    /// Shift of the 11-bit lap tag.
    pub const LAP_SHIFT: u32 = 53;
    /// Mask of the lap tag (after shifting).
    pub const LAP_MASK: u64 = (1 << 11) - 1;

    /// Builds a header word.
    #[inline(always)]
    pub const fn make(ts: u64, len: usize, kind: u32, flags: u64, aux: u64, lap: u64) -> u64 {
        (ts & ((1 << super::TS_BITS) - 1))
            | ((len as u64 / 4) << LEN_SHIFT)
            | ((kind as u64) << KIND_SHIFT)
            | (flags << FLAGS_SHIFT)
            | ((aux & 511) << AUX_SHIFT)
            | ((lap & LAP_MASK) << LAP_SHIFT)
    }
}

/// Bytes of the record fields every record has after the header and its optional full
/// timestamp: `tid` then `pid`.
pub const TASK_SIZE: usize = 8;

/// Size of the body of a syscall exit: the return value.
pub const EXIT_BODY: usize = 8;
/// Size of the largest body of a syscall path record: the NUL-padded path. A shorter path
/// takes the multiple of 8 bytes that holds it and its NUL.
pub const PATH_BODY: usize = crate::SYSCALL_PATH_LEN;

/// Bytes of a path record's body for a path of `len` bytes (its NUL excluded).
pub const fn path_body(len: usize) -> usize {
    let n = (len + 1).next_multiple_of(8);
    if n > PATH_BODY { PATH_BODY } else { n }
}

/// What the syscall entry program needs to know of a syscall number below 512, in one byte of
/// the table the loader gives it (one load per event instead of a table load and a search of
/// [`crate::PATH_SYSCALLS`]): the argument count in the low bits, and whether the call's file
/// name is recorded, from which argument.
pub mod shape {
    /// Bits of the argument count (0 to 6).
    pub const ARGC: u8 = 7;
    /// The call's file name is recorded (a [`crate::PATH_SYSCALLS`] member).
    pub const PATH: u8 = 8;
    /// The file name is the second argument (else the first).
    pub const PATH_ARG1: u8 = 16;

    /// The table for argument counts `argc`: each count with the path bits of its number.
    pub const fn table(argc: [u8; 512]) -> [u8; 512] {
        let mut t = argc;
        let mut i = 0;
        while i < t.len() {
            t[i] &= ARGC;
            i += 1;
        }
        let mut p = 0;
        while p < crate::PATH_SYSCALLS.len() {
            let (id, arg) = crate::PATH_SYSCALLS[p];
            t[id as usize] |= PATH | if arg == 1 { PATH_ARG1 } else { 0 };
            p += 1;
        }
        t
    }
}

/// Number of arguments of each x86-64 syscall below 512, from Linux 6.18's syscall trace formats
/// (`events/syscalls/sys_enter_*/format`) and, for the few without one, their definitions;
/// numbers without a syscall say 6. Syscall argument counts are ABI and never change. The loader
/// gives the table to the programs, so an entry record keeps only the arguments its syscall has.
pub const SYSCALL_ARGC: [u8; 512] = [
    3, 3, 3, 1, 2, 2, 2, 3, 3, 6, 3, 2, 1, 4, 4, 0, 3, 4, 4, 3, 3, 2, 1, 5, 0, 5, 3, 3, 3, 3, 3, 3,
    1, 2, 0, 2, 2, 1, 3, 0, 4, 3, 3, 3, 6, 6, 3, 3, 2, 3, 2, 3, 3, 4, 5, 5, 5, 0, 0, 3, 1, 4, 2, 1,
    3, 3, 4, 1, 2, 4, 5, 3, 3, 2, 1, 1, 2, 2, 3, 2, 1, 1, 2, 2, 1, 2, 2, 1, 2, 3, 2, 2, 3, 3, 3, 1,
    2, 2, 2, 1, 1, 4, 0, 3, 0, 1, 1, 0, 0, 2, 0, 0, 0, 2, 2, 2, 2, 3, 3, 3, 3, 1, 1, 1, 1, 2, 2, 2,
    4, 3, 2, 2, 2, 3, 6, 1, 2, 2, 2, 3, 2, 3, 2, 2, 3, 1, 1, 1, 2, 2, 2, 1, 0, 0, 3, 2, 6, 5, 2, 1,
    2, 1, 0, 1, 2, 5, 2, 2, 1, 4, 2, 2, 1, 3, 6, 3, 2, 6, 6, 4, 6, 6, 6, 6, 6, 6, 0, 3, 5, 5, 5, 4,
    4, 4, 3, 3, 3, 2, 2, 2, 2, 1, 6, 3, 3, 1, 2, 1, 5, 3, 3, 1, 3, 1, 6, 6, 5, 3, 1, 0, 4, 4, 3, 4,
    2, 1, 1, 2, 2, 2, 4, 1, 4, 4, 3, 2, 6, 6, 3, 5, 4, 1, 5, 5, 2, 3, 4, 5, 5, 4, 5, 3, 2, 0, 3, 2,
    4, 4, 3, 4, 5, 3, 4, 3, 4, 5, 3, 4, 3, 3, 6, 5, 1, 2, 3, 6, 4, 4, 4, 6, 4, 6, 3, 2, 1, 4, 4, 2,
    4, 4, 2, 1, 3, 2, 1, 5, 5, 4, 5, 5, 2, 5, 4, 5, 3, 2, 1, 4, 2, 3, 6, 6, 5, 3, 3, 4, 5, 3, 3, 2,
    5, 3, 5, 1, 3, 3, 6, 6, 6, 4, 2, 1, 5, 6, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 4, 2, 6, 4, 3, 5, 2, 5, 3, 3, 2, 2, 3, 4, 3, 4, 5, 6, 5, 4, 3, 4, 2, 1,
    2, 5, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
];

#[cfg(feature = "std")]
pub use decode::*;

#[cfg(feature = "std")]
mod decode {
    use super::*;
    use crate::{
        EventKind, PAYLOAD_SIZE, Record, SyscallEntry, SyscallExit, SyscallPath, record_flags,
    };

    /// Fields of a header word.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Header {
        /// Low [`TS_BITS`] bits of the timestamp.
        pub ts_low: u64,
        /// Bytes of the record, header included.
        pub len: usize,
        /// Kind ([`EventKind`] value or [`KIND_PAD`]).
        pub kind: u32,
        /// [`flag`] bits.
        pub flags: u64,
        /// Syscall number when below [`AUX_ESCAPE`].
        pub aux: u64,
        /// Lap tag.
        pub lap: u64,
    }

    impl Header {
        /// Splits a header word.
        pub fn parse(w: u64) -> Header {
            Header {
                ts_low: w & ((1 << TS_BITS) - 1),
                len: ((w >> header::LEN_SHIFT) & 63) as usize * 4,
                kind: ((w >> header::KIND_SHIFT) & 31) as u32,
                flags: (w >> header::FLAGS_SHIFT) & 7,
                aux: (w >> header::AUX_SHIFT) & 511,
                lap: (w >> header::LAP_SHIFT) & header::LAP_MASK,
            }
        }
    }

    /// The timestamp whose low [`TS_BITS`] bits are `low` nearest to `reference`.
    pub fn rebuild_ts(reference: u64, low: u64) -> u64 {
        let span = 1u64 << TS_BITS;
        let delta = low.wrapping_sub(reference) & (span - 1);
        if delta < span / 2 {
            reference.wrapping_add(delta)
        } else {
            reference.wrapping_sub(span - delta)
        }
    }

    /// The little-endian u64 at `off` of `b`.
    pub fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
    }

    /// Size of each kind's body in the ring (syscall entries: the least, without arguments).
    pub fn body_size(kind: EventKind) -> usize {
        use EventKind::*;
        match kind {
            SyscallEntry => 0,
            SyscallExit => EXIT_BODY,
            SyscallPath => PATH_BODY,
            SchedSwitch => size_of::<crate::SchedSwitch>(),
            SchedWakeup | SchedWakeupNew => size_of::<crate::SchedWakeup>(),
            ProcessFork => size_of::<crate::ProcessFork>(),
            ProcessExec => size_of::<crate::ProcessExec>(),
            ProcessExit => size_of::<crate::ProcessExit>(),
            BlockRqIssue | BlockRqComplete => size_of::<crate::BlockRq>(),
            IrqHandlerEntry => size_of::<crate::IrqHandlerEntry>(),
            IrqHandlerExit => size_of::<crate::IrqHandlerExit>(),
            SoftirqEntry | SoftirqExit => size_of::<crate::Softirq>(),
        }
    }

    /// Why a packet's walk stopped before its end.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Stop {
        /// The walk reached the end it was given.
        End,
        /// A header that is not a written record of this lap (a record reserved but not yet
        /// written, or written over), at this offset in the packet.
        Torn(usize),
    }

    /// One record found in a packet: its offset in the packet and the decoded record.
    #[derive(Clone, Copy, Debug)]
    pub struct Found {
        /// Offset of the record in its packet.
        pub offset: usize,
        /// The record with its full timestamp, `cpu` and `seq` (the absolute byte position +
        /// 1) filled in.
        pub record: Record,
    }

    /// Walks the records of one packet.
    ///
    /// `packet` is the packet's bytes, `number` its absolute number, `lap` the lap tag its
    /// records must carry, `end` how far to walk (the packet size, or the writers' position
    /// in the packet being filled). Returns `None` when the packet header is not the one of
    /// `number` (never written, or written over since), else why the walk stopped; `each` is
    /// called for every record, padding excluded.
    pub fn walk_packet(
        packet: &[u8],
        number: u64,
        lap: u64,
        end: usize,
        cpu: u32,
        mut each: impl FnMut(Found),
    ) -> Option<Stop> {
        walk_records(packet, number, lap, end, |off, bytes, h, at| {
            let mut record = decode_record(bytes, h, at)?;
            record.cpu = cpu;
            record.seq = (number << PACKET_SHIFT) + off as u64 + 1;
            each(Found {
                offset: off,
                record,
            });
            Some(())
        })
    }

    /// Like [`walk_packet`], but only rebuilds each record's timestamp (given to `each` in
    /// ring order), without decoding bodies: for validating and counting a frozen ring.
    pub fn scan_packet(
        packet: &[u8],
        number: u64,
        lap: u64,
        end: usize,
        mut each: impl FnMut(u64),
    ) -> Option<Stop> {
        walk_records(packet, number, lap, end, |_, bytes, h, at| {
            let (ts, _, _) = at.advance(bytes, h)?;
            each(ts);
            Some(())
        })
    }

    /// What a record's decoding takes from the records before it in its packet.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Context {
        /// The timestamp reference: the packet's base, then the last record's time.
        pub ts: u64,
        /// The last task written out (`tid | pid << 32`), for records that leave theirs out.
        pub task: Option<u64>,
    }

    impl Context {
        /// The context at the start of a packet whose base timestamp is `base_ts`.
        pub fn new(base_ts: u64) -> Self {
            Context {
                ts: base_ts,
                task: None,
            }
        }

        /// Reads what follows the header `h` of the record `bytes` up to its body: the full
        /// timestamp (or rebuilds it) and the task (or takes the last one), and makes them the
        /// context of the next record. Returns the timestamp, the task and where the body
        /// starts; `None` when the record is too short for them, or leaves out a task no
        /// record before it gave.
        fn advance(&mut self, bytes: &[u8], h: Header) -> Option<(u64, u64, usize)> {
            let mut off = 8;
            let ts = if h.flags & flag::FULL_TS != 0 {
                off = 16;
                (bytes.len() >= off).then(|| u64_at(bytes, 8))?
            } else {
                rebuild_ts(self.ts, h.ts_low)
            };
            self.ts = ts;
            let task = if h.flags & flag::SAME_TASK != 0 {
                self.task?
            } else {
                off += TASK_SIZE;
                (bytes.len() >= off).then(|| u64_at(bytes, off - TASK_SIZE))?
            };
            self.task = Some(task);
            Some((ts, task, off))
        }
    }

    /// The walk both share: checks the packet's number, then gives `each` every record up to
    /// `end` (its offset, bytes, header and the context to update), padding skipped; a header
    /// of another lap, a length that does not fit, or `each` saying `None` stops it as torn
    /// there.
    fn walk_records(
        packet: &[u8],
        number: u64,
        lap: u64,
        end: usize,
        mut each: impl FnMut(usize, &[u8], Header, &mut Context) -> Option<()>,
    ) -> Option<Stop> {
        assert!(packet.len() >= PACKET_SIZE);
        let end = end.min(PACKET_SIZE);
        if u64_at(packet, 0) != number + 1 {
            return None;
        }
        let mut context = Context::new(u64_at(packet, 8));
        let mut off = PACKET_HEADER_SIZE;
        while off + 8 <= end {
            let h = Header::parse(u64_at(packet, off));
            if h.lap != lap & header::LAP_MASK || h.len < 8 || off + h.len > end {
                return Some(Stop::Torn(off));
            }
            if h.kind != KIND_PAD && each(off, &packet[off..off + h.len], h, &mut context).is_none()
            {
                return Some(Stop::Torn(off));
            }
            off += h.len;
        }
        Some(Stop::End)
    }

    /// Decodes one record (`bytes` is exactly the record), updating the context. `None` when
    /// its length does not fit its kind, or it leaves out a task no record before it gave.
    pub fn decode_record(bytes: &[u8], h: Header, at: &mut Context) -> Option<Record> {
        let kind = EventKind::from_u16(h.kind as u16)?;
        let (ts, task, off) = at.advance(bytes, h)?;
        let mut r = Record {
            ts_ns: ts,
            tid: task as u32,
            pid: (task >> 32) as u32,
            kind: kind as u16,
            ..Record::ZERO
        };
        let body = &bytes[off..];
        // The syscall number: in the header, or the body's first word when escaped.
        let take_id = |body: &mut &[u8]| -> Option<u64> {
            if h.aux < AUX_ESCAPE {
                Some(h.aux)
            } else if body.len() >= 8 {
                let id = u64_at(body, 0);
                *body = &body[8..];
                Some(id)
            } else {
                None
            }
        };
        let mut body = body;
        match kind {
            EventKind::SyscallEntry => {
                let id = take_id(&mut body)?;
                if !body.len().is_multiple_of(8) || body.len() > 48 {
                    return None;
                }
                let mut args = [0u64; 6];
                for (i, a) in args.iter_mut().enumerate().take(body.len() / 8) {
                    *a = u64_at(body, i * 8);
                }
                r.set_payload(SyscallEntry { id, args });
            }
            EventKind::SyscallExit => {
                let id = take_id(&mut body)?;
                if body.len() != EXIT_BODY {
                    return None;
                }
                let ret = u64_at(body, 0) as i64;
                r.set_payload(SyscallExit { id, ret });
            }
            EventKind::SyscallPath => {
                let id = take_id(&mut body)?;
                if body.is_empty() || body.len() > PATH_BODY || !body.len().is_multiple_of(8) {
                    return None;
                }
                let mut p = SyscallPath {
                    id,
                    ..SyscallPath::default()
                };
                p.path[..body.len()].copy_from_slice(body);
                r.set_payload(p);
                if h.flags & flag::PATH_CUT != 0 {
                    r.flags = record_flags::PATH_CUT;
                }
            }
            _ => {
                let n = body_size(kind);
                if body.len() != n {
                    return None;
                }
                let mut payload = [0u8; PAYLOAD_SIZE];
                payload[..n].copy_from_slice(&body[..n]);
                for (i, w) in r.payload.iter_mut().enumerate() {
                    *w = u64_at(&payload, i * 8);
                }
            }
        }
        Some(r)
    }

    /// Encodes `r` as the programs would (for tests and fixtures): the record's bytes, with a
    /// full timestamp when `full_ts`, without its task when `same_task` (the caller puts it
    /// after a record of the same task), for a packet of lap `lap`. `argc` is the number of
    /// arguments kept for a syscall entry.
    pub fn encode_record(
        r: &Record,
        full_ts: bool,
        same_task: bool,
        lap: u64,
        argc: usize,
    ) -> Vec<u8> {
        let kind = EventKind::from_u16(r.kind).expect("a known kind");
        let mut flags = if full_ts { flag::FULL_TS } else { 0 };
        if same_task {
            flags |= flag::SAME_TASK;
        }
        let mut body: Vec<u8> = Vec::new();
        let mut aux = 0;
        let mut id_body = |id: u64, body: &mut Vec<u8>| {
            if id < AUX_ESCAPE {
                aux = id;
            } else {
                aux = AUX_ESCAPE;
                body.extend_from_slice(&id.to_le_bytes());
            }
        };
        match kind {
            EventKind::SyscallEntry => {
                let e: SyscallEntry = r.payload();
                id_body(e.id, &mut body);
                for a in &e.args[..argc.min(6)] {
                    body.extend_from_slice(&a.to_le_bytes());
                }
            }
            EventKind::SyscallExit => {
                let e: SyscallExit = r.payload();
                id_body(e.id, &mut body);
                body.extend_from_slice(&e.ret.to_le_bytes());
            }
            EventKind::SyscallPath => {
                let p: SyscallPath = r.payload();
                id_body(p.id, &mut body);
                let len = p.path.iter().position(|&b| b == 0).unwrap_or(PATH_BODY);
                body.extend_from_slice(&p.path[..path_body(len)]);
                if r.flags & record_flags::PATH_CUT != 0 {
                    flags |= flag::PATH_CUT;
                }
            }
            _ => {
                let n = body_size(kind);
                let bytes: Vec<u8> = r.payload.iter().flat_map(|w| w.to_le_bytes()).collect();
                body.extend_from_slice(&bytes[..n]);
            }
        }
        let task = if same_task { 0 } else { TASK_SIZE };
        let len = 8 + if full_ts { 8 } else { 0 } + task + body.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(
            &header::make(r.ts_ns, len, kind as u32, flags, aux, lap).to_le_bytes(),
        );
        if full_ts {
            out.extend_from_slice(&r.ts_ns.to_le_bytes());
        }
        if !same_task {
            out.extend_from_slice(&r.tid.to_le_bytes());
            out.extend_from_slice(&r.pid.to_le_bytes());
        }
        out.extend_from_slice(&body);
        out
    }

    /// A padding record of `len` bytes (a multiple of 8, from 8 to [`MAX_PAD`]) for lap `lap`.
    pub fn pad(len: usize, lap: u64) -> [u8; 8] {
        debug_assert!((8..=MAX_PAD).contains(&len) && len.is_multiple_of(8));
        header::make(0, len, KIND_PAD, 0, 0, lap).to_le_bytes()
    }

    /// Pads `packet` from `from` (a multiple of 8) to its end with padding records of lap
    /// `lap`.
    pub fn fill_pad(packet: &mut [u8], mut from: usize, lap: u64) {
        while from + 8 <= PACKET_SIZE {
            let len = (PACKET_SIZE - from).min(MAX_PAD);
            packet[from..from + 8].copy_from_slice(&pad(len, lap));
            from += len;
        }
    }

    /// The longest padding record (the header's length field counts 4-byte units in 6 bits).
    pub const MAX_PAD: usize = 248;

    /// Rewrites `packet` (its records up to `end`) as packet `number` of lap `lap`: its header's
    /// number, every record's lap tag, and padding after `end`. For moving packets: the spill's
    /// into the main ring, a ring's into a file.
    pub fn renumber(packet: &mut [u8], number: u64, lap: u64, end: usize) {
        packet[..8].copy_from_slice(&(number + 1).to_le_bytes());
        let lap_bits = header::LAP_MASK << header::LAP_SHIFT;
        let mut off = PACKET_HEADER_SIZE;
        while off + 8 <= end.min(PACKET_SIZE) {
            let w = u64_at(packet, off);
            let len = Header::parse(w).len.max(8);
            let w = (w & !lap_bits) | ((lap & header::LAP_MASK) << header::LAP_SHIFT);
            packet[off..off + 8].copy_from_slice(&w.to_le_bytes());
            off += len;
        }
        fill_pad(packet, off.min(PACKET_SIZE), lap);
    }

    /// Puts one CPU's records, read in ring order, in time order with bounded memory.
    ///
    /// Programs read the clock before they reserve a record, so one interrupted in between (by
    /// an irq, softirq or NMI program on the same CPU) writes after records with later
    /// timestamps: ring order is time order but for the few records of nested programs. Once a
    /// record is more than [`Reorder::WINDOW`] records behind the newest read, no later record
    /// is older (when the records are as the programs write them), so everything up to its
    /// timestamp can go, in batches of [`Reorder::BATCH`]. Ties keep ring order. A record older
    /// than one already given out is counted in [`Reorder::disordered`] (and given out late).
    #[derive(Debug, Default)]
    pub struct Reorder {
        buf: Vec<Record>,
        floor: WindowFloor,
        last: Option<u64>,
        disordered: u64,
    }

    /// The highest timestamp of those more than [`Reorder::WINDOW`] records behind the newest
    /// pushed: in records as the programs write them, no later record is older than it.
    #[derive(Debug, Default)]
    pub struct WindowFloor {
        recent: std::collections::VecDeque<u64>,
        floor: Option<u64>,
    }

    impl WindowFloor {
        /// Adds the timestamp of the next record in ring order.
        pub fn push(&mut self, ts: u64) {
            self.recent.push_back(ts);
            if self.recent.len() > Reorder::WINDOW {
                let behind = self.recent.pop_front().expect("not empty");
                self.floor = Some(self.floor.map_or(behind, |f| f.max(behind)));
            }
        }

        /// The floor, once more than a window of records was pushed.
        pub fn get(&self) -> Option<u64> {
            self.floor
        }
    }

    impl Reorder {
        /// How far behind in ring order a record may be.
        pub const WINDOW: usize = 4096;
        /// Records between two sorts.
        pub const BATCH: usize = 16_384;

        /// Adds `r`; gives `sink` the records that are ready, in time order.
        pub fn push<E>(
            &mut self,
            r: Record,
            sink: &mut dyn FnMut(&[Record]) -> Result<(), E>,
        ) -> Result<(), E> {
            self.buf.push(r);
            self.floor.push(r.ts_ns);
            if self.buf.len() >= Self::BATCH + Self::WINDOW
                && let Some(floor) = self.floor.get()
            {
                self.buf.sort_by_key(|r| r.ts_ns);
                let n = self.buf.partition_point(|r| r.ts_ns <= floor);
                self.give(n, sink)?;
            }
            Ok(())
        }

        /// Gives `sink` every record left, in time order.
        pub fn finish<E>(
            &mut self,
            sink: &mut dyn FnMut(&[Record]) -> Result<(), E>,
        ) -> Result<(), E> {
            self.buf.sort_by_key(|r| r.ts_ns);
            self.give(self.buf.len(), sink)
        }

        fn give<E>(
            &mut self,
            n: usize,
            sink: &mut dyn FnMut(&[Record]) -> Result<(), E>,
        ) -> Result<(), E> {
            if n == 0 {
                return Ok(());
            }
            if let Some(last) = self.last {
                self.disordered += self.buf[..n].iter().filter(|r| r.ts_ns < last).count() as u64;
            }
            self.last = Some(self.buf[n - 1].ts_ns.max(self.last.unwrap_or(0)));
            sink(&self.buf[..n])?;
            self.buf.drain(..n);
            Ok(())
        }

        /// Records given out after a later one: more disorder than the window allows.
        pub fn disordered(&self) -> u64 {
            self.disordered
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::{EventKind, Record, SchedSwitch, SyscallEntry, SyscallExit, SyscallPath};

    fn rec(kind: EventKind, ts: u64) -> Record {
        Record {
            ts_ns: ts,
            tid: 7,
            pid: 5,
            kind: kind as u16,
            ..Record::ZERO
        }
    }

    #[test]
    fn the_shape_table_marks_the_path_syscalls_and_keeps_every_count() {
        let t = shape::table(SYSCALL_ARGC);
        for (id, &argc) in SYSCALL_ARGC.iter().enumerate() {
            assert_eq!(t[id] & shape::ARGC, argc, "syscall {id}");
            let path = crate::PATH_SYSCALLS.iter().find(|p| p.0 == id as u64);
            assert_eq!(t[id] & shape::PATH != 0, path.is_some(), "syscall {id}");
            assert_eq!(
                t[id] & shape::PATH_ARG1 != 0,
                path.is_some_and(|p| p.1 == 1),
                "syscall {id}"
            );
        }
        // openat (257): three or four arguments, its name in the second.
        assert_eq!(t[257] & !shape::ARGC, shape::PATH | shape::PATH_ARG1);
        // getpid (39): nothing to record but the call.
        assert_eq!(t[39], 0);
    }

    #[test]
    fn timestamps_rebuild_around_the_reference_both_ways() {
        let r = 10_000_000_000u64;
        for t in [r, r + 1, r + (1 << 29) - 1, r - 1, r - (1 << 29)] {
            assert_eq!(rebuild_ts(r, t & ((1 << TS_BITS) - 1)), t, "{t}");
        }
    }

    #[test]
    fn records_round_trip_through_a_packet() {
        let lap = 3u64;
        let mut packet = vec![0u8; PACKET_SIZE];
        let number = (lap << 5) + 2;
        packet[..8].copy_from_slice(&(number + 1).to_le_bytes());
        packet[8..16].copy_from_slice(&1_000u64.to_le_bytes());
        let mut want = Vec::new();
        let mut e = rec(EventKind::SyscallEntry, 1_005);
        e.set_payload(SyscallEntry {
            id: 257,
            args: [1, 2, 3, 0, 0, 0],
        });
        want.push((e, false, 3));
        let mut x = rec(EventKind::SyscallExit, 1_010);
        x.set_payload(SyscallExit { id: 257, ret: -2 });
        want.push((x, false, 0));
        let mut x64 = rec(EventKind::SyscallExit, 1_011);
        x64.set_payload(SyscallExit {
            id: 9,
            ret: 0x7f00_0000_0000,
        });
        want.push((x64, false, 0));
        let mut big = rec(EventKind::SyscallEntry, 5_000_000_000);
        big.set_payload(SyscallEntry {
            id: 0x4000_0001,
            args: [9, 0, 0, 0, 0, 0],
        });
        want.push((big, true, 1));
        let mut sw = rec(EventKind::SchedSwitch, 5_000_000_100);
        sw.set_payload(SchedSwitch {
            next_tid: 9,
            prev_state: 1,
            prev_cgroup: 77,
            ..SchedSwitch::default()
        });
        want.push((sw, false, 0));
        let mut path = rec(EventKind::SyscallPath, 5_000_000_200);
        let mut p = SyscallPath {
            id: 257,
            ..SyscallPath::default()
        };
        p.path[..9].copy_from_slice(b"/etc/motd");
        path.set_payload(p);
        want.push((path, false, 0));
        let mut long = rec(EventKind::SyscallPath, 5_000_000_300);
        p.path = [b'a'; crate::SYSCALL_PATH_LEN];
        p.path[crate::SYSCALL_PATH_LEN - 1] = 0;
        long.set_payload(p);
        want.push((long, false, 0));
        let mut off = PACKET_HEADER_SIZE;
        let mut sizes = Vec::new();
        for (i, (r, full, argc)) in want.iter().enumerate() {
            // Every record but the first leaves its task out (all are of one task here).
            let b = encode_record(r, *full, i > 0, lap, *argc);
            sizes.push(b.len());
            packet[off..off + b.len()].copy_from_slice(&b);
            off += b.len();
        }
        // The first carries its task; the others are header (+ full timestamp) + body: an
        // exit 16 bytes, a 9-byte path 16 + 8, a 55-byte one the whole 56.
        assert_eq!(
            sizes,
            [8 + 8 + 24, 16, 16, 8 + 8 + 8 + 8, 8 + 64, 8 + 16, 8 + 56]
        );
        let used = off;
        fill_pad(&mut packet, off, lap);
        let mut got = Vec::new();
        let stop = walk_packet(&packet, number, lap, PACKET_SIZE, 1, |f| got.push(f.record));
        assert_eq!(stop, Some(Stop::End));
        assert_eq!(got.len(), want.len());
        for (g, (w, _, _)) in got.iter().zip(&want) {
            assert_eq!(
                (g.ts_ns, g.kind, g.tid, g.pid, g.cpu),
                (w.ts_ns, w.kind, 7, 5, 1)
            );
            assert_eq!(g.payload, w.payload, "{:?}", EventKind::from_u16(g.kind));
        }
        // A record of another lap where one was reserved: the walk stops there, never misreads.
        let stale = encode_record(&want[1].0, false, false, lap - 1, 0);
        let at = used - sizes[6] - sizes[5]; // the first path starts here
        let mut torn = packet.clone();
        torn[at..at + 8].copy_from_slice(&stale[..8]);
        let mut n = 0;
        assert_eq!(
            walk_packet(&torn, number, lap, PACKET_SIZE, 1, |_| n += 1),
            Some(Stop::Torn(at))
        );
        assert_eq!(n, want.len() - 2);
        // A record that leaves its task out as the first of its packet cannot be read.
        let mut orphan = vec![0u8; PACKET_SIZE];
        orphan[..16].copy_from_slice(&packet[..16]);
        let b = encode_record(&want[1].0, false, true, lap, 0);
        orphan[PACKET_HEADER_SIZE..PACKET_HEADER_SIZE + b.len()].copy_from_slice(&b);
        fill_pad(&mut orphan, PACKET_HEADER_SIZE + b.len(), lap);
        assert_eq!(
            walk_packet(&orphan, number, lap, PACKET_SIZE, 1, |_| ()),
            Some(Stop::Torn(PACKET_HEADER_SIZE))
        );
        assert_eq!(
            scan_packet(&orphan, number, lap, PACKET_SIZE, |_| ()),
            Some(Stop::Torn(PACKET_HEADER_SIZE))
        );
        // A packet header of another number: the packet is not this one.
        assert_eq!(
            walk_packet(&packet, number + 32, lap + 1, PACKET_SIZE, 1, |_| ()),
            None
        );
        // The writers' position ends the walk in the packet being filled.
        let mut m = 0;
        assert_eq!(
            walk_packet(&packet, number, lap, PACKET_HEADER_SIZE + 40, 1, |_| m += 1),
            Some(Stop::End)
        );
        assert_eq!(m, 1);
    }
}
