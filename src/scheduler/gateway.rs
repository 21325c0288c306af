//! The gateway: accepts tasks, places each attempt on a worker, and drives every accepted
//! task to exactly one final state through timeouts, lost workers, busy refusals and retries.
//!
//! A state machine over plain inputs (submissions, answers, timer expiries, lost workers);
//! its outputs are `Effect`s the node carries out. Answers are matched on (task, attempt,
//! worker), so a late answer from an earlier attempt can never complete a task twice.
//!
//! This file is the surface the node drives; each concern's workings are beside it:
//! `admission`, `queue`, `attempts`, `load`, `timers` and `lifecycle` (which also holds
//! `wait` and `prune`), and `durable` (records to the store and back).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use libp2p::PeerId;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::oneshot;

use super::admission::{self, Refused};
use super::adoption::Keeper;
use super::attempts::judge;
use super::copies::Copies;
use super::durable::Durable;
use super::entry::Entry;
use super::load::Load;
use super::queue::Queues;
use super::reasons::Rejection;
use super::record::{AttemptOutcome, TaskRecord, TaskState, TimelineKind, now_ms};
use super::retry::RetryPolicy;
use super::timers::{Timer, Timers};
use super::types::{CancelError, Effect, SubmitError, TaskSpec, WorkerView};
use crate::config::TasksConfig;
use crate::metrics::{DropReason, Limit, Metrics, ReasonLabels};
use crate::network::DispatchError;
use crate::protocol::{TaskError, TaskOutcome, TaskResponse};
use crate::store::copies::CopyLog;
use crate::store::tasks::TaskLog;

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
    /// Records on their way to the store, and what waits for them to get there.
    pub(super) durable: Durable,
    /// This node's id as text (records name their owner).
    pub(super) local_name: String,
    /// Where this gateway's records have copies, and what waits for them.
    pub(super) copies: Copies,
    /// Other gateways' records kept here, and their adoption.
    pub(super) keeper: Keeper,
    /// Times each worker's replica results were outvoted (its GossipSub penalty).
    pub(super) strikes: HashMap<PeerId, u32>,
    /// What tasks cost and earn (`ledger`); `None`: no ledger, nothing is paid.
    pub(super) pricing: Option<super::payment::Pricing>,
    /// With `ledger.enforce`: the highest prices of the accepted tasks not final yet.
    pub(super) reserved: u64,
}

impl Gateway {
    /// `log`: where records are kept durably; `None` keeps them in memory only (tests).
    /// `copies`: where other gateways' records are kept; `None` keeps none.
    pub fn new(
        local: PeerId,
        config: TasksConfig,
        metrics: Metrics,
        log: Option<TaskLog>,
        copies: Option<CopyLog>,
    ) -> Self {
        Self {
            local_name: local.to_string(),
            copies: Copies::new(&config),
            keeper: Keeper::new(copies, std::time::Duration::from_secs(config.adopt_after_secs)),
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
            durable: Durable::new(log),
            strikes: HashMap::new(),
            pricing: None,
            reserved: 0,
        }
    }

    /// Prices completed tasks and pays their workers (`Effect::Pay`); with `enforce`, refuses
    /// tasks this node cannot pay for.
    pub fn set_pricing(&mut self, pricing: super::payment::Pricing) {
        self.pricing = Some(pricing);
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
        let prices = self
            .check_funds(std::slice::from_ref(&spec), std::slice::from_ref(&checked))
            .map_err(|r| self.refuse(r))?;
        if self.store_is_full() {
            return Err(self.store_full());
        }
        if self.queued() >= self.config.queue_capacity {
            return Err(self.queue_full());
        }
        let id = self.accept(spec, checked);
        self.reserve(&id, prices.first().copied().unwrap_or(0));
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
        let prices = self.check_funds(&specs, &checked).map_err(|r| (0, self.refuse(r)))?;
        // Tasks a free worker takes at once never wait; the rest need queue room.
        if self.store_is_full() {
            return Err((0, self.store_full()));
        }
        let room = self.config.queue_capacity.saturating_sub(self.queued()) + self.load.free_slots(workers);
        if specs.len() > room {
            return Err((0, self.queue_full()));
        }
        let ids: Vec<String> = specs.into_iter().zip(checked).map(|(spec, c)| self.accept(spec, c)).collect();
        for (id, price) in ids.iter().zip(prices) {
            self.reserve(id, price);
        }
        self.pump(workers);
        Ok(ids)
    }

