//! Cluster membership: a SWIM-style failure detector as a pure state machine.
//!
//! This module owns the local view of who is in the cluster and in which state
//! (alive -> suspect -> dead, or left after a graceful leave). It performs no
//! I/O and never reads the clock: the node feeds it events with `now` and
//! carries out the returned [`Action`]s (dial, ask helpers, gossip), which
//! keeps every timing rule unit-testable.
//!
//! Why SWIM (Das et al., 2002) rather than plain heartbeat timeouts: one
//! dropped connection must not declare a node dead. A member we lose contact
//! with is first probed *indirectly* through a few other members, since the
//! fault may lie on our own path only; only if nobody reaches it does it become
//! `Suspect`, and only a suspicion left unrefuted for `suspect_timeout` makes
//! it `Dead`. As in SWIM, each protocol period pings ONE member directly, in a
//! per-node shuffled round robin, rather than every member: the cost per node
//! stays constant as the cluster grows, and with N nodes each probing one
//! member per period, every member is still probed about once per period.
//! Incarnation numbers order claims about a member: only the member itself
//! raises its incarnation, which it does to refute a suspicion about itself
//! (Lifeguard-style), so stale second-hand gossip never overrides fresher news.
//!
//! Lifeguard's local health (`health.rs`): a node that is itself slow stretches its
//! own timeouts, so that it accuses others slowly instead of turning its lateness
//! into suspicions.
//!
//! Files: `entry.rs` one member (its types, the claims about it, SWIM precedence),
//! `health.rs` the local health score, this file the table and its protocol.

use std::collections::BTreeMap;
use std::fmt::{Debug, Display};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

mod entry;
mod health;
#[cfg(test)]
mod tests;

use MemberState::{Alive, Dead, Left, Suspect};
pub use entry::{Action, Member, MemberInfo, MemberState, Reach, Rumor};
use entry::{Entry, Probe, ProbeCause, announce, changed, rumor};
use health::LocalHealth;
pub use health::{MAX_LOCAL_HEALTH, max_ping_wait};

/// Piggybacked rumors ride on every heartbeat, so they must stay small.
const MAX_ACTIVE_RUMORS: usize = 16;

/// Probe timeouts an indirect probe has before it counts as failed. A helper asked at the
/// start of the probe pings the member with its own probe timeout (and may have to dial it
/// first): a window of one timeout would expire just as its answer arrives (SWIM gives
/// indirect probes the rest of the protocol period, for the same reason). A crashed member
/// is not found later for it: its helpers' negative answers end the probe at once.
const INDIRECT_WINDOW: u32 = 2;

/// Suspect timeouts a node that only heard of a suspicion waits before repeating it to the
/// suspect itself (see `on_heartbeat`).
const HEARSAY_PATIENCE: u32 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipConfig {
    pub suspect_timeout: Duration,
    pub dead_retention: Duration,
    pub indirect_probes: usize,
    pub probe_timeout: Duration,
    pub silence_timeout: Duration,
}

/// How members are linked when each keeps connections to a few others only (the network's
/// active view, `network::view`): `links(a, b, members, active)` says whether `a` and `b` keep
/// each other connected in a cluster of `members` where each keeps about `active`. Both ends
/// and any third member compute the same answer without a word exchanged.
#[derive(Clone, Copy)]
pub struct Overlay<P> {
    pub active: usize,
    pub links: fn(&P, &P, usize, usize) -> bool,
}

impl<P> Debug for Overlay<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay").field("active", &self.active).finish_non_exhaustive()
    }
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            suspect_timeout: Duration::from_secs(3),
            dead_retention: Duration::from_secs(60),
            indirect_probes: 3,
            probe_timeout: Duration::from_secs(1),
            silence_timeout: Duration::from_secs(90),
        }
    }
}

fn elapsed(now: Instant, since: Instant) -> Duration {
    now.saturating_duration_since(since)
}

