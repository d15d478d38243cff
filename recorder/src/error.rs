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
    #[error("cannot read kernel BTF from {path}")]
    Btf {
        /// The BTF file.
        path: PathBuf,
        /// Why (aya's or the BTF parser's error).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The configuration failed the loader's own check (its last line of defence).
    #[error("checking {what}")]
    Config {
        /// What was checked.
        what: &'static str,
        /// Why it is invalid.
        #[source]
        source: ConfigError,
    },
    /// The configuration asks for something the programs or this system cannot provide; the
    /// message says what.
    #[error("cannot record as configured: {0}")]
    Unsatisfiable(String),
    /// Loading the eBPF object (relocating, creating its maps) failed.
    #[error("loading the eBPF programs")]
    Load {
        /// Why.
        #[source]
        source: aya::EbpfError,
    },
    /// Opening, reading or writing an eBPF map failed.
    #[error("eBPF: {what}")]
    Map {
        /// What was being done (`filter pid 42`, `writing rule 3`).
        what: String,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// Loading one program (the verifier) or taking its link failed.
    #[error("eBPF: {what}")]
    Program {
        /// What was being done, naming the program.
        what: String,
        /// Why.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The kernel's verifier (or its BTF check) refused what was loaded. The log it wrote is
    /// saved in a file rather than printed: it runs to thousands of lines.
    #[error("the kernel refused {what}; {log}")]
    Verifier {
        /// What was refused (`eBPF program sys_enter`, `the programs' BTF`).
        what: String,
        /// Where the verifier's log was saved, as a clause (`its verifier log is in FILE`).
        log: String,
        /// The error of the load syscall.
        #[source]
        source: std::io::Error,
    },
    /// A BTF tracepoint could not be attached: this kernel lacks it.
    #[error("kernel feature missing: BTF tracepoint {program} cannot be attached")]
    MissingTracepoint {
        /// The program (named after its tracepoint).
        program: &'static str,
        /// Why.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Pinning a map or a link in bpffs failed.
    #[error("bpffs pins in {path}: {what}")]
    Pin {
        /// The pin directory.
        path: PathBuf,
        /// What was being pinned.
        what: String,
        /// Why.
        #[source]
        source: aya::pin::PinError,
    },
    /// Creating, listing or removing the pin directory or its files failed.
    #[error("bpffs pins in {path}: {what}")]
    PinDir {
        /// The pin directory.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pin directory is someone else's, or another daemon's.
    #[error(transparent)]
    PinDirRefused(#[from] crate::rings::PinDirRefused),
    /// Mapping the rings into memory failed.
    #[error("cannot mmap map {map}")]
    Mmap {
        /// The map name.
        map: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another I/O error.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
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
    /// The client named a directory the daemon may not write into.
    #[error(transparent)]
    Refused(#[from] crate::daemon::DirRefused),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// The binary prints `e` and then each source: a variant must not repeat its source's text.
    #[test]
    fn setup_errors_leave_their_cause_to_the_chain() {
        let io = || std::io::Error::other("the cause");
        let errors = [
            SetupError::Mmap {
                map: "RING",
                source: io(),
            },
            SetupError::Io {
                what: "reading /sys/devices/system/cpu/possible".into(),
                source: io(),
            },
            SetupError::PinDir {
                path: "/sys/fs/bpf/x".into(),
                what: "removing /sys/fs/bpf/x/map_RING".into(),
                source: io(),
            },
        ];
        for e in errors {
            assert!(!e.to_string().contains("the cause"), "{e}");
            assert_eq!(e.source().expect("a source").to_string(), "the cause");
        }
    }
}
