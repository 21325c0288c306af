//! Verification by redundancy, the decision alone: given what each replica of a task has
//! said so far, is there a quorum, is one still possible with the replicas running, should
//! more be launched, or is agreement out of reach? Pure: `replicas` acts on the decision.
//!
//! A replica's vote is its output's SHA-256 with the fuel it burned (with the same engine
//! settings both are deterministic, so honest workers agree on both), or the error of a
//! deterministic failure (a trap, out of fuel: honest workers agree on those too). A replica
//! that ended without one (its worker lost, every attempt timed out, cancelled) does not vote.

use std::collections::HashMap;

/// Most replicas one task may ask for.
pub const MAX_REPLICAS: u32 = 7;

/// What one replica said, as the quorum compares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum VoteKey {
    /// SHA-256 of the output (hex) and the fuel burned.
    Output { sha256: String, fuel: Option<u64> },
    /// The error of a failure any worker would reproduce.
    Failure(String),
}

/// One replica, as far as the decision goes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Vote {
    /// Not final yet: it may still vote.
    Running,
    /// Final without a vote.
    Abstained,
    Cast(VoteKey),
}

#[derive(Debug, PartialEq)]
pub(super) enum Decision {
    /// At least `quorum` replicas said this.
    Agreed(VoteKey),
    /// No quorum yet, but the running replicas can still make one.
    Wait,
    /// Launch this many more replicas: without them no quorum is possible.
    Launch(u32),
    /// Even with every replica the bound allows, no quorum is possible.
    NoQuorum,
}

/// Most replicas a task asking for `replicas` may run in all, disagreements included.
pub(super) fn max_total(replicas: u32) -> u32 {
    replicas.saturating_mul(2).min(2 * MAX_REPLICAS)
}

/// Decides on `votes` (every replica launched so far) for `quorum`, launching at most
/// `max_total` replicas in all.
pub(super) fn decide(votes: &[Vote], quorum: u32, max_total: u32) -> Decision {
    let mut tally: HashMap<&VoteKey, u32> = HashMap::new();
    let mut running = 0u32;
    for vote in votes {
        match vote {
            Vote::Running => running += 1,
            Vote::Abstained => {}
            Vote::Cast(key) => *tally.entry(key).or_default() += 1,
        }
    }
    // Ties go to the key seen first, so that the decision does not depend on hash order.
    let mut best: Option<(&VoteKey, u32)> = None;
    for vote in votes {
        if let Vote::Cast(key) = vote {
            let n = tally[key];
            if best.is_none_or(|(_, m)| n > m) {
                best = Some((key, n));
            }
        }
    }
    let best_count = best.map_or(0, |(_, n)| n);
    if let Some((key, n)) = best
        && n >= quorum
    {
        return Decision::Agreed(key.clone());
    }
    if best_count + running >= quorum {
        return Decision::Wait;
    }
    let launched = votes.len() as u32;
    let missing = quorum - best_count - running;
    if launched + missing <= max_total { Decision::Launch(missing) } else { Decision::NoQuorum }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(s: &str) -> Vote {
        Vote::Cast(VoteKey::Output { sha256: s.into(), fuel: Some(7) })
    }

    #[test]
    fn agreement_of_a_quorum_completes_whatever_the_rest_say() {
        assert_eq!(decide(&[out("a"), out("a"), Vote::Running], 2, 6), Decision::Agreed(out_key("a")));
        assert_eq!(decide(&[out("b"), out("a"), out("a")], 2, 6), Decision::Agreed(out_key("a")));
        assert_eq!(decide(&[out("a")], 1, 2), Decision::Agreed(out_key("a")));
    }

    fn out_key(s: &str) -> VoteKey {
        VoteKey::Output { sha256: s.into(), fuel: Some(7) }
    }

    #[test]
    fn running_replicas_that_can_still_make_a_quorum_are_waited_for() {
        assert_eq!(decide(&[out("a"), Vote::Running, Vote::Running], 2, 6), Decision::Wait);
        assert_eq!(decide(&[out("a"), out("b"), Vote::Running], 2, 6), Decision::Wait);
        assert_eq!(decide(&[Vote::Running, Vote::Running, Vote::Running], 3, 6), Decision::Wait);
    }

    #[test]
    fn disagreement_launches_just_enough_replicas_up_to_the_bound() {
        // a, b, c: one more can make a pair.
        assert_eq!(decide(&[out("a"), out("b"), out("c")], 2, 6), Decision::Launch(1));
        // A replica that abstained (its workers were lost) is replaced.
        assert_eq!(decide(&[out("a"), Vote::Abstained, Vote::Running], 3, 6), Decision::Launch(1));
        assert_eq!(decide(&[Vote::Abstained, Vote::Abstained], 2, 4), Decision::Launch(2));
    }

    #[test]
    fn agreement_out_of_reach_ends_without_a_quorum() {
        let votes = [out("a"), out("b"), out("c"), out("d"), out("e"), out("f")];
        assert_eq!(decide(&votes, 2, 6), Decision::NoQuorum);
        assert_eq!(decide(&[Vote::Abstained, Vote::Abstained, out("a")], 3, 4), Decision::NoQuorum);
    }

    #[test]
    fn fuel_is_part_of_the_vote_and_failures_vote_too() {
        let more_fuel = Vote::Cast(VoteKey::Output { sha256: "a".into(), fuel: Some(8) });
        assert_eq!(decide(&[out("a"), more_fuel], 2, 4), Decision::Launch(1));
        let trap = || Vote::Cast(VoteKey::Failure("trapped: unreachable".into()));
        assert_eq!(
            decide(&[trap(), out("a"), trap()], 2, 6),
            Decision::Agreed(VoteKey::Failure("trapped: unreachable".into()))
        );
    }

    #[test]
    fn ties_go_to_the_first_seen() {
        assert_eq!(decide(&[out("b"), out("a"), out("a"), out("b")], 2, 8), Decision::Agreed(out_key("b")));
    }

    #[test]
    fn the_bound_doubles_the_replicas_asked_for() {
        assert_eq!(max_total(3), 6);
        assert_eq!(max_total(MAX_REPLICAS), 2 * MAX_REPLICAS);
    }
}
