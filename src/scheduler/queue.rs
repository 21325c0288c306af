//! Tasks waiting for a worker: one queue per required capability, how long a task may wait,
//! and placing waiting tasks on workers with room.

use std::collections::{HashMap, VecDeque};

use libp2p::PeerId;
use prometheus_client::metrics::gauge::Gauge;

use super::gateway::Gateway;
use super::placement::{Candidate, choose};
use super::record::{AttemptOutcome, AttemptRecord, TaskState, TimelineKind, now_ms};
use super::timers::Timer;
use super::types::WorkerView;
use crate::telemetry::TARGET;

/// Queue key of the task types that any worker can run.
const ANY_WORKER: &str = "";

/// Waiting task ids by capability. A task that stops waiting (placed, cancelled, expired)
/// leaves its id behind; `place` skips ids whose entry is no longer queued.
pub(super) struct Queues {
    by_capability: HashMap<&'static str, VecDeque<String>>,
    /// Tasks waiting (stale ids not counted).
    waiting: usize,
    /// Numbers each wait, so a queue deadline from an earlier wait is recognised as stale.
    seq: u64,
    /// `queue_depth`, kept here so it moves with `waiting`.
    depth: Gauge,
}

impl Queues {
    pub(super) fn new(depth: Gauge) -> Self {
        Self { by_capability: HashMap::new(), waiting: 0, seq: 0, depth }
    }

    pub(super) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Queues `id` behind the tasks that need `capability` (None: any worker), or in front
    /// of them; returns the number of this wait.
    fn push(&mut self, capability: Option<&'static str>, id: &str, front: bool) -> u64 {
        self.seq += 1;
        let q = self.by_capability.entry(capability.unwrap_or(ANY_WORKER)).or_default();
        if front {
            q.push_front(id.to_string());
        } else {
            q.push_back(id.to_string());
        }
        self.set_waiting(self.waiting + 1);
        self.seq
    }

    /// One task stopped waiting; its id may stay behind.
    fn left(&mut self) {
        self.set_waiting(self.waiting - 1);
    }

    fn set_waiting(&mut self, n: usize) {
        self.waiting = n;
        self.depth.set(n as i64);
    }

    #[cfg(test)]
    pub(super) fn holds(&self, id: &str) -> bool {
        self.by_capability.values().any(|q| q.iter().any(|x| x == id))
    }
}

impl Gateway {
    pub(super) fn enqueue(&mut self, id: &str, front: bool) {
        let Some(e) = self.entries.get_mut(id) else { return };
        if e.record.replicas.is_some() {
            // A replicated task never runs itself: its replicas do. Resumed (after a restart
            // or an adoption), it waits for them and is judged again.
            e.record.state = TaskState::Running;
            self.judge_replicas(id, None);
            return;
        }
        let seq = self.queues.push(e.kind.capability(), id, front);
        // A task waits for a free worker at most one attempt's timeout per try.
        let key = self.timers.arm(Timer::QueueDeadline { id: id.to_string(), seq }, e.timeout);
        e.queued = Some((seq, key));
        e.record.state = TaskState::Pending;
        e.record.note(now_ms(), TimelineKind::Queued, None, None);
        e.queue_span =
            tracing::info_span!(target: TARGET, parent: &e.span, "queued", task.id = %id, task.requeued = front);
        self.touch(id);
    }

    /// Takes a task out of the waiting count and cancels its queue deadline. The id itself
    /// may stay in the queue; `place` skips ids that are no longer queued.
    pub(super) fn unqueue(&mut self, id: &str) {
        if let Some(e) = self.entries.get_mut(id)
            && let Some((_, key)) = e.queued.take()
        {
            e.queue_span = tracing::Span::none();
            self.timers.disarm(&key);
            self.queues.left();
        }
    }

    /// Places queued tasks on workers with room, as long as there are any.
    pub(super) fn place_queued(&mut self, workers: &[WorkerView]) {
        if self.queues.waiting == 0 {
            return;
        }
        let keys: Vec<&'static str> = self.queues.by_capability.keys().copied().collect();
        for key in keys {
            self.place(key, workers);
        }
    }

    /// Places the tasks queued under `key`, in order, until none of its workers has room.
    fn place(&mut self, key: &'static str, workers: &[WorkerView]) {
        let mut candidates: Vec<Candidate<PeerId>> = workers
            .iter()
            .filter(|w| key == ANY_WORKER || w.capabilities.iter().any(|c| c == key))
            .map(|w| Candidate { id: w.id, load: self.load.of(w), capacity: w.capacity })
            .collect();
        // Replicas with no distinct worker free now wait, without holding up the tasks behind.
        let mut set_aside = Vec::new();
        while let Some(id) = self.queues.by_capability.get_mut(key).and_then(|q| q.pop_front()) {
            let Some(entry) = self.entries.get(&id) else { continue };
            if entry.queued.is_none() {
                continue;
            }
            let chosen = if entry.record.replica_of.is_some() {
                // Never where another replica of the same task ran or runs.
                let taken = self.siblings_workers(&id);
                let distinct: Vec<Candidate<PeerId>> =
                    candidates.iter().filter(|c| !taken.contains(&c.id)).cloned().collect();
                let chosen = choose(&distinct, &entry.tried, &mut self.rng);
                if chosen.is_none() && candidates.iter().any(Candidate::has_room) {
                    set_aside.push(id);
                    continue;
                }
                chosen
            } else {
                choose(&candidates, &entry.tried, &mut self.rng)
            };
            match chosen {
                Some(peer) => {
                    self.unqueue(&id);
                    if let Some(c) = candidates.iter_mut().find(|c| c.id == peer) {
                        c.load += 1;
                    }
                    self.dispatch(&id, peer);
                }
                None => {
                    if let Some(q) = self.queues.by_capability.get_mut(key) {
                        q.push_front(id);
                    }
                    break;
                }
            }
        }
        if let Some(q) = self.queues.by_capability.get_mut(key) {
            for id in set_aside.into_iter().rev() {
                q.push_front(id);
            }
        }
    }

    /// A task's queue deadline passed: no capable worker was free in time. That counts as a
    /// failed attempt (the task waits again, at the front, or fails for good).
    pub(super) fn queue_deadline(&mut self, id: &str, seq: u64) {
        let Some(e) = self.entries.get_mut(id) else { return };
        if e.queued.as_ref().map(|(s, _)| *s) != Some(seq) {
            return;
        }
        e.queued = None;
        e.queue_span = tracing::Span::none();
        self.queues.left();
        let waited = e.timeout.as_millis();
        let why = format!("no capable worker was free within {waited} ms");
        e.record.note(now_ms(), TimelineKind::AttemptFailed, None, Some(why.clone()));
        e.record.attempt_history.push(AttemptRecord {
            attempt: e.record.attempts,
            worker: String::new(),
            outcome: AttemptOutcome::Queued.as_str().into(),
            error: Some(why),
        });
        e.failures += 1;
        if e.failures >= e.max_attempts {
            self.give_up(id);
        } else {
            self.enqueue(id, true);
        }
    }
}
