//! The ring state that userspace mmaps and pins, its load-time layout, and the writer every
//! program uses: reserve bytes in the current packet of this CPU's ring, fill them, publish the
//! header last (`schemas::compact` has the format). Used by `programs` and `rules`; uses neither.

use crate::opaque::opaque;
use core::intrinsics::{AtomicOrdering, atomic_cxchg};
use core::ptr::{addr_of, read_volatile, write_volatile};

use aya_ebpf::bindings::BPF_F_MMAPABLE;
use aya_ebpf::helpers::bpf_get_smp_processor_id;
use aya_ebpf::macros::map;
use aya_ebpf::maps::Array;
use schemas::compact::{
    FULL_TS_EVERY_NS, KIND_PAD, PACKET_HEADER_SIZE, PACKET_SIZE, TASK_SIZE, flag, header,
};
use schemas::{CpuHead, ctrl};

/// The rings, one packet per entry: first every CPU's main ring (`NCPU * (PKT_MASK + 1)`
/// packets, CPU after CPU), then every CPU's spill (`NCPU * (SPILL_MASK + 1)`). Sized by the
/// loader.
#[map]
pub(crate) static RING: Array<[u8; PACKET_SIZE]> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// One `CpuHead` per (area, CPU), indexed `area * NCPU + cpu`. Sized by the loader.
#[map]
pub(crate) static HEADS: Array<CpuHead> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Control words (`schemas::ctrl`), shared with userspace through mmap.
#[map]
pub(crate) static CTRL: Array<u64> = Array::with_max_entries(ctrl::LEN, BPF_F_MMAPABLE);

/// Description of the pinned state (`schemas::meta`); written by userspace only.
#[map]
static META: Array<u64> = Array::with_max_entries(schemas::meta::LEN, 0);

// Load-time constants of the ring layout, set by the loader (`EbpfLoader::override_global`); the
// verifier sees their values.

/// Number of possible CPUs, so of rings per area.
#[unsafe(no_mangle)]
pub(crate) static NCPU: u32 = 1;
/// Packets per main ring minus one (a power of two minus one).
#[unsafe(no_mangle)]
static PKT_MASK: u64 = 0;
/// `log2(PKT_MASK + 1)`: a packet number shifted right by it is the ring's lap.
#[unsafe(no_mangle)]
static PKT_BITS: u64 = 0;
/// Packets per spill minus one.
#[unsafe(no_mangle)]
static SPILL_MASK: u64 = 0;
/// `log2(SPILL_MASK + 1)`.
#[unsafe(no_mangle)]
static SPILL_BITS: u64 = 0;
/// Non-zero when no attached program can run in interrupt context
/// (`schemas::classes::NESTING` all off): programs then never nest on a CPU (tracepoint
/// programs run with preemption off), and the head moves by a plain store instead of a locked
/// compare-and-swap. Userspace moves only the heads of an area writers have left. Part of the
/// configuration the pins are adopted for.
#[unsafe(no_mangle)]
static PLAIN_RESERVE: u32 = 0;

macro_rules! konst {
    ($e:expr) => {
        // SAFETY: reading a plain integer static; volatile so the loader's value is used.
        unsafe { read_volatile(addr_of!($e)) }
    };
}

const P: u64 = PACKET_SIZE as u64;

/// A reserved record: the body is filled through `body`, then `publish` stores the header.
pub(crate) struct Slot {
    hdr: *mut u64,
    word: u64,
    /// Where the kind's body starts.
    body: *mut u8,
    /// The CPU head the record was reserved from, and where the reservation ends (for
    /// `shrink`).
    head: *mut CpuHead,
    end: u64,
}

/// The map entry and lap tag of absolute packet `pkt` of `cpu`'s ring in `area`.
#[inline(always)]
fn packet(area: u32, cpu: u32, pkt: u64) -> Option<(*mut u8, u64)> {
    let ncpu = konst!(NCPU) as u64;
    let (idx, lap) = if area == 0 {
        let mask = konst!(PKT_MASK);
        (
            cpu as u64 * (mask + 1) + (pkt & mask),
            pkt >> konst!(PKT_BITS),
        )
    } else {
        let mask = konst!(SPILL_MASK);
        let main = ncpu * (konst!(PKT_MASK) + 1);
        (
            main + cpu as u64 * (mask + 1) + (pkt & mask),
            pkt >> konst!(SPILL_BITS),
        )
    };
    let p = RING.get_ptr_mut(idx as u32)?;
    Some((p as *mut u8, lap))
}

