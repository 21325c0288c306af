//! Lifeguard's local health: the 0-8 score of this node's own slowness, and the stretching of its timeouts by it.
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

use std::time::{Duration, Instant};

use super::elapsed;

/// The local health score's ceiling (Lifeguard's S): timeouts stretch at most 9x. The
/// network's own deadline for a ping must allow for that (see [`max_ping_wait`]).
pub const MAX_LOCAL_HEALTH: u32 = 8;

/// The longest this node may wait for a ping's answer, at the worst local health: the
/// transport's request timeout for probes, so that the deadline is membership's.
pub fn max_ping_wait(probe_timeout: Duration) -> Duration {
    probe_timeout * (MAX_LOCAL_HEALTH + 1)
}

/// The score and the pacing of its lateness signal; the protocol's signals (a refutation, a
/// missed ping someone else answered, a ping answered in time) come from the state machine.
#[derive(Debug, Clone, Default)]
pub(super) struct LocalHealth {
    /// Lifeguard's local health score, 0 (healthy) ..= MAX_LOCAL_HEALTH; see the module docs.
    score: u32,
    /// When lateness last raised `score` (at most once per probe timeout).
    late_at: Option<Instant>,
}

impl LocalHealth {
    pub(super) fn score(&self) -> u32 {
        self.score
    }

    /// A timeout as this node applies it: stretched by `1 + score`.
    pub(super) fn scaled(&self, timeout: Duration) -> Duration {
        timeout * (self.score + 1)
    }

    pub(super) fn worse(&mut self) {
        self.score = (self.score + 1).min(MAX_LOCAL_HEALTH);
    }

    /// A ping of ours answered before its deadline.
    pub(super) fn better(&mut self) {
        self.score = self.score.saturating_sub(1);
    }

    /// Our timers fired `delay` late: half a probe timeout late, our answers are that late
    /// too. Counted once per probe timeout, so one long stall is one signal, not many.
    pub(super) fn on_late(&mut self, now: Instant, delay: Duration, probe_timeout: Duration) {
        if delay >= probe_timeout / 2 && self.late_at.is_none_or(|t| elapsed(now, t) >= probe_timeout) {
            self.late_at = Some(now);
            self.worse();
        }
    }
}
