//! Serving the router: plain HTTP or HTTPS, with the guards that keep one client from holding
//! the collector's connections or file descriptors.
//!
//! - **Header timeout** (`server.header_timeout`): a connection must finish its TLS handshake
//!   and send complete request headers this soon after it opens (HTTP/1.1 slow loris).
//! - **Idle timeout** (`server.idle_timeout`): a connection with no request in flight and no
//!   byte moving either way for this long is closed (kept-alive sockets, HTTP/2 included).
//! - **Body timeout** (`server.body_timeout`): a request body must arrive completely this soon
//!   after its headers, or reading it fails and the request is answered 400.
//! - **Connection cap** (`server.max_connections`): past it, a new connection replaces the
//!   connection that has been idle longest; when every connection has a request in flight the
//!   new one is closed at once. A flood of idle sockets therefore never locks a legitimate
//!   client out, and the descriptors held stay at the cap.
//!
//! Long-lived requests (downloads, the group SSE streams) are busy, never idle: they are
//! neither evicted nor timed out while their response is being written.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};

use crate::config::{Config, ServerConfig};
use crate::{AppState, StartError};

/// Connections open and what became of the others, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Open now.
    pub open: AtomicU64,
    /// Closed at once: the cap was reached and every connection was busy.
    pub refused: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// Closed for idling past `server.idle_timeout`.
    pub idle_closed: AtomicU64,
}

/// One open connection as the accept loop sees it.
struct Conn {
    /// Requests whose response has not been fully written.
    busy: AtomicUsize,
    /// When a byte last moved, ms since [`Table::epoch`].
    last_active_ms: AtomicU64,
    /// Set when evicted; the connection's task then drops it.
    evicted: AtomicBool,
    kick: Notify,
}

struct Table {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    epoch: Instant,
    stats: Arc<ConnStats>,
}

impl Table {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection, evicting the longest-idle one when at `cap`; `None` when
    /// every connection is busy.
    fn admit(&self, cap: usize) -> Option<(u64, Arc<Conn>)> {
        let mut conns = self.lock();
        if conns.len() >= cap {
            let victim = conns
                .iter()
                .filter(|(_, c)| c.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, c)| c.last_active_ms.load(Ordering::Relaxed))
                .map(|(id, _)| *id)?;
            let c = conns.remove(&victim).expect("just found");
            c.evicted.store(true, Ordering::Release);
            c.kick.notify_one();
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(self.now_ms()),
            evicted: AtomicBool::new(false),
            kick: Notify::new(),
        });
        conns.insert(id, conn.clone());
        Some((id, conn))
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// The socket, noting when bytes move (the idle clock).
struct Activity<S> {
    inner: S,
    conn: Arc<Conn>,
    table: Arc<Table>,
}

impl<S> Activity<S> {
    fn touch(&self) {
        self.conn
            .last_active_ms
            .store(self.table.now_ms(), Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Marks its connection busy for as long as it lives: from a request's headers until its
/// response body is written or dropped.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body holding its connection busy.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within server.body_timeout")]
pub struct BodyTimeout;

/// A request body that must be complete by a deadline.
struct Deadline {
    inner: hyper::body::Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future;

/// Serves one accepted connection until it ends, idles out, is evicted or the server stops.
async fn connection<S>(
    io: S,
    router: Router,
    conn: Arc<Conn>,
    table: Arc<Table>,
    limits: ServerConfig,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let c2 = conn.clone();
    let body_timeout = limits.body_timeout;
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let busy = Busy::new(c2.clone());
        let router = router.clone();
        async move {
            let req = req.map(|inner| {
                Body::new(Deadline {
                    inner,
                    sleep: Box::pin(tokio::time::sleep(body_timeout)),
                })
            });
            let resp = match tower::ServiceExt::oneshot(router, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(resp.map(|inner| Tracked { inner, _busy: busy }))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let served = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    let idle_ms = limits.idle_timeout.as_millis() as u64;
    loop {
        let last = conn.last_active_ms.load(Ordering::Relaxed);
        let wake = table.epoch + Duration::from_millis(last + idle_ms);
        tokio::select! {
            _ = served.as_mut() => break,
            () = conn.kick.notified() => {
                if conn.evicted.load(Ordering::Acquire) {
                    break;
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let quiet = table.now_ms().saturating_sub(conn.last_active_ms.load(Ordering::Relaxed));
                if conn.busy.load(Ordering::Acquire) == 0 && quiet >= idle_ms {
                    table.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            _ = stop.changed() => {
                served.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), served.as_mut()).await;
                break;
            }
        }
    }
}

/// Loads the TLS certificate and key named in the configuration.
fn tls_config(config: &Config) -> Result<Arc<rustls::ServerConfig>, StartError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&config.server.tls_cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            StartError::Tls(format!("reading {}: {e}", config.server.tls_cert.display()))
        })?;
    let key = PrivateKeyDer::from_pem_file(&config.server.tls_key).map_err(|e| {
        StartError::Tls(format!("reading {}: {e}", config.server.tls_key.display()))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// Serves `state` on `listener` (plain HTTP or HTTPS as configured) with retention running,
/// until `shutdown` resolves; then lets requests in flight finish for up to 5 s.
pub async fn serve(
    state: AppState,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    use axum_server::accept::Accept;
    let io = |what: &str| {
        let what = what.to_owned();
        move |source| StartError::Io { what, source }
    };
    listener
        .set_nonblocking(true)
        .map_err(io("configuring the listener"))?;
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(io("adopting the listener"))?;
    let limits = state.config.server.clone();
    let tls = state
        .config
        .tls_enabled()
        .then(|| tls_config(&state.config))
        .transpose()?
        .map(|tls| {
            axum_server::tls_rustls::RustlsAcceptor::new(
                axum_server::tls_rustls::RustlsConfig::from_config(tls),
            )
            .handshake_timeout(limits.header_timeout)
        });
    let table = Arc::new(Table {
        conns: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
        epoch: Instant::now(),
        stats: state.metrics.connections.clone(),
    });
    let retention = tokio::spawn(crate::retention::run(state.clone()));
    let renew = tokio::spawn(state.groups.clone().renew());
    let groups = state.groups.clone();
    let router = crate::app(state);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            conn = listener.accept() => match conn {
                Ok((s, _)) => s,
                Err(_) => {
                    // EMFILE and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Reap finished tasks so the set stays the size of the open connections.
        while tasks.try_join_next().is_some() {}
        let Some((id, conn)) = table.admit(limits.max_connections) else {
            table.stats.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = Activity {
            inner: stream,
            conn: conn.clone(),
            table: table.clone(),
        };
        let (router, table, limits, stop) = (
            router.clone(),
            table.clone(),
            limits.clone(),
            stop_rx.clone(),
        );
        let tls = tls.clone();
        tasks.spawn(async move {
            table.stats.open.fetch_add(1, Ordering::Relaxed);
            match tls {
                None => connection(io, router, conn, table.clone(), limits, stop).await,
                Some(acceptor) => {
                    // The handshake is bounded by the acceptor's timeout (header_timeout).
                    if let Ok((tls_io, ())) = acceptor.accept(io, ()).await {
                        connection(tls_io, router, conn, table.clone(), limits, stop).await;
                    }
                }
            }
            table.remove(id);
            table.stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(6), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    retention.abort();
    renew.abort();
    // The streams have ended: the other replicas stop counting this one's registrations now
    // rather than when their lease runs out.
    let _ = tokio::time::timeout(Duration::from_secs(2), groups.forget()).await;
    Ok(())
}