/// The record a reservation is for: its header's fields and its task.
struct Want {
    kind: u32,
    ts: u64,
    pid_tgid: u64,
    flags: u64,
    aux: u64,
}

/// A reservation won: where it is and what its record carries.
struct Claimed {
    /// The CPU head it was taken from.
    h: *mut CpuHead,
    /// The packet's map value, and its lap tag.
    page: *mut u8,
    lap: u64,
    /// Byte positions where the record starts and ends.
    pos: u64,
    end: u64,
    /// The record carries a full timestamp; leaves its task out.
    full: bool,
    same: bool,
    /// The record's time is the CPU's new full-timestamp reference (`CpuHead::hint`).
    stamp: bool,
}

/// Moves the head `h` from `old` to `new` unless a nested program or userspace moved it first.
/// The compare-and-swap's locked instruction waits for every store before it to drain, about
/// a fifth of a record's cost above its clock read; where no program of ours can interrupt
/// another (`PLAIN_RESERVE`) nothing can move the head in between, and a plain store does.
#[inline(always)]
fn claim(h: *mut CpuHead, old: u64, new: u64) -> bool {
    if konst!(PLAIN_RESERVE) != 0 {
        // SAFETY: as below; no program of ours runs on this CPU until this one ends, and
        // userspace moves only the heads of an area writers have left.
        unsafe { write_volatile(&raw mut (*h).head, new) };
        return true;
    }
    // SAFETY: `h` is a HEADS map value for the program's run; `head` is an aligned u64 that
    // every writer changes only here, by compare-and-swap in this mode.
    let (seen, _) = unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
            &raw mut (*h).head,
            old,
            new,
        )
    };
    seen == old
}

/// Reserves a record of kind `kind` with a `BODY`-byte body (a multiple of 8) in this CPU's
/// current area, for the event at `ts` of the task `pid_tgid`, with header `flags` and `aux`.
/// Opens a new packet when the record does not fit in the current one. Leaves the task out
/// when the record directly follows one of the same task in its packet (`schemas::compact`,
/// "Leaving out the task"). `None` when the reservation lost three races in a row to nested
/// programs (the record is dropped) or a map lookup failed.
///
/// The way nearly every record takes is written out here, straight: the main ring, the record
/// fits in the open packet, needs no full timestamp and wins its compare-and-swap at once. Its
/// loads do not wait for one another where they need not (the head is looked up beside the
/// area word, the packet before the compare-and-swap), and it carries no flags for the rare
/// cases. Every other case (the spill, a packet to open, a full timestamp, a race lost) goes
/// to [`reserve_any`]. docs/benchmarks.md has what each step saved.
#[inline(always)]
pub(crate) fn reserve<const BODY: usize>(
    kind: u32,
    ts: u64,
    pid_tgid: u64,
    flags: u64,
    aux: u64,
) -> Option<Slot> {
    let w = Want {
        kind,
        ts,
        pid_tgid,
        flags,
        aux,
    };
    // SAFETY: BPF helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // The main ring's head, looked up without waiting for the area word: writers are in the
    // main ring but while a snapshot copies it, and the lookup is then not used.
    let h = HEADS.get_ptr_mut(cpu)?;
    let area_word = CTRL.get_ptr(ctrl::EPOCH)?;
    // SAFETY: the map value pointers are valid for the program's run; nested programs move
    // `head` only through `claim`. The task and end are read before the head: a pair changed in
    // between has an end that is not the head.
    let (epoch, hint, last_task, last_end, old) = unsafe {
        (
            read_volatile(area_word),
            read_volatile(&raw const (*h).hint),
            read_volatile(&raw const (*h).last_task),
            read_volatile(&raw const (*h).last_end),
            read_volatile(&raw const (*h).head),
        )
    };
    let same = old == last_end && last_task == pid_tgid;
    let task_len = if same { 0 } else { TASK_SIZE as u64 };
    let len = 8 + task_len + BODY as u64;
    let off = old & (P - 1);
    if epoch & 1 == 0 && off != 0 && off + len <= P && ts.wrapping_sub(hint) < FULL_TS_EVERY_NS {
        // The packet before the compare-and-swap: its lookup depends only on `old`, and
        // overlaps with the locked instruction's wait instead of following it.
        let (page, lap) = packet(0, cpu, old >> schemas::compact::PACKET_SHIFT)?;
        let new = old + len;
        if claim(h, old, new) {
            return place::<BODY>(
                &w,
                &Claimed {
                    h,
                    page,
                    lap,
                    pos: old,
                    end: new,
                    full: false,
                    same,
                    stamp: false,
                },
            );
        }
    }
    reserve_any::<BODY>(&w)
}

