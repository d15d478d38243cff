//! Freezing an epoch and copying it out, and the freeze lock shared with the kernel's rules
//! (see the [module documentation](super) for the protocol).

use std::collections::VecDeque;
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;
use std::time::Duration;

use schemas::manifest::CpuCoverage;
use schemas::{Record, ctrl, freeze_lock};

use super::{Rings, monotonic_ns, realtime_ns};

/// How long a freeze waits for writers that saw the old epoch.
const GRACE: Duration = Duration::from_millis(2);
/// How long a copy waits, past the grace period, for reserved slots still being written.
const LATE_WRITER: Duration = Duration::from_millis(100);

/// How far out of time order, in ring order, one CPU's records may be for its stream to be
/// ordered with bounded memory. Programs read the clock before they reserve a slot, so one that
/// is interrupted in between (by an irq, softirq or NMI program on the same CPU) publishes after
/// records with later timestamps: the disorder is the few records of the nested programs. A CPU
/// whose window is more disordered than this is sorted in memory instead.
const REORDER: usize = 4096;
/// Records read out of a ring between two sorts of the reorder buffer.
const BATCH: usize = 16_384;

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

/// A frozen epoch still in the kernel's memory, read CPU by CPU on demand (see
/// [`Rings::freeze_epoch`]). Kernel rules cannot freeze, and this process cannot freeze
/// again, until it is dropped.
pub struct FrozenEpoch<'a> {
    rings: &'a Rings,
    epoch: u32,
    plans: Vec<CpuPlan>,
    coverage: Vec<CpuCoverage>,
    /// `CLOCK_MONOTONIC` at the flip.
    pub frozen_monotonic_ns: u64,
    /// `CLOCK_REALTIME` at the flip.
    pub frozen_realtime_ns: u64,
    /// Whether a kernel rule flipped the epoch (this freeze joined it).
    pub kernel_frozen: bool,
    _copying: MutexGuard<'a, ()>,
}

/// What the validation of one CPU's frozen window found.
struct CpuPlan {
    /// Oldest ring index held.
    start: u64,
    /// One past the newest ring index.
    end: u64,
    /// Indexes of slots not published (lost), ascending.
    lost: Vec<u64>,
    /// Whether the records are within [`REORDER`] of time order.
    nearly_ordered: bool,
}

/// What reading one CPU's records out of a frozen epoch gave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emitted {
    /// Records given to the sink.
    pub records: u64,
    /// Timestamp of the first record.
    pub oldest_ts_ns: Option<u64>,
    /// Timestamp of the last record.
    pub newest_ts_ns: Option<u64>,
    /// Slots valid at the freeze's validation and found overwritten when read (a writer that
    /// saw the old epoch was stalled past the grace and the late-writer wait); counted lost.
    pub lost_since_validation: u64,
}

impl Emitted {
    /// Corrects the coverage of the CPU read with what reading found: the records kept and
    /// their time range, and slots found overwritten counted as lost.
    pub fn apply_to(&self, c: &mut CpuCoverage) {
        c.records_kept = self.records;
        c.records_lost += self.lost_since_validation;
        c.oldest_ts_ns = self.oldest_ts_ns;
        c.newest_ts_ns = self.newest_ts_ns;
    }

    fn note(&mut self, recs: &[Record]) {
        if let (Some(first), Some(last)) = (recs.first(), recs.last()) {
            debug_assert!(self.newest_ts_ns.is_none_or(|n| n <= first.ts_ns));
            self.oldest_ts_ns.get_or_insert(first.ts_ns);
            self.newest_ts_ns = Some(last.ts_ns);
            self.records += recs.len() as u64;
        }
    }
}

/// A frozen epoch whose records can be read CPU by CPU, in time order: copied ([`Frozen`]) or
/// still in the rings ([`FrozenEpoch`]).
pub trait FrozenRecords {
    /// What each CPU's records cover, as validated at the freeze.
    fn coverage(&self) -> &[CpuCoverage];
    /// `CLOCK_MONOTONIC` at the flip.
    fn frozen_monotonic_ns(&self) -> u64;
    /// `CLOCK_REALTIME` at the flip.
    fn frozen_realtime_ns(&self) -> u64;
    /// Gives the records of `cpu` to `sink` in time order, in batches.
    fn records<E>(
        &self,
        cpu: u32,
        sink: &mut dyn FnMut(&[Record]) -> Result<(), E>,
    ) -> Result<Emitted, E>;
}

