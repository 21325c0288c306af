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
use crate::membership::Reach;
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

    pub fn respond(&mut self, swarm: &mut Swarm<Behaviour>, id: InboundId, target: PeerId, reach: Reach) {
        if let Some((_, channel)) = self.pending.remove(&id) {
            let response = ProbeResponse::new(target.to_string(), reach);
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
                    let reach = if self.leaving { Reach::Unreachable } else { Reach::Reachable };
                    let response = ProbeResponse::new(request.target, reach);
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
                let reach = response.reach(&target.to_string());
                Some(NetworkEvent::ProbeAnswered { via, target, reach, rtt: sent.elapsed() })
            }
            Event::OutboundFailure { request_id, error, .. } => {
                let (via, target, sent) = self.outbound.remove(&request_id)?;
                Some(NetworkEvent::ProbeAnswered {
                    via,
                    target,
                    reach: failed(via == target, &error),
                    rtt: sent.elapsed(),
                })
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => None,
        }
    }
}

/// What a probe request that failed says about its target: `direct` for a ping of the member
/// itself, else a request to a helper.
fn failed(direct: bool, error: &request_response::OutboundFailure) -> Reach {
    use request_response::OutboundFailure::{Timeout, UnsupportedProtocols};
    match error {
        // A helper that could not be asked says nothing about the member: were it counted
        // against it, a closed connection to the helper (or any failed dial to it, which fails
        // every request waiting for it) would accuse a member it never pinged.
        _ if !direct => Reach::Unknown,
        // A member that does not speak the probe protocol (another implementation, an older
        // version) still showed it is up by negotiating.
        UnsupportedProtocols => Reach::Reachable,
        Timeout => Reach::Unknown,
        // The connection closed, the dial failed, the stream broke.
        _ => Reach::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use request_response::OutboundFailure::{ConnectionClosed, DialFailure, Timeout, UnsupportedProtocols};

    #[test]
    fn only_a_failed_ping_of_the_member_itself_counts_against_it() {
        assert_eq!(failed(true, &DialFailure), Reach::Unreachable);
        assert_eq!(failed(true, &ConnectionClosed), Reach::Unreachable);
        assert_eq!(failed(true, &Timeout), Reach::Unknown, "late is not down");
        assert_eq!(failed(true, &UnsupportedProtocols), Reach::Reachable, "it negotiated");
        for error in [DialFailure, ConnectionClosed, Timeout, UnsupportedProtocols] {
            assert_eq!(failed(false, &error), Reach::Unknown, "a helper we could not ask: {error}");
        }
    }
}
