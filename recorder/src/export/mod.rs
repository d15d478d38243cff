//! `flightrec export`: a snapshot converted into the formats other tools read.
//!
//! - [`ctf`]: a CTF 1.8 trace in LTTng's kernel layout (babeltrace2, lttng-analyses, Trace
//!   Compass).
//! - [`perfetto`]: a native Perfetto protobuf trace (ui.perfetto.dev).
//! - [`tracedat`]: a trace-cmd `trace.dat` v6 file (trace-cmd report, KernelShark).
//!
//! Each exporter reads the snapshot through the streaming decoder and never holds more than a
//! bounded window of it in memory.

pub mod ctf;
pub mod perfetto;
pub mod tracedat;

use std::path::Path;

use schemas::file::FormatError;

/// An output format of `flightrec export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// CTF 1.8 directory in LTTng's kernel trace layout.
    Ctf,
    /// Perfetto protobuf trace file.
    Perfetto,
    /// trace-cmd trace.dat (version 6) file.
    Tracedat,
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Events written.
    pub events: u64,
    /// Bytes written (all files).
    pub bytes: u64,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The snapshot could not be read.
    #[error("reading the snapshot")]
    Snapshot(#[from] FormatError),
    /// A record in the snapshot could not be decoded.
    #[error("decoding an event: {0}")]
    Decode(String),
    /// The output exists and would be overwritten.
    #[error("{0} already exists; remove it or choose another output")]
    OutputExists(std::path::PathBuf),
    /// Writing the output failed.
    #[error("writing {path}")]
    Write {
        /// The file or directory being written.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Exports the snapshot at `input` to `output` in `format`. Refuses to overwrite an existing
/// output.
pub fn export(input: &Path, format: Format, output: &Path) -> Result<ExportStats, ExportError> {
    if output.exists() {
        return Err(ExportError::OutputExists(output.to_path_buf()));
    }
    match format {
        Format::Ctf => ctf::write(input, output),
        Format::Perfetto => perfetto::write(input, output),
        Format::Tracedat => tracedat::write(input, output),
    }
}
