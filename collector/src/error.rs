//! `AppError`: every handler's error. It logs the detail and tells the client only what it may
//! know: why its request was refused, never paths, SQL or store errors.

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An HTTP error answer.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No valid token.
    #[error("a valid token is required")]
    Unauthorized,
    /// The token may not do this.
    #[error("this token may not {0}")]
    Forbidden(&'static str),
    /// Nothing there.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the state: an upload at the wrong offset carries the offset
    /// to resume from.
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
        /// Where the upload stands.
        offset: Option<u64>,
    },
    /// Beyond a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// An upload failed verification; it was discarded.
    #[error("{0}")]
    Rejected(String),
    /// Too busy for now.
    #[error("{0}")]
    Unavailable(String),
    /// Something broke on our side; the detail goes to the log only.
    #[error("internal error")]
    Internal(String),
}

impl AppError {
    /// An internal error from anything displayable.
    pub fn internal(e: impl std::fmt::Display) -> AppError {
        AppError::Internal(e.to_string())
    }

    /// An internal error with its whole chain of causes, each layer saying what it was doing.
    pub fn internal_chain(e: &(dyn std::error::Error + 'static)) -> AppError {
        AppError::Internal(schemas::error_chain(e))
    }
}

impl From<crate::catalog::CatalogError> for AppError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        match e {
            // The database is down or restarting: a client retries later (uploads resume).
            crate::catalog::CatalogError::Unavailable(why) => {
                tracing::warn!(%why, "catalog unavailable");
                AppError::Unavailable("the catalog is unavailable; retry later".into())
            }
            e => AppError::internal(e),
        }
    }
}

impl From<crate::archive::ArchiveError> for AppError {
    fn from(e: crate::archive::ArchiveError) -> Self {
        AppError::internal(e)
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::internal(format!("task failed: {e}"))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(detail) => {
                tracing::error!(%detail, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let offset = match &self {
            AppError::Conflict {
                offset: Some(o), ..
            } => Some(*o),
            _ => None,
        };
        let body = schemas::wire::ErrorBody {
            error: self.to_string(),
            offset,
        };
        let mut resp = (status, Json(body)).into_response();
        if let Some(o) = offset {
            resp.headers_mut()
                .insert("upload-offset", HeaderValue::from(o));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
