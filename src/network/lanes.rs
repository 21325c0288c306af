//! Task lanes: one long-lived stream from a submitter to a worker carries many tasks.
//!
//! Request-response opens a yamux stream per task and negotiates its protocol with
//! multistream-select each time; at 20,000 tasks/s that was a third of a gateway's CPU and
//! nearly half a worker's. A lane opens one stream per peer (per connection it runs on) and
//! writes tasks and answers as length-prefixed CBOR frames, the same CBOR messages
//! request-response carries. Writes queued together go out in one flush, so under load many
//! tasks share a noise frame.
//!
//! - **Correlation.** Answers come back in any order, matched by `(task_id, attempt)`. An
//!   answer to nothing we sent is dropped and counted (`task_response_unexpected`).
//! - **Credit.** A worker reads a lane's next request only while fewer than
//!   `limits.max_task_streams` of its requests are unanswered; beyond that the submitter's
//!   writes wait in yamux's window. A submitter keeps at most [`MAX_IN_FLIGHT`] tasks
//!   unanswered on a lane and fails further ones at once.
//! - **Bad input.** A frame that does not decode is dropped and counted, and the lane goes
//!   on: the length prefix keeps it in step. A frame over the size limit ends the lane (its
//!   bytes cannot be skipped safely), counted as malformed too.
//! - **Nothing lost.** When a lane ends (connection closed, stream reset, oversized frame),
//!   every task it held and every task still queued for it is answered with
//!   `ConnectionLost`, and the gateway retries them like any lost attempt.
//! - **Older peers.** A worker that does not speak the lane protocol is sent tasks by
//!   request-response, which every node still serves.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};

use futures::io::AsyncReadExt as _;
use futures::{SinkExt, StreamExt as _};
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams, OpenStreamError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::compat::{FuturesAsyncReadCompatExt as _, FuturesAsyncWriteCompatExt as _};
use tokio_util::task::TaskTracker;

use super::event::DispatchError;
use crate::metrics::{DropReason, Limit, Metrics};
use crate::protocol::{MAX_TASK_REQUEST_BYTES, MAX_TASK_RESPONSE_BYTES, TaskRequest, TaskResponse};

/// Tasks a submitter keeps unanswered on one lane before it fails new ones at once. The
/// gateway's own bound (a worker's advertised capacity) keeps far below it.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Lanes one peer may hold open to us at a time (one per connection is the norm).
const MAX_INBOUND_LANES_PER_PEER: usize = 4;
/// Frames written before a flush, at most: under load, one flush carries this many.
const WRITE_BATCH: usize = 256;

/// What lanes tell the event loop.
#[derive(Debug)]
pub enum LaneEvent {
    /// The worker does not speak the lane protocol: send these, and later ones, by
    /// request-response.
    Unsupported { peer: PeerId, requests: Vec<TaskRequest> },
    /// A task request read from a lane someone opened to us; `reply` carries the answer back.
    Request { peer: PeerId, request: TaskRequest, reply: Reply },
    /// A peer opened a lane to us.
    InboundOpened { peer: PeerId },
    /// A lane a peer opened to us has ended.
    InboundClosed { peer: PeerId },
    /// The answer to a task we sent on a lane, or why none will come.
    Answered { peer: PeerId, task_id: String, attempt: u32, result: Result<TaskResponse, DispatchError> },
}

/// Where the answer to a request read from a lane goes. It holds one unit of the lane's
/// credit until the answer is written (or the reply is dropped unanswered).
#[derive(Debug)]
pub struct Reply {
    /// Bounded by the lane's credit: every queued answer holds one of its permits, so the
    /// queue is never full while a reply exists.
    tx: mpsc::Sender<(TaskResponse, OwnedSemaphorePermit)>,
    permit: OwnedSemaphorePermit,
}

impl Reply {
    /// Queues the answer on its lane; false when the lane has ended.
    pub fn send(self, response: TaskResponse) -> bool {
        self.tx.try_send((response, self.permit)).is_ok()
    }
}

