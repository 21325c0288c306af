//! Gossip as the event loop handles it: sealing and publishing our messages on the topic of
//! their type, and the application's verdict on every message GossipSub hands over (once,
//! however many copies arrive) before it is forwarded.

use std::collections::HashMap;

use libp2p::identity::Keypair;
use libp2p::{PeerId, Swarm, gossipsub};

use super::behaviour::Behaviour;
use super::event::NetworkEvent;
use super::names::{ProtocolNames, gossip_topics};
use crate::metrics::{DropReason, Metrics, OutcomeLabels};
use crate::protocol::{DecodeError, GossipMessage, OpenError};

pub(super) struct Gossip {
    /// This node's key: gossip is sealed with it.
    signing_key: Keypair,
    heartbeat_topic: gossipsub::IdentTopic,
    capabilities_topic: gossipsub::IdentTopic,
    /// The ledger's topic, subscribed only when `ledger.enabled`.
    ledger_topic: gossipsub::IdentTopic,
    ledger: bool,
    metrics: Metrics,
}

/// Why a message was not accepted, and what GossipSub should make of it.
type Verdict = Result<(PeerId, GossipMessage), (DropReason, gossipsub::MessageAcceptance)>;

impl Gossip {
    pub fn new(signing_key: Keypair, names: &ProtocolNames, ledger: bool, metrics: Metrics) -> Self {
        let [heartbeat_topic, capabilities_topic, ledger_topic] = gossip_topics(names);
        Self { signing_key, heartbeat_topic, capabilities_topic, ledger_topic, ledger, metrics }
    }

    pub fn subscribe(&self, swarm: &mut Swarm<Behaviour>) {
        if let Some(gs) = swarm.behaviour_mut().gossipsub.as_mut() {
            let ledger = self.ledger.then_some(&self.ledger_topic);
            for topic in [&self.heartbeat_topic, &self.capabilities_topic].into_iter().chain(ledger) {
                if let Err(e) = gs.subscribe(topic) {
                    tracing::error!(%topic, error = %e, "cannot subscribe to gossip topic");
                }
            }
        }
    }

    /// The topic a gossip message of this type travels on.
    fn topic_of(&self, message: &GossipMessage) -> &gossipsub::IdentTopic {
        match message {
            GossipMessage::HeartBeat(_) => &self.heartbeat_topic,
            GossipMessage::CapabilityAdvertisement(_) => &self.capabilities_topic,
        }
    }

