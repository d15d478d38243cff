//! The one definition of every type that crosses the kernel↔user boundary, and (with the `std`
//! feature) the only reader and writer of snapshot files.
//!
//! The eBPF programs in `recorder-ebpf` and the recorder in userspace both use [`Record`],
//! [`CpuHead`] and the payload structs below, so a layout can never drift between the two. All
//! structs are `#[repr(C)]` with explicit padding and sizes pinned by `const` asserts; integers are
//! little-endian (the BPF target is `bpfel`).
#![cfg_attr(not(feature = "std"), no_std)]

#[cfg(feature = "std")]
pub mod clock;
pub mod compact;

/// `e` and every cause under it on one line, each layer saying what it was doing
/// (`writing snapshot /x: No space left on device`): for answers and logs that are one line.
#[cfg(feature = "std")]
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
}
#[cfg(feature = "std")]
pub mod config;
#[cfg(feature = "std")]
pub mod event;
#[cfg(feature = "std")]
pub mod file;
pub mod hist;
#[cfg(feature = "std")]
pub mod manifest;
#[cfg(feature = "std")]
pub mod units;
#[cfg(feature = "std")]
pub mod wire;

/// Size of one ring slot in bytes.
pub const RECORD_SIZE: usize = 96;
/// Size of the type-specific part of a record.
pub const PAYLOAD_SIZE: usize = 64;
/// Length of a kernel task comm (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Version of the in-kernel ring layout (maps, records, control words). Pinned state with another
/// version is discarded at start-up rather than misread.
pub const RING_LAYOUT_VERSION: u64 = 7;

/// One event as written by the eBPF programs into a ring slot, and as stored in snapshot files.
///
/// `seq` is the seqlock word: `0` while the slot is being written, `index + 1` once published,
/// where `index` is the slot's position in its (epoch, cpu) ring counted from the ring's creation.
/// A reader accepts a slot only if `seq` equals the index it expects.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Publication word (see the type's documentation).
    pub seq: u64,
    /// `CLOCK_MONOTONIC` time of the event in nanoseconds.
    pub ts_ns: u64,
    /// Thread group id (userspace "pid") of the task current when the event fired.
    pub pid: u32,
    /// Thread id of the task current when the event fired.
    pub tid: u32,
    /// An [`EventKind`] value.
    pub kind: u16,
    /// Reserved, zero.
    pub flags: u16,
    /// CPU the event was recorded on.
    pub cpu: u32,
    /// Type-specific fields: one of the payload structs below, selected by `kind`.
    pub payload: [u64; PAYLOAD_SIZE / 8],
}
const _: () = assert!(core::mem::size_of::<Record>() == RECORD_SIZE);

impl Record {
    /// An all-zero record.
    pub const ZERO: Record = Record {
        seq: 0,
        ts_ns: 0,
        pid: 0,
        tid: 0,
        kind: 0,
        flags: 0,
        cpu: 0,
        payload: [0; PAYLOAD_SIZE / 8],
    };

    /// The record's bytes in file order.
    pub fn as_bytes(&self) -> &[u8; RECORD_SIZE] {
        // SAFETY: Record is repr(C), has no padding (size asserted) and only integer fields.
        unsafe { &*(self as *const Record as *const [u8; RECORD_SIZE]) }
    }

    /// Rebuilds a record from its bytes. Any byte pattern is a valid `Record`.
    pub fn from_bytes(bytes: &[u8; RECORD_SIZE]) -> Record {
        // SAFETY: every bit pattern is a valid Record; read_unaligned handles alignment.
        unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const Record) }
    }

    /// Reads the payload as `T`. `T` must be one of the payload structs of this crate.
    pub fn payload<T: Payload>(&self) -> T {
        // SAFETY: Payload types are plain integer structs no larger than the payload area.
        unsafe { core::ptr::read_unaligned(self.payload.as_ptr() as *const T) }
    }

    /// Stores `value` as the payload.
    pub fn set_payload<T: Payload>(&mut self, value: T) {
        // SAFETY: as in `payload`.
        unsafe { core::ptr::write_unaligned(self.payload.as_mut_ptr() as *mut T, value) }
    }
}

