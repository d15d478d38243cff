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

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// The export would write more than its cap: a small snapshot of many identical records
    /// can expand a thousandfold, so the output is bounded.
    #[error(
        "the export would be larger than its limit of {limit} bytes; nothing was written \
         (raise the limit, e.g. `flightrec export --max-output-size`, if that is really wanted)"
    )]
    TooLarge {
        /// The cap, bytes.
        limit: u64,
    },
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

/// Default cap on the bytes one export writes (all files): far above what a real snapshot
/// exports to (a few times its decoded size), far below filling a disk from a crafted one.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 16 << 30;

/// Exports the snapshot at `input` to `output` in `format`, writing at most
/// [`DEFAULT_MAX_OUTPUT_BYTES`]. Refuses to overwrite an existing output.
pub fn export(input: &Path, format: Format, output: &Path) -> Result<ExportStats, ExportError> {
    export_limited(input, format, output, DEFAULT_MAX_OUTPUT_BYTES)
}

/// Exports like [`export`], writing at most `max_output_bytes` (all files together). Past it
/// the export stops with [`ExportError::TooLarge`] and leaves nothing behind.
pub fn export_limited(
    input: &Path,
    format: Format,
    output: &Path,
    max_output_bytes: u64,
) -> Result<ExportStats, ExportError> {
    if output.exists() {
        return Err(ExportError::OutputExists(output.to_path_buf()));
    }
    let budget = Budget::new(max_output_bytes);
    let res = match format {
        Format::Ctf => ctf::write_with(input, output, &budget),
        Format::Perfetto => perfetto::write_with(input, output, &budget),
        Format::Tracedat => tracedat::write_with(input, output, &budget),
    };
    // The cap surfaces as a write error deep in a writer; say what it really is.
    res.map_err(|e| budget.explain(e))
}

/// Bytes an export may still write, shared by every file it writes.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    used: AtomicU64,
}

impl Budget {
    pub(crate) fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    fn exceeded(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }

    /// [`ExportError::TooLarge`] in place of the write error the cap caused.
    pub(crate) fn explain(&self, e: ExportError) -> ExportError {
        if self.exceeded() {
            ExportError::TooLarge { limit: self.limit }
        } else {
            e
        }
    }

    /// `inner`, writing against this budget.
    pub(crate) fn wrap<W>(self: &Arc<Self>, inner: W) -> Capped<W> {
        Capped {
            inner,
            budget: self.clone(),
        }
    }
}

/// A writer that fails once its [`Budget`] is spent. Rewrites after a seek count again: the
/// budget bounds the work as well as the size.
#[derive(Debug)]
pub(crate) struct Capped<W> {
    inner: W,
    budget: Arc<Budget>,
}

impl<W> Capped<W> {
    pub(crate) fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let used = self
            .budget
            .used
            .fetch_add(buf.len() as u64, Ordering::Relaxed)
            + buf.len() as u64;
        if used > self.budget.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                "export size limit reached",
            ));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Seek> Seek for Capped<W> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
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
