//! Whether a submission may be accepted: its type, payload, timeout and attempt count against
//! the limits, and whether any alive worker could ever run it. Pure: the gateway counts the
//! refusals and checks its queue's room itself.

use std::time::Duration;

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
    if !workers.iter().any(|w| qualifies(w, kind)) {
        let capability = kind.capability().unwrap_or("worker").to_string();
        return Err(Refused(
            Rejection::NoCapableWorker,
            SubmitError::NoCapableWorker { capability, alive: workers.len() },
        ));
    }
    Ok(Checked { kind, timeout: Duration::from_millis(timeout_ms), max_attempts })
}

fn qualifies(w: &WorkerView, kind: TaskKind) -> bool {
    kind.capability().is_none_or(|cap| w.capabilities.iter().any(|c| c == cap))
}
