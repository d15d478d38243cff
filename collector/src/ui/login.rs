//! Sign-in: the token form, and `/login`, which stores a reader token in a cookie.

use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::page::page;
use crate::auth::COOKIE;

pub(super) fn login_page(status: StatusCode) -> Response {
    let body = "<p>This collector needs a reader token.</p><form action=\"/login\" \
                method=\"get\"><input type=\"password\" name=\"token\" placeholder=\"token\">\
                <button>Sign in</button></form>";
    (status, page("sign in", body)).into_response()
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: Option<String>,
}

pub(super) async fn login(Query(f): Query<LoginForm>) -> Response {
    match f.token.filter(|t| !t.is_empty()) {
        None => login_page(StatusCode::OK),
        Some(token) => {
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
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
