//! The gateway: accepts tasks, places each attempt on a worker, and drives every accepted
//! task to exactly one final state through timeouts, lost workers, busy refusals and retries.
//!
//! A state machine over plain inputs (submissions, answers, timer expiries, lost workers);
//! its outputs are `Effect`s the node carries out. Answers are matched on (task, attempt,
//! worker), so a late answer from an earlier attempt can never complete a task twice.
//!
//! This file is the surface the node drives; each concern's workings are beside it:
//! `admission`, `queue`, `attempts`, `load`, `timers` and `lifecycle` (which also holds
//! `wait`, `prune` and `abandon_all`).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use libp2p::PeerId;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::oneshot;

use super::admission::{self, Refused};
use super::attempts::judge;
use super::entry::Entry;
use super::load::Load;
use super::queue::Queues;
use super::reasons::{Dropped, Rejection};
use super::record::{AttemptOutcome, TaskRecord, TaskState};
use super::retry::RetryPolicy;
use super::timers::{Timer, Timers};
use super::types::{CancelError, Effect, SubmitError, TaskSpec, WorkerView};
use crate::config::TasksConfig;
use crate::metrics::{Metrics, ReasonLabels};
use crate::network::DispatchError;
use crate::protocol::{TaskError, TaskOutcome, TaskResponse};

pub struct Gateway {
    pub(super) local: PeerId,
    pub(super) config: TasksConfig,
    pub(super) policy: RetryPolicy,
    pub(super) metrics: Metrics,
    pub(super) entries: HashMap<String, Entry>,
    pub(super) queues: Queues,
    pub(super) load: Load,
    pub(super) timers: Timers,
    pub(super) waiters: HashMap<String, Vec<oneshot::Sender<TaskRecord>>>,
    pub(super) finished: VecDeque<(Instant, String)>,
    pub(super) effects: Vec<Effect>,
    pub(super) rng: StdRng,
    /// Workers' ids as text, for records: base58 encoding a PeerId per dispatch showed up in
    /// profiles. Forgotten when a worker is lost.
    pub(super) names: HashMap<PeerId, String>,
}

impl Gateway {
    pub fn new(local: PeerId, config: TasksConfig, metrics: Metrics) -> Self {
        Self {
            local,
            config,
            policy: RetryPolicy::default(),
            queues: Queues::new(metrics.queue_depth.clone()),
            load: Load::new(metrics.tasks_running.clone()),
            metrics,
            entries: HashMap::new(),
            timers: Timers::new(),
            waiters: HashMap::new(),
            finished: VecDeque::new(),
            effects: Vec::new(),
            rng: StdRng::from_entropy(),
            names: HashMap::new(),
        }
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn queued(&self) -> usize {
        self.queues.waiting()
    }

    pub fn running(&self) -> usize {
        self.load.running()
    }

    /// Tasks dispatched to `peer` and not answered yet.
    pub fn in_flight_to(&self, peer: &PeerId) -> u32 {
        self.load.in_flight_to(peer)
    }

    /// Accepts a task or refuses it at once with the reason.
    pub fn submit(&mut self, spec: TaskSpec, workers: &[WorkerView]) -> Result<String, SubmitError> {
        let checked = admission::check(&spec, workers, &self.config).map_err(|r| self.refuse(r))?;
        if self.queued() >= self.config.queue_capacity {
            return Err(self.queue_full());
        }
        let id = self.accept(spec, checked);
        self.pump(workers);
        Ok(id)
    }

    /// Accepts every task of a batch, or none: the first invalid task (by index) refuses the
    /// batch, and so does a queue without room for all of it.
    pub fn submit_batch(
        &mut self,
        specs: Vec<TaskSpec>,
        workers: &[WorkerView],
    ) -> Result<Vec<String>, (usize, SubmitError)> {
        let mut checked = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            checked.push(admission::check(spec, workers, &self.config).map_err(|r| (i, self.refuse(r)))?);
        }
        // Tasks a free worker takes at once never wait; the rest need queue room.
        let room = self.config.queue_capacity.saturating_sub(self.queued()) + self.load.free_slots(workers);
        if specs.len() > room {
            return Err((0, self.queue_full()));
        }
        let ids = specs.into_iter().zip(checked).map(|(spec, c)| self.accept(spec, c)).collect();
        self.pump(workers);
        Ok(ids)
    }

    /// Counts a refused submission under its reason; returns what the submitter is told.
    fn refuse(&self, Refused(reason, error): Refused) -> SubmitError {
        self.metrics.tasks_rejected.get_or_create(&ReasonLabels { reason: reason.label().into() }).inc();
        error
    }

    fn queue_full(&self) -> SubmitError {
        self.metrics.limit_hit("task_queue");
        self.refuse(Refused(Rejection::QueueFull, SubmitError::QueueFull(self.queued())))
    }

    /// Places queued tasks on workers with room, as long as there are any.
    pub fn pump(&mut self, workers: &[WorkerView]) {
        self.place_queued(workers);
    }

    /// A worker's answer, or the network's report that there will be none.
    pub fn on_answer(
        &mut self,
        peer: PeerId,
        task_id: &str,
        attempt: u32,
        result: Result<TaskResponse, DispatchError>,
        workers: &[WorkerView],
    ) {
        if !self.end_attempt(task_id, attempt, &peer, true) {
            // A late answer from an attempt we already gave up on, or from a peer that was
            // never given this task: never let it complete anything.
            self.metrics.dropped(Dropped::StaleTaskResult.label());
            tracing::debug!(%task_id, attempt, %peer, "ignoring stale or unexpected task result");
            // A late answer still means the worker freed a slot.
            if self.load.freed(&peer) {
                self.pump(workers);
            }
            return;
        }
        let busy = matches!(&result, Ok(r) if r.outcome == TaskOutcome::Err(TaskError::Busy));
        self.load.answered(&peer, busy);
        if let Some(e) = self.entries.get(task_id) {
            let verdict = judge(e, task_id, attempt, result, self.config.compute_difficulty);
            self.settle(task_id, peer, verdict);
        }
        self.pump(workers);
    }

    /// A timer from `next_timer` fired.
    pub fn on_timer(&mut self, timer: Timer, workers: &[WorkerView]) {
        match timer {
            Timer::AttemptDeadline { id, attempt } => self.attempt_deadline(&id, attempt),
            Timer::RetryDue { id } => self.retry_due(&id),
            Timer::Unsaturate { peer } => {
                self.load.freed(&peer);
            }
            Timer::QueueDeadline { id, seq } => self.queue_deadline(&id, seq),
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
                self.attempt_failed(&id, AttemptOutcome::Lost, format!("worker {peer} {why}"));
            }
        }
        self.load.freed(&peer);
        self.names.remove(&peer);
        self.pump(workers);
    }

    pub fn cancel(&mut self, id: &str) -> Result<TaskRecord, CancelError> {
        let e = self.entries.get(id).ok_or_else(|| CancelError::NotFound(id.to_string()))?;
        if e.record.state.is_final() {
            return Err(CancelError::AlreadyFinal(id.to_string(), e.record.state.as_str()));
        }
        self.halt(id, AttemptOutcome::Cancelled, None);
        self.finish(id, TaskState::Cancelled, None, Some("cancelled by user".into()));
        Ok(self.entries[id].record.clone())
    }

    pub fn get(&self, id: &str) -> Option<TaskRecord> {
        self.entries.get(id).map(|e| e.record.clone())
    }

    /// Most recently submitted first.
    pub fn list(&self, limit: usize) -> Vec<TaskRecord> {
        let mut all: Vec<&Entry> = self.entries.values().collect();
        all.sort_by_key(|e| std::cmp::Reverse(e.started));
        all.into_iter().take(limit).map(|e| e.record.clone()).collect()
    }

    pub fn has_timers(&self) -> bool {
        !self.timers.is_empty()
    }

    /// Next expired timer; pends forever when there are none (guard with `has_timers`).
    pub async fn next_timer(&mut self) -> Option<Timer> {
        self.timers.next().await
    }

    pub fn unfinished(&self) -> usize {
        self.entries.values().filter(|e| !e.record.state.is_final()).count()
    }
}

#[cfg(test)]
mod tests {
    //! The gateway under a paused clock: timers are driven with `run_for`, which lets time
    //! pass and feeds every expired timer to the gateway, so no test sleeps for real.

    use std::collections::HashMap;
    use std::time::Duration;

    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::registry::Registry;
    use tokio::sync::oneshot::error::TryRecvError;

