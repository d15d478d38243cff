//! In-kernel latency histograms: the families, the log2 bucket layout and the map values the
//! programs update and the recorder reads at scrape time (`GET /metrics`).
//!
//! A [`Hist`] counts latencies in log2 slots of nanoseconds: slot 0 holds 0 ns, slot `i` holds
//! `[2^(i-1), 2^i)` ns, and the last slot everything from `2^(SLOTS-2)` ns up. Its upper bound
//! `2^i` ns is the Prometheus `le` of slot `i`.

/// Bits of the `HIST_FAMILIES` global: which histogram families the programs update.
pub mod family {
    /// Run-queue wait per cgroup of the waiting task (wakeup or preemption to switch-in).
    pub const RUNQUEUE: u32 = 1;
    /// Preemptions and the time they cost, per (victim cgroup, preempting cgroup).
    pub const PREEMPTION: u32 = 2;
    /// Block request latency, issue to completion, per disk and operation.
    pub const BLOCK: u32 = 4;
    /// Syscall latency, entry to exit, per syscall.
    pub const SYSCALL: u32 = 8;
    /// Hard irq handler time per irq, softirq time per vector.
    pub const IRQ: u32 = 16;
    /// Every family with its configuration name and the event class whose programs it needs.
    pub const ALL: [(u32, &str, &str); 5] = [
        (RUNQUEUE, "runqueue", "sched"),
        (PREEMPTION, "preemption", "sched"),
        (BLOCK, "block", "block"),
        (SYSCALL, "syscall", "syscalls"),
        (IRQ, "irq", "irq"),
    ];
}

/// Log2 slots of a [`Hist`].
pub const SLOTS: usize = 32;

/// Syscall numbers below this have a histogram (the `SYSCALL_HIST` array's size).
pub const MAX_SYSCALL: u32 = 512;
/// Softirq vectors with a histogram (the kernel has 10).
pub const MAX_SOFTIRQ: u32 = 16;
/// cgroups with a run-queue histogram at a time (least recently updated ones are evicted).
pub const MAX_CGROUPS: u32 = 4096;
/// (victim, preempting) cgroup pairs kept at a time (least recently updated ones are evicted).
pub const MAX_PAIRS: u32 = 8192;
/// (disk, operation) keys of block histograms.
pub const MAX_DISK_OPS: u32 = 1024;
/// Hard irq numbers with a histogram at a time.
pub const MAX_IRQS: u32 = 1024;

/// One CPU's histogram of one key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hist {
    /// Counts per log2 slot.
    pub slots: [u64; SLOTS],
    /// Sum of the latencies counted, ns.
    pub sum_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Hist>() == (SLOTS + 1) * 8);

impl Default for Hist {
    fn default() -> Self {
        Hist {
            slots: [0; SLOTS],
            sum_ns: 0,
        }
    }
}

impl Hist {
    /// Adds `other` (another CPU's counts) into `self`.
    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.slots.iter_mut().zip(other.slots.iter()) {
            *a = a.wrapping_add(*b);
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }

    /// Number of latencies counted.
    pub fn count(&self) -> u64 {
        self.slots.iter().fold(0u64, |n, c| n.wrapping_add(*c))
    }
}

/// The slot of a latency of `ns` nanoseconds (see the module doc).
#[inline(always)]
pub fn slot(ns: u64) -> usize {
    // A branchy log2 without loops or `leading_zeros`, which BPF lacks.
    let mut v = ns;
    let mut bits = 0usize;
    if v >= 1 << 32 {
        v >>= 32;
        bits += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        bits += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        bits += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        bits += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        bits += 2;
    }
    if v >= 1 << 1 {
        v >>= 1;
        bits += 1;
    }
    // `bits` is now floor(log2(ns)) for ns > 0; `v` is 1 then, 0 for ns == 0.
    let s = bits + v as usize;
    if s >= SLOTS { SLOTS - 1 } else { s }
}

/// Time lost to preemptions of one (victim, preempting) cgroup pair on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PreemptStat {
    /// Preemptions counted.
    pub count: u64,
    /// Time the victims waited until they ran again, ns.
    pub wait_ns: u64,
}

/// Where a task's run-queue wait started, kept per thread until it runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunqStart {
    /// When it became runnable, ns; 0 once it ran.
    pub ts_ns: u64,
    /// cgroup v2 id of the task, when it was preempted (0 after a wakeup).
    pub victim_cgroup: u64,
    /// cgroup v2 id of the task that preempted it (0 after a wakeup).
    pub preempting_cgroup: u64,
}

/// Offsets of the chain from a task to its cgroup v2 id, `task->cgroups->dfl_cgrp->kn->id`,
/// resolved from the kernel's BTF at load time. `u32::MAX` marks an absent field.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupOffsets {
    /// `task_struct.cgroups` (a `css_set *`).
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp` (a `cgroup *`).
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn` (a `kernfs_node *`).
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (the `u64` the cgroup2 directory's inode number is).
    pub kernfs_node_id: u32,
}

impl CgroupOffsets {
    /// All absent: the loader fills them in.
    pub const ABSENT: CgroupOffsets = CgroupOffsets {
        task_cgroups: u32::MAX,
        css_set_dfl_cgrp: u32::MAX,
        cgroup_kn: u32::MAX,
        kernfs_node_id: u32::MAX,
    };

    /// Whether every offset of the chain was found.
    pub fn complete(&self) -> bool {
        self.task_cgroups != u32::MAX
            && self.css_set_dfl_cgrp != u32::MAX
            && self.cgroup_kn != u32::MAX
            && self.kernfs_node_id != u32::MAX
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): repr(C) structs of integers without implicit padding.
    unsafe impl aya::Pod for super::Hist {}
    unsafe impl aya::Pod for super::PreemptStat {}
    unsafe impl aya::Pod for super::RunqStart {}
    unsafe impl aya::Pod for super::CgroupOffsets {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_log2_buckets() {
        assert_eq!(slot(0), 0);
        assert_eq!(slot(1), 1);
        assert_eq!(slot(2), 2);
        assert_eq!(slot(3), 2);
        assert_eq!(slot(4), 3);
        assert_eq!(slot(1023), 10);
        assert_eq!(slot(1024), 11);
        assert_eq!(slot(u64::MAX), SLOTS - 1);
        for i in 1..SLOTS - 1 {
            // Slot i holds [2^(i-1), 2^i).
            assert_eq!(slot(1 << (i - 1)), i);
            assert_eq!(slot((1 << i) - 1), i);
        }
    }
}