/// Marker for the structs that fit in [`Record::payload`].
///
/// # Safety
/// Implementors are `repr(C)`, contain only integers and arrays of integers, and are at most
/// [`PAYLOAD_SIZE`] bytes.
pub unsafe trait Payload: Copy {}

macro_rules! payloads {
    ($($t:ty),* $(,)?) => {$(
        const _: () = assert!(core::mem::size_of::<$t>() <= PAYLOAD_SIZE);
        // SAFETY: checked by the size assert above; the struct is repr(C) of integers.
        unsafe impl Payload for $t {}
    )*};
}

/// Event kinds. Values are stored in [`Record::kind`] and never reused.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// `raw_syscalls:sys_enter` — payload [`SyscallEntry`].
    SyscallEntry = 1,
    /// `raw_syscalls:sys_exit` — payload [`SyscallExit`].
    SyscallExit = 2,
    /// `sched:sched_switch` — payload [`SchedSwitch`].
    SchedSwitch = 3,
    /// `sched:sched_wakeup` — payload [`SchedWakeup`].
    SchedWakeup = 4,
    /// `sched:sched_wakeup_new` — payload [`SchedWakeup`].
    SchedWakeupNew = 5,
    /// `sched:sched_process_fork` — payload [`ProcessFork`].
    ProcessFork = 6,
    /// `sched:sched_process_exec` — payload [`ProcessExec`].
    ProcessExec = 7,
    /// `sched:sched_process_exit` — payload [`ProcessExit`].
    ProcessExit = 8,
    /// `block:block_rq_issue` — payload [`BlockRq`].
    BlockRqIssue = 9,
    /// `block:block_rq_complete` — payload [`BlockRq`].
    BlockRqComplete = 10,
    /// `irq:irq_handler_entry` — payload [`IrqHandlerEntry`].
    IrqHandlerEntry = 11,
    /// `irq:irq_handler_exit` — payload [`IrqHandlerExit`].
    IrqHandlerExit = 12,
    /// `irq:softirq_entry` — payload [`Softirq`].
    SoftirqEntry = 13,
    /// `irq:softirq_exit` — payload [`Softirq`].
    SoftirqExit = 14,
    /// The path argument of an `open`, `openat`, `openat2` or `creat` call — payload
    /// [`SyscallPath`]. Written by the `sys_enter` program just before the call's
    /// [`EventKind::SyscallEntry`], on the same CPU with the same timestamp, so a reader that
    /// keeps the last path per thread hands it to the entry that follows.
    SyscallPath = 15,
}

impl EventKind {
    /// Every kind, in value order.
    pub const ALL: [EventKind; 15] = [
        EventKind::SyscallEntry,
        EventKind::SyscallExit,
        EventKind::SchedSwitch,
        EventKind::SchedWakeup,
        EventKind::SchedWakeupNew,
        EventKind::ProcessFork,
        EventKind::ProcessExec,
        EventKind::ProcessExit,
        EventKind::BlockRqIssue,
        EventKind::BlockRqComplete,
        EventKind::IrqHandlerEntry,
        EventKind::IrqHandlerExit,
        EventKind::SoftirqEntry,
        EventKind::SoftirqExit,
        EventKind::SyscallPath,
    ];

    /// The kind stored as `value`, if any.
    pub fn from_u16(value: u16) -> Option<EventKind> {
        match value {
            1..=15 => Some(Self::ALL[value as usize - 1]),
            _ => None,
        }
    }

    /// The class that enables this kind.
    pub fn class(self) -> EventClass {
        use EventKind::*;
        match self {
            SyscallEntry | SyscallExit | SyscallPath => EventClass::Syscalls,
            SchedSwitch | SchedWakeup | SchedWakeupNew => EventClass::Sched,
            ProcessFork | ProcessExec | ProcessExit => EventClass::Process,
            BlockRqIssue | BlockRqComplete => EventClass::Block,
            IrqHandlerEntry | IrqHandlerExit | SoftirqEntry | SoftirqExit => EventClass::Irq,
        }
    }
}

