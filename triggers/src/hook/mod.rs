//! The HTTP trigger hook: `POST /v1/trigger` and `GET /v1/snapshots/{id}`, served by the daemon
//! on loopback.
//!
//! # Wire format
//!
//! Every request carries `Authorization: Bearer TOKEN`. Bodies are JSON ([`HookRequest`]), at
//! most `hook.max_body_bytes`. Answers are JSON:
//!
//! | request | status | body |
//! | --- | --- | --- |
//! | `POST /v1/trigger`, admitted or joined | 202 | [`Accepted`]: `{snapshot_id, joined, post_ms, status_url}` |
//! | suppressed by the governor | 429 (+ `Retry-After`) | `{error, reason, retry_after_ms}` |
//! | bad or missing token | 401 | `{error}` |
//! | malformed body, bad field | 400 (413 too large, 415 not JSON) | `{error}` |
//! | `scope: "group"` with no collector wired | 501 | `{error}` |
//! | `GET /v1/snapshots/{id}` | 200 / 404 | [`SnapshotInfo`]: `{snapshot_id, state, path?, ...}` |
//! | `POST /v1/alertmanager` (Alertmanager's webhook payload, see [`crate::alertmanager`]) | 200 | [`AlertsAnswer`]: per firing alert, its snapshot or why none |
//!
//! Alertmanager retries a webhook call that failed (5xx, no answer), so a suppressed alert is
//! still a 200 with the reason in the answer: suppression is a decision, not a failure.
//!
//! The router is generic over [`SnapshotService`], which the daemon implements, so this crate
//! does not depend on the recorder. [`serve`] runs it with the slow-loris guards: a header read
//! timeout, a per-request deadline (body included), a connection lifetime and a connection cap
//! that evicts the oldest connection with no request in flight.

mod config;
mod conns;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use config::HookConfig;

use crate::governor::SuppressReason;
use crate::trigger::{HookRequest, InvalidTrigger, Trigger};

/// A trigger the governor let through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The snapshot that will hold the trigger (a new one, or the one it joined).
    pub snapshot_id: String,
    /// Whether it joined a snapshot already being taken.
    pub joined: bool,
    /// Post-trigger window before the freeze, ms.
    pub post_ms: u64,
}

/// Why a trigger did not lead to a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The governor suppressed it.
    #[error("suppressed ({}), retry in {retry_after_ms} ms", reason.as_str())]
    Suppressed {
        /// Why.
        reason: SuppressReason,
        /// When trying again could succeed, ms (`u64::MAX`: not by waiting).
        retry_after_ms: u64,
    },
    /// `scope: "group"` but no collector is wired to fan it out.
    #[error(
        "scope \"group\" needs a collector to fan the trigger out, and none is configured on \
         this recorder; send scope \"local\" or configure the collector"
    )]
    GroupUnavailable,
    /// A field is out of its limits.
    #[error(transparent)]
    Invalid(#[from] InvalidTrigger),
    /// The recorder could not act on it (detail for the log only).
    #[error("{0}")]
    Failed(String),
}

/// Where a snapshot is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SnapshotState {
    /// Admitted; waiting for its post-trigger window, being frozen or being written.
    Pending,
    /// Written to a local file.
    Written {
        /// The file.
        path: String,
        /// The `snapshot_id` in the file's manifest.
        file_snapshot_id: String,
    },
    /// Written and acknowledged by the collector (set by the uploader).
    Uploaded {
        /// The local file (may be gone once uploaded, depending on retention).
        path: String,
        /// The `snapshot_id` in the file's manifest.
        file_snapshot_id: String,
    },
    /// Could not be taken; the detail is in the daemon's log.
    Failed,
    /// The trigger was suppressed after the kernel had frozen the rings; nothing was written.
    Dropped,
}

/// The answer to `GET /v1/snapshots/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The id given when it was admitted.
    pub snapshot_id: String,
    /// Where it is.
    #[serde(flatten)]
    pub state: SnapshotState,
    /// Source of the trigger that started it.
    pub source: String,
    /// Reason of that trigger.
    pub reason: String,
    /// Triggers that joined it.
    pub joined: u32,
}

