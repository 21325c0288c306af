//! Whether a submission may be accepted: its type, payload, timeout and attempt count against
//! the limits, and whether any alive worker could ever run it. Pure: the gateway counts the
//! refusals and checks its queue's room itself.

use std::time::Duration;

use super::quorum::MAX_REPLICAS;
use super::reasons::Rejection;
use super::types::{SubmitError, TaskSpec, WorkerView};
use crate::config::TasksConfig;
use crate::tasks::TaskKind;

/// Longest per-attempt timeout a submitter may ask for.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// A submission that passed validation.
pub(super) struct Checked {
    pub(super) kind: TaskKind,
    pub(super) timeout: Duration,
    pub(super) max_attempts: u32,
    /// Replicas to run on distinct workers (1: not replicated) and how many must agree.
    pub(super) replicas: u32,
    pub(super) quorum: u32,
}

/// A refused submission: the reason it is counted under, and what the submitter is told.
#[derive(Debug)]
pub(super) struct Refused(pub(super) Rejection, pub(super) SubmitError);

/// Validates a submission; the first failing check refuses it.
pub(super) fn check(spec: &TaskSpec, workers: &[WorkerView], config: &TasksConfig) -> Result<Checked, Refused> {
    let Some(kind) = TaskKind::parse(&spec.task_type) else {
        return Err(Refused(Rejection::UnknownType, SubmitError::UnknownType(spec.task_type.clone())));
    };
    if let Err(message) = kind.validate_payload(&spec.payload) {
        return Err(Refused(Rejection::BadPayload, SubmitError::Invalid { field: "payload", message }));
    }
    let timeout_ms = spec.timeout_ms.unwrap_or(config.default_timeout_ms);
    if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
        let message = format!("must be 1..={MAX_TIMEOUT_MS}");
        return Err(Refused(Rejection::BadTimeout, SubmitError::Invalid { field: "timeout_ms", message }));
    }
    let max_attempts = spec.max_attempts.unwrap_or(config.max_attempts);
    if !(1..=100).contains(&max_attempts) {
        let message = "must be 1..=100".into();
        return Err(Refused(Rejection::BadMaxAttempts, SubmitError::Invalid { field: "max_attempts", message }));
    }
    let (replicas, quorum) = redundancy(spec, kind)?;
    let capable = workers.iter().filter(|w| qualifies(w, kind)).count();
    let capability = || kind.capability().unwrap_or("worker").to_string();
    if capable == 0 {
        return Err(Refused(
            Rejection::NoCapableWorker,
            SubmitError::NoCapableWorker { capability: capability(), alive: workers.len() },
        ));
    }
    if capable < replicas as usize {
        return Err(Refused(
            Rejection::NotEnoughWorkers,
            SubmitError::NotEnoughWorkers { capability: capability(), replicas, capable },
        ));
    }
    Ok(Checked { kind, timeout: Duration::from_millis(timeout_ms), max_attempts, replicas, quorum })
}

/// The replicas and quorum asked for: 1 and 1 unless given; a quorum left out is a majority.
fn redundancy(spec: &TaskSpec, kind: TaskKind) -> Result<(u32, u32), Refused> {
    let bad =
        |field: &'static str, message: String| Refused(Rejection::BadReplicas, SubmitError::Invalid { field, message });
    if kind != TaskKind::Wasm {
        for (field, given) in [("replicas", spec.replicas.is_some()), ("quorum", spec.quorum.is_some())] {
            if given {
                return Err(bad(field, "only for type wasm (compute results are checked by their hash)".into()));
            }
        }
        return Ok((1, 1));
    }
    let replicas = spec.replicas.unwrap_or(1);
    if !(1..=MAX_REPLICAS).contains(&replicas) {
        return Err(bad("replicas", format!("must be 1..={MAX_REPLICAS}")));
    }
    let quorum = spec.quorum.unwrap_or(replicas / 2 + 1);
    if !(1..=replicas).contains(&quorum) {
        return Err(bad("quorum", format!("must be 1..=replicas ({replicas})")));
    }
    Ok((replicas, quorum))
}

fn qualifies(w: &WorkerView, kind: TaskKind) -> bool {
    kind.capability().is_none_or(|cap| w.capabilities.iter().any(|c| c == cap))
}
