//! Task dispatch through the swarm: sending attempts on task lanes (request-response for
//! peers without them), holding attempts while a dial to their worker is under way, admitting
//! inbound requests, and carrying answers back to whoever asked.

use std::collections::{HashMap, HashSet};

use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::{ConnectionId, DialError};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::addresses::AddressPolicy;
use super::admission::Admission;
use super::behaviour::Behaviour;
use super::event::{DispatchError, InboundId, NetworkEvent};
use super::lanes::{self, LaneEvent, NotQueued, OutboundLane};
use crate::config::Config;
use crate::metrics::{DialCause, DropReason, Metrics};
use crate::protocol::{TaskOutcome, TaskRequest, TaskResponse, WIRE_VERSION};

/// Tasks that may wait for the connection to one peer; the gateway's own bound (the
/// worker's capacity) normally keeps far below it.
const MAX_TASKS_AWAITING_DIAL: usize = 1024;

/// Events for the application, in order.
pub(super) type Outbox = std::collections::VecDeque<NetworkEvent>;

/// Where the answer to a task request we hold goes back.
enum Replier {
    /// Request-response: the request's own stream.
    Stream(ResponseChannel<TaskResponse>),
    /// A task lane the requester opened.
    Lane(lanes::Reply),
}

/// Tasks for a peer we are not connected to, held until the dial started for them ends.
struct TaskDial {
    connection: ConnectionId,
    tasks: Vec<TaskRequest>,
}

pub(super) struct TaskRouter {
    local: PeerId,
    admission: Admission,
    /// Peers a task dial is under way to (one at a time, not one per queued task), and the
    /// tasks waiting for it. Requests are handed to request-response only once connected:
    /// it fails every request it holds for a peer on *any* failed dial to that peer (a
    /// hole-punch attempt, a DHT query's dial), not just on the dial made for them.
    dials: HashMap<PeerId, TaskDial>,
    /// Requests sent by request-response, by libp2p's id.
    outbound: HashMap<OutboundRequestId, (PeerId, String, u32)>,
    /// Replies we owe, with the peer that asked.
    pending_replies: HashMap<InboundId, (PeerId, Replier)>,
    next_inbound: u64,
    /// Opens task lanes and registers the protocol we serve them on.
    streams: libp2p_stream::Control,
    lane_protocol: StreamProtocol,
    /// The lane to each worker we sent tasks to, while it lasts.
    lanes: HashMap<PeerId, OutboundLane>,
    /// Workers that speak no task lanes (an older version): tasks go by request-response.
    legacy_peers: HashSet<PeerId>,
    /// Lanes peers hold open to us, per peer.
    inbound_lanes: HashMap<PeerId, usize>,
    /// Where lanes report (the event loop's lane channel).
    lane_events: mpsc::Sender<LaneEvent>,
    /// Unanswered requests one inbound lane may hold (`limits.max_task_streams`).
    lane_credit: usize,
    /// Lane tasks, owned by the node's tracker and awaited at shutdown.
    tracker: TaskTracker,
    metrics: Metrics,
}

impl TaskRouter {
    pub fn new(
        swarm: &Swarm<Behaviour>,
        config: &Config,
        lane_protocol: StreamProtocol,
        lane_events: mpsc::Sender<LaneEvent>,
        tracker: TaskTracker,
        metrics: Metrics,
    ) -> Self {
        Self {
            local: *swarm.local_peer_id(),
            admission: Admission::new(config),
            dials: HashMap::new(),
            outbound: HashMap::new(),
            pending_replies: HashMap::new(),
            next_inbound: 0,
            streams: swarm.behaviour().streams.new_control(),
            lane_protocol,
            lanes: HashMap::new(),
            legacy_peers: HashSet::new(),
            inbound_lanes: HashMap::new(),
            lane_events,
            lane_credit: config.limits.max_task_streams,
            tracker,
            metrics,
        }
    }

    /// Starts serving the lanes peers open to us.
    pub fn serve_lanes(&mut self) {
        match self.streams.accept(self.lane_protocol.clone()) {
            Ok(incoming) => {
                let (back, metrics) = (self.lane_events.clone(), self.metrics.clone());
                let lanes = lanes::accept(incoming, back, metrics, self.lane_credit, self.tracker.clone());
                self.tracker.spawn(lanes);
            }
            Err(e) => tracing::error!(error = %e, "cannot serve task lanes"),
        }
    }

