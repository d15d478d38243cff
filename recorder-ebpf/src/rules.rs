//! Kernel latency rules: per-key start timestamps, the rule table, the in-kernel flood guard,
//! the in-kernel freeze, and the `RULE_HITS` ring buffer that tells userspace.
//!
//! Cost: every hook is behind `RULE_KINDS`, a load-time constant the verifier sees, so with no
//! rule of a kind configured its code is pruned from the programs and costs nothing.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};
use core::ptr::{addr_of, read_volatile, write_volatile};

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_smp_processor_id,
};
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, LruHashMap, PerCpuArray, RingBuf};
use schemas::{COMM_LEN, RuleHit, RuleSpec, ctrl, freeze_lock, rule};

use crate::ring::CTRL;

/// The rules, filled by the loader (`kind == 0`: empty entry).
#[map]
static RULES: Array<RuleSpec> = Array::with_max_entries(rule::MAX_RULES, 0);

/// Last firing time of each rule, for the kernel-side rate limit.
#[map]
static RULE_LAST: Array<u64> = Array::with_max_entries(rule::MAX_RULES, 0);

/// Fired rules, read by the daemon. Rare by construction (rate-limited per rule).
#[map]
static RULE_HITS: RingBuf = RingBuf::with_byte_size(64 * 1024, 0);

/// Bitmap of syscall numbers that some rule watches (word `nr / 64`, bit `nr % 64`), so other
/// syscalls skip the start-time map entirely.
#[map]
static SYSCALL_RULED: Array<u64> = Array::with_max_entries(rule::MAX_SYSCALL / 64, 0);

/// Thread id → sys_enter time of a watched syscall in progress.
#[map]
static SYSCALL_START: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// Thread id → time it became runnable (woken or preempted).
#[map]
static RUNQ_START: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// (device, sector) → issue time of a block request.
#[map]
static BLOCK_START: LruHashMap<[u64; 2], u64> = LruHashMap::with_max_entries(8192, 0);

/// irq_handler_entry time on this CPU (hard irq handlers do not nest).
#[map]
static IRQ_START: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Bit set of the rule kinds configured (`schemas::rule` kinds), set by the loader.
#[unsafe(no_mangle)]
static RULE_KINDS: u32 = 0;

/// Whether rules of `kind` exist. A load-time constant: dead branches are pruned.
#[inline(always)]
pub fn on(kind: u32) -> bool {
    // SAFETY: reading a plain integer static; volatile so the loader's value is used.
    unsafe { read_volatile(addr_of!(RULE_KINDS)) & kind != 0 }
}

/// The task a measurement is about.
pub struct Subject {
    /// `tgid << 32 | tid`.
    pub pid_tgid: u64,
    /// Its comm when the caller already has it; read from the current task otherwise.
    pub comm: Option<[u8; COMM_LEN]>,
    /// Its `task_struct` when it is not the current task (null: current), for its cgroup.
    pub task: *const u8,
}

/// Flips the epoch exactly as userspace's freeze does, unless someone else is freezing. Returns
/// the frozen epoch.
#[inline(always)]
fn kernel_freeze(ts: u64) -> Option<u32> {
    let lock = CTRL.get_ptr_mut(ctrl::FREEZE_LOCK)?;
    // SAFETY: `lock` points into the CTRL map value; cmpxchg is atomic against userspace too.
    let (_, won) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
            lock,
            freeze_lock::FREE,
            freeze_lock::KERNEL,
        )
    };
    if !won {
        return None;
    }
    let epoch_word = CTRL.get_ptr_mut(ctrl::EPOCH)?;
    // The lock was free, so writers are in the main ring and the spill was left ready by the
    // last fold: moving them to the spill is one store.
    let cur = 0u32;
    let next = 1u64;
    // SAFETY: CTRL map values; userspace reads them after it sees the lock at KERNEL.
    unsafe {
        if let Some(p) = CTRL.get_ptr_mut(ctrl::KFREEZE_TS) {
            write_volatile(p, ts);
        }
        if let Some(p) = CTRL.get_ptr_mut(ctrl::KFREEZE_EPOCH) {
            write_volatile(p, cur as u64);
        }
        write_volatile(epoch_word, next);
        if let Some(p) = CTRL.get_ptr_mut(ctrl::FLIPS) {
            atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, 1);
        }
    }
    Some(cur)
}

/// Fires rule `i` unless it fired less than its min interval ago: freezes if the rule says so,
/// and reports the hit.
#[inline(always)]
fn fire(i: u32, spec: &RuleSpec, hit: &mut RuleHit) {
    let Some(last) = RULE_LAST.get_ptr_mut(i) else {
        return;
    };
    // SAFETY: RULE_LAST map value.
    let old = unsafe { read_volatile(last) };
    if old != 0 && hit.ts_ns.wrapping_sub(old) < spec.min_interval_ns {
        return;
    }
    // Only one CPU wins a race between two matches of the same rule.
    // SAFETY: as above.
    let (_, won) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
            last, old, hit.ts_ns,
        )
    };
    if !won {
        return;
    }
    hit.rule = i;
    if spec.flags & rule::FREEZE != 0
        && let Some(epoch) = kernel_freeze(hit.ts_ns)
    {
        hit.frozen = 1;
        hit.epoch = epoch;
    }
    let _ = RULE_HITS.output::<RuleHit>(&*hit, 0);
}

#[inline(always)]
fn comm_words(c: &[u8; COMM_LEN]) -> [u64; 2] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&c[..8]);
    hi.copy_from_slice(&c[8..]);
    [u64::from_ne_bytes(lo), u64::from_ne_bytes(hi)]
}

