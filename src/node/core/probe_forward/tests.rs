use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::*;
use crate::membership::{MembershipConfig, Reach, Rumor};

const PING_INTERVAL: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// 2 * ping interval + probe timeout.
const WINDOW: Duration = Duration::from_secs(3);

fn setup() -> (ProbeForwarder, Membership<PeerId>, Instant) {
    let membership = Membership::new(PeerId::random(), 1, MembershipConfig::default());
    (ProbeForwarder::new(PING_INTERVAL, PROBE_TIMEOUT), membership, Instant::now())
}

const UP: Reach = Reach::Reachable;
const DOWN: Reach = Reach::Unreachable;
const LATE: Reach = Reach::Unknown;

fn answer(id: u64, target: PeerId, reach: Reach) -> ProbeAnswer {
    ProbeAnswer { id: InboundId(id), target, reach }
}

fn respond(id: u64, target: PeerId, reach: Reach) -> Option<ProbeEffect> {
    Some(ProbeEffect::Respond(answer(id, target, reach)))
}

/// A member known only through gossip: neither connected nor heard first-hand.
fn gossiped(m: &mut Membership<PeerId>, now: Instant) -> PeerId {
    let peer = PeerId::random();
    m.on_rumor(now, Rumor { peer, state: MemberState::Alive, incarnation: 0 });
    peer
}

#[test]
fn an_unreadable_target_is_unreachable_and_named_as_us() {
    let (mut p, m, t0) = setup();
    assert_eq!(p.on_request(t0, InboundId(1), "not a peer id", &m), respond(1, m.local(), DOWN));
}

#[test]
fn asked_about_ourselves_we_answer_for_ourselves() {
    let (mut p, mut m, t0) = setup();
    let me = m.local().to_string();
    assert_eq!(p.on_request(t0, InboundId(1), &me, &m), respond(1, m.local(), UP));
    m.leave(t0);
    assert_eq!(p.on_request(t0, InboundId(2), &me, &m), respond(2, m.local(), DOWN), "left: not alive");
}

#[test]
fn vouch_only_while_connected_and_heard_within_the_window() {
    let (mut p, mut m, t0) = setup();
    let peer = PeerId::random();
    m.on_connected(t0, peer);
    let target = peer.to_string();
    assert_eq!(p.on_request(t0 + WINDOW, InboundId(1), &target, &m), respond(1, peer, UP));
    assert_eq!(
        p.on_request(t0 + WINDOW + Duration::from_millis(1), InboundId(2), &target, &m),
        Some(ProbeEffect::Ping(peer)),
        "evidence too old: ping it instead"
    );
}

#[test]
fn fresh_evidence_without_a_connection_is_not_enough() {
    let (mut p, mut m, t0) = setup();
    let peer = PeerId::random();
    m.on_connected(t0, peer);
    m.on_disconnected(t0, peer);
    assert_eq!(p.on_request(t0, InboundId(1), &peer.to_string(), &m), Some(ProbeEffect::Ping(peer)));
}

#[test]
fn requests_about_one_member_share_one_ping_and_its_outcome() {
    let (mut p, mut m, t0) = setup();
    let peer = gossiped(&mut m, t0);
    let target = peer.to_string();
    assert_eq!(p.on_request(t0, InboundId(1), &target, &m), Some(ProbeEffect::Ping(peer)));
    assert_eq!(p.on_request(t0, InboundId(2), &target, &m), None, "the ping is under way");
    let (answers, verdict) = p.ping_ended(peer, UP);
    assert_eq!(answers, [answer(1, peer, UP), answer(2, peer, UP)]);
    assert_eq!(verdict, PingVerdict::Answered);
    assert_eq!(p.on_request(t0, InboundId(3), &target, &m), Some(ProbeEffect::Ping(peer)), "a new round");
}

#[test]
fn a_departed_member_is_unreachable_and_one_unknown_here_is_no_evidence() {
    let (mut p, mut m, t0) = setup();
    let stranger = PeerId::random();
    assert_eq!(p.on_request(t0, InboundId(1), &stranger.to_string(), &m), respond(1, stranger, LATE));
    let departed = gossiped(&mut m, t0);
    m.on_rumor(t0, Rumor { peer: departed, state: MemberState::Left, incarnation: 0 });
    assert_eq!(p.on_request(t0, InboundId(2), &departed.to_string(), &m), respond(2, departed, DOWN));
}

#[test]
fn at_most_max_forwarded_probes_wait_at_once() {
    let (mut p, mut m, t0) = setup();
    let peer = gossiped(&mut m, t0);
    let target = peer.to_string();
    for id in 0..MAX_FORWARDED_PROBES as u64 {
        assert!(!matches!(p.on_request(t0, InboundId(id), &target, &m), Some(ProbeEffect::Respond(_))));
    }
    let over = MAX_FORWARDED_PROBES as u64;
    // A helper too busy to ping says so: "don't know", not "down".
    assert_eq!(p.on_request(t0, InboundId(over), &target, &m), respond(over, peer, LATE));
    let other = gossiped(&mut m, t0);
    assert_eq!(p.on_request(t0, InboundId(over + 1), &other.to_string(), &m), respond(over + 1, other, LATE));
    assert_eq!(p.answers(peer, DOWN).len(), MAX_FORWARDED_PROBES);
    assert_eq!(p.on_request(t0, InboundId(0), &other.to_string(), &m), Some(ProbeEffect::Ping(other)), "room again");
}

#[test]
fn only_our_own_failed_pings_count_as_failures() {
    let (mut p, _, _) = setup();
    let (ours, theirs) = (PeerId::random(), PeerId::random());
    p.own_ping(ours);
    assert_eq!(p.ping_ended(theirs, DOWN), (Vec::new(), PingVerdict::NotOurs));
    assert_eq!(p.ping_ended(ours, DOWN), (Vec::new(), PingVerdict::Failed(DOWN)));
    assert_eq!(p.ping_ended(ours, DOWN).1, PingVerdict::NotOurs, "counted once");
    p.own_ping(ours);
    assert_eq!(p.ping_ended(ours, UP).1, PingVerdict::Answered);
    assert_eq!(p.ping_ended(ours, DOWN).1, PingVerdict::NotOurs, "an answer ends it too");
}

#[test]
fn a_failed_ping_answers_the_waiting_unreachable() {
    let (mut p, mut m, t0) = setup();
    let peer = gossiped(&mut m, t0);
    p.own_ping(peer);
    p.on_request(t0, InboundId(1), &peer.to_string(), &m);
    let (answers, verdict) = p.ping_ended(peer, DOWN);
    assert_eq!(answers, [answer(1, peer, DOWN)]);
    assert_eq!(verdict, PingVerdict::Failed(DOWN));
}

#[test]
fn a_timed_out_ping_answers_the_waiting_that_it_timed_out_not_that_it_failed() {
    let (mut p, mut m, t0) = setup();
    let peer = gossiped(&mut m, t0);
    p.own_ping(peer);
    p.on_request(t0, InboundId(1), &peer.to_string(), &m);
    let (answers, verdict) = p.ping_ended(peer, LATE);
    assert_eq!(answers, [answer(1, peer, LATE)], "a helper that was only late says so");
    assert_eq!(verdict, PingVerdict::Failed(LATE));
}
