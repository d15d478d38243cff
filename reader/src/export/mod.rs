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

use std::path::{Path, PathBuf};

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

/// Runs `write` on a hidden temporary path beside `output` (`.NAME.partial-PID`, same file
/// system) and renames the result to `output` once it succeeds, so an export appears only when
/// complete. On an error, or a panic, the temporary file or directory is removed.
pub(crate) fn write_then_rename<T>(
    output: &Path,
    write: impl FnOnce(&Path) -> Result<T, ExportError>,
) -> Result<T, ExportError> {
    let guard = RemoveOnDrop(Some(partial_path(output)));
    let tmp = guard.0.clone().expect("armed");
    let value = write(&tmp)?;
    if output.symlink_metadata().is_ok() {
        // Appeared while we wrote: never replace it.
        return Err(ExportError::OutputExists(output.to_path_buf()));
    }
    std::fs::rename(&tmp, output).map_err(|source| ExportError::Write {
        path: output.to_path_buf(),
        source,
    })?;
    guard.disarm();
    Ok(value)
}

/// `.<name>.partial-<pid>` beside `output`.
fn partial_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parent.join(format!(".{name}.partial-{}", std::process::id()))
}

/// Removes a half-written export (file or directory) unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}
