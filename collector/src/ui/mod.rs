//! The web UI: server-rendered HTML over the same catalog, archive and analyses as the JSON
//! API, no scripts. Pages: the snapshot list with filters (`/`), one snapshot
//! (`/ui/snapshots/ID`), and a group trigger's snapshots side by side (`/ui/triggers/ID`).
//! With tokens configured, `/login` stores a reader token in a cookie.
//!
//! One module a page (`list`, `snapshot`, `group`, `login`); `page` holds the layout, escaping
//! and formatting they share, `charts` the histograms and timelines, `story` the findings and the request's story that
//! open a snapshot page.

mod charts;
mod group;
mod list;
mod login;
mod page;
mod snapshot;
mod story;

use axum::Router;
use axum::routing::get;

use crate::AppState;

pub use page::{esc, utc};

/// Routes of the UI.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(list::list))
        .route("/ui/snapshots/{id}", get(snapshot::snapshot))
        .route("/ui/triggers/{id}", get(group::group))
        .route("/login", get(login::login))
}

#[cfg(test)]
mod tests {
    use super::page::q;
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(q("a b&c"), "a%20b%26c");
        assert_eq!(utc(1_795_594_724_123_000_000), "2026-11-25 08:18:44.123");
    }
}
