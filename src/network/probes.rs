//! SWIM probes over our probe protocol: the ones we send (a direct ping is a probe about the
//! member itself), matched to their answers by request id, and the ones others send us, held
//! until the application answers.
//!
//! A ping about this node is answered here, at once: it asks only whether we are up, and an
//! answer that waited behind the application's work (gossip, tasks) would make a busy node
//! look dead to its prober. Only probes about other members reach the application.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::ConnectionId;
use libp2p::{PeerId, Swarm};

use super::behaviour::Behaviour;
use super::event::{InboundId, NetworkEvent};
use crate::metrics::{DropReason, Metrics};
use crate::protocol::{ProbeRequest, ProbeResponse, WIRE_VERSION};

pub(super) struct Probes {
    local: PeerId,
    /// Probe requests in flight: the helper asked (the member itself for a direct ping), the
    /// member it was asked about, and when.
    outbound: HashMap<OutboundRequestId, (PeerId, PeerId, Instant)>,
    /// Replies we owe, with the peer that asked.
    pending: HashMap<InboundId, (PeerId, ResponseChannel<ProbeResponse>)>,
    next_inbound: u64,
    /// Dials `Client::dial` asked for (to ping a member); only their failures are reported.
    dials: HashSet<ConnectionId>,
    /// This node is leaving: pings about it are answered "not reachable".
    leaving: bool,
    metrics: Metrics,
}

impl Probes {
    pub fn new(local: PeerId, metrics: Metrics) -> Self {
        Self {
            local,
            outbound: HashMap::new(),
            pending: HashMap::new(),
            next_inbound: 0,
            dials: HashSet::new(),
            leaving: false,
            metrics,
        }
    }

    /// From now on, pings about this node say it is not reachable (it is leaving).
    pub fn set_leaving(&mut self) {
        self.leaving = true;
    }

    pub fn send(&mut self, swarm: &mut Swarm<Behaviour>, via: PeerId, target: PeerId) {
        let request = ProbeRequest { v: WIRE_VERSION, target: target.to_string() };
        let id = swarm.behaviour_mut().probe.send_request(&via, request);
        self.outbound.insert(id, (via, target, Instant::now()));
    }

    pub fn respond(&mut self, swarm: &mut Swarm<Behaviour>, id: InboundId, target: PeerId, reachable: bool) {
        if let Some((_, channel)) = self.pending.remove(&id) {
            let response = ProbeResponse { v: WIRE_VERSION, target: target.to_string(), reachable };
            let _ = swarm.behaviour_mut().probe.send_response(channel, response);
        }
    }

    /// A dial to ping a member started on `connection`.
    pub fn dialing(&mut self, connection: ConnectionId) {
        self.dials.insert(connection);
    }

    /// `connection` was established or failed; whether it was a dial of ours.
    pub fn dial_ended(&mut self, connection: ConnectionId) -> bool {
        self.dials.remove(&connection)
    }

    /// Whether a probe is in flight with `peer`, either way.
    pub fn busy_with(&self, peer: &PeerId) -> bool {
        self.outbound.values().any(|(via, ..)| via == peer) || self.pending.values().any(|(p, _)| p == peer)
    }

    pub fn on_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        event: request_response::Event<ProbeRequest, ProbeResponse>,
        is_member: impl Fn(&PeerId) -> bool,
    ) -> Option<NetworkEvent> {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                // A direct ping (a probe about ourselves) is answered before Identify has
                // run: it tells nothing but that we are up, and the prober may have just
                // dialed us for it.
                let about_us = request.target == self.local.to_string();
                if !(is_member(&peer) || about_us) || request.v != WIRE_VERSION {
                    self.metrics.dropped(DropReason::ProbeUnexpected);
                    return None;
                }
                if about_us {
                    let response = ProbeResponse { v: WIRE_VERSION, target: request.target, reachable: !self.leaving };
                    let _ = swarm.behaviour_mut().probe.send_response(channel, response);
                    return None;
                }
                self.next_inbound += 1;
                let id = InboundId(self.next_inbound);
                self.pending.insert(id, (peer, channel));
                Some(NetworkEvent::ProbeRequested { id, peer, request })
            }
            Event::Message { message: Message::Response { request_id, response }, .. } => {
                let (via, target, sent) = self.outbound.remove(&request_id)?;
                let reachable = response.reachable && response.target == target.to_string();
                Some(NetworkEvent::ProbeAnswered { via, target, reachable, rtt: sent.elapsed() })
            }
            Event::OutboundFailure { request_id, error, .. } => {
                let (via, target, sent) = self.outbound.remove(&request_id)?;
                // A member that does not speak the probe protocol (another implementation,
                // an older version) still showed it is up by negotiating: for a direct
                // ping, that is the answer. A helper that cannot be asked is no answer.
                let up = via == target && matches!(error, request_response::OutboundFailure::UnsupportedProtocols);
                Some(NetworkEvent::ProbeAnswered { via, target, reachable: up, rtt: sent.elapsed() })
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => None,
        }
    }
}
