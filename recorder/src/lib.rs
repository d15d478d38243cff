//! flightrec's recorder: keeps per-CPU overwrite rings of kernel events in eBPF maps, freezes
//! them on demand and writes snapshot files.
//!
//! The `flightrec` binary is a thin layer over this library: [`rings::Rings`] loads, pins and
//! reads the rings, [`snapshot`] writes files, [`daemon`] serves the control socket, and
//! [`dump`] prints snapshots.

pub mod analyze;
pub mod config;
pub mod daemon;
pub mod dump;
pub mod error;
pub mod export;
pub mod group;
pub mod kernel;
pub mod rings;
pub mod snapshot;
pub mod statedump;
pub mod synth;
pub mod upload;
