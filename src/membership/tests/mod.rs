//! Tests of the membership state machine, one file per behaviour; the shared fixtures are here.

use super::*;

mod detection;
mod gossip;
mod invariants;
mod local_health;
mod round;
mod table;

const ME: u32 = 0;

fn setup() -> (Membership<u32>, Instant) {
    (Membership::new(ME, 1, MembershipConfig::default()), Instant::now())
}
fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}
fn probe(target: u32, via: &[u32]) -> Vec<Action<u32>> {
    vec![Action::Probe { target, via: via.to_vec() }]
}
fn state(m: &Membership<u32>, peer: u32) -> Option<MemberState> {
    m.get(&peer).map(|x| x.state)
}
fn info(caps: &[&str]) -> MemberInfo {
    let capabilities = caps.iter().map(|c| c.to_string()).collect();
    MemberInfo { capabilities, ..MemberInfo::default() }
}
