//! Reachability behind NAT: AutoNAT's verdict, the relays we know, the reservations we hold
//! on them, and closing relayed connections once a hole punch made a direct one.

use std::collections::HashMap;

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, Swarm, autonat, kad, relay};

use super::addresses::AddressPolicy;
use super::behaviour::Behaviour;
use super::event::{NatStatus, NetworkEvent};
use super::peers::Peers;
use crate::config::{Config, Role};
use crate::metrics::Metrics;

/// Relays a node behind NAT holds reservations on.
const MAX_RELAYS: usize = 2;

pub(super) struct Relay {
    nat: NatStatus,
    role: Role,
    client_enabled: bool,
    /// Addresses were given in the configuration: the node is reachable there, so it does not
    /// hold a relay reservation while AutoNAT is still undecided.
    external_configured: bool,
    loopback_ok: bool,
    /// Relays we know (Identify says they serve the hop protocol) and how we reach them.
    relays: HashMap<PeerId, Multiaddr>,
    /// Circuit listeners (reservations) per relay.
    reservations: HashMap<PeerId, ListenerId>,
    metrics: Metrics,
}

impl Relay {
    pub fn new(config: &Config, metrics: Metrics) -> Self {
        metrics.set_nat(NatStatus::Unknown.as_str());
        Self {
            nat: NatStatus::Unknown,
            role: config.node.role,
            client_enabled: config.network.enable_relay,
            external_configured: !config.node.external_addresses.is_empty(),
            loopback_ok: config.node.listen_address.is_loopback(),
            relays: HashMap::new(),
            reservations: HashMap::new(),
            metrics,
        }
    }

    pub fn nat(&self) -> NatStatus {
        self.nat
    }

    /// Whether to listen through relays. Behind NAT, yes. While AutoNAT is still undecided
    /// (its first verdict takes tens of seconds) a worker that was told no public address of
    /// its own may well be an edge worker behind NAT: holding a reservation meanwhile makes it
    /// reachable at once, and it is given back if AutoNAT finds the node public. A node on
    /// loopback shares its host with the whole cluster and needs no relay.
    fn wants_reservation(&self) -> bool {
        self.client_enabled
            && match self.nat {
                NatStatus::Private => true,
                NatStatus::Unknown => self.role == Role::Worker && !self.external_configured && !self.loopback_ok,
                NatStatus::Public => false,
            }
    }

    /// Identify told us what `peer` speaks: remember it when it is a relay.
    pub fn on_identify(&mut self, peer: PeerId, info: &libp2p::identify::Info, policy: &AddressPolicy) {
        if info.protocols.contains(&relay::HOP_PROTOCOL_NAME)
            && let Some(addr) = policy.relay_address(&info.listen_addrs)
        {
            self.relays.insert(peer, addr);
        }
    }

