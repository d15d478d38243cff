//! flightrec's eBPF programs: write kernel events into per-CPU overwrite rings that live in
//! mmapable array maps, with no userspace work per event.
//!
//! Ring protocol (see `schemas::Record` and `schemas::CpuHead`): a program reads the active
//! epoch from `CTRL`, reserves a slot with an atomic fetch-add on its (epoch, CPU) head, marks the
//! slot as being written (`seq = 0`), fills it, and publishes it with `seq = index + 1`. Userspace
//! flips the epoch to freeze a ring and copies it out while writers carry on in the other one.
//!
//! Built only for `bpfel-unknown-none` (see `cargo xtask build-ebpf`); on the host this crate is
//! an empty binary so that workspace-wide `cargo` commands keep working.
#![cfg_attr(target_arch = "bpf", no_std, no_main, feature(core_intrinsics))]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        internal_features,
        reason = "atomic_xadd: AtomicU64::fetch_add is missing on BPF"
    )
)]

#[cfg(target_arch = "bpf")]
mod hist;
#[cfg(target_arch = "bpf")]
mod programs;
#[cfg(target_arch = "bpf")]
mod ring;
#[cfg(target_arch = "bpf")]
mod rules;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