/// Why [`OutboundLane::send`] gave a request back.
pub enum NotQueued {
    /// The lane has ended: open a new one.
    Ended(TaskRequest),
    /// [`MAX_IN_FLIGHT`] tasks already wait to be written to the worker.
    Full(TaskRequest),
}

/// Length-prefixed frames (4-byte big-endian length) of at most `max` bytes.
pub fn frame_codec(max: u64) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(usize::try_from(max).unwrap_or(usize::MAX)).new_codec()
}

pub fn encode<T: serde::Serialize>(message: &T) -> io::Result<Bytes> {
    cbor4ii::serde::to_vec(Vec::new(), message).map(Bytes::from).map_err(io::Error::other)
}

pub fn decode<T: serde::de::DeserializeOwned>(frame: &[u8]) -> Result<T, String> {
    cbor4ii::serde::from_slice(frame).map_err(|e| e.to_string())
}

/// How a broken frame stream is counted: over the size limit (a bug or an attack, like an
/// undecodable frame) or a stream that failed (a peer that went away).
fn broken(metrics: &Metrics, error: &io::Error, malformed: DropReason, aborted: DropReason) {
    let reason = if error.kind() == io::ErrorKind::InvalidData { malformed } else { aborted };
    metrics.dropped(reason);
}

/// The event loop's handle on the lane to one worker.
pub struct OutboundLane {
    tx: mpsc::Sender<TaskRequest>,
    in_flight: Arc<Mutex<HashSet<(String, u32)>>>,
}

impl OutboundLane {
    /// Starts a lane to `peer` on `tasks` carrying `first`: opens its stream on one of the
    /// connections to it, then sends what is queued. Answers and failures go back to the
    /// event loop. `first` is queued before the lane's task starts, so a lane that ends at
    /// once (a worker without lanes answers that quickly) still hands it back or fails it,
    /// and never leaves it to the caller to lose.
    pub fn open(
        peer: PeerId,
        control: Control,
        protocol: StreamProtocol,
        back: mpsc::Sender<LaneEvent>,
        metrics: Metrics,
        tasks: &TaskTracker,
        first: TaskRequest,
    ) -> Self {
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
        tx.try_send(first).expect("a new channel of capacity MAX_IN_FLIGHT takes its first message");
        let in_flight = Arc::new(Mutex::new(HashSet::new()));
        let lane = Outbound { peer, back, metrics, in_flight: in_flight.clone() };
        tasks.spawn(lane.run(control, protocol, rx));
        Self { tx, in_flight }
    }

    /// Queues `request`; gives it back when the lane has ended or its queue is full.
    pub fn send(&self, request: TaskRequest) -> Result<(), NotQueued> {
        self.tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Closed(request) => NotQueued::Ended(request),
            mpsc::error::TrySendError::Full(request) => NotQueued::Full(request),
        })
    }

    /// Whether tasks sent on this lane are still unanswered.
    pub fn busy(&self) -> bool {
        !self.tx.is_closed() && !self.in_flight.lock().expect("lane lock").is_empty()
    }
}

struct Outbound {
    peer: PeerId,
    /// The event loop: answers, failures and the verdict on the protocol go there.
    back: mpsc::Sender<LaneEvent>,
    metrics: Metrics,
    /// Sent and not yet answered.
    in_flight: Arc<Mutex<HashSet<(String, u32)>>>,
}

