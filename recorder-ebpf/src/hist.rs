//! In-kernel latency histograms (`schemas::hist`): the programs add each measured latency to a
//! log2 histogram in a per-CPU map, and the recorder reads the maps only when Prometheus
//! scrapes it. No event crosses to userspace for them.
//!
//! Cost: every hook is behind `HIST_FAMILIES`, a load-time constant the verifier sees, so a
//! family that is off is pruned from the programs and costs nothing.
//!
//! Nesting: an irq or softirq program may interrupt another program on the same CPU (a block
//! completion in a hard irq inside one in a softirq, say), so counts are added with atomic adds
//! (`lock add` on x86, on a line no other CPU writes), never with a load and a store that a
//! nested program could slip between. Start timestamps are per thread (hash maps) or per CPU
//! for hard irqs and softirqs, which do not nest within their own kind.

use core::intrinsics::{AtomicOrdering, atomic_xadd};
use core::ptr::{addr_of, read_volatile, write_volatile};

use aya_ebpf::bindings::BPF_NOEXIST;
use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_probe_read_kernel};
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, LruHashMap, LruPerCpuHashMap, PerCpuArray};
use schemas::hist::{
    CgroupOffsets, Hist, MAX_CGROUPS, MAX_DISK_OPS, MAX_IRQS, MAX_PAIRS, MAX_SOFTIRQ, MAX_SYSCALL,
    PreemptStat, RunqStart, SLOTS, family, slot,
};

/// Run-queue wait per cgroup v2 id of the task that waited.
#[map]
static RUNQ_HIST: LruPerCpuHashMap<u64, Hist> = LruPerCpuHashMap::with_max_entries(MAX_CGROUPS, 0);

/// Preemptions per `[victim cgroup, preempting cgroup]`.
#[map]
static PREEMPT_PAIRS: LruPerCpuHashMap<[u64; 2], PreemptStat> =
    LruPerCpuHashMap::with_max_entries(MAX_PAIRS, 0);

/// Block request latency per `dev << 8 | op` (`dev` = `major << 20 | minor`, `op` = `REQ_OP_*`).
#[map]
static BLOCK_HIST: LruPerCpuHashMap<u64, Hist> =
    LruPerCpuHashMap::with_max_entries(MAX_DISK_OPS, 0);

/// Syscall latency per syscall number.
#[map]
static SYSCALL_HIST: PerCpuArray<Hist> = PerCpuArray::with_max_entries(MAX_SYSCALL, 0);

/// Hard irq handler time per irq number.
#[map]
static IRQ_HIST: LruPerCpuHashMap<u32, Hist> = LruPerCpuHashMap::with_max_entries(MAX_IRQS, 0);

/// Softirq time per vector.
#[map]
static SOFTIRQ_HIST: PerCpuArray<Hist> = PerCpuArray::with_max_entries(MAX_SOFTIRQ, 0);

/// An all-zero histogram to create new keys from (a map value: too big for the stack).
#[map]
static HIST_ZERO: Array<Hist> = Array::with_max_entries(1, 0);

/// Thread id → when it became runnable, and who preempted it.
#[map]
static HIST_RUNQ_START: LruHashMap<u32, RunqStart> = LruHashMap::with_max_entries(16384, 0);

/// Thread id → `[sys_enter time, syscall number]` of the syscall in progress (time 0: none).
/// The number guards against a thread that ended inside `exit`, whose id a new thread reuses:
/// that thread's first event is the `sys_exit` of `clone`, which must not end the old `exit`.
#[map]
static HIST_SYSCALL_START: LruHashMap<u32, [u64; 2]> = LruHashMap::with_max_entries(16384, 0);

/// `struct request *` → issue time (0: completed).
#[map]
static HIST_BLOCK_START: LruHashMap<u64, u64> = LruHashMap::with_max_entries(8192, 0);

/// Entry time of the hard irq handler (index 0) and the softirq (index 1) running on this CPU.
#[map]
static HIST_IRQ_START: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Bit set of the `schemas::hist::family` families on, set by the loader.
#[unsafe(no_mangle)]
static HIST_FAMILIES: u32 = 0;

/// The chain from a task to its cgroup id, resolved from BTF by the loader.
#[unsafe(no_mangle)]
static CGROUP_OFFSETS: CgroupOffsets = CgroupOffsets::ABSENT;

/// Whether `fam` is on. A load-time constant: dead branches are pruned.
#[inline(always)]
pub fn on(fam: u32) -> bool {
    // SAFETY: reading a plain integer static; volatile so the loader's value is used.
    unsafe { read_volatile(addr_of!(HIST_FAMILIES)) & fam != 0 }
}

/// Reads a pointer-sized or smaller `T` at `base + off` in kernel memory; zero if unreadable.
#[inline(always)]
fn read_at<T: Copy + Default>(base: u64, off: u32) -> T {
    // SAFETY: bpf_probe_read_kernel copes with any address and fails cleanly.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.unwrap_or_default()
}

