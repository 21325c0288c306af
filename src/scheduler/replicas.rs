//! Verification by redundancy: a task asking for `replicas: n, quorum: q` runs as n replicas,
//! each an ordinary task of its own (`<id>.r1`, `<id>.r2`, ...: placed, retried when its
//! worker is lost, stored and copied like any other) on n distinct workers. The task
//! completes with the output q of them agree on ([`quorum::decide`]); a disagreement
//! launches more replicas up to twice the number asked for, then fails the task with every
//! replica's worker and output hash in its record.
//!
//! Replicas that disagree with the quorum, once there is one, are the minority: recorded in
//! the task's record, counted, and their workers' GossipSub application score lowered, so a
//! worker that keeps returning wrong answers ends up graylisted. Replicas still running when
//! the quorum is reached are left to finish and judged then (the task does not wait for them).

use libp2p::PeerId;
use sha2::{Digest, Sha256};

use super::entry::Entry;
use super::gateway::Gateway;
use super::quorum::{self, Decision, Vote, VoteKey};
use super::record::{AttemptOutcome, ReplicaResult, TaskState};
use super::types::Effect;

/// Application score a worker loses for each result outvoted by other replicas: four strikes
/// take it below GossipSub's graylist threshold (-80).
pub const MINORITY_PENALTY: f64 = 25.0;

