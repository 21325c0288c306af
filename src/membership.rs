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
//! member per period, every member is still probed about once per period. Incarnation numbers order claims about a member: only the member
//! itself raises its incarnation, which it does to refute a suspicion about
//! itself (Lifeguard-style), so stale second-hand gossip never overrides
//! fresher news.
//!
//! Lifeguard's local health (Dadgar et al., 2018): a node that is itself slow (a
//! starved CPU, a stalled event loop) sees its pings time out and would accuse
//! healthy members, and under load those false suspicions spread faster than the
//! refutations. So the node keeps a local health score, 0 when healthy: raised when
//! its own event loop runs late, when it had to refute a suspicion of itself, or
//! when a member its ping missed was reached by somebody else; lowered by each of
//! its pings answered in time. Its ping deadline, probe window, suspicion timeout
//! and protocol period all stretch by `1 + score`: a slow node accuses others more
//! slowly and pings less, and the healthy rest of the cluster keeps deciding.

use std::collections::BTreeMap;
use std::fmt::{self, Debug, Display};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use MemberState::{Alive, Dead, Left, Suspect};

/// Piggybacked rumors ride on every heartbeat, so they must stay small.
const MAX_ACTIVE_RUMORS: usize = 16;
/// The local health score's ceiling (Lifeguard's S): timeouts stretch at most 9x. The
/// network's own deadline for a ping must allow for that (see [`max_ping_wait`]).
pub const MAX_LOCAL_HEALTH: u32 = 8;

/// The longest this node may wait for a ping's answer, at the worst local health: the
/// transport's request timeout for probes, so that the deadline is membership's.
pub fn max_ping_wait(probe_timeout: Duration) -> Duration {
    probe_timeout * (MAX_LOCAL_HEALTH + 1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl MemberState {
    /// Lowercase name, as used on the wire, in the API and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Alive => "alive",
            Suspect => "suspect",
            Dead => "dead",
            Left => "left",
        }
    }
}

impl Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a member advertises about itself (its CapabilityAdvertisement).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub role: String,
    pub capabilities: Vec<String>,
    pub capacity: u32,
    pub load: u32,
    pub addresses: Vec<String>,
}

