//! Registration with the collector for group triggers: the recorder keeps a server-sent-events
//! stream open on `GET /v1/groups/GROUP/listen` and, for each `trigger` event, hands the daemon
//! a [`TriggerInfo`] with source `group` whose fields carry the trigger id (which links the
//! hosts' snapshots in the catalog) and the collector's and this host's realtime clocks at
//! send and receipt (an estimate of this host's clock offset for alignment). The stream is
//! reopened with backoff when it drops or stays silent past the collector's keep-alives.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use schemas::manifest::TriggerInfo;
use schemas::wire::{TriggerRequest, TriggerResponse, TriggerScope};

use crate::{CollectorConfig, GroupStatus, UploadError};

pub use schemas::wire::GroupTrigger;

/// Silence longer than this means the connection is dead (the collector sends a keep-alive
/// every 15 s).
const IDLE: Duration = Duration::from_secs(45);

fn status(st: &Mutex<GroupStatus>) -> std::sync::MutexGuard<'_, GroupStatus> {
    st.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps this host registered in `cfg.group` and forwards every trigger to `out`, until `out`
/// is closed.
pub async fn run(
    client: reqwest::Client,
    cfg: CollectorConfig,
    host_id: String,
    st: Arc<Mutex<GroupStatus>>,
    out: tokio::sync::mpsc::Sender<TriggerInfo>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match listen_once(&client, &cfg, &host_id, &st, &out).await {
            Ok(()) if out.is_closed() => return,
            Ok(()) => {}
            Err(e) => {
                let msg = e.to_string();
                if status(&st).last_error.as_deref() != Some(&msg) {
                    eprintln!(
                        "flightrec: group {}: collector connection: {msg}; retrying",
                        cfg.group
                    );
                }
                status(&st).last_error = Some(msg);
            }
        }
        status(&st).connected = false;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
        if status(&st).group_connects_total > 0 && status(&st).last_error.is_none() {
            backoff = Duration::from_millis(500);
        }
    }
}

async fn listen_once(
    client: &reqwest::Client,
    cfg: &CollectorConfig,
    host_id: &str,
    st: &Mutex<GroupStatus>,
    out: &tokio::sync::mpsc::Sender<TriggerInfo>,
) -> Result<(), UploadError> {
    let base = cfg.url.trim_end_matches('/');
    let mut rb = client
        .get(format!("{base}/v1/groups/{}/listen", cfg.group))
        .query(&[("host_id", host_id)]);
    if !cfg.token.is_empty() {
        rb = rb.bearer_auth(&cfg.token);
    }
    let resp = rb.send().await?;
    if !resp.status().is_success() {
        let status_code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        return Err(UploadError::Status {
            status: status_code,
            message: text,
        });
    }
    {
        let mut s = status(st);
        s.connected = true;
        s.group_connects_total += 1;
        s.last_error = None;
    }
    let mut stream = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut event = String::new();
    let mut data = String::new();
    loop {
        let chunk = match tokio::time::timeout(IDLE, stream.next()).await {
            Err(_) => return Ok(()), // silent too long: reconnect
            Ok(None) => return Ok(()),
            Ok(Some(c)) => c?,
        };
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if event == "trigger" {
                    let received = schemas::clock::realtime_ns();
                    match serde_json::from_str::<GroupTrigger>(&data) {
                        Ok(t) => {
                            {
                                let mut s = status(st);
                                s.group_triggers_received_total += 1;
                                s.last_trigger_id = Some(t.trigger_id.clone());
                            }
                            if out.send(t.to_trigger_info(received)).await.is_err() {
                                return Ok(());
                            }
                        }
                        Err(e) => eprintln!("flightrec: group trigger not understood: {e}"),
                    }
                }
                event.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
            // Comments (": keep-alive") and other fields are ignored.
        }
    }
}

/// Asks the collector to fan a trigger out to every recorder of `cfg.group` (a trigger with
/// `scope: group` from this host). Returns the trigger id.
pub async fn trigger_group(
    client: &reqwest::Client,
    cfg: &CollectorConfig,
    reason: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> Result<String, UploadError> {
    let base = cfg.url.trim_end_matches('/');
    let mut rb = client
        .post(format!("{base}/v1/trigger"))
        .json(&TriggerRequest {
            scope: TriggerScope::Group,
            group: cfg.group.clone(),
            reason: reason.to_owned(),
            fields,
        });
    if !cfg.token.is_empty() {
        rb = rb.bearer_auth(&cfg.token);
    }
    let resp = rb.timeout(Duration::from_secs(10)).send().await?;
    if !resp.status().is_success() {
        let status_code = resp.status().as_u16();
        return Err(UploadError::Status {
            status: status_code,
            message: resp.text().await.unwrap_or_default(),
        });
    }
    Ok(resp.json::<TriggerResponse>().await?.trigger_id)
}
