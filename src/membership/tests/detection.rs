//! Failure detection: probes, suspicion and death, and what ends them.

use super::*;

#[test]
fn disconnect_probe_suspect_dead_removed() {
    let (mut m, t0) = setup();
    (1..=5).for_each(|p| drop(m.on_connected(t0, p)));
    m.on_disconnected(t0, 5); // a disconnected helper ranks last
    m.on_probe_result(t0, 5, Reach::Reachable);
    m.on_ping(t0 + secs(1), 4, ms(20)); // the freshest helper ranks first
    m.on_heartbeat(t0, 6, 0, Left); // only alive members help
    let t = t0 + secs(2);
    assert_eq!(m.on_disconnected(t, 1), probe(1, &[4, 2, 3]));
    assert!(!m.get(&1).unwrap().connected);
    assert!(m.on_ping_failed(t, 1, Reach::Unreachable).is_empty(), "one probe per target");
    assert!(m.on_request_failed(t, 1).is_empty());
    // An indirect probe has two probe timeouts: a helper pings with its own.
    assert!(m.tick(t + ms(1999)).is_empty());
    // Nobody answered in that window: the lateness may be ours (Lifeguard's missed nack). Our
    // local health rises and the probe gets one more window, of two stretched timeouts.
    assert!(m.tick(t + secs(2)).is_empty());
    assert_eq!(m.local_health(), 1);
    assert!(m.tick(t + ms(5999)).is_empty());
    let t = t + secs(6);
    let suspected = vec![changed(1, Some(Alive), Suspect), announce(1, Suspect, 0)];
    assert_eq!(m.tick(t), suspected);
    assert_eq!(m.active_rumors(), [rumor(1, Suspect, 0)]);
    assert_eq!(m.local_health(), 1, "one probe raises it once");
    // The suspicion lasts the stretched suspect timeout too.
    assert!(m.tick(t + ms(5999)).is_empty());
    let t = t + secs(6);
    assert_eq!(m.tick(t), [changed(1, Some(Suspect), Dead), announce(1, Dead, 0)]);
    assert!(m.on_ping_failed(t, 1, Reach::Unreachable).is_empty(), "the dead are not probed");
    m.tick(t + secs(59));
    assert_eq!(state(&m, 1), Some(Dead));
    assert!(m.tick(t + secs(60)).is_empty());
    assert_eq!(state(&m, 1), None);
}

#[test]
fn positive_answer_prevents_suspicion() {
    let (mut m, t0) = setup();
    m.on_connected(t0, 1);
    m.on_connected(t0, 2);
    assert_eq!(m.on_disconnected(t0, 1), probe(1, &[2]));
    assert!(m.on_probe_result(t0 + ms(300), 1, Reach::Reachable).is_empty());
    assert!(m.on_probe_result(t0 + ms(400), 1, Reach::Unreachable).is_empty(), "late");
    assert!(m.tick(t0 + secs(5)).is_empty());
    // A reconnection (the direct redial) ends a probe as well.
    assert_eq!(m.on_ping_failed(t0 + secs(6), 2, Reach::Unreachable), probe(2, &[1]));
    m.on_connected(t0 + secs(6), 2);
    assert!(m.tick(t0 + secs(8)).is_empty());
    assert_eq!((state(&m, 1), state(&m, 2)), (Some(Alive), Some(Alive)));
}

#[test]
fn all_negative_answers_suspect_before_timeout() {
    let (mut m, t0) = setup();
    (1..=3).for_each(|p| drop(m.on_connected(t0, p)));
    assert_eq!(m.on_ping_failed(t0, 1, Reach::Unreachable), probe(1, &[2, 3]));
    // Both helpers and the direct redial must fail.
    assert!(m.on_probe_result(t0, 1, Reach::Unreachable).is_empty());
    assert!(m.on_probe_result(t0, 1, Reach::Unreachable).is_empty());
    let third = m.on_probe_result(t0, 1, Reach::Unreachable);
    assert_eq!(third, [changed(1, Some(Alive), Suspect), announce(1, Suspect, 0)]);
    assert!(m.on_probe_result(t0, 3, Reach::Unreachable).is_empty(), "no probe running");
    assert_eq!(state(&m, 3), Some(Alive));
}

#[test]
fn ping_clears_suspicion_at_same_incarnation() {
    let (mut m, t0) = setup();
    m.on_connected(t0, 1);
    m.on_rumor(t0, rumor(1, Suspect, 0));
    let t1 = t0 + secs(1);
    assert_eq!(m.on_ping(t1, 1, ms(12)), [changed(1, Some(Suspect), Alive)]);
    let p = m.get(&1).unwrap();
    assert_eq!((p.incarnation, p.rtt, p.last_heard), (0, Some(ms(12)), t1));
    assert!(m.tick(t0 + secs(10)).is_empty());
    assert_eq!(state(&m, 1), Some(Alive));
}

