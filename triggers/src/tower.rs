//! A tower layer for Rust HTTP services: requests slower than a threshold are reported to the
//! flightrec hook with their URL, method, duration and request id, without delaying them.
//!
//! ```no_run
//! # async fn demo() {
//! use triggers::client::HookClient;
//! use triggers::tower::SlowRequestLayer;
//! let hook = HookClient::new("127.0.0.1:7341".parse().unwrap(), "the-hook-token-123");
//! let app: axum::Router = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hi" }))
//!     .layer(SlowRequestLayer::new(std::time::Duration::from_millis(500), hook));
//! # }
//! ```
//!
//! The duration is measured from the request entering the layer to the response head leaving the
//! inner service (streamed bodies are not waited for). The report is sent from a spawned task, so
//! the response goes out at once and a slow or absent hook never slows the service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ::tower::{Layer, Service};
use hyper::{Request, Response};

use crate::client::HookClient;
use crate::trigger::HookRequest;

/// A request that took at least the threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowRequest {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub url: String,
    /// Time to the response head.
    pub duration: Duration,
    /// `X-Request-Id` of the request, if it had one.
    pub request_id: Option<String>,
    /// Response status.
    pub status: u16,
}

impl SlowRequest {
    /// The hook body reporting this request.
    pub fn to_hook_request(&self) -> HookRequest {
        let mut tags = std::collections::BTreeMap::new();
        tags.insert("status".to_owned(), self.status.to_string());
        HookRequest {
            reason: format!("slow request: {} {}", self.method, self.url),
            url: Some(self.url.clone()),
            method: Some(self.method.clone()),
            duration_ms: Some(self.duration.as_secs_f64() * 1e3),
            request_id: self.request_id.clone(),
            // Tasks move between runtime threads, so no thread is named: the pid and the
            // start still place the request in the snapshot.
            pid: Some(std::process::id()),
            start_realtime_ns: schemas::clock::realtime_ns()
                .checked_sub(u64::try_from(self.duration.as_nanos()).unwrap_or(u64::MAX)),
            tags,
            ..HookRequest::default()
        }
    }
}

/// Receives slow requests. Must not block: it runs on the request's task.
pub trait SlowRequestSink: Clone + Send + Sync + 'static {
    /// Called once per slow request, when its response head is ready.
    fn slow_request(&self, req: SlowRequest);
}

impl SlowRequestSink for HookClient {
    fn slow_request(&self, req: SlowRequest) {
        let client = self.clone();
        tokio::spawn(async move {
            match client.trigger(&req.to_hook_request()).await {
                Ok(a) if a.status == 202 || a.status == 429 => {}
                Ok(a) => eprintln!(
                    "flightrec hook answered {} for slow request {} {}: {}",
                    a.status, req.method, req.url, a.body
                ),
                Err(e) => eprintln!("flightrec hook: {e}"),
            }
        });
    }
}

/// Wraps a service so that its slow requests go to a [`SlowRequestSink`].
#[derive(Clone, Debug)]
pub struct SlowRequestLayer<S> {
    threshold: Duration,
    sink: S,
}

impl<S: SlowRequestSink> SlowRequestLayer<S> {
    /// Reports requests taking at least `threshold` to `sink`.
    pub fn new(threshold: Duration, sink: S) -> Self {
        SlowRequestLayer { threshold, sink }
    }
}

impl<S: SlowRequestSink, I> Layer<I> for SlowRequestLayer<S> {
    type Service = SlowRequestService<I, S>;

    fn layer(&self, inner: I) -> Self::Service {
        SlowRequestService {
            inner,
            threshold: self.threshold,
            sink: self.sink.clone(),
        }
    }
}

/// The service made by [`SlowRequestLayer`].
#[derive(Clone, Debug)]
pub struct SlowRequestService<I, S> {
    inner: I,
    threshold: Duration,
    sink: S,
}

impl<I, S, B, RB> Service<Request<B>> for SlowRequestService<I, S>
where
    I: Service<Request<B>, Response = Response<RB>>,
    I::Future: Send + 'static,
    S: SlowRequestSink,
{
    type Response = Response<RB>;
    type Error = I::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, I::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let method = req.method().as_str().to_owned();
        let url = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
        let request_id = req
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let threshold = self.threshold;
        let sink = self.sink.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let duration = start.elapsed();
            if duration >= threshold {
                sink.slow_request(SlowRequest {
                    method,
                    url,
                    duration,
                    request_id,
                    status: resp.status().as_u16(),
                });
            }
            Ok(resp)
        })
    }
}
