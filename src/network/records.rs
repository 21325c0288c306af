//! Task-record copies over our records protocol: the batches a gateway forwards to its copy
//! holders and the lookups of records held elsewhere, matched to their answers by request id
//! and the caller's tag; and the requests others send us, held until the application answers.

use std::collections::HashMap;

use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, Swarm};

use super::behaviour::Behaviour;
use super::event::{DispatchError, InboundId, NetworkEvent};
use crate::metrics::{DropReason, Metrics};
use crate::protocol::{RecordsRequest, RecordsResponse, WIRE_VERSION};

pub(super) struct Records {
    /// Requests in flight: to whom, and the tag the application gave them.
    outbound: HashMap<OutboundRequestId, (PeerId, u64)>,
    /// Replies we owe, with the peer that asked.
    pending: HashMap<InboundId, (PeerId, ResponseChannel<RecordsResponse>)>,
    next_inbound: u64,
    metrics: Metrics,
}

impl Records {
    pub fn new(metrics: Metrics) -> Self {
        Self { outbound: HashMap::new(), pending: HashMap::new(), next_inbound: 0, metrics }
    }

    pub fn send(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, tag: u64, request: RecordsRequest) {
        let id = swarm.behaviour_mut().records.send_request(&peer, request);
        self.outbound.insert(id, (peer, tag));
    }

    pub fn respond(&mut self, swarm: &mut Swarm<Behaviour>, id: InboundId, response: RecordsResponse) {
        if let Some((_, channel)) = self.pending.remove(&id) {
            let _ = swarm.behaviour_mut().records.send_response(channel, response);
        }
    }

    /// Whether a request is in flight with `peer`, either way.
    pub fn busy_with(&self, peer: &PeerId) -> bool {
        self.outbound.values().any(|(p, _)| p == peer) || self.pending.values().any(|(p, _)| p == peer)
    }

    pub fn on_event(
        &mut self,
        event: request_response::Event<RecordsRequest, RecordsResponse>,
        is_member: impl Fn(&PeerId) -> bool,
    ) -> Option<NetworkEvent> {
        use request_response::{Event, Message};
        match event {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                // Only members (Identify confirmed our cluster) keep copies with us or read them.
                let v = match &request {
                    RecordsRequest::Replicate { v, .. }
                    | RecordsRequest::Get { v, .. }
                    | RecordsRequest::Mine { v, .. } => *v,
                };
                if !is_member(&peer) || v != WIRE_VERSION {
                    self.metrics.dropped(DropReason::RecordsUnexpected);
                    return None;
                }
                self.next_inbound += 1;
                let id = InboundId(self.next_inbound);
                self.pending.insert(id, (peer, channel));
                Some(NetworkEvent::RecordsRequested { id, peer, request })
            }
            Event::Message { message: Message::Response { request_id, response }, .. } => {
                let (peer, tag) = self.outbound.remove(&request_id)?;
                let v = match &response {
                    RecordsResponse::Replicated { v, .. }
                    | RecordsResponse::Found { v, .. }
                    | RecordsResponse::Yours { v, .. } => *v,
                };
                let result = if v == WIRE_VERSION {
                    Ok(response)
                } else {
                    Err(DispatchError::BadResponse(format!("wire version {v}")))
                };
                Some(NetworkEvent::RecordsAnswered { peer, tag, result })
            }
            Event::OutboundFailure { request_id, error, .. } => {
                let (peer, tag) = self.outbound.remove(&request_id)?;
                let error = match error {
                    request_response::OutboundFailure::Timeout => DispatchError::Timeout,
                    request_response::OutboundFailure::DialFailure => DispatchError::Unreachable("dial failed".into()),
                    other => DispatchError::ConnectionLost(other.to_string()),
                };
                Some(NetworkEvent::RecordsAnswered { peer, tag, result: Err(error) })
            }
            Event::InboundFailure { .. } | Event::ResponseSent { .. } => None,
        }
    }
}
