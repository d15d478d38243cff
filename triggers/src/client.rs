//! A small client of the hook, used by the tower layer, the benchmark and the tests: HTTP/1.1 on
//! loopback, one connection per [`HookConn`] kept alive across requests.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::trigger::HookRequest;

/// Why a hook call failed (no answer, as opposed to an error answer).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed.
    #[error("connecting to the hook at {addr}: {source}")]
    Connect {
        /// The hook's address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("talking to the hook: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (a bad token or path).
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    /// No answer in time.
    #[error("the hook did not answer within {0:?}")]
    Timeout(Duration),
}

/// An answer of the hook.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body (`Null` when it was not JSON).
    pub body: serde_json::Value,
}

/// Where the hook is and the token to present.
#[derive(Clone, Debug)]
pub struct HookClient {
    /// The hook's address.
    pub addr: SocketAddr,
    /// Bearer token.
    pub token: String,
    /// Deadline of each call, connecting included.
    pub timeout: Duration,
}

/// One kept-alive connection to the hook.
pub struct HookConn {
    client: HookClient,
    sender: SendRequest<Full<Bytes>>,
}

impl HookClient {
    /// A client of the hook at `addr` with `token`, with a 2 s deadline per call.
    pub fn new(addr: SocketAddr, token: impl Into<String>) -> HookClient {
        HookClient {
            addr,
            token: token.into(),
            timeout: Duration::from_secs(2),
        }
    }

    /// Opens a connection for several calls.
    pub async fn connect(&self) -> Result<HookConn, ClientError> {
        let fut = async {
            let stream =
                TcpStream::connect(self.addr)
                    .await
                    .map_err(|source| ClientError::Connect {
                        addr: self.addr,
                        source,
                    })?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            Ok(HookConn {
                client: self.clone(),
                sender,
            })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }

    /// `POST /v1/trigger` on a fresh connection.
    pub async fn trigger(&self, req: &HookRequest) -> Result<Answer, ClientError> {
        self.connect().await?.trigger(req).await
    }
}

impl HookConn {
    /// `POST /v1/trigger`.
    pub async fn trigger(&mut self, req: &HookRequest) -> Result<Answer, ClientError> {
        let body = serde_json::to_vec(req).expect("serialisable");
        self.send(Method::POST, "/v1/trigger", body).await
    }

    /// `GET /v1/snapshots/{id}`.
    pub async fn snapshot(&mut self, id: &str) -> Result<Answer, ClientError> {
        self.send(Method::GET, &format!("/v1/snapshots/{id}"), Vec::new())
            .await
    }

    /// Any request with a JSON body (empty for none).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Answer, ClientError> {
        let timeout = self.client.timeout;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.client.addr.to_string())
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.client.token),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let fut = async {
            self.sender.ready().await?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await?.to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            Ok(Answer { status, body })
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }
}
