//! The gateway: accepts tasks, places each attempt on a worker, and drives every accepted
//! task to exactly one final state through timeouts, lost workers, busy refusals and retries.
//!
//! A state machine over plain inputs (submissions, answers, timer expiries, lost workers);
//! its outputs are `Effect`s the node carries out. Answers are matched on (task, attempt,
//! worker), so a late answer from an earlier attempt can never complete a task twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use libp2p::PeerId;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::oneshot;
use tokio_util::time::{DelayQueue, delay_queue};

use super::placement::{Candidate, choose};
use super::record::{AttemptRecord, TaskRecord, TaskState};
use super::retry::RetryPolicy;
use crate::config::TasksConfig;
use crate::metrics::{Metrics, ReasonLabels, TypeLabels};
use crate::protocol::{TaskError, TaskOutcome, TaskRequest, TaskResponse, WIRE_VERSION};
use crate::tasks::{self, TaskKind};

/// Longest per-attempt timeout a submitter may ask for.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// Final records kept at most, whatever the retention, to bound memory.
const MAX_FINISHED_RECORDS: usize = 200_000;
/// Queue key of the task types that any worker can run.
const ANY_WORKER: &str = "";

/// What a user asks for.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub task_type: String,
    pub payload: String,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("unknown task type {0:?}; known types: compute, storage, echo, sleep, fail")]
    UnknownType(String),
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("no alive worker advertises capability {capability:?} ({alive} alive workers in the cluster)")]
    NoCapableWorker { capability: String, alive: usize },
    #[error("task queue is full ({0} tasks waiting); retry later")]
    QueueFull(usize),
    #[error("node is shutting down")]
    ShuttingDown,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    #[error("no task with id {0}")]
    NotFound(String),
    #[error("task {0} is already {1}")]
    AlreadyFinal(String, &'static str),
}

/// A worker the membership view considers alive, as placement needs it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub id: PeerId,
    pub capacity: u32,
    pub capabilities: Vec<String>,
}

/// What the node must do after an input.
#[derive(Debug)]
pub enum Effect {
    Dispatch { peer: PeerId, request: TaskRequest },
    RunLocal { request: TaskRequest },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    AttemptDeadline { id: String, attempt: u32 },
    RetryDue { id: String },
    QueueDeadline { id: String, seq: u64 },
}

struct Running {
    attempt: u32,
    peer: PeerId,
    deadline: delay_queue::Key,
}

struct Entry {
    record: TaskRecord,
    kind: TaskKind,
    timeout: Duration,
    max_attempts: u32,
    failures: u32,
    running: Option<Running>,
    retry_timer: Option<delay_queue::Key>,
    /// Set while the task sits in a queue; the number matches its queue deadline timer.
    queued: Option<(u64, delay_queue::Key)>,
    tried: Vec<PeerId>,
    started: Instant,
}

pub struct Gateway {
    local: PeerId,
    config: TasksConfig,
    policy: RetryPolicy,
    metrics: Metrics,
    entries: HashMap<String, Entry>,
    queues: HashMap<&'static str, VecDeque<String>>,
    queued: usize,
    queue_seq: u64,
    in_flight: HashMap<PeerId, u32>,
    /// Workers that answered busy; treated as full until they answer again.
    saturated: HashSet<PeerId>,
    timers: DelayQueue<Timer>,
    waiters: HashMap<String, Vec<oneshot::Sender<TaskRecord>>>,
    finished: VecDeque<(Instant, String)>,
    effects: Vec<Effect>,
    rng: StdRng,
}

