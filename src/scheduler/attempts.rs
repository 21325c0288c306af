//! One attempt of a task on one worker: sending it, ending it (answer, deadline, lost worker,
//! cancel), judging the answer, and what follows: completion, a retry after backoff, failure
//! for good, or (busy) another worker at no cost.

use libp2p::PeerId;

use super::entry::{Entry, Running};
use super::gateway::Gateway;
use super::record::{AttemptOutcome, AttemptRecord, TaskState, TimelineKind, now_ms};
use super::timers::Timer;
use super::types::Effect;
use crate::metrics::DropReason;
use crate::network::DispatchError;
use crate::protocol::{TaskError, TaskOutcome, TaskResponse};
use crate::tasks::{self, TaskKind};
use crate::telemetry::TARGET;

/// What an answer to the running attempt means for its task.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// A result that holds up: the task is complete.
    Done(String),
    /// The worker refused for now; the task never ran there.
    Busy,
    /// The right peer answered, but for another task, attempt or worker.
    Mismatched,
    /// An error every worker would give: retrying cannot help.
    Fatal(TaskError),
    /// The attempt failed in a way another worker may not.
    Retry(AttemptOutcome, String),
}

/// Judges `result`, the answer to attempt `attempt` of `entry` (task `task_id`). Pure: the
/// gateway acts on the verdict.
pub(super) fn judge(
    entry: &Entry,
    task_id: &str,
    attempt: u32,
    result: Result<TaskResponse, DispatchError>,
    compute_difficulty: u32,
) -> Verdict {
    // The attempt's worker id as dispatched (string compare: no base58 per answer).
    let sent_to = entry.record.worker.as_deref().unwrap_or_default();
    let response = match result {
        Ok(r) if r.task_id == task_id && r.attempt == attempt && r.worker == sent_to => r,
        Ok(_) => return Verdict::Mismatched,
        // The request or its answer went missing on the way: nothing says another worker
        // would fail too. Every kind is named so that a new one gets a decision here.
        Err(
            e @ (DispatchError::Unreachable(_)
            | DispatchError::ConnectionLost(_)
            | DispatchError::Timeout
            | DispatchError::BadResponse(_)),
        ) => return Verdict::Retry(AttemptOutcome::Lost, e.to_string()),
    };
    match response.outcome {
        TaskOutcome::Ok(result) if entry.kind == TaskKind::Compute => {
            match tasks::verify(entry.record.payload.as_bytes(), &result, compute_difficulty) {
                Ok(_) => Verdict::Done(result),
                Err(why) => Verdict::Retry(AttemptOutcome::Error, format!("result failed verification: {why}")),
            }
        }
        TaskOutcome::Ok(result) => Verdict::Done(result),
        TaskOutcome::Err(TaskError::Busy) => Verdict::Busy,
        TaskOutcome::Err(err) if !err.retryable() => Verdict::Fatal(err),
        TaskOutcome::Err(err) => Verdict::Retry(AttemptOutcome::Error, err.to_string()),
    }
}

impl Gateway {
    pub(super) fn dispatch(&mut self, id: &str, peer: PeerId) {
        let Some(e) = self.entries.get_mut(id) else { return };
        e.record.attempts += 1;
        let attempt = e.record.attempts;
        e.record.state = TaskState::Running;
        let worker = self.names.entry(peer).or_insert_with(|| peer.to_string()).clone();
        e.record.worker = Some(worker.clone());
        e.attempt_span = tracing::info_span!(target: TARGET, parent: &e.span, "attempt", otel.kind = "client",
            task.id = %id, task.attempt = i64::from(attempt), worker.peer_id = %worker, worker.local = peer == self.local,
            attempt.outcome = tracing::field::Empty, error.message = tracing::field::Empty);
        e.record.note(now_ms(), TimelineKind::Dispatched, Some(worker.clone()), None);
        let outcome = AttemptOutcome::Running.as_str().into();
        e.record.attempt_history.push(AttemptRecord { attempt, worker, outcome, error: None });
        let deadline = self.timers.arm(Timer::AttemptDeadline { id: id.to_string(), attempt }, e.timeout);
        e.running = Some(Running { attempt, peer, deadline });
        let request = e.request(id, attempt);
        tracing::debug!(task_id = %id, trace_id = %e.record.trace_id, attempt, worker = %peer, "dispatching");
        self.load.started(peer);
        self.touch(id);
        self.effects.push(if peer == self.local {
            Effect::RunLocal { request }
        } else {
            Effect::Dispatch { peer, request }
        });
        self.replica_changed(id);
    }