impl Outbound {
    async fn run(self, mut control: Control, protocol: StreamProtocol, mut rx: mpsc::Receiver<TaskRequest>) {
        let peer = self.peer;
        let stream = match control.open_stream(peer, protocol).await {
            Ok(stream) => stream,
            Err(OpenStreamError::UnsupportedProtocol(_)) => {
                tracing::debug!(%peer, "worker does not speak the task lane protocol: request-response");
                rx.close();
                let mut requests = Vec::new();
                while let Ok(request) = rx.try_recv() {
                    requests.push(request);
                }
                let _ = self.back.send(LaneEvent::Unsupported { peer, requests }).await;
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "task lane not opened");
                rx.close();
                let why = e.to_string();
                while let Ok(request) = rx.try_recv() {
                    self.answer_lost(request.task_id, request.attempt, DispatchError::Unreachable(why.clone())).await;
                }
                return;
            }
        };
        self.drive(stream, rx).await;
    }

    /// Runs the lane on its stream until either direction fails or the worker closes it.
    async fn drive<S>(&self, stream: S, mut rx: mpsc::Receiver<TaskRequest>)
    where
        S: futures::AsyncRead + futures::AsyncWrite,
    {
        let (read, write) = stream.split();
        let mut sink = FramedWrite::new(write.compat_write(), frame_codec(MAX_TASK_REQUEST_BYTES));
        let mut frames = FramedRead::new(read.compat(), frame_codec(MAX_TASK_RESPONSE_BYTES));
        let why = tokio::select! {
            why = self.write(&mut rx, &mut sink) => why,
            why = self.read(&mut frames) => why,
        };
        tracing::debug!(peer = %self.peer, %why, "task lane ended");
        // Nothing is lost: what was sent and what still waits is answered as lost.
        rx.close();
        let sent: Vec<(String, u32)> = self.in_flight.lock().expect("lane lock").drain().collect();
        for (task_id, attempt) in sent {
            self.answer_lost(task_id, attempt, DispatchError::ConnectionLost(why.clone())).await;
        }
        while let Ok(request) = rx.try_recv() {
            self.answer_lost(request.task_id, request.attempt, DispatchError::ConnectionLost(why.clone())).await;
        }
    }

    async fn answer_lost(&self, task_id: String, attempt: u32, error: DispatchError) {
        let event = LaneEvent::Answered { peer: self.peer, task_id, attempt, result: Err(error) };
        let _ = self.back.send(event).await;
    }

    /// Writes queued requests, a batch per flush. Returns why it stopped; when the event
    /// loop lets go of the lane it half-closes and waits for the answers still due.
    async fn write<W>(
        &self,
        rx: &mut mpsc::Receiver<TaskRequest>,
        sink: &mut FramedWrite<W, LengthDelimitedCodec>,
    ) -> String
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        loop {
            if rx.recv_many(&mut batch, WRITE_BATCH).await == 0 {
                let _ = SinkExt::<Bytes>::close(sink).await;
                return std::future::pending().await;
            }
            for request in batch.drain(..) {
                let frame = match encode(&request) {
                    Ok(frame) => frame,
                    Err(e) => {
                        let err = DispatchError::Unreachable(format!("cannot encode task: {e}"));
                        self.answer_lost(request.task_id, request.attempt, err).await;
                        continue;
                    }
                };
                let refused = {
                    let mut in_flight = self.in_flight.lock().expect("lane lock");
                    if in_flight.len() < MAX_IN_FLIGHT {
                        in_flight.insert((request.task_id, request.attempt));
                        None
                    } else {
                        Some(request)
                    }
                };
                if let Some(request) = refused {
                    let err =
                        DispatchError::Unreachable(format!("{MAX_IN_FLIGHT} tasks already in flight to this worker"));
                    self.answer_lost(request.task_id, request.attempt, err).await;
                    continue;
                }
                if let Err(e) = sink.feed(frame).await {
                    return format!("write failed: {e}");
                }
            }
            if let Err(e) = SinkExt::<Bytes>::flush(sink).await {
                return format!("write failed: {e}");
            }
        }
    }

    /// Reads answers and hands each to the gateway. Returns why it stopped.
    async fn read<R>(&self, frames: &mut FramedRead<R, LengthDelimitedCodec>) -> String
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        loop {
            let frame = match frames.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    broken(&self.metrics, &e, DropReason::TaskResponseMalformed, DropReason::TaskResponseAborted);
                    return format!("read failed: {e}");
                }
                None => return "the worker closed the lane".into(),
            };
            let response: TaskResponse = match decode(&frame) {
                Ok(response) => response,
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "undecodable task answer dropped");
                    self.metrics.dropped(DropReason::TaskResponseMalformed);
                    continue;
                }
            };
            let key = (response.task_id, response.attempt);
            let expected = self.in_flight.lock().expect("lane lock").remove(&key);
            let response = TaskResponse { task_id: key.0, ..response };
            if !expected {
                tracing::debug!(peer = %self.peer, task = %response.task_id, "answer to no task in flight dropped");
                self.metrics.dropped(DropReason::TaskResponseUnexpected);
                continue;
            }
            self.metrics.message("in", "task_response", response.result_len());
            let (task_id, attempt) = (response.task_id.clone(), response.attempt);
            let event = LaneEvent::Answered { peer: self.peer, task_id, attempt, result: Ok(response) };
            if self.back.send(event).await.is_err() {
                return "the node is stopping".into();
            }
        }
    }
}

