//! The hook's connection cap. Past `hook.max_connections`, a new connection replaces the
//! oldest one with no request in flight: a slow client still sending its headers, or an idle
//! kept-alive one. Only when every connection has a request in flight is the new one closed.
//! Slow clients therefore cannot lock legitimate callers out; they only evict each other.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::Notify;

/// One open connection.
#[derive(Default)]
pub(super) struct Conn {
    /// Requests whose response has not been fully written.
    busy: AtomicUsize,
    /// Wakes the connection's task when it is evicted.
    pub(super) evicted: Notify,
}

/// Open connections by admission order.
#[derive(Default)]
pub(super) struct Table {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next: AtomicU64,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection, evicting the oldest idle one when at `cap`; `None` when
    /// every connection is busy.
    pub(super) fn admit(&self, cap: usize) -> Option<(u64, Arc<Conn>)> {
        let mut conns = self.lock();
        if conns.len() >= cap {
            let victim = conns
                .iter()
                .find(|(_, c)| c.busy.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id)?;
            let c = conns.remove(&victim).expect("just found");
            c.evicted.notify_one();
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        conns.insert(id, conn.clone());
        Some((id, conn))
    }

    /// Forgets a closed connection.
    pub(super) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// Marks its connection busy while it lives: from a request's headers until its response is
/// written or dropped.
pub(super) struct Busy(Arc<Conn>);

impl Busy {
    pub(super) fn new(conn: Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection busy until it is written.
pub(super) struct Tracked {
    pub(super) inner: Body,
    pub(super) _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_idle_connection_makes_room() {
        let t = Table::default();
        let (a, ca) = t.admit(2).unwrap();
        let (_b, cb) = t.admit(2).unwrap();
        let busy_a = Busy::new(ca.clone());
        // a is busy: b, the oldest idle one, goes.
        let (_c, cc) = t.admit(2).unwrap();
        assert_eq!(t.lock().len(), 2);
        assert!(t.lock().contains_key(&a));
        let _busy_c = Busy::new(cc);
        // Every connection busy: the new one is refused.
        assert!(t.admit(2).is_none());
        drop(busy_a);
        assert!(t.admit(2).is_some());
        assert!(!t.lock().contains_key(&a));
        drop(cb);
    }
}
