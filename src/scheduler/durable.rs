//! What makes the gateway's promises outlive its process: every record that changed is
//! handed to the store's writer in numbered batches (one per pass of the node's loop), and
//! what must not be said before the record is on disk waits for that batch's commit: the
//! submitter's acknowledgement, the final record for whoever waits on it. Final records
//! then leave memory: the store serves them from there on, so resident memory does not grow
//! with the number of records the retention keeps.
//!
//! On start, [`Gateway::restore`] resumes the unfinished tasks the store holds: a new attempt,
//! attempt numbers continuing (so an answer to an attempt from before the crash can never
//! match), the same failure count against `max_attempts`.
//!
//! Without a store (the scheduler's own tests) everything is acknowledged at once and final
//! records stay in memory until pruned.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::copies::Outgoing;
use super::entry::Entry;
use super::gateway::Gateway;
use super::record::{AttemptOutcome, TaskRecord, TaskState};
use super::types::SubmitError;
use crate::protocol::RecordCopy;
use crate::store::StoreError;
use crate::store::tasks::{TaskLog, TaskWrite};
use crate::tasks::TaskKind;

/// How often final records past the retention are deleted from the store.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// A task as the store keeps it: the record users see and what drives the rest of its life.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Stored {
    pub(super) record: TaskRecord,
    pub(super) timeout_ms: u64,
    pub(super) max_attempts: u32,
    pub(super) failures: u32,
    pub(super) tried: Vec<PeerId>,
}

/// Told whether everything changed before it was stored, and if not, what to tell a submitter.
pub type Reply = Box<dyn FnOnce(Result<(), SubmitError>) + Send + Sync>;

/// Something said only once the batch it depends on is durable.
enum Held {
    /// Whatever the caller wanted to do (answer a submitter); told whether the write held.
    Reply(Reply),
    /// A final record for someone waiting on it.
    Waiter(oneshot::Sender<TaskRecord>, Box<TaskRecord>),
    /// A task accepted in the batch: if the batch did not commit, it was never accepted.
    Accepted(String),
}

pub(super) struct Durable {
    log: Option<TaskLog>,
    dirty: Vec<String>,
    /// The number the next batch gets.
    next: u64,
    /// Released once their batch is held: by its copies or by the local sync.
    held: VecDeque<(u64, Held)>,
    /// Final records that may leave memory once their batch is synced locally (the store
    /// serves them from there on).
    evicts: VecDeque<(u64, String)>,
    /// Every batch up to this one is synced locally.
    local_done: u64,
    /// The last commit failed for lack of space: new submissions are refused.
    pub(super) full: bool,
    last_prune: Option<Instant>,
}

impl Durable {
    pub(super) fn new(log: Option<TaskLog>) -> Self {
        // Batch numbers keep growing across restarts (a copy holder keeps the copy from the
        // highest one): they start from the clock, with room for 1,024 batches a millisecond.
        let next = epoch_ms(SystemTime::now()) << 10;
        Durable {
            log,
            dirty: Vec::new(),
            next,
            held: VecDeque::new(),
            evicts: VecDeque::new(),
            local_done: 0,
            full: false,
            last_prune: None,
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.log.is_some()
    }

    pub(super) fn log(&self) -> Option<&TaskLog> {
        self.log.as_ref()
    }
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The task record in a stored (or copied) record's bytes.
pub fn decode_record(bytes: &[u8]) -> Option<TaskRecord> {
    decode(bytes).ok().map(|s| s.record)
}

pub(super) fn decode(bytes: &[u8]) -> Result<Stored, String> {
    cbor4ii::serde::from_slice(bytes).map_err(|e| e.to_string())
}

fn encode(e: &Entry) -> Vec<u8> {
    let stored = StoredRef {
        record: &e.record,
        timeout_ms: e.timeout.as_millis() as u64,
        max_attempts: e.max_attempts,
        failures: e.failures,
        tried: &e.tried,
    };
    cbor4ii::serde::to_vec(Vec::new(), &stored).expect("a task record always encodes")
}

/// [`Stored`] borrowed, so that writing a record does not clone it.
#[derive(Serialize)]
struct StoredRef<'a> {
    record: &'a TaskRecord,
    timeout_ms: u64,
    max_attempts: u32,
    failures: u32,
    tried: &'a [PeerId],
}

impl Gateway {
    /// Notes that `id`'s record changed; it goes to the store with the next batch.
    pub(super) fn touch(&mut self, id: &str) {
        if let Some(e) = self.entries.get_mut(id)
            && !e.dirty
        {
            e.dirty = true;
            self.durable.dirty.push(id.to_string());
        }
    }

    fn hold(&mut self, item: Held) {
        if self.durable.enabled() {
            self.durable.held.push_back((self.durable.next, item));
        } else {
            self.release(item, &Ok(()));
        }
    }

