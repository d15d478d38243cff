//! The control protocol: what `flightrec status`, `snapshot record` and `trigger` send to the
//! daemon's Unix socket and what it answers, and the client side of it.
//!
//! Each request is one line of JSON, answered by one line of JSON; the answer names its kind:
//!
//! ```text
//! {"cmd":"status"}
//!   -> {"status":{...Status...}}
//! {"cmd":"snapshot","dir":"/path"|null,"name":"NAME"|null,"reason":"TEXT"|null}
//!   -> {"snapshot":{...Written...}}
//! {"cmd":"trigger","reason":"TEXT","post_ms":N|null}
//!   -> {"trigger":{"snapshot_id":"ID","joined":false,"post_ms":N}}
//!   -> {"suppressed":{"reason":"cooldown","retry_after_ms":812}}
//! {"cmd":"snapshot_state","id":"ID"}
//!   -> {"state":{"snapshot_id":"ID","state":"written","path":"...",...}}
//! anything else, or a request that failed
//!   -> {"error":"..."}
//! ```
//!
//! Requests are at most 64 KiB; a client that sends nothing for 10 s is dropped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use triggers::governor::Counters;
use triggers::hook::{Accepted, SnapshotInfo};

use crate::rings::CpuStatus;
use crate::snapshot::Written;

/// A control request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Ring state.
    Status,
    /// Take a snapshot.
    Snapshot {
        /// Output directory (default: the spool dir).
        dir: Option<PathBuf>,
        /// Snapshot name (default: "snapshot").
        name: Option<String>,
        /// Reason recorded in the manifest.
        reason: Option<String>,
    },
    /// Ask for a snapshot through the governor (`flightrec trigger`).
    Trigger {
        /// Why, kept in the manifest; also the dedupe signature.
        reason: String,
        /// Post-trigger window, ms (the governor's default when absent).
        post_ms: Option<u64>,
    },
    /// State of a snapshot admitted by the governor.
    SnapshotState {
        /// Its id.
        id: String,
    },
}

/// A suppression, as the control socket reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppressed {
    /// Why (`cooldown`, `duplicate`, `prefill`, `source_budget`, `host_budget`).
    pub reason: String,
    /// When trying again could succeed, ms (absent: not by waiting).
    pub retry_after_ms: Option<u64>,
}

/// A control answer: one kind per request, or the error that stopped it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Answer to `status`.
    Status(Box<Status>),
    /// Answer to `snapshot`: the file written.
    Snapshot(Written),
    /// Answer to a `trigger` the governor admitted (or joined to a snapshot being taken).
    Trigger(Accepted),
    /// Answer to a `trigger` the governor suppressed.
    Suppressed(Suppressed),
    /// Answer to `snapshot_state`.
    State(SnapshotInfo),
    /// The request failed; one sentence saying why.
    Error(String),
}

impl Response {
    /// The answer's kind, for messages about an unexpected one.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Status(_) => "status",
            Response::Snapshot(_) => "snapshot",
            Response::Trigger(_) => "trigger",
            Response::Suppressed(_) => "suppressed",
            Response::State(_) => "state",
            Response::Error(_) => "error",
        }
    }
}

/// What `flightrec status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// Daemon process id.
    pub pid: u32,
    /// Seconds since the daemon started.
    pub uptime_s: f64,
    /// Whether the rings were adopted from a previous run.
    pub adopted: bool,
    /// Bytes of one CPU's main ring.
    pub ring_bytes: u64,
    /// Enabled event classes.
    pub classes: Vec<String>,
    /// Active epoch.
    pub epoch: u32,
    /// `CLOCK_MONOTONIC` now, to age the window timestamps.
    pub now_monotonic_ns: u64,
    /// Per CPU state.
    pub cpus: Vec<CpuStatus>,
    /// Events per second per CPU over the last sampling interval.
    pub rates: Vec<f64>,
    /// Snapshots written by this daemon.
    pub snapshots_taken: u64,
    /// Snapshot requests that failed.
    pub snapshots_failed: u64,
    /// Governor decisions by outcome, reason and source.
    #[serde(default)]
    pub triggers: Counters,
    /// Kernel rule hits received from the eBPF programs.
    #[serde(default)]
    pub rule_hits: u64,
    /// Address the HTTP hook listens on, when it is on.
    #[serde(default)]
    pub hook_listen: Option<String>,
    /// Requests the hook answered, by status code.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub hook_requests: std::collections::BTreeMap<String, u64>,
    /// Address `GET /metrics` is served on, when it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Upload and group state, when a collector is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<flightrec_uplink::CollectorStatus>,
}

/// Why a request could not be exchanged with the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket.
    #[error("no flightrec daemon on {socket}; start one with `flightrec record`")]
    NoDaemon {
        /// The control socket.
        socket: PathBuf,
        /// Why connecting failed.
        source: std::io::Error,
    },
    /// The socket's mode keeps this user out.
    #[error(
        "permission denied on {socket}: only root, recorder.control_owner and members of \
         recorder.control_group may use the control socket"
    )]
    Denied {
        /// The control socket.
        socket: PathBuf,
    },
    /// The exchange broke off.
    #[error("talking to the daemon on {socket}")]
    Io {
        /// The control socket.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon answered something that is not an answer of this version.
    #[error("bad answer from the daemon (is it another flightrec version?)")]
    BadAnswer(#[source] serde_json::Error),
}

/// Sends one request to the daemon listening on `socket`.
pub fn request(socket: &Path, req: &Request) -> Result<Response, ControlError> {
    use std::io::{BufRead, Write};
    let io = |source| ControlError::Io {
        socket: socket.to_owned(),
        source,
    };
    let mut stream =
        std::os::unix::net::UnixStream::connect(socket).map_err(|source| match source.kind() {
            std::io::ErrorKind::PermissionDenied => ControlError::Denied {
                socket: socket.to_owned(),
            },
            _ => ControlError::NoDaemon {
                socket: socket.to_owned(),
                source,
            },
        })?;
    let mut line = serde_json::to_vec(req).expect("serialisable");
    line.push(b'\n');
    // A daemon that refuses this peer answers at once and closes, maybe before the request is
    // written: its answer is read even when the write broke off.
    let written = stream.write_all(&line);
    let mut resp = String::new();
    let read = std::io::BufReader::new(stream).read_line(&mut resp);
    match (written, read) {
        (_, Ok(n)) if n > 0 => serde_json::from_str(&resp).map_err(ControlError::BadAnswer),
        (Err(e), _) | (Ok(()), Err(e)) => Err(io(e)),
        (Ok(()), Ok(_)) => serde_json::from_str(&resp).map_err(ControlError::BadAnswer),
    }
}
