//! The request-response codec of the task and probe protocols: CBOR with size limits, and
//! every request that cannot be read counted.
//!
//! libp2p's request-response drops an inbound stream whose request cannot be read without
//! telling the behaviour (it only logs at debug level), so the count has to be taken here.
//! Two kinds are told apart, because they mean different things to an operator: a request
//! that arrived and is malformed or oversized (a bug or an attack), and a stream that ended
//! before any request arrived or failed while reading (a peer that gave up, under load).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response::{self, cbor};
use serde::{Serialize, de::DeserializeOwned};

use crate::metrics::{DropReason, Metrics};

/// CBOR codec that counts requests it cannot read in `p2p_messages_dropped_total{reason}`:
/// the protocol's `*_malformed` (undecodable or oversized) and `*_aborted` (nothing arrived, or
/// the stream failed).
pub struct Counted<Req, Resp> {
    inner: cbor::codec::Codec<Req, Resp>,
    max_request: u64,
    metrics: Metrics,
    malformed: DropReason,
    aborted: DropReason,
}

impl<Req, Resp> Clone for Counted<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            max_request: self.max_request,
            metrics: self.metrics.clone(),
            malformed: self.malformed,
            aborted: self.aborted,
        }
    }
}

impl<Req, Resp> Counted<Req, Resp> {
    /// The task protocol's codec: requests at most `max_request` bytes.
    pub fn tasks(max_request: u64, max_response: u64, metrics: Metrics) -> Self {
        Self::new(max_request, max_response, metrics, DropReason::TaskRequestMalformed, DropReason::TaskRequestAborted)
    }

    /// The probe protocol's codec.
    pub fn probes(max_request: u64, max_response: u64, metrics: Metrics) -> Self {
        Self::new(
            max_request,
            max_response,
            metrics,
            DropReason::ProbeRequestMalformed,
            DropReason::ProbeRequestAborted,
        )
    }

    /// The task-record copies' codec.
    pub fn records(max_request: u64, max_response: u64, metrics: Metrics) -> Self {
        Self::new(
            max_request,
            max_response,
            metrics,
            DropReason::RecordsRequestMalformed,
            DropReason::RecordsRequestAborted,
        )
    }

    fn new(max_request: u64, max_response: u64, metrics: Metrics, malformed: DropReason, aborted: DropReason) -> Self {
        let inner =
            cbor::codec::Codec::default().set_request_size_maximum(max_request).set_response_size_maximum(max_response);
        Self { inner, max_request, metrics, malformed, aborted }
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
        let mut bytes = Vec::new();
        if let Err(e) = io.take(self.max_request + 1).read_to_end(&mut bytes).await {
            tracing::debug!(%protocol, error = %e, "request stream failed");
            self.metrics.dropped(self.aborted);
            return Err(e);
        }
        if bytes.is_empty() {
            self.metrics.dropped(self.aborted);
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ended before a request"));
        }
        if bytes.len() as u64 > self.max_request {
            tracing::debug!(%protocol, max = self.max_request, "oversized request dropped");
            self.metrics.dropped(self.malformed);
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("request over {} bytes", self.max_request)));
        }
        let decoded = self.inner.read_request(protocol, &mut futures::io::Cursor::new(bytes)).await;
        if let Err(e) = &decoded {
            tracing::debug!(%protocol, error = %e, "undecodable request dropped");
            self.metrics.dropped(self.malformed);
        }
        decoded
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

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    use super::*;
    use crate::membership::Reach;
    use crate::protocol::{ProbeRequest, ProbeResponse, WIRE_VERSION};

    fn dropped(metrics: &Metrics, reason: &str) -> u64 {
        metrics.messages_dropped.get_or_create(&crate::metrics::ReasonLabels { reason: reason.into() }).get()
    }

    #[test]
    fn malformed_oversized_and_aborted_requests_are_told_apart() {
        let metrics = Metrics::new(&mut prometheus_client::registry::Registry::default());
        let mut codec = Counted::<ProbeRequest, ProbeResponse>::probes(64, 64, metrics.clone());
        let p = StreamProtocol::new("/test/1.0.0");
        let mut read = |bytes: Vec<u8>| block_on(codec.read_request(&p, &mut Cursor::new(bytes)));

        let mut good = Cursor::new(Vec::new());
        let request = ProbeRequest { v: WIRE_VERSION, target: "peer".into() };
        block_on(Counted::<ProbeRequest, ProbeResponse>::probes(64, 64, metrics.clone()).write_request(
            &p,
            &mut good,
            request.clone(),
        ))
        .unwrap();
        assert_eq!(read(good.into_inner()).unwrap(), request);
        assert!(read(b"\xff\x00 not cbor".to_vec()).is_err());
        assert!(read(vec![0x61; 65]).is_err(), "over the 64-byte limit");
        assert!(read(Vec::new()).is_err(), "nothing arrived");
        assert_eq!(dropped(&metrics, "probe_request_malformed"), 2);
        assert_eq!(dropped(&metrics, "probe_request_aborted"), 1);
    }

    /// The previous release's probe answer: no `timed_out`.
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct OldProbeResponse {
        v: u16,
        target: String,
        reachable: bool,
    }

    #[test]
    fn probe_answers_say_timed_out_only_when_it_did_and_read_across_releases() {
        let metrics = Metrics::new(&mut prometheus_client::registry::Registry::default());
        let p = StreamProtocol::new("/test/1.0.0");
        let mut new = Counted::<ProbeRequest, ProbeResponse>::probes(64, 64, metrics.clone());
        let mut old = Counted::<ProbeRequest, OldProbeResponse>::probes(64, 64, metrics);
        for reach in [Reach::Reachable, Reach::Unreachable, Reach::Unknown] {
            let mut bytes = Cursor::new(Vec::new());
            block_on(new.write_response(&p, &mut bytes, ProbeResponse::new("t".into(), reach))).unwrap();
            let bytes = bytes.into_inner();
            let read = block_on(new.read_response(&p, &mut Cursor::new(bytes.clone()))).unwrap();
            assert_eq!(read.reach("t"), reach);
            // An older asker reads a timed-out ping as a failed one, as it always did.
            let by_old = block_on(old.read_response(&p, &mut Cursor::new(bytes))).unwrap();
            assert_eq!(by_old.reachable, reach == Reach::Reachable);
        }
        let mut bytes = Cursor::new(Vec::new());
        let answer = OldProbeResponse { v: WIRE_VERSION, target: "t".into(), reachable: false };
        block_on(old.write_response(&p, &mut bytes, answer)).unwrap();
        let read = block_on(new.read_response(&p, &mut Cursor::new(bytes.into_inner()))).unwrap();
        assert_eq!(read.reach("t"), Reach::Unreachable, "an older helper's failure is a failure");
        assert_eq!(ProbeResponse::new("t".into(), Reach::Reachable).reach("u"), Reach::Unreachable, "about another");
    }
}