    /// Ends the running attempt of `id` if it is `(attempt, peer)`; false for a stale answer.
    pub(super) fn end_attempt(&mut self, id: &str, attempt: u32, peer: &PeerId, cancel_deadline: bool) -> bool {
        let Some(e) = self.entries.get_mut(id) else { return false };
        match &e.running {
            Some(r) if r.attempt == attempt && r.peer == *peer => {}
            _ => return false,
        }
        let r = e.running.take().expect("checked just above that an attempt is running");
        if cancel_deadline {
            self.timers.disarm(&r.deadline);
        }
        self.load.ended(peer);
        true
    }

    pub(super) fn note_attempt(&mut self, id: &str, outcome: AttemptOutcome, error: Option<String>) {
        if let Some(e) = self.entries.get_mut(id) {
            e.note_attempt(outcome, error);
            self.touch(id);
        }
    }

    /// Acts on the verdict on `peer`'s answer to the (already ended) attempt of `id`.
    pub(super) fn settle(&mut self, id: &str, peer: PeerId, verdict: Verdict) {
        match verdict {
            Verdict::Done(result) => {
                self.note_attempt(id, AttemptOutcome::Ok, None);
                self.finish(id, TaskState::Completed, Some(result), None);
            }
            Verdict::Busy => self.worker_busy(id, peer),
            Verdict::Mismatched => {
                self.metrics.dropped(DropReason::MismatchedTaskResult);
                self.attempt_failed(id, AttemptOutcome::Lost, format!("worker {peer} answered for another task"));
            }
            Verdict::Fatal(err) => {
                self.note_attempt(id, AttemptOutcome::Error, Some(err.to_string()));
                if let Some(e) = self.entries.get_mut(id) {
                    e.failures += 1;
                    e.deterministic_failure = Some(err.to_string());
                }
                self.give_up(id);
            }
            Verdict::Retry(outcome, reason) => self.attempt_failed(id, outcome, reason),
        }
    }

    /// The task never ran, so this costs no attempt; prefer other workers next.
    fn worker_busy(&mut self, id: &str, peer: PeerId) {
        if let Some(delay) = self.load.refused(peer, &self.policy) {
            self.timers.arm(Timer::Unsaturate { peer }, delay);
        }
        self.note_attempt(id, AttemptOutcome::Busy, Some(TaskError::Busy.to_string()));
        if let Some(e) = self.entries.get_mut(id) {
            e.tried.push(peer);
        }
        self.enqueue(id, true);
    }

    /// An attempt failed in a way another worker may not: retry with backoff or give up.
    pub(super) fn attempt_failed(&mut self, id: &str, outcome: AttemptOutcome, reason: String) {
        let Some(e) = self.entries.get(id) else { return };
        tracing::debug!(task_id = %id, trace_id = %e.record.trace_id, attempt = e.record.attempts, %reason, "attempt failed");
        self.note_attempt(id, outcome, Some(reason));
        let Some(e) = self.entries.get_mut(id) else { return };
        e.failures += 1;
        if let Some(w) =
            e.running.as_ref().map(|r| r.peer).or_else(|| e.record.worker.as_ref().and_then(|w| w.parse().ok()))
        {
            e.tried.push(w);
        }
        if e.failures >= e.max_attempts {
            self.give_up(id);
            return;
        }
        self.metrics.tasks_retried.get_or_create(&e.type_label()).inc();
        e.record.state = TaskState::Pending;
        let delay = self.policy.delay(e.failures, rand::random());
        e.backoff_span = tracing::info_span!(target: TARGET, parent: &e.span, "backoff", task.id = %id,
            task.failures = i64::from(e.failures), backoff.ms = delay.as_millis() as i64);
        e.retry_timer = Some(self.timers.arm(Timer::RetryDue { id: id.to_string() }, delay));
    }

    /// The attempt's deadline passed without an answer.
    pub(super) fn attempt_deadline(&mut self, id: &str, attempt: u32) {
        let Some(peer) = self.entries.get(id).and_then(|e| e.running.as_ref()).map(|r| r.peer) else {
            return;
        };
        let timeout = self.entries.get(id).map(|e| e.timeout).unwrap_or_default();
        // The deadline has fired, so its key is gone: nothing to disarm.
        if self.end_attempt(id, attempt, &peer, false) {
            self.attempt_failed(id, AttemptOutcome::Timeout, format!("no answer within {} ms", timeout.as_millis()));
        }
    }

    /// The backoff after a failed attempt is over: the task waits for a worker again, first.
    pub(super) fn retry_due(&mut self, id: &str) {
        if let Some(e) = self.entries.get_mut(id)
            && e.retry_timer.take().is_some()
            && !e.record.state.is_final()
        {
            e.backoff_span = tracing::Span::none();
            self.enqueue(id, true);
        }
    }
}