/// [`reserve`], every case: opens a packet when the record does not fit in the current one,
/// writes a full timestamp when one is due, retries a lost compare-and-swap twice.
#[inline(always)]
fn reserve_any<const BODY: usize>(w: &Want) -> Option<Slot> {
    let (ts, pid_tgid) = (w.ts, w.pid_tgid);
    // SAFETY: BPF helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let area_word = CTRL.get_ptr(ctrl::EPOCH)?;
    // SAFETY: the map value pointer is valid for the program's run.
    let area = (unsafe { read_volatile(area_word) } & 1) as u32;
    let h = HEADS.get_ptr_mut(area * konst!(NCPU) + cpu)?;
    // SAFETY: `h` points into the HEADS map value for this run; nested programs move `head`
    // only through `claim`.
    let hint = unsafe { read_volatile(&raw const (*h).hint) };
    // Read before the head: a pair changed in between has an end that is not the head.
    // SAFETY: as above.
    let (last_task, last_end) = unsafe {
        (
            read_volatile(&raw const (*h).last_task),
            read_volatile(&raw const (*h).last_end),
        )
    };
    let wants_full = ts.wrapping_sub(hint) >= FULL_TS_EVERY_NS;
    let mut tries = 0;
    // Straight on the common way (the record fits the open packet, the first compare-and-swap
    // wins): LLVM keeps no flags for a loop exit to re-test.
    let (old, pos, new, open, full, same) = loop {
        // SAFETY: as above.
        let old = unsafe { read_volatile(&raw const (*h).head) };
        let off = old & (P - 1);
        let mut full = wants_full;
        let mut same = old == last_end && last_task == pid_tgid;
        let len =
            8 + if full { 8 } else { 0 } + if same { 0 } else { TASK_SIZE as u64 } + BODY as u64;
        let (pos, new, open) = if off != 0 && off + len <= P {
            (old, old + len, false)
        } else {
            // The packet's base timestamp is this record's: no full timestamp needed; and the
            // first record of a packet always carries its task.
            full = false;
            same = false;
            let start = if off == 0 { old } else { (old | (P - 1)) + 1 };
            let pos = start + PACKET_HEADER_SIZE as u64;
            (pos, pos + 8 + (TASK_SIZE + BODY) as u64, true)
        };
        if claim(h, old, new) {
            break (old, pos, new, open, full, same);
        }
        tries += 1;
        if tries == 3 {
            return None;
        }
    };
    let pkt = pos >> schemas::compact::PACKET_SHIFT;
    let (page, lap) = packet(area, cpu, pkt)?;
    if open {
        // SAFETY: offsets 0 and 8 of a PACKET_SIZE map value.
        unsafe {
            write_volatile(page as *mut u64, pkt + 1);
            write_volatile(page.add(8) as *mut u64, ts);
        }
        // Records are whole 8-byte words, so the mask keeps the offset and bounds it for the
        // verifier (opaque to LLVM, which would otherwise drop a check it can prove).
        let off = opaque(old) & (P - 8);
        if off != 0
            && let Some((prev, prev_lap)) = packet(area, cpu, pkt - 1)
        {
            // The rest of the previous packet is padding (at most one record's size).
            let w = header::make(0, (P - off) as usize, KIND_PAD, 0, 0, prev_lap);
            // SAFETY: off <= P - 8 (the mask) inside the previous packet's map value.
            unsafe { write_volatile(prev.add(off as usize) as *mut u64, w) };
        }
    }
    place::<BODY>(
        w,
        &Claimed {
            h,
            page,
            lap,
            pos,
            end: new,
            full,
            same,
            stamp: open || full,
        },
    )
}

