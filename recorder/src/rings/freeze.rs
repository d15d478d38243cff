//! Freezing the main ring, copying it out and folding the spill back, and the freeze lock
//! shared with the kernel's rules (see the [module documentation](super) for the protocol).

use std::collections::VecDeque;
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use schemas::compact::{self, PACKET_HEADER_SIZE, PACKET_SHIFT, PACKET_SIZE, Stop};
use schemas::manifest::CpuCoverage;
use schemas::{Record, ctrl, freeze_lock};

use super::{MAIN, Rings, SPILL, monotonic_ns, realtime_ns, word};

/// How long a freeze waits for writers that saw the old area.
const GRACE: Duration = Duration::from_millis(2);
/// How long a copy waits, past the grace period, for reserved records still being written.
const LATE_WRITER: Duration = Duration::from_millis(100);

// How far out of time order, in ring order, one CPU's records may be for its stream to be
// ordered with bounded memory, and the batches they go out in: `compact::Reorder`'s. A CPU
// whose window is more disordered is sorted in memory instead.
#[cfg(test)]
const REORDER: usize = compact::Reorder::WINDOW;
#[cfg(test)]
const BATCH: usize = compact::Reorder::BATCH;

const P: u64 = PACKET_SIZE as u64;

/// A frozen main ring copied out of the kernel.
pub struct Frozen {
    /// Records per CPU, in time order.
    pub cpus: Vec<Vec<Record>>,
    /// What each CPU's records cover.
    pub coverage: Vec<CpuCoverage>,
    /// `CLOCK_MONOTONIC` at the freeze.
    pub frozen_monotonic_ns: u64,
    /// `CLOCK_REALTIME` at the freeze.
    pub frozen_realtime_ns: u64,
    /// Whether a kernel rule froze the ring (this copy joined its freeze).
    pub kernel_frozen: bool,
}

/// A frozen main ring still in the kernel's memory, read CPU by CPU on demand (see
/// [`Rings::freeze_epoch`]). Writers record into the spill until it is dropped, which folds the
/// spill back into the main ring; kernel rules cannot freeze, and this process cannot freeze
/// again, until then.
pub struct FrozenEpoch<'a> {
    rings: &'a Rings,
    plans: Vec<CpuPlan>,
    coverage: Vec<CpuCoverage>,
    /// `CLOCK_MONOTONIC` at the freeze.
    pub frozen_monotonic_ns: u64,
    /// `CLOCK_REALTIME` at the freeze.
    pub frozen_realtime_ns: u64,
    /// Whether a kernel rule froze the ring (this freeze joined it).
    pub kernel_frozen: bool,
    _copying: MutexGuard<'a, ()>,
}

/// What the validation of one CPU's frozen window found.
struct CpuPlan {
    /// The packets of the window, oldest first: absolute number and where its records end
    /// (the packet's end, the writers' position in the newest one, or a record found torn).
    packets: Vec<(u64, usize)>,
    /// Records the window holds.
    kept: u64,
    /// Whether the records are within [`compact::Reorder::WINDOW`] of time order.
    nearly_ordered: bool,
}

/// What reading one CPU's records out of a frozen ring gave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Emitted {
    /// Records given to the sink.
    pub records: u64,
    /// Timestamp of the first record.
    pub oldest_ts_ns: Option<u64>,
    /// Timestamp of the last record.
    pub newest_ts_ns: Option<u64>,
    /// Records valid at the freeze's validation and not found when read (a writer that saw
    /// the old area was stalled past the grace and the late-writer wait); counted lost.
    pub lost_since_validation: u64,
}

