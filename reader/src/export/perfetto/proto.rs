//! The few pieces of the protobuf wire format the exporter needs, and the field numbers of the
//! Perfetto messages it writes (from `protos/perfetto/trace/**.proto` of the Perfetto project).
//!
//! Perfetto's trace protos are proto2: every scalar field has explicit presence, and repeated
//! scalars are *not* packed unless the proto says so (none of ours do). Trace processor decodes
//! unpacked repeated fields field by field, so they are written one tag per element.

/// A message being encoded: its bytes without its own tag and length.
#[derive(Clone, Debug, Default)]
pub struct Msg {
    buf: Vec<u8>,
}

const WIRE_VARINT: u32 = 0;
const WIRE_LEN: u32 = 2;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl Msg {
    /// An empty message.
    pub fn new() -> Msg {
        Msg::default()
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Forgets the content, keeping the allocation for the next message.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    fn tag(&mut self, field: u32, wire: u32) {
        put_varint(&mut self.buf, u64::from(field << 3 | wire));
    }

    /// A `uint32`, `uint64`, `bool` or enum field.
    pub fn uint(&mut self, field: u32, v: u64) -> &mut Self {
        self.tag(field, WIRE_VARINT);
        put_varint(&mut self.buf, v);
        self
    }

    /// An `int32` or `int64` field: negative values take ten bytes, sign-extended to 64 bits
    /// as the protobuf encoding requires for both widths.
    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.uint(field, v as u64)
    }

    /// A `bool` field.
    pub fn bool(&mut self, field: u32, v: bool) -> &mut Self {
        self.uint(field, u64::from(v))
    }

    /// A `bytes` field, or a message already encoded.
    pub fn bytes(&mut self, field: u32, v: &[u8]) -> &mut Self {
        self.tag(field, WIRE_LEN);
        put_varint(&mut self.buf, v.len() as u64);
        self.buf.extend_from_slice(v);
        self
    }

    /// A `string` field (always valid UTF-8, as `&str` is).
    pub fn string(&mut self, field: u32, v: &str) -> &mut Self {
        self.bytes(field, v.as_bytes())
    }

    /// A nested message field.
    pub fn message(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.buf)
    }
}

/// The tag and length of a length-delimited `field` of `len` bytes, for a message whose bytes
/// are written separately.
pub fn field_header(field: u32, len: usize) -> Msg {
    let mut m = Msg::new();
    m.tag(field, WIRE_LEN);
    put_varint(&mut m.buf, len as u64);
    m
}

/// `perfetto.protos.Trace`.
pub mod trace {
    /// `repeated TracePacket packet`.
    pub const PACKET: u32 = 1;
}

/// `perfetto.protos.TracePacket`.
pub mod packet {
    /// `FtraceEventBundle ftrace_events`.
    pub const FTRACE_EVENTS: u32 = 1;
    /// `ProcessTree process_tree`.
    pub const PROCESS_TREE: u32 = 2;
    /// `ClockSnapshot clock_snapshot`.
    pub const CLOCK_SNAPSHOT: u32 = 6;
    /// `uint64 timestamp`.
    pub const TIMESTAMP: u32 = 8;
    /// `uint32 trusted_packet_sequence_id`.
    pub const TRUSTED_PACKET_SEQUENCE_ID: u32 = 10;
    /// `uint32 sequence_flags`.
    pub const SEQUENCE_FLAGS: u32 = 13;
    /// `SystemInfo system_info`.
    pub const SYSTEM_INFO: u32 = 45;
    /// `bool first_packet_on_sequence`.
    pub const FIRST_PACKET_ON_SEQUENCE: u32 = 87;
    /// `TraceUuid trace_uuid`.
    pub const TRACE_UUID: u32 = 89;
    /// `SequenceFlags.SEQ_INCREMENTAL_STATE_CLEARED`.
    pub const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
}

/// `perfetto.protos.ClockSnapshot` and its `Clock`.
pub mod clock {
    /// `repeated Clock clocks`.
    pub const CLOCKS: u32 = 1;
    /// `BuiltinClock primary_trace_clock`.
    pub const PRIMARY_TRACE_CLOCK: u32 = 2;
    /// `Clock.clock_id`.
    pub const CLOCK_ID: u32 = 1;
    /// `Clock.timestamp`.
    pub const TIMESTAMP: u32 = 2;
    /// `BUILTIN_CLOCK_REALTIME`.
    pub const REALTIME: u64 = 1;
    /// `BUILTIN_CLOCK_MONOTONIC`.
    pub const MONOTONIC: u64 = 3;
    /// `BUILTIN_CLOCK_BOOTTIME`.
    pub const BOOTTIME: u64 = 6;
}

