//! Whether an inbound task request is let through to the worker: from a member of our
//! cluster, in our wire version, from an allowed submitter, within the per-peer rate. Pure
//! apart from the rate limiter's clock.

use std::collections::HashSet;

use libp2p::PeerId;

use crate::config::Config;
use crate::metrics::{DropReason, Limit, Metrics};
use crate::protocol::{TaskError, TaskRequest, WIRE_VERSION};

pub(super) struct Admission {
    /// Peers that may send tasks here (`security.allowed_submitters`); `None`: any member.
    allowed_submitters: Option<HashSet<PeerId>>,
    /// Task requests per peer per second (`limits.task_requests_per_peer_per_sec`).
    rate: Option<governor::DefaultKeyedRateLimiter<PeerId>>,
}

/// Why a task request was refused before reaching the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Identify has not confirmed the sender is of our cluster yet (a task can arrive on a
    /// new connection before Identify's answer): busy, so the sender retries soon.
    Unidentified,
    Version(u16),
    NotAllowed,
    /// Busy costs the sender's task no attempt; it backs off and retries.
    RateLimited,
}

impl Refusal {
    /// The answer the sender gets.
    pub fn error(&self) -> TaskError {
        match self {
            Refusal::Unidentified | Refusal::RateLimited => TaskError::Busy,
            Refusal::Version(v) => TaskError::Version(*v),
            Refusal::NotAllowed => TaskError::NotAllowed,
        }
    }

    /// Counts the refusal under its metric.
    pub fn count(&self, metrics: &Metrics) {
        match self {
            Refusal::Unidentified => metrics.dropped(DropReason::TaskFromUnidentifiedPeer),
            Refusal::Version(_) => metrics.dropped(DropReason::TaskVersion),
            Refusal::NotAllowed => metrics.dropped(DropReason::TaskSubmitterNotAllowed),
            Refusal::RateLimited => metrics.limit_hit(Limit::TaskRequestsPerPeer),
        }
    }
}

impl Admission {
    pub fn new(config: &Config) -> Self {
        Self {
            allowed_submitters: (!config.security.allowed_submitters.is_empty())
                .then(|| config.security.allowed_submitters.iter().copied().collect()),
            rate: std::num::NonZeroU32::new(config.limits.task_requests_per_peer_per_sec)
                .map(|n| governor::RateLimiter::keyed(governor::Quota::per_second(n))),
        }
    }

    /// Checks `request` from `peer`; `member`: Identify confirmed `peer` is of our cluster.
    pub fn check(&self, peer: &PeerId, request: &TaskRequest, member: bool) -> Result<(), Refusal> {
        if !member {
            return Err(Refusal::Unidentified);
        }
        if request.v != WIRE_VERSION {
            return Err(Refusal::Version(request.v));
        }
        if self.allowed_submitters.as_ref().is_some_and(|a| !a.contains(peer)) {
            tracing::debug!(%peer, "task from a peer not in security.allowed_submitters refused");
            return Err(Refusal::NotAllowed);
        }
        if self.rate.as_ref().is_some_and(|r| r.check_key(peer).is_err()) {
            return Err(Refusal::RateLimited);
        }
        Ok(())
    }

    /// Forgets rate-limit state of peers that have gone quiet.
    pub fn prune(&self) {
        if let Some(rate) = &self.rate {
            rate.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(v: u16) -> TaskRequest {
        TaskRequest {
            v,
            task_id: "t".into(),
            attempt: 1,
            task_type: "echo".into(),
            payload: String::new(),
            required_capabilities: Vec::new(),
            deadline_ms: 1000,
            trace: None,
        }
    }

    fn admission(allowed: Option<&[PeerId]>, per_sec: u32) -> Admission {
        let mut config = Config::default();
        config.security.allowed_submitters = allowed.unwrap_or_default().to_vec();
        config.limits.task_requests_per_peer_per_sec = per_sec;
        Admission::new(&config)
    }

    #[test]
    fn strangers_and_other_versions_are_refused_first() {
        let a = admission(None, 0);
        let peer = PeerId::random();
        assert_eq!(a.check(&peer, &request(WIRE_VERSION), false), Err(Refusal::Unidentified));
        assert_eq!(Refusal::Unidentified.error(), TaskError::Busy, "the sender retries soon");
        let newer = WIRE_VERSION + 1;
        assert_eq!(a.check(&peer, &request(newer), true), Err(Refusal::Version(newer)));
        assert_eq!(a.check(&peer, &request(WIRE_VERSION), true), Ok(()));
    }

    #[test]
    fn only_allowed_submitters_pass_when_a_list_is_given() {
        let (friend, other) = (PeerId::random(), PeerId::random());
        let a = admission(Some(&[friend]), 0);
        assert_eq!(a.check(&friend, &request(WIRE_VERSION), true), Ok(()));
        assert_eq!(a.check(&other, &request(WIRE_VERSION), true), Err(Refusal::NotAllowed));
        assert_eq!(Refusal::NotAllowed.error(), TaskError::NotAllowed);
    }

    #[test]
    fn the_per_peer_rate_refuses_the_excess_as_busy() {
        let a = admission(None, 2);
        let (peer, other) = (PeerId::random(), PeerId::random());
        let results: Vec<_> = (0..3).map(|_| a.check(&peer, &request(WIRE_VERSION), true)).collect();
        assert_eq!(results, [Ok(()), Ok(()), Err(Refusal::RateLimited)]);
        assert_eq!(a.check(&other, &request(WIRE_VERSION), true), Ok(()), "the limit is per peer");
        assert_eq!(Refusal::RateLimited.error(), TaskError::Busy);
    }
}
