//! Lifeguard's local health: what raises and lowers the score, and what it stretches.

use super::*;

#[test]
fn ping_deadline_is_kept_here_and_stretches_with_local_health() {
    let (mut m, t0) = setup();
    m.on_connected(t0, 1);
    m.ping_sent(t0, 1);
    assert!(m.tick(t0 + ms(999)).is_empty());
    assert_eq!(m.tick(t0 + secs(1)), [Action::PingTimedOut { target: 1 }]);
    assert!(m.tick(t0 + secs(2)).is_empty(), "reported once");
    // Late by half a probe timeout: health 1, so the next deadline is 2 s.
    m.on_late(t0, ms(499));
    assert_eq!(m.local_health(), 0, "a little late is not unhealthy");
    m.on_late(t0, ms(500));
    assert_eq!(m.local_health(), 1);
    m.on_late(t0 + ms(999), secs(3));
    assert_eq!(m.local_health(), 1, "at most once per probe timeout");
    let t1 = t0 + secs(3);
    m.ping_sent(t1, 1);
    assert!(m.tick(t1 + ms(1999)).is_empty());
    assert_eq!(m.tick(t1 + secs(2)), [Action::PingTimedOut { target: 1 }]);
    // An answer in time restores health; a late one (after the deadline) does not.
    m.ping_sent(t1 + secs(3), 1);
    m.on_ping(t1 + secs(4), 1, secs(1));
    assert_eq!(m.local_health(), 0);
    m.on_late(t1 + secs(10), secs(1));
    assert!(m.on_ping(t1 + secs(11), 1, ms(1)).is_empty());
    assert_eq!(m.local_health(), 1, "no ping of ours was waiting");
    for i in 0..20 {
        m.on_late(t1 + secs(20 + i), secs(1));
    }
    assert_eq!(m.local_health(), MAX_LOCAL_HEALTH);
}

#[test]
fn poor_local_health_stretches_probe_window_and_suspicion() {
    let (mut m, t0) = setup();
    m.on_connected(t0, 1);
    m.on_connected(t0, 2);
    m.on_late(t0, secs(1));
    m.on_late(t0 + secs(1), secs(1));
    assert_eq!(m.local_health(), 2);
    assert_eq!(m.on_ping_failed(t0, 1, Reach::Unreachable), probe(1, &[2]));
    assert!(m.tick(t0 + ms(5999)).is_empty(), "the probe window (2 timeouts) is 3x");
    // The window ended without the helper's answer: one more point of local health, and one
    // more window (4x now).
    assert!(m.tick(t0 + secs(6)).is_empty());
    assert_eq!(m.local_health(), 3);
    assert!(m.tick(t0 + ms(13999)).is_empty());
    let t = t0 + secs(14);
    assert_eq!(m.tick(t), [changed(1, Some(Alive), Suspect), announce(1, Suspect, 0)]);
    assert!(m.tick(t + ms(11999)).is_empty(), "the suspicion lasts 4x");
    assert_eq!(m.tick(t + secs(12)), [changed(1, Some(Suspect), Dead), announce(1, Dead, 0)]);
}

#[test]
fn local_health_signals_from_the_protocol() {
    let (mut m, t0) = setup();
    (1..=3).for_each(|p| drop(m.on_connected(t0, p)));
    // A helper reached the member our own ping missed: the slowness was likely ours.
    assert_eq!(m.on_ping_failed(t0, 1, Reach::Unreachable), probe(1, &[2, 3]));
    assert!(m.on_probe_result(t0 + ms(300), 1, Reach::Reachable).is_empty());
    assert_eq!(m.local_health(), 1);
    // A probe for another reason (a closed connection) that a helper answers says nothing
    // about us.
    assert_eq!(m.on_disconnected(t0, 2), probe(2, &[1, 3]));
    m.on_probe_result(t0 + ms(300), 2, Reach::Reachable);
    assert_eq!(m.local_health(), 1);
    // Having to refute a suspicion of ourselves; a stale one changes nothing.
    assert_eq!(m.on_rumor(t0, rumor(ME, Suspect, 1)), [announce(ME, Alive, 2)]);
    assert_eq!(m.local_health(), 2);
    assert!(m.on_rumor(t0, rumor(ME, Suspect, 1)).is_empty());
    assert_eq!(m.local_health(), 2);
    assert_eq!(max_ping_wait(secs(1)), secs(9));
}

/// The score alone, without the table: bounded both ways, lateness paced per probe timeout.
#[test]
fn score_is_bounded_and_lateness_counts_once_per_probe_timeout() {
    let mut h = super::super::health::LocalHealth::default();
    let t0 = Instant::now();
    h.better();
    assert_eq!((h.score(), h.scaled(secs(2))), (0, secs(2)), "never below healthy");
    h.on_late(t0, ms(499), secs(1));
    assert_eq!(h.score(), 0, "less than half a probe timeout late");
    h.on_late(t0, ms(500), secs(1));
    h.on_late(t0 + ms(999), secs(5), secs(1));
    assert_eq!(h.score(), 1, "one stall, one signal");
    h.on_late(t0 + secs(1), ms(500), secs(1));
    assert_eq!((h.score(), h.scaled(secs(2))), (2, secs(6)));
    (0..20).for_each(|_| h.worse());
    assert_eq!((h.score(), h.scaled(secs(1))), (MAX_LOCAL_HEALTH, max_ping_wait(secs(1))));
}

#[test]
fn a_probe_window_that_ends_without_every_answer_raises_local_health_and_is_given_once_more() {
    let (mut m, t0) = setup();
    (1..=4).for_each(|p| drop(m.on_connected(t0, p)));
    assert_eq!(m.on_ping_failed(t0, 1, Reach::Unreachable), probe(1, &[2, 3, 4]));
    // Only our own direct ping answered (it timed out): the helpers stayed silent, which says
    // more about us (or them) than about the member (Lifeguard's missed nack). No suspicion
    // without evidence yet: one more window, of stretched timeouts.
    assert!(m.on_ping_failed(t0 + secs(1), 1, Reach::Unknown).is_empty());
    assert!(m.tick(t0 + secs(2)).is_empty());
    assert_eq!(m.local_health(), 1);
    // A helper's late "reachable" inside it ends the probe: a busy moment, not a failure (and
    // the member our ping missed was reached: health 2).
    assert!(m.on_probe_result(t0 + secs(5), 1, Reach::Reachable).is_empty());
    assert_eq!((state(&m, 1), m.local_health()), (Some(Alive), 2));
    // Silent through both windows (6 s, then 8 s): then it is suspected.
    assert_eq!(m.on_ping_failed(t0 + secs(10), 4, Reach::Unreachable), probe(4, &[1, 2, 3]));
    assert!(m.tick(t0 + ms(15999)).is_empty());
    assert!(m.tick(t0 + secs(16)).is_empty(), "the second window");
    assert_eq!(m.local_health(), 3);
    assert!(m.tick(t0 + ms(23999)).is_empty());
    assert_eq!(m.tick(t0 + secs(24)), [changed(4, Some(Alive), Suspect), announce(4, Suspect, 0)]);
    assert_eq!(m.local_health(), 3, "raised once per probe");
    // Every answer in and negative: the member is down, not we slow.
    assert_eq!(m.on_ping_failed(t0 + secs(25), 2, Reach::Unreachable), probe(2, &[1, 3]));
    (0..3).for_each(|_| drop(m.on_probe_result(t0 + secs(25), 2, Reach::Unreachable)));
    assert_eq!(state(&m, 2), Some(Suspect));
    assert_eq!(m.local_health(), 3);
}
