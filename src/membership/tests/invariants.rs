//! Invariants under a long pseudo-random sequence of every kind of event.

use super::*;

/// Drives every entry point with a fixed pseudo-random sequence and checks
/// that StateChanged is emitted exactly once per change: replaying the
/// events must reproduce the member table after every call.
#[test]
fn random_events_keep_invariants() {
    let (mut m, mut now) = setup();
    let mut shadow: BTreeMap<u32, MemberState> = BTreeMap::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % n
    };
    let states = [Alive, Suspect, Dead, Left];
    for _ in 0..20_000 {
        now += ms(next(700));
        let (peer, inc, st) = (next(6) as u32, next(4), states[next(4) as usize]);
        let actions = match next(13) {
            0 => m.on_heartbeat(now, peer, inc, st),
            1 => m.on_advertisement(now, peer, inc, info(&["compute"])),
            2 => m.on_connected(now, peer),
            3 => m.on_disconnected(now, peer),
            4 => m.on_ping(now, peer, ms(3)),
            5 => m.on_request_failed(now, peer),
            6 => m.on_rumor(now, rumor(peer, st, inc)),
            7 => m.on_probe_result(now, peer, [Reach::Reachable, Reach::Unreachable, Reach::Unknown][next(3) as usize]),
            8 => m.on_ping_failed(now, peer, if next(2) == 0 { Reach::Unreachable } else { Reach::Unknown }),
            9 => {
                m.ping_sent(now, peer);
                Vec::new()
            }
            10 => {
                m.on_late(now, ms(next(1500)));
                Vec::new()
            }
            _ => m.tick(now),
        };
        assert!(m.local_health() <= MAX_LOCAL_HEALTH);
        for action in actions {
            match action {
                Action::StateChanged { peer, from, to } => {
                    assert_ne!(from, Some(to));
                    assert_eq!(shadow.insert(peer, to), from);
                }
                Action::Probe { target, via } => {
                    assert!(via.len() <= 3 && !via.contains(&target) && !via.contains(&ME));
                    assert!(via.iter().all(|v| state(&m, *v) == Some(Alive)));
                }
                Action::Announce(r) if r.peer == ME => assert_eq!(r.state, Alive),
                Action::Announce(r) => assert!(matches!(r.state, Suspect | Dead)),
                // Possibly of a member this very tick forgot: the ping was still ours.
                Action::PingTimedOut { target } => assert_ne!(target, ME),
            }
        }
        // Removal is silent, and only ever of the dead and departed.
        shadow.retain(|p, s| m.get(p).is_some() || !matches!(s, Dead | Left));
        let actual: BTreeMap<u32, MemberState> = m.members().map(|x| (x.id, x.state)).collect();
        assert_eq!(shadow, actual);
    }
}