/// The replicated task a replica id belongs to (`<id>.r<n>` -> `<id>`); the id itself
/// otherwise. Replicas share their task's copy holders, so one node adopts them all.
pub fn family(id: &str) -> &str {
    id.split_once(".r").map_or(id, |(task, _)| task)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Gateway {
    /// Starts a replicated task (already recorded): its first `replicas` replicas.
    pub(super) fn start_replicated(&mut self, id: &str, replicas: u32, quorum: u32) {
        if let Some(e) = self.entries.get_mut(id) {
            e.record.replicas = Some(replicas);
            e.record.quorum = Some(quorum);
        }
        self.launch_replicas(id, replicas);
    }

    /// Adds `n` replicas to task `id` and queues them.
    fn launch_replicas(&mut self, id: &str, n: u32) {
        for _ in 0..n {
            let Some(task) = self.entries.get_mut(id) else { return };
            task.record.state = TaskState::Running;
            let replica_id = format!("{id}.r{}", task.record.replica_results.len() + 1);
            task.record.replica_results.push(ReplicaResult {
                task: replica_id.clone(),
                worker: None,
                state: TaskState::Pending,
                output_sha256: None,
                fuel_used: None,
                error: None,
                agreed: None,
            });
            let replica = Entry::replica(replica_id.clone(), task);
            self.entries.insert(replica_id.clone(), replica);
            self.touch(&replica_id);
            self.enqueue(&replica_id, false);
        }
        self.touch(id);
    }

    /// The workers the other replicas of `replica` ran on: it must not run on any of them.
    pub(super) fn siblings_workers(&self, replica: &str) -> Vec<PeerId> {
        let Some(task) = self.entries.get(family(replica)) else { return Vec::new() };
        task.record
            .replica_results
            .iter()
            .filter(|r| r.task != replica)
            .filter_map(|r| r.worker.as_deref().and_then(|w| w.parse().ok()))
            .collect()
    }

    /// Copies a replica's worker and state into its task's record (after a dispatch or its
    /// final state); judges the task when the replica is final.
    pub(super) fn replica_changed(&mut self, replica: &str) {
        let Some(r) = self.entries.get(replica) else { return };
        let Some(task_id) = r.record.replica_of.clone() else { return };
        let (worker, state, fuel) = (r.record.worker.clone(), r.record.state, r.record.fuel_used);
        let (sha, error) = match state {
            TaskState::Completed => (r.record.result.as_deref().map(|o| sha256_hex(o.as_bytes())), None),
            TaskState::Failed => match &r.deterministic_failure {
                Some(err) => (Some(sha256_hex(err.as_bytes())), Some(err.clone())),
                None => (None, None),
            },
            _ => (None, None),
        };
        let result = r.record.result.clone();
        let Some(task) = self.entries.get_mut(&task_id) else { return };
        let Some(slot) = task.record.replica_results.iter_mut().find(|s| s.task == replica) else { return };
        slot.worker = worker;
        slot.state = state;
        slot.output_sha256 = sha;
        slot.fuel_used = if state == TaskState::Completed { fuel } else { None };
        slot.error = error;
        self.touch(&task_id);
        if state.is_final() {
            self.judge_replicas(&task_id, result);
        }
    }

    /// Decides on task `id` from what its replicas said; `result` is the output of the replica
    /// that just ended (the one that can complete the task).
    pub(super) fn judge_replicas(&mut self, id: &str, result: Option<String>) {
        let Some(task) = self.entries.get(id) else { return };
        let (Some(replicas), Some(quorum)) = (task.record.replicas, task.record.quorum) else { return };
        if task.record.state.is_final() {
            // Decided (or cancelled) already: a late replica is only judged against the quorum.
            if let Some(agreed) = task.agreed.clone() {
                self.mark_minority(id, &agreed);
            }
            self.release_if_done(id);
            return;
        }
        let votes: Vec<Vote> = task.record.replica_results.iter().map(vote_of).collect();
        match quorum::decide(&votes, quorum, quorum::max_total(replicas)) {
            Decision::Wait => {}
            Decision::Launch(n) => {
                tracing::info!(task_id = %id, more = n, "replicas disagree or were lost: launching more");
                self.launch_replicas(id, n);
            }
            Decision::Agreed(key) => {
                let e = self.entries.get_mut(id).expect("looked up above");
                e.agreed = Some(key.clone());
                self.metrics.replica_decision("agreed");
                match &key {
                    VoteKey::Output { fuel, .. } => {
                        e.record.fuel_used = *fuel;
                        self.finish(id, TaskState::Completed, result, None);
                    }
                    VoteKey::Failure(error) => {
                        let error = format!("{quorum} replicas failed alike: {error}");
                        self.finish(id, TaskState::Failed, None, Some(error));
                    }
                }
                self.mark_minority(id, &key);
            }
            Decision::NoQuorum => {
                self.metrics.replica_decision("no_quorum");
                let Some(e) = self.entries.get(id) else { return };
                let said: Vec<String> = e
                    .record
                    .replica_results
                    .iter()
                    .map(|r| {
                        format!(
                            "{} on {}: {}",
                            r.task,
                            r.worker.as_deref().unwrap_or("no worker"),
                            r.output_sha256.as_deref().map_or("no output".to_string(), |h| format!("sha256 {h}"))
                        )
                    })
                    .collect();
                let error = format!(
                    "no {quorum} of {} replicas agreed (up to {} run): {}",
                    said.len(),
                    quorum::max_total(replicas),
                    said.join("; ")
                );
                // Final first: the replicas cancelled next find their task decided.
                self.finish(id, TaskState::Failed, None, Some(error));
                self.cancel_replicas(id, "no quorum is possible any more");
            }
        }
    }

    /// Marks each final replica of `id` as agreeing with `key` or not; the ones that voted
    /// otherwise and were not judged yet are the minority.
    fn mark_minority(&mut self, id: &str, key: &VoteKey) {
        let Some(task) = self.entries.get_mut(id) else { return };
        let mut outvoted = Vec::new();
        for r in task.record.replica_results.iter_mut().filter(|r| r.agreed.is_none() && r.state.is_final()) {
            match vote_of(r) {
                Vote::Cast(k) if k == *key => r.agreed = Some(true),
                Vote::Cast(_) => {
                    r.agreed = Some(false);
                    outvoted.extend(r.worker.clone());
                }
                Vote::Running | Vote::Abstained => {}
            }
        }
        self.touch(id);
        for worker in outvoted {
            tracing::warn!(task_id = %id, %worker, "a replica's result was outvoted: the worker is in the minority");
            self.metrics.replicas_minority.inc();
            let Ok(peer) = worker.parse::<PeerId>() else { continue };
            let strikes = self.strikes.entry(peer).or_default();
            *strikes += 1;
            let strikes = *strikes;
            self.effects.push(Effect::Penalize { peer, strikes, score: -MINORITY_PENALTY * f64::from(strikes) });
        }
    }

    /// Cancels the replicas of `id` that are not final (the task was decided or cancelled).
    pub(super) fn cancel_replicas(&mut self, id: &str, why: &str) {
        let Some(task) = self.entries.get(id) else { return };
        let running: Vec<String> =
            task.record.replica_results.iter().filter(|r| !r.state.is_final()).map(|r| r.task.clone()).collect();
        for replica in running {
            if self.entries.get(&replica).is_some_and(|r| !r.record.state.is_final()) {
                self.halt(&replica, AttemptOutcome::Cancelled, None);
                self.finish(&replica, TaskState::Cancelled, None, Some(why.to_string()));
            }
        }
    }

    /// A decided task stays in memory while replicas still run (to judge them); once the
    /// last one is final it may leave like any final record.
    fn release_if_done(&mut self, id: &str) {
        if self.entries.get(id).is_some_and(|e| e.record.state.is_final() && !e.replicas_running()) {
            self.hold_evict(id);
        }
    }
}

/// What a replica's entry in its task's record counts as.
pub(super) fn vote_of(r: &ReplicaResult) -> Vote {
    match (r.state, &r.output_sha256, &r.error) {
        (s, _, _) if !s.is_final() => Vote::Running,
        (TaskState::Completed, Some(sha), _) => Vote::Cast(VoteKey::Output { sha256: sha.clone(), fuel: r.fuel_used }),
        (TaskState::Failed, Some(_), Some(error)) => Vote::Cast(VoteKey::Failure(error.clone())),
        _ => Vote::Abstained,
    }
}

impl Entry {
    /// Replicas of this (replicated) task not final yet.
    pub(super) fn replicas_running(&self) -> bool {
        self.record.replica_results.iter().any(|r| !r.state.is_final())
    }
}
