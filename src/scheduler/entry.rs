//! What the gateway holds for one accepted task: the record users see, and the state that
//! drives it (the attempt in flight, armed timers, failures so far, workers tried).

use std::time::{Duration, Instant, SystemTime};

use libp2p::PeerId;
use tokio_util::time::delay_queue;
use tracing::Span;
use tracing::field::Empty;

use super::admission::Checked;
use super::durable::Stored;
use super::quorum::VoteKey;
use super::record::{AttemptOutcome, TaskRecord, TaskState, TimelineKind, now_ms};
use super::types::TaskSpec;
use crate::metrics::TypeLabels;
use crate::protocol::{TaskRequest, WIRE_VERSION};
use crate::tasks::TaskKind;
use crate::telemetry::{self, Remote, TARGET, TraceContext};

pub(super) struct Running {
    pub(super) attempt: u32,
    pub(super) peer: PeerId,
    pub(super) deadline: delay_queue::Key,
}

pub(super) struct Entry {
    pub(super) record: TaskRecord,
    pub(super) kind: TaskKind,
    pub(super) timeout: Duration,
    pub(super) max_attempts: u32,
    pub(super) failures: u32,
    pub(super) running: Option<Running>,
    pub(super) retry_timer: Option<delay_queue::Key>,
    /// Set while the task sits in a queue; the number matches its queue deadline timer.
    pub(super) queued: Option<(u64, delay_queue::Key)>,
    pub(super) tried: Vec<PeerId>,
    pub(super) started: Instant,
    /// Changed since the record last went to the store.
    pub(super) dirty: bool,
    /// The nodes holding copies of the record (its `copies`, parsed).
    pub(super) holders: Vec<PeerId>,
    /// A copy holder adopted the task: this gateway no longer drives it.
    pub(super) handed_over: bool,
    /// The error of the latest attempt when it is one any worker would reproduce (a replica's
    /// vote when it fails).
    pub(super) deterministic_failure: Option<String>,
    /// A replicated task: what its quorum agreed on, once it did (late replicas are judged
    /// against it).
    pub(super) agreed: Option<VoteKey>,
    /// With `ledger.enforce`: the credits held back for it until it is final.
    pub(super) reserved: u64,
    /// The task's span, from acceptance to its final state; disabled (free) when traces are
    /// not exported. The spans below are its children, each open while its phase lasts.
    pub(super) span: Span,
    pub(super) queue_span: Span,
    pub(super) attempt_span: Span,
    pub(super) backoff_span: Span,
}

/// The span of a task, child of `parent` when the submission came with a trace.
fn task_span(id: &str, kind: TaskKind, parent: Option<&Remote>, resumed: bool) -> Span {
    let span = tracing::info_span!(target: TARGET, parent: None, "task", task.id = %id, task.type = kind.name(),
        task.resumed = resumed, task.state = Empty, task.attempts = Empty, otel.status_code = Empty, error.message = Empty);
    if let Some(parent) = parent {
        parent.adopt(&span);
    }
    span
}

impl Entry {
    pub(super) fn new(id: String, spec: TaskSpec, c: Checked) -> Self {
        let span = task_span(&id, c.kind, spec.trace.as_ref(), false);
        // The exported span's trace when there is one, else the submitter's, else a new id.
        let trace_id = TraceContext::of_span(&span)
            .or(spec.trace)
            .map_or_else(telemetry::fresh_trace_id, |r| r.context.trace_id_hex());
        let record = TaskRecord {
            id,
            task_type: c.kind.name().to_string(),
            payload: spec.payload,
            state: TaskState::Pending,
            attempts: 0,
            worker: None,
            result: None,
            error: None,
            submitted_at: SystemTime::now(),
            finished_at: None,
            attempt_history: Vec::new(),
            trace_id,
            timeline: Vec::new(),
            owner: String::new(),
            epoch: 1,
            copies: Vec::new(),
            adopted_from: None,
            fuel_used: None,
            replicas: None,
            quorum: None,
            replica_results: Vec::new(),
            replica_of: None,
            payment: None,
        };
        Self::fresh(record, c.kind, c.timeout, c.max_attempts, span)
    }

