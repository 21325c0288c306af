//! Which addresses are worth telling others, dialing, or putting in the routing table, and
//! how a peer is dialed. Pure: no swarm.

use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};

/// Addresses that are useless to anyone else: unspecified binds.
pub fn is_unroutable(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}

/// Addresses through a relay (`.../p2p-circuit/...`).
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// Loopback addresses: reachable only from this host.
pub fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// The node's rule for addresses, fixed by where it listens.
#[derive(Debug, Clone, Copy)]
pub struct AddressPolicy {
    /// Loopback addresses are only good within a cluster that lives on loopback; elsewhere
    /// dialing one reaches whoever listens on this host (ourselves, usually).
    pub loopback_ok: bool,
}

impl AddressPolicy {
    /// Whether `addr` is worth telling others or dialing.
    pub fn routable(&self, addr: &Multiaddr) -> bool {
        !is_unroutable(addr) && (self.loopback_ok || !is_loopback(addr))
    }

    /// Whether `addr` belongs in Kademlia and discovery dials: routable and not a relay
    /// circuit. A peer reachable only through a relay serves no DHT queries (it is a
    /// Kademlia client behind NAT), and dialing it for discovery or a query would spend one
    /// of the relay's circuits on every pair of such peers, renewed each time the relay's
    /// circuit limit cuts it. Tasks and probes dial it through the relay when needed.
    pub fn direct_routable(&self, addr: &Multiaddr) -> bool {
        self.routable(addr) && !is_relayed(addr)
    }

    /// How to dial `peer`: at the addresses it advertised, and only those, when it did.
    ///
    /// The swarm dials all of a peer's addresses at once and the first handshake decides:
    /// if someone else answers first (ourselves on a loopback or LAN address a behaviour
    /// cached from the peer's Identify, a host on a LAN numbered like the peer's), the whole
    /// dial fails with `WrongPeerId`, even when the relay circuit would have connected.
    /// Behind NAT a peer advertises exactly its circuits, so they are what gets dialed.
    pub fn dial_opts(&self, peer: PeerId, addresses: Vec<Multiaddr>) -> DialOpts {
        let usable: Vec<Multiaddr> = addresses.into_iter().filter(|a| self.routable(a)).collect();
        let opts = DialOpts::peer_id(peer).condition(PeerCondition::Disconnected);
        if usable.is_empty() {
            // Nothing advertised (yet): whatever the behaviours know.
            opts.build()
        } else {
            opts.addresses(usable).build()
        }
    }

    /// Where to reach a relay Identify told us about: an address it listens on, a
    /// non-loopback one if it has any (a loopback address only works for a relay on this host).
    pub fn relay_address(&self, listen_addrs: &[Multiaddr]) -> Option<Multiaddr> {
        let usable = |a: &&Multiaddr| {
            self.routable(a) && !a.iter().any(|p| matches!(p, Protocol::P2pCircuit | Protocol::P2p(_)))
        };
        let loopback = |a: &Multiaddr| a.iter().any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_loopback()));
        listen_addrs.iter().filter(usable).find(|a| !loopback(a)).or_else(|| listen_addrs.iter().find(usable)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().expect("a valid multiaddr")
    }

    #[test]
    fn loopback_is_routable_only_in_a_cluster_on_loopback() {
        let lo = addr("/ip4/127.0.0.1/tcp/4001");
        let lan = addr("/ip4/10.0.0.5/tcp/4001");
        let any = addr("/ip4/0.0.0.0/tcp/4001");
        let on_loopback = AddressPolicy { loopback_ok: true };
        let elsewhere = AddressPolicy { loopback_ok: false };
        assert!(on_loopback.routable(&lo) && on_loopback.routable(&lan));
        assert!(!elsewhere.routable(&lo) && elsewhere.routable(&lan));
        assert!(!on_loopback.routable(&any) && !elsewhere.routable(&any));
    }

    #[test]
    fn circuits_are_routable_but_not_direct() {
        let policy = AddressPolicy { loopback_ok: false };
        let circuit = addr(&format!("/ip4/10.0.0.1/tcp/4001/p2p/{}/p2p-circuit", PeerId::random()));
        assert!(policy.routable(&circuit));
        assert!(!policy.direct_routable(&circuit));
        assert!(policy.direct_routable(&addr("/ip4/10.0.0.1/tcp/4001")));
    }

    #[test]
    fn a_relay_is_reached_at_a_non_loopback_address_when_it_has_one() {
        let policy = AddressPolicy { loopback_ok: true };
        let lo = addr("/ip4/127.0.0.1/tcp/4001");
        let lan = addr("/ip4/10.0.0.7/tcp/4001");
        assert_eq!(policy.relay_address(&[lo.clone(), lan.clone()]), Some(lan));
        assert_eq!(policy.relay_address(std::slice::from_ref(&lo)), Some(lo));
        let strict = AddressPolicy { loopback_ok: false };
        assert_eq!(strict.relay_address(&[addr("/ip4/127.0.0.1/tcp/4001")]), None);
    }
}
