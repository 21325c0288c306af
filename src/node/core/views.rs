//! Read-only views of what the core knows, built from membership and connections: the API's
//! peers and capabilities, the labels of the connected-peers metric, and placement's workers.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;

use super::Conn;
use crate::membership::{MemberState, Membership};
use crate::metrics::PeerLabels;
use crate::node::views::{CapabilitiesView, ClusterCapability, LocalCapabilities, PeerView};
use crate::scheduler::WorkerView;

/// A peer's role: from its advertisement, else from Identify, else unknown.
pub(super) fn role_of(membership: &Membership<PeerId>, connections: &HashMap<PeerId, Conn>, peer: &PeerId) -> String {
    membership
        .get(peer)
        .and_then(|m| m.info.as_ref())
        .map(|i| i.role.clone())
        .or_else(|| connections.get(peer).and_then(|c| c.role.clone()))
        .unwrap_or_else(|| "unknown".into())
}

pub(super) fn member_counts_by_state(membership: &Membership<PeerId>) -> [(&'static str, usize); 4] {
    [
        ("alive", membership.count(MemberState::Alive)),
        ("suspect", membership.count(MemberState::Suspect)),
        ("dead", membership.count(MemberState::Dead)),
        ("left", membership.count(MemberState::Left)),
    ]
}

pub(super) fn peers(
    membership: &Membership<PeerId>,
    connections: &HashMap<PeerId, Conn>,
    gossip_scores: &HashMap<PeerId, f64>,
) -> Vec<PeerView> {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let unix_ms = |at: Instant| {
        let then = wall.checked_sub(now.saturating_duration_since(at))?;
        u64::try_from(then.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
    };
    let mut peers: Vec<PeerView> = membership
        .members()
        .map(|m| {
            let conn = connections.get(&m.id);
            let info = m.info.as_ref();
            let mut addresses: Vec<String> = info.map(|i| i.addresses.clone()).unwrap_or_default();
            if let Some(c) = conn {
                let a = c.address.to_string();
                if !addresses.contains(&a) {
                    addresses.insert(0, a);
                }
            }
            PeerView {
                peer_id: m.id.to_string(),
                role: role_of(membership, connections, &m.id),
                state: m.state.as_str().into(),
                incarnation: m.incarnation,
                addresses,
                connection: match conn {
                    Some(c) if c.relayed => "relayed",
                    Some(_) => "direct",
                    None => "none",
                }
                .into(),
                rtt_ms: m.rtt.map(|d| d.as_secs_f64() * 1000.0),
                capabilities: info.map(|i| i.capabilities.clone()).unwrap_or_default(),
                load: info.map_or(0, |i| i.load),
                capacity: info.map_or(0, |i| i.capacity),
                gossip_score: gossip_scores.get(&m.id).copied(),
                advertised_at_ms: m.advertised.and_then(unix_ms),
            }
        })
        .collect();
    peers.sort_by(|a, b| (a.role.as_str(), a.peer_id.as_str()).cmp(&(b.role.as_str(), b.peer_id.as_str())));
    peers
}

/// Each capability in the cluster and who offers it, this node (`local`) included.
pub(super) fn capabilities(
    membership: &Membership<PeerId>,
    local_peer: PeerId,
    local: LocalCapabilities,
) -> CapabilitiesView {
    let mut cluster: BTreeMap<String, ClusterCapability> = BTreeMap::new();
    let mut add = |cap: &str, peer: String, alive: bool| {
        let entry =
            cluster.entry(cap.to_string()).or_insert(ClusterCapability { alive_workers: 0, workers: Vec::new() });
        if alive {
            entry.alive_workers += 1;
        }
        entry.workers.push(peer);
    };
    for m in membership.members() {
        if let Some(info) = &m.info {
            for cap in &info.capabilities {
                add(cap, m.id.to_string(), m.state == MemberState::Alive);
            }
        }
    }
    for cap in &local.capabilities {
        add(cap, local_peer.to_string(), true);
    }
    CapabilitiesView { local, cluster }
}

/// Connected peers by role and transport, with a zero for each label set seen before so
/// that a gauge falls back to 0 instead of keeping its last count.
pub(super) fn peer_label_counts(
    membership: &Membership<PeerId>,
    connections: &HashMap<PeerId, Conn>,
    seen: &[PeerLabels],
) -> HashMap<PeerLabels, i64> {
    let mut counts: HashMap<PeerLabels, i64> = seen.iter().map(|l| (l.clone(), 0)).collect();
    for (peer, conn) in connections {
        let role = role_of(membership, connections, peer);
        let labels = PeerLabels { role, transport: if conn.relayed { "relayed" } else { "direct" }.into() };
        *counts.entry(labels).or_default() += 1;
    }
    counts
}

/// `security.allowed_workers`: empty lets any worker execute this gateway's tasks.
fn may_execute(allowed: &[PeerId], peer: &PeerId) -> bool {
    allowed.is_empty() || allowed.contains(peer)
}

/// Alive workers as placement sees them (this node included when it is one: `local`).
pub(super) fn workers(
    membership: &Membership<PeerId>,
    allowed: &[PeerId],
    local: Option<WorkerView>,
) -> Vec<WorkerView> {
    let mut list: Vec<WorkerView> = membership
        .members()
        .filter(|m| m.state == MemberState::Alive && may_execute(allowed, &m.id))
        .filter_map(|m| {
            let info = m.info.as_ref()?;
            (info.role == "worker").then(|| WorkerView {
                id: m.id,
                capacity: info.capacity.max(1),
                capabilities: info.capabilities.clone(),
            })
        })
        .collect();
    if let Some(me) = local.filter(|me| may_execute(allowed, &me.id)) {
        list.push(me);
    }
    list
}

#[cfg(test)]
mod tests;