/// Groups of events switched on and off together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventClass {
    /// `raw_syscalls` enter and exit.
    Syscalls,
    /// `sched_switch`, `sched_wakeup`, `sched_wakeup_new`.
    Sched,
    /// `sched_process_fork/exec/exit`.
    Process,
    /// `block_rq_issue/complete`.
    Block,
    /// `irq_handler_entry/exit`, `softirq_entry/exit`.
    Irq,
}

/// `raw_syscalls:sys_enter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallEntry {
    /// Syscall number (x86-64 table).
    pub id: u64,
    /// The six argument registers, in ABI order.
    pub args: [u64; 6],
}

/// `raw_syscalls:sys_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallExit {
    /// Syscall number (x86-64 table).
    pub id: u64,
    /// Return value.
    pub ret: i64,
}

/// Bytes of a path argument kept in a [`SyscallPath`] record, its NUL included; longer paths
/// are cut and flagged with [`record_flags::PATH_CUT`].
pub const SYSCALL_PATH_LEN: usize = 56;

/// Bits of [`Record::flags`].
pub mod record_flags {
    /// A [`crate::SyscallPath`] record whose path did not fit and was cut.
    pub const PATH_CUT: u16 = 1;
}

/// The path argument of a file-opening syscall ([`EventKind::SyscallPath`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallPath {
    /// Syscall number (x86-64 table) of the entry this path belongs to.
    pub id: u64,
    /// NUL-padded path as the caller passed it (relative paths stay relative).
    pub path: [u8; SYSCALL_PATH_LEN],
}

impl Default for SyscallPath {
    fn default() -> Self {
        SyscallPath {
            id: 0,
            path: [0; SYSCALL_PATH_LEN],
        }
    }
}

/// x86-64 numbers of the syscalls whose path argument is recorded, with the argument's index.
pub const PATH_SYSCALLS: [(u64, usize); 4] = [(2, 0), (85, 0), (257, 1), (437, 1)];

/// `sched:sched_switch`. The previous task is the record's `pid`/`tid`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedSwitch {
    /// Comm of the task leaving the CPU.
    pub prev_comm: [u8; COMM_LEN],
    /// Comm of the task taking the CPU.
    pub next_comm: [u8; COMM_LEN],
    /// Thread id of the task taking the CPU.
    pub next_tid: u32,
    /// Thread group id of the task taking the CPU.
    pub next_pid: u32,
    /// Priority of the task leaving the CPU (kernel `prio`).
    pub prev_prio: i32,
    /// Priority of the task taking the CPU.
    pub next_prio: i32,
    /// State of the task leaving the CPU (`TASK_*` bits; 0 = runnable, i.e. preempted).
    pub prev_state: u64,
    /// cgroup v2 id of the task leaving the CPU, so time on CPU is charged to the right group
    /// even when the task is gone before the snapshot's statedump (0 in older files: unknown).
    pub prev_cgroup: u64,
}

/// `sched:sched_wakeup` and `sched:sched_wakeup_new`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedWakeup {
    /// Comm of the woken task.
    pub comm: [u8; COMM_LEN],
    /// Thread id of the woken task.
    pub tid: u32,
    /// Thread group id of the woken task.
    pub pid: u32,
    /// Priority of the woken task.
    pub prio: i32,
    /// CPU the task will run on.
    pub target_cpu: u32,
}

/// `sched:sched_process_fork`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessFork {
    /// Comm of the parent.
    pub parent_comm: [u8; COMM_LEN],
    /// Comm of the child.
    pub child_comm: [u8; COMM_LEN],
    /// Thread id of the parent.
    pub parent_tid: u32,
    /// Thread group id of the parent.
    pub parent_pid: u32,
    /// Thread id of the child.
    pub child_tid: u32,
    /// Thread group id of the child (equals `parent_pid` for a new thread).
    pub child_pid: u32,
    /// cgroup v2 id of the parent, which the child starts in (0 in older files: unknown).
    pub cgroup: u64,
}

