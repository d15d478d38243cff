//! The in-kernel rings seen from userspace: loading and attaching the programs, pinning them in
//! bpffs (or adopting the pins of an earlier run), mapping the rings with mmap, and freezing an
//! epoch to copy it out.
//!
//! # Epochs
//!
//! Each CPU has one ring per epoch. Writers record into the active epoch (`CTRL[EPOCH]`). A
//! freeze first resets the inactive epoch's window (`base = head`), then flips `CTRL[EPOCH]`, waits
//! a grace period for programs that read the old epoch just before the flip (they run with
//! preemption off and take well under a microsecond), then copies the frozen rings. Recording
//! never stops, and consecutive snapshots cover consecutive windows: every event lands in exactly
//! one snapshot unless the ring wrapped (counted as overwritten) or it was still being written
//! at the copy (counted as lost). The copy waits up to 100 ms for slots reserved but not yet
//! published: under virtualisation a CPU can stall mid-write for longer than the grace period.
//!
//! # Kernel freezes
//!
//! A kernel latency rule without a post window flips the epoch itself, in the program that saw
//! the slow event, so the frozen window ends exactly there. `CTRL[FREEZE_LOCK]` keeps the two
//! sides apart: either takes it from `FREE` with a compare-and-swap (userspace to `USER` for its
//! whole freeze and copy, the kernel to `KERNEL`). A userspace freeze that finds `KERNEL` copies
//! the epoch the kernel froze instead of flipping again (it joins the kernel's freeze), then frees
//! the lock. While userspace holds the rings for a post-trigger window ([`Rings::hold`]) the
//! kernel does not freeze; its rules still report their hits.
//!
//! # Layout
//!
//! Loading, pinning, adopting and removing the rings is in `load`, the filter and rule tables
//! the programs read in `tables`, freezing and copying an epoch out in `freeze`, and the live
//! fill of the rings in `status`. This module holds what they share: the mapped memory and how
//! to read it.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::Ebpf;
use aya::maps::{Map, MapData, MapError, RingBuf};
use memmap2::MmapMut;
use schemas::{CpuHead, Record, ctrl};

use crate::error::SetupError;

mod freeze;
mod load;
mod pin_dir;
mod status;
mod tables;

pub use freeze::{Emitted, Frozen, FrozenEpoch, FrozenRecords};
pub use load::{possible_cpus, teardown};
pub use pin_dir::{PIN_DIR_MODE, PinDirRefused, PinLock};
pub use schemas::clock::{monotonic_ns, realtime_ns};
pub use status::CpuStatus;
pub use tables::rule_specs;

/// Running rings: mapped into this process, recording in the kernel.
pub struct Rings {
    ncpu: u32,
    slots: u64,
    ring: MmapMut,
    heads: MmapMut,
    ctrl: MmapMut,
    adopted: bool,
    created_realtime_ns: u64,
    rule_hits: Option<RingBuf<MapData>>,
    // The pin directory, locked while the rings live: one daemon per pin directory.
    pins: PinLock,
    // Held while a frozen epoch is being read: a second freeze would flip writers back into it.
    copying: Mutex<()>,
    // Keeps the programs loaded for the life of the process (links are pinned as well).
    _ebpf: Option<Ebpf>,
}

/// Opens the map `name` of the loaded object as a `T`.
fn open_map<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<T, SetupError>
where
    T: TryFrom<&'a mut Map, Error = MapError>,
{
    T::try_from(ebpf.map_mut(name).expect("map in object")).map_err(|source| SetupError::Map {
        what: format!("opening map {name}"),
        source,
    })
}

impl Rings {
    /// Number of CPUs (rings per epoch).
    pub fn ncpu(&self) -> u32 {
        self.ncpu
    }

    /// Records per ring.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// Whether the rings were adopted from an earlier run's pins.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// When the rings were created (`CLOCK_REALTIME` ns).
    pub fn created_realtime_ns(&self) -> u64 {
        self.created_realtime_ns
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        self.pins.path()
    }

    fn ctrl_word(&self, i: u32) -> &AtomicU64 {
        assert!(i < ctrl::LEN);
        // SAFETY: the mapping holds ctrl::LEN aligned u64 words and lives as long as self.
        unsafe { AtomicU64::from_ptr((self.ctrl.as_ptr() as *mut u64).add(i as usize)) }
    }

