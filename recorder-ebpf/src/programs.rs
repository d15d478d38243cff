//! The programs, one per tracepoint, all attached as BTF tracepoints (`tp_btf`): no tracefs, and
//! typed arguments whose layouts come from `KernelOffsets`, resolved from the running kernel's BTF
//! by the loader.

use crate::opaque::opaque;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
    bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_str_bytes,
};
use aya_ebpf::macros::{btf_tracepoint, map};
use aya_ebpf::maps::HashMap;
use aya_ebpf::programs::BtfTracePointContext;
use schemas::compact::{self, AUX_ESCAPE, shape};
use schemas::{
    BlockRq, COMM_LEN, EXEC_FILENAME_LEN, EventKind, IRQ_NAME_LEN, IrqHandlerEntry, IrqHandlerExit,
    KernelOffsets, ProcessExec, ProcessExit, ProcessFork, SYSCALL_PATH_LEN, SchedSwitch,
    SchedWakeup, Softirq, filter, rule, rwbs,
};

use crate::ring::{self, Slot};
use crate::{hist, rules};

/// Process ids (tgid) to record when the pid filter is on.
#[map]
static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// Comms to record when the comm filter is on.
#[map]
static FILTER_COMMS: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(256, 0);

/// cgroup v2 ids to record when the cgroup filter is on.
#[map]
static FILTER_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(1024, 0);

// Load-time constants, set by the loader (`EbpfLoader::override_global`). The verifier sees the
// values, so branches on `FILTER_MODE` cost nothing when filters are off.
#[unsafe(no_mangle)]
static FILTER_MODE: u32 = 0;
/// Event classes recorded (`schemas::classes` bits). `sched_switch` and `sched_process_exec`
/// run whatever the classes, to empty the current-task cache; they record only with theirs.
#[unsafe(no_mangle)]
static RECORD_CLASSES: u32 = 0;
/// Benchmark floors for the syscall programs (`schemas::floor`): record, return at once, or
/// read the clock once and return. Only `flightrec record --bench-floor` sets it.
#[unsafe(no_mangle)]
static SYSCALL_FLOOR: u32 = schemas::floor::RECORD;
/// `schemas::compact::shape` of each syscall below `AUX_ESCAPE` (argument count, path
/// argument), set by the loader from the kernel's syscall formats (6 arguments where unknown):
/// an entry record keeps only the arguments its syscall has.
#[unsafe(no_mangle)]
static SYSCALL_SHAPES: [u8; 512] = [6; 512];
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    task_pid: KernelOffsets::ABSENT,
    task_tgid: KernelOffsets::ABSENT,
    task_comm: KernelOffsets::ABSENT,
    task_prio: KernelOffsets::ABSENT,
    task_cpu: KernelOffsets::ABSENT,
    regs_orig_ax: KernelOffsets::ABSENT,
    regs_args_base: KernelOffsets::ABSENT,
    regs_args_rel: [0; 6],
    irqaction_name: KernelOffsets::ABSENT,
    binprm_filename: KernelOffsets::ABSENT,
    rq_q: KernelOffsets::ABSENT,
    rq_cmd_flags: KernelOffsets::ABSENT,
    rq_sector: KernelOffsets::ABSENT,
    rq_data_len: KernelOffsets::ABSENT,
    queue_disk: KernelOffsets::ABSENT,
    disk_major: KernelOffsets::ABSENT,
    disk_first_minor: KernelOffsets::ABSENT,
    req_op_mask: 0,
    req_flag_masks: [0; 5],
};

macro_rules! konst {
    ($e:expr) => {
        // SAFETY: reading a plain integer static; volatile so the loader's value is used.
        unsafe { read_volatile(addr_of!($e)) }
    };
}

/// Reads a `T` at `base + off` in kernel memory; zero if unreadable.
#[inline(always)]
fn kread<T: Copy + Default>(base: *const u8, off: u32) -> T {
    // SAFETY: bpf_probe_read_kernel copes with any address and fails cleanly.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T) }
        .unwrap_or_default()
}

