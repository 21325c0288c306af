//! Bootstrap redial policy: keep dialing the configured bootstrap addresses with capped,
//! jittered backoff while none is connected, so a node started before its bootstrap joins as
//! soon as the bootstrap comes up, and a restarted bootstrap is rejoined.
//!
//! Pure state; the event loop feeds it dial results and asks it which addresses are due.

use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Entry {
    address: Multiaddr,
    /// Learned from the first successful connection when the address carries no `/p2p/`.
    peer: Option<PeerId>,
    connected: bool,
    dialing: Option<ConnectionId>,
    backoff: Duration,
    next_attempt: Instant,
}

#[derive(Debug, Default)]
pub struct Bootstrapper {
    entries: Vec<Entry>,
}

impl Bootstrapper {
    pub fn new(addresses: &[Multiaddr], now: Instant) -> Self {
        Self {
            entries: addresses
                .iter()
                .map(|a| Entry {
                    address: a.clone(),
                    peer: peer_of(a),
                    connected: false,
                    dialing: None,
                    backoff: INITIAL_BACKOFF,
                    next_attempt: now,
                })
                .collect(),
        }
    }

    /// Addresses to dial now; the caller reports each dial's `ConnectionId` via `dialing`.
    pub fn due(&self, now: Instant) -> Vec<(usize, Multiaddr)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.connected && e.dialing.is_none() && e.next_attempt <= now)
            .map(|(i, e)| (i, e.address.clone()))
            .collect()
    }

    /// When the next address falls due (`due`), if one is waiting: the event loop sleeps no
    /// longer than this.
    pub fn next_attempt(&self) -> Option<Instant> {
        self.entries.iter().filter(|e| !e.connected && e.dialing.is_none()).map(|e| e.next_attempt).min()
    }

    pub fn dialing(&mut self, index: usize, id: ConnectionId) {
        if let Some(e) = self.entries.get_mut(index) {
            e.dialing = Some(id);
        }
    }

    /// A dial could not even start (bad address, no transport): retry later like a failure.
    pub fn dial_not_started(&mut self, index: usize, now: Instant, jitter: f64) {
        if let Some(e) = self.entries.get_mut(index) {
            schedule_retry(e, now, jitter);
        }
    }

    /// A connection to `peer` was established by `id` (ours or the remote's).
    /// Returns true when it is a bootstrap peer.
    pub fn connected(&mut self, peer: PeerId, id: ConnectionId) -> bool {
        let mut is_bootstrap = false;
        for e in &mut self.entries {
            if e.dialing == Some(id) || e.peer == Some(peer) {
                e.peer = Some(peer);
                e.connected = true;
                e.dialing = None;
                e.backoff = INITIAL_BACKOFF;
                is_bootstrap = true;
            }
        }
        is_bootstrap
    }

    /// Whether `peer` is one of the bootstrap peers (once its id is known).
    pub fn is_bootstrap(&self, peer: &PeerId) -> bool {
        self.entries.iter().any(|e| e.peer.as_ref() == Some(peer))
    }

    /// Our dial `id` failed.
    pub fn dial_failed(&mut self, id: ConnectionId, now: Instant, jitter: f64) {
        for e in &mut self.entries {
            if e.dialing == Some(id) {
                schedule_retry(e, now, jitter);
            }
        }
    }

    /// All connections to `peer` are gone: start redialing it.
    pub fn disconnected(&mut self, peer: PeerId, now: Instant) {
        for e in &mut self.entries {
            if e.peer == Some(peer) && e.connected {
                e.connected = false;
                e.dialing = None;
                e.backoff = INITIAL_BACKOFF;
                e.next_attempt = now;
            }
        }
    }
}

fn schedule_retry(e: &mut Entry, now: Instant, jitter: f64) {
    e.dialing = None;
    // Jitter in [0.5, 1.0) of the backoff spreads a fleet restarting together.
    let wait = e.backoff.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0);
    e.next_attempt = now + wait;
    e.backoff = (e.backoff * 2).min(MAX_BACKOFF);
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> Multiaddr {
        "/ip4/127.0.0.1/tcp/4001".parse().unwrap()
    }

    #[test]
    fn the_next_attempt_is_known_only_while_one_waits() {
        let t0 = Instant::now();
        let mut b = Bootstrapper::new(&[addr()], t0);
        assert_eq!(b.next_attempt(), Some(t0), "the first dial is due at once");
        let id = ConnectionId::new_unchecked(1);
        b.dialing(0, id);
        assert_eq!(b.next_attempt(), None, "nothing waits while the dial is in flight");
        b.dial_failed(id, t0, 0.0);
        assert_eq!(b.next_attempt(), Some(t0 + Duration::from_millis(125)));
        let peer = PeerId::random();
        b.dialing(0, id);
        b.connected(peer, id);
        assert_eq!(b.next_attempt(), None, "connected: nothing to redial");
        let later = t0 + Duration::from_secs(5);
        b.disconnected(peer, later);
        assert_eq!(b.next_attempt(), Some(later), "a lost bootstrap is redialed at once");
    }

    #[test]
    fn failed_dials_back_off_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Bootstrapper::new(&[addr()], t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            let due = b.due(now);
            assert_eq!(due.len(), 1);
            let id = ConnectionId::new_unchecked(waits.len());
            b.dialing(0, id);
            assert!(b.due(now).is_empty(), "no second dial while one is in flight");
            b.dial_failed(id, now, 1.0);
            let next = b.entries[0].next_attempt;
            waits.push(next - now);
            now = next;
        }
        assert_eq!(waits[0], Duration::from_millis(250));
        assert_eq!(waits[1], Duration::from_millis(500));
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF);
    }

    #[test]
    fn disconnect_of_a_learned_bootstrap_redials_at_once() {
        let t0 = Instant::now();
        let mut b = Bootstrapper::new(&[addr()], t0);
        let id = ConnectionId::new_unchecked(7);
        b.dialing(0, id);
        let peer = PeerId::random();
        assert!(b.connected(peer, id));
        assert!(b.entries[0].connected && b.entries[0].peer == Some(peer));
        assert!(b.due(t0).is_empty());
        b.disconnected(peer, t0);
        assert_eq!(b.due(t0).len(), 1);
        assert!(!b.connected(PeerId::random(), ConnectionId::new_unchecked(8)));
    }
}