impl FrozenRecords for Frozen {
    fn coverage(&self) -> &[CpuCoverage] {
        &self.coverage
    }
    fn frozen_monotonic_ns(&self) -> u64 {
        self.frozen_monotonic_ns
    }
    fn frozen_realtime_ns(&self) -> u64 {
        self.frozen_realtime_ns
    }
    fn records<E>(
        &self,
        cpu: u32,
        sink: &mut dyn FnMut(&[Record]) -> Result<(), E>,
    ) -> Result<Emitted, E> {
        let recs = &self.cpus[cpu as usize];
        let mut e = Emitted::default();
        sink(recs)?;
        e.note(recs);
        Ok(e)
    }
}

impl FrozenRecords for FrozenEpoch<'_> {
    fn coverage(&self) -> &[CpuCoverage] {
        &self.coverage
    }
    fn frozen_monotonic_ns(&self) -> u64 {
        self.frozen_monotonic_ns
    }
    fn frozen_realtime_ns(&self) -> u64 {
        self.frozen_realtime_ns
    }

    /// Reads the ring of `cpu` in batches, revalidating every slot, and puts the records in
    /// time order with a bounded buffer ([`emit_ordered`]).
    fn records<E>(
        &self,
        cpu: u32,
        sink: &mut dyn FnMut(&[Record]) -> Result<(), E>,
    ) -> Result<Emitted, E> {
        let plan = &self.plans[cpu as usize];
        let mut vanished = 0;
        let mut lost = plan.lost.iter().peekable();
        let recs = (plan.start..plan.end)
            .filter(|idx| lost.next_if_eq(&idx).is_none())
            .filter_map(|idx| {
                let r = self.rings.read_slot(self.epoch, cpu, idx);
                vanished += u64::from(r.is_none());
                r
            });
        let held = (plan.end - plan.start) as usize;
        let mut out = emit_ordered(recs, plan.nearly_ordered, held, sink)?;
        out.lost_since_validation = vanished;
        Ok(out)
    }
}

/// Gives `recs` (in ring order) to `sink` in time order, ties in ring order. When
/// `nearly_ordered` (each timestamp is at least the highest of those more than [`REORDER`]
/// records before it, as [`OrderCheck`] verified), a reorder buffer of at most
/// `BATCH + REORDER` records does: once a record is more than `REORDER` records behind the
/// newest read, no later record is older, so everything up to its timestamp can go. Otherwise
/// all `held` records are sorted at once.
fn emit_ordered<E>(
    recs: impl Iterator<Item = Record>,
    nearly_ordered: bool,
    held: usize,
    sink: &mut dyn FnMut(&[Record]) -> Result<(), E>,
) -> Result<Emitted, E> {
    let mut out = Emitted::default();
    let mut buf: Vec<Record> = Vec::with_capacity(if nearly_ordered {
        (BATCH + REORDER).min(held)
    } else {
        held
    });
    let mut recent: VecDeque<u64> = VecDeque::with_capacity(REORDER + 1);
    let mut floor: Option<u64> = None;
    for r in recs {
        buf.push(r);
        if !nearly_ordered {
            continue;
        }
        recent.push_back(r.ts_ns);
        if recent.len() > REORDER {
            let behind = recent.pop_front().expect("not empty");
            floor = Some(floor.map_or(behind, |f| f.max(behind)));
        }
        if buf.len() >= BATCH + REORDER
            && let Some(floor) = floor
        {
            buf.sort_by_key(|r| r.ts_ns);
            let n = buf.partition_point(|r| r.ts_ns <= floor);
            sink(&buf[..n])?;
            out.note(&buf[..n]);
            buf.drain(..n);
        }
    }
    buf.sort_by_key(|r| r.ts_ns);
    if !buf.is_empty() {
        sink(&buf)?;
        out.note(&buf);
    }
    Ok(out)
}