impl Emitted {
    /// Corrects the coverage of the CPU read with what reading found: the records kept and
    /// their time range, and records found overwritten counted as lost.
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

/// Takes a packet as a snapshot file holds it and its record count.
pub type PacketSink<'a, E> = dyn FnMut(&[u8], u64) -> Result<(), E> + 'a;

/// A frozen ring whose records can be read CPU by CPU, in time order: copied ([`Frozen`]) or
/// still in the kernel ([`FrozenEpoch`]).
pub trait FrozenRecords {
    /// What each CPU's records cover, as validated at the freeze.
    fn coverage(&self) -> &[CpuCoverage];
    /// `CLOCK_MONOTONIC` at the freeze.
    fn frozen_monotonic_ns(&self) -> u64;
    /// `CLOCK_REALTIME` at the freeze.
    fn frozen_realtime_ns(&self) -> u64;
    /// Gives the records of `cpu` to `sink` in time order, in batches.
    fn records<E>(
        &self,
        cpu: u32,
        sink: &mut dyn FnMut(&[Record]) -> Result<(), E>,
    ) -> Result<Emitted, E>;
    /// Whether [`FrozenRecords::packets`] can give the records of `cpu`.
    fn has_packets(&self, _cpu: u32) -> bool {
        false
    }
    /// Gives the packets of `cpu` to `sink` as a snapshot file holds them (numbered from 0,
    /// lap tag 0, padded after their last record), each with its record count. Only when
    /// [`FrozenRecords::has_packets`].
    fn packets<E>(&self, cpu: u32, sink: &mut PacketSink<'_, E>) -> Result<Emitted, E> {
        let _ = (cpu, sink);
        unreachable!("no packets to give")
    }
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

    /// Reads the packets of `cpu` one at a time, decoding their records, and puts them in
    /// time order with a bounded buffer ([`emit_ordered`]).
    fn records<E>(
        &self,
        cpu: u32,
        sink: &mut dyn FnMut(&[Record]) -> Result<(), E>,
    ) -> Result<Emitted, E> {
        let plan = &self.plans[cpu as usize];
        let rings = self.rings;
        let mut buf = Box::new([0u8; PACKET_SIZE]);
        let mut pending: VecDeque<Record> = VecDeque::new();
        let mut packets = plan.packets.iter();
        let recs = std::iter::from_fn(|| {
            loop {
                if let Some(r) = pending.pop_front() {
                    return Some(r);
                }
                let &(pkt, end) = packets.next()?;
                rings.read_packet(MAIN, cpu, pkt, &mut buf);
                let lap = rings.lap(MAIN, pkt);
                compact::walk_packet(&buf[..], pkt, lap, end, cpu, |f| {
                    pending.push_back(f.record)
                });
            }
        });
        let mut out = emit_ordered(recs, plan.nearly_ordered, plan.kept as usize, sink)?;
        out.lost_since_validation = plan.kept.saturating_sub(out.records);
        Ok(out)
    }

    /// Packets can go to a file as they are when the file's reader can order their records
    /// with its bounded buffer, as it could the ring's.
    fn has_packets(&self, cpu: u32) -> bool {
        self.plans[cpu as usize].nearly_ordered
    }

