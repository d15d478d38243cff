//! Sign-in: the token form, and `/login`, which stores a reader token in a cookie.

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::page::page;
use crate::AppState;
use crate::auth::{COOKIE, Caller};

pub(super) fn login_page(status: StatusCode) -> Response {
    form(status, "<p>This collector needs a reader token.</p>")
}

fn form(status: StatusCode, note: &str) -> Response {
    let body = format!(
        "{note}<form action=\"/login\" \
                method=\"get\"><input type=\"password\" name=\"token\" placeholder=\"token\">\
                <button>Sign in</button></form>"
    );
    (status, page("sign in", &body)).into_response()
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: Option<String>,
}

/// Stores the token in the cookie only once it is known to be a reader's or an admin's: an
/// unknown text never reaches `Set-Cookie` (where a `;` would add attributes).
pub(super) async fn login(State(st): State<AppState>, Query(f): Query<LoginForm>) -> Response {
    match f.token.filter(|t| !t.is_empty()) {
        None => login_page(StatusCode::OK),
        Some(token) => {
            if !matches!(
                crate::auth::caller_of_token(&st, &token),
                Some(Caller::Admin | Caller::Reader)
            ) {
                return form(
                    StatusCode::UNAUTHORIZED,
                    "<p>That is not a reader or admin token of this collector.</p>",
                );
            }
            let secure = if st.config.tls_enabled() {
                "; Secure"
            } else {
                ""
            };
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
            let mut resp = (StatusCode::SEE_OTHER, "").into_response();
            resp.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/"));
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
    }
}