    fn head(&self, epoch: u32, cpu: u32) -> (&AtomicU64, &AtomicU64) {
        assert!(epoch < 2 && cpu < self.ncpu);
        let idx = (epoch * self.ncpu + cpu) as usize;
        // SAFETY: the mapping holds 2 * ncpu CpuHead blocks of 64 bytes; head and base are its
        // first two aligned u64 words.
        unsafe {
            let p = self.heads.as_ptr().add(idx * size_of::<CpuHead>()) as *mut u64;
            (AtomicU64::from_ptr(p), AtomicU64::from_ptr(p.add(1)))
        }
    }

    fn slot(&self, epoch: u32, cpu: u32, idx: u64) -> *const Record {
        let ring = (epoch * self.ncpu + cpu) as u64;
        let i = ring * self.slots + (idx & (self.slots - 1));
        // SAFETY: i < 2 * ncpu * slots, the mapping's record count.
        unsafe { (self.ring.as_ptr() as *const Record).add(i as usize) }
    }

    /// Reads slot `idx` if it holds the record published with that index.
    fn read_slot(&self, epoch: u32, cpu: u32, idx: u64) -> Option<Record> {
        let p = self.slot(epoch, cpu, idx);
        // SAFETY: `p` is inside the mapping; records are plain integers. A writer may be
        // changing the slot; the seq checks before and after reject a torn copy.
        let (seq1, rec) = unsafe {
            let seq1 = AtomicU64::from_ptr(&raw const (*p).seq as *mut u64).load(Ordering::Acquire);
            (seq1, std::ptr::read_volatile(p))
        };
        // SAFETY: as above.
        let seq2 =
            unsafe { AtomicU64::from_ptr(&raw const (*p).seq as *mut u64) }.load(Ordering::Acquire);
        (seq1 == idx + 1 && seq2 == seq1).then_some(rec)
    }

    /// The publication word of slot `idx`.
    fn seq(&self, epoch: u32, cpu: u32, idx: u64) -> u64 {
        let p = self.slot(epoch, cpu, idx);
        // SAFETY: `p` is inside the mapping; `seq` is an aligned u64 the kernel writes.
        unsafe { AtomicU64::from_ptr(&raw const (*p).seq as *mut u64) }.load(Ordering::Acquire)
    }

    /// Whether slot `idx` holds the record published with that index (without copying it).
    fn published(&self, epoch: u32, cpu: u32, idx: u64) -> bool {
        self.seq(epoch, cpu, idx) == idx + 1
    }

    /// The timestamp of slot `idx` if it holds the record published with that index.
    fn slot_ts(&self, epoch: u32, cpu: u32, idx: u64) -> Option<u64> {
        let p = self.slot(epoch, cpu, idx);
        let seq1 = self.seq(epoch, cpu, idx);
        // SAFETY: `p` is inside the mapping; a torn read is rejected by the seq checks.
        let ts = unsafe { std::ptr::read_volatile(&raw const (*p).ts_ns) };
        let seq2 = self.seq(epoch, cpu, idx);
        (seq1 == idx + 1 && seq2 == seq1).then_some(ts)
    }

    /// Ring indexes of the current window of (epoch, cpu): where the window started, the oldest
    /// index still held (later than the start once the ring wrapped), and one past the newest.
    fn window(&self, epoch: u32, cpu: u32) -> (u64, u64, u64) {
        let (head, base) = self.head(epoch, cpu);
        let end = head.load(Ordering::SeqCst);
        let start_window = base.load(Ordering::SeqCst).min(end);
        (
            start_window,
            start_window.max(end.saturating_sub(self.slots)),
            end,
        )
    }

    /// The epoch writers are recording into now.
    pub fn active_epoch(&self) -> u32 {
        (self.ctrl_word(ctrl::EPOCH).load(Ordering::SeqCst) & 1) as u32
    }

    /// The rule hits ring buffer, for the daemon to poll (once; `None` without rules).
    pub fn take_rule_hits(&mut self) -> Option<RingBuf<MapData>> {
        self.rule_hits.take()
    }
}