/// What the hook needs from the recorder: take (or join) snapshots through the governor, and
/// report their state.
pub trait SnapshotService: Send + Sync + 'static {
    /// Passes `trigger` through the governor and, when admitted, starts the snapshot without
    /// waiting for it to be written. Must return quickly: the hook answers after it.
    fn trigger(&self, trigger: Trigger) -> Result<Accepted, Refused>;
    /// State of a snapshot admitted earlier.
    fn snapshot(&self, snapshot_id: &str) -> Option<SnapshotInfo>;
    /// Longest post-trigger window a request may ask for, ms.
    fn max_post_ms(&self) -> u64;
}

/// Requests the hook answered, by status code (for the recorder's metrics).
#[derive(Debug, Default)]
pub struct RequestCounts(std::sync::Mutex<std::collections::BTreeMap<u16, u64>>);

impl RequestCounts {
    /// Counts one answer with `status`.
    pub fn count(&self, status: StatusCode) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status.as_u16())
            .or_default() += 1;
    }

    /// The counts so far, by status code.
    pub fn snapshot(&self) -> std::collections::BTreeMap<u16, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// State of the hook's handlers: `Clone` and cheap (`Arc`s and numbers).
#[derive(Clone)]
pub struct HookState {
    service: Arc<dyn SnapshotService>,
    requests: Arc<RequestCounts>,
    token: Arc<str>,
    max_body_bytes: usize,
    max_alert_body_bytes: usize,
    request_timeout: Duration,
}

impl HookState {
    /// Counts answers into `requests` (shared with whoever reports them).
    pub fn with_requests(mut self, requests: Arc<RequestCounts>) -> HookState {
        self.requests = requests;
        self
    }

    /// State for `service`, accepting `token`, with the limits of `config`.
    pub fn new(service: Arc<dyn SnapshotService>, token: &str, config: &HookConfig) -> HookState {
        HookState {
            service,
            requests: Arc::default(),
            token: token.into(),
            max_body_bytes: config.max_body_bytes,
            max_alert_body_bytes: config.max_alert_body_bytes,
            request_timeout: config.request_timeout,
        }
    }
}

/// An error answer. The client learns only what it may know; details go to the log.
#[derive(Debug)]
pub enum AppError {
    /// Missing or wrong token.
    Unauthorized,
    /// The body or a field is wrong; the message is for the client.
    BadRequest(StatusCode, String),
    /// The governor suppressed the trigger.
    Suppressed(SuppressReason, u64),
    /// No such snapshot.
    NotFound,
    /// Group scope without a collector.
    GroupUnavailable,
    /// The request took longer than the deadline.
    Timeout,
    /// Something failed inside; the detail is logged, not sent.
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

/// Refused calls are logged on stderr, at most one line a second: the calls refused in between
/// are counted and reported with the next line, so a flood of bad calls cannot flood the log.
#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    held: u64,
}