    /// Sends one attempt to `peer`: now when connected, else after the dial it waits for.
    pub fn send(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        policy: &AddressPolicy,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: TaskRequest,
        out: &mut Outbox,
    ) {
        self.metrics.message("out", "task", request.payload.len());
        if swarm.is_connected(&peer) {
            return self.send_connected(swarm, peer, request, out);
        }
        if let Some(dial) = self.dials.get_mut(&peer) {
            if dial.tasks.len() < MAX_TASKS_AWAITING_DIAL {
                dial.tasks.push(request);
            } else {
                let err = DispatchError::Unreachable("too many tasks waiting for a connection".into());
                out.push_back(NetworkEvent::task_failed(peer, request, err));
            }
            return;
        }
        let opts = policy.dial_opts(peer, addresses);
        let connection = opts.connection_id();
        match swarm.dial(opts) {
            Ok(()) => {
                self.metrics.dialed(DialCause::Task);
                self.dials.insert(peer, TaskDial { connection, tasks: vec![request] });
            }
            Err(e) => {
                let err = DispatchError::Unreachable(dial_failure(&e));
                out.push_back(NetworkEvent::task_failed(peer, request, err));
            }
        }
    }

    /// Sends a task on the lane to `peer` (opened on first use), or by request-response to a
    /// peer that speaks no lanes; `peer` must be connected, so no dial of theirs.
    fn send_connected(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, request: TaskRequest, out: &mut Outbox) {
        if self.legacy_peers.contains(&peer) {
            return self.send_by_request_response(swarm, peer, request);
        }
        let request = match self.lanes.get(&peer) {
            None => request,
            Some(lane) => match lane.send(request) {
                Ok(()) => return,
                Err(NotQueued::Full(request)) => {
                    let why = format!("{} tasks already queued for this worker", lanes::MAX_IN_FLIGHT);
                    out.push_back(NetworkEvent::task_failed(peer, request, DispatchError::Unreachable(why)));
                    return;
                }
                // The lane ended (its connection closed, say): the task goes on a new one.
                Err(NotQueued::Ended(request)) => request,
            },
        };
        let lane = OutboundLane::open(
            peer,
            self.streams.clone(),
            self.lane_protocol.clone(),
            self.lane_events.clone(),
            self.metrics.clone(),
            &self.tracker,
            request,
        );
        self.lanes.insert(peer, lane);
    }

    fn send_by_request_response(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, request: TaskRequest) {
        let (task_id, attempt) = (request.task_id.clone(), request.attempt);
        let id = swarm.behaviour_mut().tasks.send_request(&peer, request);
        self.outbound.insert(id, (peer, task_id, attempt));
    }

    /// Connected to `peer`, whichever dial (or the peer) made it: waiting tasks go now.
    pub fn on_connected(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, out: &mut Outbox) {
        self.dial_ended(swarm, peer, None, out);
    }

    /// A dial failed: if it was the one `peer`'s tasks wait for, they fail with its reason.
    pub fn on_dial_failed(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        connection: ConnectionId,
        error: &DialError,
        out: &mut Outbox,
    ) {
        if self.dials.get(&peer).is_some_and(|d| d.connection == connection) {
            self.dial_ended(swarm, peer, Some(dial_failure(error)), out);
        }
    }

    /// The dial for `peer`'s waiting tasks ended: send them, or fail them with `why`.
    fn dial_ended(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, why: Option<String>, out: &mut Outbox) {
        let Some(dial) = self.dials.remove(&peer) else { return };
        for request in dial.tasks {
            if swarm.is_connected(&peer) {
                self.send_connected(swarm, peer, request, out);
            } else {
                let why = why.clone().unwrap_or_else(|| "dial failed".into());
                out.push_back(NetworkEvent::task_failed(peer, request, DispatchError::Unreachable(why)));
            }
        }
    }

    /// The last connection to `peer` closed: its lane ended with it, and a newer version may
    /// answer next time.
    pub fn on_disconnected(&mut self, peer: &PeerId) {
        self.lanes.remove(peer);
        self.legacy_peers.remove(peer);
    }

    /// Whether anything of ours is in flight with `peer`: tasks either way.
    pub fn busy_with(&self, peer: &PeerId) -> bool {
        self.outbound.values().any(|(p, ..)| p == peer)
            || self.lanes.get(peer).is_some_and(OutboundLane::busy)
            || self.pending_replies.values().any(|(p, _)| p == peer)
    }

    /// Whether a lane (either way) or a task dial holds the connection to `peer` open.
    pub fn holds(&self, peer: &PeerId) -> bool {
        self.lanes.contains_key(peer) || self.inbound_lanes.contains_key(peer) || self.dials.contains_key(peer)
    }

    /// Whether a task dial to `peer` is under way.
    pub fn dialing(&self, peer: &PeerId) -> bool {
        self.dials.contains_key(peer)
    }

    pub fn prune(&self) {
        self.admission.prune();
    }

    /// Answers an inbound request the application took.
    pub fn respond(&mut self, swarm: &mut Swarm<Behaviour>, id: InboundId, response: TaskResponse) {
        if let Some((_, replier)) = self.pending_replies.remove(&id) {
            self.metrics.message("out", "task_response", response.result_len());
            reply(swarm, replier, response);
        }
    }

