//! Who we are connected to and how: every connection per peer (direct or relayed, closing or
//! not), which peers Identify confirmed as members of our cluster (only they reach the
//! application), and which of them are hubs (bootstrap and relay nodes).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use libp2p::swarm::{ConnectionError, ConnectionId};
use libp2p::{Multiaddr, PeerId, identify};

use super::addresses::AddressPolicy;
use super::event::NetworkEvent;
use crate::metrics::{Limit, Metrics};

pub(super) struct Connection {
    pub id: ConnectionId,
    pub relayed: bool,
    /// We asked the swarm to close it (a relayed one a direct connection replaced, or one
    /// outside the active view).
    pub closing: bool,
    pub since: Instant,
}

pub(super) struct Peers {
    connections: HashMap<PeerId, Vec<Connection>>,
    /// Peers that passed the Identify check (same cluster); only they reach the application.
    members: HashSet<PeerId>,
    /// Members whose role is bootstrap or relay: always in the active view.
    hubs: HashSet<PeerId>,
    /// Our cluster's `network.protocol_version`: a peer with another is of another cluster.
    protocol_version: String,
}

impl Peers {
    pub fn new(protocol_version: String) -> Self {
        Self { connections: HashMap::new(), members: HashSet::new(), hubs: HashSet::new(), protocol_version }
    }

    pub fn is_member(&self, peer: &PeerId) -> bool {
        self.members.contains(peer)
    }

    pub fn is_hub(&self, peer: &PeerId) -> bool {
        self.hubs.contains(peer)
    }

    pub fn members(&self) -> impl Iterator<Item = &PeerId> {
        self.members.iter()
    }

    pub fn connections(&self) -> impl Iterator<Item = (&PeerId, &[Connection])> {
        self.connections.iter().map(|(p, c)| (p, c.as_slice()))
    }

    /// Identify's verdict on a peer: of our cluster or not.
    pub fn same_cluster(&self, info: &identify::Info) -> bool {
        info.protocol_version == self.protocol_version
    }

    pub fn protocol_version(&self) -> &str {
        &self.protocol_version
    }

    /// Identify confirmed `peer` is of our cluster: the first time, it becomes a member and
    /// the application hears of it.
    pub fn admit(&mut self, peer: PeerId, info: &identify::Info, policy: &AddressPolicy) -> Option<NetworkEvent> {
        if !self.members.insert(peer) {
            return None;
        }
        let relayed = self.relayed_only(&peer);
        let address: Multiaddr = info
            .listen_addrs
            .iter()
            .find(|a| policy.routable(a))
            .cloned()
            .unwrap_or_else(|| info.observed_addr.clone());
        let role = role_of(&info.agent_version);
        if matches!(role.as_deref(), Some("bootstrap" | "relay")) {
            self.hubs.insert(peer);
        }
        Some(NetworkEvent::PeerConnected { peer, address, relayed, role })
    }

    /// A connection to `peer` opened; tells the application if it changed the peer's kind.
    pub fn on_established(&mut self, peer: PeerId, id: ConnectionId, relayed: bool) -> Option<NetworkEvent> {
        let before = self.relayed_only(&peer);
        self.connections.entry(peer).or_default().push(Connection {
            id,
            relayed,
            closing: false,
            since: Instant::now(),
        });
        self.kind_change(peer, before)
    }

    /// One of `peer`'s connections closed and others remain.
    pub fn on_closed(&mut self, peer: PeerId, id: ConnectionId) -> Option<NetworkEvent> {
        let before = self.relayed_only(&peer);
        self.remove_connection(peer, id);
        self.kind_change(peer, before)
    }

    /// `peer`'s last connection closed. `expected`: a close both ends meant (outside the
    /// active view), which is no sign of failure, nor is an orderly or idle close.
    pub fn on_gone(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        expected: bool,
        cause: Option<&ConnectionError>,
    ) -> Option<NetworkEvent> {
        self.remove_connection(peer, id);
        self.hubs.remove(&peer);
        if !self.members.remove(&peer) {
            return None;
        }
        let failure = !expected && !matches!(cause, None | Some(ConnectionError::KeepAliveTimeout));
        tracing::debug!(%peer, ?cause, "peer disconnected");
        Some(NetworkEvent::PeerDisconnected { peer, failure })
    }

    fn remove_connection(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(conns) = self.connections.get_mut(&peer) {
            conns.retain(|c| c.id != id);
            if conns.is_empty() {
                self.connections.remove(&peer);
            }
        }
    }

    /// True when every open connection to `peer` goes through a relay.
    pub fn relayed_only(&self, peer: &PeerId) -> bool {
        self.connections.get(peer).is_some_and(|c| !c.is_empty() && c.iter().all(|c| c.relayed))
    }

