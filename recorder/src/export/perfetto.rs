//! Placeholder until the perfetto exporter lands: reports that the format is not available yet.

use std::path::Path;

use super::{ExportError, ExportStats};

/// Writes the snapshot at `input` to `output`.
pub fn write(input: &Path, output: &Path) -> Result<ExportStats, ExportError> {
    let _ = (input, output);
    Err(ExportError::Decode(
        "the perfetto exporter is not built yet".into(),
    ))
}