impl FrozenEpoch<'_> {
    /// Copies every CPU's records out (for tests and small rings: the memory is the epoch's).
    pub fn copy(self) -> Frozen {
        let mut cpus = Vec::with_capacity(self.plans.len());
        let mut coverage = self.coverage.clone();
        for (cpu, c) in (0..).zip(coverage.iter_mut()) {
            let mut recs = Vec::new();
            let e = self
                .records(cpu, &mut |b: &[Record]| {
                    recs.extend_from_slice(b);
                    Ok::<_, std::convert::Infallible>(())
                })
                .unwrap_or_else(|never| match never {});
            e.apply_to(c);
            cpus.push(recs);
        }
        Frozen {
            cpus,
            coverage,
            frozen_monotonic_ns: self.frozen_monotonic_ns,
            frozen_realtime_ns: self.frozen_realtime_ns,
            kernel_frozen: self.kernel_frozen,
        }
    }
}

impl Drop for FrozenEpoch<'_> {
    fn drop(&mut self) {
        self.rings
            .ctrl_word(ctrl::FREEZE_LOCK)
            .store(freeze_lock::FREE, Ordering::SeqCst);
    }
}

/// Checks, record by record in ring order, that each timestamp is at least the highest of those
/// more than [`REORDER`] records before it (what [`FrozenRecords::records`] relies on).
struct OrderCheck {
    recent: VecDeque<u64>,
    floor: u64,
    ok: bool,
}

impl OrderCheck {
    fn new() -> Self {
        OrderCheck {
            recent: VecDeque::with_capacity(REORDER + 1),
            floor: 0,
            ok: true,
        }
    }