/// Bytes of the exec'd file name kept in a record; longer names are cut.
pub const EXEC_FILENAME_LEN: usize = 56;

/// `sched:sched_process_exec`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessExec {
    /// Thread id after exec.
    pub tid: u32,
    /// Thread id before exec (differs when a non-leader thread execs).
    pub old_tid: u32,
    /// NUL-padded file name passed to exec.
    pub filename: [u8; EXEC_FILENAME_LEN],
}

impl Default for ProcessExec {
    fn default() -> Self {
        ProcessExec {
            tid: 0,
            old_tid: 0,
            filename: [0; EXEC_FILENAME_LEN],
        }
    }
}

/// `sched:sched_process_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessExit {
    /// Comm of the exiting task.
    pub comm: [u8; COMM_LEN],
    /// Thread id of the exiting task.
    pub tid: u32,
    /// Thread group id of the exiting task.
    pub pid: u32,
    /// Priority of the exiting task.
    pub prio: i32,
    /// Reserved, zero.
    pub _pad: u32,
    /// cgroup v2 id of the exiting task (0 in older files: unknown).
    pub cgroup: u64,
}

/// Bits of [`BlockRq::rwbs_flags`], normalised from the kernel's `req_flag_bits` (whose positions
/// change between kernel versions) at record time.
pub mod rwbs {
    /// `REQ_PREFLUSH`.
    pub const PREFLUSH: u32 = 1;
    /// `REQ_FUA`.
    pub const FUA: u32 = 2;
    /// `REQ_RAHEAD`.
    pub const RAHEAD: u32 = 4;
    /// `REQ_SYNC`.
    pub const SYNC: u32 = 8;
    /// `REQ_META`.
    pub const META: u32 = 16;
}

/// `block:block_rq_issue` and `block:block_rq_complete`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockRq {
    /// Start sector.
    pub sector: u64,
    /// Device number in the kernel's encoding (`major << 20 | minor`).
    pub dev: u32,
    /// Number of 512-byte sectors.
    pub nr_sector: u32,
    /// Bytes of the request (issue) or bytes completed (complete).
    pub bytes: u32,
    /// `REQ_OP_*` value (`cmd_flags & REQ_OP_MASK`).
    pub op: u32,
    /// [`rwbs`] bits.
    pub rwbs_flags: u32,
    /// Completion status as a negative errno (complete only; 0 on issue).
    pub error: i32,
    /// Comm of the task current when the event fired.
    pub comm: [u8; COMM_LEN],
}

/// Bytes of an irq handler name kept in a record.
pub const IRQ_NAME_LEN: usize = 32;

/// `irq:irq_handler_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqHandlerEntry {
    /// Interrupt number.
    pub irq: u32,
    /// Reserved, zero.
    pub _pad: u32,
    /// NUL-padded handler name (`irqaction->name`).
    pub name: [u8; IRQ_NAME_LEN],
}

/// `irq:irq_handler_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqHandlerExit {
    /// Interrupt number.
    pub irq: u32,
    /// Handler return value (`IRQ_NONE` 0, `IRQ_HANDLED` 1, `IRQ_WAKE_THREAD` 2).
    pub ret: i32,
}

/// `irq:softirq_entry` and `irq:softirq_exit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Softirq {
    /// Softirq vector number.
    pub vec: u32,
    /// Reserved, zero.
    pub _pad: u32,
}

payloads!(
    SyscallEntry,
    SyscallExit,
    SchedSwitch,
    SchedWakeup,
    ProcessFork,
    ProcessExec,
    ProcessExit,
    BlockRq,
    IrqHandlerEntry,
    IrqHandlerExit,
    Softirq,
    SyscallPath,
);

