//! Answering SWIM's ping-req for others: vouch for a member from first-hand evidence, else
//! ping it and answer with the outcome. Pure: the core carries out the returned effects.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use crate::membership::{MemberState, Membership, Reach};
use crate::network::InboundId;

/// Probe requests this node answers for others at once (SWIM's ping-req); beyond it, "don't
/// know" (a busy helper's refusal is no evidence against the member).
pub(super) const MAX_FORWARDED_PROBES: usize = 256;

/// The answer to the probe request `id` about `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProbeAnswer {
    pub id: InboundId,
    pub target: PeerId,
    pub reach: Reach,
}

/// What the core must do for a probe request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProbeEffect {
    Respond(ProbeAnswer),
    /// Ping `target` directly; its outcome answers the requests waiting on it.
    Ping(PeerId),
}

/// What a finished direct ping tells membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PingVerdict {
    /// The member answered (whoever's ping it was): live evidence.
    Answered,
    /// Our own ping failed (`Reach::Unreachable`) or timed out (`Reach::Unknown`): membership
    /// probes the member, or counts it as the running probe's own answer.
    Failed(Reach),
    /// A ping only made for someone else's request went unanswered: the asker judges.
    NotOurs,
}

/// Probe requests waiting on our direct pings, and which pings are our own.
#[derive(Debug)]
pub(super) struct ProbeForwarder {
    /// How recently a connected member must have been heard first-hand to be vouched for.
    vouch_window: Duration,
    /// Others' probe requests about a member, answered when our own direct ping of it ends.
    forwarded_probes: HashMap<PeerId, Vec<InboundId>>,
    /// Members pinged for our own failure detection (not only on someone else's behalf): only
    /// their failed pings start a probe here, or one overloaded node's timeouts would fan out
    /// into probes by every helper it asked, and by theirs.
    own_pings: HashSet<PeerId>,
}

impl ProbeForwarder {
    pub fn new(ping_interval: Duration, probe_timeout: Duration) -> Self {
        Self {
            vouch_window: ping_interval * 2 + probe_timeout,
            forwarded_probes: HashMap::new(),
            own_pings: HashSet::new(),
        }
    }

    /// SWIM's ping-req `id` about `target` (as the asker wrote it).
    ///
    /// Vouch for a member only while connected to it and recently heard first-hand, else ping
    /// it and answer with the outcome. Evidence alone, without the connection, made helpers
    /// vouch for a crashed node until their evidence aged, so a crash took 5 s to be declared;
    /// a shorter window than this one turns a loaded node's late heartbeats into suspicions.
    pub fn on_request(
        &mut self,
        now: Instant,
        id: InboundId,
        target: &str,
        membership: &Membership<PeerId>,
    ) -> Option<ProbeEffect> {
        let respond = |target, reach| Some(ProbeEffect::Respond(ProbeAnswer { id, target, reach }));
        let Ok(t) = target.parse::<PeerId>() else {
            return respond(membership.local(), Reach::Unreachable);
        };
        if t == membership.local() {
            let alive = membership.local_state() == MemberState::Alive;
            return respond(t, if alive { Reach::Reachable } else { Reach::Unreachable });
        }
        if membership.get(&t).is_some_and(|m| m.connected) && membership.heard_within(&t, now, self.vouch_window) {
            return respond(t, Reach::Reachable);
        }
        match membership.get(&t).map(|m| m.state) {
            // It announced its departure.
            Some(MemberState::Left) => respond(t, Reach::Unreachable),
            // Not known here (yet), or too many pings under way: we cannot say either way.
            None => respond(t, Reach::Unknown),
            Some(_) if self.forwarded_probes.values().map(Vec::len).sum::<usize>() >= MAX_FORWARDED_PROBES => {
                respond(t, Reach::Unknown)
            }
            Some(_) => {
                let waiting = self.forwarded_probes.entry(t).or_default();
                waiting.push(id);
                (waiting.len() == 1).then_some(ProbeEffect::Ping(t))
            }
        }
    }

    /// We are about to ping `target` for our own failure detection.
    pub fn own_ping(&mut self, target: PeerId) {
        self.own_pings.insert(target);
    }

    /// Our direct ping of `target` ended: answers for everyone who asked us about it (a ping
    /// that timed out is answered as such, not as one that failed), and what membership
    /// should make of it.
    pub fn ping_ended(&mut self, target: PeerId, reach: Reach) -> (Vec<ProbeAnswer>, PingVerdict) {
        let answers = self.answers(target, reach);
        let ours = self.own_pings.remove(&target);
        let verdict = match reach {
            Reach::Reachable => PingVerdict::Answered,
            _ if ours => PingVerdict::Failed(reach),
            _ => PingVerdict::NotOurs,
        };
        (answers, verdict)
    }

    /// Answers everyone who asked us about `target` with the outcome of our direct ping of it.
    pub fn answers(&mut self, target: PeerId, reach: Reach) -> Vec<ProbeAnswer> {
        let waiting = self.forwarded_probes.remove(&target).unwrap_or_default();
        waiting.into_iter().map(|id| ProbeAnswer { id, target, reach }).collect()
    }
}

#[cfg(test)]
mod tests;
