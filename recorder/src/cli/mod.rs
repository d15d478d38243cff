//! The `flightrec` subcommands, one module each, and what several of them share: the
//! configuration flags and byte-size formatting.

pub(crate) mod analyze;
pub(crate) mod dump;
pub(crate) mod export;
pub(crate) mod record;
pub(crate) mod snapshot;
pub(crate) mod status;
pub(crate) mod teardown;
pub(crate) mod trigger;

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use flightrec::config::Config;
use flightrec::daemon::Response;

#[derive(Args)]
pub(crate) struct ConfigArgs {
    /// TOML configuration file (see examples/flightrec.toml); defaults apply without one.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Control socket (overrides recorder.control_socket).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

impl ConfigArgs {
    pub(crate) fn load(&self) -> Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(s) = &self.socket {
            config.recorder.control_socket = s.clone();
        }
        Ok(config)
    }
}

pub(crate) fn fmt_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The error for an answer that is not the one `request` expects: the daemon's own error
/// sentence, or which kind of answer came instead.
pub(crate) fn unexpected(request: &str, resp: Response) -> anyhow::Error {
    match resp {
        Response::Error(e) => anyhow::anyhow!("{request}: the daemon says: {e}"),
        other => anyhow::anyhow!(
            "{request}: the daemon answered with `{}` (is it another flightrec version?)",
            other.kind()
        ),
    }
}
