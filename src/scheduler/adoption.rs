//! The copy holder's side of `tasks.record_copies`: keeping other gateways' records, fencing
//! a deposed owner, adopting the unfinished tasks of a gateway that was lost, and answering
//! for records this node holds in any role.
//!
//! Adoption waits `adopt_after_secs` after membership declared the owner dead (or gone), so a
//! gateway that restarts in time keeps its tasks. The first alive holder named in the record
//! adopts: it raises the epoch (the fencing token), becomes the owner, names new holders and
//! resumes the task like a restarted gateway would (a new attempt, attempt numbers
//! continuing). From then on, anything the old owner forwards at a lower epoch is refused
//! with the new owner's name, which is how a returning old owner learns of it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::durable::decode;
use super::entry::Entry;
use super::gateway::Gateway;
use super::record::{AttemptOutcome, TaskState, TimelineKind, now_ms};
use crate::protocol::{Fenced, RecordCopy};
use crate::store::copies::{CopyLog, Page};
use crate::tasks::TaskKind;

pub(super) struct Keeper {
    log: Option<CopyLog>,
    /// Tasks this node adopted, with the epoch it took them at.
    adopted: HashMap<String, u32>,
    /// Owners declared dead or gone, and when their tasks are due for adoption.
    lost: HashMap<PeerId, Instant>,
    grace: Duration,
}

impl Keeper {
    pub(super) fn new(log: Option<CopyLog>, grace: Duration) -> Self {
        let adopted = match log.as_ref().map(CopyLog::adoptions) {
            Some(Ok(list)) => list.into_iter().collect(),
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot read the tasks this node adopted");
                HashMap::new()
            }
            None => HashMap::new(),
        };
        Keeper { log, adopted, lost: HashMap::new(), grace }
    }
}

/// A record this node can show for a query: as its owner (authoritative) or from a copy.
pub struct Held {
    pub copy: RecordCopy,
    pub owner: bool,
}

impl Gateway {
    /// Copies forwarded by `owner`: kept, except those this node took over at a higher epoch
    /// (returned as fenced) and restored ones it already holds final (returned with the
    /// final copy).
    pub fn keep_copies(&mut self, owner: PeerId, records: Vec<RecordCopy>) -> (Vec<Fenced>, Vec<RecordCopy>) {
        let mut fenced = Vec::new();
        let mut finals = Vec::new();
        let mut kept = Vec::with_capacity(records.len());
        for copy in records {
            let ours = self
                .keeper
                .adopted
                .get(&copy.id)
                .copied()
                .or_else(|| self.entries.get(&copy.id).filter(|e| !e.handed_over).map(|e| e.record.epoch));
            match ours {
                Some(epoch) if epoch > copy.epoch => {
                    fenced.push(Fenced { id: copy.id, owner: self.local_name.clone(), epoch });
                }
                _ if copy.restored => match self.final_copy(&copy.id) {
                    Some(done) => finals.push(done),
                    None => kept.push(copy),
                },
                _ => kept.push(copy),
            }
        }
        if let Some(log) = &self.keeper.log
            && !kept.is_empty()
        {
            log.keep(owner.to_string(), kept);
        }
        if !fenced.is_empty() {
            self.metrics.copies_fenced.inc_by(fenced.len() as u64);
        }
        (fenced, finals)
    }

    /// The copy kept here of `id`, if it is final.
    fn final_copy(&self, id: &str) -> Option<RecordCopy> {
        let row = self.keeper.log.as_ref()?.get(id).ok()??;
        row.copy.finished_ms.is_some().then_some(row.copy)
    }

    /// Membership declared `peer` dead or gone: its tasks are adopted after the grace period
    /// unless it comes back.
    pub fn owner_lost(&mut self, peer: PeerId, now: Instant) {
        if self.keeper.log.is_some() {
            self.keeper.lost.insert(peer, now + self.keeper.grace);
        }
    }

    /// `peer` is alive (again): its tasks are not adopted, and restored tasks it holds copies
    /// of ask it again (the first ask may have gone out before it could be reached).
    pub fn owner_back(&mut self, peer: &PeerId) {
        self.keeper.lost.remove(peer);
        self.reask(peer);
    }