/// Loads a `T` at `base + off`, where `base` is a pointer argument of the tracepoint: `tp_btf`
/// arguments are BTF-typed, so this is a plain load that the verifier checks against the kernel's
/// type and the JIT guards against faults, not a `bpf_probe_read_kernel` call. `off` must be a
/// load-time constant (`OFFSETS`), which the verifier sees.
#[inline(always)]
fn bload<T: Copy>(base: *const u8, off: u32) -> T {
    // SAFETY: the verifier only accepts the load if it falls inside a field of `base`'s BTF type,
    // and makes it a guarded load (a fault reads zero).
    unsafe { read_volatile(base.wrapping_add(off as usize) as *const T) }
}

/// CPUs the current-task cache has a slot for; on machines with more it is not used.
const TASK_CACHE_CPUS: usize = 1024;

/// Per-CPU cache of the task whose system call this CPU saw last: `[regs, tgid << 32 | pid]`,
/// keyed by the address of the task's saved user registers, the `regs` the syscall
/// tracepoints pass (`task_pt_regs`: at the top of the task's kernel stack, so no two live
/// tasks share it). A syscall program whose `regs` is the key takes the ids from the slot, a
/// load where `bpf_get_current_pid_tgid` costs a call (a sixth of a recorded syscall's cost
/// above its clock read); any other asks the kernel and fills the slot. The key proves the
/// task, so a context switch the programs never saw costs a helper call, not a wrong task
/// (on some kernels switches out of some tasks reach no tracepoint). `sched_switch` empties
/// the slot so that a task given a dead task's stack cannot take its ids, and
/// `sched_process_exec` empties it because an exec from a thread other than the leader gives
/// the thread the leader's pid under the same stack.
#[unsafe(no_mangle)]
static mut CUR_TASK: [[u64; 2]; TASK_CACHE_CPUS] = [[0; 2]; TASK_CACHE_CPUS];

/// The cache slot of this CPU, `None` when the machine has more CPUs than slots.
#[inline(always)]
fn task_slot() -> Option<*mut u64> {
    if konst!(crate::ring::NCPU) as usize > TASK_CACHE_CPUS {
        return None;
    }
    // SAFETY: BPF helper without preconditions (inlined by recent verifiers).
    let cpu = unsafe { bpf_get_smp_processor_id() } as usize & (TASK_CACHE_CPUS - 1);
    // SAFETY: in bounds by the mask; only programs on this CPU touch its slot.
    Some(unsafe {
        addr_of_mut!(CUR_TASK)
            .cast::<[u64; 2]>()
            .add(cpu)
            .cast::<u64>()
    })
}

/// `bpf_get_current_pid_tgid()` for a syscall program given the task's `regs`: from this CPU's
/// cache when its key is `regs`, else from the kernel (and then cached).
#[inline(always)]
fn syscall_task(regs: *const u8) -> u64 {
    let key = regs as u64;
    let mut v = 0;
    let mut hit = false;
    if let Some(slot) = task_slot() {
        // SAFETY: this CPU's slot of the cache; syscall programs do not nest on a CPU.
        unsafe {
            if read_volatile(slot) == key {
                v = read_volatile(slot.add(1));
                hit = true;
            }
        }
    }
    if !hit {
        v = bpf_get_current_pid_tgid();
        if let Some(slot) = task_slot() {
            // SAFETY: as above. The ids before the key: a slot whose key matches holds them.
            unsafe {
                write_volatile(slot.add(1), v);
                write_volatile(slot, key);
            }
        }
    }
    // Opaque to LLVM: the verifier then knows the same of the value whichever way it came,
    // and walks what follows once, not once per way.
    opaque(v)
}

/// Empties this CPU's cache slot: the next syscall program asks the kernel.
#[inline(always)]
fn forget_task() {
    if let Some(slot) = task_slot() {
        // SAFETY: this CPU's slot of the cache.
        unsafe { write_volatile(slot, 0) };
    }
}

/// Whether events of `class` (`schemas::classes`) are recorded.
#[inline(always)]
fn recording(class: u32) -> bool {
    konst!(RECORD_CLASSES) & class != 0
}