/// Per-(area, CPU) ring control block, two cache lines so CPUs never share one. The area is the
/// main ring (0) or the spill (1) writers use while the main ring is frozen
/// (docs/recorder.md, "Ring format").
///
/// The programs write the first five words, all in the first cache line, so that a record
/// touches one line of its CPU's head; the recorder writes the rest, in the second.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuHead {
    /// Byte position of the next reservation, counted from the ring's creation (compare-and-swap
    /// by the writers; `head >> PACKET_SHIFT` is the absolute packet number).
    pub head: u64,
    /// Records written since creation. A plain add: a program nested inside another on the same
    /// CPU (an irq inside a syscall program) can make it miss one now and then.
    pub written: u64,
    /// `CLOCK_MONOTONIC` ns of the last full timestamp written on this CPU
    /// ([`compact::FULL_TS_EVERY_NS`]).
    pub hint: u64,
    /// The task (`bpf_get_current_pid_tgid`) of the last record reserved on this CPU, stored
    /// before `last_end` (see `compact`, "Leaving out the task").
    pub last_task: u64,
    /// Byte position where the last record reserved on this CPU ends.
    pub last_end: u64,
    /// Reserved, zero.
    pub _pad: [u64; 3],
    /// Byte position where the current window of this ring starts.
    pub base: u64,
    /// `written` when the window started.
    pub base_written: u64,
    /// Records the recorder moved into this ring from the spill (main ring only).
    pub folded: u64,
    /// `folded` when the window started.
    pub base_folded: u64,
    /// Records lost because the spill wrapped before they could be folded.
    pub fold_lost: u64,
    /// `fold_lost` when the window started.
    pub base_fold_lost: u64,
    /// Reserved, zero.
    pub _pad2: [u64; 2],
}
const _: () = assert!(core::mem::size_of::<CpuHead>() == 128);

/// Indexes into the `CTRL` control array (u64 words).
pub mod ctrl {
    /// Area writers record into: 0, the main ring; 1, the spill, while the main ring is frozen
    /// and copied out.
    pub const EPOCH: u32 = 0;
    /// Number of flips so far (informational).
    pub const FLIPS: u32 = 1;
    /// Who may flip the epoch now: [`freeze_lock::FREE`], [`freeze_lock::USER`] (userspace is
    /// freezing or copying, or holds the rings for a post-trigger window) or
    /// [`freeze_lock::KERNEL`] (a kernel rule froze the rings and userspace has not copied them
    /// yet). Taken with a compare-and-swap from `FREE` by either side.
    pub const FREEZE_LOCK: u32 = 2;
    /// `CLOCK_MONOTONIC` ns of the last kernel freeze.
    pub const KFREEZE_TS: u32 = 3;
    /// Area the last kernel freeze froze (always the main ring, 0).
    pub const KFREEZE_EPOCH: u32 = 4;
    /// Number of words in the control array.
    pub const LEN: u32 = 8;
}

/// Values of `CTRL[FREEZE_LOCK]`.
pub mod freeze_lock {
    /// Nobody is freezing: a kernel rule may freeze.
    pub const FREE: u64 = 0;
    /// Userspace is freezing or copying, or holds off kernel freezes for a post window.
    pub const USER: u64 = 1;
    /// A kernel rule froze the rings; userspace copies them out, then frees the lock.
    pub const KERNEL: u64 = 2;
}

/// Kernel latency rules: kinds, match flags and table size shared by the programs and the loader.
pub mod rule {
    /// Entries in the `RULES` table.
    pub const MAX_RULES: u32 = 8;
    /// Syscall latency, sys_enter to sys_exit (`RuleSpec::key` = syscall number).
    pub const SYSCALL: u32 = 1;
    /// Block request latency, issue to complete (`key` = device, when `MATCH_KEY`).
    pub const BLOCK: u32 = 2;
    /// Run-queue wait, wakeup or preemption to sched_switch in.
    pub const RUNQUEUE: u32 = 4;
    /// Hard irq handler duration (`key` = irq number, when `MATCH_KEY`).
    pub const IRQ: u32 = 8;
    /// `RuleSpec::key` must equal the event's key.
    pub const MATCH_KEY: u32 = 1;
    /// `RuleSpec::pid` must equal the task's tgid.
    pub const MATCH_PID: u32 = 2;
    /// `RuleSpec::comm` must equal the task's comm.
    pub const MATCH_COMM: u32 = 4;
    /// `RuleSpec::cgroup` must equal the measured task's cgroup v2 id (for run-queue rules, the
    /// task that got the CPU, read through `schemas::hist::CgroupOffsets`).
    pub const MATCH_CGROUP: u32 = 8;
    /// Freeze the epoch in the program that matched (no post window).
    pub const FREEZE: u32 = 16;
    /// Syscall numbers below this can carry rules (size of the `SYSCALL_RULED` bitmap).
    pub const MAX_SYSCALL: u32 = 512;
}