/// `perfetto.protos.SystemInfo` and `Utsname`.
pub mod system_info {
    /// `Utsname utsname`.
    pub const UTSNAME: u32 = 1;
    /// `uint32 num_cpus`.
    pub const NUM_CPUS: u32 = 8;
    /// `Utsname.sysname`.
    pub const SYSNAME: u32 = 1;
    /// `Utsname.version`.
    pub const VERSION: u32 = 2;
    /// `Utsname.release`.
    pub const RELEASE: u32 = 3;
    /// `Utsname.machine`.
    pub const MACHINE: u32 = 4;
}

/// `perfetto.protos.TraceUuid`.
pub mod uuid {
    /// `int64 msb`.
    pub const MSB: u32 = 1;
    /// `int64 lsb`.
    pub const LSB: u32 = 2;
}

/// `perfetto.protos.ProcessTree` with its `Process` and `Thread`.
pub mod process_tree {
    /// `repeated Process processes`.
    pub const PROCESSES: u32 = 1;
    /// `repeated Thread threads`.
    pub const THREADS: u32 = 2;
    /// `Process.pid`.
    pub const PROCESS_PID: u32 = 1;
    /// `Process.ppid`.
    pub const PROCESS_PPID: u32 = 2;
    /// `Process.cmdline` (repeated: argv).
    pub const PROCESS_CMDLINE: u32 = 3;
    /// `Process.cmdline_is_comm`.
    pub const PROCESS_CMDLINE_IS_COMM: u32 = 9;
    /// `Thread.tid`.
    pub const THREAD_TID: u32 = 1;
    /// `Thread.name`.
    pub const THREAD_NAME: u32 = 2;
    /// `Thread.tgid`.
    pub const THREAD_TGID: u32 = 3;
}

/// `perfetto.protos.FtraceEventBundle`.
pub mod bundle {
    /// `uint32 cpu`.
    pub const CPU: u32 = 1;
    /// `repeated FtraceEvent event`.
    pub const EVENT: u32 = 2;
}

/// `perfetto.protos.FtraceEvent`: the common fields and the `event` oneof's members we write.
pub mod ftrace {
    /// `uint64 timestamp`.
    pub const TIMESTAMP: u32 = 1;
    /// `uint32 pid`: the thread id of the current task.
    pub const PID: u32 = 2;
    /// `SchedSwitchFtraceEvent sched_switch`.
    pub const SCHED_SWITCH: u32 = 4;
    /// `SchedWakingFtraceEvent sched_waking`.
    pub const SCHED_WAKING: u32 = 20;
    /// `SoftirqEntryFtraceEvent softirq_entry`.
    pub const SOFTIRQ_ENTRY: u32 = 24;
    /// `SoftirqExitFtraceEvent softirq_exit`.
    pub const SOFTIRQ_EXIT: u32 = 25;
    /// `IrqHandlerEntryFtraceEvent irq_handler_entry`.
    pub const IRQ_HANDLER_ENTRY: u32 = 36;
    /// `IrqHandlerExitFtraceEvent irq_handler_exit`.
    pub const IRQ_HANDLER_EXIT: u32 = 37;
    /// `BlockRqIssueFtraceEvent block_rq_issue`.
    pub const BLOCK_RQ_ISSUE: u32 = 45;
    /// `SchedWakeupNewFtraceEvent sched_wakeup_new`.
    pub const SCHED_WAKEUP_NEW: u32 = 114;
    /// `BlockRqCompleteFtraceEvent block_rq_complete`.
    pub const BLOCK_RQ_COMPLETE: u32 = 125;
    /// `SchedProcessExecFtraceEvent sched_process_exec`.
    pub const SCHED_PROCESS_EXEC: u32 = 237;
    /// `SchedProcessExitFtraceEvent sched_process_exit`.
    pub const SCHED_PROCESS_EXIT: u32 = 238;
    /// `SchedProcessForkFtraceEvent sched_process_fork`.
    pub const SCHED_PROCESS_FORK: u32 = 239;
    /// `SysEnterFtraceEvent sys_enter`.
    pub const SYS_ENTER: u32 = 329;
    /// `SysExitFtraceEvent sys_exit`.
    pub const SYS_EXIT: u32 = 330;
}