/// Reads a task's comm into `dst`.
#[inline(always)]
fn task_comm(task: *const u8, dst: &mut [u8; COMM_LEN]) {
    *dst = kread::<[u8; COMM_LEN]>(task, konst!(OFFSETS.task_comm));
}

/// Reserves a record of `kind` whose body is a `T` (see [`ring::reserve`]).
#[inline(always)]
fn reserve<T>(kind: EventKind, ts: u64, pid_tgid: u64) -> Option<Slot>
where
    T: Sized,
{
    match size_of::<T>() {
        8 => ring::reserve::<8>(kind as u32, ts, pid_tgid, 0, 0),
        32 => ring::reserve::<32>(kind as u32, ts, pid_tgid, 0, 0),
        40 => ring::reserve::<40>(kind as u32, ts, pid_tgid, 0, 0),
        48 => ring::reserve::<48>(kind as u32, ts, pid_tgid, 0, 0),
        56 => ring::reserve::<56>(kind as u32, ts, pid_tgid, 0, 0),
        64 => ring::reserve::<64>(kind as u32, ts, pid_tgid, 0, 0),
        _ => None,
    }
}

/// Writes one record of `kind` whose body is `value`.
#[inline(always)]
fn emit<T>(kind: EventKind, ts: u64, pid_tgid: u64, value: T) -> Result<(), ()> {
    let slot = reserve::<T>(kind, ts, pid_tgid).ok_or(())?;
    slot.put(0, value);
    slot.publish();
    Ok(())
}