impl RefusalLog {
    /// Notes one refusal at `now`; `Some(n)` when a line is due, `n` being the refusals held
    /// back since the previous line.
    fn note(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

static REFUSALS: std::sync::Mutex<RefusalLog> = std::sync::Mutex::new(RefusalLog {
    last: None,
    held: 0,
});

fn log_refusal(status: StatusCode, why: &str) {
    let due = REFUSALS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .note(std::time::Instant::now());
    match due {
        Some(0) => eprintln!("flightrec: hook refused a call: {} {why}", status.as_u16()),
        Some(n) => eprintln!(
            "flightrec: hook refused a call: {} {why} ({n} more refused since the last line)",
            status.as_u16()
        ),
        None => {}
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            AppError::Unauthorized => {
                log_refusal(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
            }
            AppError::BadRequest(status, msg) => log_refusal(*status, msg),
            AppError::Timeout => log_refusal(
                StatusCode::REQUEST_TIMEOUT,
                "the request was not complete in time",
            ),
            AppError::GroupUnavailable => log_refusal(
                StatusCode::NOT_IMPLEMENTED,
                "scope group without a collector group",
            ),
            _ => {}
        }
        let plain = |status: StatusCode, error: &str| {
            (
                status,
                Json(ErrorBody {
                    error,
                    reason: None,
                    retry_after_ms: None,
                }),
            )
                .into_response()
        };
        match self {
            AppError::Unauthorized => {
                let mut r = plain(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            AppError::BadRequest(status, msg) => plain(status, &msg),
            AppError::Suppressed(reason, retry_after_ms) => {
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(ErrorBody {
                        error: "suppressed by the trigger governor",
                        reason: Some(reason.as_str()),
                        retry_after_ms: (retry_after_ms != u64::MAX).then_some(retry_after_ms),
                    }),
                )
                    .into_response();
                if retry_after_ms != u64::MAX {
                    let secs = retry_after_ms.div_ceil(1000).max(1);
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                r
            }
            AppError::NotFound => plain(StatusCode::NOT_FOUND, "no such snapshot"),
            AppError::GroupUnavailable => plain(
                StatusCode::NOT_IMPLEMENTED,
                &Refused::GroupUnavailable.to_string(),
            ),
            AppError::Timeout => plain(
                StatusCode::REQUEST_TIMEOUT,
                "the request was not complete in time",
            ),
            AppError::Internal(detail) => {
                eprintln!("flightrec: hook: {detail}");
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the recorder could not take the snapshot; see its log",
                )
            }
        }
    }
}

impl From<Refused> for AppError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Suppressed {
                reason,
                retry_after_ms,
            } => AppError::Suppressed(reason, retry_after_ms),
            Refused::GroupUnavailable => AppError::GroupUnavailable,
            Refused::Invalid(e) => AppError::BadRequest(StatusCode::BAD_REQUEST, e.0),
            Refused::Failed(detail) => AppError::Internal(detail),
        }
    }
}

/// Compares in time independent of where the first difference is.
fn same_token(given: &[u8], want: &[u8]) -> bool {
    let mut diff = given.len() ^ want.len();
    for (i, w) in want.iter().enumerate() {
        diff |= (given.get(i).copied().unwrap_or(0) ^ w) as usize;
    }
    diff == 0
}

/// Whether `headers` carry `Authorization: Bearer TOKEN` with `token` (compared in constant
/// time); shared by every endpoint that asks for a bearer token.
pub fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|given| same_token(given, token.as_bytes()))
}

async fn auth(State(s): State<HookState>, req: Request, next: Next) -> Response {
    if !authorized(req.headers(), &s.token) {
        return AppError::Unauthorized.into_response();
    }
    next.run(req).await
}

async fn deadline(State(s): State<HookState>, req: Request, next: Next) -> Response {
    let resp = match tokio::time::timeout(s.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => AppError::Timeout.into_response(),
    };
    // The outermost layer: every answer is counted, refusals by the token check included.
    s.requests.count(resp.status());
    resp
}

/// `202 Accepted` body.
#[derive(Serialize)]
struct AcceptedBody {
    #[serde(flatten)]
    accepted: Accepted,
    status_url: String,
}

async fn post_trigger(
    State(s): State<HookState>,
    body: Result<Json<HookRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<AcceptedBody>), AppError> {
    let Json(req) = body.map_err(|e| AppError::BadRequest(e.status(), e.body_text()))?;
    let trigger = req
        .into_trigger(s.service.max_post_ms())
        .map_err(|e| AppError::BadRequest(StatusCode::BAD_REQUEST, e.0))?;
    let accepted = s.service.trigger(trigger)?;
    let status_url = format!("/v1/snapshots/{}", accepted.snapshot_id);
    Ok((
        StatusCode::ACCEPTED,
        Json(AcceptedBody {
            accepted,
            status_url,
        }),
    ))
}