/// One kernel latency rule, as the loader writes it into the `RULES` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleSpec {
    /// One of the [`rule`] kinds; 0 marks an empty entry.
    pub kind: u32,
    /// [`rule`] `MATCH_*` and `FREEZE` bits.
    pub flags: u32,
    /// Fires at or above this latency, ns.
    pub threshold_ns: u64,
    /// Least time between two firings, ns (the kernel-side flood guard).
    pub min_interval_ns: u64,
    /// Syscall number, device (`major << 20 | minor`) or irq number.
    pub key: u64,
    /// cgroup v2 id to match.
    pub cgroup: u64,
    /// Process id (tgid) to match.
    pub pid: u32,
    /// Reserved, zero.
    pub _pad: u32,
    /// Comm to match, NUL-padded, as two words so the program compares it in two loads.
    pub comm: [u64; 2],
}
const _: () = assert!(core::mem::size_of::<RuleSpec>() == 64);

/// What a program sends through the `RULE_HITS` ring buffer when a rule fires.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleHit {
    /// `CLOCK_MONOTONIC` ns of the event that completed the measurement.
    pub ts_ns: u64,
    /// When the measured interval started (entry, issue, wakeup), ns.
    pub start_ns: u64,
    /// `ts_ns - start_ns`.
    pub latency_ns: u64,
    /// Syscall number, device or irq number (0 for run-queue rules).
    pub key: u64,
    /// Syscall return value, or the block request's sector.
    pub aux: u64,
    /// Index of the rule in the table.
    pub rule: u32,
    /// CPU the event was recorded on.
    pub cpu: u32,
    /// Process id (tgid) of the task measured.
    pub pid: u32,
    /// Thread id of the task measured.
    pub tid: u32,
    /// 1 when the program froze the epoch itself.
    pub frozen: u32,
    /// The epoch it froze (when `frozen`).
    pub epoch: u32,
    /// Comm of the task measured (empty for block and irq rules).
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<RuleHit>() == 80);

/// Indexes into the `META` array (u64 words) that describes pinned state, so a restarted
/// recorder can tell whether it may adopt it.
pub mod meta {
    /// [`crate::RING_LAYOUT_VERSION`] of the state.
    pub const LAYOUT: u32 = 0;
    /// Number of CPUs the rings were sized for.
    pub const NCPU: u32 = 1;
    /// Packets per CPU of the main ring.
    pub const SLOTS: u32 = 2;
    /// Hash of the recording configuration (classes, filters).
    pub const CONFIG_HASH: u32 = 3;
    /// `CLOCK_REALTIME` nanoseconds at creation.
    pub const CREATED_NS: u32 = 4;
    /// Marker written last at creation: state without it was left half-built.
    pub const COMPLETE: u32 = 5;
    /// Number of words in the meta array.
    pub const LEN: u32 = 8;
    /// Value of the `COMPLETE` word of finished state.
    pub const COMPLETE_MAGIC: u64 = 0x666c_6967_6874_7263; // "flightrc"
}

/// Bits of the `FILTER_MODE` global: which filters are active.
pub mod filter {
    /// Only tasks whose tgid is in the pid map are recorded.
    pub const PID: u32 = 1;
    /// Only tasks whose comm is in the comm map are recorded.
    pub const COMM: u32 = 2;
    /// Only tasks whose cgroup v2 id is in the cgroup map are recorded.
    pub const CGROUP: u32 = 4;
    /// Children forked by a matching task are added to the pid map.
    pub const FOLLOW_CHILDREN: u32 = 8;
}

