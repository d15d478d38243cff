//! Error types of the recorder library.

use std::path::PathBuf;

pub use schemas::config::ConfigError;

/// The kernel or the system lacks something the recorder needs.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A kernel feature is missing; the message names it.
    #[error("kernel feature missing: {0}")]
    MissingFeature(String),
    /// A kernel structure field the programs need is not in the kernel's BTF.
    #[error("kernel BTF has no {0}: this kernel's layout is not supported")]
    MissingBtf(String),
    /// Reading the kernel's BTF failed.
    #[error("cannot read kernel BTF from {path}: {message}")]
    Btf {
        /// The BTF file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Loading or attaching the eBPF programs failed.
    #[error("eBPF: {0}")]
    Ebpf(String),
    /// Pinning or opening pinned state failed.
    #[error("bpffs pins in {path}: {message}")]
    Pin {
        /// The pin directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Mapping the rings into memory failed.
    #[error("cannot mmap map {map}: {source}")]
    Mmap {
        /// The map name.
        map: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// Another I/O error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Taking or writing a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The output directory or file could not be written.
    #[error("cannot write snapshot {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Encoding the file failed.
    #[error("cannot encode snapshot: {0}")]
    Format(#[from] schemas::file::FormatError),
    /// The name is not usable as a file name.
    #[error("invalid snapshot name {0:?}: use letters, digits, '.', '_' and '-'")]
    BadName(String),
}
