//! flightrec's eBPF programs: write kernel events into per-CPU overwrite rings that live in
//! mmapable array maps, with no userspace work per event.
//!
//! Ring protocol (see `schemas::compact` and `schemas::CpuHead`): a program reads the active
//! area from `CTRL`, reserves bytes in the open 4 KiB packet of its (area, CPU) ring with a
//! compare-and-swap on the head (a plain store where no program of ours can interrupt another),
//! fills the record's body and publishes its header word last.
//! Userspace flips the area to freeze the main ring and copies it out while writers carry on in
//! the spill, then folds the spill back (docs/recorder.md).
//!
//! Built only for `bpfel-unknown-none` (see `cargo xtask build-ebpf`); on the host this crate is
//! an empty binary so that workspace-wide `cargo` commands keep working.
#![cfg_attr(
    target_arch = "bpf",
    no_std,
    no_main,
    feature(core_intrinsics, asm_experimental_arch)
)]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        internal_features,
        reason = "atomic_xadd, atomic_cxchg: the AtomicU64 methods are missing on BPF"
    )
)]

#[cfg(target_arch = "bpf")]
mod hist;
#[cfg(target_arch = "bpf")]
mod opaque;
#[cfg(target_arch = "bpf")]
mod programs;
#[cfg(target_arch = "bpf")]
mod ring;
#[cfg(target_arch = "bpf")]
mod rules;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