/// cgroup v2 id of `task` (`task->cgroups->dfl_cgrp->kn->id`, what `bpf_get_current_cgroup_id`
/// returns for the current task); 0 when the chain cannot be read.
#[inline(always)]
pub fn task_cgroup(task: *const u8) -> u64 {
    // SAFETY: a plain static; volatile so the loader's values are used.
    let o = unsafe { read_volatile(addr_of!(CGROUP_OFFSETS)) };
    let css_set: u64 = read_at(task as u64, o.task_cgroups);
    if css_set == 0 {
        return 0;
    }
    let cgrp: u64 = read_at(css_set, o.css_set_dfl_cgrp);
    if cgrp == 0 {
        return 0;
    }
    let kn: u64 = read_at(cgrp, o.cgroup_kn);
    if kn == 0 {
        return 0;
    }
    read_at(kn, o.kernfs_node_id)
}

/// `*p += v`, safe against a nested program on this CPU.
#[inline(always)]
fn add_to(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a map value; the result is unused, so this is a plain atomic add.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

/// Counts a latency of `ns` in `h`.
#[inline(always)]
fn count(h: *mut Hist, ns: u64) {
    // The mask is a no-op (`slot` is below SLOTS) that shows the verifier the bound.
    let s = slot(ns) & (SLOTS - 1);
    // SAFETY: `h` points into a map value of type `Hist`; `s < SLOTS`.
    unsafe {
        add_to((&raw mut (*h).slots).cast::<u64>().add(s), 1);
        add_to(&raw mut (*h).sum_ns, ns);
    }
}

/// This CPU's value of `key` in `map`, created zeroed if absent.
macro_rules! value_of {
    ($map:expr, $key:expr, $zero:expr) => {{
        let key = $key;
        match $map.get_ptr_mut(&key) {
            Some(p) => Some(p),
            None => {
                // Another CPU may have created it since: NOEXIST fails then, and the lookup
                // finds it.
                let _ = $map.insert(&key, $zero, BPF_NOEXIST as u64);
                $map.get_ptr_mut(&key)
            }
        }
    }};
}

/// Counts `ns` in the histogram of `key` in `map`.
macro_rules! count_in {
    ($map:expr, $key:expr, $ns:expr) => {{
        if let Some(zero) = HIST_ZERO.get(0)
            && let Some(h) = value_of!($map, $key, zero)
        {
            count(h, $ns);
        }
    }};
}

/// Sets a thread's start time in `map`, in place when it has an entry (no allocation).
macro_rules! set_start {
    ($map:expr, $tid:expr, $value:expr) => {{
        let v = $value;
        match $map.get_ptr_mut(&$tid) {
            // SAFETY: a map value of the right type; only this thread's events write it.
            Some(p) => unsafe { write_volatile(p, v) },
            None => {
                let _ = $map.insert(&$tid, &v, 0);
            }
        }
    }};
}

/// sys_enter of syscall `id` in thread `tid` at `ts`.
#[inline(always)]
pub fn syscall_enter(tid: u32, id: u64, ts: u64) {
    if on(family::SYSCALL) {
        set_start!(HIST_SYSCALL_START, tid, [ts, id]);
    }
}

/// sys_exit of syscall `id` in thread `tid` at `ts`.
#[inline(always)]
pub fn syscall_exit(tid: u32, id: u64, ts: u64) {
    if !on(family::SYSCALL) {
        return;
    }
    let Some(p) = HIST_SYSCALL_START.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: a map value; only this thread's events write it.
    let [start, entered] = unsafe { read_volatile(p) };
    if start == 0 || entered != id {
        return;
    }
    // SAFETY: as above.
    unsafe { write_volatile(p, [0, 0]) };
    if id < MAX_SYSCALL as u64
        && let Some(h) = SYSCALL_HIST.get_ptr_mut(id as u32)
    {
        count(h, ts.wrapping_sub(start));
    }
}

/// Thread `tid` was woken at `ts`.
#[inline(always)]
pub fn wakeup(tid: u32, ts: u64) {
    if on(family::RUNQUEUE | family::PREEMPTION) && tid != 0 {
        set_start!(
            HIST_RUNQ_START,
            tid,
            RunqStart {
                ts_ns: ts,
                victim_cgroup: 0,
                preempting_cgroup: 0,
            }
        );
    }
}

/// sched_switch at `ts` from the current task (`prev_tid`) to `next` (`next_tid`): ends
/// `next`'s run-queue wait, and starts `prev`'s when it was switched out still runnable
/// (`preempted`: by the kernel's preemption, or on its way back to user space, which the
/// tracepoint's `preempt` flag does not cover).
#[inline(always)]
pub fn sched_switch(ts: u64, preempted: bool, prev_tid: u32, next: *const u8, next_tid: u32) {
    if !on(family::RUNQUEUE | family::PREEMPTION) {
        return;
    }
    // `next`'s cgroup, read at most once.
    let mut next_cgroup: Option<u64> = None;
    if next_tid != 0
        && let Some(p) = HIST_RUNQ_START.get_ptr_mut(&next_tid)
    {
        // SAFETY: a map value; only this thread's switches and wakeups write it.
        let start = unsafe { read_volatile(p) };
        if start.ts_ns != 0 {
            // SAFETY: as above.
            unsafe { write_volatile(&raw mut (*p).ts_ns, 0) };
            let wait = ts.wrapping_sub(start.ts_ns);
            if on(family::RUNQUEUE) {
                let cg = *next_cgroup.get_or_insert_with(|| task_cgroup(next));
                count_in!(RUNQ_HIST, cg, wait);
            }
            if on(family::PREEMPTION)
                && start.preempting_cgroup != 0
                && let Some(s) = value_of!(
                    PREEMPT_PAIRS,
                    [start.victim_cgroup, start.preempting_cgroup],
                    &PreemptStat::default()
                )
            {
                // SAFETY: a map value of type PreemptStat.
                add_to(unsafe { &raw mut (*s).wait_ns }, wait);
            }
        }
    }
    if preempted && prev_tid != 0 {
        // The tracepoint fires before the switch: the current task is still `prev`.
        // SAFETY: BPF helper without preconditions.
        let victim = unsafe { bpf_get_current_cgroup_id() };
        let preempting = if on(family::PREEMPTION) && next_tid != 0 {
            next_cgroup.unwrap_or_else(|| task_cgroup(next))
        } else {
            0
        };
        set_start!(
            HIST_RUNQ_START,
            prev_tid,
            RunqStart {
                ts_ns: ts,
                victim_cgroup: victim,
                preempting_cgroup: preempting,
            }
        );
        if preempting != 0
            && let Some(s) = value_of!(PREEMPT_PAIRS, [victim, preempting], &PreemptStat::default())
        {
            // SAFETY: a map value of type PreemptStat.
            add_to(unsafe { &raw mut (*s).count }, 1);
        }
    }
}

/// block_rq_issue of request `rq` at `ts`.
#[inline(always)]
pub fn block_issue(rq: *const u8, ts: u64) {
    if on(family::BLOCK) {
        set_start!(HIST_BLOCK_START, rq as u64, ts);
    }
}

/// block_rq_complete of request `rq` (on `dev`, operation `op`) at `ts`.
#[inline(always)]
pub fn block_complete(rq: *const u8, dev: u32, op: u32, ts: u64) {
    if !on(family::BLOCK) {
        return;
    }
    let Some(p) = HIST_BLOCK_START.get_ptr_mut(&(rq as u64)) else {
        return;
    };
    // SAFETY: a map value; a request is issued and completed one step at a time.
    let start = unsafe { read_volatile(p) };
    if start == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { write_volatile(p, 0) };
    count_in!(
        BLOCK_HIST,
        ((dev as u64) << 8) | (op & 0xff) as u64,
        ts.wrapping_sub(start)
    );
}

/// Starts the per-CPU clock of a hard irq (`which` 0) or a softirq (1).
#[inline(always)]
fn cpu_start(which: u32, ts: u64) {
    if let Some(p) = HIST_IRQ_START.get_ptr_mut(which) {
        // SAFETY: this CPU's slot.
        unsafe { write_volatile(p, ts) };
    }
}

/// Stops the per-CPU clock `which`: the time since it started, if it had.
#[inline(always)]
fn cpu_stop(which: u32, ts: u64) -> Option<u64> {
    let p = HIST_IRQ_START.get_ptr_mut(which)?;
    // SAFETY: this CPU's slot.
    let start = unsafe { read_volatile(p) };
    if start == 0 {
        return None;
    }
    // SAFETY: as above.
    unsafe { write_volatile(p, 0) };
    Some(ts.wrapping_sub(start))
}

/// irq_handler_entry at `ts`.
#[inline(always)]
pub fn irq_entry(ts: u64) {
    if on(family::IRQ) {
        cpu_start(0, ts);
    }
}

/// irq_handler_exit of `irq` at `ts`.
#[inline(always)]
pub fn irq_exit(irq: u32, ts: u64) {
    if on(family::IRQ)
        && let Some(ns) = cpu_stop(0, ts)
    {
        count_in!(IRQ_HIST, irq, ns);
    }
}

/// softirq_entry at `ts`.
#[inline(always)]
pub fn softirq_entry(ts: u64) {
    if on(family::IRQ) {
        cpu_start(1, ts);
    }
}

/// softirq_exit of vector `vec` at `ts`.
#[inline(always)]
pub fn softirq_exit(vec: u32, ts: u64) {
    if on(family::IRQ)
        && let Some(ns) = cpu_stop(1, ts)
        && let Some(h) = SOFTIRQ_HIST.get_ptr_mut(vec)
    {
        count(h, ns);
    }
}