    /// Runs `reply` once everything changed so far is durable (at once without a store),
    /// telling it whether the write held.
    pub fn after_commit(&mut self, reply: Reply) {
        self.hold(Held::Reply(reply));
    }

    /// Answers `waiter` with the final record once it is durable.
    pub(super) fn hold_waiter(&mut self, waiter: oneshot::Sender<TaskRecord>, record: TaskRecord) {
        self.hold(Held::Waiter(waiter, Box::new(record)));
    }

    pub(super) fn hold_accepted(&mut self, id: &str) {
        if self.durable.enabled() {
            self.hold(Held::Accepted(id.to_string()));
        }
    }

    /// A final record leaves memory once it is durable (without a store, `prune` drops it).
    pub(super) fn hold_evict(&mut self, id: &str) {
        if self.durable.enabled() {
            self.durable.evicts.push_back((self.durable.next, id.to_string()));
        } else {
            self.finished.push_back((Instant::now(), id.to_string()));
        }
    }

    /// New tasks cannot be stored: the last commit failed for lack of space, or the data dir
    /// is below its free-space watermark.
    pub(super) fn store_is_full(&self) -> bool {
        self.durable.full || self.durable.log().is_some_and(|l| l.low_on_space().is_some())
    }

    /// Something still waits for a commit.
    pub fn holding(&self) -> bool {
        !self.durable.held.is_empty() || !self.durable.evicts.is_empty()
    }

    /// The number the next batch gets.
    pub(super) fn durable_next(&self) -> u64 {
        self.durable.next
    }

    /// The record as a copy to send: what the store would keep.
    pub(super) fn copy_of(&self, id: &str) -> Option<RecordCopy> {
        let e = self.entries.get(id)?;
        Some(RecordCopy {
            id: id.to_string(),
            epoch: e.record.epoch,
            seq: self.durable.next,
            submitted_ms: epoch_ms(e.record.submitted_at),
            finished_ms: e.record.finished_at.map(epoch_ms),
            bytes: encode(e),
            restored: false,
        })
    }

    /// Hands the records changed since the last call to the store's writer as one batch.
    /// The node calls it after every input it fed the gateway.
    pub fn flush(&mut self) {
        let Some(log) = self.durable.log.clone() else { return };
        let next = self.durable.next;
        let waiting = self.durable.held.back().is_some_and(|(seq, _)| *seq == next)
            || self.durable.evicts.back().is_some_and(|(seq, _)| *seq == next);
        if self.durable.dirty.is_empty() && !waiting {
            return;
        }
        let seq = self.durable.next;
        self.durable.next += 1;
        let mut writes = Vec::with_capacity(self.durable.dirty.len());
        let mut copies = Outgoing::default();
        for id in std::mem::take(&mut self.durable.dirty) {
            let Some(e) = self.entries.get_mut(&id) else { continue };
            e.dirty = false;
            let submitted_ms = epoch_ms(e.record.submitted_at);
            // A handed-over task leaves the unfinished index: this gateway never resumes it.
            let finished_ms =
                e.record.finished_at.map(epoch_ms).or_else(|| e.handed_over.then(|| epoch_ms(SystemTime::now())));
            let bytes = encode(e);
            if !e.handed_over {
                self.gather(&mut copies, &id, seq, submitted_ms, finished_ms, &bytes);
            }
            writes.push(TaskWrite { submitted_ms, finished_ms, bytes, id });
        }
        log.write(seq, writes);
        self.send_copies(seq, copies);
    }

    /// The writer committed every batch up to `seq` (or failed to).
    pub fn on_committed(&mut self, seq: u64, result: Result<(), StoreError>) {
        let ok = result.is_ok();
        match result {
            Ok(()) => {
                self.durable.full = false;
                self.durable.local_done = self.durable.local_done.max(seq);
            }
            Err(e) => {
                self.durable.full = matches!(e, StoreError::Full(_));
                tracing::error!(error = %e, "task records not stored: their tasks' submitters are refused");
                let outcome =
                    Err(if self.durable.full { SubmitError::StoreFull } else { SubmitError::NotStored(e.to_string()) });
                // What the copies did not release already is refused.
                while self.durable.held.front().is_some_and(|(s, _)| *s <= seq) {
                    let (_, item) = self.durable.held.pop_front().expect("checked non-empty");
                    self.release(item, &outcome);
                }
            }
        }
        self.copies.pending = self.copies.pending.split_off(&(seq + 1));
        while self.durable.evicts.front().is_some_and(|(s, _)| *s <= seq) {
            let (_, id) = self.durable.evicts.pop_front().expect("checked non-empty");
            if !ok {
                // Not on disk yet: write it again with the next batch, keep it in memory meanwhile.
                self.touch(&id);
                self.hold_evict(&id);
            } else if self.entries.get(&id).is_some_and(|e| (e.record.state.is_final() || e.handed_over) && !e.dirty) {
                self.entries.remove(&id);
            }
        }
        self.release_ready();
    }