/// Bits of the event classes a recorder records (`RECORD_CLASSES` of the programs).
pub mod classes {
    /// `syscalls`.
    pub const SYSCALLS: u32 = 1;
    /// `sched`.
    pub const SCHED: u32 = 2;
    /// `process`.
    pub const PROCESS: u32 = 4;
    /// `block`.
    pub const BLOCK: u32 = 8;
    /// `irq`.
    pub const IRQ: u32 = 16;
    /// The classes with a program that can run in interrupt context (hard or soft), so
    /// interrupt a program of ours on its CPU: wakeups, block completions (and issues from
    /// a completion), irq and softirq handlers. Without them no program of ours nests in
    /// another on a CPU, and the rings are reserved without a locked instruction.
    pub const NESTING: u32 = SCHED | BLOCK | IRQ;

    /// The bit of a class by its configuration name.
    pub fn of(name: &str) -> u32 {
        match name {
            "syscalls" => SYSCALLS,
            "sched" => SCHED,
            "process" => PROCESS,
            "block" => BLOCK,
            "irq" => IRQ,
            _ => 0,
        }
    }
}

/// What the syscall programs do, set at load time: record (always, outside benchmarks), or one
/// of the two floors `bench/syscall_overhead.sh` measures recording against.
pub mod floor {
    /// Record events (the default).
    pub const RECORD: u32 = 0;
    /// Return at once: the cost of the attach points themselves.
    pub const EMPTY: u32 = 1;
    /// Read the clock once and return: the least a timestamped recorder can do.
    pub const CLOCK: u32 = 2;
}

/// Kernel structure offsets resolved from the running kernel's BTF at load time and handed to the
/// eBPF programs, so the object never bakes in one kernel's layout. `u32::MAX` marks "absent".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.pid`.
    pub task_pid: u32,
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.comm`.
    pub task_comm: u32,
    /// `task_struct.prio`.
    pub task_prio: u32,
    /// CPU of a task: `task_struct.thread_info.cpu` or `task_struct.cpu`.
    pub task_cpu: u32,
    /// `pt_regs` offset of the syscall number (`orig_ax`).
    pub regs_orig_ax: u32,
    /// `pt_regs` offset of the lowest of the six argument registers.
    pub regs_args_base: u32,
    /// Offsets of the six argument registers relative to `regs_args_base`, each < 64.
    pub regs_args_rel: [u32; 6],
    /// `irqaction.name`.
    pub irqaction_name: u32,
    /// `linux_binprm.filename`.
    pub binprm_filename: u32,
    /// `request.q`.
    pub rq_q: u32,
    /// `request.cmd_flags`.
    pub rq_cmd_flags: u32,
    /// `request.__sector`.
    pub rq_sector: u32,
    /// `request.__data_len`.
    pub rq_data_len: u32,
    /// `request_queue.disk`.
    pub queue_disk: u32,
    /// `gendisk.major`.
    pub disk_major: u32,
    /// `gendisk.first_minor`.
    pub disk_first_minor: u32,
    /// Mask of the op part of `cmd_flags` (`REQ_OP_MASK`).
    pub req_op_mask: u32,
    /// `cmd_flags` masks for [`rwbs`] bits, in bit order PREFLUSH, FUA, RAHEAD, SYNC, META.
    pub req_flag_masks: [u64; 5],
}
const _: () = assert!(core::mem::size_of::<KernelOffsets>().is_multiple_of(8));

impl KernelOffsets {
    /// Marker for an offset that the running kernel does not have.
    pub const ABSENT: u32 = u32::MAX;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): repr(C) structs of integers without implicit padding.
    unsafe impl aya::Pod for super::Record {}
    unsafe impl aya::Pod for super::CpuHead {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::RuleSpec {}
    unsafe impl aya::Pod for super::RuleHit {}
}

/// Reads a NUL-padded byte array as text, replacing invalid UTF-8.
#[cfg(feature = "std")]
pub fn cstr_lossy(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