    fn packets<E>(&self, cpu: u32, sink: &mut PacketSink<'_, E>) -> Result<Emitted, E> {
        let plan = &self.plans[cpu as usize];
        let mut buf = Box::new([0u8; PACKET_SIZE]);
        let mut out = Emitted::default();
        let mut number = 0;
        for &(pkt, end) in &plan.packets {
            self.rings.read_packet(MAIN, cpu, pkt, &mut buf);
            let (mut n, mut stop) = (0u64, end);
            let lap = self.rings.lap(MAIN, pkt);
            let walked = compact::scan_packet(&buf[..], pkt, lap, end, |ts| {
                n += 1;
                out.oldest_ts_ns = Some(out.oldest_ts_ns.map_or(ts, |o| o.min(ts)));
                out.newest_ts_ns = Some(out.newest_ts_ns.map_or(ts, |o| o.max(ts)));
            });
            match walked {
                Some(Stop::End) => {}
                Some(Stop::Torn(at)) => stop = at,
                // Written over since the validation: its records are lost.
                None => continue,
            }
            compact::renumber(&mut buf[..], number, 0, stop);
            sink(&buf[..], n)?;
            out.records += n;
            number += 1;
        }
        out.lost_since_validation = plan.kept.saturating_sub(out.records);
        Ok(out)
    }
}

/// Gives `recs` (in ring order) to `sink` in time order, ties in ring order: through a
/// [`compact::Reorder`] when `nearly_ordered` (each timestamp is at least the highest of those
/// more than [`compact::Reorder::WINDOW`] records before it, as [`OrderCheck`] verified), else by sorting all
/// `held` records at once.
fn emit_ordered<E>(
    recs: impl Iterator<Item = Record>,
    nearly_ordered: bool,
    held: usize,
    sink: &mut dyn FnMut(&[Record]) -> Result<(), E>,
) -> Result<Emitted, E> {
    let mut out = Emitted::default();
    let mut noted = |b: &[Record]| {
        out.note(b);
        sink(b)
    };
    if nearly_ordered {
        let mut reorder = compact::Reorder::default();
        for r in recs {
            reorder.push(r, &mut noted)?;
        }
        reorder.finish(&mut noted)?;
    } else {
        let mut all: Vec<Record> = Vec::with_capacity(held);
        all.extend(recs);
        all.sort_by_key(|r| r.ts_ns);
        if !all.is_empty() {
            noted(&all)?;
        }
    }
    Ok(out)
}

impl FrozenEpoch<'_> {
    /// Copies every CPU's records out (for tests and small rings: the memory is the ring's).
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
        self.rings.fold();
        self.rings
            .ctrl_word(ctrl::FREEZE_LOCK)
            .store(freeze_lock::FREE, Ordering::SeqCst);
    }
}

/// Checks, record by record in ring order, that each timestamp is at least the highest of those
/// more than [`compact::Reorder::WINDOW`] records before it (what [`FrozenRecords::records`] relies on).
struct OrderCheck {
    floor: compact::WindowFloor,
    ok: bool,
}

impl OrderCheck {
    fn new() -> Self {
        OrderCheck {
            floor: compact::WindowFloor::default(),
            ok: true,
        }
    }

    fn push(&mut self, ts: u64) {
        self.ok &= self.floor.get().is_none_or(|f| ts >= f);
        self.floor.push(ts);
    }
}

impl Rings {
    /// Holds off kernel freezes (for a post-trigger window) until the next [`Rings::freeze`].
    /// Returns false when a kernel freeze is already waiting to be copied: the next freeze
    /// joins it.
    pub fn hold(&self) -> bool {
        // After any copy under way: its end frees the lock, which this then takes.
        let _copying = self.copying.lock().unwrap_or_else(|e| e.into_inner());
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
    /// hit: the spill is folded back, so no history is lost), or ends a [`Rings::hold`]
    /// without freezing.
    pub fn release(&self) {
        if self.active_epoch() == SPILL {
            let _copying = self.copying.lock().unwrap_or_else(|e| e.into_inner());
            self.fold();
        }
        self.ctrl_word(ctrl::FREEZE_LOCK)
            .store(freeze_lock::FREE, Ordering::SeqCst);
    }

    /// Freezes the main ring (writers move to the spill) and copies it out, then folds. When a
    /// kernel rule froze the ring and it has not been copied yet, copies that.
    pub fn freeze(&self) -> Frozen {
        self.freeze_epoch().copy()
    }

    /// Freezes the main ring (writers move to the spill), or joins the freeze of a kernel
    /// rule, and validates its packets without copying them: which records are written
    /// (waiting a bounded while for late writers), what they cover, and whether each CPU's
    /// records can be put in time order with a small buffer. The records are read from the
    /// ring when the snapshot is written ([`FrozenRecords::records`]), so its memory does not
    /// grow with the rings; dropping the result folds the spill back.
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
        let (frozen_monotonic_ns, frozen_realtime_ns) = if kernel {
            let ts = self.ctrl_word(ctrl::KFREEZE_TS).load(Ordering::SeqCst);
            let now = monotonic_ns();
            let offset = realtime_ns().wrapping_sub(now);
            // Writers that read the area just before the kernel's switch get their grace too.
            if let Some(left) = GRACE.checked_sub(Duration::from_nanos(now.saturating_sub(ts))) {
                std::thread::sleep(left);
            }
            (ts, ts.wrapping_add(offset))
        } else {
            let frozen_monotonic_ns = monotonic_ns();
            let frozen_realtime_ns = realtime_ns();
            self.ctrl_word(ctrl::EPOCH)
                .store(SPILL as u64, Ordering::SeqCst);
            self.ctrl_word(ctrl::FLIPS).fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(GRACE);
            (frozen_monotonic_ns, frozen_realtime_ns)
        };

        let mut plans = Vec::with_capacity(self.ncpu as usize);
        let mut coverage = Vec::with_capacity(self.ncpu as usize);
        // One deadline for every CPU: late writers run at the same time on their CPUs, so a
        // freeze waits for them at most this long in all, not this long per CPU.
        let deadline = Instant::now() + LATE_WRITER;
        let mut buf = Box::new([0u8; PACKET_SIZE]);
        for cpu in 0..self.ncpu {
            let (plan, c) = self.validate(cpu, deadline, &mut buf);
            plans.push(plan);
            coverage.push(c);
        }
        FrozenEpoch {
            rings: self,
            plans,
            coverage,
            frozen_monotonic_ns,
            frozen_realtime_ns,
            kernel_frozen: kernel,
            _copying: copying,
        }
    }

