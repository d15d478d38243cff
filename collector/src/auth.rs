//! Who is calling: a bearer token (or the `flightrec_token` cookie the web UI sets) mapped to a
//! role. With `auth.open` (and no token configured) every caller is an admin, on loopback only
//! (see `Config::check`); with no token and no `auth.open`, the collector generated an admin
//! token in its data directory.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::AppState;
use crate::error::AppError;

/// Name of the cookie the web UI's login sets.
pub const COOKIE: &str = "flightrec_token";

/// The caller's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// May do everything.
    Admin,
    /// May browse and download.
    Reader,
    /// A recorder: may upload its own host's snapshots, register in groups and fire group
    /// triggers.
    Recorder(String),
}

impl Caller {
    /// Browsing and downloading.
    pub fn require_read(&self) -> Result<(), AppError> {
        match self {
            Caller::Admin | Caller::Reader => Ok(()),
            Caller::Recorder(_) => Err(AppError::Forbidden("browse the archive")),
        }
    }

    /// Acting for `host_id` (uploads, group registration).
    pub fn require_host(&self, host_id: &str) -> Result<(), AppError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Recorder(h) if h == host_id => Ok(()),
            Caller::Recorder(_) => Err(AppError::Forbidden("act for another host")),
            Caller::Reader => Err(AppError::Forbidden("upload or register")),
        }
    }

    /// Host id bound to the token; `None` for admins (any host).
    pub fn host(&self) -> Option<&str> {
        match self {
            Caller::Recorder(h) => Some(h),
            _ => None,
        }
    }
}

/// Compares without an early exit, so response timing tells nothing about a token's prefix.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn token_of(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    let cookies = parts
        .headers
        .get(axum::http::header::COOKIE)?
        .to_str()
        .ok()?;
    cookies.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == COOKIE).then(|| v.to_owned())
    })
}

/// The caller a token stands for, `None` for a token this collector does not know.
pub fn caller_of_token(state: &AppState, token: &str) -> Option<Caller> {
    let auth = &state.config.auth;
    if auth.admins.iter().any(|t| same(t, token)) {
        return Some(Caller::Admin);
    }
    if auth.readers.iter().any(|t| same(t, token)) {
        return Some(Caller::Reader);
    }
    auth.recorders
        .iter()
        .find(|r| same(&r.token, token))
        .map(|r| Caller::Recorder(r.host_id.clone()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if state.config.open() {
            return Ok(Caller::Admin);
        }
        let token = token_of(parts).ok_or(AppError::Unauthorized)?;
        caller_of_token(state, &token).ok_or(AppError::Unauthorized)
    }
}