    /// With `ledger.enforce`: the highest price of the tasks must be covered by what this
    /// node may still spend, less what the tasks it accepted and has not finished may cost.
    /// Returns each task's highest price (all 0 without `enforce`), to reserve.
    fn check_funds(&self, specs: &[TaskSpec], checked: &[admission::Checked]) -> Result<Vec<u64>, admission::Refused> {
        let Some(pricing) = self.pricing.as_ref().filter(|p| p.enforce) else { return Ok(Vec::new()) };
        let prices: Vec<u64> = specs
            .iter()
            .zip(checked)
            .map(|(spec, c)| pricing.max_price(c.kind, &spec.payload, c.replicas).unwrap_or(0))
            .collect();
        let price = prices.iter().copied().fold(0, u64::saturating_add);
        let available = pricing.funds.available() - i128::from(self.reserved);
        if price > 0 && i128::from(price) > available {
            return Err(admission::Refused(
                Rejection::InsufficientCredits,
                SubmitError::InsufficientCredits { available, price },
            ));
        }
        Ok(prices)
    }

    /// Holds back `price` credits for the accepted `id` until it is final (or handed over).
    fn reserve(&mut self, id: &str, price: u64) {
        if let Some(e) = self.entries.get_mut(id).filter(|_| price > 0) {
            e.reserved = price;
            self.reserved += price;
        }
    }

    /// Gives back what `id` held in reserve.
    pub(super) fn unreserve(&mut self, id: &str) {
        if let Some(e) = self.entries.get_mut(id) {
            self.reserved -= std::mem::take(&mut e.reserved);
        }
    }

    /// Counts a refused submission under its reason; returns what the submitter is told.
    fn refuse(&self, Refused(reason, error): Refused) -> SubmitError {
        self.metrics.tasks_rejected.get_or_create(&ReasonLabels { reason: reason.label().into() }).inc();
        error
    }

    fn store_full(&self) -> SubmitError {
        self.refuse(Refused(Rejection::StoreFull, SubmitError::StoreFull))
    }

    fn queue_full(&self) -> SubmitError {
        self.metrics.limit_hit(Limit::TaskQueue);
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
            self.metrics.dropped(DropReason::StaleTaskResult);
            tracing::debug!(%task_id, attempt, %peer, "ignoring stale or unexpected task result");
            // A late answer still means the worker freed a slot.
            if self.load.freed(&peer) {
                self.pump(workers);
            }
            return;
        }
        let busy = matches!(&result, Ok(r) if r.outcome == TaskOutcome::Err(TaskError::Busy));
        self.load.answered(&peer, busy);
        if let (Some(e), Ok(response)) = (self.entries.get_mut(task_id), &result) {
            if let Some(started) = response.started_ms {
                e.record.note(started, TimelineKind::Started, None, None);
            }
            e.record.note(now_ms(), TimelineKind::Answered, None, None);
            if matches!(response.outcome, TaskOutcome::Ok(_)) {
                e.record.fuel_used = response.fuel_used;
            }
        }
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
        let Some(e) = self.entries.get(id) else {
            return Err(match self.stored(id) {
                Some(r) => CancelError::AlreadyFinal(id.to_string(), r.state.as_str()),
                None => CancelError::NotFound(id.to_string()),
            });
        };
        if e.record.state.is_final() {
            return Err(CancelError::AlreadyFinal(id.to_string(), e.record.state.as_str()));
        }
        self.halt(id, AttemptOutcome::Cancelled, None);
        self.finish(id, TaskState::Cancelled, None, Some("cancelled by user".into()));
        self.cancel_replicas(id, "its task was cancelled by user");
        Ok(self.entries[id].record.clone())
    }

    pub fn get(&self, id: &str) -> Option<TaskRecord> {
        self.entries.get(id).map(|e| e.record.clone()).or_else(|| self.stored(id))
    }

    /// Most recently submitted first: the ones in memory and, with a store, the stored ones.
    pub fn list(&self, limit: usize) -> Vec<TaskRecord> {
        let mut all: Vec<TaskRecord> = self.entries.values().map(|e| e.record.clone()).collect();
        if let Some(log) = self.durable.log() {
            let stored = log.recent(limit).unwrap_or_default();
            let more = stored.iter().filter_map(|b| super::durable::decode(b).ok().map(|s| s.record));
            let mut seen: std::collections::HashSet<String> = all.iter().map(|r| r.id.clone()).collect();
            all.extend(more.filter(|r| seen.insert(r.id.clone())));
        }
        all.sort_by_key(|r| std::cmp::Reverse(r.submitted_at));
        all.truncate(limit);
        all
    }

    pub fn has_timers(&self) -> bool {
        !self.timers.is_empty()
    }

    /// Next expired timer; pends forever when there are none (guard with `has_timers`).
    pub async fn next_timer(&mut self) -> Option<Timer> {
        self.timers.next().await
    }

    pub fn unfinished(&self) -> usize {
        self.entries.values().filter(|e| !e.record.state.is_final() && !e.handed_over).count()
    }
}