    /// The absolute packets of (area, cpu) from where its window starts (`base`, or the oldest
    /// packet still held once the ring wrapped) to its newest, each with where its records end.
    pub(super) fn window_packets(
        &self,
        area: u32,
        cpu: u32,
    ) -> impl DoubleEndedIterator<Item = (u64, usize)> + use<> {
        let head = self.hword(area, cpu, word::HEAD).load(Ordering::SeqCst);
        let base = self
            .hword(area, cpu, word::BASE)
            .load(Ordering::SeqCst)
            .min(head);
        // One past the newest packet; an empty window is an empty range.
        let end = head.div_ceil(P);
        let held_from = end.saturating_sub(self.area_packets(area));
        let first = if head == base {
            end
        } else {
            (base >> PACKET_SHIFT).max(held_from)
        };
        (first..end).map(move |pkt| {
            let stop = if pkt == head >> PACKET_SHIFT {
                (head & (P - 1)) as usize
            } else {
                PACKET_SIZE
            };
            (pkt, stop)
        })
    }

    /// Walks packet `pkt` of (area, cpu) up to `end`, waiting until `deadline` for a record
    /// reserved but not yet written. Returns where its readable records end and their
    /// timestamps in ring order, or `None` when the packet is not there (never opened, or
    /// written over).
    fn settle_packet(
        &self,
        area: u32,
        cpu: u32,
        (pkt, end): (u64, usize),
        deadline: Instant,
        buf: &mut [u8; PACKET_SIZE],
        out: &mut Vec<u64>,
    ) -> Option<usize> {
        let lap = self.lap(area, pkt);
        loop {
            out.clear();
            self.read_packet(area, cpu, pkt, buf);
            let stop = compact::scan_packet(&buf[..], pkt, lap, end, |ts| out.push(ts));
            let torn_at = match stop {
                Some(Stop::End) => return Some(end),
                Some(Stop::Torn(at)) => Some(at),
                None => None,
            };
            if Instant::now() >= deadline {
                return torn_at;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Validates the frozen main ring of `cpu`: its packets, records and coverage.
    fn validate(
        &self,
        cpu: u32,
        deadline: Instant,
        buf: &mut [u8; PACKET_SIZE],
    ) -> (CpuPlan, CpuCoverage) {
        let w = |i| self.hword(MAIN, cpu, i).load(Ordering::SeqCst);
        let head = w(word::HEAD);
        let base = w(word::BASE).min(head);
        let in_window = w(word::WRITTEN).saturating_sub(w(word::BASE_WRITTEN))
            + w(word::FOLDED).saturating_sub(w(word::BASE_FOLDED));
        let mut lost = w(word::FOLD_LOST).saturating_sub(w(word::BASE_FOLD_LOST));
        let mut order = OrderCheck::new();
        let (mut kept, mut oldest, mut newest) = (0u64, u64::MAX, 0u64);
        let mut packets = Vec::new();
        let mut recs = Vec::new();
        for (pkt, end) in self.window_packets(MAIN, cpu) {
            match self.settle_packet(MAIN, cpu, (pkt, end), deadline, buf, &mut recs) {
                Some(stop) => {
                    // A record still unwritten at the deadline, and the rest of its packet,
                    // are lost: count it as one.
                    lost += u64::from(stop < end && end - stop >= 8);
                    for &ts in &recs {
                        order.push(ts);
                        oldest = oldest.min(ts);
                        newest = newest.max(ts);
                    }
                    kept += recs.len() as u64;
                    packets.push((pkt, stop));
                }
                // Opened but its header not written by the deadline: its records are lost.
                None => lost += 1,
            }
        }
        let coverage = CpuCoverage {
            cpu,
            oldest_ts_ns: (kept > 0).then_some(oldest),
            newest_ts_ns: (kept > 0).then_some(newest),
            records_kept: kept,
            records_overwritten: in_window.saturating_sub(kept + lost),
            records_lost: lost,
            window_start: base,
            window_end: head,
            epoch: MAIN,
        };
        let plan = CpuPlan {
            packets,
            kept,
            nearly_ordered: order.ok,
        };
        (plan, coverage)
    }

    /// Folds the spill back into the main ring and moves writers back to it (a no-op when they
    /// are in the main ring). For each CPU: pad the main ring's newest packet, leave a hole of
    /// the spill's size after it, start the next window at the hole and writers after it, then
    /// copy the spill's packets into the hole (renumbered) and pad what they do not fill.
    /// Records the spill lost by wrapping are counted in `fold_lost`. Only while the caller
    /// holds `copying` and no freeze is being read.
    pub(super) fn fold(&self) {
        if self.active_epoch() == MAIN {
            return;
        }
        let mut holes = Vec::with_capacity(self.ncpu as usize);
        for cpu in 0..self.ncpu {
            let h = |i| self.hword(MAIN, cpu, i);
            let head = h(word::HEAD).load(Ordering::SeqCst);
            let at = (head & (P - 1)) as usize;
            if at != 0 {
                let pkt = head >> PACKET_SHIFT;
                self.pad_packet(MAIN, cpu, pkt, at);
            }
            let hole = head.next_multiple_of(P);
            h(word::BASE).store(hole, Ordering::SeqCst);
            h(word::BASE_WRITTEN).store(h(word::WRITTEN).load(Ordering::SeqCst), Ordering::SeqCst);
            h(word::BASE_FOLDED).store(h(word::FOLDED).load(Ordering::SeqCst), Ordering::SeqCst);
            h(word::BASE_FOLD_LOST)
                .store(h(word::FOLD_LOST).load(Ordering::SeqCst), Ordering::SeqCst);
            h(word::HEAD).store(hole + self.spill * P, Ordering::SeqCst);
            holes.push(hole >> PACKET_SHIFT);
        }
        self.ctrl_word(ctrl::EPOCH)
            .store(MAIN as u64, Ordering::SeqCst);
        std::thread::sleep(GRACE);
        let deadline = Instant::now() + LATE_WRITER;
        let mut buf = Box::new([0u8; PACKET_SIZE]);
        let mut recs = Vec::new();
        for (cpu, hole) in (0..self.ncpu).zip(holes) {
            let spill = |i| self.hword(SPILL, cpu, i);
            let written = spill(word::WRITTEN).load(Ordering::SeqCst)
                - spill(word::BASE_WRITTEN).load(Ordering::SeqCst);
            let mut folded = 0u64;
            let mut next = hole;
            let mut last_ts = monotonic_ns();
            for (pkt, end) in self.window_packets(SPILL, cpu) {
                let Some(stop) =
                    self.settle_packet(SPILL, cpu, (pkt, end), deadline, &mut buf, &mut recs)
                else {
                    continue;
                };
                folded += recs.len() as u64;
                if let Some(&ts) = recs.last() {
                    last_ts = ts;
                }
                compact::renumber(&mut buf[..], next, self.lap(MAIN, next), stop);
                self.write_packet(MAIN, cpu, next, 0, &buf[..]);
                next += 1;
            }
            while next < hole + self.spill {
                let mut empty = [0u8; PACKET_SIZE];
                empty[..8].copy_from_slice(&(next + 1).to_le_bytes());
                empty[8..16].copy_from_slice(&last_ts.to_le_bytes());
                compact::fill_pad(&mut empty, PACKET_HEADER_SIZE, self.lap(MAIN, next));
                self.write_packet(MAIN, cpu, next, 0, &empty);
                next += 1;
            }
            let h = |i| self.hword(MAIN, cpu, i);
            h(word::FOLDED).fetch_add(folded, Ordering::SeqCst);
            let lost = written.saturating_sub(folded);
            h(word::FOLD_LOST).fetch_add(lost, Ordering::SeqCst);
            if lost > 0 {
                eprintln!(
                    "flightrec: cpu {cpu}: the spill wrapped while the rings were copied: {lost} \
                     records written meanwhile were lost (counted in the next snapshot); a larger \
                     recorder.spill_size than {} KiB keeps them",
                    self.spill * PACKET_SIZE as u64 / 1024
                );
            }
            // The next spill starts on a fresh packet, its window empty.
            let sh = spill(word::HEAD).load(Ordering::SeqCst).next_multiple_of(P);
            spill(word::HEAD).store(sh, Ordering::SeqCst);
            spill(word::BASE).store(sh, Ordering::SeqCst);
            spill(word::BASE_WRITTEN).store(
                spill(word::WRITTEN).load(Ordering::SeqCst),
                Ordering::SeqCst,
            );
        }
    }

    /// Reserves `len` bytes (a multiple of 8) at the writers' position in the main ring of
    /// `cpu` and never writes them, as a program stalled between its reservation and its
    /// write would. For the tests of torn records; nothing else calls it.
    #[doc(hidden)]
    pub fn reserve_unwritten(&self, cpu: u32, len: u64) -> bool {
        let head = self.hword(MAIN, cpu, word::HEAD);
        let old = head.load(Ordering::SeqCst);
        let off = old & (P - 1);
        off != 0
            && off + len <= P
            && head
                .compare_exchange(old, old + len, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// Puts rings adopted from an earlier daemon back in order: writers left in the spill by a
    /// daemon that died during a copy are folded back (a kernel freeze that is still waiting
    /// stays for this daemon to copy).
    pub(super) fn recover(&self) {
        let lock = self.ctrl_word(ctrl::FREEZE_LOCK);
        if lock.load(Ordering::SeqCst) == freeze_lock::KERNEL {
            return;
        }
        let _copying = self.copying.lock().unwrap_or_else(|e| e.into_inner());
        self.fold();
        lock.store(freeze_lock::FREE, Ordering::SeqCst);
    }

    /// Pads packet `pkt` of (area, cpu) from `from` to its end.
    fn pad_packet(&self, area: u32, cpu: u32, pkt: u64, from: usize) {
        let mut buf = Box::new([0u8; PACKET_SIZE]);
        self.read_packet(area, cpu, pkt, &mut buf);
        compact::fill_pad(&mut buf[..], from, self.lap(area, pkt));
        self.write_packet(area, cpu, pkt, from, &buf[from..]);
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