/// Whether events of the current task pass the load-time filters (all active ones must match).
#[inline(always)]
fn current_allowed(pid_tgid: u64) -> bool {
    let mode = konst!(FILTER_MODE);
    if mode == 0 {
        return true;
    }
    if mode & filter::PID != 0 {
        let tgid = (pid_tgid >> 32) as u32;
        // SAFETY: lookups return copies-by-reference valid for this run.
        if unsafe { FILTER_PIDS.get(&tgid) }.is_none() {
            return false;
        }
    }
    if mode & filter::COMM != 0 {
        let Ok(comm) = bpf_get_current_comm() else {
            return false;
        };
        // SAFETY: as above.
        if unsafe { FILTER_COMMS.get(&comm) }.is_none() {
            return false;
        }
    }
    if mode & filter::CGROUP != 0 {
        // SAFETY: BPF helper without preconditions.
        let cg = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: as above.
        if unsafe { FILTER_CGROUPS.get(&cg) }.is_none() {
            return false;
        }
    }
    true
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: BPF helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Whether a syscall program stops here for a benchmark floor (see `SYSCALL_FLOOR`).
#[inline(always)]
fn at_floor() -> bool {
    match konst!(SYSCALL_FLOOR) {
        schemas::floor::RECORD => false,
        schemas::floor::CLOCK => {
            core::hint::black_box(now());
            true
        }
        _ => true,
    }
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/syscalls.h: sys_enter(regs, id)
#[btf_tracepoint(function = "sys_enter")]
#[inline(always)]
pub fn sys_enter(ctx: BtfTracePointContext) -> i32 {
    if at_floor() {
        return 0;
    }
    let _ = try_sys_enter(&ctx);
    0
}

// Inlined: as a BPF function of its own (LLVM's choice once it grew) the call cost a tenth of
// the program.
#[inline(always)]
fn try_sys_enter(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let regs: *const u8 = ctx.arg(0);
    let pid_tgid = syscall_task(regs);
    let id: i64 = ctx.arg(1);
    if only_recording() {
        return record_entry(regs, id as u64, now(), pid_tgid);
    }
    // Rules see every task, whatever the recording filters say.
    let watched = rules::on(rule::SYSCALL) && rules::syscall_watched(id as u64);
    let allowed = current_allowed(pid_tgid);
    if !allowed && !watched && !hist::on(schemas::hist::family::SYSCALL) {
        return Ok(());
    }
    let ts = now();
    hist::syscall_enter(pid_tgid as u32, id as u64, ts);
    if watched {
        // The same timestamp as the record: the rule's latency is exactly exit - entry.
        rules::syscall_enter(pid_tgid as u32, ts);
    }
    if !allowed {
        return Ok(());
    }
    record_entry(regs, id as u64, ts, pid_tgid)
}

/// Whether the syscall programs only record: no filter, no syscall rule, no syscall histogram.
/// Load-time constants: the verifier keeps one way, and the recording way then carries
/// nothing of the others (their loads, flags and registers).
#[inline(always)]
fn only_recording() -> bool {
    konst!(FILTER_MODE) == 0
        && !rules::on(rule::SYSCALL)
        && !hist::on(schemas::hist::family::SYSCALL)
}

/// Writes the entry record of syscall `id` (and its path record first, for the open family).
#[inline(always)]
fn record_entry(regs: *const u8, id: u64, ts: u64, pid_tgid: u64) -> Result<(), ()> {
    // Direct loads from the typed `regs`: no helper call per event.
    let base = konst!(OFFSETS.regs_args_base);
    let arg = |i: usize| bload::<u64>(regs, base + konst!(OFFSETS.regs_args_rel[i]));
    // One table load says how many arguments the syscall has and whether, and from which
    // argument, its file name is recorded. The mask bounds the index for the verifier (opaque:
    // LLVM would drop it as implied by the comparison).
    let shape = {
        let i = opaque(id) & (schemas::rule::MAX_SYSCALL as u64 - 1);
        // SAFETY: a load-time constant array of MAX_SYSCALL entries, indexed below it.
        let v = unsafe { read_volatile(addr_of!(SYSCALL_SHAPES).cast::<u8>().add(i as usize)) };
        if id < AUX_ESCAPE { v } else { shape::ARGC }
    };
    // The file name an open-family call was given, in a record of its own just before the
    // entry, so readers can name the fd the call returns. Only these four syscalls pay for it.
    if shape & shape::PATH != 0 {
        // Constant indexes: the verifier needs each load's offset known.
        let path = if shape & shape::PATH_ARG1 != 0 {
            arg(1)
        } else {
            arg(0)
        };
        record_path(id, path as *const u8, ts, pid_tgid);
    }
    // Only the arguments the syscall has: a body size per count, so each store's offset is a
    // constant the verifier checks. 7 (all bits) is a number at or above `AUX_ESCAPE`.
    let argc = shape & shape::ARGC;
    macro_rules! entry {
        ($n:literal) => {{
            let slot =
                ring::reserve::<{ 8 * $n }>(EventKind::SyscallEntry as u32, ts, pid_tgid, 0, id)
                    .ok_or(())?;
            if $n > 0 {
                slot.put(0, arg(0));
            }
            if $n > 1 {
                slot.put(8, arg(1));
            }
            if $n > 2 {
                slot.put(16, arg(2));
            }
            if $n > 3 {
                slot.put(24, arg(3));
            }
            if $n > 4 {
                slot.put(32, arg(4));
            }
            if $n > 5 {
                slot.put(40, arg(5));
            }
            slot.publish();
        }};
    }
    match argc {
        0 => entry!(0),
        1 => entry!(1),
        2 => entry!(2),
        3 => entry!(3),
        4 => entry!(4),
        5 => entry!(5),
        6 => entry!(6),
        _ => {
            // A number too large for the header: it leads the body, then all six arguments.
            let slot =
                ring::reserve::<56>(EventKind::SyscallEntry as u32, ts, pid_tgid, 0, AUX_ESCAPE)
                    .ok_or(())?;
            slot.put(0, id);
            slot.put(8, [arg(0), arg(1), arg(2), arg(3), arg(4), arg(5)]);
            slot.publish();
        }
    }
    Ok(())
}

/// Writes a [`SyscallPath`] record with the user string at `user_path`, sized to it. A path the
/// helper cannot read (not paged in) leaves an empty path: the record still says a name was
/// asked for.
#[inline(always)]
fn record_path(id: u64, user_path: *const u8, ts: u64, pid_tgid: u64) {
    // The path syscalls all have small numbers: the number is in the header.
    let Some(mut slot) =
        ring::reserve::<SYSCALL_PATH_LEN>(EventKind::SyscallPath as u32, ts, pid_tgid, 0, id)
    else {
        return;
    };
    // Zeroed first: the helper stops at the name's NUL and the ring holds older bytes.
    slot.put(0, [0u64; SYSCALL_PATH_LEN / 8]);
    // SAFETY: the body holds SYSCALL_PATH_LEN bytes at offset 0; the helper copes with any user
    // address, writes at most the buffer's length and NUL-terminates what it copied.
    let len = unsafe {
        let dst = core::slice::from_raw_parts_mut(slot.body_ptr(0), SYSCALL_PATH_LEN);
        bpf_probe_read_user_str_bytes(user_path, dst)
    }
    .map_or(0, |b| b.len());
    if len + 1 >= SYSCALL_PATH_LEN {
        // The buffer is full (the length excludes the NUL): the name was this long or longer.
        slot.set_flags(compact::flag::PATH_CUT);
    }
    // The record keeps the words that hold the name and its NUL when it can give the rest
    // back (no record reserved after it yet, nearly always).
    slot.shrink((SYSCALL_PATH_LEN - compact::path_body(len)) as u64);
    slot.publish();
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/syscalls.h: sys_exit(regs, ret)
#[btf_tracepoint(function = "sys_exit")]
#[inline(always)]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    if at_floor() {
        return 0;
    }
    let _ = try_sys_exit(&ctx);
    0
}

#[inline(always)]
fn try_sys_exit(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let regs: *const u8 = ctx.arg(0);
    let pid_tgid = syscall_task(regs);
    if only_recording() {
        let ts = now();
        let id: u64 = bload(regs, konst!(OFFSETS.regs_orig_ax));
        record_exit(id, ctx.arg(1), ts, pid_tgid);
        return Ok(());
    }
    let allowed = current_allowed(pid_tgid);
    if !allowed && !rules::on(rule::SYSCALL) && !hist::on(schemas::hist::family::SYSCALL) {
        return Ok(());
    }
    let ts = now();
    let ret: i64 = ctx.arg(1);
    let id: u64 = bload(regs, konst!(OFFSETS.regs_orig_ax));
    hist::syscall_exit(pid_tgid as u32, id, ts);
    if allowed {
        record_exit(id, ret, ts, pid_tgid);
    }
    // After the publish: a freeze here ends the window at this very event.
    if rules::on(rule::SYSCALL) {
        rules::syscall_exit(pid_tgid, id, ret, ts);
    }
    Ok(())
}

/// Writes the exit record of syscall `id`, which returned `ret`.
#[inline(always)]
fn record_exit(id: u64, ret: i64, ts: u64, pid_tgid: u64) {
    let slot = if id < AUX_ESCAPE {
        ring::reserve::<8>(EventKind::SyscallExit as u32, ts, pid_tgid, 0, id).map(|s| {
            s.put(0, ret);
            s
        })
    } else {
        ring::reserve::<16>(EventKind::SyscallExit as u32, ts, pid_tgid, 0, AUX_ESCAPE).map(|s| {
            s.put(0, id);
            s.put(8, ret);
            s
        })
    };
    if let Some(slot) = slot {
        slot.publish();
    }
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/sched.h: sched_switch(preempt, prev, next, prev_state)
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    // The next task may have a dead task's stack: it must not take that task's ids.
    forget_task();
    if recording(schemas::classes::SCHED) {
        let _ = try_sched_switch(&ctx);
    }
    0
}

fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let ts = now();
    let preempt: u64 = ctx.arg(0);
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    let mut e = SchedSwitch {
        next_tid: kread(next, konst!(OFFSETS.task_pid)),
        next_pid: kread(next, konst!(OFFSETS.task_tgid)),
        prev_prio: kread(prev, konst!(OFFSETS.task_prio)),
        next_prio: kread(next, konst!(OFFSETS.task_prio)),
        // A preempted task is still runnable, whatever its state word says.
        prev_state: if preempt & 1 != 0 {
            0
        } else {
            prev_state & 0xffff_ffff
        },
        ..SchedSwitch::default()
    };
    // The tracepoint fires before the switch: the current task is still `prev`.
    // SAFETY: BPF helper without preconditions.
    e.prev_cgroup = unsafe { bpf_get_current_cgroup_id() };
    task_comm(prev, &mut e.prev_comm);
    task_comm(next, &mut e.next_comm);
    let _ = emit(EventKind::SchedSwitch, ts, pid_tgid, e);
    hist::sched_switch(ts, e.prev_state == 0, pid_tgid as u32, next, e.next_tid);
    if rules::on(rule::RUNQUEUE) {
        if e.prev_state == 0 {
            // Preempted: back on the run queue from now.
            rules::runnable(pid_tgid as u32, ts);
        }
        rules::running(next, e.next_pid, e.next_tid, e.next_comm, ts);
    }
    Ok(())
}

