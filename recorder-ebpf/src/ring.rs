//! The ring state that userspace mmaps and pins, and its load-time layout: written by the
//! programs (`programs`) and flipped by a kernel freeze (`rules`). Both use it; it uses neither.

use aya_ebpf::bindings::BPF_F_MMAPABLE;
use aya_ebpf::macros::map;
use aya_ebpf::maps::Array;
use schemas::{CpuHead, Record, ctrl};

/// The rings: `2 * NCPU * slots` records, indexed `(epoch * NCPU + cpu) * slots + (i & mask)`.
/// Sized by the loader.
#[map]
pub(crate) static RING: Array<Record> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// One `CpuHead` per (epoch, CPU), indexed `epoch * NCPU + cpu`. Sized by the loader.
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

/// Number of possible CPUs, so of rings per epoch.
#[unsafe(no_mangle)]
pub(crate) static NCPU: u32 = 1;

/// Slots per ring minus one (the configured ring size is rounded down to a power of two).
#[unsafe(no_mangle)]
pub(crate) static SLOT_MASK: u64 = 0;