    /// An entry for `record` with nothing running, queued or tried yet.
    fn fresh(record: TaskRecord, kind: TaskKind, timeout: Duration, max_attempts: u32, span: Span) -> Self {
        Entry {
            record,
            kind,
            timeout,
            max_attempts,
            failures: 0,
            running: None,
            retry_timer: None,
            queued: None,
            tried: Vec::new(),
            started: Instant::now(),
            dirty: false,
            holders: Vec::new(),
            handed_over: false,
            reserved: 0,
            deterministic_failure: None,
            agreed: None,
            span,
            queue_span: Span::none(),
            attempt_span: Span::none(),
            backoff_span: Span::none(),
        }
    }

    /// A task a previous run of the gateway accepted, as the store kept it.
    pub(super) fn restored(s: Stored, kind: TaskKind) -> Self {
        // The span of the run before the restart is gone; the resumed task's span joins the
        // same trace (its parent is that lost span).
        let parent = Remote::joining(&s.record.trace_id);
        let span = task_span(&s.record.id, kind, parent.as_ref(), true);
        let holders = s.record.copies.iter().filter_map(|c| c.parse().ok()).collect();
        let timeout = Duration::from_millis(s.timeout_ms);
        Entry {
            holders,
            failures: s.failures,
            tried: s.tried,
            ..Self::fresh(s.record, kind, timeout, s.max_attempts, span)
        }
    }

    /// Replica `id` of the replicated task `task`: the same work, its own record (joining the
    /// task's trace), not counted as a submission.
    pub(super) fn replica(id: String, task: &Entry) -> Self {
        let span = task_span(&id, task.kind, TraceContext::of_span(&task.span).as_ref(), false);
        // Its task's payload, trace, owner, epoch and copy holders; a record of its own.
        let record = TaskRecord {
            id,
            replica_of: Some(task.record.id.clone()),
            state: TaskState::Pending,
            attempts: 0,
            worker: None,
            result: None,
            error: None,
            submitted_at: SystemTime::now(),
            finished_at: None,
            attempt_history: Vec::new(),
            timeline: Vec::new(),
            adopted_from: None,
            fuel_used: None,
            replicas: None,
            quorum: None,
            replica_results: Vec::new(),
            payment: None,
            ..task.record.clone()
        };
        Entry { holders: task.holders.clone(), ..Self::fresh(record, task.kind, task.timeout, task.max_attempts, span) }
    }

    /// The request for attempt number `attempt` of this task.
    pub(super) fn request(&self, id: &str, attempt: u32) -> TaskRequest {
        TaskRequest {
            v: WIRE_VERSION,
            task_id: id.to_string(),
            attempt,
            task_type: self.kind.name().to_string(),
            payload: self.record.payload.clone(),
            required_capabilities: self.kind.capability().map(|c| vec![c.to_string()]).unwrap_or_default(),
            deadline_ms: self.timeout.as_millis() as u64,
            trace: TraceContext::of_span(&self.attempt_span).map(|r| Box::new(r.to_wire())),
        }
    }

    /// Sets how the latest attempt in the history ended, in the timeline too, and ends the
    /// attempt's span.
    pub(super) fn note_attempt(&mut self, outcome: AttemptOutcome, error: Option<String>) {
        let span = std::mem::replace(&mut self.attempt_span, Span::none());
        span.record("attempt.outcome", outcome.as_str());
        if let Some(error) = &error {
            span.record("error.message", error.as_str());
        }
        let event = match outcome {
            AttemptOutcome::Busy => Some(TimelineKind::Busy),
            AttemptOutcome::Error | AttemptOutcome::Timeout | AttemptOutcome::Lost | AttemptOutcome::Queued => {
                Some(TimelineKind::AttemptFailed)
            }
            AttemptOutcome::Ok | AttemptOutcome::Running | AttemptOutcome::Cancelled => None,
        };
        if let Some(event) = event {
            self.record.note(now_ms(), event, None, error.clone());
        }
        if let Some(last) = self.record.attempt_history.last_mut() {
            last.outcome = outcome.as_str().to_string();
            last.error = error;
        }
    }

    /// The error of a task that failed for good: every attempt's error, in order.
    pub(super) fn error_summary(&self) -> String {
        let reasons: Vec<String> = self
            .record
            .attempt_history
            .iter()
            .filter_map(|a| a.error.as_ref().map(|err| format!("attempt {} on {}: {}", a.attempt, a.worker, err)))
            .collect();
        format!("failed after {} attempt(s): {}", self.failures.max(1), reasons.join("; "))
    }

    pub(super) fn type_label(&self) -> TypeLabels {
        TypeLabels { r#type: self.kind.name().to_string() }
    }
}