#[inline(always)]
fn wakeup(ctx: &BtfTracePointContext, kind: EventKind) -> Result<(), ()> {
    let ts = now();
    let p: *const u8 = ctx.arg(0);
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut e = SchedWakeup {
        tid: kread(p, konst!(OFFSETS.task_pid)),
        pid: kread(p, konst!(OFFSETS.task_tgid)),
        prio: kread(p, konst!(OFFSETS.task_prio)),
        target_cpu: kread(p, konst!(OFFSETS.task_cpu)),
        ..SchedWakeup::default()
    };
    task_comm(p, &mut e.comm);
    let _ = emit(kind, ts, pid_tgid, e);
    hist::wakeup(e.tid, ts);
    if rules::on(rule::RUNQUEUE) {
        rules::runnable(e.tid, ts);
    }
    Ok(())
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/sched.h: sched_wakeup(p)
#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    let _ = wakeup(&ctx, EventKind::SchedWakeup);
    0
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/sched.h: sched_wakeup_new(p)
#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    let _ = wakeup(&ctx, EventKind::SchedWakeupNew);
    0
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/sched.h: sched_process_fork(parent, child)
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    let _ = try_fork(&ctx);
    0
}

fn try_fork(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !current_allowed(pid_tgid) {
        return Ok(());
    }
    let ts = now();
    let parent: *const u8 = ctx.arg(0);
    let child: *const u8 = ctx.arg(1);
    let child_pid: u32 = kread(child, konst!(OFFSETS.task_tgid));
    let mode = konst!(FILTER_MODE);
    if mode & filter::PID != 0 && mode & filter::FOLLOW_CHILDREN != 0 {
        // The parent passed the filters, so its new process is followed too.
        let _ = FILTER_PIDS.insert(&child_pid, &1, 0);
    }
    let mut e = ProcessFork {
        parent_tid: kread(parent, konst!(OFFSETS.task_pid)),
        parent_pid: kread(parent, konst!(OFFSETS.task_tgid)),
        child_tid: kread(child, konst!(OFFSETS.task_pid)),
        child_pid,
        // The parent is current; the child starts in its cgroup.
        // SAFETY: BPF helper without preconditions.
        cgroup: unsafe { bpf_get_current_cgroup_id() },
        ..ProcessFork::default()
    };
    task_comm(parent, &mut e.parent_comm);
    task_comm(child, &mut e.child_comm);
    emit(EventKind::ProcessFork, ts, pid_tgid, e)?;
    Ok(())
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/sched.h: sched_process_exec(p, old_pid, bprm)
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    // The exec may have given this thread its leader's pid.
    forget_task();
    if recording(schemas::classes::PROCESS) {
        let _ = try_exec(&ctx, bpf_get_current_pid_tgid());
    }
    0
}