/// Serves the lanes peers open to us, each a task on `tasks`: each request read goes to the
/// event loop (which checks it like any other) as [`LaneEvent::Request`], and the event loop
/// hears when a peer's lane opens and closes (a connection with a lane is not idle).
pub async fn accept(
    mut incoming: IncomingStreams,
    back: mpsc::Sender<LaneEvent>,
    metrics: Metrics,
    credit: usize,
    tasks: TaskTracker,
) {
    let mut open: HashMap<PeerId, usize> = HashMap::new();
    let (closed_tx, mut closed) = mpsc::channel::<PeerId>(MAX_INBOUND_LANES_PER_PEER * 16);
    loop {
        let (peer, stream) = tokio::select! {
            Some(peer) = closed.recv() => {
                if let Some(n) = open.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        open.remove(&peer);
                    }
                }
                if back.send(LaneEvent::InboundClosed { peer }).await.is_err() {
                    return;
                }
                continue;
            }
            next = incoming.next() => match next {
                Some(next) => next,
                None => return,
            },
        };
        let n = open.entry(peer).or_default();
        if *n >= MAX_INBOUND_LANES_PER_PEER {
            tracing::debug!(%peer, "task lane refused: the peer holds too many");
            metrics.limit_hit(Limit::TaskLanesPerPeer);
            continue;
        }
        *n += 1;
        if back.send(LaneEvent::InboundOpened { peer }).await.is_err() {
            return;
        }
        let (back, metrics, closed_tx) = (back.clone(), metrics.clone(), closed_tx.clone());
        tasks.spawn(async move {
            serve(peer, stream, back, metrics, credit).await;
            let _ = closed_tx.send(peer).await;
        });
    }
}

