//! The in-kernel rings seen from userspace: loading and attaching the programs, pinning them in
//! bpffs (or adopting the pins of an earlier run), mapping the rings with mmap, and freezing
//! them to copy them out.
//!
//! # Main ring and spill
//!
//! Each CPU has a main ring of packets (`schemas::compact`) and a spill a sixteenth its size.
//! Writers record into the area `CTRL[EPOCH]` names. A freeze moves them to the spill (one
//! store), waits a grace period for programs that read the old area just before (they run with
//! preemption off and take well under a microsecond), and reads the frozen main ring out while
//! recording carries on in the spill. After the copy the recorder *folds* the spill back: it
//! leaves a hole of the spill's size after the main ring's newest packet, moves writers back
//! to the main ring after the hole, and copies the spill's packets into it. The history stays
//! one ring, and consecutive snapshots cover consecutive windows: every event lands in exactly
//! one snapshot unless the ring wrapped (counted as overwritten), the spill wrapped during a
//! copy (counted as lost in the next snapshot), or a record was still being written at the copy
//! (counted as lost). The copy waits up to 100 ms for records reserved but not yet written:
//! under virtualisation a CPU can stall mid-write for longer than the grace period.
//!
//! # Kernel freezes
//!
//! A kernel latency rule without a post window moves writers to the spill itself, in the
//! program that saw the slow event, so the frozen window ends exactly there. `CTRL[FREEZE_LOCK]`
//! keeps the two sides apart: either takes it from `FREE` with a compare-and-swap (userspace to
//! `USER` for its whole freeze, copy and fold, the kernel to `KERNEL`). A userspace freeze that
//! finds `KERNEL` copies what the kernel froze (it joins the kernel's freeze), then folds and
//! frees the lock. While userspace holds the rings for a post-trigger window ([`Rings::hold`])
//! the kernel does not freeze; its rules still report their hits.
//!
//! # Layout
//!
//! Loading, pinning, adopting and removing the rings is in `load`, the filter and rule tables
//! the programs read in `tables`, freezing, copying out and folding in `freeze`, and the live
//! fill of the rings in `status`. This module holds what they share: the mapped memory and how
//! to read it.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::Ebpf;
use aya::maps::{Map, MapData, MapError, RingBuf};
use memmap2::MmapMut;
use schemas::compact::{PACKET_SHIFT, PACKET_SIZE};
use schemas::{CpuHead, ctrl};

use crate::error::SetupError;

mod freeze;
mod load;
mod pin_dir;
mod status;
mod tables;

pub use freeze::{Emitted, Frozen, FrozenEpoch, FrozenRecords, PacketSink};
pub use load::{possible_cpus, teardown};
pub use pin_dir::{PIN_DIR_MODE, PinDirRefused, PinLock};
pub use schemas::clock::{monotonic_ns, realtime_ns};
pub use status::CpuStatus;
pub use tables::rule_specs;

/// The main ring (where writers record outside freezes).
const MAIN: u32 = 0;
/// The spill (where writers record while the main ring is frozen).
const SPILL: u32 = 1;

/// Words of a `CpuHead`, by index (from the struct's layout, which the programs share).
mod word {
    use core::mem::offset_of;
    use schemas::CpuHead;

    pub const HEAD: usize = offset_of!(CpuHead, head) / 8;
    pub const WRITTEN: usize = offset_of!(CpuHead, written) / 8;
    pub const BASE: usize = offset_of!(CpuHead, base) / 8;
    pub const BASE_WRITTEN: usize = offset_of!(CpuHead, base_written) / 8;
    pub const FOLDED: usize = offset_of!(CpuHead, folded) / 8;
    pub const BASE_FOLDED: usize = offset_of!(CpuHead, base_folded) / 8;
    pub const FOLD_LOST: usize = offset_of!(CpuHead, fold_lost) / 8;
    pub const BASE_FOLD_LOST: usize = offset_of!(CpuHead, base_fold_lost) / 8;
}