fn try_exec(ctx: &BtfTracePointContext, pid_tgid: u64) -> Result<(), ()> {
    if !current_allowed(pid_tgid) {
        return Ok(());
    }
    let ts = now();
    let p: *const u8 = ctx.arg(0);
    let old_pid: u32 = ctx.arg(1);
    let bprm: *const u8 = ctx.arg(2);
    let mut e = ProcessExec {
        tid: kread(p, konst!(OFFSETS.task_pid)),
        old_tid: old_pid,
        filename: [0; EXEC_FILENAME_LEN],
    };
    let name: *const u8 = kread(bprm, konst!(OFFSETS.binprm_filename));
    // SAFETY: the helper reads at most the buffer's length and NUL-terminates.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut e.filename) };
    emit(EventKind::ProcessExec, ts, pid_tgid, e)?;
    Ok(())
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/sched.h: sched_process_exit(p, group_dead)
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = try_exit(&ctx);
    0
}

fn try_exit(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !current_allowed(pid_tgid) {
        return Ok(());
    }
    let ts = now();
    let p: *const u8 = ctx.arg(0);
    let mut e = ProcessExit {
        tid: kread(p, konst!(OFFSETS.task_pid)),
        pid: kread(p, konst!(OFFSETS.task_tgid)),
        prio: kread(p, konst!(OFFSETS.task_prio)),
        // The exiting task is current.
        // SAFETY: BPF helper without preconditions.
        cgroup: unsafe { bpf_get_current_cgroup_id() },
        ..ProcessExit::default()
    };
    task_comm(p, &mut e.comm);
    let mode = konst!(FILTER_MODE);
    if mode & filter::PID != 0 && mode & filter::FOLLOW_CHILDREN != 0 && e.tid == e.pid {
        // The process is gone; its id may be reused by an unrelated one.
        let _ = FILTER_PIDS.remove(&e.pid);
    }
    emit(EventKind::ProcessExit, ts, pid_tgid, e)?;
    Ok(())
}