    fn push(&mut self, ts: u64) {
        self.ok &= ts >= self.floor;
        self.recent.push_back(ts);
        if self.recent.len() > REORDER {
            self.floor = self.floor.max(self.recent.pop_front().expect("not empty"));
        }
    }
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
        self.freeze_epoch().copy()
    }

    /// Freezes the active epoch (writers move to the other one), or joins the epoch a kernel
    /// rule froze, and validates its slots without copying them: which are published (waiting
    /// a bounded while for late writers), what they cover, and whether each CPU's records can
    /// be put in time order with a small buffer. The records are read from the rings when the
    /// snapshot is written ([`FrozenRecords::records`]), so its memory does not grow with the
    /// rings.
    pub fn freeze_epoch(&self) -> FrozenEpoch<'_> {
        let copying = self.copying.lock().unwrap_or_else(|e| e.into_inner());
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

        let mut plans = Vec::with_capacity(self.ncpu as usize);
        let mut coverage = Vec::with_capacity(self.ncpu as usize);
        // One deadline for every CPU: late writers run at the same time on their CPUs, so a
        // freeze waits for them at most this long in all, not this long per CPU.
        let deadline = std::time::Instant::now() + LATE_WRITER;
        for cpu in 0..self.ncpu {
            let (start_window, start, end) = self.window(cur, cpu);
            let mut unpublished: Vec<u64> = (start..end)
                .filter(|&idx| !self.published(cur, cpu, idx))
                .collect();
            // A writer that reserved a slot may still be running: a virtual CPU can be
            // descheduled by its host for longer than the grace period, between the reservation
            // and the publication. Give such slots a bounded while before counting them lost.
            while !unpublished.is_empty() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
                unpublished.retain(|&idx| !self.published(cur, cpu, idx));
            }
            let mut lost = unpublished;
            let mut order = OrderCheck::new();
            let (mut kept, mut oldest, mut newest) = (0u64, u64::MAX, 0u64);
            let mut skip = lost.clone().into_iter().peekable();
            let mut vanished = Vec::new();
            for idx in start..end {
                if skip.next_if_eq(&idx).is_some() {
                    continue;
                }
                match self.slot_ts(cur, cpu, idx) {
                    Some(ts) => {
                        order.push(ts);
                        kept += 1;
                        oldest = oldest.min(ts);
                        newest = newest.max(ts);
                    }
                    None => vanished.push(idx),
                }
            }
            if !vanished.is_empty() {
                lost.extend(vanished);
                lost.sort_unstable();
            }
            coverage.push(CpuCoverage {
                cpu,
                oldest_ts_ns: (kept > 0).then_some(oldest),
                newest_ts_ns: (kept > 0).then_some(newest),
                records_kept: kept,
                records_overwritten: start - start_window,
                records_lost: lost.len() as u64,
                window_start: start_window,
                window_end: end,
                epoch: cur,
            });
            plans.push(CpuPlan {
                start,
                end,
                lost,
                nearly_ordered: order.ok,
            });
        }
        FrozenEpoch {
            rings: self,
            epoch: cur,
            plans,
            coverage,
            frozen_monotonic_ns,
            frozen_realtime_ns,
            kernel_frozen: kernel,
            _copying: copying,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records in ring order whose timestamps are `ts`, numbered by `pid` in ring order.
    fn ring(ts: &[u64]) -> Vec<Record> {
        (0..)
            .zip(ts)
            .map(|(i, &t)| Record {
                ts_ns: t,
                pid: i,
                ..Record::ZERO
            })
            .collect()
    }

    /// A storm in ring order where every `every`-th program was interrupted between its clock
    /// read and its reservation by `nested` records (so it lands after them).
    fn nested_storm(n: u64, every: u64, nested: u64) -> Vec<u64> {
        let mut ts = Vec::new();
        let mut t = 1_000;
        let mut i = 0;
        while i < n {
            if i % every == every - 1 {
                let clock = t;
                for k in 1..=nested {
                    ts.push(clock + k);
                }
                ts.push(clock);
                t += nested + 1;
                i += nested + 1;
            } else {
                ts.push(t);
                // Equal timestamps now and then: ties keep ring order.
                t += u64::from(i % 7 != 0);
                i += 1;
            }
        }
        ts
    }

    fn ordered(ts: &[u64], nearly: bool) -> (Vec<Record>, Emitted, usize) {
        let recs = ring(ts);
        let mut out = Vec::new();
        let mut batches = 0;
        let e = emit_ordered(
            recs.iter().copied(),
            nearly,
            recs.len(),
            &mut |b: &[Record]| {
                out.extend_from_slice(b);
                batches += 1;
                Ok::<_, ()>(())
            },
        )
        .unwrap();
        (out, e, batches)
    }

    /// What a full stable sort gives, which the bounded buffer must match exactly.
    fn sorted(ts: &[u64]) -> Vec<(u64, u32)> {
        let mut r = ring(ts);
        r.sort_by_key(|r| r.ts_ns);
        r.iter().map(|r| (r.ts_ns, r.pid)).collect()
    }

    #[test]
    fn reorder_buffer_matches_a_full_sort_on_nested_programs() {
        for (n, every, nested) in [(0, 1, 0), (10, 3, 1), (200_000, 50, 3), (100_000, 1000, 40)] {
            let ts = nested_storm(n, every, nested);
            let mut check = OrderCheck::new();
            ts.iter().for_each(|&t| check.push(t));
            assert!(
                check.ok,
                "storm {n}/{every}/{nested} should be nearly ordered"
            );
            let (out, e, batches) = ordered(&ts, true);
            let got: Vec<_> = out.iter().map(|r| (r.ts_ns, r.pid)).collect();
            assert_eq!(got, sorted(&ts), "storm {n}/{every}/{nested}");
            assert_eq!(e.records, ts.len() as u64);
            assert_eq!(e.oldest_ts_ns, got.first().map(|g| g.0));
            assert_eq!(e.newest_ts_ns, got.last().map(|g| g.0));
            if ts.len() > 2 * (BATCH + REORDER) {
                assert!(
                    batches > 2,
                    "{batches} batches: the buffer did not stay bounded"
                );
            }
        }
    }

    #[test]
    fn a_record_older_than_the_reorder_window_fails_the_check_and_is_sorted_in_memory() {
        let mut ts: Vec<u64> = (1_000..1_000 + 3 * REORDER as u64).collect();
        ts.push(5); // published far behind every record before it
        ts.extend(1_000_000..1_000_000 + 2 * (BATCH + REORDER) as u64);
        let mut check = OrderCheck::new();
        ts.iter().for_each(|&t| check.push(t));
        assert!(!check.ok);
        let (out, e, batches) = ordered(&ts, false);
        let got: Vec<_> = out.iter().map(|r| (r.ts_ns, r.pid)).collect();
        assert_eq!(got, sorted(&ts));
        assert_eq!(
            (e.records, e.oldest_ts_ns, batches),
            (ts.len() as u64, Some(5), 1)
        );
    }
}
