//! `GET /metrics` on the daemon: [`crate::metrics::render`] of the live status, behind an
//! optional bearer token.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Shared;

#[derive(Clone)]
struct Scrape {
    shared: Arc<Shared>,
    token: Option<Arc<str>>,
}

async fn metrics(State(s): State<Scrape>, headers: HeaderMap) -> Response {
    if let Some(want) = &s.token
        && !triggers::hook::authorized(&headers, want)
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token (Authorization: Bearer TOKEN)\n",
        )
            .into_response();
    }
    // The status takes the rings' lock briefly; off the runtime's workers all the same.
    let shared = s.shared.clone();
    let text = move || {
        let families = crate::hist::families(&shared.config).unwrap_or(0);
        let pins = &shared.config.recorder.pin_dir;
        crate::metrics::render(&super::status(&shared), pins, families)
    };
    match tokio::task::spawn_blocking(text).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            eprintln!("flightrec: metrics: {e}");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "no such endpoint (GET /metrics)\n")
}

/// The metrics router for the daemon `shared`, asking for `token` when set.
pub(super) fn app(shared: Arc<Shared>, token: Option<String>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(Scrape {
            shared,
            token: token.map(Arc::from),
        })
}