/// Field numbers inside the typed ftrace event messages, one module per message.
pub mod fields {
    /// `SchedSwitchFtraceEvent`.
    pub mod sched_switch {
        /// `string prev_comm`.
        pub const PREV_COMM: u32 = 1;
        /// `int32 prev_pid`.
        pub const PREV_PID: u32 = 2;
        /// `int32 prev_prio`.
        pub const PREV_PRIO: u32 = 3;
        /// `int64 prev_state`.
        pub const PREV_STATE: u32 = 4;
        /// `string next_comm`.
        pub const NEXT_COMM: u32 = 5;
        /// `int32 next_pid`.
        pub const NEXT_PID: u32 = 6;
        /// `int32 next_prio`.
        pub const NEXT_PRIO: u32 = 7;
    }
    /// `SchedWakingFtraceEvent` and `SchedWakeupNewFtraceEvent` (same layout).
    pub mod wakeup {
        /// `string comm`.
        pub const COMM: u32 = 1;
        /// `int32 pid`: thread id of the woken task.
        pub const PID: u32 = 2;
        /// `int32 prio`.
        pub const PRIO: u32 = 3;
        /// `int32 target_cpu`.
        pub const TARGET_CPU: u32 = 5;
    }
    /// `SchedProcessForkFtraceEvent`.
    pub mod fork {
        /// `string parent_comm`.
        pub const PARENT_COMM: u32 = 1;
        /// `int32 parent_pid` (a thread id).
        pub const PARENT_PID: u32 = 2;
        /// `string child_comm`.
        pub const CHILD_COMM: u32 = 3;
        /// `int32 child_pid` (a thread id).
        pub const CHILD_PID: u32 = 4;
    }
    /// `SchedProcessExecFtraceEvent`.
    pub mod exec {
        /// `string filename`.
        pub const FILENAME: u32 = 1;
        /// `int32 pid`.
        pub const PID: u32 = 2;
        /// `int32 old_pid`.
        pub const OLD_PID: u32 = 3;
    }
    /// `SchedProcessExitFtraceEvent`.
    pub mod exit {
        /// `string comm`.
        pub const COMM: u32 = 1;
        /// `int32 pid` (a thread id).
        pub const PID: u32 = 2;
        /// `int32 tgid`.
        pub const TGID: u32 = 3;
        /// `int32 prio`.
        pub const PRIO: u32 = 4;
    }
    /// `SysEnterFtraceEvent` and `SysExitFtraceEvent`.
    pub mod sys {
        /// `int64 id`.
        pub const ID: u32 = 1;
        /// `repeated uint64 args` (enter).
        pub const ARGS: u32 = 2;
        /// `int64 ret` (exit).
        pub const RET: u32 = 2;
    }
    /// `IrqHandlerEntryFtraceEvent` and `IrqHandlerExitFtraceEvent`.
    pub mod irq {
        /// `int32 irq`.
        pub const IRQ: u32 = 1;
        /// `string name` (entry).
        pub const NAME: u32 = 2;
        /// `int32 ret` (exit).
        pub const RET: u32 = 2;
    }
    /// `SoftirqEntryFtraceEvent` and `SoftirqExitFtraceEvent`.
    pub mod softirq {
        /// `uint32 vec`.
        pub const VEC: u32 = 1;
    }
    /// `BlockRqIssueFtraceEvent` and `BlockRqCompleteFtraceEvent`.
    pub mod block {
        /// `uint64 dev`.
        pub const DEV: u32 = 1;
        /// `uint64 sector`.
        pub const SECTOR: u32 = 2;
        /// `uint32 nr_sector`.
        pub const NR_SECTOR: u32 = 3;
        /// `uint32 bytes` (issue).
        pub const BYTES: u32 = 4;
        /// `string rwbs`.
        pub const RWBS: u32 = 5;
        /// `string comm` (issue).
        pub const COMM: u32 = 6;
        /// `int32 error` (complete).
        pub const ERROR: u32 = 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_bytes_table() {
        // Expected bytes worked out by hand from the protobuf encoding rules.
        let enc = |f: fn(&mut Msg) -> &mut Msg| f(&mut Msg::new()).as_bytes().to_vec();
        let cases: [(Vec<u8>, &[u8]); 7] = [
            (enc(|m| m.uint(1, 0)), &[0x08, 0x00]),
            (enc(|m| m.uint(1, 150)), &[0x08, 0x96, 0x01]),
            (enc(|m| m.uint(16, 1)), &[0x80, 0x01, 0x01]),
            (
                enc(|m| m.int(2, -1)),
                &[
                    0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
            ),
            (enc(|m| m.string(2, "ab")), &[0x12, 0x02, b'a', b'b']),
            (enc(|m| m.bool(87, true)), &[0xb8, 0x05, 0x01]),
            (enc(|m| m.uint(329, 3)), &[0xc8, 0x14, 0x03]),
        ];
        for (i, (got, want)) in cases.iter().enumerate() {
            assert_eq!(got.as_slice(), *want, "case {i}");
        }
        let mut inner = Msg::new();
        inner.uint(1, 5);
        let mut outer = Msg::new();
        outer.message(3, &inner);
        assert_eq!(outer.as_bytes(), &[0x1a, 0x02, 0x08, 0x05]);
    }
}