#[test]
fn silence_timeout_probes_unconnected_members() {
    let (mut m, t0) = setup();
    m.on_heartbeat(t0, 1, 0, Alive);
    m.on_connected(t0, 2); // connected, hence never silent
    assert!(m.tick(t0 + secs(90) - ms(1)).is_empty());
    let t = t0 + secs(90);
    assert_eq!(m.tick(t), probe(1, &[2]));
    assert!(m.tick(t + ms(500)).is_empty(), "probe already running");
    m.on_probe_result(t + ms(500), 1, Reach::Reachable);
    assert!(m.tick(t + secs(2)).is_empty(), "neither suspected nor re-probed");
    assert_eq!(m.tick(t + secs(91)), probe(1, &[2]));
    m.on_probe_result(t + secs(91), 1, Reach::Reachable);
    m.on_heartbeat(t + secs(150), 1, 0, Alive);
    assert!(m.tick(t + secs(181)).is_empty(), "the heartbeat reset the clock");
    assert_eq!(state(&m, 1), Some(Alive));
}

/// A close both ends meant (outside the active view) starts no probe; the member is then
/// unconnected, so the silence timeout vouches for it through its heartbeats instead.
#[test]
fn parting_is_not_failing() {
    let (mut m, t0) = setup();
    m.on_connected(t0, 1);
    m.on_connected(t0, 2);
    m.on_parted(1);
    let p = m.get(&1).unwrap();
    assert_eq!((p.state, p.connected), (Alive, false));
    assert!(m.tick(t0 + secs(1)).is_empty(), "no probe for a parting");
    m.on_heartbeat(t0 + secs(60), 1, 0, Alive);
    assert!(m.tick(t0 + secs(149)).is_empty(), "heard through gossip");
    assert_eq!(m.tick(t0 + secs(150)), probe(1, &[2]), "silent for the timeout: probed");
}

#[test]
fn failed_ping_probes_and_counts_as_the_direct_answer() {
    let (mut m, t0) = setup();
    (1..=3).for_each(|p| drop(m.on_connected(t0, p)));
    // The period's ping fails: probe, pinging it once more and asking two helpers.
    assert_eq!(m.on_ping_failed(t0, 1, Reach::Unreachable), probe(1, &[2, 3]));
    assert!(m.on_probe_result(t0, 1, Reach::Unreachable).is_empty());
    assert!(m.on_probe_result(t0, 1, Reach::Unreachable).is_empty());
    // The second direct ping is the last of the three answers.
    assert_eq!(
        m.on_ping_failed(t0, 1, Reach::Unreachable),
        [changed(1, Some(Alive), Suspect), announce(1, Suspect, 0)]
    );
    // A task failing is a reason to probe, not an answer to a running probe.
    assert_eq!(m.on_ping_failed(t0, 2, Reach::Unreachable), probe(2, &[3]));
    assert!(m.on_request_failed(t0, 2).is_empty());
    assert!(m.on_probe_result(t0, 2, Reach::Unreachable).is_empty());
    assert_eq!(state(&m, 2), Some(Alive), "one of two answers still missing");
    // A successful direct ping ends the probe.
    assert!(m.on_ping(t0 + ms(5), 2, ms(5)).is_empty());
    assert!(m.tick(t0 + secs(2)).is_empty());
    assert_eq!(state(&m, 2), Some(Alive));
}

#[test]
fn crash_seen_by_all_is_dead_after_one_suspect_timeout() {
    // The scale harness's kill: the connection closes, the direct ping and every helper's
    // own ping fail at once, so the member is suspect at once and dead one timeout later.
    let (mut m, t0) = setup();
    (1..=4).for_each(|p| drop(m.on_connected(t0, p)));
    assert_eq!(m.on_disconnected(t0, 1), probe(1, &[2, 3, 4]));
    for _ in 0..3 {
        assert!(m.on_probe_result(t0 + ms(2), 1, Reach::Unreachable).is_empty());
    }
    let t = t0 + ms(3);
    assert_eq!(m.on_ping_failed(t, 1, Reach::Unreachable), [changed(1, Some(Alive), Suspect), announce(1, Suspect, 0)]);
    assert!(m.tick(t + secs(3) - ms(1)).is_empty());
    assert_eq!(m.tick(t + secs(3)), [changed(1, Some(Suspect), Dead), announce(1, Dead, 0)]);
}

