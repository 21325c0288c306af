use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use super::*;
use crate::membership::{MemberInfo, MembershipConfig, Rumor};

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// An advertiser whose first advertisement (load 0) went out at `t0`, to nobody.
fn advertised_at_start() -> (Advertiser, Instant) {
    let t0 = Instant::now();
    let mut ad = Advertiser::new(t0, 0);
    assert!(ad.take_due(t0, 0));
    ad.advertised(t0, 0);
    (ad, t0)
}

fn addr(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

#[test]
fn first_advertisement_goes_out_at_once_and_only_once() {
    let t0 = Instant::now();
    let mut ad = Advertiser::new(t0, 0);
    assert!(ad.take_due(t0, 0));
    ad.advertised(t0, 0);
    assert!(!ad.take_due(t0, 0), "taken");
    assert!(!ad.take_due(t0 + Duration::from_secs(60), 0), "nothing changed: the heartbeats refresh it");
}

#[test]
fn load_change_is_batched_to_the_minimum_interval() {
    let (mut ad, t0) = advertised_at_start();
    assert!(!ad.take_due(t0 + ms(100), 3));
    assert!(!ad.take_due(t0 + AD_MIN_INTERVAL - ms(1), 3));
    assert!(ad.take_due(t0 + AD_MIN_INTERVAL, 3));
    ad.advertised(t0 + AD_MIN_INTERVAL, 3);
    assert!(!ad.take_due(t0 + AD_MIN_INTERVAL * 3, 3), "the load advertised is the load now");
}

#[test]
fn a_finished_task_advertises_after_the_minimum_interval() {
    let (mut ad, t0) = advertised_at_start();
    let t1 = t0 + Duration::from_secs(5);
    ad.task_finished(t1);
    assert!(!ad.take_due(t1 + AD_MIN_INTERVAL - ms(1), 0));
    assert!(ad.take_due(t1 + AD_MIN_INTERVAL, 0));
}

#[test]
fn an_earlier_due_advertisement_is_not_postponed() {
    let (mut ad, t0) = advertised_at_start();
    let t1 = t0 + Duration::from_secs(5);
    ad.content_changed(t1);
    ad.task_finished(t1);
    assert!(ad.take_due(t1, 0), "still due at t1, not t1 + AD_MIN_INTERVAL");
}

#[test]
fn every_fifth_heartbeat_refreshes_the_advertisement() {
    let (mut ad, t0) = advertised_at_start();
    for i in 1..AD_REFRESH_HEARTBEATS {
        let t = t0 + Duration::from_secs(i);
        ad.heartbeat_sent(t);
        assert!(!ad.take_due(t, 0), "heartbeat {i}");
    }
    let t = t0 + Duration::from_secs(AD_REFRESH_HEARTBEATS);
    ad.heartbeat_sent(t);
    assert!(ad.take_due(t, 0));
}

#[test]
fn the_first_subscriber_gets_an_advertisement_soon() {
    // The first advertisement reached nobody: no gap after it.
    let (mut ad, t0) = advertised_at_start();
    ad.on_subscribed(t0 + ms(10), false);
    assert!(!ad.take_due(t0 + ms(59), 0));
    assert!(ad.take_due(t0 + ms(60), 0));
}

#[test]
fn newcomers_share_one_advertisement_per_gap() {
    let (mut ad, t0) = advertised_at_start();
    ad.on_subscribed(t0, false);
    assert!(ad.take_due(t0 + ms(50), 0));
    ad.advertised(t0 + ms(50), 0);
    // That one had an audience: the next newcomer waits for the gap.
    ad.on_subscribed(t0 + ms(100), false);
    ad.on_subscribed(t0 + ms(200), false);
    assert!(!ad.take_due(t0 + ms(50) + SUBSCRIBE_AD_GAP - ms(1), 0));
    assert!(ad.take_due(t0 + ms(50) + SUBSCRIBE_AD_GAP, 0));
    assert!(!ad.take_due(t0 + ms(50) + SUBSCRIBE_AD_GAP, 0), "one for both");
}

#[test]
fn a_subscriber_brings_a_later_advertisement_forward() {
    let (mut ad, t0) = advertised_at_start();
    ad.task_finished(t0);
    ad.on_subscribed(t0, false);
    assert!(ad.take_due(t0 + ms(50), 0), "not at t0 + AD_MIN_INTERVAL");
}

#[test]
fn a_subscriber_that_has_our_advertisement_is_not_sent_another_but_counts_as_audience() {
    let (mut ad, t0) = advertised_at_start();
    ad.on_subscribed(t0 + ms(10), true);
    assert!(!ad.take_due(t0 + Duration::from_secs(10), 0));
    // The next advertisement reaches that subscriber, so a newcomer then waits for the gap.
    let t1 = t0 + Duration::from_secs(20);
    ad.content_changed(t1);
    assert!(ad.take_due(t1, 0));
    ad.advertised(t1, 0);
    ad.on_subscribed(t1, false);
    assert!(!ad.take_due(t1 + ms(50), 0));
    assert!(ad.take_due(t1 + SUBSCRIBE_AD_GAP, 0));
}

#[test]
fn gossip_seq_counts_up_from_the_start_time() {
    let mut ad = Advertiser::new(Instant::now(), 1_700_000_000_000);
    assert_eq!(ad.next_seq(), 1_700_000_000_001);
    assert_eq!(ad.next_seq(), 1_700_000_000_002);
    let mut wrap = Advertiser::new(Instant::now(), u64::MAX);
    assert_eq!(wrap.next_seq(), 0, "wraps, never panics");
}

#[test]
fn only_alive_advertising_members_of_a_partial_view_have_our_advertisement() {
    let t0 = Instant::now();
    let mut m = Membership::new(PeerId::random(), 1, MembershipConfig::default());
    let (stranger, connected, advertising) = (PeerId::random(), PeerId::random(), PeerId::random());
    m.on_connected(t0, connected);
    m.on_advertisement(t0, advertising, 0, MemberInfo::default());
    assert!(!has_our_advertisement(true, &m, &stranger));
    assert!(!has_our_advertisement(true, &m, &connected), "never advertised: it may be new");
    assert!(has_our_advertisement(true, &m, &advertising));
    assert!(!has_our_advertisement(false, &m, &advertising), "the whole cluster is in view: always advertise");
    m.on_rumor(t0, Rumor { peer: advertising, state: MemberState::Suspect, incarnation: 0 });
    assert!(!has_our_advertisement(true, &m, &advertising), "not alive");
}

#[test]
fn advertised_addresses_put_external_first_and_drop_undialable_ones() {
    let external = [addr("/dns4/node.example/tcp/4001")];
    let listening = [
        addr("/ip4/0.0.0.0/tcp/4001"),
        addr("/ip4/127.0.0.1/tcp/4001"),
        addr("/ip4/192.168.1.5/tcp/4001"),
        addr("/ip4/203.0.113.9/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"),
    ];
    let circuit = listening[3].to_string();
    assert_eq!(
        advertised_addresses(&external, &listening, false, NatStatus::Public),
        ["/dns4/node.example/tcp/4001", "/ip4/192.168.1.5/tcp/4001", circuit.as_str()]
    );
    assert_eq!(
        advertised_addresses(&[], &listening, true, NatStatus::Unknown),
        ["/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.5/tcp/4001", circuit.as_str()],
        "loopback when listening on loopback"
    );
    assert_eq!(
        advertised_addresses(&external, &listening, true, NatStatus::Private),
        ["/dns4/node.example/tcp/4001", circuit.as_str()],
        "behind NAT: relay circuits only"
    );
}

#[test]
fn advertised_addresses_are_at_most_sixteen() {
    let listening: Vec<Multiaddr> = (0..20).map(|i| addr(&format!("/ip4/10.0.0.{i}/tcp/4001"))).collect();
    let addresses = advertised_addresses(&[], &listening, false, NatStatus::Public);
    assert_eq!(addresses.len(), 16);
    assert_eq!(addresses[0], "/ip4/10.0.0.0/tcp/4001");
}

#[test]
fn heartbeat_speaks_for_this_node_with_its_rumors() {
    let t0 = Instant::now();
    let local = PeerId::random();
    let mut m = Membership::new(local, 42, MembershipConfig::default());
    let suspect = PeerId::random();
    m.on_connected(t0, suspect);
    m.on_rumor(t0, Rumor { peer: suspect, state: MemberState::Dead, incarnation: 0 });
    let GossipMessage::HeartBeat(hb) = heartbeat(&m, 3, 7) else { panic!("not a heartbeat") };
    assert_eq!((hb.v, hb.node, hb.incarnation, hb.state), (WIRE_VERSION, local.to_string(), 42, MemberState::Alive));
    assert_eq!((hb.load, hb.seq), (3, 7));
    assert_eq!(hb.rumors.len(), 1);
    assert_eq!((hb.rumors[0].peer.clone(), hb.rumors[0].state), (suspect.to_string(), MemberState::Dead));
}

#[test]
fn advertisement_offers_this_node_where_it_can_be_reached() {
    let local = PeerId::random();
    let m = Membership::new(local, 42, MembershipConfig::default());
    let node = crate::config::NodeConfig {
        listen_address: [127, 0, 0, 1].into(),
        external_addresses: vec![addr("/dns4/node.example/tcp/4001")],
        ..crate::config::NodeConfig::default()
    };
    let listening = [addr("/ip4/127.0.0.1/tcp/4001")];
    let GossipMessage::CapabilityAdvertisement(ad) = advertisement(&m, &node, &listening, NatStatus::Public, 4, 1, 9)
    else {
        panic!("not an advertisement")
    };
    assert_eq!((ad.v, ad.node, ad.incarnation), (WIRE_VERSION, local.to_string(), 42));
    assert_eq!((ad.role, ad.capabilities), (node.role.to_string(), node.capabilities.clone()));
    assert_eq!((ad.capacity, ad.load, ad.seq), (4, 1, 9));
    assert_eq!(ad.addresses, ["/dns4/node.example/tcp/4001", "/ip4/127.0.0.1/tcp/4001"], "loopback: listening on it");
}

#[test]
fn heartbeats_keep_their_interval_while_the_cluster_fits_in_the_view() {
    let s = Duration::from_secs;
    assert_eq!(heartbeat_interval(s(1), 21, false), s(1));
    assert_eq!(heartbeat_interval(s(30), 500, false), s(30), "never decided by size alone");
}

#[test]
fn a_partial_view_spends_a_cluster_wide_heartbeat_budget() {
    let s = Duration::from_secs;
    // The shipped worker default is unchanged up to 60 members.
    assert_eq!(heartbeat_interval(s(30), 60, true), s(30));
    // 100 members at 10 s would be 10 heartbeats a second; the budget makes them 2.
    assert_eq!(heartbeat_interval(s(10), 100, true), s(50));
    assert_eq!(heartbeat_interval(s(1), 25, true), Duration::from_millis(12_500));
    assert_eq!(heartbeat_interval(s(30), 10_000, true), s(5_000));
    // The cluster-wide rate the budget promises.
    for members in [22, 100, 1_000, 10_000] {
        let per_sec = members as f64 / heartbeat_interval(s(1), members, true).as_secs_f64();
        assert!(per_sec <= f64::from(IDLE_HEARTBEATS_PER_SEC) + 1e-9, "{members} members: {per_sec}/s");
    }
}
