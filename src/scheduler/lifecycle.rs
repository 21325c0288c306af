//! A task's record from acceptance to being forgotten: creating it, bringing it to its one
//! final state (counted, logged, and handed to whoever waits for it), and pruning it later.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::admission::Checked;
use super::entry::Entry;
use super::gateway::Gateway;
use super::record::{AttemptOutcome, TaskRecord, TaskState, TimelineKind, now_ms};
use super::types::{CancelError, Effect, TaskSpec};
use crate::metrics::OutcomeLabels;

/// Final records kept at most, whatever the retention, to bound memory.
const MAX_FINISHED_RECORDS: usize = 200_000;

impl Gateway {
    /// Records a checked task and queues it; the caller pumps.
    pub(super) fn accept(&mut self, spec: TaskSpec, checked: Checked) -> String {
        // Time-ordered (UUIDv7): the store's B-tree keyed by id grows at its right edge, so a
        // group commit rewrites a few pages rather than one random page per task.
        let id = uuid::Uuid::now_v7().to_string();
        let (replicas, quorum) = (checked.replicas, checked.quorum);
        let entry = Entry::new(id.clone(), spec, checked);
        self.metrics.tasks_submitted.get_or_create(&entry.type_label()).inc();
        tracing::debug!(task_id = %id, trace_id = %entry.record.trace_id, r#type = entry.kind.name(), "task accepted");
        self.entries.insert(id.clone(), entry);
        self.place_copies(&id);
        self.touch(&id);
        self.hold_accepted(&id);
        if replicas > 1 {
            self.start_replicated(&id, replicas, quorum);
        } else {
            self.enqueue(&id, false);
        }
        id
    }

    /// Stops whatever still drives `id` (its running attempt, noted as `outcome`, its place
    /// in a queue, its retry backoff) so that it can be finished from outside.
    pub(super) fn halt(&mut self, id: &str, outcome: AttemptOutcome, error: Option<String>) {
        if let Some((attempt, peer)) =
            self.entries.get(id).and_then(|e| e.running.as_ref()).map(|r| (r.attempt, r.peer))
        {
            self.end_attempt(id, attempt, &peer, true);
            self.note_attempt(id, outcome, error);
        }
        self.unqueue(id);
        if let Some(key) = self.entries.get_mut(id).and_then(|e| e.retry_timer.take()) {
            self.timers.disarm(&key);
        }
    }

    /// Fails `id` for good, with every attempt's error as the task's error.
    pub(super) fn give_up(&mut self, id: &str) {
        let Some(e) = self.entries.get(id) else { return };
        let error = e.error_summary();
        self.finish(id, TaskState::Failed, None, Some(error));
    }

    /// Records what the completed `id` pays and hands the payments to the ledger.
    fn pay_for(&mut self, id: &str) {
        let Some(pricing) = &self.pricing else { return };
        let Some(e) = self.entries.get_mut(id) else { return };
        let Some((payment, payments)) = super::payment::decide(e, pricing, &self.local) else { return };
        e.record.payment = Some(payment);
        if !payments.is_empty() {
            self.effects.push(Effect::Pay { task: id.to_string(), payments });
        }
    }

    pub(super) fn finish(&mut self, id: &str, state: TaskState, result: Option<String>, error: Option<String>) {
        let Some(e) = self.entries.get_mut(id) else { return };
        debug_assert!(!e.record.state.is_final(), "a task reaches exactly one final state");
        if e.record.state.is_final() {
            return;
        }
        e.record.state = state;
        e.record.result = result;
        e.record.error = error;
        e.record.finished_at = Some(SystemTime::now());
        let event = match state {
            TaskState::Completed => TimelineKind::Completed,
            TaskState::Cancelled => TimelineKind::Cancelled,
            _ => TimelineKind::Failed,
        };
        let detail = e.record.error.clone();
        e.record.note(now_ms(), event, None, detail);
        // The task's span ends here, after its children.
        e.queue_span = tracing::Span::none();
        e.attempt_span = tracing::Span::none();
        e.backoff_span = tracing::Span::none();
        let span = std::mem::replace(&mut e.span, tracing::Span::none());
        span.record("task.state", state.as_str());
        span.record("task.attempts", i64::from(e.record.attempts));
        if state != TaskState::Completed {
            span.record("otel.status_code", "error");
            span.record("error.message", e.record.error.as_deref().unwrap_or(""));
        }
        drop(span);
        self.unreserve(id);
        if state == TaskState::Completed {
            self.pay_for(id);
        }
        let Some(e) = self.entries.get_mut(id) else { return };
        let labels = e.type_label();
        let replica = e.record.replica_of.is_some();
        // A replica is part of its task, not a task users submitted: counted apart.
        match state {
            _ if replica => {
                self.metrics.replicas_finished.get_or_create(&OutcomeLabels { outcome: state.as_str() }).inc()
            }
            TaskState::Completed => self.metrics.tasks_completed.get_or_create(&labels).inc(),
            TaskState::Failed => self.metrics.tasks_failed.get_or_create(&labels).inc(),
            _ => self.metrics.tasks_cancelled.get_or_create(&labels).inc(),
        };
        if !replica {
            self.metrics.task_duration.get_or_create(&labels).observe(e.started.elapsed().as_secs_f64());
        }
        // One line per completed task would be thousands a second under load: completions are
        // debug (metrics count them), the rest stay visible.
        if state == TaskState::Completed {
            tracing::debug!(task_id = %id, trace_id = %e.record.trace_id, attempts = e.record.attempts, "task finished");
        } else {
            tracing::info!(task_id = %id, trace_id = %e.record.trace_id, state = state.as_str(),
                attempts = e.record.attempts, error = e.record.error.as_deref().unwrap_or(""), "task finished");
        }
        let record = self.waiters.contains_key(id).then(|| e.record.clone());
        self.touch(id);
        if let (Some(waiters), Some(record)) = (self.waiters.remove(id), record) {
            for w in waiters {
                self.hold_waiter(w, record.clone());
            }
        }
        // A task whose replicas still run stays in memory to judge them.
        if !self.entries.get(id).is_some_and(Entry::replicas_running) {
            self.hold_evict(id);
        }
        if replica {
            self.replica_changed(id);
        }
    }

    /// Resolves `reply` when the task is final (at once if it already is).
    pub fn wait(&mut self, id: &str, reply: oneshot::Sender<TaskRecord>) -> Result<(), CancelError> {
        let Some(e) = self.entries.get(id) else {
            let record = self.stored(id).ok_or_else(|| CancelError::NotFound(id.to_string()))?;
            let _ = reply.send(record);
            return Ok(());
        };
        if e.record.state.is_final() {
            let _ = reply.send(e.record.clone());
        } else {
            self.waiters.entry(id.to_string()).or_default().push(reply);
        }
        Ok(())
    }

    /// Forgets final records older than the retention (or beyond the hard cap).
    pub fn prune(&mut self, now: Instant) {
        if self.durable.enabled() {
            self.prune_stored();
            return;
        }
        let retention = Duration::from_secs(self.config.retention_secs);
        while let Some((at, _)) = self.finished.front() {
            if now.duration_since(*at) < retention && self.finished.len() <= MAX_FINISHED_RECORDS {
                break;
            }
            if let Some((_, id)) = self.finished.pop_front() {
                self.entries.remove(&id);
            }
        }
    }
}