/// Running rings: mapped into this process, recording in the kernel.
pub struct Rings {
    ncpu: u32,
    /// Packets per CPU of the main ring (a power of two).
    packets: u64,
    /// Packets per CPU of the spill (a power of two).
    spill: u64,
    ring: MmapMut,
    heads: MmapMut,
    ctrl: MmapMut,
    adopted: bool,
    created_realtime_ns: u64,
    rule_hits: Option<RingBuf<MapData>>,
    // The pin directory, locked while the rings live: one daemon per pin directory.
    pins: PinLock,
    // Held while frozen rings are read and folded: one freeze at a time.
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
    /// Number of CPUs (rings per area).
    pub fn ncpu(&self) -> u32 {
        self.ncpu
    }

    /// Packets per CPU of the main ring.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Packets per CPU of the spill.
    pub fn spill_packets(&self) -> u64 {
        self.spill
    }

    /// Bytes of one CPU's main ring.
    pub fn ring_bytes(&self) -> u64 {
        self.packets * PACKET_SIZE as u64
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

    /// Word `w` (see [`word`]) of the `CpuHead` of (area, cpu).
    fn hword(&self, area: u32, cpu: u32, w: usize) -> &AtomicU64 {
        assert!(area < 2 && cpu < self.ncpu && w < 16);
        let idx = (area * self.ncpu + cpu) as usize;
        // SAFETY: the mapping holds 2 * ncpu CpuHead blocks of 128 bytes, 16 aligned u64 words
        // each.
        unsafe {
            let p = self.heads.as_ptr().add(idx * size_of::<CpuHead>()) as *mut u64;
            AtomicU64::from_ptr(p.add(w))
        }
    }

    /// Packets per CPU in `area`.
    fn area_packets(&self, area: u32) -> u64 {
        if area == MAIN {
            self.packets
        } else {
            self.spill
        }
    }

    /// The lap tag records of absolute packet `pkt` of `area` carry.
    fn lap(&self, area: u32, pkt: u64) -> u64 {
        pkt >> self.area_packets(area).trailing_zeros()
    }

    /// Pointer to the slot holding absolute packet `pkt` of (area, cpu).
    fn packet_ptr(&self, area: u32, cpu: u32, pkt: u64) -> *mut u8 {
        let n = self.area_packets(area);
        let first = if area == MAIN {
            cpu as u64 * self.packets
        } else {
            self.ncpu as u64 * self.packets + cpu as u64 * self.spill
        };
        let i = first + (pkt & (n - 1));
        // SAFETY: i < ncpu * (packets + spill), the mapping's packet count.
        unsafe { (self.ring.as_ptr() as *mut u8).add((i as usize) << PACKET_SHIFT) }
    }

    /// Copies absolute packet `pkt` of (area, cpu) out of the ring.
    fn read_packet(&self, area: u32, cpu: u32, pkt: u64, out: &mut [u8; PACKET_SIZE]) {
        let p = self.packet_ptr(area, cpu, pkt);
        // SAFETY: `p` starts a PACKET_SIZE slot inside the mapping; the bytes are plain data a
        // writer may be changing, which the walk's header and lap checks catch.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), PACKET_SIZE) };
        std::sync::atomic::fence(Ordering::Acquire);
    }

    /// Writes `bytes` into absolute packet `pkt` of (area, cpu) at `offset` (only where no
    /// program writes: the frozen main ring, or a spill writers have left).
    fn write_packet(&self, area: u32, cpu: u32, pkt: u64, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= PACKET_SIZE);
        let p = self.packet_ptr(area, cpu, pkt);
        // SAFETY: inside the packet's slot of the mapping, which no program writes now.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(offset), bytes.len()) };
    }

    /// The area writers are recording into now: 0, the main ring; 1, the spill.
    pub fn active_epoch(&self) -> u32 {
        (self.ctrl_word(ctrl::EPOCH).load(Ordering::SeqCst) & 1) as u32
    }

    /// The rule hits ring buffer, for the daemon to poll (once; `None` without rules).
    pub fn take_rule_hits(&mut self) -> Option<RingBuf<MapData>> {
        self.rule_hits.take()
    }
}