/// Checks the rules of `kind` against a measured latency and fires the first that matches.
#[inline(always)]
pub fn check(kind: u32, ts: u64, start: u64, key: u64, aux: u64, who: Subject) {
    let latency = ts.wrapping_sub(start);
    let mut comm = who.comm;
    let mut cgroup: Option<u64> = None;
    let tgid = (who.pid_tgid >> 32) as u32;
    for i in 0..rule::MAX_RULES {
        let Some(spec) = RULES.get(i) else {
            return;
        };
        if spec.kind != kind || latency < spec.threshold_ns {
            continue;
        }
        if spec.flags & rule::MATCH_KEY != 0 && spec.key != key {
            continue;
        }
        if spec.flags & rule::MATCH_PID != 0 && spec.pid != tgid {
            continue;
        }
        if spec.flags & rule::MATCH_COMM != 0 {
            let c = match comm {
                Some(c) => c,
                None => {
                    let c = bpf_get_current_comm().unwrap_or_default();
                    comm = Some(c);
                    c
                }
            };
            if comm_words(&c) != spec.comm {
                continue;
            }
        }
        if spec.flags & rule::MATCH_CGROUP != 0 {
            let cg = *cgroup.get_or_insert_with(|| {
                if who.task.is_null() {
                    // SAFETY: BPF helper without preconditions.
                    unsafe { bpf_get_current_cgroup_id() }
                } else {
                    crate::hist::task_cgroup(who.task)
                }
            });
            if cg != spec.cgroup {
                continue;
            }
        }
        let mut hit = RuleHit {
            ts_ns: ts,
            start_ns: start,
            latency_ns: latency,
            key,
            aux,
            rule: i,
            // SAFETY: BPF helper without preconditions.
            cpu: unsafe { bpf_get_smp_processor_id() },
            pid: tgid,
            tid: who.pid_tgid as u32,
            frozen: 0,
            epoch: 0,
            comm: match comm {
                Some(c) => c,
                None if kind & (rule::SYSCALL | rule::RUNQUEUE) != 0 => {
                    bpf_get_current_comm().unwrap_or_default()
                }
                None => [0; COMM_LEN],
            },
        };
        fire(i, spec, &mut hit);
        return;
    }
}

/// Whether some rule watches syscall `id`.
#[inline(always)]
pub fn syscall_watched(id: u64) -> bool {
    if id >= rule::MAX_SYSCALL as u64 {
        return false;
    }
    SYSCALL_RULED
        .get((id / 64) as u32)
        .is_some_and(|word| *word & (1 << (id % 64)) != 0)
}

/// sys_enter of a watched syscall: remember when it started.
#[inline(always)]
pub fn syscall_enter(tid: u32, ts: u64) {
    let _ = SYSCALL_START.insert(&tid, &ts, 0);
}

/// sys_exit: the latency of the syscall that started at the matching sys_enter.
#[inline(always)]
pub fn syscall_exit(pid_tgid: u64, id: u64, ret: i64, ts: u64) {
    let tid = pid_tgid as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(start) = (unsafe { SYSCALL_START.get(&tid) }).copied() else {
        return;
    };
    let _ = SYSCALL_START.remove(&tid);
    check(
        rule::SYSCALL,
        ts,
        start,
        id,
        ret as u64,
        Subject {
            pid_tgid,
            comm: None,
            task: core::ptr::null(),
        },
    );
}

/// A task became runnable (woken, or preempted while runnable).
#[inline(always)]
pub fn runnable(tid: u32, ts: u64) {
    if tid != 0 {
        let _ = RUNQ_START.insert(&tid, &ts, 0);
    }
}

/// A task (`task`, not yet current) got the CPU: its run-queue wait ends.
#[inline(always)]
pub fn running(task: *const u8, pid: u32, tid: u32, comm: [u8; COMM_LEN], ts: u64) {
    // SAFETY: copied out before removal.
    let Some(start) = (unsafe { RUNQ_START.get(&tid) }).copied() else {
        return;
    };
    let _ = RUNQ_START.remove(&tid);
    check(
        rule::RUNQUEUE,
        ts,
        start,
        0,
        0,
        Subject {
            pid_tgid: ((pid as u64) << 32) | tid as u64,
            comm: Some(comm),
            task,
        },
    );
}

/// block_rq_issue.
#[inline(always)]
pub fn block_issue(dev: u32, sector: u64, ts: u64) {
    let _ = BLOCK_START.insert(&[dev as u64, sector], &ts, 0);
}

/// block_rq_complete.
#[inline(always)]
pub fn block_complete(dev: u32, sector: u64, ts: u64, pid_tgid: u64) {
    let key = [dev as u64, sector];
    // SAFETY: copied out before removal.
    let Some(start) = (unsafe { BLOCK_START.get(&key) }).copied() else {
        return;
    };
    let _ = BLOCK_START.remove(&key);
    check(
        rule::BLOCK,
        ts,
        start,
        dev as u64,
        sector,
        Subject {
            pid_tgid,
            comm: Some([0; COMM_LEN]),
            task: core::ptr::null(),
        },
    );
}

/// irq_handler_entry.
#[inline(always)]
pub fn irq_entry(ts: u64) {
    if let Some(p) = IRQ_START.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of the per-CPU array.
        unsafe { *p = ts };
    }
}

/// irq_handler_exit.
#[inline(always)]
pub fn irq_exit(irq: u32, ts: u64, pid_tgid: u64) {
    let Some(p) = IRQ_START.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot.
    let start = unsafe { *p };
    if start == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { *p = 0 };
    check(
        rule::IRQ,
        ts,
        start,
        irq as u64,
        0,
        Subject {
            pid_tgid,
            comm: Some([0; COMM_LEN]),
            task: core::ptr::null(),
        },
    );
}
