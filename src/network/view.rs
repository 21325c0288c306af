//! The active view: which cluster members a node stays connected to.
//!
//! Left alone, a node ends up connected to every member: SWIM pings one member per period
//! in a round robin and dials it, discovery dials what Kademlia finds, and connections are
//! never idle (GossipSub keeps a stream open on each). At N nodes that is N-1 connections
//! each, and every message is flooded on all of them: the cost of the cluster grows with N².
//!
//! So in a cluster of more than `active` + 1 members (`network.active_peers`, 20 by default)
//! each pair of members is kept connected with probability `active / (N-1)`, decided by a
//! hash of the two peer ids.
//! Both ends draw the same number, so both agree which connections belong to the view
//! without a word exchanged: a connection outside it (a SWIM ping's, a discovery dial's) is
//! closed once idle, and its other end, drawing the same, does not take the close for a
//! failure and dial back. The kept pairs form a random graph of degree about
//! `active`, connected with overwhelming probability, over which GossipSub builds
//! its mesh. Bootstrap and relay nodes, and pairs with tasks or lanes between them, are
//! kept whatever the draw (the event loop decides those).
//!
//! The two ends may count members slightly differently; between keeping (`share`) and
//! trimming (`share * TRIM_MARGIN`) lies a band where a connection is neither closed nor,
//! when it closes, taken for a failure.

use std::collections::HashMap;
use std::sync::Mutex;

use libp2p::PeerId;
use sha2::{Digest, Sha256};

/// A connection is closed only when its draw is this far beyond the share kept.
pub const TRIM_MARGIN: f64 = 1.25;

/// The pair's draw, uniform in [0, 1) and the same seen from either end.
pub fn draw(a: &PeerId, b: &PeerId) -> f64 {
    let (a, b) = (a.to_bytes(), b.to_bytes());
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(lo);
    h.update([0]);
    h.update(hi);
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // The top 53 bits: exactly representable, uniform in [0, 1).
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// One node's draws with its peers, remembered: a draw is a SHA-256 of both ids, and the
/// active view and the ledger ask it for every routing-table entry, connection or member
/// (about 200 a second per node at 100 nodes, several percent of an idle cluster's CPU).
pub struct Draws {
    local: PeerId,
    known: Mutex<HashMap<PeerId, f64>>,
}

/// Draws remembered at most; beyond, the memory starts afresh (a cluster of this many members
/// recomputes a few a second).
const DRAWS_REMEMBERED: usize = 16_384;

impl Draws {
    pub fn new(local: PeerId) -> Self {
        Self { local, known: Mutex::new(HashMap::new()) }
    }

    /// `draw(local, peer)`.
    pub fn draw(&self, peer: &PeerId) -> f64 {
        // Only its owner's task asks: the lock is never contended.
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = known.get(peer) {
            return *d;
        }
        if known.len() >= DRAWS_REMEMBERED {
            known.clear();
        }
        let d = draw(&self.local, peer);
        known.insert(*peer, d);
        d
    }

    /// [`keeps`] for the pair (local, `peer`).
    pub fn keeps(&self, peer: &PeerId, members: usize, active: usize, margin: f64) -> bool {
        self.draw(peer) < share(members, active) * margin
    }
}

/// The share of pairs kept in a cluster of `members` (ourselves included) where each keeps
/// `active` others on average; 1 or more: all. `active` 0 keeps all.
pub fn share(members: usize, active: usize) -> f64 {
    match members.checked_sub(1) {
        Some(others) if others > 0 && active > 0 => active as f64 / others as f64,
        _ => f64::INFINITY,
    }
}

/// Whether a cluster of `members` is larger than the view: each member then keeps only some.
pub fn partial(members: usize, active: usize) -> bool {
    share(members, active) < 1.0
}

/// Whether the pair `(a, b)` belongs to the view of a cluster of `members` keeping `active`
/// each, with `margin`
/// (1 to decide whether a close is a failure or a dial is worth it, [`TRIM_MARGIN`] to
/// decide whether to close).
pub fn keeps(a: &PeerId, b: &PeerId, members: usize, active: usize, margin: f64) -> bool {
    draw(a, b) < share(members, active) * margin
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                Keypair::ed25519_from_bytes(seed).expect("32 bytes").public().to_peer_id()
            })
            .collect()
    }

    #[test]
    fn remembered_draws_are_the_draws() {
        let p = peers(5);
        let draws = Draws::new(p[0]);
        for _ in 0..2 {
            for q in &p[1..] {
                assert_eq!(draws.draw(q), draw(&p[0], q));
                assert_eq!(draws.draw(q), Draws::new(*q).draw(&p[0]), "the same from the other end");
                assert_eq!(draws.keeps(q, 100, 20, 1.0), keeps(&p[0], q, 100, 20, 1.0));
            }
        }
    }

    #[test]
    fn both_ends_draw_the_same() {
        let p = peers(20);
        for a in &p {
            for b in &p {
                assert_eq!(draw(a, b), draw(b, a));
                assert!((0.0..1.0).contains(&draw(a, b)));
            }
        }
    }

    const ACTIVE: usize = 20;

    #[test]
    fn small_clusters_keep_everything() {
        let p = peers(2);
        for members in 0..=(ACTIVE + 1) {
            assert!(keeps(&p[0], &p[1], members, ACTIVE, 1.0), "{members} members");
        }
        assert!(!partial(ACTIVE + 1, ACTIVE) && partial(ACTIVE + 2, ACTIVE));
        assert!(!partial(1000, 0) && keeps(&p[0], &p[1], 1000, 0, 1.0), "0: the view is off");
    }

    /// 100 members: each keeps about ACTIVE others, nobody is left with few, and the
    /// kept pairs connect everybody (a breadth-first search from one member reaches all).
    #[test]
    fn a_large_cluster_keeps_a_connected_graph_of_the_expected_degree() {
        let n = 100;
        let p = peers(n);
        let kept: Vec<Vec<usize>> =
            (0..n).map(|i| (0..n).filter(|&j| j != i && keeps(&p[i], &p[j], n, ACTIVE, 1.0)).collect()).collect();
        let degrees: Vec<usize> = kept.iter().map(Vec::len).collect();
        let mean = degrees.iter().sum::<usize>() as f64 / n as f64;
        assert!((ACTIVE as f64 * 0.8..ACTIVE as f64 * 1.2).contains(&mean), "mean degree {mean}");
        assert!(degrees.iter().all(|&d| d >= 8), "degrees {degrees:?}");
        let mut seen = vec![false; n];
        let mut queue = vec![0];
        seen[0] = true;
        while let Some(i) = queue.pop() {
            for &j in &kept[i] {
                if !seen[j] {
                    seen[j] = true;
                    queue.push(j);
                }
            }
        }
        assert!(seen.iter().all(|s| *s), "the kept pairs split the cluster");
        // The band between keeping and trimming: trimming never closes a kept pair.
        for i in 0..n {
            for j in 0..n {
                if keeps(&p[i], &p[j], n, ACTIVE, 1.0) {
                    assert!(keeps(&p[i], &p[j], n, ACTIVE, TRIM_MARGIN));
                }
            }
        }
    }
}
