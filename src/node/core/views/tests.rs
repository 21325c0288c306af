use std::time::Instant;

use super::*;
use crate::membership::{MemberInfo, MembershipConfig, Rumor};

fn info(role: &str, caps: &[&str], capacity: u32, addresses: &[&str]) -> MemberInfo {
    MemberInfo {
        role: role.into(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        capacity,
        load: 1,
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
    }
}

fn conn(address: &str, relayed: bool, role: Option<&str>) -> Conn {
    Conn { address: address.parse().unwrap(), relayed, role: role.map(Into::into) }
}

fn membership() -> (Membership<PeerId>, Instant) {
    (Membership::new(PeerId::random(), 1, MembershipConfig::default()), Instant::now())
}

#[test]
fn role_from_advertisement_then_identify_then_unknown() {
    let (mut m, t0) = membership();
    let (advertised, identified, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
    m.on_advertisement(t0, advertised, 0, info("worker", &[], 1, &[]));
    let connections = HashMap::from([
        (advertised, conn("/ip4/10.0.0.1/tcp/1", false, Some("gateway"))),
        (identified, conn("/ip4/10.0.0.2/tcp/1", false, Some("gateway"))),
    ]);
    assert_eq!(role_of(&m, &connections, &advertised), "worker");
    assert_eq!(role_of(&m, &connections, &identified), "gateway");
    assert_eq!(role_of(&m, &connections, &stranger), "unknown");
}

#[test]
fn peers_sorted_by_role_with_their_connection() {
    let (mut m, t0) = membership();
    let (relayed, direct, gossiped) = (PeerId::random(), PeerId::random(), PeerId::random());
    m.on_advertisement(t0, relayed, 0, info("worker", &["gpu"], 4, &["/ip4/10.0.0.1/tcp/1"]));
    m.on_advertisement(t0, direct, 0, info("worker", &[], 2, &["/ip4/10.0.0.2/tcp/1"]));
    m.on_rumor(t0, Rumor { peer: gossiped, state: MemberState::Alive, incarnation: 3 });
    let connections = HashMap::from([
        (relayed, conn("/ip4/10.0.0.1/tcp/1", true, None)),
        (direct, conn("/ip4/10.9.9.9/tcp/1", false, None)),
    ]);
    let scores = HashMap::from([(direct, 1.5)]);
    let view = peers(&m, &connections, &scores);
    let mut workers = [relayed.to_string(), direct.to_string()];
    workers.sort();
    let order: Vec<&str> = view.iter().map(|p| p.peer_id.as_str()).collect();
    assert_eq!(order, [gossiped.to_string().as_str(), workers[0].as_str(), workers[1].as_str()], "by role, then id");
    let by_id = |p: PeerId| view.iter().find(|v| v.peer_id == p.to_string()).unwrap();
    let r = by_id(relayed);
    assert_eq!((r.connection.as_str(), r.addresses.clone()), ("relayed", vec!["/ip4/10.0.0.1/tcp/1".to_string()]));
    assert_eq!((r.capabilities.clone(), r.capacity, r.load, r.gossip_score), (vec!["gpu".to_string()], 4, 1, None));
    let d = by_id(direct);
    assert_eq!(d.connection, "direct");
    assert_eq!(d.addresses, ["/ip4/10.9.9.9/tcp/1", "/ip4/10.0.0.2/tcp/1"], "the connected address first");
    assert_eq!(d.gossip_score, Some(1.5));
    let g = by_id(gossiped);
    assert_eq!((g.connection.as_str(), g.role.as_str(), g.incarnation), ("none", "unknown", 3));
    assert!(g.addresses.is_empty() && g.rtt_ms.is_none());
}

#[test]
fn capabilities_count_alive_workers_and_this_node() {
    let (mut m, t0) = membership();
    let (alive, suspect) = (PeerId::random(), PeerId::random());
    m.on_advertisement(t0, alive, 0, info("worker", &["gpu", "compute"], 1, &[]));
    m.on_advertisement(t0, suspect, 0, info("worker", &["gpu"], 1, &[]));
    m.on_rumor(t0, Rumor { peer: suspect, state: MemberState::Suspect, incarnation: 0 });
    let local = LocalCapabilities { capabilities: vec!["compute".into()], capacity: 2, load: 1 };
    let view = capabilities(&m, m.local(), local);
    assert_eq!(view.local.capacity, 2);
    assert_eq!(view.cluster["gpu"].alive_workers, 1);
    assert_eq!(view.cluster["gpu"].workers.len(), 2, "suspects are listed, not counted");
    assert_eq!(view.cluster["compute"].alive_workers, 2);
    assert!(view.cluster["compute"].workers.contains(&m.local().to_string()));
}

#[test]
fn workers_are_alive_advertised_workers_that_may_execute() {
    let (mut m, t0) = membership();
    let (worker, zero, gateway, silent, suspect) =
        (PeerId::random(), PeerId::random(), PeerId::random(), PeerId::random(), PeerId::random());
    m.on_advertisement(t0, worker, 0, info("worker", &["gpu"], 4, &[]));
    m.on_advertisement(t0, zero, 0, info("worker", &[], 0, &[]));
    m.on_advertisement(t0, gateway, 0, info("gateway", &[], 4, &[]));
    m.on_connected(t0, silent);
    m.on_advertisement(t0, suspect, 0, info("worker", &[], 4, &[]));
    m.on_rumor(t0, Rumor { peer: suspect, state: MemberState::Suspect, incarnation: 0 });
    let me = WorkerView { id: m.local(), capacity: 3, capabilities: vec![] };
    let mut all = workers(&m, &[], Some(me.clone()));
    all.sort_by_key(|w| w.id);
    let mut expected = vec![(worker, 4), (zero, 1), (m.local(), 3)];
    expected.sort();
    assert_eq!(all.iter().map(|w| (w.id, w.capacity)).collect::<Vec<_>>(), expected, "capacity at least 1");
    let allowed = workers(&m, &[worker], Some(me));
    assert_eq!(allowed.iter().map(|w| w.id).collect::<Vec<_>>(), [worker], "allowed_workers excludes this node too");
    assert!(workers(&m, &[], None).iter().all(|w| w.id != m.local()), "not a worker itself");
}

#[test]
fn peer_label_counts_keep_labels_seen_before_at_zero() {
    let (m, _) = membership();
    let connections = HashMap::from([
        (PeerId::random(), conn("/ip4/10.0.0.1/tcp/1", true, Some("worker"))),
        (PeerId::random(), conn("/ip4/10.0.0.2/tcp/1", false, Some("worker"))),
        (PeerId::random(), conn("/ip4/10.0.0.3/tcp/1", false, Some("worker"))),
    ]);
    let labels = |role: &str, transport: &str| PeerLabels { role: role.into(), transport: transport.into() };
    let counts = peer_label_counts(&m, &connections, &[labels("gateway", "direct")]);
    assert_eq!(counts.len(), 3);
    assert_eq!(counts[&labels("worker", "direct")], 2);
    assert_eq!(counts[&labels("worker", "relayed")], 1);
    assert_eq!(counts[&labels("gateway", "direct")], 0);
}

#[test]
fn member_counts_in_fixed_order() {
    let (mut m, t0) = membership();
    m.on_connected(t0, PeerId::random());
    m.on_rumor(t0, Rumor { peer: PeerId::random(), state: MemberState::Dead, incarnation: 0 });
    assert_eq!(member_counts_by_state(&m), [("alive", 1), ("suspect", 0), ("dead", 1), ("left", 0)]);
}