    /// Releases, in order, what waits on batches that are now held (by the local sync or by
    /// their copies).
    pub(super) fn release_ready(&mut self) {
        let local_done = self.durable.local_done;
        while let Some((seq, _)) = self.durable.held.front() {
            if !self.copies_release(*seq, local_done) {
                break;
            }
            let (_, item) = self.durable.held.pop_front().expect("checked non-empty");
            self.release(item, &Ok(()));
        }
    }

    fn release(&mut self, item: Held, outcome: &Result<(), SubmitError>) {
        let ok = outcome.is_ok();
        match item {
            Held::Reply(reply) => reply(outcome.clone()),
            Held::Waiter(waiter, record) => {
                let _ = waiter.send(*record);
            }
            Held::Accepted(_) if ok => {}
            Held::Accepted(id) => {
                if self.entries.get(&id).is_some_and(|e| !e.record.state.is_final()) {
                    self.halt(&id, AttemptOutcome::Cancelled, None);
                    self.finish(
                        &id,
                        TaskState::Cancelled,
                        None,
                        Some("not accepted: its record could not be stored".into()),
                    );
                }
            }
        }
    }

    /// A record from the store, when memory no longer holds it.
    pub(super) fn stored(&self, id: &str) -> Option<TaskRecord> {
        let bytes = self.durable.log()?.get(id).ok()??;
        decode(&bytes).ok().map(|s| s.record)
    }

    /// Deletes final records older than the retention from the store.
    pub(super) fn prune_stored(&mut self) {
        let Some(log) = self.durable.log().cloned() else { return };
        if self.durable.last_prune.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.durable.last_prune = Some(Instant::now());
        let cutoff = epoch_ms(SystemTime::now() - Duration::from_secs(self.config.retention_secs));
        log.prune(cutoff);
        self.prune_copies(cutoff);
    }

    /// Resumes the unfinished tasks a previous run of this gateway left in the store. Returns
    /// how many; records that do not decode are skipped with a warning.
    pub fn restore(&mut self) -> Result<usize, StoreError> {
        let Some(log) = self.durable.log() else { return Ok(0) };
        let mut resumed = 0;
        for bytes in log.unfinished()? {
            match decode(&bytes) {
                Ok(stored) => {
                    resumed += usize::from(self.resume_stored(stored, "the gateway restarted while the attempt ran"))
                }
                Err(why) => tracing::warn!(%why, "skipping a stored task record that does not decode"),
            }
        }
        Ok(resumed)
    }

    /// Takes back the unfinished tasks a copy holder kept for this gateway that its own store
    /// does not have: acknowledged before a restart that lost them (the tail of a group commit
    /// not yet synced, or a data dir that did not survive while the peer id did). They resume
    /// as restored tasks do. Returns how many were taken back.
    pub fn reclaim(&mut self, copies: Vec<RecordCopy>) -> usize {
        let mut taken = 0;
        for copy in copies {
            if copy.finished_ms.is_some() || self.entries.contains_key(&copy.id) || self.stored(&copy.id).is_some() {
                continue;
            }
            match decode(&copy.bytes) {
                Ok(stored) if stored.record.id == copy.id && !stored.record.state.is_final() => {
                    if self.resume_stored(
                        stored,
                        "the gateway restarted while the attempt ran (its record came back from a copy holder)",
                    ) {
                        taken += 1;
                    }
                }
                Ok(_) => tracing::warn!(task_id = %copy.id, "skipping a returned copy that names another task"),
                Err(why) => tracing::warn!(task_id = %copy.id, %why, "skipping a returned copy that does not decode"),
            }
        }
        if taken > 0 {
            self.metrics.tasks_reclaimed.inc_by(taken as u64);
        }
        taken
    }

    /// One unfinished task of an earlier run back in memory: it waits for its holders' word
    /// (a holder may have adopted it while this gateway was away), or runs at once if it has
    /// none. `why` says why its running attempt, if any, was lost.
    fn resume_stored(&mut self, stored: Stored, why: &str) -> bool {
        let Some(kind) = TaskKind::parse(&stored.record.task_type) else { return false };
        let id = stored.record.id.clone();
        let mut entry = Entry::restored(stored, kind);
        // The attempt that ran when the gateway died is lost; it is not the task's fault,
        // so it costs no attempt from the budget.
        if entry.record.attempt_history.last().is_some_and(|a| a.outcome == AttemptOutcome::Running.as_str()) {
            entry.note_attempt(AttemptOutcome::Lost, Some(why.into()));
        }
        entry.record.state = TaskState::Pending;
        let ask_holders = !entry.holders.is_empty();
        self.entries.insert(id.clone(), entry);
        self.touch(&id);
        if ask_holders {
            self.confirm_before_resuming(&id);
        } else {
            self.enqueue(&id, false);
        }
        true
    }
}