impl Gateway {
    pub fn new(local: PeerId, config: TasksConfig, metrics: Metrics) -> Self {
        Self {
            local,
            config,
            policy: RetryPolicy::default(),
            metrics,
            entries: HashMap::new(),
            queues: HashMap::new(),
            queued: 0,
            queue_seq: 0,
            in_flight: HashMap::new(),
            saturated: HashSet::new(),
            timers: DelayQueue::new(),
            waiters: HashMap::new(),
            finished: VecDeque::new(),
            effects: Vec::new(),
            rng: StdRng::from_entropy(),
        }
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn running(&self) -> usize {
        self.in_flight.values().map(|n| *n as usize).sum()
    }

    /// Tasks dispatched to `peer` and not answered yet.
    pub fn in_flight_to(&self, peer: &PeerId) -> u32 {
        self.in_flight.get(peer).copied().unwrap_or(0)
    }

    /// Accepts a task or refuses it at once with the reason.
    pub fn submit(&mut self, spec: TaskSpec, workers: &[WorkerView]) -> Result<String, SubmitError> {
        let kind = TaskKind::parse(&spec.task_type).ok_or_else(|| SubmitError::UnknownType(spec.task_type.clone()));
        let kind = match kind {
            Ok(k) => k,
            Err(e) => {
                self.reject("unknown_type");
                return Err(e);
            }
        };
        if let Err(message) = kind.validate_payload(&spec.payload) {
            self.reject("bad_payload");
            return Err(SubmitError::Invalid { field: "payload", message });
        }
        let timeout_ms = spec.timeout_ms.unwrap_or(self.config.default_timeout_ms);
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            self.reject("bad_timeout");
            return Err(SubmitError::Invalid { field: "timeout_ms", message: format!("must be 1..={MAX_TIMEOUT_MS}") });
        }
        let max_attempts = spec.max_attempts.unwrap_or(self.config.max_attempts);
        if !(1..=100).contains(&max_attempts) {
            self.reject("bad_max_attempts");
            return Err(SubmitError::Invalid { field: "max_attempts", message: "must be 1..=100".into() });
        }
        if !workers.iter().any(|w| qualifies(w, kind)) {
            self.reject("no_capable_worker");
            return Err(SubmitError::NoCapableWorker {
                capability: kind.capability().unwrap_or("worker").to_string(),
                alive: workers.len(),
            });
        }
        if self.queued >= self.config.queue_capacity {
            self.reject("queue_full");
            return Err(SubmitError::QueueFull(self.queued));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let record = TaskRecord {
            id: id.clone(),
            task_type: kind.name().to_string(),
            payload: spec.payload,
            state: TaskState::Pending,
            attempts: 0,
            worker: None,
            result: None,
            error: None,
            submitted_at: SystemTime::now(),
            finished_at: None,
            attempt_history: Vec::new(),
        };
        self.metrics.tasks_submitted.get_or_create(&type_label(kind)).inc();
        tracing::debug!(task_id = %id, r#type = kind.name(), "task accepted");
        self.entries.insert(
            id.clone(),
            Entry {
                record,
                kind,
                timeout: Duration::from_millis(timeout_ms),
                max_attempts,
                failures: 0,
                running: None,
                retry_timer: None,
                queued: None,
                tried: Vec::new(),
                started: Instant::now(),
            },
        );
        self.enqueue(&id, false);
        self.pump(workers);
        Ok(id)
    }

    fn reject(&self, reason: &str) {
        self.metrics.tasks_rejected.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    fn enqueue(&mut self, id: &str, front: bool) {
        let Some(e) = self.entries.get_mut(id) else { return };
        self.queue_seq += 1;
        // A task waits for a free worker at most one attempt's timeout per try.
        let key = self.timers.insert(Timer::QueueDeadline { id: id.to_string(), seq: self.queue_seq }, e.timeout);
        e.queued = Some((self.queue_seq, key));
        e.record.state = TaskState::Pending;
        let q = self.queues.entry(e.kind.capability().unwrap_or(ANY_WORKER)).or_default();
        if front {
            q.push_front(id.to_string());
        } else {
            q.push_back(id.to_string());
        }
        self.queued += 1;
        self.metrics.queue_depth.set(self.queued as i64);
    }

    /// Places queued tasks on workers with room, as long as there are any.
    pub fn pump(&mut self, workers: &[WorkerView]) {
        if self.queued == 0 {
            return;
        }
        let keys: Vec<&'static str> = self.queues.keys().copied().collect();
        for key in keys {
            let mut candidates: Vec<Candidate<PeerId>> = workers
                .iter()
                .filter(|w| key == ANY_WORKER || w.capabilities.iter().any(|c| c == key))
                .map(|w| Candidate {
                    id: w.id,
                    load: if self.saturated.contains(&w.id) { w.capacity } else { self.in_flight_to(&w.id) },
                    capacity: w.capacity,
                })
                .collect();
            loop {
                let Some(id) = self.queues.get_mut(key).and_then(|q| q.pop_front()) else { break };
                let Some(entry) = self.entries.get(&id) else { continue };
                if entry.queued.is_none() {
                    continue;
                }
                match choose(&candidates, &entry.tried, &mut self.rng) {
                    Some(peer) => {
                        self.unqueue(&id);
                        if let Some(c) = candidates.iter_mut().find(|c| c.id == peer) {
                            c.load += 1;
                        }
                        self.dispatch(&id, peer);
                    }
                    None => {
                        if let Some(q) = self.queues.get_mut(key) {
                            q.push_front(id);
                        }
                        break;
                    }
                }
            }
        }
        self.metrics.queue_depth.set(self.queued as i64);
    }

    /// Takes a task out of the waiting count and cancels its queue deadline. The id itself
    /// may stay in the queue; `pump` skips ids that are no longer queued.
    fn unqueue(&mut self, id: &str) {
        if let Some(e) = self.entries.get_mut(id) {
            if let Some((_, key)) = e.queued.take() {
                self.timers.remove(&key);
                self.queued -= 1;
            }
        }
    }

    fn dispatch(&mut self, id: &str, peer: PeerId) {
        let Some(e) = self.entries.get_mut(id) else { return };
        e.record.attempts += 1;
        let attempt = e.record.attempts;
        e.record.state = TaskState::Running;
        e.record.worker = Some(peer.to_string());
        e.record.attempt_history.push(AttemptRecord {
            attempt,
            worker: peer.to_string(),
            outcome: "running".into(),
            error: None,
        });
        let deadline = self.timers.insert(Timer::AttemptDeadline { id: id.to_string(), attempt }, e.timeout);
        e.running = Some(Running { attempt, peer, deadline });
        let request = TaskRequest {
            v: WIRE_VERSION,
            task_id: id.to_string(),
            attempt,
            task_type: e.kind.name().to_string(),
            payload: e.record.payload.clone(),
            required_capabilities: e.kind.capability().map(|c| vec![c.to_string()]).unwrap_or_default(),
            deadline_ms: e.timeout.as_millis() as u64,
        };
        *self.in_flight.entry(peer).or_default() += 1;
        self.metrics.tasks_running.set(self.running() as i64);
        tracing::debug!(task_id = %id, attempt, worker = %peer, "dispatching");
        self.effects.push(if peer == self.local {
            Effect::RunLocal { request }
        } else {
            Effect::Dispatch { peer, request }
        });
    }

    /// Ends the running attempt of `id` if it is `(attempt, peer)`; false for a stale answer.
    fn end_attempt(&mut self, id: &str, attempt: u32, peer: &PeerId, cancel_deadline: bool) -> bool {
        let Some(e) = self.entries.get_mut(id) else { return false };
        match &e.running {
            Some(r) if r.attempt == attempt && r.peer == *peer => {}
            _ => return false,
        }
        let r = e.running.take().expect("checked just above that an attempt is running");
        if cancel_deadline {
            self.timers.remove(&r.deadline);
        }
        if let Some(n) = self.in_flight.get_mut(peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(peer);
            }
        }
        self.metrics.tasks_running.set(self.running() as i64);
        true
    }

    fn note_attempt(&mut self, id: &str, outcome: &str, error: Option<String>) {
        if let Some(last) = self.entries.get_mut(id).and_then(|e| e.record.attempt_history.last_mut()) {
            last.outcome = outcome.to_string();
            last.error = error;
        }
    }

    /// A worker's answer, or the network's report that there will be none.
    pub fn on_answer(
        &mut self,
        peer: PeerId,
        task_id: &str,
        attempt: u32,
        result: Result<TaskResponse, String>,
        workers: &[WorkerView],
    ) {
        if !self.end_attempt(task_id, attempt, &peer, true) {
            // A late answer from an attempt we already gave up on, or from a peer that was
            // never given this task: never let it complete anything.
            self.metrics.dropped("stale_task_result");
            tracing::debug!(%task_id, attempt, %peer, "ignoring stale or unexpected task result");
            return;
        }
        self.saturated.remove(&peer);
        let response = match result {
            Ok(r) if r.task_id == task_id && r.attempt == attempt && r.worker == peer.to_string() => r,
            Ok(_) => {
                self.metrics.dropped("mismatched_task_result");
                self.attempt_failed(task_id, "lost", format!("worker {peer} answered for another task"));
                self.pump(workers);
                return;
            }
            Err(reason) => {
                self.attempt_failed(task_id, "lost", reason);
                self.pump(workers);
                return;
            }
        };
        match response.outcome {
            TaskOutcome::Ok(result) => {
                let verified = match self.entries.get(task_id) {
                    Some(e) if e.kind == TaskKind::Compute => {
                        tasks::verify(e.record.payload.as_bytes(), &result, self.config.compute_difficulty).map(|_| ())
                    }
                    _ => Ok(()),
                };
                match verified {
                    Ok(()) => {
                        self.note_attempt(task_id, "ok", None);
                        self.finish(task_id, TaskState::Completed, Some(result), None);
                    }
                    Err(why) => self.attempt_failed(task_id, "error", format!("result failed verification: {why}")),
                }
            }
            TaskOutcome::Err(TaskError::Busy) => {
                // The task never ran, so this costs no attempt; prefer other workers next.
                self.saturated.insert(peer);
                self.note_attempt(task_id, "busy", Some(TaskError::Busy.to_string()));
                if let Some(e) = self.entries.get_mut(task_id) {
                    e.tried.push(peer);
                }
                self.enqueue(task_id, true);
            }
            TaskOutcome::Err(err) if !err.retryable() => {
                self.note_attempt(task_id, "error", Some(err.to_string()));
                let error = self.error_summary(task_id);
                self.finish(task_id, TaskState::Failed, None, Some(error));
            }
            TaskOutcome::Err(err) => self.attempt_failed(task_id, "error", err.to_string()),
        }
        self.pump(workers);
    }

    /// An attempt failed in a way another worker may not: retry with backoff or give up.
    fn attempt_failed(&mut self, id: &str, outcome: &str, reason: String) {
        tracing::debug!(task_id = %id, %reason, "attempt failed");
        self.note_attempt(id, outcome, Some(reason));
        let Some(e) = self.entries.get_mut(id) else { return };
        e.failures += 1;
        if let Some(w) =
            e.running.as_ref().map(|r| r.peer).or_else(|| e.record.worker.as_ref().and_then(|w| w.parse().ok()))
        {
            e.tried.push(w);
        }
        if e.failures >= e.max_attempts {
            let error = self.error_summary(id);
            self.finish(id, TaskState::Failed, None, Some(error));
            return;
        }
        self.metrics.tasks_retried.get_or_create(&type_label(e.kind)).inc();
        e.record.state = TaskState::Pending;
        let delay = self.policy.delay(e.failures, rand::random());
        e.retry_timer = Some(self.timers.insert(Timer::RetryDue { id: id.to_string() }, delay));
    }

    fn error_summary(&self, id: &str) -> String {
        let Some(e) = self.entries.get(id) else { return String::new() };
        let reasons: Vec<String> = e
            .record
            .attempt_history
            .iter()
            .filter_map(|a| a.error.as_ref().map(|err| format!("attempt {} on {}: {}", a.attempt, a.worker, err)))
            .collect();
        format!("failed after {} attempt(s): {}", e.failures.max(1), reasons.join("; "))
    }

    /// A timer from `next_timer` fired.
    pub fn on_timer(&mut self, timer: Timer, workers: &[WorkerView]) {
        match timer {
            Timer::AttemptDeadline { id, attempt } => {
                let Some(peer) = self.entries.get(&id).and_then(|e| e.running.as_ref()).map(|r| r.peer) else {
                    return;
                };
                let timeout = self.entries.get(&id).map(|e| e.timeout).unwrap_or_default();
                if self.end_attempt(&id, attempt, &peer, false) {
                    self.attempt_failed(&id, "timeout", format!("no answer within {} ms", timeout.as_millis()));
                }
            }
            Timer::RetryDue { id } => {
                if let Some(e) = self.entries.get_mut(&id) {
                    if e.retry_timer.take().is_some() && !e.record.state.is_final() {
                        self.enqueue(&id, true);
                    }
                }
            }
            Timer::QueueDeadline { id, seq } => {
                let Some(e) = self.entries.get_mut(&id) else { return };
                if e.queued.as_ref().map(|(s, _)| *s) != Some(seq) {
                    return;
                }
                e.queued = None;
                self.queued -= 1;
                let waited = e.timeout.as_millis();
                e.record.attempt_history.push(AttemptRecord {
                    attempt: e.record.attempts,
                    worker: String::new(),
                    outcome: "queued".into(),
                    error: Some(format!("no capable worker was free within {waited} ms")),
                });
                e.failures += 1;
                if e.failures >= e.max_attempts {
                    let error = self.error_summary(&id);
                    self.finish(&id, TaskState::Failed, None, Some(error));
                } else {
                    self.enqueue(&id, true);
                }
            }
        }
        self.pump(workers);
    }

    /// A worker is dead or left: its running attempts fail now rather than at their deadline.
    pub fn on_worker_lost(&mut self, peer: PeerId, why: &str, workers: &[WorkerView]) {
        let affected: Vec<(String, u32)> = self
            .entries
            .iter()
            .filter_map(|(id, e)| e.running.as_ref().filter(|r| r.peer == peer).map(|r| (id.clone(), r.attempt)))
            .collect();
        for (id, attempt) in affected {
            if self.end_attempt(&id, attempt, &peer, true) {
                self.attempt_failed(&id, "lost", format!("worker {peer} {why}"));
            }
        }
        self.saturated.remove(&peer);
        self.pump(workers);
    }

    pub fn cancel(&mut self, id: &str) -> Result<TaskRecord, CancelError> {
        let e = self.entries.get_mut(id).ok_or_else(|| CancelError::NotFound(id.to_string()))?;
        if e.record.state.is_final() {
            return Err(CancelError::AlreadyFinal(id.to_string(), e.record.state.as_str()));
        }
        if let Some(key) = e.retry_timer.take() {
            self.timers.remove(&key);
        }
        if let Some((attempt, peer)) = e.running.as_ref().map(|r| (r.attempt, r.peer)) {
            self.end_attempt(id, attempt, &peer, true);
            self.note_attempt(id, "cancelled", None);
        }
        self.unqueue(id);
        self.finish(id, TaskState::Cancelled, None, Some("cancelled by user".into()));
        Ok(self.entries[id].record.clone())
    }

    fn finish(&mut self, id: &str, state: TaskState, result: Option<String>, error: Option<String>) {
        let Some(e) = self.entries.get_mut(id) else { return };
        debug_assert!(!e.record.state.is_final(), "a task reaches exactly one final state");
        if e.record.state.is_final() {
            return;
        }
        e.record.state = state;
        e.record.result = result;
        e.record.error = error;
        e.record.finished_at = Some(SystemTime::now());
        let labels = type_label(e.kind);
        match state {
            TaskState::Completed => self.metrics.tasks_completed.get_or_create(&labels).inc(),
            TaskState::Failed => self.metrics.tasks_failed.get_or_create(&labels).inc(),
            _ => self.metrics.tasks_cancelled.get_or_create(&labels).inc(),
        };
        self.metrics.task_duration.get_or_create(&labels).observe(e.started.elapsed().as_secs_f64());
        tracing::info!(task_id = %id, state = state.as_str(), attempts = e.record.attempts,
            error = e.record.error.as_deref().unwrap_or(""), "task finished");
        if let Some(waiters) = self.waiters.remove(id) {
            for w in waiters {
                let _ = w.send(e.record.clone());
            }
        }
        self.finished.push_back((Instant::now(), id.to_string()));
    }

    pub fn get(&self, id: &str) -> Option<TaskRecord> {
        self.entries.get(id).map(|e| e.record.clone())
    }

    /// Most recently submitted first.
    pub fn list(&self, limit: usize) -> Vec<TaskRecord> {
        let mut all: Vec<&Entry> = self.entries.values().collect();
        all.sort_by(|a, b| b.started.cmp(&a.started));
        all.into_iter().take(limit).map(|e| e.record.clone()).collect()
    }

    /// Resolves `reply` when the task is final (at once if it already is).
    pub fn wait(&mut self, id: &str, reply: oneshot::Sender<TaskRecord>) -> Result<(), CancelError> {
        let e = self.entries.get(id).ok_or_else(|| CancelError::NotFound(id.to_string()))?;
        if e.record.state.is_final() {
            let _ = reply.send(e.record.clone());
        } else {
            self.waiters.entry(id.to_string()).or_default().push(reply);
        }
        Ok(())
    }

    /// Forgets final records older than the retention (or beyond the hard cap).
    pub fn prune(&mut self, now: Instant) {
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

    /// Fails every unfinished task (the node is going away and cannot drive them further).
    pub fn abandon_all(&mut self, why: &str) {
        let open: Vec<String> =
            self.entries.iter().filter(|(_, e)| !e.record.state.is_final()).map(|(id, _)| id.clone()).collect();
        for id in open {
            if let Some((attempt, peer)) = self.entries[&id].running.as_ref().map(|r| (r.attempt, r.peer)) {
                self.end_attempt(&id, attempt, &peer, true);
            }
            self.unqueue(&id);
            if let Some(key) = self.entries.get_mut(&id).and_then(|e| e.retry_timer.take()) {
                self.timers.remove(&key);
            }
            self.note_attempt(&id, "lost", Some(why.to_string()));
            self.finish(&id, TaskState::Failed, None, Some(format!("gateway {why}")));
        }
    }

    pub fn has_timers(&self) -> bool {
        !self.timers.is_empty()
    }

    /// Next expired timer; pends forever when there are none (guard with `has_timers`).
    pub async fn next_timer(&mut self) -> Option<Timer> {
        self.timers.next().await.map(|e| e.into_inner())
    }

    pub fn unfinished(&self) -> usize {
        self.entries.values().filter(|e| !e.record.state.is_final()).count()
    }
}

fn qualifies(w: &WorkerView, kind: TaskKind) -> bool {
    kind.capability().is_none_or(|cap| w.capabilities.iter().any(|c| c == cap))
}

fn type_label(kind: TaskKind) -> TypeLabels {
    TypeLabels { r#type: kind.name().to_string() }
}
