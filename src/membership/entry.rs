//! One member as the table holds it: its state and advertisement, the claims gossiped about
//! it, the actions they cause, and SWIM's precedence deciding which claim wins.

use std::fmt::{self, Display};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use MemberState::{Alive, Dead, Left, Suspect};

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

/// One answer to a probe: a helper's, or our own direct ping's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The member answered.
    Reachable,
    /// The ping failed: the connection closed or the dial was refused, or the member said it
    /// is leaving. Evidence against the member.
    Unreachable,
    /// The ping timed out, or the helper could not be asked: no evidence either way (a slow
    /// machine, ours or theirs, times out as well as a dead member does).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<P> {
    pub id: P,
    pub state: MemberState,
    pub incarnation: u64,
    pub info: Option<MemberInfo>,
    /// When this node took `info` in (the member's latest advertisement).
    pub advertised: Option<Instant>,
    pub state_since: Instant,
    /// Last evidence that the member is up (its own messages, a connection, a
    /// ping, a positive probe); for a member only known from gossip, the time
    /// we first learnt of it, so that its silence is measured from there.
    pub last_heard: Instant,
    pub connected: bool,
    pub rtt: Option<Duration>,
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
    /// scaled) probe timeout. Whoever asked us about the target is owed the answer "timed
    /// out"; if the ping was for our own failure detection, report it with `on_ping_failed`
    /// and `Reach::Unknown`.
    PingTimedOut { target: P },
}

pub(super) fn rumor<P>(peer: P, state: MemberState, incarnation: u64) -> Rumor<P> {
    Rumor { peer, state, incarnation }
}

pub(super) fn announce<P>(peer: P, state: MemberState, incarnation: u64) -> Action<P> {
    Action::Announce(rumor(peer, state, incarnation))
}

pub(super) fn changed<P>(peer: P, from: Option<MemberState>, to: MemberState) -> Action<P> {
    Action::StateChanged { peer, from, to }
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
pub(super) struct Probe {
    pub(super) started: Instant,
    /// One answer per helper plus the direct redial; once all of them are
    /// negative there is nothing left to wait for.
    pub(super) expected: usize,
    /// Answers that the member could not be reached: a failed ping (a closed connection, a
    /// refused dial), ours or a helper's.
    pub(super) negatives: usize,
    /// Answers of any kind, in time or not: a helper's "my ping timed out" (Lifeguard's nack)
    /// is an answer but no evidence against the member.
    pub(super) answered: usize,
    /// Our own direct ping of the member answered: the first outcome counts, later ones (the
    /// transport's own timeout, libp2p's ping) are the same party again.
    pub(super) direct_answered: bool,
    /// The window ran out once before every asked party answered, and was given once more.
    pub(super) extended: bool,
    pub(super) cause: ProbeCause,
}

/// Why a probe started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProbeCause {
    /// Our own direct ping went unanswered: if a helper then reaches the member, the lateness
    /// was more likely ours (a local health signal).
    MissedPing,
    /// The connection to the member failed.
    Disconnected,
    /// A task request to the member failed.
    RequestFailed,
    /// Not connected, and not heard from for the silence timeout.
    Silent,
}

impl ProbeCause {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ProbeCause::MissedPing => "missed_ping",
            ProbeCause::Disconnected => "disconnected",
            ProbeCause::RequestFailed => "request_failed",
            ProbeCause::Silent => "silent",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Entry<P> {
    pub(super) member: Member<P>,
    pub(super) probe: Option<Probe>,
    /// Only first-hand evidence may answer someone else's indirect probe,
    /// otherwise hearsay could keep vouching for a node nobody reaches.
    pub(super) direct: Option<Instant>,
    /// When we last repeated our suspicion or death of this member to it.
    pub(super) reannounced: Option<Instant>,
    /// We suspected it ourselves (our probe failed), rather than heard so: only first-hand
    /// suspicions are announced and repeated, so that one suspicion is one message and not
    /// one from every node that heard of it.
    pub(super) suspected_by_us: bool,
    /// Our direct ping in flight, since when (its deadline is kept here, not by the transport).
    pub(super) ping: Option<Instant>,
}

impl<P: Copy> Entry<P> {
    pub(super) fn new(now: Instant, id: P, state: MemberState, incarnation: u64) -> Self {
        let member = Member {
            id,
            state,
            incarnation,
            info: None,
            advertised: None,
            state_since: now,
            last_heard: now,
            connected: false,
            rtt: None,
        };
        Self { member, probe: None, direct: None, reannounced: None, ping: None, suspected_by_us: false }
    }

    pub(super) fn heard(&mut self, now: Instant) {
        self.member.last_heard = now;
        self.direct = Some(now);
    }

    pub(super) fn transition(&mut self, now: Instant, to: MemberState, actions: &mut Vec<Action<P>>) {
        let from = self.member.state;
        if from != to {
            self.member.state = to;
            self.member.state_since = now;
            if to == Alive {
                self.suspected_by_us = false;
            }
            if matches!(to, Dead | Left) {
                self.probe = None;
            }
            actions.push(changed(self.member.id, Some(from), to));
        }
    }

    /// Applies the claim `(to, i)` if SWIM precedence lets it win.
    pub(super) fn apply(&mut self, now: Instant, to: MemberState, i: u64, actions: &mut Vec<Action<P>>) {
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
    pub(super) fn probe_failed(&mut self, now: Instant, actions: &mut Vec<Action<P>>) {
        self.probe = None;
        if self.member.state == Alive {
            self.transition(now, Suspect, actions);
            self.suspected_by_us = true;
            actions.push(announce(self.member.id, Suspect, self.member.incarnation));
        }
    }
}