/// Books the reservation `c` in its CPU head and lays out its record: the task and the full
/// timestamp when it carries them, and the header word `publish` stores.
#[inline(always)]
fn place<const BODY: usize>(w: &Want, c: &Claimed) -> Option<Slot> {
    let (h, full, same) = (c.h, c.full, c.same);
    // SAFETY: plain stores into the HEADS map value; see `CpuHead::written`. The task goes
    // before the end: a nested program that sees the new end sees the new task.
    unsafe {
        if c.stamp {
            write_volatile(&raw mut (*h).hint, w.ts);
        }
        write_volatile(
            &raw mut (*h).written,
            read_volatile(&raw const (*h).written) + 1,
        );
        write_volatile(&raw mut (*h).last_task, w.pid_tgid);
        write_volatile(&raw mut (*h).last_end, c.end);
    }
    // The bounds below always hold (a record starts after the packet header and fits in its
    // packet); checking them on the one offset every store derives from tells the verifier.
    // `opaque` keeps LLVM from dropping them as implied by the reservation: older
    // verifiers (6.1) do not see that relation.
    let at = opaque(c.pos) & (P - 8);
    let ts_len = if full { 8 } else { 0 };
    let task_len = if same { 0 } else { TASK_SIZE as u64 };
    // Opaque again: every store below must derive from the checked value, not from `at`.
    let body_at = opaque(at + 8 + ts_len + task_len);
    if body_at < PACKET_HEADER_SIZE as u64 + 8 || body_at > P - BODY as u64 {
        return None;
    }
    let mut fl = w.flags;
    if full {
        fl |= flag::FULL_TS;
    }
    if same {
        fl |= flag::SAME_TASK;
    }
    let len = (8 + ts_len + task_len) as usize + BODY;
    // SAFETY: `body_at` is bounded inside the packet above (at least 24 bytes in); the header,
    // full timestamp and task sit just before it.
    unsafe {
        let body = c.page.add(body_at as usize);
        if !same {
            // tid then pid, as `bpf_get_current_pid_tgid` packs them little-endian.
            write_volatile(body.sub(8) as *mut u64, w.pid_tgid);
        }
        let ts_at = body.sub(task_len as usize);
        if full {
            write_volatile(ts_at.sub(8) as *mut u64, w.ts);
        }
        Some(Slot {
            hdr: ts_at.sub(ts_len as usize + 8) as *mut u64,
            word: header::make(w.ts, len, w.kind, fl, w.aux, c.lap),
            body,
            head: h,
            end: c.end,
        })
    }
}

impl Slot {
    /// Stores `value` at `offset` bytes into the kind's body. `offset` must be a multiple of 8
    /// and `offset + size_of::<T>()` at most the reserved body.
    #[inline(always)]
    pub(crate) fn put<T>(&self, offset: usize, value: T) {
        // SAFETY: the caller keeps the store inside the reserved body, whose start is 8-aligned.
        unsafe { write_volatile(self.body.add(offset) as *mut T, value) }
    }

    /// Adds header flags (before `publish`).
    #[inline(always)]
    pub(crate) fn set_flags(&mut self, flags: u64) {
        self.word |= flags << header::FLAGS_SHIFT;
    }

    /// A pointer to the body at `offset`, for helpers that write into it.
    #[inline(always)]
    pub(crate) fn body_ptr(&self, offset: usize) -> *mut u8 {
        // SAFETY: inside the reserved body (the caller's offsets are constants below its size).
        unsafe { self.body.add(offset) }
    }

    /// Gives back the last `cut` bytes (a multiple of 8) of the body when no record was
    /// reserved after this one yet; the record keeps them otherwise. Before `publish`.
    #[inline(always)]
    pub(crate) fn shrink(&mut self, cut: u64) {
        if cut == 0 {
            return;
        }
        // `head` is the HEADS map value the record was reserved from.
        if claim(self.head, self.end, self.end - cut) {
            // SAFETY: as above; the task stored by `reserve` is still this record's.
            unsafe { write_volatile(&raw mut (*self.head).last_end, self.end - cut) };
            self.word -= (cut / 4) << header::LEN_SHIFT;
        }
    }

    /// Makes the record visible: the header goes last, in one store. x86 keeps stores in order,
    /// so the body written before is visible first.
    #[inline(always)]
    pub(crate) fn publish(self) {
        // SAFETY: `hdr` is the reserved record's first word.
        unsafe { write_volatile(self.hdr, self.word) }
    }
}
