//! The protocol period's ping target: SWIM's shuffled round robin.

use super::*;

#[test]
fn next_ping_visits_every_member_once_per_round() {
    let (mut m, t0) = setup();
    assert_eq!(m.next_ping(false), None, "nobody to ping");
    (1..=6).for_each(|p| drop(m.on_connected(t0, p)));
    m.on_heartbeat(t0, 7, 0, Left);
    m.on_rumor(t0, rumor(8, Dead, 0));
    m.on_rumor(t0, rumor(6, Suspect, 0)); // suspects are pinged too: a ping can clear them
    let round = |m: &mut Membership<u32>| {
        let mut r: Vec<u32> = (0..6).filter_map(|_| m.next_ping(false)).collect();
        let order = r.clone();
        r.sort_unstable();
        (order, r)
    };
    let (first, sorted) = round(&mut m);
    assert_eq!(sorted, [1, 2, 3, 4, 5, 6], "neither left, dead nor ourselves");
    let (second, sorted) = round(&mut m);
    assert_eq!(sorted, [1, 2, 3, 4, 5, 6]);
    assert_ne!(first, second, "each round is shuffled anew");
    // Another node orders the same members differently, so they do not all ping one at once.
    let mut other = Membership::new(99, 1, MembershipConfig::default());
    (1..=6).for_each(|p| drop(other.on_connected(t0, p)));
    other.on_rumor(t0, rumor(6, Suspect, 0));
    let (theirs, _) = round(&mut other);
    assert_ne!(first, theirs);
}

#[test]
fn next_ping_among_connected_members_only() {
    let (mut m, t0) = setup();
    (1..=4).for_each(|p| drop(m.on_connected(t0, p)));
    m.on_heartbeat(t0, 5, 0, Alive); // known from gossip only
    m.on_parted(4);
    let mut pinged: Vec<u32> = (0..6).filter_map(|_| m.next_ping(true)).collect();
    pinged.sort_unstable();
    assert_eq!(pinged, [1, 1, 2, 2, 3, 3], "two rounds of the connected members");
    m.on_parted(2);
    let round: Vec<u32> = (0..3).filter_map(|_| m.next_ping(true)).collect();
    assert!(!round.contains(&2), "disconnected since the round began: skipped ({round:?})");
    assert!(m.next_ping(false).is_some());
}

#[test]
fn next_ping_skips_members_gone_or_probed_since_the_round_began() {
    let (mut m, t0) = setup();
    (1..=3).for_each(|p| drop(m.on_connected(t0, p)));
    let first = m.next_ping(false).unwrap();
    let rest: Vec<u32> = (1..=3).filter(|p| *p != first).collect();
    m.on_heartbeat(t0, rest[0], 0, Left);
    assert_eq!(m.on_disconnected(t0, rest[1]), probe(rest[1], &[first]));
    assert_eq!(m.next_ping(false), Some(first), "a new round: only the first is left to ping");
    m.on_probe_result(t0, rest[1], Reach::Reachable);
    let again: Vec<u32> = (0..4).filter_map(|_| m.next_ping(false)).collect();
    assert!(again.contains(&first) && again.contains(&rest[1]) && !again.contains(&rest[0]), "{again:?}");
}
