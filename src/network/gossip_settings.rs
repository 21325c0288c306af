//! GossipSub's settings for the cluster: wire format (sealed, anonymous messages named by a
//! hash), peer scoring and thresholds, and the behaviour a node runs with them.

use std::time::Duration;

use libp2p::gossipsub;
use sha2::{Digest, Sha256};

use super::names::{ProtocolNames, gossip_topics};
use crate::config::Config;
use crate::protocol::MAX_GOSSIP_BYTES;

/// GossipSub score thresholds. A peer below `graylist_threshold` has every RPC ignored.
pub fn gossip_thresholds() -> gossipsub::PeerScoreThresholds {
    gossipsub::PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    }
}

/// Peer scoring tuned for a cluster's two low-rate topics (heartbeats and capability
/// adverts, a few messages per node per interval):
/// - no mesh-delivery-rate penalties (P3, P3b): a quiet honest peer is normal here;
/// - a small reward for time in the mesh and first deliveries (P1, P2), capped;
/// - invalid messages (P4: unsigned, badly signed, malformed, oversized, sender mismatch)
///   weigh -10 x count², decaying by 10% a second: three in a burst graylist a peer (-90
///   against -80), a single bad message (a version skew in a rolling upgrade) does not;
/// - IP colocation counts only beyond 8 peers on one address, and never on loopback or the
///   configured `security.gossip_shared_ips` (NATs, host networking).
pub fn gossip_scoring(topics: &[gossipsub::TopicHash], shared_ips: &[std::net::IpAddr]) -> gossipsub::PeerScoreParams {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 0.5,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 10.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.9,
        ..Default::default()
    };
    let mut whitelist: std::collections::HashSet<std::net::IpAddr> = shared_ips.iter().copied().collect();
    whitelist.insert(std::net::Ipv4Addr::LOCALHOST.into());
    whitelist.insert(std::net::Ipv6Addr::LOCALHOST.into());
    gossipsub::PeerScoreParams {
        topics: topics.iter().map(|t| (t.clone(), topic.clone())).collect(),
        topic_score_cap: 20.0,
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: -5.0,
        ip_colocation_factor_threshold: 8.0,
        ip_colocation_factor_whitelist: whitelist,
        decay_interval: Duration::from_secs(1),
        decay_to_zero: 0.01,
        ..Default::default()
    }
}

/// GossipSub's wire settings, shared by every speaker of the cluster's gossip (the node, the
/// scale harness's probe, the hostile tests' attackers).
///
/// Messages carry no GossipSub signature, author or sequence number
/// (`MessageAuthenticity::Anonymous`): each is a libp2p signed envelope made by the node it
/// is about ([`GossipMessage::seal`](crate::protocol::GossipMessage::seal)), opened by the
/// application. GossipSub's own strict mode checks the signature of every copy it receives,
/// duplicates included, before it looks whether it has seen the message (about seven copies
/// per message here, one from the author and about six from mesh peers); the application sees
/// each message once. So a message is named by a hash of its topic and bytes: a copy altered
/// in flight, or replayed on another topic, is another message and cannot shadow the genuine
/// one in the duplicate cache.
pub fn gossip_config(names: &ProtocolNames) -> gossipsub::ConfigBuilder {
    let mut builder = gossipsub::ConfigBuilder::default();
    builder
        .protocol_id_prefix(names.gossip_prefix.clone())
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .message_id_fn(|message: &gossipsub::Message| {
            let mut hash = Sha256::new();
            hash.update(message.topic.as_str().as_bytes());
            hash.update([0]);
            hash.update(&message.data);
            gossipsub::MessageId::new(&hash.finalize())
        });
    builder
}

pub(super) fn behaviour(
    config: &Config,
    names: &ProtocolNames,
) -> Result<gossipsub::Behaviour<gossipsub::IdentityTransform, gossipsub::WhitelistSubscriptionFilter>, String> {
    let gs_config = gossip_config(names)
        // Nothing is forwarded until the application has opened and checked it (signature,
        // schema, size, sender).
        .validate_messages()
        // Every node receives each message about once per mesh peer: the mesh degree is the
        // cluster's gossip cost. An idle 100-node cluster spent most of its CPU on copies
        // (heartbeats and advertisements, about 7 of each per node with libp2p's 6/5/12);
        // 4/3/8 is still a connected mesh with room for churn, and a missed message is
        // recovered by IHAVE/IWANT from 3 peers outside the mesh each heartbeat: exactly 3
        // (`gossip_factor` 0). libp2p's default a quarter of the peers outside the mesh made it
        // about 8 at 100 nodes, per topic and second, more frames than the messages themselves.
        .mesh_n(4)
        .mesh_n_low(3)
        .mesh_n_high(8)
        .mesh_outbound_min(2)
        .gossip_lazy(3)
        .gossip_factor(0.0)
        .heartbeat_interval(Duration::from_secs(1))
        // Frames up to 4x the largest valid message get through to validation, so that an
        // oversized message is rejected by the application and costs its sender score;
        // anything bigger is cut by the codec.
        .max_transmit_size(4 * MAX_GOSSIP_BYTES)
        .build()
        .map_err(|e| format!("gossipsub config: {e}"))?;
    let topics = gossip_topics(names);
    let hashes: Vec<gossipsub::TopicHash> = topics.iter().map(|t| t.hash()).collect();
    // Subscriptions to any other topic are ignored: a peer cannot make us track thousands.
    let filter = gossipsub::WhitelistSubscriptionFilter(hashes.iter().cloned().collect());
    let mut gs = gossipsub::Behaviour::new_with_subscription_filter(
        gossipsub::MessageAuthenticity::Anonymous,
        gs_config,
        filter,
    )
    .map_err(|e| format!("gossipsub: {e}"))?;
    gs.with_peer_score(gossip_scoring(&hashes, &config.security.gossip_shared_ips), gossip_thresholds())
        .map_err(|e| format!("gossipsub peer scoring: {e}"))?;
    Ok(gs)
}