async fn get_snapshot(
    State(s): State<HookState>,
    Path(id): Path<String>,
) -> Result<Json<SnapshotInfo>, AppError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(AppError::NotFound);
    }
    s.service.snapshot(&id).map(Json).ok_or(AppError::NotFound)
}

/// What became of one firing alert of an Alertmanager call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertOutcome {
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// Its `alertname`.
    pub alertname: String,
    /// The snapshot that holds it, when admitted or joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Whether it joined a snapshot already being taken.
    #[serde(default)]
    pub joined: bool,
    /// Why no snapshot was taken for it (`duplicate`, `cooldown`...), when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<String>,
}

/// The answer to `POST /v1/alertmanager`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertsAnswer {
    /// One entry per firing alert, in the payload's order.
    pub alerts: Vec<AlertOutcome>,
    /// Resolved alerts in the payload, acknowledged and ignored.
    pub resolved: usize,
}

async fn post_alertmanager(
    State(s): State<HookState>,
    body: Result<Json<crate::alertmanager::Payload>, JsonRejection>,
) -> Result<Json<AlertsAnswer>, AppError> {
    let Json(payload) = body.map_err(|e| AppError::BadRequest(e.status(), e.body_text()))?;
    let firing = crate::alertmanager::triggers(&payload)
        .map_err(|e| AppError::BadRequest(StatusCode::BAD_REQUEST, e.0))?;
    let resolved = payload.alerts.len() - firing.len();
    let mut alerts = Vec::with_capacity(firing.len());
    for (alert, trigger) in firing {
        let mut out = AlertOutcome {
            fingerprint: alert.fingerprint.clone(),
            alertname: trigger.reason.clone(),
            snapshot_id: None,
            joined: false,
            suppressed: None,
        };
        match s.service.trigger(trigger) {
            Ok(a) => {
                out.snapshot_id = Some(a.snapshot_id);
                out.joined = a.joined;
            }
            Err(Refused::Suppressed { reason, .. }) => {
                out.suppressed = Some(reason.as_str().to_owned());
            }
            Err(e) => return Err(e.into()),
        }
        alerts.push(out);
    }
    Ok(Json(AlertsAnswer { alerts, resolved }))
}

async fn not_found() -> AppError {
    AppError::BadRequest(
        StatusCode::NOT_FOUND,
        "no such endpoint (POST /v1/trigger, GET /v1/snapshots/{id}, POST /v1/alertmanager)".into(),
    )
}

/// The hook's routes with authentication, body limit and request deadline.
pub fn app(state: HookState) -> Router {
    Router::new()
        .route("/v1/trigger", post(post_trigger))
        .route("/v1/snapshots/{id}", get(get_snapshot))
        .route(
            "/v1/alertmanager",
            // Alertmanager groups alerts: its calls are larger than a webserver's.
            post(post_alertmanager).layer(DefaultBodyLimit::max(state.max_alert_body_bytes)),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` completes, with the connection limits of
/// `config`. Each connection is HTTP/1.1 with a header read timeout and a lifetime; past
/// `max_connections` a new connection replaces the oldest one with no request in flight (see
/// `conns`), so slow or idle clients cannot lock legitimate callers out.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HookConfig,
    shutdown: impl Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};

    let table = Arc::new(conns::Table::default());
    let header_timeout = config.header_timeout;
    let lifetime = config.connection_timeout;
    let cap = config.max_connections;
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(_) => {
                    // EMFILE and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let Some((id, conn)) = table.admit(cap) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, table, c2) = (app.clone(), table.clone(), conn.clone());
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let busy = conns::Busy::new(c2.clone());
                let app = app.clone();
                async move {
                    let resp = match tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new))
                        .await
                    {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                    Ok::<_, std::convert::Infallible>(
                        resp.map(|inner| conns::Tracked { inner, _busy: busy }),
                    )
                }
            });
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(lifetime, served) => {}
                () = conn.evicted.notified() => {}
            }
            table.remove(id);
        });
    }
}

#[cfg(test)]
mod tests;