    /// Tells the application when a member's connection turned direct (hole punch) or back.
    fn kind_change(&self, peer: PeerId, before: bool) -> Option<NetworkEvent> {
        let now = self.relayed_only(&peer);
        (now != before && self.members.contains(&peer) && self.connections.contains_key(&peer))
            .then_some(NetworkEvent::ConnectionKind { peer, relayed: now })
    }

    /// Marks every connection to `peer` as closing (we asked the swarm to close them).
    pub fn mark_closing(&mut self, peer: &PeerId) {
        for c in self.connections.get_mut(peer).into_iter().flatten() {
            c.closing = true;
        }
    }

    pub fn mark_connection_closing(&mut self, peer: &PeerId, id: ConnectionId) {
        if let Some(c) = self.connections.get_mut(peer).and_then(|cs| cs.iter_mut().find(|c| c.id == id)) {
            c.closing = true;
        }
    }

    /// Relayed connections to peers we also reach directly (after a hole punch).
    pub fn superseded_circuits(&self) -> Vec<(PeerId, ConnectionId)> {
        self.connections
            .iter()
            .filter(|(_, conns)| conns.iter().any(|c| !c.relayed))
            .flat_map(|(peer, conns)| conns.iter().filter(|c| c.relayed && !c.closing).map(|c| (*peer, c.id)))
            .collect()
    }
}

/// The role an Identify agent string names (`p2p-node/<version> role=<role>`).
fn role_of(agent_version: &str) -> Option<String> {
    agent_version.split_whitespace().find_map(|w| w.strip_prefix("role=")).map(str::to_string)
}

/// Counts a connection that a limit refused, by the limit that bit.
pub(super) fn count_denied(metrics: &Metrics, cause: &libp2p::swarm::ConnectionDenied) {
    let limit = if let Some(e) = cause.downcast_ref::<libp2p::connection_limits::Exceeded>() {
        // The kind is only public through the message ("at most N pending incoming ...").
        let text = e.to_string();
        if text.contains("pending incoming") {
            Limit::PendingIncoming
        } else if text.contains("pending outgoing") {
            Limit::PendingOutgoing
        } else if text.contains("per peer") {
            Limit::ConnectionsPerPeer
        } else {
            Limit::Connections
        }
    } else if cause.downcast_ref::<libp2p::memory_connection_limits::MemoryUsageLimitExceeded>().is_some() {
        Limit::Memory
    } else {
        return;
    };
    tracing::debug!(limit = limit.label(), %cause, "connection refused by a limit");
    metrics.limit_hit(limit);
}

/// Counts a peer of another cluster, refused at Identify.
pub(super) fn count_foreign(metrics: &Metrics) {
    metrics.peers_rejected.get_or_create(&crate::metrics::ReasonLabels { reason: "protocol_version".into() }).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_is_read_from_the_agent_string() {
        assert_eq!(role_of("p2p-node/0.1.0 role=relay").as_deref(), Some("relay"));
        assert_eq!(role_of("rust-libp2p/0.57"), None);
    }

    #[test]
    fn a_hole_punch_is_reported_as_a_change_of_kind_and_the_circuit_as_superseded() {
        let mut peers = Peers::new("p2p-test".into());
        let peer = PeerId::random();
        let (circuit, direct) = (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));
        assert!(peers.on_established(peer, circuit, true).is_none(), "not a member yet: nothing to report");
        assert!(peers.relayed_only(&peer));
        peers.members.insert(peer);
        let change = peers.on_established(peer, direct, false);
        assert!(matches!(change, Some(NetworkEvent::ConnectionKind { relayed: false, .. })));
        assert_eq!(peers.superseded_circuits(), vec![(peer, circuit)]);
        peers.mark_connection_closing(&peer, circuit);
        assert!(peers.superseded_circuits().is_empty(), "a circuit being closed is not closed twice");
        assert!(peers.on_closed(peer, circuit).is_none(), "still direct");
    }

    #[test]
    fn only_an_unexpected_close_of_a_member_is_a_failure() {
        let mut peers = Peers::new("p2p-test".into());
        let (member, stranger) = (PeerId::random(), PeerId::random());
        peers.members.insert(member);
        let id = ConnectionId::new_unchecked(7);
        let reset = ConnectionError::IO(std::io::Error::other("reset"));
        assert!(peers.on_gone(stranger, id, false, Some(&reset)).is_none(), "not a member: nothing to report");
        let gone = peers.on_gone(member, id, false, Some(&reset));
        assert!(matches!(gone, Some(NetworkEvent::PeerDisconnected { failure: true, .. })));
        peers.members.insert(member);
        let trimmed = peers.on_gone(member, id, true, Some(&reset));
        assert!(matches!(trimmed, Some(NetworkEvent::PeerDisconnected { failure: false, .. })));
        peers.members.insert(member);
        let orderly = peers.on_gone(member, id, false, None);
        assert!(matches!(orderly, Some(NetworkEvent::PeerDisconnected { failure: false, .. })));
    }
}
