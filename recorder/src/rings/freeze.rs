//! Freezing an epoch and copying it out, and the freeze lock shared with the kernel's rules
//! (see the [module documentation](super) for the protocol).

use std::sync::atomic::Ordering;
use std::time::Duration;

use schemas::manifest::CpuCoverage;
use schemas::{Record, ctrl, freeze_lock};

use super::{Rings, monotonic_ns, realtime_ns};

/// How long a freeze waits for writers that saw the old epoch.
const GRACE: Duration = Duration::from_millis(2);
/// How long a copy waits, past the grace period, for reserved slots still being written.
const LATE_WRITER: Duration = Duration::from_millis(100);

/// A frozen epoch copied out of the kernel.
pub struct Frozen {
    /// Records per CPU, in time order.
    pub cpus: Vec<Vec<Record>>,
    /// What each CPU's records cover.
    pub coverage: Vec<CpuCoverage>,
    /// `CLOCK_MONOTONIC` at the flip.
    pub frozen_monotonic_ns: u64,
    /// `CLOCK_REALTIME` at the flip.
    pub frozen_realtime_ns: u64,
    /// Whether a kernel rule flipped the epoch (this copy joined its freeze).
    pub kernel_frozen: bool,
}

impl Rings {
    /// Holds off kernel freezes (for a post-trigger window) until the next [`Rings::freeze`].
    /// Returns false when a kernel freeze is already waiting to be copied: the next freeze
    /// joins it.
    pub fn hold(&self) -> bool {
        let lock = self.ctrl_word(ctrl::FREEZE_LOCK);
        match lock.compare_exchange(
            freeze_lock::FREE,
            freeze_lock::USER,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => true,
            Err(v) => v == freeze_lock::USER,
        }
    }

    /// Whether a kernel rule froze the rings and they wait to be copied.
    pub fn kernel_frozen(&self) -> bool {
        self.ctrl_word(ctrl::FREEZE_LOCK).load(Ordering::SeqCst) == freeze_lock::KERNEL
    }

    /// Lets the kernel freeze again without copying what it froze (the governor suppressed the
    /// hit), or ends a [`Rings::hold`] without freezing.
    pub fn release(&self) {
        self.ctrl_word(ctrl::FREEZE_LOCK)
            .store(freeze_lock::FREE, Ordering::SeqCst);
    }

    /// Freezes the active epoch (writers move to the other one) and copies it out. When a
    /// kernel rule froze an epoch that has not been copied yet, copies that one instead.
    pub fn freeze(&self) -> Frozen {
        let lock = self.ctrl_word(ctrl::FREEZE_LOCK);
        let kernel = match lock.compare_exchange(
            freeze_lock::FREE,
            freeze_lock::USER,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Err(freeze_lock::KERNEL) => true,
            // FREE (now ours) or USER (held by `hold` of this process: freezes are serialised
            // by the caller).
            _ => false,
        };
        let (cur, frozen_monotonic_ns, frozen_realtime_ns) = if kernel {
            let ts = self.ctrl_word(ctrl::KFREEZE_TS).load(Ordering::SeqCst);
            let epoch = (self.ctrl_word(ctrl::KFREEZE_EPOCH).load(Ordering::SeqCst) & 1) as u32;
            let now = monotonic_ns();
            let offset = realtime_ns().wrapping_sub(now);
            // Writers that read the epoch just before the kernel's flip get their grace too.
            if let Some(left) = GRACE.checked_sub(Duration::from_nanos(now.saturating_sub(ts))) {
                std::thread::sleep(left);
            }
            (epoch, ts, ts.wrapping_add(offset))
        } else {
            let cur = self.active_epoch();
            let next = cur ^ 1;
            // The inactive epoch's last readers finished a grace period ago: restart its window.
            for cpu in 0..self.ncpu {
                let (head, base) = self.head(next, cpu);
                base.store(head.load(Ordering::SeqCst), Ordering::SeqCst);
            }
            let frozen_monotonic_ns = monotonic_ns();
            let frozen_realtime_ns = realtime_ns();
            self.ctrl_word(ctrl::EPOCH)
                .store(next as u64, Ordering::SeqCst);
            self.ctrl_word(ctrl::FLIPS).fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(GRACE);
            (cur, frozen_monotonic_ns, frozen_realtime_ns)
        };

        let mut cpus = Vec::with_capacity(self.ncpu as usize);
        let mut coverage = Vec::with_capacity(self.ncpu as usize);
        for cpu in 0..self.ncpu {
            let (start_window, start, end) = self.window(cur, cpu);
            let mut recs = Vec::with_capacity((end - start) as usize);
            let mut unpublished = Vec::new();
            for idx in start..end {
                match self.read_slot(cur, cpu, idx) {
                    Some(r) => recs.push(r),
                    None => unpublished.push(idx),
                }
            }
            // A writer that reserved a slot may still be running: a virtual CPU can be
            // descheduled by its host for longer than the grace period, between the reservation
            // and the publication. Give such slots a bounded while before counting them lost.
            let deadline = std::time::Instant::now() + LATE_WRITER;
            while !unpublished.is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
                unpublished.retain(|&idx| match self.read_slot(cur, cpu, idx) {
                    Some(r) => {
                        recs.push(r);
                        false
                    }
                    None => true,
                });
            }
            let lost = unpublished.len() as u64;
            // Programs interrupted by other programs on the same CPU reserve out of time
            // order; the sort is stable and nearly free on almost-sorted input.
            recs.sort_by_key(|r| r.ts_ns);
            coverage.push(CpuCoverage {
                cpu,
                oldest_ts_ns: recs.first().map(|r| r.ts_ns),
                newest_ts_ns: recs.last().map(|r| r.ts_ns),
                records_kept: recs.len() as u64,
                records_overwritten: start - start_window,
                records_lost: lost,
                window_start: start_window,
                window_end: end,
                epoch: cur,
            });
            cpus.push(recs);
        }
        lock.store(freeze_lock::FREE, Ordering::SeqCst);
        Frozen {
            cpus,
            coverage,
            frozen_monotonic_ns,
            frozen_realtime_ns,
            kernel_frozen: kernel,
        }
    }
}
