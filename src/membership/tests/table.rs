//! Who is in the table, what it says about them, and how they look on the wire.

use super::*;

#[test]
fn join_by_connection_or_heartbeat() {
    let (mut m, t0) = setup();
    assert_eq!(m.on_connected(t0, 1), vec![changed(1, None, Alive)]);
    let p = m.get(&1).unwrap();
    assert_eq!((p.state, p.incarnation, p.connected, p.last_heard), (Alive, 0, true, t0));
    assert!(p.info.is_none());
    assert!(m.on_connected(t0, ME).is_empty(), "never our own member");
    assert_eq!(m.on_heartbeat(t0, 2, 7, Alive), vec![changed(2, None, Alive)]);
    assert!(!m.get(&2).unwrap().connected);
    assert_eq!(m.members().map(|x| x.id).collect::<Vec<_>>(), [1, 2]);
    assert_eq!((m.local(), m.local_incarnation(), m.local_state()), (ME, 1, Alive));
}

#[test]
fn heartbeat_refreshes_and_stale_heartbeat_is_ignored() {
    let (mut m, t0) = setup();
    let (t1, t2) = (t0 + secs(30), t0 + secs(40));
    m.on_connected(t0, 1);
    assert!(m.on_advertisement(t1, 1, 5, info(&["compute"])).is_empty());
    // Delayed messages from before incarnation 5, and a node claiming to
    // suspect itself, change nothing.
    assert!(m.on_heartbeat(t2, 1, 4, Alive).is_empty());
    assert!(m.on_advertisement(t2, 1, 4, info(&["gpu"])).is_empty());
    assert!(m.on_heartbeat(t2, 1, 9, Suspect).is_empty());
    let p = m.get(&1).unwrap();
    assert_eq!((p.incarnation, p.last_heard), (5, t1));
    assert_eq!(p.info, Some(info(&["compute"])));
    assert_eq!(p.advertised, Some(t1), "when the advertisement kept was taken in, not the stale one");
}

#[test]
fn leave_ourselves_and_others() {
    let (mut m, t0) = setup();
    assert_eq!(m.leave(t0), [announce(ME, Left, 1)]);
    assert_eq!(m.local_state(), Left);
    // While leaving we re-assert Left, never Alive.
    assert_eq!(m.on_rumor(t0, rumor(ME, Suspect, 1)), [announce(ME, Left, 1)]);
    assert_eq!(m.on_rumor(t0, rumor(ME, Alive, 3)), [announce(ME, Left, 3)]);
    assert!(m.on_rumor(t0, rumor(ME, Dead, 2)).is_empty());
    assert!(!m.heard_within(&ME, t0, secs(1)));

    m.on_connected(t0, 1);
    assert_eq!(m.on_heartbeat(t0, 1, 2, Left), [changed(1, Some(Alive), Left)]);
    assert!(m.on_disconnected(t0, 1).is_empty(), "a left member is not probed");
    for r in [rumor(1, Suspect, 5), rumor(1, Dead, 5), rumor(1, Alive, 2)] {
        assert!(m.on_rumor(t0, r).is_empty(), "{r:?}");
    }
    assert!(!m.heard_within(&1, t0, secs(10)));
    assert!(m.active_rumors().is_empty());
    assert_eq!((m.count(Left), m.count(Alive)), (1, 0));
    m.tick(t0 + secs(60));
    assert_eq!(state(&m, 1), None);
}

#[test]
fn capability_query_excludes_non_alive() {
    let (mut m, t0) = setup();
    m.on_advertisement(t0, 1, 0, info(&["compute"]));
    m.on_advertisement(t0, 2, 0, info(&["compute", "storage"]));
    m.on_advertisement(t0, 3, 0, info(&["storage"]));
    m.on_connected(t0, 4); // alive but never advertised
    m.on_rumor(t0, rumor(2, Suspect, 0));
    m.on_heartbeat(t0, 3, 0, Left);
    let ids = |cap| m.alive_with_capability(cap).map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids("compute"), [1]);
    assert!(ids("storage").is_empty());
    assert!(ids("gpu").is_empty());
}

#[test]
fn heard_within_needs_recent_direct_evidence() {
    let (mut m, t0) = setup();
    m.on_connected(t0, 1);
    m.on_rumor(t0, rumor(2, Alive, 0));
    assert!(m.heard_within(&1, t0 + secs(10), secs(10)));
    assert!(!m.heard_within(&1, t0 + secs(11), secs(10)));
    assert!(!m.heard_within(&2, t0, secs(10)), "hearsay");
    assert!(!m.heard_within(&3, t0, secs(10)), "unknown");
    assert!(m.heard_within(&ME, t0, secs(1)));
}

#[test]
fn wire_format_is_lowercase() {
    assert_eq!(serde_json::to_string(&Suspect).unwrap(), "\"suspect\"");
    assert_eq!(Left.to_string(), "left");
    let json = serde_json::to_string(&rumor(7, Dead, 3)).unwrap();
    assert_eq!(json, r#"{"peer":7,"state":"dead","incarnation":3}"#);
    assert_eq!(serde_json::from_str::<Rumor<u32>>(&json).unwrap(), rumor(7, Dead, 3));
    assert!(serde_json::from_str::<MemberState>("\"Alive\"").is_err());
}
