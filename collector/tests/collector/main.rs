//! Collector tests on loopback: a collector in this process (or as a child process where a
//! test kills it) and the recorder's uploader and group client as the other side. No root.

mod util;

pub mod browse;
mod group;
mod hardening;
mod hardening_child;
mod ingest;
mod rate;
mod s3;
mod tls;
mod ui;
