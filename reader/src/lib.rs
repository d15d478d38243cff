//! flightrec's offline reader: everything that reads a snapshot file after it was written.
//!
//! It needs no eBPF, no kernel and no privileges, so the `flightrec` binary and the collector
//! share it:
//!
//! - [`dump`] merges the per-CPU streams into one time-ordered event iterator and prints it;
//! - [`analyze`] answers where the time went (syscalls, CPU, scheduling, block I/O, irqs);
//! - [`export`] converts a snapshot into CTF, Perfetto or trace.dat for other tools;
//! - `synth` (feature `synth`) builds real snapshot files from hand-written events, for tests
//!   and benchmarks.

pub mod analyze;
pub mod dump;
pub mod export;
pub mod parallel;
#[cfg(feature = "synth")]
pub mod synth;