/// A claim about one member, as gossiped between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rumor<P> {
    pub peer: P,
    pub state: MemberState,
    pub incarnation: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<P> {
    pub id: P,
    pub state: MemberState,
    pub incarnation: u64,
    pub info: Option<MemberInfo>,
    pub state_since: Instant,
    /// Last evidence that the member is up (its own messages, a connection, a
    /// ping, a positive probe); for a member only known from gossip, the time
    /// we first learnt of it, so that its silence is measured from there.
    pub last_heard: Instant,
    pub connected: bool,
    pub rtt: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipConfig {
    pub suspect_timeout: Duration,
    pub dead_retention: Duration,
    pub indirect_probes: usize,
    pub probe_timeout: Duration,
    pub silence_timeout: Duration,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Ping `target` directly (reported with `on_ping` or `on_ping_failed`, as for
    /// `next_ping`) and ask `via` (up to indirect_probes alive peers, never the target, never ourselves) whether they can reach `target`;
    /// `via` may be empty (then only the direct ping happens).
    Probe { target: P, via: Vec<P> },
    /// Gossip this rumor to the cluster (suspicion/death of another node, or our own refutation: Alive with our raised incarnation, or Left).
    Announce(Rumor<P>),
    /// A member changed state (for logs, metrics and the scheduler, which fails attempts on Dead/Left peers).
    StateChanged { peer: P, from: Option<MemberState>, to: MemberState },
    /// Our direct ping of `target` (see `ping_sent`) found no answer within the (health
    /// scaled) probe timeout. Whoever asked us about the target is owed a negative answer;
    /// if the ping was for our own failure detection, report it with `on_ping_failed`.
    PingTimedOut { target: P },
}

fn rumor<P>(peer: P, state: MemberState, incarnation: u64) -> Rumor<P> {
    Rumor { peer, state, incarnation }
}

fn announce<P>(peer: P, state: MemberState, incarnation: u64) -> Action<P> {
    Action::Announce(rumor(peer, state, incarnation))
}

fn changed<P>(peer: P, from: Option<MemberState>, to: MemberState) -> Action<P> {
    Action::StateChanged { peer, from, to }
}

fn elapsed(now: Instant, since: Instant) -> Duration {
    now.saturating_duration_since(since)
}

/// SWIM precedence: does the claim `(to, i)` override what we hold, `(from, j)`?
/// Equal incarnations favour the worse news, because only the member itself
/// can raise its incarnation and so only it can overturn a suspicion.
fn supersedes(to: MemberState, i: u64, from: MemberState, j: u64) -> bool {
    match (to, from) {
        (Left, Left) => i > j,
        (Left, _) => i >= j,
        // Only a restarted node (higher incarnation) comes back from Left;
        // a node that left is never suspected or declared dead.
        (_, Left) => to == Alive && i > j,
        (Alive, _) => i > j,
        (Suspect, Alive) | (Dead, Alive | Suspect) => i >= j,
        (Suspect, Suspect) | (Dead, Dead) => i > j,
        (Suspect, Dead) => false,
    }
}

#[derive(Debug, Clone)]
struct Probe {
    started: Instant,
    /// One answer per helper plus the direct redial; once all of them are
    /// negative there is nothing left to wait for.
    expected: usize,
    negatives: usize,
    /// Started because our own direct ping went unanswered: if a helper then reaches the
    /// member, the lateness was more likely ours (a local health signal).
    after_missed_ping: bool,
}

#[derive(Debug, Clone)]
struct Entry<P> {
    member: Member<P>,
    probe: Option<Probe>,
    /// Only first-hand evidence may answer someone else's indirect probe,
    /// otherwise hearsay could keep vouching for a node nobody reaches.
    direct: Option<Instant>,
    /// When we last repeated our suspicion or death of this member to it.
    reannounced: Option<Instant>,
    /// Our direct ping in flight, since when (its deadline is kept here, not by the transport).
    ping: Option<Instant>,
}

impl<P: Copy> Entry<P> {
    fn new(now: Instant, id: P, state: MemberState, incarnation: u64) -> Self {
        let member = Member {
            id,
            state,
            incarnation,
            info: None,
            state_since: now,
            last_heard: now,
            connected: false,
            rtt: None,
        };
        Self { member, probe: None, direct: None, reannounced: None, ping: None }
    }

    fn heard(&mut self, now: Instant) {
        self.member.last_heard = now;
        self.direct = Some(now);
    }

    fn transition(&mut self, now: Instant, to: MemberState, actions: &mut Vec<Action<P>>) {
        let from = self.member.state;
        if from != to {
            self.member.state = to;
            self.member.state_since = now;
            if matches!(to, Dead | Left) {
                self.probe = None;
            }
            actions.push(changed(self.member.id, Some(from), to));
        }
    }

    /// Applies the claim `(to, i)` if SWIM precedence lets it win.
    fn apply(&mut self, now: Instant, to: MemberState, i: u64, actions: &mut Vec<Action<P>>) {
        if supersedes(to, i, self.member.state, self.member.incarnation) {
            // A suspicion at a newer incarnation is a new episode: the member
            // refuted the old one and deserves a full timeout to refute again.
            if to == Suspect && self.member.state == Suspect {
                self.member.state_since = now;
            }
            self.member.incarnation = i;
            self.transition(now, to, actions);
        }
    }

    /// A probe ended without any positive answer.
    fn probe_failed(&mut self, now: Instant, actions: &mut Vec<Action<P>>) {
        self.probe = None;
        if self.member.state == Alive {
            self.transition(now, Suspect, actions);
            actions.push(announce(self.member.id, Suspect, self.member.incarnation));
        }
    }
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
    /// Lifeguard's local health score, 0 (healthy) ..= MAX_LOCAL_HEALTH; see the module docs.
    health: u32,
    /// When lateness last raised `health` (at most once per probe timeout).
    late_at: Option<Instant>,
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
            health: 0,
            late_at: None,
        }
    }

    /// Lifeguard's local health score: 0 when healthy, up to [`MAX_LOCAL_HEALTH`].
    pub fn local_health(&self) -> u32 {
        self.health
    }

    /// A timeout as this node applies it: stretched by `1 + local health`.
    pub fn scaled(&self, timeout: Duration) -> Duration {
        timeout * (self.health + 1)
    }

    fn worse(&mut self) {
        self.health = (self.health + 1).min(MAX_LOCAL_HEALTH);
    }

    /// The node's own timers fired `delay` after they were due. Half a probe timeout late,
    /// its answers are that late too: raise the local health score (once per probe timeout).
    pub fn on_late(&mut self, now: Instant, delay: Duration) {
        let timeout = self.config.probe_timeout;
        if delay >= timeout / 2 && self.late_at.is_none_or(|t| elapsed(now, t) >= timeout) {
            self.late_at = Some(now);
            self.worse();
        }
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
            // which may have dropped out of the bounded rumor list in a burst. Repeat it (at
            // most once per suspect timeout) so that it refutes.
            let m = &entry.member;
            if matches!(m.state, Suspect | Dead)
                && incarnation == m.incarnation
                && state == Alive
                && entry.reannounced.is_none_or(|t| elapsed(now, t) >= self.config.suspect_timeout)
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
            self.health = self.health.saturating_sub(1);
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
        self.start_probe(now, peer, false).into_iter().collect()
    }

    /// The connection to `peer` closed as both ends meant it to (it lies outside the active
    /// view): no sign of failure, so no probe. Gossip, pings and probes keep vouching for it.
    pub fn on_parted(&mut self, peer: P) {
        if let Some(entry) = self.members.get_mut(&peer) {
            entry.member.connected = false;
        }
    }

    /// A direct ping went unanswered. During a probe it is the probe's own direct
    /// answer (one of `expected`); otherwise it starts a probe.
    pub fn on_ping_failed(&mut self, now: Instant, peer: P) -> Vec<Action<P>> {
        let Some(entry) = self.members.get_mut(&peer) else {
            return Vec::new();
        };
        entry.ping = None;
        if entry.probe.is_some() {
            return self.on_probe_result(now, peer, false);
        }
        self.start_probe(now, peer, true).into_iter().collect()
    }

    /// A task request failed: a reason to probe, but not an answer to a running probe.
    pub fn on_request_failed(&mut self, now: Instant, peer: P) -> Vec<Action<P>> {
        self.start_probe(now, peer, false).into_iter().collect()
    }

    /// `after_missed_ping`: started because our own direct ping went unanswered.
    fn start_probe(&mut self, now: Instant, target: P, after_missed_ping: bool) -> Option<Action<P>> {
        let entry = self.members.get(&target)?;
        if entry.probe.is_some() || matches!(entry.member.state, Dead | Left) {
            return None;
        }
        // Prefer helpers we can ask right away, then those heard from last.
        let mut helpers: Vec<&Member<P>> = self.members().filter(|m| m.state == Alive && m.id != target).collect();
        helpers.sort_by_key(|m| (!m.connected, std::cmp::Reverse(m.last_heard), m.id));
        helpers.truncate(self.config.indirect_probes);
        let via: Vec<P> = helpers.into_iter().map(|m| m.id).collect();
        let expected = via.len() + 1;
        self.members.get_mut(&target)?.probe = Some(Probe { started: now, expected, negatives: 0, after_missed_ping });
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
            self.worse();
        }
        vec![announce(self.local, self.local_state(), raised)]
    }

    pub fn on_probe_result(&mut self, now: Instant, target: P, reachable: bool) -> Vec<Action<P>> {
        let mut actions = Vec::new();
        let Some(entry) = self.members.get_mut(&target) else {
            return actions;
        };
        if reachable {
            // Also accepted after the probe timed out: a member someone can
            // reach is not suspect. Refreshing last_heard (but not the
            // first-hand `direct`) keeps tick from probing it again at once.
            let missed_by_us = entry.probe.take().is_some_and(|p| p.after_missed_ping);
            entry.member.last_heard = entry.member.last_heard.max(now);
            if entry.member.state == Suspect {
                entry.transition(now, Alive, &mut actions);
            }
            if missed_by_us {
                self.worse();
            }
        } else if let Some(probe) = entry.probe.as_mut() {
            probe.negatives = probe.negatives.saturating_add(1);
            if probe.negatives >= probe.expected {
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
            let probe_started = entry.probe.as_ref().map(|p| p.started);
            if probe_started.is_some_and(|t| elapsed(now, t) >= probe_timeout) {
                entry.probe_failed(now, &mut actions);
            }
            let m = &entry.member;
            let age = elapsed(now, m.state_since);
            let silent_for = elapsed(now, m.last_heard);
            let quiet = !m.connected && entry.probe.is_none() && silent_for >= cfg.silence_timeout;
            match m.state {
                Suspect if age >= suspect_timeout => {
                    let incarnation = m.incarnation;
                    entry.transition(now, Dead, &mut actions);
                    actions.push(announce(peer, Dead, incarnation));
                }
                Dead | Left if age >= cfg.dead_retention => expired.push(peer),
                Alive if quiet => silent.push(peer),
                _ => {}
            }
        }
        for peer in expired {
            self.members.remove(&peer);
        }
        actions.extend(silent.into_iter().filter_map(|p| self.start_probe(now, p, false)));
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
            .filter(|e| e.direct.is_some() && matches!(e.member.state, Suspect | Dead))
            .map(|e| (&e.member, e.reannounced.map_or(e.member.state_since, |t| t.max(e.member.state_since))))
            .collect();
        news.sort_by_key(|(m, since)| (std::cmp::Reverse(*since), m.id));
        news.truncate(MAX_ACTIVE_RUMORS);
        news.into_iter().map(|(m, _)| rumor(m.id, m.state, m.incarnation)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn disconnect_probe_suspect_dead_removed() {
        let (mut m, t0) = setup();
        (1..=5).for_each(|p| drop(m.on_connected(t0, p)));
        m.on_disconnected(t0, 5); // a disconnected helper ranks last
        m.on_probe_result(t0, 5, true);
        m.on_ping(t0 + secs(1), 4, ms(20)); // the freshest helper ranks first
        m.on_heartbeat(t0, 6, 0, Left); // only alive members help
        let t = t0 + secs(2);
        assert_eq!(m.on_disconnected(t, 1), probe(1, &[4, 2, 3]));
        assert!(!m.get(&1).unwrap().connected);
        assert!(m.on_ping_failed(t, 1).is_empty(), "one probe per target");
        assert!(m.on_request_failed(t, 1).is_empty());
        assert!(m.tick(t + ms(999)).is_empty());
        let t = t + secs(1);
        let suspected = vec![changed(1, Some(Alive), Suspect), announce(1, Suspect, 0)];
        assert_eq!(m.tick(t), suspected);
        assert_eq!(m.active_rumors(), [rumor(1, Suspect, 0)]);
        assert!(m.tick(t + ms(2999)).is_empty());
        let t = t + secs(3);
        assert_eq!(m.tick(t), [changed(1, Some(Suspect), Dead), announce(1, Dead, 0)]);
        assert!(m.on_ping_failed(t, 1).is_empty(), "the dead are not probed");
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
        assert!(m.on_probe_result(t0 + ms(300), 1, true).is_empty());
        assert!(m.on_probe_result(t0 + ms(400), 1, false).is_empty(), "late");
        assert!(m.tick(t0 + secs(5)).is_empty());
        // A reconnection (the direct redial) ends a probe as well.
        assert_eq!(m.on_ping_failed(t0 + secs(6), 2), probe(2, &[1]));
        m.on_connected(t0 + secs(6), 2);
        assert!(m.tick(t0 + secs(8)).is_empty());
        assert_eq!((state(&m, 1), state(&m, 2)), (Some(Alive), Some(Alive)));
    }

    #[test]
    fn all_negative_answers_suspect_before_timeout() {
        let (mut m, t0) = setup();
        (1..=3).for_each(|p| drop(m.on_connected(t0, p)));
        assert_eq!(m.on_ping_failed(t0, 1), probe(1, &[2, 3]));
        // Both helpers and the direct redial must fail.
        assert!(m.on_probe_result(t0, 1, false).is_empty());
        assert!(m.on_probe_result(t0, 1, false).is_empty());
        let third = m.on_probe_result(t0, 1, false);
        assert_eq!(third, [changed(1, Some(Alive), Suspect), announce(1, Suspect, 0)]);
        assert!(m.on_probe_result(t0, 3, false).is_empty(), "no probe running");
        assert_eq!(state(&m, 3), Some(Alive));
    }

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
        // The member has not heard it: we repeat it (once per suspect timeout) so it refutes.
        assert_eq!(m.on_heartbeat(t0 + secs(1), 1, 5, Alive), [announce(1, Suspect, 5)]);
        assert!(m.on_heartbeat(t0 + ms(1500), 1, 5, Alive).is_empty());
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
    fn revival_with_higher_incarnation() {
        let (mut m, t0) = setup();
        m.on_rumor(t0, rumor(1, Dead, 3));
        assert_eq!(m.on_heartbeat(t0, 1, 3, Alive), [announce(1, Dead, 3)]);
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
    fn silence_timeout_probes_unconnected_members() {
        let (mut m, t0) = setup();
        m.on_heartbeat(t0, 1, 0, Alive);
        m.on_connected(t0, 2); // connected, hence never silent
        assert!(m.tick(t0 + secs(90) - ms(1)).is_empty());
        let t = t0 + secs(90);
        assert_eq!(m.tick(t), probe(1, &[2]));
        assert!(m.tick(t + ms(500)).is_empty(), "probe already running");
        m.on_probe_result(t + ms(500), 1, true);
        assert!(m.tick(t + secs(2)).is_empty(), "neither suspected nor re-probed");
        assert_eq!(m.tick(t + secs(91)), probe(1, &[2]));
        m.on_probe_result(t + secs(91), 1, true);
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
    fn active_rumors_bounded_newest_first() {
        let (mut m, t0) = setup();
        m.on_connected(t0, 100);
        m.on_heartbeat(t0, 101, 0, Left);
        for p in 1..=21u32 {
            m.on_heartbeat(t0, p, 0, Alive);
            m.on_rumor(t0 + secs(p.into()), rumor(p, Suspect, 0));
        }
        m.on_rumor(t0 + secs(30), rumor(21, Dead, 2));
        m.on_rumor(t0 + secs(40), rumor(22, Dead, 0)); // hearsay only
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
                7 => m.on_probe_result(now, peer, next(2) == 0),
                8 => m.on_ping_failed(now, peer),
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
        assert_eq!(m.on_ping_failed(t0, 1), probe(1, &[2]));
        assert!(m.tick(t0 + ms(2999)).is_empty(), "the probe window is 3x");
        let t = t0 + secs(3);
        assert_eq!(m.tick(t), [changed(1, Some(Alive), Suspect), announce(1, Suspect, 0)]);
        assert!(m.tick(t + ms(8999)).is_empty(), "the suspicion lasts 3x");
        assert_eq!(m.tick(t + secs(9)), [changed(1, Some(Suspect), Dead), announce(1, Dead, 0)]);
    }

    #[test]
    fn local_health_signals_from_the_protocol() {
        let (mut m, t0) = setup();
        (1..=3).for_each(|p| drop(m.on_connected(t0, p)));
        // A helper reached the member our own ping missed: the slowness was likely ours.
        assert_eq!(m.on_ping_failed(t0, 1), probe(1, &[2, 3]));
        assert!(m.on_probe_result(t0 + ms(300), 1, true).is_empty());
        assert_eq!(m.local_health(), 1);
        // A probe for another reason (a closed connection) that a helper answers says nothing
        // about us.
        assert_eq!(m.on_disconnected(t0, 2), probe(2, &[1, 3]));
        m.on_probe_result(t0 + ms(300), 2, true);
        assert_eq!(m.local_health(), 1);
        // Having to refute a suspicion of ourselves; a stale one changes nothing.
        assert_eq!(m.on_rumor(t0, rumor(ME, Suspect, 1)), [announce(ME, Alive, 2)]);
        assert_eq!(m.local_health(), 2);
        assert!(m.on_rumor(t0, rumor(ME, Suspect, 1)).is_empty());
        assert_eq!(m.local_health(), 2);
        assert_eq!(max_ping_wait(secs(1)), secs(9));
    }

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
        m.on_probe_result(t0, rest[1], true);
        let again: Vec<u32> = (0..4).filter_map(|_| m.next_ping(false)).collect();
        assert!(again.contains(&first) && again.contains(&rest[1]) && !again.contains(&rest[0]), "{again:?}");
    }

    #[test]
    fn failed_ping_probes_and_counts_as_the_direct_answer() {
        let (mut m, t0) = setup();
        (1..=3).for_each(|p| drop(m.on_connected(t0, p)));
        // The period's ping fails: probe, pinging it once more and asking two helpers.
        assert_eq!(m.on_ping_failed(t0, 1), probe(1, &[2, 3]));
        assert!(m.on_probe_result(t0, 1, false).is_empty());
        assert!(m.on_probe_result(t0, 1, false).is_empty());
        // The second direct ping is the last of the three answers.
        assert_eq!(m.on_ping_failed(t0, 1), [changed(1, Some(Alive), Suspect), announce(1, Suspect, 0)]);
        // A task failing is a reason to probe, not an answer to a running probe.
        assert_eq!(m.on_ping_failed(t0, 2), probe(2, &[3]));
        assert!(m.on_request_failed(t0, 2).is_empty());
        assert!(m.on_probe_result(t0, 2, false).is_empty());
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
            assert!(m.on_probe_result(t0 + ms(2), 1, false).is_empty());
        }
        let t = t0 + ms(3);
        assert_eq!(m.on_ping_failed(t, 1), [changed(1, Some(Alive), Suspect), announce(1, Suspect, 0)]);
        assert!(m.tick(t + secs(3) - ms(1)).is_empty());
        assert_eq!(m.tick(t + secs(3)), [changed(1, Some(Suspect), Dead), announce(1, Dead, 0)]);
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
        assert!(m.on_heartbeat(t + secs(3) - ms(1), 1, 0, Alive).is_empty(), "once per suspect timeout");
        assert_eq!(m.on_heartbeat(t + secs(3), 1, 0, Alive), [announce(1, Dead, 0)]);
        // Its refutation (a higher incarnation) brings it back.
        assert_eq!(m.on_heartbeat(t + secs(4), 1, 1, Alive), [changed(1, Some(Dead), Alive)]);
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
}