/// A helper asked when our ping missed pings the member with its own probe timeout (and may
/// dial it first), so its "reachable" comes about one timeout after the probe began. Before
/// the indirect window was two timeouts, the probe had already failed by then: a member that
/// was merely slow to answer us was suspected although a helper reached it.
#[test]
fn a_helpers_late_positive_answer_inside_the_indirect_window_prevents_suspicion() {
    let (mut m, t0) = setup();
    (1..=4).for_each(|p| drop(m.on_connected(t0, p)));
    m.ping_sent(t0, 1);
    assert_eq!(m.tick(t0 + secs(1)), [Action::PingTimedOut { target: 1 }]);
    assert_eq!(m.on_ping_failed(t0 + secs(1), 1, Reach::Unreachable), probe(1, &[2, 3, 4]));
    // The helper's own ping took its full timeout plus a dial.
    assert!(m.tick(t0 + ms(2500)).is_empty(), "still inside the indirect window");
    assert!(m.on_probe_result(t0 + ms(2600), 1, Reach::Reachable).is_empty());
    assert!(m.tick(t0 + secs(5)).is_empty());
    assert_eq!(state(&m, 1), Some(Alive));
    // The helpers' negative answers and our own failed ping (the probe's direct ping) end a
    // probe at once: a crash is not found any later for the longer window.
    assert_eq!(m.on_ping_failed(t0 + secs(6), 2, Reach::Unreachable), probe(2, &[1, 3, 4]));
    for _ in 0..3 {
        m.on_probe_result(t0 + ms(6100), 2, Reach::Unreachable);
    }
    assert_eq!(state(&m, 2), Some(Alive));
    m.on_ping_failed(t0 + ms(6200), 2, Reach::Unreachable);
    assert_eq!(state(&m, 2), Some(Suspect));
}

#[test]
fn a_probe_asks_the_members_neighbours_in_the_view_before_fresher_helpers() {
    let (mut m, t0) = setup();
    // A view linking odd members to even ones only.
    m.set_overlay(Overlay { active: 2, links: |a: &u32, b: &u32, _, _| (a + b) % 2 == 1 });
    m.on_connected(t0, 1);
    (2..=7).for_each(|p| drop(m.on_ping(t0 + ms(u64::from(p)), p, ms(1))));
    // 7 and 5 were heard last, but only 2, 4 and 6 are connected to 1: they need not dial it.
    assert_eq!(m.on_ping_failed(t0 + secs(1), 1, Reach::Unreachable), probe(1, &[6, 4, 2]));
    // A neighbour we are not connected to ranks after the helpers we are connected to.
    m.on_parted(4);
    m.on_parted(6);
    assert_eq!(m.on_ping_failed(t0 + secs(1), 3, Reach::Unreachable), probe(3, &[2, 7, 5]));
}

/// A ping that timed out (ours or a helper's) is an answer, Lifeguard's nack: the asked party is
/// not the slow one. But it is no evidence that the member is down, as a failed ping (a closed
/// connection, a refused dial) is: a busy machine times out as well as a dead member. Only
/// failures end a probe early; timed-out answers leave it to the window, in which a late
/// "reachable" still clears the member.
#[test]
fn pings_that_timed_out_are_no_evidence_before_the_window_ends() {
    let (mut m, t0) = setup();
    (1..=3).for_each(|p| drop(m.on_connected(t0, p)));
    assert_eq!(m.on_ping_failed(t0, 2, Reach::Unknown), probe(2, &[1, 3]));
    assert!(m.on_ping_failed(t0 + secs(1), 2, Reach::Unknown).is_empty());
    assert!(m.on_probe_result(t0 + secs(1), 2, Reach::Unknown).is_empty());
    assert!(m.on_probe_result(t0 + secs(1), 2, Reach::Unknown).is_empty());
    assert_eq!(state(&m, 2), Some(Alive), "three failed pings suspect at once; three timed-out ones do not");
    assert!(m.tick(t0 + ms(1999)).is_empty());
    // Every party answered in time, so the lateness is not ours: no second window, and our
    // local health stays.
    assert_eq!(m.tick(t0 + secs(2)), [changed(2, Some(Alive), Suspect), announce(2, Suspect, 0)]);
    assert_eq!(m.local_health(), 0);

    let t = t0 + secs(3);
    assert_eq!(m.on_ping_failed(t, 3, Reach::Unknown), probe(3, &[1]));
    assert!(m.on_ping_failed(t + secs(1), 3, Reach::Unknown).is_empty());
    assert!(m.on_probe_result(t + secs(1), 3, Reach::Unknown).is_empty());
    assert!(m.on_probe_result(t + ms(1500), 3, Reach::Reachable).is_empty(), "slow, not down");
    assert!(m.tick(t + secs(2)).is_empty());
    assert_eq!(state(&m, 3), Some(Alive));
}

/// Our own direct ping is one party of the probe, whatever reports its end (membership's
/// deadline, the transport's own timeout, libp2p's ping): counted twice, it made a probe look
/// answered by everyone while a helper was still silent.
#[test]
fn our_own_ping_is_one_answer_however_often_its_end_is_reported() {
    let (mut m, t0) = setup();
    (1..=3).for_each(|p| drop(m.on_connected(t0, p)));
    assert_eq!(m.on_disconnected(t0, 1), probe(1, &[2, 3]));
    assert!(m.on_ping_failed(t0 + ms(500), 1, Reach::Unknown).is_empty());
    assert!(m.on_ping_failed(t0 + ms(600), 1, Reach::Unreachable).is_empty());
    assert!(m.on_probe_result(t0 + ms(700), 1, Reach::Unknown).is_empty());
    // One helper still silent at the window's end: one more window, not a suspicion.
    assert!(m.tick(t0 + secs(2)).is_empty());
    assert_eq!((state(&m, 1), m.local_health()), (Some(Alive), 1));
}
