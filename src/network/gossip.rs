//! Gossip as the event loop handles it: sealing and publishing our messages on the topic of
//! their type, and the application's verdict on every message GossipSub hands over (once,
//! however many copies arrive) before it is forwarded.

use std::collections::HashMap;

use libp2p::identity::Keypair;
use libp2p::{PeerId, Swarm, gossipsub};

use super::behaviour::Behaviour;
use super::catch_up::{Held, Kind};
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
    /// The newest sealed advertisement of each member (ours too), for neighbours catching up.
    held: Held,
    metrics: Metrics,
}

/// Why a message was not accepted, and what GossipSub should make of it.
type Verdict = Result<(PeerId, GossipMessage), (DropReason, gossipsub::MessageAcceptance)>;

impl Gossip {
    pub fn new(signing_key: Keypair, names: &ProtocolNames, ledger: bool, held: Held, metrics: Metrics) -> Self {
        let [heartbeat_topic, capabilities_topic, ledger_topic] = gossip_topics(names);
        Self { signing_key, heartbeat_topic, capabilities_topic, ledger_topic, ledger, held, metrics }
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
        let (kind, seq) = kind_and_seq(&message);
        let data = match message.seal(&self.signing_key) {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(error = %e, "gossip not sealed: signing failed");
                return;
            }
        };
        let len = data.len();
        self.held.keep(*swarm.local_peer_id(), kind, seq, &data);
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
                let verdict = self.validate(&message.data, Some(&message.topic));
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
                    Ok((from, msg)) => {
                        let (kind, seq) = kind_and_seq(&msg);
                        self.held.keep(from, kind, seq, &message.data);
                        Some(match msg {
                            GossipMessage::HeartBeat(message) => NetworkEvent::HeartBeat { from, message },
                            GossipMessage::CapabilityAdvertisement(message) => {
                                NetworkEvent::Advertisement { from, message }
                            }
                        })
                    }
                }
            }
            gossipsub::Event::Subscribed { peer_id, .. } if is_member(&peer_id) => {
                Some(NetworkEvent::Subscribed { peer: peer_id })
            }
            _ => None,
        }
    }

    /// Messages a neighbour handed over (see `catch_up`): each is checked as if it came over
    /// GossipSub, and the news among them (newer than the one held of its member) is kept and
    /// passed on, heartbeats without their rumors and after every advertisement (a member's
    /// advertisement may predate a refutation that raised its incarnation; taken after the
    /// heartbeat that carries the higher one, it would be refused as stale). A message that
    /// fails the check is dropped and counted.
    pub fn open_pulled(&self, from: PeerId, messages: &[serde_bytes::ByteBuf], out: &mut Vec<NetworkEvent>) {
        let local = self.signing_key.public().to_peer_id();
        let first = out.len();
        for data in messages {
            match self.validate(data, None) {
                Ok((author, msg)) => {
                    let (kind, seq) = kind_and_seq(&msg);
                    if author == local || !self.held.is_newer(author, kind, seq) {
                        continue;
                    }
                    self.held.keep(author, kind, seq, data);
                    out.push(match msg {
                        GossipMessage::HeartBeat(mut message) => {
                            message.rumors.clear();
                            NetworkEvent::HeartBeat { from: author, message }
                        }
                        GossipMessage::CapabilityAdvertisement(message) => {
                            NetworkEvent::Advertisement { from: author, message }
                        }
                    });
                }
                Err((reason, _)) => {
                    tracing::debug!(peer = %from, reason = reason.label(), "pulled message rejected");
                    self.metrics.dropped(reason);
                }
            }
        }
        out[first..].sort_by_key(|event| matches!(event, NetworkEvent::HeartBeat { .. }));
    }

    /// Application validation of a gossip message (`data`, on `topic` when it came over
    /// GossipSub): sealed by its author with a valid signature, well-formed and within bounds,
    /// on the topic its type belongs to, and about the node that signed it. A newer wire
    /// version is ignored rather than punished, so a rolling upgrade does not graylist the
    /// upgraded nodes.
    fn validate(&self, data: &[u8], topic: Option<&gossipsub::TopicHash>) -> Verdict {
        use gossipsub::MessageAcceptance::{Ignore, Reject};
        let (source, msg) = GossipMessage::open(data).map_err(|e| match e {
            OpenError::NotSealed(_) => (DropReason::GossipUnsigned, Reject),
            OpenError::BadSignature | OpenError::PayloadType => (DropReason::GossipBadSignature, Reject),
            OpenError::TooLarge(_) | OpenError::Payload(DecodeError::TooLarge(_)) => {
                (DropReason::GossipOversized, Reject)
            }
            OpenError::Payload(DecodeError::Version(_)) => (DropReason::GossipVersion, Ignore),
            OpenError::Payload(_) => (DropReason::GossipMalformed, Reject),
        })?;
        if topic.is_some_and(|t| *t != self.topic_of(&msg).hash()) {
            return Err((DropReason::GossipWrongTopic, Reject));
        }
        if msg.claimed_node() != source.to_string() {
            return Err((DropReason::GossipSenderMismatch, Reject));
        }
        Ok((source, msg))
    }
}

