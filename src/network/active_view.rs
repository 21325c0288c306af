//! The active view as the event loop keeps it: which connections to keep (the draw in
//! [`view`](super::view), hubs, bootstrap peers), which idle ones to close, which members of
//! the view to dial and how fast, and which discovered peers to dial. The decisions are pure;
//! the event loop carries them out on the swarm.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use super::peers::Connection;
use super::view;
use crate::config::Role;

/// A connection outside the active view (see `view`) is closed once idle and this old: time
/// for the ping or lookup it was made for.
const TRANSIENT_GRACE: Duration = Duration::from_secs(10);
/// A member of the active view we are not connected to is dialed at most this often.
const VIEW_REDIAL: Duration = Duration::from_secs(30);
/// Dials started per second to fill the active view.
const VIEW_DIALS_PER_SEC: usize = 4;
/// Dial newly discovered peers while below this share of `max_connections`.
const DIAL_SHARE: f64 = 0.8;

pub(super) struct ActiveView {
    local: PeerId,
    role: Role,
    /// Cluster members the application counts (ourselves included); 0 until it says.
    cluster_size: usize,
    /// `network.active_peers`: the size of the active view.
    active_peers: usize,
    max_connections: u32,
    /// When we last dialed a member of the active view we were not connected to.
    view_dials: HashMap<PeerId, Instant>,
    draws: view::Draws,
}

/// What the view needs to know of a peer beyond the draw.
pub(super) struct Standing {
    /// Identify confirmed it is of our cluster.
    pub member: bool,
    /// A bootstrap or relay node, or one of our configured bootstrap peers.
    pub hub: bool,
}

impl ActiveView {
    pub fn new(local: PeerId, role: Role, active_peers: usize, max_connections: u32) -> Self {
        Self {
            local,
            role,
            cluster_size: 0,
            active_peers,
            max_connections,
            view_dials: HashMap::new(),
            draws: view::Draws::new(local),
        }
    }

    pub fn set_cluster_size(&mut self, members: usize) {
        self.cluster_size = members;
    }

    /// Whether the cluster is larger than the view (each member keeps only some others).
    pub fn partial(&self) -> bool {
        view::partial(self.cluster_size, self.active_peers)
    }

    /// Whether the draw keeps the pair (us, `peer`), `margin` as in [`view::keeps`].
    pub fn drawn(&self, peer: &PeerId, margin: f64) -> bool {
        self.draws.keeps(peer, self.cluster_size, self.active_peers, margin)
    }

    /// Whether the connection to `peer` belongs to the active view (see `view`), `margin`
    /// as there. Bootstrap and relay nodes keep all their connections and are kept by all;
    /// so is anyone not (yet) a member, which is not ours to judge.
    pub fn keeps(&self, peer: &PeerId, standing: Standing, margin: f64) -> bool {
        matches!(self.role, Role::Bootstrap | Role::Relay)
            || !standing.member
            || standing.hub
            || self.drawn(peer, margin)
    }

    /// Peers whose connections may be closed: every connection older than `TRANSIENT_GRACE`
    /// and not already closing, and `keep` says nothing holds them (the view, tasks, lanes,
    /// probes, a dial).
    pub fn idle<'a>(
        &self,
        now: Instant,
        connections: impl Iterator<Item = (&'a PeerId, &'a [Connection])>,
        keep: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        connections
            .filter(|(peer, conns)| {
                conns.iter().all(|c| now.duration_since(c.since) >= TRANSIENT_GRACE && !c.closing) && !keep(peer)
            })
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// Members of the active view among `known` (the routing table's entries, direct
    /// addresses only) to dial now: a pair is kept by both ends, but either may have learned
    /// of the other only after its discovery dial, or lost the connection. A few per second,
    /// each at most every `VIEW_REDIAL`; `skip` says who is connected or being dialed. Until
    /// the cluster is larger than the view, discovery's dials suffice.
    pub fn dials_due(
        &mut self,
        now: Instant,
        known: Vec<(PeerId, Vec<Multiaddr>)>,
        skip: impl Fn(&PeerId) -> bool,
    ) -> Vec<(PeerId, Vec<Multiaddr>)> {
        if !self.partial() {
            return Vec::new();
        }
        self.view_dials.retain(|_, at| now.duration_since(*at) < VIEW_REDIAL);
        let mut due = Vec::new();
        for (peer, direct) in known {
            if direct.is_empty() || !self.drawn(&peer, 1.0) || skip(&peer) || self.view_dials.contains_key(&peer) {
                continue;
            }
            self.view_dials.insert(peer, now);
            due.push((peer, direct));
            if due.len() == VIEW_DIALS_PER_SEC {
                break;
            }
        }
        due
    }

