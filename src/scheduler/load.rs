//! Each worker's load as this gateway sees it: attempts in flight to it, and whether it said
//! it was busy (and how often in a row, which sets how long it is left alone).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::PeerId;
use prometheus_client::metrics::gauge::Gauge;

use super::retry::RetryPolicy;
use super::types::WorkerView;

pub(super) struct Load {
    in_flight: HashMap<PeerId, u32>,
    /// Workers that answered busy; treated as full until they answer again.
    saturated: HashSet<PeerId>,
    /// Busy answers in a row per worker: the wait before offering it work again grows with it.
    busy_streak: HashMap<PeerId, u32>,
    /// `tasks_running`, kept here so it moves with the in-flight counts.
    running_gauge: Gauge,
}

impl Load {
    pub(super) fn new(running_gauge: Gauge) -> Self {
        Self { in_flight: HashMap::new(), saturated: HashSet::new(), busy_streak: HashMap::new(), running_gauge }
    }

    pub(super) fn in_flight_to(&self, peer: &PeerId) -> u32 {
        self.in_flight.get(peer).copied().unwrap_or(0)
    }

    pub(super) fn running(&self) -> usize {
        self.in_flight.values().map(|n| *n as usize).sum()
    }

    /// Load of `w` for placement: a worker that said busy counts as full.
    pub(super) fn of(&self, w: &WorkerView) -> u32 {
        if self.saturated.contains(&w.id) { w.capacity } else { self.in_flight_to(&w.id) }
    }

    /// Free execution slots across `workers`.
    pub(super) fn free_slots(&self, workers: &[WorkerView]) -> usize {
        workers
            .iter()
            .filter(|w| !self.saturated.contains(&w.id))
            .map(|w| w.capacity.saturating_sub(self.in_flight_to(&w.id)) as usize)
            .sum()
    }

    /// An attempt was sent to `peer`.
    pub(super) fn started(&mut self, peer: PeerId) {
        *self.in_flight.entry(peer).or_default() += 1;
        self.running_gauge.set(self.running() as i64);
    }

    /// An attempt on `peer` ended (answered, timed out, lost or cancelled).
    pub(super) fn ended(&mut self, peer: &PeerId) {
        if let Some(n) = self.in_flight.get_mut(peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(peer);
            }
        }
        self.running_gauge.set(self.running() as i64);
    }

    /// `peer` answered one of its attempts; a busy answer keeps its streak going.
    pub(super) fn answered(&mut self, peer: &PeerId, busy: bool) {
        self.saturated.remove(peer);
        if !busy {
            self.busy_streak.remove(peer);
        }
    }

    /// `peer` may have room again; true if it had been treated as full.
    pub(super) fn freed(&mut self, peer: &PeerId) -> bool {
        self.saturated.remove(peer)
    }

    /// `peer` said busy: it counts as full until it answers again or the returned wait
    /// (growing with its streak) has passed. None if it already counted as full.
    pub(super) fn refused(&mut self, peer: PeerId, policy: &RetryPolicy) -> Option<Duration> {
        let streak = self.busy_streak.entry(peer).or_default();
        *streak = streak.saturating_add(1);
        let delay = policy.delay(*streak, rand::random());
        self.saturated.insert(peer).then_some(delay)
    }

    #[cfg(test)]
    pub(super) fn in_flight(&self) -> &HashMap<PeerId, u32> {
        &self.in_flight
    }
}
