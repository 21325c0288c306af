//! Gossip: rumors, incarnations and their precedence, refutation, and which rumors are spread.

use super::*;

#[test]
fn refutation_raises_own_incarnation() {
    let (mut m, t0) = setup();
    assert!(m.on_rumor(t0, rumor(ME, Suspect, 0)).is_empty(), "stale");
    assert_eq!(m.on_rumor(t0, rumor(ME, Suspect, 1)), [announce(ME, Alive, 2)]);
    assert_eq!(m.on_rumor(t0, rumor(ME, Dead, 5)), [announce(ME, Alive, 6)]);
    assert_eq!(m.on_rumor(t0, rumor(ME, Left, 6)), [announce(ME, Alive, 7)]);
    // A previous life's higher incarnation is adopted silently.
    assert!(m.on_rumor(t0, rumor(ME, Alive, 9)).is_empty());
    assert_eq!(m.local_incarnation(), 9);
    let max = rumor(ME, Suspect, u64::MAX);
    assert_eq!(m.on_rumor(t0, max), [announce(ME, Alive, u64::MAX)]);
    assert_eq!((m.members().count(), m.local_state()), (0, Alive));
}

#[test]
fn precedence_and_stale_rumors() {
    let (mut m, t0) = setup();
    m.on_heartbeat(t0, 1, 5, Alive);
    for old in [rumor(1, Suspect, 4), rumor(1, Dead, 4), rumor(1, Alive, 5), rumor(1, Left, 4)] {
        assert!(m.on_rumor(t0, old).is_empty(), "{old:?}");
    }
    // Second-hand suspicion is adopted but not re-announced, and neither a
    // same-incarnation heartbeat nor a connection clears it.
    assert_eq!(m.on_rumor(t0, rumor(1, Suspect, 5)), [changed(1, Some(Alive), Suspect)]);
    assert!(m.on_rumor(t0, rumor(1, Alive, 5)).is_empty());
    // The member has not heard it. Its first-hand suspectors repeat it; we, who only heard
    // it, do so only after 5 suspect timeouts (then at most once per 5).
    assert!(m.on_heartbeat(t0 + secs(1), 1, 5, Alive).is_empty());
    assert_eq!(m.on_heartbeat(t0 + secs(15), 1, 5, Alive), [announce(1, Suspect, 5)]);
    assert!(m.on_heartbeat(t0 + secs(29), 1, 5, Alive).is_empty());
    assert!(m.on_connected(t0 + secs(1), 1).is_empty());
    assert_eq!(state(&m, 1), Some(Suspect));
    assert!(m.on_rumor(t0 + secs(2), rumor(1, Suspect, 6)).is_empty());
    let p = m.get(&1).unwrap();
    assert_eq!((p.incarnation, p.state_since), (6, t0 + secs(2)));
    assert_eq!(m.on_rumor(t0, rumor(1, Alive, 7)), [changed(1, Some(Suspect), Alive)]);
    // Unknown peers are tracked, but hearsay never vouches for them.
    assert_eq!(m.on_rumor(t0, rumor(9, Dead, 3)), [changed(9, None, Dead)]);
    let p = m.get(&9).unwrap();
    assert_eq!((p.incarnation, p.connected, p.info.is_none()), (3, false, true));
    assert!(!m.heard_within(&9, t0, secs(10)));
    assert!(m.on_rumor(t0, rumor(9, Suspect, 4)).is_empty(), "dead stays dead");
}

#[test]
fn revival_with_higher_incarnation() {
    let (mut m, t0) = setup();
    m.on_rumor(t0, rumor(1, Dead, 3));
    assert!(m.on_heartbeat(t0, 1, 3, Alive).is_empty(), "hearsay: its suspectors tell it");
    assert!(m.on_heartbeat(t0 + ms(10), 1, 2, Alive).is_empty(), "stale");
    assert!(m.on_ping(t0, 1, ms(5)).is_empty());
    assert_eq!(state(&m, 1), Some(Dead));
    let t1 = t0 + secs(1);
    assert_eq!(m.on_heartbeat(t1, 1, 4, Alive), [changed(1, Some(Dead), Alive)]);
    let p = m.get(&1).unwrap();
    assert_eq!((p.incarnation, p.state_since), (4, t1));
    m.on_heartbeat(t1, 1, 4, Left);
    assert_eq!(m.on_heartbeat(t1, 1, 5, Alive), [changed(1, Some(Left), Alive)]);
}