/// Logs why our probe of `target` ends in a suspicion: an operator's first question.
fn suspected<P: Display>(target: P, probe: &Probe, now: Instant, why: &str) {
    tracing::info!(
        %target,
        why,
        cause = probe.cause.as_str(),
        answered = probe.answered,
        unreachable = probe.negatives,
        asked = probe.expected,
        extended = probe.extended,
        window_ms = elapsed(now, probe.started).as_millis() as u64,
        "suspecting member: probe failed"
    );
}

/// The local membership table; see the module documentation.
#[derive(Debug, Clone)]
pub struct Membership<P> {
    local: P,
    incarnation: u64,
    leaving: bool,
    config: MembershipConfig,
    /// Ordered so that listings and the order of emitted actions are deterministic.
    members: BTreeMap<P, Entry<P>>,
    /// Members left to ping in this round, next one last; reshuffled for each round.
    round: Vec<P>,
    rounds: u64,
    /// Lifeguard's local health; see `health.rs`.
    health: LocalHealth,
    /// The active view's links, when the cluster is larger than the view; see `start_probe`.
    overlay: Option<Overlay<P>>,
}

impl<P> Membership<P>
where
    P: Copy + Eq + Hash + Ord + Debug + Display,
{
    pub fn new(local: P, incarnation: u64, config: MembershipConfig) -> Self {
        Self {
            local,
            incarnation,
            leaving: false,
            config,
            members: BTreeMap::new(),
            round: Vec::new(),
            rounds: 0,
            health: LocalHealth::default(),
            overlay: None,
        }
    }

    /// From now on, probes ask the member's own neighbours in `overlay` first (see `start_probe`).
    pub fn set_overlay(&mut self, overlay: Overlay<P>) {
        self.overlay = Some(overlay);
    }

    /// Lifeguard's local health score: 0 when healthy, up to [`MAX_LOCAL_HEALTH`].
    pub fn local_health(&self) -> u32 {
        self.health.score()
    }

    /// A timeout as this node applies it: stretched by `1 + local health`.
    pub fn scaled(&self, timeout: Duration) -> Duration {
        self.health.scaled(timeout)
    }

    /// The node's own timers fired `delay` after they were due. Half a probe timeout late,
    /// its answers are that late too: raise the local health score (once per probe timeout).
    pub fn on_late(&mut self, now: Instant, delay: Duration) {
        self.health.on_late(now, delay, self.config.probe_timeout);
    }

    /// A member not connected and not heard from for this long is probed: three of its
    /// heartbeat intervals, which stretch with the cluster's size (the node keeps this in step).
    pub fn set_silence_timeout(&mut self, timeout: Duration) {
        self.config.silence_timeout = timeout;
    }

    /// We are pinging `peer` directly (for our own detection or for someone who asked):
    /// answered with `on_ping`, else `tick` reports `PingTimedOut` after the scaled probe
    /// timeout.
    pub fn ping_sent(&mut self, now: Instant, peer: P) {
        if let Some(entry) = self.members.get_mut(&peer) {
            entry.ping.get_or_insert(now);
        }
    }

    pub fn local(&self) -> P {
        self.local
    }

    pub fn local_incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn local_state(&self) -> MemberState {
        if self.leaving { Left } else { Alive }
    }

    /// The member's own heartbeat. Only `Alive` and `Left` are claims a node
    /// can make about itself; anything else is malformed and ignored.
    pub fn on_heartbeat(&mut self, now: Instant, from: P, incarnation: u64, state: MemberState) -> Vec<Action<P>> {
        let mut actions = Vec::new();
        if from == self.local || !matches!(state, Alive | Left) {
            return actions;
        }
        let entry = self.members.entry(from).or_insert_with(|| {
            actions.push(changed(from, None, state));
            Entry::new(now, from, state, incarnation)
        });
        // An older incarnation is a delayed message from before a refutation.
        if incarnation >= entry.member.incarnation {
            entry.heard(now);
            // At the same incarnation this does not clear a suspicion: the spec
            // reserves that for the member's refutation or a successful ping/probe.
            entry.apply(now, state, incarnation, &mut actions);
            if entry.member.state == Alive {
                entry.probe = None;
            }
            // Still running at the incarnation we suspect or bury: it has not heard the news,
            // which may have dropped out of the bounded rumor list in a burst. Repeat it so
            // that it refutes: at most once per suspect timeout when the suspicion was ours;
            // when we only heard it, not before HEARSAY_PATIENCE suspect timeouts (its first-hand
            // suspectors repeat it; every node repeating it at once is a storm).
            let m = &entry.member;
            let wait = if entry.suspected_by_us {
                self.config.suspect_timeout
            } else {
                self.config.suspect_timeout * HEARSAY_PATIENCE
            };
            if matches!(m.state, Suspect | Dead)
                && incarnation == m.incarnation
                && state == Alive
                && (entry.suspected_by_us || elapsed(now, m.state_since) >= wait)
                && entry.reannounced.is_none_or(|t| elapsed(now, t) >= wait)
            {
                entry.reannounced = Some(now);
                actions.push(announce(from, m.state, m.incarnation));
            }
        }
        actions
    }

    pub fn on_advertisement(&mut self, now: Instant, from: P, incarnation: u64, info: MemberInfo) -> Vec<Action<P>> {
        let actions = self.on_heartbeat(now, from, incarnation, Alive);
        // Unless stale: an accepted heartbeat has raised the member's
        // incarnation to this one, a stale one left it higher.
        if let Some(entry) = self.members.get_mut(&from)
            && incarnation >= entry.member.incarnation
        {
            entry.member.info = Some(info);
            entry.member.advertised = Some(now);
        }
        actions
    }

    pub fn on_connected(&mut self, now: Instant, peer: P) -> Vec<Action<P>> {
        let mut actions = Vec::new();
        // Does not clear a suspicion (the spec reserves that for refutations,
        // pings and probes); the next successful ping on this connection will.
        if let Some(entry) = self.live_evidence(now, peer, &mut actions) {
            entry.member.connected = true;
        }
        actions
    }

    pub fn on_ping(&mut self, now: Instant, peer: P, rtt: Duration) -> Vec<Action<P>> {
        let mut actions = Vec::new();
        let in_time = self.members.get_mut(&peer).and_then(|e| e.ping.take()).is_some();
        if in_time {
            self.health.better();
        }
        if let Some(entry) = self.live_evidence(now, peer, &mut actions) {
            entry.member.rtt = Some(rtt);
            // A round trip proves the member is up right now, unlike a
            // heartbeat that may have been in flight; nothing to announce.
            if entry.member.state == Suspect {
                entry.transition(now, Alive, &mut actions);
            }
        }
        actions
    }

    /// Connection or ping: ends any probe; an unknown peer joins as Alive(0).
    fn live_evidence(&mut self, now: Instant, peer: P, actions: &mut Vec<Action<P>>) -> Option<&mut Entry<P>> {
        if peer == self.local {
            return None;
        }
        let entry = self.members.entry(peer).or_insert_with(|| {
            actions.push(changed(peer, None, Alive));
            let mut entry = Entry::new(now, peer, Alive, 0);
            entry.member.connected = true; // both imply a live connection
            entry
        });
        entry.heard(now);
        entry.probe = None;
        Some(entry)
    }

    pub fn on_disconnected(&mut self, now: Instant, peer: P) -> Vec<Action<P>> {
        if let Some(entry) = self.members.get_mut(&peer) {
            entry.member.connected = false;
        }
        self.start_probe(now, peer, ProbeCause::Disconnected).into_iter().collect()
    }

    /// The connection to `peer` closed as both ends meant it to (it lies outside the active
    /// view): no sign of failure, so no probe. Gossip, pings and probes keep vouching for it.
    pub fn on_parted(&mut self, peer: P) {
        if let Some(entry) = self.members.get_mut(&peer) {
            entry.member.connected = false;
        }
    }

    /// A direct ping failed (a closed connection, a refused dial) or went unanswered
    /// (`Reach::Unknown`: it timed out). During a probe it is the probe's own direct answer
    /// (one of `expected`); otherwise it starts a probe.
    pub fn on_ping_failed(&mut self, now: Instant, peer: P, reach: Reach) -> Vec<Action<P>> {
        let Some(entry) = self.members.get_mut(&peer) else {
            return Vec::new();
        };
        entry.ping = None;
        if let Some(probe) = entry.probe.as_mut() {
            if std::mem::replace(&mut probe.direct_answered, true) {
                return Vec::new();
            }
            return self.on_probe_result(now, peer, reach);
        }
        self.start_probe(now, peer, ProbeCause::MissedPing).into_iter().collect()
    }

    /// A task request failed: a reason to probe, but not an answer to a running probe.
    pub fn on_request_failed(&mut self, now: Instant, peer: P) -> Vec<Action<P>> {
        self.start_probe(now, peer, ProbeCause::RequestFailed).into_iter().collect()
    }

    fn start_probe(&mut self, now: Instant, target: P, cause: ProbeCause) -> Option<Action<P>> {
        let entry = self.members.get(&target)?;
        if entry.probe.is_some() || matches!(entry.member.state, Dead | Left) {
            return None;
        }
        // Prefer helpers we can ask right away, then those heard from last. With a partial view,
        // first the target's own neighbours among them: connected to the target, they vouch from
        // fresh evidence or ping it on that connection. Any other helper must dial the target:
        // a handshake per helper per probe, and during a burst of late answers (a busy machine)
        // those dials were the busy-ness that made more answers late.
        let members = 1 + self.members().filter(|m| matches!(m.state, Alive | Suspect)).count();
        let neighbour = |m: &Member<P>| self.overlay.is_some_and(|o| (o.links)(&m.id, &target, members, o.active));
        let mut helpers: Vec<&Member<P>> = self.members().filter(|m| m.state == Alive && m.id != target).collect();
        helpers.sort_by_cached_key(|m| {
            (!m.connected, m.connected && !neighbour(m), std::cmp::Reverse(m.last_heard), m.id)
        });
        helpers.truncate(self.config.indirect_probes);
        let via: Vec<P> = helpers.into_iter().map(|m| m.id).collect();
        let expected = via.len() + 1;
        tracing::debug!(%target, cause = cause.as_str(), helpers = via.len(), "probe started");
        self.members.get_mut(&target)?.probe = Some(Probe {
            started: now,
            expected,
            negatives: 0,
            answered: 0,
            direct_answered: false,
            extended: false,
            cause,
        });
        Some(Action::Probe { target, via })
    }

    pub fn on_rumor(&mut self, now: Instant, rumor: Rumor<P>) -> Vec<Action<P>> {
        let (peer, state, incarnation) = (rumor.peer, rumor.state, rumor.incarnation);
        if peer == self.local {
            return self.refute(state, incarnation);
        }
        let mut actions = Vec::new();
        // Accepted news is not re-announced: it spreads through active_rumors.
        match self.members.get_mut(&peer) {
            Some(entry) => entry.apply(now, state, incarnation, &mut actions),
            None => {
                self.members.insert(peer, Entry::new(now, peer, state, incarnation));
                actions.push(changed(peer, None, state));
            }
        }
        actions
    }

    /// Re-asserts our own state against a rumor about us that would otherwise win.
    fn refute(&mut self, state: MemberState, i: u64) -> Vec<Action<P>> {
        let mine = self.incarnation;
        let raised = match (self.leaving, state) {
            // A higher Alive incarnation comes from a previous life of this
            // node: adopt it, or our heartbeats would be discarded as stale.
            (false, Alive) | (true, Left) => {
                self.incarnation = mine.max(i);
                return Vec::new();
            }
            (true, Alive) if i <= mine => return Vec::new(),
            (_, _) if i < mine => return Vec::new(),
            // Left(i) beats anything at incarnation i: no need to go higher.
            (true, _) => i,
            // Saturates at u64::MAX: we cannot out-rank that, but must not panic.
            (false, _) => i.saturating_add(1),
        };
        self.incarnation = raised;
        if matches!(state, Suspect | Dead) {
            // Somebody missed our answers: likely we were late, not they.
            self.health.worse();
        }
        vec![announce(self.local, self.local_state(), raised)]
    }

    /// One answer to the probe of `target` (see [`Reach`]). All of them `Unreachable` end the
    /// probe in a suspicion at once; `Unknown` answers leave it to the window (see `tick`).
    pub fn on_probe_result(&mut self, now: Instant, target: P, reach: Reach) -> Vec<Action<P>> {
        let mut actions = Vec::new();
        let Some(entry) = self.members.get_mut(&target) else {
            return actions;
        };
        if reach == Reach::Reachable {
            // Also accepted after the probe timed out: a member someone can
            // reach is not suspect. Refreshing last_heard (but not the
            // first-hand `direct`) keeps tick from probing it again at once.
            let missed_by_us = entry.probe.take().is_some_and(|p| p.cause == ProbeCause::MissedPing);
            entry.member.last_heard = entry.member.last_heard.max(now);
            if entry.member.state == Suspect {
                entry.transition(now, Alive, &mut actions);
            }
            if missed_by_us {
                self.health.worse();
            }
        } else if let Some(probe) = entry.probe.as_mut() {
            probe.answered = probe.answered.saturating_add(1);
            if reach == Reach::Unreachable {
                probe.negatives = probe.negatives.saturating_add(1);
            }
            if probe.negatives >= probe.expected {
                suspected(target, probe, now, "every answer was a failed ping");
                entry.probe_failed(now, &mut actions);
            }
        }
        actions
    }

    pub fn tick(&mut self, now: Instant) -> Vec<Action<P>> {
        let cfg = self.config;
        let (probe_timeout, suspect_timeout) = (self.scaled(cfg.probe_timeout), self.scaled(cfg.suspect_timeout));
        let (mut actions, mut expired, mut silent) = (Vec::new(), Vec::new(), Vec::new());
        for (&peer, entry) in &mut self.members {
            if entry.ping.is_some_and(|t| elapsed(now, t) >= probe_timeout) {
                entry.ping = None;
                actions.push(Action::PingTimedOut { target: peer });
            }
            if let Some(probe) = entry.probe.as_mut()
                && elapsed(now, probe.started) >= probe_timeout * INDIRECT_WINDOW
            {
                // Lifeguard's missed nack: a helper answers once its own ping ends, failed or
                // timed out, well inside the window. Without its answer by now, the lateness is
                // more likely ours (or the helper's) than the member's: our timeouts stretch,
                // and the probe gets one more (stretched) window rather than ending in a
                // suspicion without evidence. A crashed member's helpers answer in time (their pings
                // fail on a closed connection or a refused dial), so its suspicion is not late.
                if probe.answered < probe.expected && !probe.extended {
                    self.health.worse();
                    probe.extended = true;
                    probe.started = now;
                } else {
                    suspected(peer, probe, now, "no answer that the member is up within the window");
                    entry.probe_failed(now, &mut actions);
                }
            }
            let m = &entry.member;
            let age = elapsed(now, m.state_since);
            let silent_for = elapsed(now, m.last_heard);
            let quiet = !m.connected && entry.probe.is_none() && silent_for >= cfg.silence_timeout;
            match m.state {
                Suspect if age >= suspect_timeout => {
                    let incarnation = m.incarnation;
                    entry.transition(now, Dead, &mut actions);
                    // Every node that heard the suspicion buries the member on its own timer;
                    // only its first-hand suspectors say so (the others would repeat news
                    // everyone has, all at once).
                    if entry.suspected_by_us {
                        actions.push(announce(peer, Dead, incarnation));
                    }
                }
                Dead | Left if age >= cfg.dead_retention => expired.push(peer),
                Alive if quiet => silent.push(peer),
                _ => {}
            }
        }
        for peer in expired {
            self.members.remove(&peer);
        }
        actions.extend(silent.into_iter().filter_map(|p| self.start_probe(now, p, ProbeCause::Silent)));
        actions
    }

    /// The member to ping directly in this protocol period, once per period (the caller
    /// keeps the clock). The caller reports the outcome with `on_ping` (answered) or
    /// `on_ping_failed` (no answer within the probe timeout), which starts a probe.
    ///
    /// SWIM's randomized round robin: every alive or suspect member once per round, in an
    /// order shuffled per node and per round (by a hash of both, so that nodes do not all
    /// ping the same member at once, yet the state machine stays deterministic). A member
    /// that joins mid-round waits for the next round; one already being probed is skipped.
    ///
    /// `connected_only`: only members we are connected to, for a large cluster where each
    /// node keeps connections to a few members only (the network's active view). Each member
    /// is then pinged by its neighbours, about as often as by everybody in plain SWIM, and a
    /// ping never costs a connection's handshake. A member nobody pings is still vouched for
    /// by its heartbeats, and probed when they stop (`silence_timeout`).
    pub fn next_ping(&mut self, connected_only: bool) -> Option<P> {
        let pingable =
            |e: &Entry<P>| matches!(e.member.state, Alive | Suspect) && (e.member.connected || !connected_only);
        for _ in 0..2 {
            while let Some(peer) = self.round.pop() {
                if self.members.get(&peer).is_some_and(|e| pingable(e) && e.probe.is_none()) {
                    return Some(peer);
                }
            }
            self.rounds += 1;
            let (local, rounds) = (self.local, self.rounds);
            let mut order: Vec<(u64, P)> = self
                .members
                .values()
                .filter(|e| pingable(e))
                .map(|e| {
                    let mut h = std::hash::DefaultHasher::new();
                    (local, rounds, e.member.id).hash(&mut h);
                    (h.finish(), e.member.id)
                })
                .collect();
            order.sort_unstable();
            self.round = order.into_iter().map(|(_, p)| p).collect();
        }
        None
    }

    pub fn leave(&mut self, _now: Instant) -> Vec<Action<P>> {
        self.leaving = true;
        vec![announce(self.local, Left, self.incarnation)]
    }

    pub fn get(&self, peer: &P) -> Option<&Member<P>> {
        self.members.get(peer).map(|e| &e.member)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member<P>> {
        self.members.values().map(|e| &e.member)
    }

    pub fn alive_with_capability<'a>(&'a self, capability: &'a str) -> impl Iterator<Item = &'a Member<P>> {
        let advertises = move |i: &MemberInfo| i.capabilities.iter().any(|c| c == capability);
        self.members().filter(move |m| m.state == Alive && m.info.as_ref().is_some_and(advertises))
    }

    pub fn count(&self, state: MemberState) -> usize {
        self.members().filter(|m| m.state == state).count()
    }

    /// Answers a helper request: only first-hand evidence counts, and a member
    /// that announced its departure is not vouched for.
    pub fn heard_within(&self, peer: &P, now: Instant, window: Duration) -> bool {
        if *peer == self.local {
            return !self.leaving;
        }
        self.members
            .get(peer)
            .is_some_and(|e| e.member.state != Left && e.direct.is_some_and(|t| elapsed(now, t) <= window))
    }

    /// Only members we have first-hand knowledge of are gossiped. Otherwise a
    /// death re-learnt from a late rumor after we dropped the member would be
    /// echoed back, and the tombstone would bounce between nodes forever.
    pub fn active_rumors(&self) -> Vec<Rumor<P>> {
        // Newest news first; a repeated rumor counts as news again.
        let mut news: Vec<(&Member<P>, Instant)> = self
            .members
            .values()
            .filter(|e| match e.member.state {
                // A suspicion travels with its first-hand suspectors' heartbeats only.
                Suspect => e.suspected_by_us,
                Dead => e.direct.is_some(),
                _ => false,
            })
            .map(|e| (&e.member, e.reannounced.map_or(e.member.state_since, |t| t.max(e.member.state_since))))
            .collect();
        news.sort_by_key(|(m, since)| (std::cmp::Reverse(*since), m.id));
        news.truncate(MAX_ACTIVE_RUMORS);
        news.into_iter().map(|(m, _)| rumor(m.id, m.state, m.incarnation)).collect()
    }
}