    /// Seals `message` with this node's key and publishes it.
    pub fn publish(&self, swarm: &mut Swarm<Behaviour>, message: GossipMessage) {
        let topic = self.topic_of(&message).clone();
        let data = match message.seal(&self.signing_key) {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(error = %e, "gossip not sealed: signing failed");
                return;
            }
        };
        let len = data.len();
        if let Some(gs) = swarm.behaviour_mut().gossipsub.as_mut() {
            match gs.publish(topic, data) {
                Ok(_) => self.metrics.message("out", "gossip", len),
                // No subscribed peers yet: the next heartbeat will try again.
                Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                Err(e) => tracing::debug!(error = %e, "gossip publish failed"),
            }
        }
    }

    /// Publishes a ledger message as it is: blocks and proofs carry their authors' signatures.
    pub fn publish_ledger(&self, swarm: &mut Swarm<Behaviour>, data: Vec<u8>) {
        let len = data.len();
        if let Some(gs) = swarm.behaviour_mut().gossipsub.as_mut() {
            match gs.publish(self.ledger_topic.clone(), data) {
                Ok(_) => self.metrics.message("out", "ledger", len),
                // Nobody to hear it now: anti-entropy brings it to them later.
                Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                Err(e) => tracing::debug!(error = %e, "ledger publish failed"),
            }
        }
    }

    /// A message on the ledger topic: opened and checked alone (a block's signature, a
    /// proof's blocks) before GossipSub forwards it; the rest is the ledger's to check.
    fn on_ledger_message(
        &self,
        swarm: &mut Swarm<Behaviour>,
        source: PeerId,
        id: gossipsub::MessageId,
        data: &[u8],
    ) -> Option<NetworkEvent> {
        self.metrics.message("in", "ledger", data.len());
        let opened = if self.ledger { crate::ledger::wire::Gossiped::open(data).map_err(Some) } else { Err(None) };
        let acceptance = match &opened {
            Ok(_) => gossipsub::MessageAcceptance::Accept,
            // Not ours to judge: a node without a ledger neither forwards nor punishes.
            Err(None) => gossipsub::MessageAcceptance::Ignore,
            Err(Some(_)) => gossipsub::MessageAcceptance::Reject,
        };
        if let Some(gs) = swarm.behaviour_mut().gossipsub.as_mut() {
            gs.report_message_validation_result(&id, &source, acceptance);
        }
        match opened {
            Ok(message) => Some(NetworkEvent::Ledger { from: source, message }),
            Err(Some(reason)) => {
                tracing::debug!(peer = %source, reason = %reason, "ledger gossip rejected");
                self.metrics.ledger.received("gossip", "rejected");
                self.metrics.ledger.rejected(reason.label());
                None
            }
            Err(None) => None,
        }
    }

    /// Whether `peer` is subscribed to our capability advertisements.
    pub fn is_subscribed(&self, swarm: &Swarm<Behaviour>, peer: &PeerId) -> bool {
        let topic = self.capabilities_topic.hash();
        swarm
            .behaviour()
            .gossipsub
            .as_ref()
            .is_some_and(|gs| gs.all_peers().any(|(p, topics)| p == peer && topics.contains(&&topic)))
    }

    /// Sets `peer`'s application score (GossipSub keeps it only while it knows the peer: a
    /// peer that is not connected is not scored).
    pub fn set_app_score(&self, swarm: &mut Swarm<Behaviour>, peer: PeerId, score: f64) {
        if let Some(gs) = swarm.behaviour_mut().gossipsub.as_mut()
            && !gs.set_application_score(&peer, score)
        {
            tracing::debug!(%peer, score, "application score not set: the peer is not scored");
        }
    }

    /// GossipSub scores of connected peers; refreshes the graylisted gauge.
    pub fn scores(&self, swarm: &Swarm<Behaviour>) -> HashMap<PeerId, f64> {
        let Some(gs) = swarm.behaviour().gossipsub.as_ref() else { return HashMap::new() };
        let scores: HashMap<PeerId, f64> =
            swarm.connected_peers().filter_map(|p| gs.peer_score(p).map(|s| (*p, s))).collect();
        let graylist = super::gossip_settings::gossip_thresholds().graylist_threshold;
        self.metrics.gossip_graylisted.set(scores.values().filter(|s| **s < graylist).count() as i64);
        scores
    }

    /// GossipSub's events: a message is judged and its verdict reported back to GossipSub;
    /// a member's subscription is passed on (a moment to advertise).
    pub fn on_event(
        &self,
        swarm: &mut Swarm<Behaviour>,
        event: gossipsub::Event,
        is_member: impl Fn(&PeerId) -> bool,
    ) -> Option<NetworkEvent> {
        match event {
            gossipsub::Event::Message { propagation_source, message_id, message }
                if message.topic == self.ledger_topic.hash() =>
            {
                self.on_ledger_message(swarm, propagation_source, message_id, &message.data)
            }
            gossipsub::Event::Message { propagation_source, message_id, message } => {
                self.metrics.message("in", "gossip", message.data.len());
                let verdict = self.validate(&message);
                let acceptance = match &verdict {
                    Ok(_) => gossipsub::MessageAcceptance::Accept,
                    Err((_, acceptance)) => *acceptance,
                };
                let outcome = match acceptance {
                    gossipsub::MessageAcceptance::Accept => "accept",
                    gossipsub::MessageAcceptance::Ignore => "ignore",
                    gossipsub::MessageAcceptance::Reject => "reject",
                };
                self.metrics.gossip_validation.get_or_create(&OutcomeLabels { outcome }).inc();
                if let Some(gs) = swarm.behaviour_mut().gossipsub.as_mut() {
                    // Reject counts against the peer that forwarded it (score P4); only
                    // accepted messages are forwarded further.
                    gs.report_message_validation_result(&message_id, &propagation_source, acceptance);
                }
                match verdict {
                    Err((reason, _)) => {
                        tracing::debug!(peer = %propagation_source, reason = reason.label(), "gossip message rejected");
                        self.metrics.dropped(reason);
                        None
                    }
                    Ok((from, GossipMessage::HeartBeat(message))) => Some(NetworkEvent::HeartBeat { from, message }),
                    Ok((from, GossipMessage::CapabilityAdvertisement(message))) => {
                        Some(NetworkEvent::Advertisement { from, message })
                    }
                }
            }
            gossipsub::Event::Subscribed { peer_id, .. } if is_member(&peer_id) => {
                Some(NetworkEvent::Subscribed { peer: peer_id })
            }
            _ => None,
        }
    }

    /// Application validation of a gossip message: sealed by its author with a valid
    /// signature, well-formed and within bounds, on the topic its type belongs to, and about
    /// the node that signed it. A newer wire version is ignored rather than punished, so a
    /// rolling upgrade does not graylist the upgraded nodes.
    fn validate(&self, message: &gossipsub::Message) -> Verdict {
        use gossipsub::MessageAcceptance::{Ignore, Reject};
        let (source, msg) = GossipMessage::open(&message.data).map_err(|e| match e {
            OpenError::NotSealed(_) => (DropReason::GossipUnsigned, Reject),
            OpenError::BadSignature | OpenError::PayloadType => (DropReason::GossipBadSignature, Reject),
            OpenError::TooLarge(_) | OpenError::Payload(DecodeError::TooLarge(_)) => {
                (DropReason::GossipOversized, Reject)
            }
            OpenError::Payload(DecodeError::Version(_)) => (DropReason::GossipVersion, Ignore),
            OpenError::Payload(_) => (DropReason::GossipMalformed, Reject),
        })?;
        if message.topic != self.topic_of(&msg).hash() {
            return Err((DropReason::GossipWrongTopic, Reject));
        }
        if msg.claimed_node() != source.to_string() {
            return Err((DropReason::GossipSenderMismatch, Reject));
        }
        Ok((source, msg))
    }
}