    /// Discovery: whether to dial a peer we just learned of (at its direct addresses) while
    /// `connected` peers are connected.
    pub fn worth_dialing(&self, peer: &PeerId, connected: usize) -> bool {
        *peer != self.local
            && (connected as f64) < f64::from(self.max_connections) * DIAL_SHARE
            && self.drawn(peer, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::swarm::ConnectionId;

    fn addr() -> Vec<Multiaddr> {
        vec!["/ip4/10.0.0.1/tcp/4001".parse().expect("a valid multiaddr")]
    }

    fn member() -> Standing {
        Standing { member: true, hub: false }
    }

    /// A view of `members` keeping 10 each, and 20 peers the draw keeps and 20 it does not.
    fn view_of(members: usize) -> (ActiveView, Vec<PeerId>, Vec<PeerId>) {
        let mut v = ActiveView::new(PeerId::random(), Role::Worker, 10, 1000);
        v.set_cluster_size(members);
        let (mut kept, mut dropped) = (Vec::new(), Vec::new());
        for _ in 0..100_000 {
            let p = PeerId::random();
            match v.drawn(&p, 1.0) {
                true if kept.len() < 20 => kept.push(p),
                false if !v.drawn(&p, view::TRIM_MARGIN) && dropped.len() < 20 => dropped.push(p),
                _ => {}
            }
            if kept.len() == 20 && dropped.len() == 20 {
                break;
            }
        }
        assert_eq!((kept.len(), dropped.len()), (20, 20), "random peer ids fall on both sides of the draw");
        (v, kept, dropped)
    }

    #[test]
    fn hubs_strangers_and_hub_roles_keep_every_connection() {
        let (v, _, dropped) = view_of(100);
        let outside = dropped[0];
        assert!(!v.keeps(&outside, member(), view::TRIM_MARGIN));
        assert!(v.keeps(&outside, Standing { member: false, hub: false }, view::TRIM_MARGIN), "not ours to judge");
        assert!(v.keeps(&outside, Standing { member: true, hub: true }, view::TRIM_MARGIN));
        let mut relay = ActiveView::new(v.local, Role::Relay, 3, 1000);
        relay.set_cluster_size(100);
        assert!(relay.keeps(&outside, member(), view::TRIM_MARGIN));
    }

    #[test]
    fn a_connection_is_idle_only_after_the_grace_and_when_nothing_holds_it() {
        let (v, _, _) = view_of(100);
        let now = Instant::now();
        let conn = |age: u64, closing| Connection {
            id: ConnectionId::new_unchecked(1),
            relayed: false,
            closing,
            since: now - Duration::from_secs(age),
        };
        let (old, young, closing, held) = (PeerId::random(), PeerId::random(), PeerId::random(), PeerId::random());
        let table = [
            (old, vec![conn(11, false)]),
            (young, vec![conn(9, false)]),
            (closing, vec![conn(11, true)]),
            (held, vec![conn(11, false)]),
        ];
        let idle = v.idle(now, table.iter().map(|(p, c)| (p, c.as_slice())), |p| *p == held);
        assert_eq!(idle, vec![old]);
    }

    #[test]
    fn view_dials_are_paced_and_not_repeated_within_the_redial_gap() {
        let (mut v, kept, dropped) = view_of(100);
        let known: Vec<_> = kept.iter().chain(&dropped).map(|p| (*p, addr())).collect();
        let now = Instant::now();
        let first = v.dials_due(now, known.clone(), |_| false);
        assert_eq!(first.len(), VIEW_DIALS_PER_SEC, "at most a few dials per second");
        assert!(first.iter().all(|(p, _)| v.drawn(p, 1.0)), "only members of the view are dialed");
        let second = v.dials_due(now + Duration::from_secs(1), known.clone(), |_| false);
        assert!(second.iter().all(|d| !first.contains(d)), "a dial is not repeated within VIEW_REDIAL");
        let later = v.dials_due(now + VIEW_REDIAL + Duration::from_secs(1), known, |_| false);
        assert!(!later.is_empty());
    }

    #[test]
    fn no_view_dials_while_the_cluster_fits_the_view_or_without_addresses() {
        let mut small = ActiveView::new(PeerId::random(), Role::Worker, 10, 1000);
        small.set_cluster_size(11);
        let everyone = (0..10).map(|_| (PeerId::random(), addr())).collect();
        assert!(small.dials_due(Instant::now(), everyone, |_| false).is_empty(), "discovery's dials suffice");
        let (mut big, kept, _) = view_of(100);
        let none = big.dials_due(Instant::now(), kept.iter().map(|p| (*p, Vec::new())).collect(), |_| false);
        assert!(none.is_empty());
    }

    #[test]
    fn discovery_dials_stop_near_the_connection_limit() {
        let mut v = ActiveView::new(PeerId::random(), Role::Worker, 20, 10);
        v.set_cluster_size(5);
        let peer = PeerId::random();
        assert!(v.worth_dialing(&peer, 7));
        assert!(!v.worth_dialing(&peer, 8), "80% of max_connections");
        assert!(!v.worth_dialing(&v.local.clone(), 0), "never ourselves");
    }
}