    /// What the lanes report.
    pub fn on_lane_event(&mut self, swarm: &mut Swarm<Behaviour>, event: LaneEvent, member: bool, out: &mut Outbox) {
        match event {
            LaneEvent::Unsupported { peer, requests } => {
                self.lanes.remove(&peer);
                if swarm.is_connected(&peer) {
                    self.legacy_peers.insert(peer);
                }
                for request in requests {
                    self.send_by_request_response(swarm, peer, request);
                }
            }
            LaneEvent::Request { peer, request, reply } => {
                self.on_request(swarm, peer, request, Replier::Lane(reply), member, out)
            }
            LaneEvent::InboundOpened { peer } => *self.inbound_lanes.entry(peer).or_default() += 1,
            LaneEvent::InboundClosed { peer } => {
                if let Some(n) = self.inbound_lanes.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        self.inbound_lanes.remove(&peer);
                    }
                }
            }
            LaneEvent::Answered { peer, task_id, attempt, result } => {
                out.push_back(NetworkEvent::TaskAnswered { peer, task_id, attempt, result })
            }
        }
    }

    /// Request-response's events for the task protocol.
    pub fn on_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        event: request_response::Event<TaskRequest, TaskResponse>,
        is_member: impl Fn(&PeerId) -> bool,
        out: &mut Outbox,
    ) {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                let member = is_member(&peer);
                self.on_request(swarm, peer, request, Replier::Stream(channel), member, out)
            }
            Event::Message { message: Message::Response { request_id, response }, .. } => {
                if let Some((peer, task_id, attempt)) = self.outbound.remove(&request_id) {
                    self.metrics.message("in", "task_response", response.result_len());
                    out.push_back(NetworkEvent::TaskAnswered { peer, task_id, attempt, result: Ok(response) });
                }
            }
            Event::OutboundFailure { request_id, error, .. } => {
                if let Some((peer, task_id, attempt)) = self.outbound.remove(&request_id) {
                    let result = Err(self.outbound_failure(error));
                    out.push_back(NetworkEvent::TaskAnswered { peer, task_id, attempt, result });
                }
            }
            // Undecodable requests are counted by the codec (libp2p does not report them).
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound task request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn outbound_failure(&self, error: request_response::OutboundFailure) -> DispatchError {
        use request_response::OutboundFailure;
        match error {
            OutboundFailure::DialFailure => DispatchError::Unreachable("dial failed".into()),
            OutboundFailure::Timeout => DispatchError::Timeout,
            OutboundFailure::ConnectionClosed => DispatchError::ConnectionLost("connection closed".into()),
            OutboundFailure::UnsupportedProtocols => {
                DispatchError::Unreachable("peer does not speak the task protocol".into())
            }
            OutboundFailure::Io(e) => {
                self.metrics.dropped(DropReason::TaskResponseMalformed);
                DispatchError::BadResponse(e.to_string())
            }
        }
    }

    /// A task request, from a lane or a request-response stream: admitted and handed to the
    /// application, or refused at once (no task spawned for it).
    fn on_request(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        peer: PeerId,
        request: TaskRequest,
        replier: Replier,
        member: bool,
        out: &mut Outbox,
    ) {
        self.metrics.message("in", "task", request.payload.len());
        if let Err(refusal) = self.admission.check(&peer, &request, member) {
            refusal.count(&self.metrics);
            let response = TaskResponse {
                v: WIRE_VERSION,
                task_id: request.task_id,
                attempt: request.attempt,
                worker: self.local.to_string(),
                outcome: TaskOutcome::Err(refusal.error()),
                started_ms: None,
                fuel_used: None,
            };
            return reply(swarm, replier, response);
        }
        self.next_inbound += 1;
        let id = InboundId(self.next_inbound);
        self.pending_replies.insert(id, (peer, replier));
        out.push_back(NetworkEvent::TaskRequested { id, peer, request });
    }
}

fn reply(swarm: &mut Swarm<Behaviour>, replier: Replier, response: TaskResponse) {
    let sent = match replier {
        Replier::Stream(channel) => swarm.behaviour_mut().tasks.send_response(channel, response).is_ok(),
        Replier::Lane(reply) => reply.send(response),
    };
    if !sent {
        tracing::debug!("task response not sent: the requester's stream is gone");
    }
}

/// Why a dial failed, in a line a task's error can carry.
pub(super) fn dial_failure(error: &DialError) -> String {
    match error {
        DialError::WrongPeerId { obtained, address } => format!("dial failed: {address} answered as {obtained}"),
        DialError::Transport(errors) => format!("dial failed: none of {} address(es) answered", errors.len()),
        DialError::NoAddresses => "dial failed: no known address".into(),
        other => format!("dial failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_failures_read_as_one_line_that_starts_with_dial_failed() {
        let peer = PeerId::random();
        let address: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().expect("a valid multiaddr");
        let wrong = DialError::WrongPeerId { obtained: peer, address: address.clone() };
        assert_eq!(dial_failure(&wrong), format!("dial failed: {address} answered as {peer}"));
        assert_eq!(dial_failure(&DialError::NoAddresses), "dial failed: no known address");
        assert_eq!(dial_failure(&DialError::Transport(Vec::new())), "dial failed: none of 0 address(es) answered");
    }
}