/// Fills the parts of a block event read from `struct request`.
#[inline(always)]
fn block_common(rq: *const u8, e: &mut BlockRq) {
    let q: *const u8 = kread(rq, konst!(OFFSETS.rq_q));
    let disk: *const u8 = kread(q, konst!(OFFSETS.queue_disk));
    if !disk.is_null() {
        let major: u32 = kread(disk, konst!(OFFSETS.disk_major));
        let minor: u32 = kread(disk, konst!(OFFSETS.disk_first_minor));
        e.dev = (major << 20) | (minor & 0xF_FFFF);
    }
    e.sector = kread(rq, konst!(OFFSETS.rq_sector));
    let flags: u32 = kread(rq, konst!(OFFSETS.rq_cmd_flags));
    e.op = flags & konst!(OFFSETS.req_op_mask);
    let masks = [
        (konst!(OFFSETS.req_flag_masks[0]), rwbs::PREFLUSH),
        (konst!(OFFSETS.req_flag_masks[1]), rwbs::FUA),
        (konst!(OFFSETS.req_flag_masks[2]), rwbs::RAHEAD),
        (konst!(OFFSETS.req_flag_masks[3]), rwbs::SYNC),
        (konst!(OFFSETS.req_flag_masks[4]), rwbs::META),
    ];
    for (mask, bit) in masks {
        if flags as u64 & mask != 0 {
            e.rwbs_flags |= bit;
        }
    }
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/block.h: block_rq_issue(rq)
#[btf_tracepoint(function = "block_rq_issue")]
pub fn block_rq_issue(ctx: BtfTracePointContext) -> i32 {
    let _ = try_block_rq_issue(&ctx);
    0
}

fn try_block_rq_issue(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let ts = now();
    let rq: *const u8 = ctx.arg(0);
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut e = BlockRq::default();
    block_common(rq, &mut e);
    e.bytes = kread(rq, konst!(OFFSETS.rq_data_len));
    e.nr_sector = e.bytes >> 9;
    e.comm = bpf_get_current_comm().unwrap_or_default();
    let _ = emit(EventKind::BlockRqIssue, ts, pid_tgid, e);
    hist::block_issue(rq, ts);
    if rules::on(rule::BLOCK) {
        rules::block_issue(e.dev, e.sector, ts);
    }
    Ok(())
}

/// `blk_status_to_errno` for the statuses a completion can carry.
#[inline(always)]
fn blk_status_errno(status: u8) -> i32 {
    match status {
        0 => 0,
        1 => -95,  // NOTSUPP: EOPNOTSUPP
        2 => -110, // TIMEOUT: ETIMEDOUT
        3 => -28,  // NOSPC: ENOSPC
        4 => -67,  // TRANSPORT: ENOLINK
        5 => -121, // TARGET: EREMOTEIO
        7 => -61,  // MEDIUM: ENODATA
        8 => -84,  // PROTECTION: EILSEQ
        9 => -12,  // RESOURCE: ENOMEM
        11 => -11, // AGAIN: EAGAIN
        _ => -5,   // IOERR and the rest: EIO
    }
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/block.h: block_rq_complete(rq, error, nr_bytes)
#[btf_tracepoint(function = "block_rq_complete")]
pub fn block_rq_complete(ctx: BtfTracePointContext) -> i32 {
    let _ = try_block_rq_complete(&ctx);
    0
}

fn try_block_rq_complete(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let ts = now();
    let rq: *const u8 = ctx.arg(0);
    let status: u64 = ctx.arg(1);
    let nr_bytes: u64 = ctx.arg(2);
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut e = BlockRq::default();
    block_common(rq, &mut e);
    e.bytes = nr_bytes as u32;
    e.nr_sector = e.bytes >> 9;
    e.error = blk_status_errno(status as u8);
    let _ = emit(EventKind::BlockRqComplete, ts, pid_tgid, e);
    hist::block_complete(rq, e.dev, e.op, ts);
    if rules::on(rule::BLOCK) {
        rules::block_complete(e.dev, e.sector, ts, pid_tgid);
    }
    Ok(())
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/irq.h: irq_handler_entry(irq, action)
#[btf_tracepoint(function = "irq_handler_entry")]
pub fn irq_handler_entry(ctx: BtfTracePointContext) -> i32 {
    let _ = try_irq_entry(&ctx);
    0
}

fn try_irq_entry(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let ts = now();
    let irq: u64 = ctx.arg(0);
    let action: *const u8 = ctx.arg(1);
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut e = IrqHandlerEntry {
        irq: irq as u32,
        _pad: 0,
        name: [0; IRQ_NAME_LEN],
    };
    let name: *const u8 = kread(action, konst!(OFFSETS.irqaction_name));
    // SAFETY: bounded by the buffer, fails cleanly on a bad pointer.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut e.name) };
    let _ = emit(EventKind::IrqHandlerEntry, ts, pid_tgid, e);
    hist::irq_entry(ts);
    if rules::on(rule::IRQ) {
        rules::irq_entry(ts);
    }
    Ok(())
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/irq.h: irq_handler_exit(irq, action, ret)
#[btf_tracepoint(function = "irq_handler_exit")]
pub fn irq_handler_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = try_irq_exit(&ctx);
    0
}

fn try_irq_exit(ctx: &BtfTracePointContext) -> Result<(), ()> {
    let ts = now();
    let irq: u64 = ctx.arg(0);
    let ret: u64 = ctx.arg(2);
    let pid_tgid = bpf_get_current_pid_tgid();
    let _ = emit(
        EventKind::IrqHandlerExit,
        ts,
        pid_tgid,
        IrqHandlerExit {
            irq: irq as u32,
            ret: ret as i32,
        },
    );
    hist::irq_exit(irq as u32, ts);
    if rules::on(rule::IRQ) {
        rules::irq_exit(irq as u32, ts, pid_tgid);
    }
    Ok(())
}

#[inline(always)]
fn softirq(ctx: &BtfTracePointContext, kind: EventKind) -> Result<(), ()> {
    let ts = now();
    let vec: u64 = ctx.arg(0);
    let _ = emit(
        kind,
        ts,
        bpf_get_current_pid_tgid(),
        Softirq {
            vec: vec as u32,
            _pad: 0,
        },
    );
    if matches!(kind, EventKind::SoftirqEntry) {
        hist::softirq_entry(ts);
    } else {
        hist::softirq_exit(vec as u32, ts);
    }
    Ok(())
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/irq.h: softirq_entry(vec_nr)
#[btf_tracepoint(function = "softirq_entry")]
pub fn softirq_entry(ctx: BtfTracePointContext) -> i32 {
    let _ = softirq(&ctx, EventKind::SoftirqEntry);
    0
}

// https://elixir.bootlin.com/linux/v6.18/source/include/trace/events/irq.h: softirq_exit(vec_nr)
#[btf_tracepoint(function = "softirq_exit")]
pub fn softirq_exit(ctx: BtfTracePointContext) -> i32 {
    let _ = softirq(&ctx, EventKind::SoftirqExit);
    0
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