/// Which of a member's messages this is, and its `seq` (the newest is kept for catching up).
fn kind_and_seq(message: &GossipMessage) -> (Kind, u64) {
    match message {
        GossipMessage::HeartBeat(hb) => (Kind::HeartBeat, hb.seq),
        GossipMessage::CapabilityAdvertisement(ad) => (Kind::Advertisement, ad.seq),
    }
}

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::membership::MemberState;
    use crate::protocol::{CapabilityAdvertisement, HeartBeat, WIRE_VERSION, WireRumor};

    fn gossip() -> (Gossip, Metrics) {
        let metrics = Metrics::new(&mut prometheus_client::registry::Registry::default());
        let names = ProtocolNames::new("test");
        (Gossip::new(Keypair::generate_ed25519(), &names, false, Held::default(), metrics.clone()), metrics)
    }

    fn ad(node: PeerId, seq: u64) -> GossipMessage {
        GossipMessage::CapabilityAdvertisement(CapabilityAdvertisement {
            v: WIRE_VERSION,
            node: node.to_string(),
            incarnation: 1,
            role: "worker".into(),
            capabilities: vec!["compute".into()],
            capacity: 2,
            load: 0,
            addresses: Vec::new(),
            seq,
        })
    }

    fn sealed(key: &Keypair, message: &GossipMessage) -> ByteBuf {
        ByteBuf::from(message.seal(key).unwrap())
    }

    fn dropped(metrics: &Metrics) -> u64 {
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("dropped", "", metrics.messages_dropped.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
    }

    /// What a neighbour hands over is checked as gossip is: only the news passes, heartbeats
    /// lose their rumors, and a forged, altered or misattributed message is dropped and counted.
    #[test]
    fn pulled_messages_are_checked_and_only_news_passes() {
        let (gossip, metrics) = gossip();
        let neighbour = PeerId::random();
        let author = Keypair::generate_ed25519();
        let id = author.public().to_peer_id();
        let heartbeat = GossipMessage::HeartBeat(HeartBeat {
            v: WIRE_VERSION,
            node: id.to_string(),
            incarnation: 2,
            state: MemberState::Alive,
            load: 0,
            seq: 7,
            rumors: vec![WireRumor { peer: PeerId::random().to_string(), state: MemberState::Dead, incarnation: 1 }],
        });
        let mut out = Vec::new();
        gossip.open_pulled(neighbour, &[sealed(&author, &heartbeat), sealed(&author, &ad(id, 5))], &mut out);
        assert!(matches!(&out[0], NetworkEvent::Advertisement { from, message } if *from == id && message.seq == 5));
        assert!(
            matches!(&out[1], NetworkEvent::HeartBeat { from, message } if *from == id && message.rumors.is_empty()),
            "{out:?}"
        );

        // Held already, or older: nothing new.
        out.clear();
        gossip.open_pulled(neighbour, &[sealed(&author, &ad(id, 5)), sealed(&author, &ad(id, 4))], &mut out);
        assert!(out.is_empty(), "{out:?}");

        // Altered after sealing, signed by another key than the node it names, or ours.
        let mut altered = sealed(&author, &ad(id, 9)).into_vec();
        let last = altered.len() - 1;
        altered[last] ^= 0x01;
        let impostor = Keypair::generate_ed25519();
        let ours = sealed(&gossip.signing_key, &ad(gossip.signing_key.public().to_peer_id(), 9));
        let before = dropped(&metrics);
        gossip.open_pulled(neighbour, &[ByteBuf::from(altered), sealed(&impostor, &ad(id, 9)), ours], &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(dropped(&metrics), before + 2, "the altered and the misattributed message are counted");

        // A newer one passes.
        gossip.open_pulled(neighbour, &[sealed(&author, &ad(id, 6))], &mut out);
        assert_eq!(out.len(), 1);
    }
}