#[test]
fn active_rumors_bounded_newest_first() {
    let (mut m, t0) = setup();
    m.on_connected(t0, 100);
    m.on_heartbeat(t0, 101, 0, Left);
    for p in 1..=21u32 {
        m.on_heartbeat(t0, p, 0, Alive);
        m.on_rumor(t0 + secs(p.into()), rumor(p, Dead, 0));
    }
    m.on_rumor(t0 + secs(30), rumor(21, Dead, 2));
    m.on_rumor(t0 + secs(40), rumor(22, Dead, 0)); // hearsay only
    // A suspicion we only heard of travels with its first-hand suspectors' heartbeats, not ours.
    m.on_heartbeat(t0, 50, 0, Alive);
    m.on_rumor(t0 + secs(50), rumor(50, Suspect, 0));
    let r = m.active_rumors();
    assert_eq!(r.len(), 16);
    assert_eq!(r[0], rumor(21, Dead, 2));
    let rest: Vec<u32> = r[1..].iter().map(|x| x.peer).collect();
    assert_eq!(rest, (6..=20).rev().collect::<Vec<_>>());
}

#[test]
fn removed_member_is_not_regossiped() {
    let (mut m, t0) = setup();
    m.on_connected(t0, 1);
    m.on_rumor(t0, rumor(1, Dead, 0));
    assert_eq!(m.active_rumors(), [rumor(1, Dead, 0)]);
    m.tick(t0 + secs(60));
    assert_eq!(state(&m, 1), None);
    // A late rumor from a node that dropped it later re-adds it, silently.
    let late = m.on_rumor(t0 + secs(61), rumor(1, Dead, 0));
    assert_eq!(late, [changed(1, None, Dead)]);
    assert!(m.active_rumors().is_empty());
}

#[test]
fn dead_member_still_heard_is_told_again_and_its_rumor_goes_first() {
    let (mut m, t0) = setup();
    for p in 1..=20u32 {
        m.on_connected(t0, p);
        m.on_rumor(t0 + secs(p.into()), rumor(p, Dead, 0));
    }
    assert!(!m.active_rumors().contains(&rumor(1, Dead, 0)), "crowded out by newer news");
    let t = t0 + secs(30);
    assert_eq!(m.on_heartbeat(t, 1, 0, Alive), [announce(1, Dead, 0)]);
    assert_eq!(m.active_rumors()[0], rumor(1, Dead, 0));
    assert!(m.on_heartbeat(t + secs(15) - ms(1), 1, 0, Alive).is_empty(), "hearsay: once per 5 suspect timeouts");
    assert_eq!(m.on_heartbeat(t + secs(15), 1, 0, Alive), [announce(1, Dead, 0)]);
    // Its refutation (a higher incarnation) brings it back.
    assert_eq!(m.on_heartbeat(t + secs(16), 1, 1, Alive), [changed(1, Some(Dead), Alive)]);
}

/// One suspicion is one announcement: the node whose probe failed announces the suspicion and
/// the death, and repeats them to the suspect; every other node buries the member on its own
/// timer without a word (before, each of them announced it too: at 100 nodes one suspicion
/// became a hundred floods, which slowed every node and caused more suspicions).
#[test]
fn a_death_learnt_by_hearsay_is_not_announced() {
    let (mut m, t0) = setup();
    m.on_heartbeat(t0, 1, 0, Alive);
    m.on_rumor(t0, rumor(1, Suspect, 0));
    assert_eq!(m.tick(t0 + secs(3)), [changed(1, Some(Suspect), Dead)]);
    assert!(m.on_heartbeat(t0 + secs(4), 1, 0, Alive).is_empty());
    assert!(m.active_rumors().contains(&rumor(1, Dead, 0)), "known first-hand: still carried along");

    // First-hand: our own probe failed.
    let (mut m, t0) = setup();
    m.on_heartbeat(t0, 1, 0, Alive);
    m.on_connected(t0, 2);
    m.on_disconnected(t0, 1);
    m.on_probe_result(t0, 1, Reach::Unreachable);
    let failed = m.on_probe_result(t0, 1, Reach::Unreachable);
    assert!(failed.contains(&announce(1, Suspect, 0)), "{failed:?}");
    assert_eq!(m.active_rumors(), [rumor(1, Suspect, 0)]);
    let dead = m.tick(t0 + secs(6));
    assert!(dead.contains(&announce(1, Dead, 0)), "{dead:?}");
    assert_eq!(m.on_heartbeat(t0 + secs(7), 1, 0, Alive), [announce(1, Dead, 0)]);
}