    use super::*;
    use crate::metrics::TypeLabels;
    use crate::protocol::{TaskRequest, WIRE_VERSION};
    use crate::scheduler::MAX_TIMEOUT_MS;
    use crate::scheduler::record::AttemptRecord;
    use crate::tasks;

    fn config() -> TasksConfig {
        TasksConfig {
            max_attempts: 3,
            default_timeout_ms: 10_000,
            queue_capacity: 100,
            retention_secs: 60,
            compute_difficulty: 4,
            ..TasksConfig::default()
        }
    }

    fn gateway_with(config: TasksConfig) -> Gateway {
        let mut gw = Gateway::new(PeerId::random(), config, Metrics::new(&mut Registry::default()));
        // Placement is random; seed it so a failing run can be replayed. No test depends on
        // which of several equally good workers is picked.
        gw.rng = StdRng::seed_from_u64(0x5eed);
        gw
    }

    fn gateway() -> Gateway {
        gateway_with(config())
    }

    fn worker(capacity: u32, capabilities: &[&str]) -> WorkerView {
        WorkerView {
            id: PeerId::random(),
            capacity,
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn spec(task_type: &str, payload: &str) -> TaskSpec {
        TaskSpec { task_type: task_type.into(), payload: payload.into(), timeout_ms: None, max_attempts: None }
    }

    fn echo() -> TaskSpec {
        spec("echo", "hello")
    }

    fn count(family: &Family<TypeLabels, Counter>, task_type: &str) -> u64 {
        family.get_or_create(&TypeLabels { r#type: task_type.into() }).get()
    }

    fn total(family: &Family<TypeLabels, Counter>) -> u64 {
        tasks::KNOWN_TYPES.iter().map(|t| count(family, t)).sum()
    }

    fn reason(family: &Family<ReasonLabels, Counter>, reason: &str) -> u64 {
        family.get_or_create(&ReasonLabels { reason: reason.into() }).get()
    }

    /// The effects since the last call, as (peer the attempt goes to, request); a `RunLocal`
    /// goes to the local peer.
    fn sent(gw: &mut Gateway) -> Vec<(PeerId, TaskRequest)> {
        let local = gw.local;
        gw.take_effects()
            .into_iter()
            .map(|e| match e {
                Effect::Dispatch { peer, request } => (peer, request),
                Effect::RunLocal { request } => (local, request),
            })
            .collect()
    }

    fn sent_one(gw: &mut Gateway) -> (PeerId, TaskRequest) {
        let mut effects = sent(gw);
        assert_eq!(effects.len(), 1, "expected exactly one dispatch, got {effects:?}");
        effects.pop().unwrap()
    }

    fn ok(result: &str) -> TaskOutcome {
        TaskOutcome::Ok(result.into())
    }

    fn err(error: TaskError) -> TaskOutcome {
        TaskOutcome::Err(error)
    }

    fn failed(message: &str) -> TaskOutcome {
        err(TaskError::Failed(message.into()))
    }

    /// `peer` answers `request` with a well-formed response (its own id as the worker).
    fn answer(gw: &mut Gateway, peer: PeerId, request: &TaskRequest, outcome: TaskOutcome, workers: &[WorkerView]) {
        let response = TaskResponse {
            v: WIRE_VERSION,
            task_id: request.task_id.clone(),
            attempt: request.attempt,
            worker: peer.to_string(),
            outcome,
        };
        gw.on_answer(peer, &request.task_id, request.attempt, Ok(response), workers);
    }

    /// A compute result that verifies at `difficulty`.
    fn proof(payload: &str, difficulty: u32) -> String {
        serde_json::to_string(&tasks::prove(payload.as_bytes(), difficulty, || false).unwrap()).unwrap()
    }

    /// Lets `d` of paused time pass, handing each timer to the gateway as it expires (at its
    /// own instant, so timers it arms meanwhile fire in order too). Returns the timers fired.
    async fn run_for(gw: &mut Gateway, d: Duration, workers: &[WorkerView]) -> Vec<Timer> {
        let end = tokio::time::Instant::now() + d;
        let mut fired = Vec::new();
        loop {
            match tokio::time::timeout_at(end, gw.next_timer()).await {
                Ok(Some(timer)) => {
                    fired.push(timer.clone());
                    gw.on_timer(timer, workers);
                }
                Ok(None) => {
                    tokio::time::sleep_until(end).await;
                    break;
                }
                Err(_) => break,
            }
        }
        fired
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn state(gw: &Gateway, id: &str) -> TaskState {
        gw.get(id).expect("task record exists").state
    }

    fn assert_final(gw: &Gateway, id: &str, expected: TaskState) -> TaskRecord {
        let record = gw.get(id).expect("task record exists");
        assert_eq!(record.state, expected, "{record:#?}");
        assert!(record.finished_at.is_some());
        record
    }

    fn check_invariants(gw: &Gateway) {
        check_invariants_after_prune(gw, 0);
    }

    /// Every accepted task is in exactly one place (queued, running, waiting out a retry
    /// backoff, or final), the gateway's counts agree with its records, and the
    /// completed+failed+cancelled counters equal the number of final tasks (`pruned` of
    /// which are no longer held).
    fn check_invariants_after_prune(gw: &Gateway, pruned: u64) {
        let mut finals = 0u64;
        let mut queued = 0usize;
        let mut in_flight: HashMap<PeerId, u32> = HashMap::new();
        for (id, e) in &gw.entries {
            let places = [
                ("queued", e.queued.is_some()),
                ("running", e.running.is_some()),
                ("backoff", e.retry_timer.is_some()),
                ("final", e.record.state.is_final()),
            ];
            let here: Vec<&str> = places.iter().filter(|(_, b)| *b).map(|(p, _)| *p).collect();
            assert_eq!(here.len(), 1, "task {id} must be in exactly one place, is in {here:?}: {:#?}", e.record);
            match e.record.state {
                TaskState::Running => assert!(e.running.is_some(), "{id} running without an attempt"),
                TaskState::Pending => assert!(e.running.is_none(), "{id} pending with an attempt"),
                _ => {
                    finals += 1;
                    assert!(e.record.finished_at.is_some());
                    assert!(!gw.waiters.contains_key(id), "final task {id} still has waiters");
                }
            }
            if let Some(r) = &e.running {
                assert_eq!(r.attempt, e.record.attempts, "{id} runs an attempt that is not its latest");
                assert_eq!(e.record.worker, Some(r.peer.to_string()));
                assert_eq!(e.record.attempt_history.last().map(|a| a.outcome.as_str()), Some("running"));
                *in_flight.entry(r.peer).or_default() += 1;
            }
            if e.queued.is_some() {
                queued += 1;
                assert!(gw.queues.holds(id), "queued task {id} is in no queue");
            }
        }
        assert_eq!(gw.queued(), queued, "queued count");
        assert_eq!(*gw.load.in_flight(), in_flight, "in-flight attempts per worker");
        assert_eq!(gw.running(), in_flight.values().map(|n| *n as usize).sum::<usize>());
        assert_eq!(gw.metrics.tasks_running.get(), gw.running() as i64, "tasks_running gauge");
        assert_eq!(gw.unfinished() as u64, gw.entries.len() as u64 - finals);
        let m = &gw.metrics;
        let ended = total(&m.tasks_completed) + total(&m.tasks_failed) + total(&m.tasks_cancelled);
        assert_eq!(ended, finals + pruned, "completed+failed+cancelled counters vs final tasks");
        assert_eq!(total(&m.tasks_submitted), gw.entries.len() as u64 + pruned, "submitted counter vs tasks");
    }

    // ---- submission ----

    #[tokio::test(start_paused = true)]
    async fn submit_refuses_unknown_type() {
        let mut gw = gateway();
        let workers = [worker(4, &["compute", "storage"])];
        let e = gw.submit(spec("mine-bitcoin", "x"), &workers).unwrap_err();
        assert_eq!(e, SubmitError::UnknownType("mine-bitcoin".into()));
        assert!(e.to_string().contains("known types: compute, storage, echo, sleep, fail"), "{e}");
        assert_eq!(reason(&gw.metrics.tasks_rejected, "unknown_type"), 1);
        assert!(gw.entries.is_empty());
        assert!(sent(&mut gw).is_empty());
        assert!(!gw.has_timers());
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn submit_refuses_bad_payload() {
        let mut gw = gateway();
        let workers = [worker(4, &["compute", "storage"])];
        for (task_type, payload) in
            [("sleep", "soon"), ("sleep", "600001"), ("storage", "delete k"), ("storage", "put k"), ("storage", "get")]
        {
            match gw.submit(spec(task_type, payload), &workers) {
                Err(SubmitError::Invalid { field: "payload", message }) => assert!(!message.is_empty()),
                other => panic!("{task_type} {payload:?}: expected a payload error, got {other:?}"),
            }
        }
        // Payload checks come before the capability check.
        assert!(matches!(gw.submit(spec("sleep", "soon"), &[]), Err(SubmitError::Invalid { field: "payload", .. })));
        assert_eq!(reason(&gw.metrics.tasks_rejected, "bad_payload"), 6);
        assert!(gw.entries.is_empty());
        // The same types with good payloads are accepted.
        gw.submit(spec("sleep", "10"), &workers).unwrap();
        gw.submit(spec("storage", "get k"), &workers).unwrap();
        gw.submit(spec("storage", "put k some value"), &workers).unwrap();
        assert_eq!(sent(&mut gw).len(), 3);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn submit_checks_timeout_bounds() {
        let mut gw = gateway();
        let workers = [worker(10, &[])];
        for t in [0, MAX_TIMEOUT_MS + 1, u64::MAX] {
            let e = gw.submit(TaskSpec { timeout_ms: Some(t), ..echo() }, &workers).unwrap_err();
            assert!(matches!(e, SubmitError::Invalid { field: "timeout_ms", .. }), "{t}: {e:?}");
        }
        assert_eq!(reason(&gw.metrics.tasks_rejected, "bad_timeout"), 3);
        assert!(gw.entries.is_empty());
        for (timeout, expected) in [(Some(1), 1), (Some(MAX_TIMEOUT_MS), MAX_TIMEOUT_MS), (None, 10_000)] {
            let id = gw.submit(TaskSpec { timeout_ms: timeout, ..echo() }, &workers).unwrap();
            let (_, request) = sent_one(&mut gw);
            assert_eq!(request.task_id, id);
            assert_eq!(request.deadline_ms, expected, "timeout {timeout:?}");
        }
        // A default timeout out of range is refused the same way.
        let mut gw = gateway_with(TasksConfig { default_timeout_ms: 0, ..config() });
        assert!(matches!(gw.submit(echo(), &workers), Err(SubmitError::Invalid { field: "timeout_ms", .. })));
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn submit_checks_max_attempts_bounds() {
        let mut gw = gateway();
        let workers = [worker(10, &[])];
        for n in [0, 101, u32::MAX] {
            let e = gw.submit(TaskSpec { max_attempts: Some(n), ..echo() }, &workers).unwrap_err();
            assert_eq!(e, SubmitError::Invalid { field: "max_attempts", message: "must be 1..=100".into() }, "{n}");
        }
        assert_eq!(reason(&gw.metrics.tasks_rejected, "bad_max_attempts"), 3);
        for (asked, expected) in [(Some(1), 1), (Some(100), 100), (None, 3)] {
            let id = gw.submit(TaskSpec { max_attempts: asked, ..echo() }, &workers).unwrap();
            assert_eq!(gw.entries[&id].max_attempts, expected, "{asked:?}");
        }
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn submit_refuses_when_no_worker_has_the_capability() {
        let mut gw = gateway();
        let storage_only = [worker(4, &["storage"]), worker(4, &["storage"])];
        let e = gw.submit(spec("compute", "data"), &storage_only).unwrap_err();
        assert_eq!(e, SubmitError::NoCapableWorker { capability: "compute".into(), alive: 2 });
        let message = e.to_string();
        assert!(message.contains("\"compute\"") && message.contains("2 alive workers"), "{message}");

        let e = gw.submit(spec("storage", "get k"), &[worker(1, &["compute"])]).unwrap_err();
        assert_eq!(e, SubmitError::NoCapableWorker { capability: "storage".into(), alive: 1 });

        // Test types run anywhere, but there must be some worker.
        let e = gw.submit(echo(), &[]).unwrap_err();
        assert_eq!(e, SubmitError::NoCapableWorker { capability: "worker".into(), alive: 0 });
        assert!(e.to_string().contains("0 alive workers"), "{e}");

        assert_eq!(reason(&gw.metrics.tasks_rejected, "no_capable_worker"), 3);
        assert!(gw.entries.is_empty());
        // A worker at capacity still qualifies: the task is accepted and waits.
        let busy = [worker(1, &["compute"])];
        gw.submit(spec("compute", "a"), &busy).unwrap();
        gw.submit(spec("compute", "b"), &busy).unwrap();
        assert_eq!(gw.queued(), 1);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn submit_refuses_when_queue_is_full() {
        let mut gw = gateway_with(TasksConfig { queue_capacity: 2, ..config() });
        let workers = [worker(1, &[])];
        let a = gw.submit(echo(), &workers).unwrap();
        let (peer, ra) = sent_one(&mut gw);
        let b = gw.submit(echo(), &workers).unwrap();
        let _c = gw.submit(echo(), &workers).unwrap();
        assert_eq!(gw.queued(), 2);
        assert!(sent(&mut gw).is_empty());

        let e = gw.submit(echo(), &workers).unwrap_err();
        assert_eq!(e, SubmitError::QueueFull(2));
        assert!(e.to_string().contains("2 tasks waiting"), "{e}");
        assert_eq!(reason(&gw.metrics.tasks_rejected, "queue_full"), 1);
        let limit = crate::metrics::LimitLabels { limit: "task_queue" };
        assert_eq!(gw.metrics.limit_hits.get_or_create(&limit).get(), 1);
        assert_eq!(count(&gw.metrics.tasks_submitted, "echo"), 3);
        assert_eq!(gw.entries.len(), 3);

        // Once the worker answers, the head of the queue runs and there is room again.
        answer(&mut gw, peer, &ra, ok("a"), &workers);
        assert_final(&gw, &a, TaskState::Completed);
        let (_, rb) = sent_one(&mut gw);
        assert_eq!(rb.task_id, b);
        assert_eq!(gw.queued(), 1);
        gw.submit(echo(), &workers).unwrap();
        assert_eq!(gw.queued(), 2);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn accepted_task_is_dispatched_with_a_well_formed_request() {
        let mut gw = gateway();
        let workers = [worker(2, &["compute"])];
        let id = gw.submit(TaskSpec { timeout_ms: Some(2_500), ..spec("compute", "block-1") }, &workers).unwrap();
        let (peer, request) = sent_one(&mut gw);
        assert_eq!(peer, workers[0].id);
        assert_eq!(
            request,
            TaskRequest {
                v: WIRE_VERSION,
                task_id: id.clone(),
                attempt: 1,
                task_type: "compute".into(),
                payload: "block-1".into(),
                required_capabilities: vec!["compute".into()],
                deadline_ms: 2_500,
            }
        );
        let record = gw.get(&id).unwrap();
        assert_eq!(record.state, TaskState::Running);
        assert_eq!(record.task_type, "compute");
        assert_eq!(record.attempts, 1);
        assert_eq!(record.worker, Some(peer.to_string()));
        assert_eq!(
            record.attempt_history,
            vec![AttemptRecord { attempt: 1, worker: peer.to_string(), outcome: "running".into(), error: None }]
        );
        assert_eq!((gw.running(), gw.in_flight_to(&peer), gw.queued(), gw.unfinished()), (1, 1, 0, 1));
        assert_eq!(count(&gw.metrics.tasks_submitted, "compute"), 1);

        gw.submit(echo(), &workers).unwrap();
        let (_, request) = sent_one(&mut gw);
        assert!(request.required_capabilities.is_empty());
        assert_eq!(request.deadline_ms, 10_000);
        check_invariants(&gw);
    }

    // ---- placement and queueing ----

    #[tokio::test(start_paused = true)]
    async fn placement_only_on_workers_with_the_capability() {
        let mut gw = gateway();
        let storage = worker(100, &["storage"]);
        let compute = worker(2, &["compute"]);
        let workers = [storage.clone(), compute.clone()];
        let ids: Vec<String> =
            (0..5).map(|i| gw.submit(spec("compute", &format!("job-{i}")), &workers).unwrap()).collect();
        let mut pending = sent(&mut gw);
        assert_eq!(pending.len(), 2, "only the compute worker's two slots are used");
        assert_eq!(gw.queued(), 3);
        assert_eq!(gw.in_flight_to(&storage.id), 0);

        // Pumping with only the storage worker alive places nothing.
        gw.pump(std::slice::from_ref(&storage));
        assert!(sent(&mut gw).is_empty());

        // Storage tasks go to the storage worker; echo goes wherever there is room.
        gw.submit(spec("storage", "get k"), &workers).unwrap();
        assert_eq!(sent_one(&mut gw).0, storage.id);
        gw.submit(echo(), &workers).unwrap();
        assert_eq!(sent_one(&mut gw).0, storage.id, "the compute worker is full");

        let mut completed = 0;
        while let Some((peer, request)) = pending.pop() {
            assert_eq!(peer, compute.id, "compute task {} placed on a worker without the capability", request.task_id);
            answer(&mut gw, peer, &request, ok(&proof(&request.payload, 4)), &workers);
            completed += 1;
            pending.extend(sent(&mut gw));
            check_invariants(&gw);
        }
        assert_eq!(completed, 5);
        for id in &ids {
            assert_final(&gw, id, TaskState::Completed);
        }
        assert_eq!(count(&gw.metrics.tasks_completed, "compute"), 5);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn task_waits_while_workers_are_full_and_runs_when_one_answers() {
        let mut gw = gateway();
        let workers = [worker(1, &[])];
        let a = gw.submit(echo(), &workers).unwrap();
        let (peer, ra) = sent_one(&mut gw);
        let b = gw.submit(echo(), &workers).unwrap();
        assert!(sent(&mut gw).is_empty());
        assert_eq!(gw.queued(), 1);
        let record = gw.get(&b).unwrap();
        assert_eq!((record.state, record.attempts), (TaskState::Pending, 0));
        check_invariants(&gw);

        gw.pump(&workers);
        assert!(sent(&mut gw).is_empty(), "still no room");

        answer(&mut gw, peer, &ra, ok("first"), &workers);
        let record = assert_final(&gw, &a, TaskState::Completed);
        assert_eq!(record.result.as_deref(), Some("first"));
        assert_eq!(record.attempt_history[0].outcome, "ok");
        let (peer_b, rb) = sent_one(&mut gw);
        assert_eq!((peer_b, rb.task_id.as_str(), rb.attempt), (peer, b.as_str(), 1));
        assert_eq!(gw.queued(), 0);
        answer(&mut gw, peer_b, &rb, ok("second"), &workers);
        assert_final(&gw, &b, TaskState::Completed);
        assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 2);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn queued_task_goes_to_a_worker_that_joins() {
        let mut gw = gateway();
        let first = worker(1, &[]);
        let id_a = gw.submit(echo(), std::slice::from_ref(&first)).unwrap();
        let id_b = gw.submit(echo(), std::slice::from_ref(&first)).unwrap();
        assert_eq!(sent_one(&mut gw).1.task_id, id_a);
        let joined = worker(1, &[]);
        gw.pump(&[first.clone(), joined.clone()]);
        let (peer, request) = sent_one(&mut gw);
        assert_eq!((peer, request.task_id), (joined.id, id_b));
        check_invariants(&gw);
    }

    // ---- busy ----

    #[tokio::test(start_paused = true)]
    async fn busy_answer_costs_no_attempt_and_moves_to_another_worker() {
        let mut gw = gateway();
        let workers = [worker(1, &[]), worker(1, &[])];
        let id = gw.submit(TaskSpec { max_attempts: Some(1), ..echo() }, &workers).unwrap();
        let (first, r1) = sent_one(&mut gw);
        answer(&mut gw, first, &r1, err(TaskError::Busy), &workers);

        let (second, r2) = sent_one(&mut gw);
        assert_ne!(second, first, "the busy worker is not asked again while another has room");
        assert_eq!(r2.attempt, 2);
        assert_eq!(gw.entries[&id].failures, 0, "busy is not a failure");
        let record = gw.get(&id).unwrap();
        assert_eq!(record.state, TaskState::Running);
        assert_eq!(record.attempt_history[0].outcome, "busy");
        assert_eq!(record.attempt_history[0].error, Some(TaskError::Busy.to_string()));
        assert_eq!(count(&gw.metrics.tasks_retried, "echo"), 0);
        check_invariants(&gw);

        // With max_attempts 1 the task still has its one real attempt.
        answer(&mut gw, second, &r2, ok("done"), &workers);
        assert_final(&gw, &id, TaskState::Completed);
        assert_eq!((count(&gw.metrics.tasks_completed, "echo"), count(&gw.metrics.tasks_failed, "echo")), (1, 0));
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn busy_worker_is_skipped_until_it_answers_again() {
        let mut gw = gateway();
        let workers = [worker(2, &[])];
        let w = workers[0].id;
        let _x = gw.submit(echo(), &workers).unwrap();
        let (_, rx) = sent_one(&mut gw);
        let t = gw.submit(echo(), &workers).unwrap();
        let (_, rt) = sent_one(&mut gw);

        answer(&mut gw, w, &rt, err(TaskError::Busy), &workers);
        assert!(sent(&mut gw).is_empty(), "not re-sent straight back to the busy worker");
        assert_eq!((state(&gw, &t), gw.queued()), (TaskState::Pending, 1));
        check_invariants(&gw);

        // The worker finishing other work shows it has room again.
        answer(&mut gw, w, &rx, ok("x"), &workers);
        let (peer, again) = sent_one(&mut gw);
        assert_eq!((peer, again.task_id.as_str(), again.attempt), (w, t.as_str(), 2));
        answer(&mut gw, w, &again, ok("t"), &workers);
        assert_final(&gw, &t, TaskState::Completed);
        check_invariants(&gw);
    }

    // ---- failures and retries ----

    #[tokio::test(start_paused = true)]
    async fn retryable_failure_is_retried_elsewhere_after_backoff_until_max_attempts() {
        let mut gw = gateway();
        let workers = [worker(1, &[]), worker(1, &[]), worker(1, &[])];
        let id = gw.submit(TaskSpec { max_attempts: Some(3), ..spec("fail", "boom") }, &workers).unwrap();

        let (p1, r1) = sent_one(&mut gw);
        answer(&mut gw, p1, &r1, failed("boom 1"), &workers);
        assert!(sent(&mut gw).is_empty(), "a retry waits for its backoff");
        assert_eq!(state(&gw, &id), TaskState::Pending);
        assert!(gw.entries[&id].retry_timer.is_some());
        assert_eq!(count(&gw.metrics.tasks_retried, "fail"), 1);
        check_invariants(&gw);
        // The first backoff is 25..50 ms.
        assert!(run_for(&mut gw, ms(24), &workers).await.is_empty());
        assert!(sent(&mut gw).is_empty());
        assert_eq!(run_for(&mut gw, ms(26), &workers).await, vec![Timer::RetryDue { id: id.clone() }]);
        let (p2, r2) = sent_one(&mut gw);
        assert_ne!(p2, p1, "retried on a worker that has not failed it");
        assert_eq!((r2.task_id.as_str(), r2.attempt), (id.as_str(), 2));

        answer(&mut gw, p2, &r2, failed("boom 2"), &workers);
        // The second backoff is 50..100 ms.
        assert!(run_for(&mut gw, ms(49), &workers).await.is_empty());
        assert_eq!(run_for(&mut gw, ms(51), &workers).await, vec![Timer::RetryDue { id: id.clone() }]);
        let (p3, r3) = sent_one(&mut gw);
        assert!(p3 != p1 && p3 != p2, "the third attempt goes to the one worker not tried yet");
        assert_eq!(r3.attempt, 3);
        check_invariants(&gw);

        answer(&mut gw, p3, &r3, failed("boom 3"), &workers);
        let record = assert_final(&gw, &id, TaskState::Failed);
        let error = record.error.unwrap();
        assert!(error.starts_with("failed after 3 attempt(s)"), "{error}");
        for (n, peer) in [(1, p1), (2, p2), (3, p3)] {
            let expected = format!("attempt {n} on {peer}: task failed: boom {n}");
            assert!(error.contains(&expected), "{error:?} lacks {expected:?}");
        }
        assert!(record.attempt_history.iter().all(|a| a.outcome == "error"));
        assert_eq!(record.attempts, 3);
        assert_eq!(count(&gw.metrics.tasks_retried, "fail"), 2);
        assert_eq!(count(&gw.metrics.tasks_failed, "fail"), 1);
        assert!(!gw.has_timers());
        assert!(run_for(&mut gw, Duration::from_secs(60), &workers).await.is_empty());
        assert!(sent(&mut gw).is_empty());
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_errors_fail_at_once() {
        let mut gw = gateway();
        let workers = [worker(1, &[]), worker(1, &[])];
        let errors = [TaskError::UnknownType("echo".into()), TaskError::BadPayload("no".into()), TaskError::Version(9)];
        for error in errors {
            let id = gw.submit(TaskSpec { max_attempts: Some(5), ..echo() }, &workers).unwrap();
            let (peer, request) = sent_one(&mut gw);
            answer(&mut gw, peer, &request, err(error.clone()), &workers);
            let record = assert_final(&gw, &id, TaskState::Failed);
            assert_eq!(record.attempts, 1);
            assert_eq!(record.attempt_history[0].outcome, "error");
            assert!(record.error.as_deref().unwrap().contains(&error.to_string()), "{record:?}");
            assert!(gw.entries[&id].retry_timer.is_none());
            assert!(sent(&mut gw).is_empty());
        }
        assert!(run_for(&mut gw, Duration::from_secs(60), &workers).await.is_empty());
        assert!(sent(&mut gw).is_empty());
        assert_eq!(count(&gw.metrics.tasks_failed, "echo"), 3);
        assert_eq!(count(&gw.metrics.tasks_retried, "echo"), 0);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn other_worker_errors_are_retried() {
        let mut gw = gateway();
        let workers = [worker(1, &[]), worker(1, &[])];
        let errors = [TaskError::MissingCapability("gpu".into()), TaskError::Timeout, TaskError::ShuttingDown];
        for error in errors {
            let id = gw.submit(TaskSpec { max_attempts: Some(2), ..echo() }, &workers).unwrap();
            let (p1, r1) = sent_one(&mut gw);
            answer(&mut gw, p1, &r1, err(error.clone()), &workers);
            assert_eq!(state(&gw, &id), TaskState::Pending, "{error:?} is retried");
            run_for(&mut gw, ms(50), &workers).await;
            let (p2, r2) = sent_one(&mut gw);
            assert_ne!(p2, p1);
            answer(&mut gw, p2, &r2, ok("fine"), &workers);
            assert_final(&gw, &id, TaskState::Completed);
        }
        assert_eq!(count(&gw.metrics.tasks_retried, "echo"), 3);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_deadline_fails_the_attempt_and_retries() {
        let mut gw = gateway();
        let workers = [worker(1, &[]), worker(1, &[])];
        let id = gw.submit(TaskSpec { timeout_ms: Some(1_000), ..echo() }, &workers).unwrap();
        let (p1, _) = sent_one(&mut gw);

        assert!(run_for(&mut gw, ms(999), &workers).await.is_empty());
        assert_eq!(state(&gw, &id), TaskState::Running);
        let fired = run_for(&mut gw, ms(1), &workers).await;
        assert_eq!(fired, vec![Timer::AttemptDeadline { id: id.clone(), attempt: 1 }]);
        let record = gw.get(&id).unwrap();
        assert_eq!(record.state, TaskState::Pending);
        assert_eq!(record.attempt_history[0].outcome, "timeout");
        assert_eq!(record.attempt_history[0].error.as_deref(), Some("no answer within 1000 ms"));
        assert_eq!((gw.in_flight_to(&p1), gw.running()), (0, 0));
        check_invariants(&gw);

        assert_eq!(run_for(&mut gw, ms(50), &workers).await, vec![Timer::RetryDue { id: id.clone() }]);
        let (p2, r2) = sent_one(&mut gw);
        assert_ne!(p2, p1);
        assert_eq!(r2.attempt, 2);
        answer(&mut gw, p2, &r2, ok("in time"), &workers);
        assert_final(&gw, &id, TaskState::Completed);
        assert!(!gw.has_timers());
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_deadlines_exhaust_max_attempts() {
        let mut gw = gateway();
        let workers = [worker(1, &[])];
        let id = gw.submit(TaskSpec { timeout_ms: Some(100), max_attempts: Some(2), ..echo() }, &workers).unwrap();
        let fired = run_for(&mut gw, Duration::from_secs(5), &workers).await;
        let deadlines = fired.iter().filter(|t| matches!(t, Timer::AttemptDeadline { .. })).count();
        assert_eq!(deadlines, 2, "{fired:?}");
        assert_eq!(sent(&mut gw).len(), 2);
        let record = assert_final(&gw, &id, TaskState::Failed);
        assert!(record.error.unwrap().contains("attempt 2 on"));
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn late_answer_from_an_earlier_attempt_is_ignored() {
        let mut gw = gateway();
        let workers = [worker(1, &[]), worker(1, &[])];
        let id = gw.submit(TaskSpec { timeout_ms: Some(1_000), ..echo() }, &workers).unwrap();
        let (p1, r1) = sent_one(&mut gw);
        run_for(&mut gw, ms(1_000), &workers).await;

        // Late, during the backoff: changes nothing, the retry still happens.
        answer(&mut gw, p1, &r1, ok("late"), &workers);
        assert_eq!(state(&gw, &id), TaskState::Pending);
        assert!(gw.entries[&id].retry_timer.is_some());
        assert_eq!(reason(&gw.metrics.messages_dropped, "stale_task_result"), 1);
        check_invariants(&gw);
        run_for(&mut gw, ms(50), &workers).await;
        let (p2, r2) = sent_one(&mut gw);
        assert_eq!(r2.attempt, 2);

        // Late, while attempt 2 runs: still ignored.
        answer(&mut gw, p1, &r1, ok("late again"), &workers);
        assert_eq!(state(&gw, &id), TaskState::Running);
        assert_eq!(gw.in_flight_to(&p2), 1);
        assert!(sent(&mut gw).is_empty());

        answer(&mut gw, p2, &r2, ok("fresh"), &workers);
        assert_final(&gw, &id, TaskState::Completed);
        // Neither the late nor a duplicate answer completes it again.
        answer(&mut gw, p1, &r1, ok("late, after the end"), &workers);
        answer(&mut gw, p2, &r2, ok("duplicate"), &workers);
        let record = assert_final(&gw, &id, TaskState::Completed);
        assert_eq!(record.result.as_deref(), Some("fresh"));
        assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 1);
        assert_eq!(reason(&gw.metrics.messages_dropped, "stale_task_result"), 4);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn answer_from_a_peer_not_given_the_task_is_ignored() {
        let mut gw = gateway();
        let workers = [worker(1, &[]), worker(1, &[])];
        let id = gw.submit(echo(), &workers).unwrap();
        let (peer, request) = sent_one(&mut gw);
        let other = if peer == workers[0].id { workers[1].id } else { workers[0].id };

        answer(&mut gw, other, &request, ok("forged"), &workers);
        answer(&mut gw, PeerId::random(), &request, ok("forged"), &workers);
        answer(&mut gw, other, &request, failed("forged"), &workers);
        // The right peer, but an attempt it was never given.
        answer(&mut gw, peer, &TaskRequest { attempt: 2, ..request.clone() }, ok("forged"), &workers);
        // Nor a task it was never given.
        answer(&mut gw, peer, &TaskRequest { task_id: "nope".into(), ..request.clone() }, ok("forged"), &workers);
        assert_eq!(state(&gw, &id), TaskState::Running);
        assert_eq!(gw.in_flight_to(&peer), 1);
        assert_eq!(gw.get(&id).unwrap().attempts, 1);
        assert_eq!(reason(&gw.metrics.messages_dropped, "stale_task_result"), 5);
        assert!(sent(&mut gw).is_empty());
        check_invariants(&gw);

        answer(&mut gw, peer, &request, ok("real"), &workers);
        let record = assert_final(&gw, &id, TaskState::Completed);
        assert_eq!(record.result.as_deref(), Some("real"));
        assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 1);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn mismatched_response_is_not_a_completion() {
        let mut gw = gateway();
        let workers = [worker(4, &[])];
        let w = workers[0].id;
        let mutations: [fn(&mut TaskResponse); 3] =
            [|r| r.task_id = "another".into(), |r| r.attempt += 1, |r| r.worker = PeerId::random().to_string()];
        for mutate in mutations {
            let id = gw.submit(TaskSpec { max_attempts: Some(1), ..echo() }, &workers).unwrap();
            let (peer, request) = sent_one(&mut gw);
            let mut response = TaskResponse {
                v: WIRE_VERSION,
                task_id: request.task_id.clone(),
                attempt: request.attempt,
                worker: peer.to_string(),
                outcome: ok("x"),
            };
            mutate(&mut response);
            gw.on_answer(peer, &request.task_id, request.attempt, Ok(response), &workers);
            let record = assert_final(&gw, &id, TaskState::Failed);
            assert_eq!(record.result, None);
            assert_eq!(record.attempt_history[0].outcome, "lost");
            assert!(record.attempt_history[0].error.as_deref().unwrap().contains("answered for another task"));
        }
        assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 0);
        assert_eq!(reason(&gw.metrics.messages_dropped, "mismatched_task_result"), 3);

        // An answer to A that carries B's result completes neither.
        let a = gw.submit(echo(), &workers).unwrap();
        let (_, ra) = sent_one(&mut gw);
        let b = gw.submit(echo(), &workers).unwrap();
        let (_, rb) = sent_one(&mut gw);
        let for_b =
            TaskResponse { v: WIRE_VERSION, task_id: b.clone(), attempt: 1, worker: w.to_string(), outcome: ok("b") };
        gw.on_answer(w, &a, ra.attempt, Ok(for_b), &workers);
        assert_eq!(state(&gw, &a), TaskState::Pending, "A's attempt failed and is retried");
        assert_eq!(state(&gw, &b), TaskState::Running);
        answer(&mut gw, w, &rb, ok("b"), &workers);
        assert_final(&gw, &b, TaskState::Completed);
        assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 1);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn network_error_fails_the_attempt_and_retries() {
        let mut gw = gateway();
        let workers = [worker(1, &[]), worker(1, &[])];
        let id = gw.submit(echo(), &workers).unwrap();
        let (p1, r1) = sent_one(&mut gw);
        let error = crate::network::DispatchError::ConnectionLost("connection reset".into());
        gw.on_answer(p1, &id, r1.attempt, Err(error), &workers);
        let record = gw.get(&id).unwrap();
        assert_eq!(record.state, TaskState::Pending);
        assert_eq!(record.attempt_history[0].outcome, "lost");
        // The network's error as it displays, word for word.
        assert_eq!(record.attempt_history[0].error.as_deref(), Some("connection to worker lost: connection reset"));
        run_for(&mut gw, ms(50), &workers).await;
        let (p2, r2) = sent_one(&mut gw);
        assert_ne!(p2, p1);
        answer(&mut gw, p2, &r2, ok("ok"), &workers);
        assert_final(&gw, &id, TaskState::Completed);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn lost_worker_fails_its_attempts_at_once_and_they_retry_elsewhere() {
        let mut gw = gateway();
        let a = worker(2, &[]);
        let b = worker(3, &[]);
        let only_a = std::slice::from_ref(&a);
        let t1 = gw.submit(echo(), only_a).unwrap();
        let t2 = gw.submit(echo(), only_a).unwrap();
        let on_a = sent(&mut gw);
        assert!(on_a.iter().all(|(p, _)| *p == a.id) && on_a.len() == 2);
        let t3 = gw.submit(echo(), std::slice::from_ref(&b)).unwrap();
        let (_, r3) = sent_one(&mut gw);

        let survivors = [b.clone()];
        gw.on_worker_lost(a.id, "dead", &survivors);
        for t in [&t1, &t2] {
            let record = gw.get(t).unwrap();
            assert_eq!(record.state, TaskState::Pending, "failed now, not at the deadline");
            assert_eq!(record.attempt_history[0].outcome, "lost");
            assert_eq!(record.attempt_history[0].error, Some(format!("worker {} dead", a.id)));
        }
        assert_eq!(state(&gw, &t3), TaskState::Running, "other workers' tasks are untouched");
        assert_eq!((gw.in_flight_to(&a.id), gw.in_flight_to(&b.id)), (0, 1));
        assert_eq!(count(&gw.metrics.tasks_retried, "echo"), 2);
        check_invariants(&gw);

        // A late answer from the lost worker is ignored.
        answer(&mut gw, a.id, &on_a[0].1, ok("zombie"), &survivors);
        assert_eq!(state(&gw, &on_a[0].1.task_id), TaskState::Pending);

        run_for(&mut gw, ms(50), &survivors).await;
        let retried = sent(&mut gw);
        assert_eq!(retried.len(), 2);
        for (peer, request) in retried.iter().chain([(b.id, r3)].iter()) {
            assert_eq!(*peer, b.id);
            answer(&mut gw, *peer, request, ok("ok"), &survivors);
        }
        for t in [&t1, &t2, &t3] {
            assert_final(&gw, t, TaskState::Completed);
        }
        // Losing a worker that runs nothing is harmless.
        gw.on_worker_lost(PeerId::random(), "left", &survivors);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn compute_results_are_verified() {
        let mut gw = gateway();
        let workers = [worker(1, &["compute"]), worker(1, &["compute"])];
        let payload = "block-7";
        let id = gw.submit(TaskSpec { max_attempts: Some(4), ..spec("compute", payload) }, &workers).unwrap();

        let (p1, r1) = sent_one(&mut gw);
        answer(&mut gw, p1, &r1, ok("not a proof"), &workers);
        let record = gw.get(&id).unwrap();
        assert_eq!(record.state, TaskState::Pending, "an unverifiable result is retried");
        assert_eq!(record.attempt_history[0].outcome, "error");
        assert!(record.attempt_history[0].error.as_deref().unwrap().starts_with("result failed verification"));

        run_for(&mut gw, ms(50), &workers).await;
        let (p2, r2) = sent_one(&mut gw);
        assert_ne!(p2, p1);
        answer(&mut gw, p2, &r2, ok(&proof("some other payload", 4)), &workers);
        assert_eq!(state(&gw, &id), TaskState::Pending, "a proof of another payload is retried");

        run_for(&mut gw, ms(100), &workers).await;
        let (p3, r3) = sent_one(&mut gw);
        answer(&mut gw, p3, &r3, ok(&proof(payload, 0)), &workers);
        assert_eq!(state(&gw, &id), TaskState::Pending, "a proof below the difficulty is retried");
        check_invariants(&gw);

        run_for(&mut gw, ms(200), &workers).await;
        let (p4, r4) = sent_one(&mut gw);
        let good = proof(payload, 4);
        answer(&mut gw, p4, &r4, ok(&good), &workers);
        let record = assert_final(&gw, &id, TaskState::Completed);
        assert_eq!(record.result, Some(good));
        assert_eq!(record.attempts, 4);
        assert_eq!(count(&gw.metrics.tasks_retried, "compute"), 3);
        assert_eq!(count(&gw.metrics.tasks_completed, "compute"), 1);
        check_invariants(&gw);
    }

    // ---- queue deadline ----

    #[tokio::test(start_paused = true)]
    async fn task_that_cannot_be_placed_in_time_counts_failures_then_fails() {
        let mut gw = gateway();
        let workers = [worker(1, &[])];
        let blocker = gw.submit(TaskSpec { timeout_ms: Some(60_000), ..echo() }, &workers).unwrap();
        let (w, rb) = sent_one(&mut gw);
        let id = gw.submit(TaskSpec { timeout_ms: Some(1_000), max_attempts: Some(2), ..echo() }, &workers).unwrap();
        assert_eq!(gw.queued(), 1);

        assert!(run_for(&mut gw, ms(999), &workers).await.is_empty());
        let fired = run_for(&mut gw, ms(1), &workers).await;
        assert!(matches!(&fired[..], [Timer::QueueDeadline { id: t, .. }] if *t == id), "{fired:?}");
        let record = gw.get(&id).unwrap();
        assert_eq!((record.state, record.attempts), (TaskState::Pending, 0));
        assert_eq!(gw.entries[&id].failures, 1);
        assert_eq!(gw.queued(), 1, "still waiting for a worker");
        assert_eq!(record.attempt_history.len(), 1);
        assert_eq!(record.attempt_history[0].outcome, "queued");
        check_invariants(&gw);

        assert_eq!(run_for(&mut gw, ms(1_000), &workers).await.len(), 1);
        let record = assert_final(&gw, &id, TaskState::Failed);
        let error = record.error.unwrap();
        assert!(error.starts_with("failed after 2 attempt(s)"), "{error}");
        assert!(error.contains("no capable worker was free within 1000 ms"), "{error}");
        assert_eq!(gw.queued(), 0);
        assert_eq!(count(&gw.metrics.tasks_failed, "echo"), 1);

        // The worker freeing up later does not resurrect it.
        answer(&mut gw, w, &rb, ok("done"), &workers);
        assert_final(&gw, &blocker, TaskState::Completed);
        assert!(sent(&mut gw).is_empty());
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_deadline_is_disarmed_once_the_task_is_placed() {
        let mut gw = gateway();
        let workers = [worker(1, &[])];
        let _blocker = gw.submit(echo(), &workers).unwrap();
        let (w, rb) = sent_one(&mut gw);
        let id = gw.submit(TaskSpec { timeout_ms: Some(1_000), max_attempts: Some(1), ..echo() }, &workers).unwrap();
        run_for(&mut gw, ms(500), &workers).await;
        answer(&mut gw, w, &rb, ok("done"), &workers);
        let (_, request) = sent_one(&mut gw);
        assert_eq!(request.task_id, id);
        // Only the attempt deadline (at 500 + 1000 ms) can fire now, not the queue one at 1000 ms.
        assert!(run_for(&mut gw, ms(999), &workers).await.is_empty());
        assert_eq!(state(&gw, &id), TaskState::Running);
        let fired = run_for(&mut gw, ms(1), &workers).await;
        assert_eq!(fired, vec![Timer::AttemptDeadline { id: id.clone(), attempt: 1 }]);
        assert_final(&gw, &id, TaskState::Failed);
        check_invariants(&gw);
    }

    // ---- cancel ----

    #[tokio::test(start_paused = true)]
    async fn cancel_a_queued_task() {
        let mut gw = gateway();
        let workers = [worker(1, &[])];
        let a = gw.submit(echo(), &workers).unwrap();
        let (w, ra) = sent_one(&mut gw);
        let b = gw.submit(echo(), &workers).unwrap();
        let record = gw.cancel(&b).unwrap();
        assert_eq!(record.state, TaskState::Cancelled);
        assert_eq!(record.error.as_deref(), Some("cancelled by user"));
        assert_eq!(gw.queued(), 0);
        assert_eq!(count(&gw.metrics.tasks_cancelled, "echo"), 1);
        check_invariants(&gw);

        answer(&mut gw, w, &ra, ok("a"), &workers);
        assert_final(&gw, &a, TaskState::Completed);
        assert!(sent(&mut gw).is_empty(), "a cancelled task is never dispatched");
        assert!(run_for(&mut gw, Duration::from_secs(60), &workers).await.is_empty());
        assert_final(&gw, &b, TaskState::Cancelled);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_a_running_task_and_ignore_its_answer() {
        let mut gw = gateway();
        let workers = [worker(1, &[])];
        let id = gw.submit(echo(), &workers).unwrap();
        let (w, request) = sent_one(&mut gw);
        let record = gw.cancel(&id).unwrap();
        assert_eq!(record.state, TaskState::Cancelled);
        assert_eq!(record.attempt_history[0].outcome, "cancelled");
        assert_eq!((gw.in_flight_to(&w), gw.running()), (0, 0));
        assert!(!gw.has_timers(), "the attempt deadline is disarmed");
        check_invariants(&gw);

        answer(&mut gw, w, &request, ok("too late"), &workers);
        let record = assert_final(&gw, &id, TaskState::Cancelled);
        assert_eq!(record.result, None);
        assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 0);
        assert_eq!(count(&gw.metrics.tasks_cancelled, "echo"), 1);
        assert_eq!(reason(&gw.metrics.messages_dropped, "stale_task_result"), 1);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_during_retry_backoff_stops_the_retry() {
        let mut gw = gateway();
        let workers = [worker(1, &[])];
        let id = gw.submit(echo(), &workers).unwrap();
        let (w, request) = sent_one(&mut gw);
        answer(&mut gw, w, &request, failed("oops"), &workers);
        assert!(gw.entries[&id].retry_timer.is_some());
        assert_eq!(gw.cancel(&id).unwrap().state, TaskState::Cancelled);
        assert!(!gw.has_timers());
        assert!(run_for(&mut gw, Duration::from_secs(5), &workers).await.is_empty());
        assert!(sent(&mut gw).is_empty());
        assert_final(&gw, &id, TaskState::Cancelled);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_a_final_or_unknown_task_is_refused() {
        let mut gw = gateway();
        let workers = [worker(3, &[])];
        let done = gw.submit(echo(), &workers).unwrap();
        let broken = gw.submit(TaskSpec { max_attempts: Some(1), ..echo() }, &workers).unwrap();
        let cancelled = gw.submit(echo(), &workers).unwrap();
        let effects = sent(&mut gw);
        answer(&mut gw, effects[0].0, &effects[0].1, ok("done"), &workers);
        answer(&mut gw, effects[1].0, &effects[1].1, failed("no"), &workers);
        gw.cancel(&cancelled).unwrap();

        for (id, state) in [(&done, "completed"), (&broken, "failed"), (&cancelled, "cancelled")] {
            let e = gw.cancel(id).unwrap_err();
            assert_eq!(e, CancelError::AlreadyFinal(id.clone(), state));
            assert_eq!(e.to_string(), format!("task {id} is already {state}"));
        }
        let e = gw.cancel("nope").unwrap_err();
        assert_eq!(e, CancelError::NotFound("nope".into()));
        assert_eq!(e.to_string(), "no task with id nope");
        assert_final(&gw, &done, TaskState::Completed);
        assert_final(&gw, &broken, TaskState::Failed);
        let m = &gw.metrics;
        assert_eq!((total(&m.tasks_completed), total(&m.tasks_failed), total(&m.tasks_cancelled)), (1, 1, 1));
        check_invariants(&gw);
    }

    // ---- wait, prune, local, abandon ----

    #[tokio::test(start_paused = true)]
    async fn wait_resolves_at_the_final_state() {
        let mut gw = gateway();
        let workers = [worker(1, &[])];
        let id = gw.submit(echo(), &workers).unwrap();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        gw.wait(&id, tx1).unwrap();
        gw.wait(&id, tx2).unwrap();
        assert_eq!(rx1.try_recv().unwrap_err(), TryRecvError::Empty);

        let (w, r1) = sent_one(&mut gw);
        answer(&mut gw, w, &r1, failed("flaky"), &workers);
        assert_eq!(rx1.try_recv().unwrap_err(), TryRecvError::Empty, "a retry is not final");
        run_for(&mut gw, ms(50), &workers).await;
        let (w, r2) = sent_one(&mut gw);
        answer(&mut gw, w, &r2, ok("result"), &workers);

        for rx in [rx1, rx2] {
            let record = rx.await.unwrap();
            assert_eq!(record.state, TaskState::Completed);
            assert_eq!(record.result.as_deref(), Some("result"));
        }
        // Waiting on a final task answers at once; on an unknown one is refused.
        let (tx, rx) = oneshot::channel();
        gw.wait(&id, tx).unwrap();
        assert_eq!(rx.await.unwrap().state, TaskState::Completed);
        let (tx, _rx) = oneshot::channel();
        assert_eq!(gw.wait("nope", tx), Err(CancelError::NotFound("nope".into())));

        // A waiter that went away does not disturb the task finishing.
        let other = gw.submit(echo(), &workers).unwrap();
        let (tx, rx) = oneshot::channel();
        gw.wait(&other, tx).unwrap();
        drop(rx);
        let (w, r) = sent_one(&mut gw);
        answer(&mut gw, w, &r, ok("x"), &workers);
        assert_final(&gw, &other, TaskState::Completed);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_resolves_on_cancel_and_on_failure() {
        let mut gw = gateway();
        let workers = [worker(2, &[])];
        let a = gw.submit(echo(), &workers).unwrap();
        let b = gw.submit(TaskSpec { max_attempts: Some(1), ..echo() }, &workers).unwrap();
        let (ta, ra) = oneshot::channel();
        let (tb, rb) = oneshot::channel();
        gw.wait(&a, ta).unwrap();
        gw.wait(&b, tb).unwrap();
        let effects = sent(&mut gw);
        let (wb, reqb) = effects.iter().find(|(_, r)| r.task_id == b).unwrap();
        gw.cancel(&a).unwrap();
        answer(&mut gw, *wb, reqb, failed("no"), &workers);
        assert_eq!(ra.await.unwrap().state, TaskState::Cancelled);
        assert_eq!(rb.await.unwrap().state, TaskState::Failed);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn prune_forgets_final_records_after_retention() {
        let mut gw = gateway_with(TasksConfig { retention_secs: 60, ..config() });
        let workers = [worker(2, &[])];
        let done = gw.submit(echo(), &workers).unwrap();
        let open = gw.submit(echo(), &workers).unwrap();
        let effects = sent(&mut gw);
        let (w, rd) = effects.iter().find(|(_, r)| r.task_id == done).unwrap().clone();
        answer(&mut gw, w, &rd, ok("x"), &workers);
        let finished_at = gw.finished.back().unwrap().0;

        gw.prune(finished_at + Duration::from_secs(59));
        assert!(gw.get(&done).is_some(), "kept within the retention");
        gw.prune(finished_at + Duration::from_secs(60));
        assert!(gw.get(&done).is_none(), "forgotten after the retention");
        assert_eq!(gw.cancel(&done), Err(CancelError::NotFound(done.clone())));
        let (tx, _rx) = oneshot::channel();
        assert!(gw.wait(&done, tx).is_err());
        assert!(gw.list(10).iter().all(|r| r.id != done));
        check_invariants_after_prune(&gw, 1);

        // An unfinished task is never pruned, however old.
        gw.prune(finished_at + Duration::from_secs(1_000_000));
        assert_eq!(state(&gw, &open), TaskState::Running);
        let (w, ro) = effects.iter().find(|(_, r)| r.task_id == open).unwrap().clone();
        answer(&mut gw, w, &ro, ok("y"), &workers);
        let open_finished_at = gw.finished.back().unwrap().0;
        gw.prune(open_finished_at + Duration::from_secs(59));
        assert!(gw.get(&open).is_some());
        gw.prune(open_finished_at + Duration::from_secs(60));
        assert!(gw.get(&open).is_none());
        assert!(gw.entries.is_empty() && gw.finished.is_empty());
        assert_eq!(count(&gw.metrics.tasks_completed, "echo"), 2, "pruning does not touch the counters");
        check_invariants_after_prune(&gw, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn local_worker_gets_a_run_local_effect() {
        let mut gw = gateway();
        let local = gw.local;
        let me = WorkerView { id: local, capacity: 1, capabilities: vec!["storage".into()] };
        let remote = worker(1, &["compute"]);
        let workers = [me, remote.clone()];

        let id = gw.submit(spec("storage", "get k"), &workers).unwrap();
        let effects = gw.take_effects();
        let request = match &effects[..] {
            [Effect::RunLocal { request }] => request.clone(),
            other => panic!("expected one RunLocal, got {other:?}"),
        };
        assert_eq!((request.task_id.as_str(), request.attempt), (id.as_str(), 1));
        assert_eq!(gw.get(&id).unwrap().worker, Some(local.to_string()));
        assert_eq!(gw.in_flight_to(&local), 1);

        // Tasks the local node cannot run go out over the network.
        gw.submit(spec("compute", "c"), &workers).unwrap();
        assert!(matches!(&gw.take_effects()[..], [Effect::Dispatch { peer, .. }] if *peer == remote.id));

        answer(&mut gw, local, &request, ok("v"), &workers);
        assert_final(&gw, &id, TaskState::Completed);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn abandon_all_fails_every_unfinished_task() {
        let mut gw = gateway();
        let workers = [worker(2, &[])];
        let done = gw.submit(echo(), &workers).unwrap();
        let running = gw.submit(echo(), &workers).unwrap();
        let effects = sent(&mut gw);
        let (w, rd) = effects.iter().find(|(_, r)| r.task_id == done).unwrap().clone();
        answer(&mut gw, w, &rd, ok("x"), &workers);
        let backoff = gw.submit(echo(), &workers).unwrap();
        let (w, rb) = sent_one(&mut gw);
        answer(&mut gw, w, &rb, failed("x"), &workers);
        let _filler = gw.submit(echo(), &workers).unwrap();
        let queued = gw.submit(echo(), &workers).unwrap();
        assert_eq!(gw.queued(), 1);
        assert_eq!(state(&gw, &backoff), TaskState::Pending);
        check_invariants(&gw);

        gw.abandon_all("shut down before the task finished");
        assert_final(&gw, &done, TaskState::Completed);
        for id in [&running, &backoff, &queued] {
            let record = assert_final(&gw, id, TaskState::Failed);
            assert_eq!(record.error.as_deref(), Some("gateway shut down before the task finished"));
        }
        assert_eq!((gw.unfinished(), gw.queued(), gw.running()), (0, 0, 0));
        assert!(!gw.has_timers());
        assert_eq!(count(&gw.metrics.tasks_failed, "echo"), 4);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn many_tasks_each_reach_exactly_one_final_state() {
        // A mixed workload across busy, failing, slow, lost and well-behaved workers.
        let mut gw = gateway_with(TasksConfig { max_attempts: 4, ..config() });
        let mut workers: Vec<WorkerView> = (0..4).map(|_| worker(2, &[])).collect();
        let ids: Vec<String> = (0..40)
            .map(|i| gw.submit(TaskSpec { timeout_ms: Some(500), ..spec("echo", &i.to_string()) }, &workers).unwrap())
            .collect();
        let mut step = 0u32;
        for _round in 0..200 {
            for (peer, request) in sent(&mut gw) {
                step += 1;
                let outcome = match step % 6 {
                    0 => err(TaskError::Busy),
                    1 => failed("flaky"),
                    2 => continue, // never answers: the deadline handles it
                    _ => ok(&request.payload),
                };
                answer(&mut gw, peer, &request, outcome, &workers);
            }
            if step > 30 && workers.len() == 4 {
                let lost = workers.remove(0);
                gw.on_worker_lost(lost.id, "dead", &workers);
            }
            check_invariants(&gw);
            if gw.unfinished() == 0 {
                break;
            }
            run_for(&mut gw, ms(100), &workers).await;
        }
        assert_eq!(gw.unfinished(), 0);
        for id in &ids {
            let record = gw.get(id).unwrap();
            assert!(record.state.is_final());
            if record.state == TaskState::Completed {
                assert_eq!(record.result.as_deref(), Some(record.payload.as_str()));
            }
        }
        assert!(!gw.has_timers());
        check_invariants(&gw);
    }

    // ---- bugs ----

    #[tokio::test(start_paused = true)]
    async fn busy_worker_is_offered_work_again_once_it_may_be_free() {
        let mut gw = gateway();
        let workers = [worker(2, &[])];
        let id = gw.submit(TaskSpec { timeout_ms: Some(1_000), max_attempts: Some(3), ..echo() }, &workers).unwrap();
        let (w, request) = sent_one(&mut gw);
        // Busy with another gateway's work; this gateway has nothing else in flight to it.
        answer(&mut gw, w, &request, err(TaskError::Busy), &workers);
        run_for(&mut gw, ms(3_000), &workers).await;
        let again = sent(&mut gw);
        assert!(
            again.iter().any(|(p, r)| *p == w && r.task_id == id),
            "never offered to the (only, idle) worker again: {:#?}",
            gw.get(&id)
        );
        assert_ne!(state(&gw, &id), TaskState::Failed);
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_depth_gauge_follows_cancel_and_queue_expiry() {
        let mut gw = gateway();
        let workers = [worker(1, &[])];
        gw.submit(TaskSpec { timeout_ms: Some(60_000), ..echo() }, &workers).unwrap();
        let q = gw.submit(echo(), &workers).unwrap();
        assert_eq!(gw.metrics.queue_depth.get(), 1);
        gw.cancel(&q).unwrap();
        assert_eq!(gw.metrics.queue_depth.get(), gw.queued() as i64, "after cancel");

        gw.submit(TaskSpec { timeout_ms: Some(1_000), max_attempts: Some(1), ..echo() }, &workers).unwrap();
        assert_eq!(gw.metrics.queue_depth.get(), 1);
        run_for(&mut gw, ms(1_000), &workers).await;
        assert_eq!(gw.queued(), 0);
        assert_eq!(gw.metrics.queue_depth.get(), 0, "after the queue deadline failed the task");
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn abandon_all_keeps_the_history_of_ended_attempts() {
        let mut gw = gateway();
        let workers = [worker(1, &[])];
        let id = gw.submit(echo(), &workers).unwrap();
        let (w, request) = sent_one(&mut gw);
        answer(&mut gw, w, &request, failed("disk on fire"), &workers);
        gw.abandon_all("shut down before the task finished");
        let record = assert_final(&gw, &id, TaskState::Failed);
        assert_eq!(record.attempt_history[0].outcome, "error", "{record:#?}");
        assert_eq!(record.attempt_history[0].error.as_deref(), Some("task failed: disk on fire"));
        check_invariants(&gw);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_summary_counts_the_final_non_retryable_attempt() {
        let mut gw = gateway();
        let workers = [worker(1, &[]), worker(1, &[])];
        let id = gw.submit(TaskSpec { timeout_ms: Some(1_000), ..echo() }, &workers).unwrap();
        sent_one(&mut gw);
        run_for(&mut gw, ms(1_050), &workers).await;
        let (p2, r2) = sent_one(&mut gw);
        answer(&mut gw, p2, &r2, err(TaskError::BadPayload("no".into())), &workers);
        let error = assert_final(&gw, &id, TaskState::Failed).error.unwrap();
        assert!(error.starts_with("failed after 2 attempt(s)"), "{error}");
        check_invariants(&gw);
    }
}
