//! The request-response codec of the task and probe protocols: CBOR with size limits, and
//! every request that fails to decode counted.
//!
//! libp2p's request-response drops an inbound stream whose request cannot be read without
//! telling the behaviour (it only logs at debug level), so the count has to be taken here.

use std::io;

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response::{self, cbor};
use serde::{Serialize, de::DeserializeOwned};

use crate::metrics::Metrics;

/// CBOR codec that counts undecodable (malformed, truncated or oversized) requests in
/// `p2p_messages_dropped_total{reason}`.
pub struct Counted<Req, Resp> {
    inner: cbor::codec::Codec<Req, Resp>,
    metrics: Metrics,
    malformed: &'static str,
}

impl<Req, Resp> Clone for Counted<Req, Resp> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), metrics: self.metrics.clone(), malformed: self.malformed }
    }
}

impl<Req, Resp> Counted<Req, Resp> {
    pub fn new(max_request: u64, max_response: u64, metrics: Metrics, malformed: &'static str) -> Self {
        let inner =
            cbor::codec::Codec::default().set_request_size_maximum(max_request).set_response_size_maximum(max_response);
        Self { inner, metrics, malformed }
    }
}

impl<Req, Resp> request_response::Codec for Counted<Req, Resp>
where
    Req: Send + Serialize + DeserializeOwned,
    Resp: Send + Serialize + DeserializeOwned,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, protocol: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        let read = self.inner.read_request(protocol, io).await;
        if let Err(e) = &read {
            tracing::debug!(%protocol, error = %e, "undecodable request dropped");
            self.metrics.dropped(self.malformed);
        }
        read
    }

    async fn read_response<T>(&mut self, protocol: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.inner.read_response(protocol, io).await
    }

    async fn write_request<T>(&mut self, protocol: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.inner.write_request(protocol, io, req).await
    }

    async fn write_response<T>(&mut self, protocol: &StreamProtocol, io: &mut T, resp: Resp) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.inner.write_response(protocol, io, resp).await
    }
}