    /// Listen through known relays (a reservation each, at most two) so peers can reach us at
    /// `/p2p/<relay>/p2p-circuit`; DCUtR then tries to upgrade to direct.
    pub fn reserve(&mut self, swarm: &mut Swarm<Behaviour>) {
        if !self.wants_reservation() || self.reservations.len() >= MAX_RELAYS {
            return;
        }
        let candidates: Vec<(PeerId, Multiaddr)> = self
            .relays
            .iter()
            .filter(|(p, _)| !self.reservations.contains_key(p) && swarm.is_connected(p))
            .map(|(p, a)| (*p, a.clone()))
            .collect();
        for (relay, addr) in candidates.into_iter().take(MAX_RELAYS - self.reservations.len()) {
            let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
            match swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    tracing::info!(%relay, %circuit, "requesting a relay reservation");
                    self.reservations.insert(relay, id);
                }
                Err(e) => tracing::warn!(%relay, error = %e, "cannot listen through relay"),
            }
        }
    }

    /// A listener closed: if it was a reservation, the relay no longer holds one for us.
    pub fn on_listener_closed(&mut self, listener: ListenerId, reason: &Result<(), std::io::Error>) {
        if let Some(relay) = self.reservations.iter().find(|(_, id)| **id == listener).map(|(p, _)| *p) {
            tracing::info!(%relay, ?reason, "relay reservation ended");
            self.reservations.remove(&relay);
            self.metrics.relay_reservations.set(self.reservations.len() as i64);
        }
    }

    pub fn on_client_event(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal, .. } => {
                tracing::info!(relay = %relay_peer_id, renewal, "relay reservation accepted");
                self.metrics.relay_reservations.set(self.reservations.len() as i64);
            }
            other => tracing::debug!(event = ?other, "relay client event"),
        }
    }

    /// AutoNAT's new verdict: reservations are given back once reachable directly, and a
    /// worker behind NAT becomes a DHT client.
    pub fn on_nat(&mut self, swarm: &mut Swarm<Behaviour>, new: autonat::NatStatus) -> NetworkEvent {
        let status = match new {
            autonat::NatStatus::Public(_) => NatStatus::Public,
            autonat::NatStatus::Private => NatStatus::Private,
            autonat::NatStatus::Unknown => NatStatus::Unknown,
        };
        tracing::info!(status = status.as_str(), "NAT status changed");
        self.nat = status;
        self.metrics.set_nat(status.as_str());
        if !self.wants_reservation() {
            for (relay, listener) in std::mem::take(&mut self.reservations) {
                tracing::info!(%relay, "giving back the relay reservation: reachable directly");
                swarm.remove_listener(listener);
            }
            self.metrics.relay_reservations.set(0);
        }
        if self.role == Role::Worker {
            // A worker behind NAT cannot answer DHT queries from outside; be a client.
            let mode = if status == NatStatus::Private { kad::Mode::Client } else { kad::Mode::Server };
            swarm.behaviour_mut().kad.set_mode(Some(mode));
        }
        NetworkEvent::Nat(status)
    }
}

/// Closes relayed connections to peers we also reach directly (after a hole punch), once
/// nothing is in flight with the peer (`busy`). A task lane opens on one of a peer's
/// connections picked at random (request-response spreads requests over all of them), so an
/// open circuit would keep carrying tasks, slower and under the relay's time and byte limits.
/// Closing it ends a lane on it, and the next task opens one on the direct connection.
pub(super) fn close_superseded_circuits(
    swarm: &mut Swarm<Behaviour>,
    peers: &mut Peers,
    busy: impl Fn(&PeerId) -> bool,
) {
    let superseded: Vec<(PeerId, ConnectionId)> = peers.superseded_circuits();
    for (peer, id) in superseded {
        if busy(&peer) || !swarm.close_connection(id) {
            continue;
        }
        tracing::info!(%peer, "closing the relayed connection: a direct one exists");
        peers.mark_connection_closing(&peer, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_for(role: Role, external: bool, loopback: bool) -> Relay {
        Relay {
            nat: NatStatus::Unknown,
            role,
            client_enabled: true,
            external_configured: external,
            loopback_ok: loopback,
            relays: HashMap::new(),
            reservations: HashMap::new(),
            metrics: Metrics::new(&mut prometheus_client::registry::Registry::default()),
        }
    }

    #[test]
    fn an_undecided_worker_without_a_public_address_holds_a_reservation_meanwhile() {
        assert!(relay_for(Role::Worker, false, false).wants_reservation());
        assert!(!relay_for(Role::Worker, true, false).wants_reservation(), "reachable where configured");
        assert!(!relay_for(Role::Worker, false, true).wants_reservation(), "loopback shares the host");
        assert!(!relay_for(Role::Bootstrap, false, false).wants_reservation());
    }

    #[test]
    fn behind_nat_always_and_public_never() {
        let mut r = relay_for(Role::Bootstrap, true, true);
        r.nat = NatStatus::Private;
        assert!(r.wants_reservation());
        r.nat = NatStatus::Public;
        let mut w = relay_for(Role::Worker, false, false);
        w.nat = NatStatus::Public;
        assert!(!r.wants_reservation() && !w.wants_reservation());
        w.client_enabled = false;
        w.nat = NatStatus::Private;
        assert!(!w.wants_reservation(), "network.enable_relay off");
    }
}
