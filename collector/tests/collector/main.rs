//! Collector tests on loopback: a collector in this process (or as a child process where a
//! test kills it) and the recorder's uploader and group client as the other side. No root.
//!
//! The suite runs on the embedded SQLite catalog; `FLIGHTREC_TEST_CATALOG=postgres` runs the
//! same suite on PostgreSQL (a real cluster, see [`pg`]), as CI does.

mod util;

mod pg;

pub mod browse;
mod catalog;
mod cluster;
pub mod group;
mod hardening;
mod hardening_child;
pub mod ingest;
mod rate;
mod replicas;
pub mod s3;
mod tls;
mod ui;
