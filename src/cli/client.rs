//! A small HTTP client for the node's own API, used by the CLI to talk to a running node.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the node API at {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("{message}")]
    Api { status: u16, code: String, message: String },
    #[error("unexpected answer from the node API: {0}")]
    Protocol(String),
}

#[derive(Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    pub fn new(addr: SocketAddr) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        Self { addr, http: Client::builder(TokioExecutor::new()).build(connector) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a request and decodes a JSON answer; API errors become `ClientError::Api`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        self.send(method, path, bytes, "application/json", timeout).await
    }

    /// POSTs raw bytes (a module upload) and decodes the JSON answer.
    pub async fn post_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<serde_json::Value, ClientError> {
        self.send(Method::POST, path, Bytes::from(bytes), "application/wasm", Duration::from_secs(60)).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        bytes: Bytes,
        content_type: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        let uri = format!("http://{}{}", self.addr, path);
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type)
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let unreachable = |reason: String| ClientError::Unreachable { addr: self.addr, reason };
        let resp = tokio::time::timeout(timeout, self.http.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", timeout.as_secs())))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(format!("{status}: {e}")))?;
        if status.is_success() || (status == StatusCode::SERVICE_UNAVAILABLE && path == "/readyz") {
            Ok(value)
        } else {
            Err(ClientError::Api {
                status: status.as_u16(),
                code: value["code"].as_str().unwrap_or("unknown").to_string(),
                message: value["error"].as_str().unwrap_or("unknown error").to_string(),
            })
        }
    }

    pub async fn get(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, path, None, Duration::from_secs(10)).await
    }

    /// Whether a node answers at this address (used to decide client versus node mode).
    pub async fn node_running(&self) -> bool {
        matches!(
            self.call(Method::GET, "/v1/status", None, Duration::from_millis(1500)).await,
            Ok(v) if v.get("peer_id").is_some()
        )
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