    /// Adopts the unfinished tasks of owners lost for longer than the grace period, where this
    /// node is the first alive holder their record names. Returns how many; the caller pumps.
    pub fn adopt_due(&mut self, now: Instant) -> usize {
        let due: Vec<PeerId> = self.keeper.lost.iter().filter(|(_, at)| now >= **at).map(|(p, _)| *p).collect();
        let mut adopted = 0;
        for owner in due {
            self.keeper.lost.remove(&owner);
            let Some(log) = self.keeper.log.clone() else { return 0 };
            let copies = match log.open_of(&owner.to_string()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, %owner, "cannot read the copies of a lost gateway's tasks");
                    continue;
                }
            };
            let n = copies.into_iter().filter(|c| self.adopt(&owner, c)).count();
            if n > 0 {
                tracing::warn!(%owner, tasks = n, "adopted the unfinished tasks of a lost gateway");
            }
            adopted += n;
        }
        adopted
    }

    /// Takes one task over from `owner`, if this node is the first alive holder it names.
    fn adopt(&mut self, owner: &PeerId, copy: &RecordCopy) -> bool {
        if self.entries.contains_key(&copy.id) || self.keeper.adopted.contains_key(&copy.id) {
            return false;
        }
        let Ok(mut stored) = decode(&copy.bytes) else {
            tracing::warn!(task_id = %copy.id, "skipping a copy that does not decode");
            return false;
        };
        let first_alive = stored.record.copies.iter().find(|name| **name == self.local_name || self.member_named(name));
        if first_alive != Some(&self.local_name) {
            return false;
        }
        let Some(kind) = TaskKind::parse(&stored.record.task_type) else { return false };
        let epoch = copy.epoch.max(stored.record.epoch) + 1;
        let from = owner.to_string();
        stored.record.epoch = epoch;
        stored.record.owner = self.local_name.clone();
        stored.record.adopted_from = Some(from.clone());
        stored.record.note(now_ms(), TimelineKind::Adopted, None, Some(format!("from {from}")));
        let id = copy.id.clone();
        let mut entry = Entry::restored(stored, kind);
        if entry.record.attempt_history.last().is_some_and(|a| a.outcome == AttemptOutcome::Running.as_str()) {
            entry.note_attempt(AttemptOutcome::Lost, Some(format!("its gateway {from} was lost")));
        }
        entry.record.state = TaskState::Pending;
        self.entries.insert(id.clone(), entry);
        self.keeper.adopted.insert(id.clone(), epoch);
        if let Some(log) = &self.keeper.log {
            log.adopted(id.clone(), self.local_name.clone(), epoch, now_ms());
        }
        // New holders, neither this node nor the lost one.
        self.replace_holders(&id, owner);
        self.metrics.tasks_adopted.inc();
        self.touch(&id);
        self.enqueue(&id, false);
        true
    }

    /// A page of the unfinished copies `owner` left with this node (`None` when it keeps none:
    /// `tasks.record_copies` off).
    pub fn kept_for(&self, owner: &PeerId, after: Option<String>) -> Option<tokio::sync::oneshot::Receiver<Page>> {
        Some(self.keeper.log.as_ref()?.page_of(owner.to_string(), after))
    }

    /// The record as this node holds it: its own (authoritative unless handed over), or a
    /// copy kept for another gateway.
    pub fn held(&self, id: &str) -> Option<Held> {
        if let Some(e) = self.entries.get(id) {
            let copy = self.copy_of(id)?;
            return Some(Held { copy, owner: !e.handed_over });
        }
        if let Some(bytes) = self.durable.log().and_then(|l| l.get(id).ok().flatten())
            && let Ok(stored) = decode(&bytes)
        {
            let owner = stored.record.owner.is_empty() || stored.record.owner == self.local_name;
            let copy = RecordCopy {
                id: id.to_string(),
                epoch: stored.record.epoch,
                seq: 0,
                submitted_ms: 0,
                finished_ms: None,
                bytes,
                restored: false,
            };
            return Some(Held { copy, owner });
        }
        let row = self.keeper.log.as_ref()?.get(id).ok()??;
        Some(Held { copy: row.copy, owner: false })
    }

    /// Prunes kept copies past the retention, with the gateway's own records.
    pub(super) fn prune_copies(&self, before_ms: u64) {
        if let Some(log) = &self.keeper.log {
            log.prune(before_ms);
        }
    }
}