/// One inbound lane: a reader that takes a unit of credit per request, and a writer that
/// gives it back once the answer is on its way.
async fn serve<S>(peer: PeerId, stream: S, back: mpsc::Sender<LaneEvent>, metrics: Metrics, credit: usize)
where
    S: futures::AsyncRead + futures::AsyncWrite,
{
    let (read, write) = stream.split();
    let (tx, mut rx) = mpsc::channel::<(TaskResponse, OwnedSemaphorePermit)>(credit.max(1));
    let credit = Arc::new(Semaphore::new(credit));
    let reader = async {
        let tx = tx;
        let mut frames = FramedRead::new(read.compat(), frame_codec(MAX_TASK_REQUEST_BYTES));
        loop {
            let Ok(permit) = credit.clone().acquire_owned().await else { return };
            let frame = match frames.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "task lane read failed");
                    return broken(&metrics, &e, DropReason::TaskRequestMalformed, DropReason::TaskRequestAborted);
                }
                None => return,
            };
            let request: TaskRequest = match decode(&frame) {
                Ok(request) => request,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "undecodable task request dropped");
                    metrics.dropped(DropReason::TaskRequestMalformed);
                    continue;
                }
            };
            let reply = Reply { tx: tx.clone(), permit };
            if back.send(LaneEvent::Request { peer, request, reply }).await.is_err() {
                return;
            }
        }
    };
    let writer = async {
        let mut sink = FramedWrite::new(write.compat_write(), frame_codec(MAX_TASK_RESPONSE_BYTES));
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        // Ends when the reader has stopped and every reply it handed out is answered or dropped.
        while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
            for (response, _permit) in batch.drain(..) {
                let frame = match encode(&response) {
                    Ok(frame) => frame,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "task answer not encodable");
                        continue;
                    }
                };
                if sink.feed(frame).await.is_err() {
                    return;
                }
            }
            if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
                return;
            }
        }
        let _ = SinkExt::<Bytes>::close(&mut sink).await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt as _;
    use tokio_util::compat::TokioAsyncReadCompatExt as _;

    use super::*;
    use crate::protocol::{TaskError, TaskOutcome, WIRE_VERSION};

    fn metrics() -> Metrics {
        Metrics::new(&mut prometheus_client::registry::Registry::default())
    }

    fn dropped(metrics: &Metrics, reason: &str) -> u64 {
        metrics.messages_dropped.get_or_create(&crate::metrics::ReasonLabels { reason: reason.into() }).get()
    }

    fn request(task_id: &str) -> TaskRequest {
        TaskRequest {
            v: WIRE_VERSION,
            task_id: task_id.into(),
            attempt: 1,
            task_type: "echo".into(),
            payload: "hi".into(),
            required_capabilities: Vec::new(),
            deadline_ms: 1000,
            trace: None,
        }
    }

    fn answer(request: &TaskRequest) -> TaskResponse {
        TaskResponse {
            v: WIRE_VERSION,
            task_id: request.task_id.clone(),
            attempt: request.attempt,
            worker: "w".into(),
            outcome: TaskOutcome::Ok(request.payload.clone()),
            started_ms: None,
            fuel_used: None,
        }
    }

    type PipeSink = FramedWrite<tokio::io::WriteHalf<tokio::io::DuplexStream>, LengthDelimitedCodec>;
    type PipeFrames = FramedRead<tokio::io::ReadHalf<tokio::io::DuplexStream>, LengthDelimitedCodec>;

    /// The submitter's end of an inbound lane served over an in-memory pipe.
    fn serve_pipe(credit: usize, metrics: &Metrics) -> (PipeSink, PipeFrames, mpsc::Receiver<LaneEvent>) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (back, events) = mpsc::channel(16);
        tokio::spawn(serve(PeerId::random(), theirs.compat(), back, metrics.clone(), credit));
        let (read, write) = tokio::io::split(ours);
        let sink = FramedWrite::new(write, frame_codec(MAX_TASK_REQUEST_BYTES));
        let frames = FramedRead::new(read, frame_codec(MAX_TASK_RESPONSE_BYTES));
        (sink, frames, events)
    }

    async fn next_request(events: &mut mpsc::Receiver<LaneEvent>) -> (TaskRequest, Reply) {
        match events.recv().await {
            Some(LaneEvent::Request { request, reply, .. }) => (request, reply),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_undecodable_frame_is_dropped_and_counted_and_the_lane_goes_on() {
        let metrics = metrics();
        let (mut sink, mut frames, mut events) = serve_pipe(8, &metrics);
        sink.send(Bytes::from_static(b"\xff\x00 not cbor")).await.unwrap();
        sink.send(encode(&request("t1")).unwrap()).await.unwrap();
        let (got, reply) = next_request(&mut events).await;
        assert_eq!(got, request("t1"));
        assert!(reply.send(answer(&got)));
        let frame = frames.next().await.unwrap().unwrap();
        assert_eq!(decode::<TaskResponse>(&frame).unwrap(), answer(&got));
        assert_eq!(dropped(&metrics, "task_request_malformed"), 1);
    }

    #[tokio::test]
    async fn an_oversized_frame_ends_the_lane_and_is_counted() {
        let metrics = metrics();
        let (mut sink, mut frames, _events) = serve_pipe(8, &metrics);
        let header = u32::try_from(MAX_TASK_REQUEST_BYTES + 1).unwrap().to_be_bytes();
        sink.get_mut().write_all_buf(&mut &header[..]).await.unwrap();
        sink.get_mut().flush().await.unwrap();
        assert!(frames.next().await.is_none(), "the worker closes the lane");
        assert_eq!(dropped(&metrics, "task_request_malformed"), 1);
    }

    /// A worker reads no further request while `credit` of the lane's are unanswered.
    #[tokio::test(start_paused = true)]
    async fn credit_bounds_the_unanswered_requests() {
        let metrics = metrics();
        let (mut sink, mut frames, mut events) = serve_pipe(2, &metrics);
        for id in ["a", "b", "c"] {
            sink.feed(encode(&request(id)).unwrap()).await.unwrap();
        }
        SinkExt::<Bytes>::flush(&mut sink).await.unwrap();
        let (a, reply_a) = next_request(&mut events).await;
        let (b, _reply_b) = next_request(&mut events).await;
        assert_eq!((a.task_id.as_str(), b.task_id.as_str()), ("a", "b"));
        let third = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
        assert!(third.is_err(), "no third request while two are unanswered");
        assert!(reply_a.send(answer(&a)));
        let (c, _) = next_request(&mut events).await;
        assert_eq!(c.task_id, "c");
        let frame = frames.next().await.unwrap().unwrap();
        assert_eq!(decode::<TaskResponse>(&frame).unwrap().task_id, "a");
    }

    /// A submitter's lane: answers go to the gateway, a stray or undecodable answer is counted,
    /// and when the worker's side goes away every task still held is answered as lost.
    #[tokio::test]
    async fn a_lane_answers_what_it_can_and_fails_the_rest_when_it_ends() {
        let metrics = metrics();
        let (events_tx, mut events) = mpsc::channel(16);
        let lane =
            Outbound { peer: PeerId::random(), back: events_tx, metrics: metrics.clone(), in_flight: Arc::default() };
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
        for id in ["a", "b", "c"] {
            tx.try_send(request(id)).unwrap();
        }
        let driver = tokio::spawn(async move { lane.drive(ours.compat(), rx).await });

        let (read, write) = tokio::io::split(theirs);
        let mut frames = FramedRead::new(read, frame_codec(MAX_TASK_REQUEST_BYTES));
        let mut sink = FramedWrite::new(write, frame_codec(MAX_TASK_RESPONSE_BYTES));
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(decode::<TaskRequest>(&frames.next().await.unwrap().unwrap()).unwrap());
        }
        assert_eq!(got, [request("a"), request("b"), request("c")]);
        sink.send(encode(&answer(&request("nobody-asked"))).unwrap()).await.unwrap();
        sink.send(Bytes::from_static(b"\xff garbage")).await.unwrap();
        let busy = TaskResponse { outcome: TaskOutcome::Err(TaskError::Busy), ..answer(&got[1]) };
        sink.send(encode(&busy).unwrap()).await.unwrap();
        match events.recv().await {
            Some(LaneEvent::Answered { task_id, result: Ok(response), .. }) => {
                assert_eq!(task_id, "b");
                assert_eq!(response, busy);
            }
            other => panic!("expected b's answer, got {other:?}"),
        }
        drop((frames, sink));
        let mut lost = Vec::new();
        for _ in 0..2 {
            match events.recv().await {
                Some(LaneEvent::Answered { task_id, result: Err(DispatchError::ConnectionLost(_)), .. }) => {
                    lost.push(task_id)
                }
                other => panic!("expected a lost task, got {other:?}"),
            }
        }
        lost.sort();
        assert_eq!(lost, ["a", "c"]);
        driver.await.unwrap();
        assert_eq!(dropped(&metrics, "task_response_unexpected"), 1);
        assert_eq!(dropped(&metrics, "task_response_malformed"), 1);
    }
}
