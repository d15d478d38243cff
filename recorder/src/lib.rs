//! flightrec's recorder: keeps per-CPU overwrite rings of kernel events in eBPF maps, freezes
//! them on demand and writes snapshot files.
//!
//! The `flightrec` binary is a thin layer over this library: [`rings::Rings`] loads, pins and
//! reads the rings, [`snapshot`] writes files and [`daemon`] serves the control socket.
//! Reading snapshots back (dump, analyze, export) is the `flightrec-reader` crate's job.

pub mod config;
pub mod daemon;
pub mod error;
pub mod hist;
pub mod kernel;
pub mod metrics;
pub mod rings;
pub mod snapshot;
pub mod statedump;
