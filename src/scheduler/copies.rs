//! Record copies at the gateway that owns the tasks (`tasks.record_copies`): where each
//! record's copies go, forwarding every change to them in the same batches the local store
//! gets, and what their answers release.
//!
//! Placement is rendezvous hashing over the alive members: each member scores
//! `mix(hash(task id) ^ key(member))` and the highest R hold the copies, so every node that
//! sees the same membership names the same holders, and a member joining or leaving moves
//! only the records it wins or held. The holders are named in the record.
//!
//! Each holder has at most one request in flight: what changes meanwhile waits, and goes in
//! the next request as the newest version of each record only (group commit, for copies:
//! under load the requests grow instead of multiplying).
//!
//! Acknowledgement (`tasks.fsync: group`): a batch is released once every holder of every
//! record in it answered, or once the local store synced it, whichever comes first; a batch
//! with a record short of holders (a cluster too small) waits for the local sync. With
//! `always`, only the local sync releases. Forwarded records carry the owner's epoch: a
//! holder that adopted a task answers with the new owner instead, and this gateway hands the
//! task over (see [`Gateway::surrender`]).
//!
//! A gateway restarting on its old store does not resume a task until the task's holders
//! confirm that nobody adopted it meanwhile, or are declared dead, or `adopt_after_secs`
//! passed without an answer since they could answer: the wait starts over when this node
//! first sees a member alive (it has joined) and when a holder it waits for comes alive and
//! is asked again. A request to an alive holder that fails is sent again at the next tick,
//! and a wait that ends with a question or an answer on its way (sent or queued, no failure
//! back) is followed by another, up to `MAX_WAITS_ON` in a row. A gateway that never sees
//! anyone resumes them after `ALONE_WAITS` times that wait, so that its accepted tasks still
//! end if the rest of the cluster is gone.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use sha2::{Digest, Sha256};

use super::gateway::Gateway;
use super::record::{AttemptOutcome, TimelineKind, now_ms};
use super::types::Effect;
use crate::config::{Fsync, TasksConfig};
use crate::protocol::{Fenced, RecordCopy};

/// The placement key of a member or a task id: 64 bits of its SHA-256.
pub fn placement_key(bytes: &[u8]) -> u64 {
    let digest = Sha256::digest(bytes);
    u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

/// SplitMix64's finaliser: spreads `key ^ member` so that every member's score is independent.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `n` holders of task `id`'s copies among `members` (with their placement keys),
/// best first; the same on every node for the same members.
pub fn place(id: &str, members: &[(PeerId, u64)], n: usize) -> Vec<PeerId> {
    let key = placement_key(id.as_bytes());
    let mut scored: Vec<(u64, PeerId)> = members.iter().map(|(p, k)| (mix(key ^ k), *p)).collect();
    // Ties (never in practice) are broken by peer id, so the order is total.
    scored.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(n).map(|(_, p)| p).collect()
}

/// How many `adopt_after_secs` a restored task waits for its holders while this node has seen
/// no member alive (it may still be joining; its holders cannot answer before it has).
const ALONE_WAITS: u32 = 6;

/// How many waits in a row restored tasks wait on for answers their holders are sending (or
/// for questions asked again after a failed request) before they run anyway.
const MAX_WAITS_ON: u32 = 3;

pub(super) struct Copies {
    wanted: usize,
    local_sync_only: bool,
    /// How long restored tasks wait for their holders' word.
    confirm_within: Duration,
    /// Alive members other than this node, with their placement keys.
    members: Vec<(PeerId, u64)>,
    /// Batches not yet released, by number: holders yet to answer, or `None` when only the
    /// local sync can release it.
    pub(super) pending: BTreeMap<u64, Option<usize>>,
    /// Restored tasks waiting for their holders: id -> (the batch that asked them, holders
    /// yet to answer).
    confirming: HashMap<String, (u64, Vec<PeerId>)>,
    confirm_deadline: Option<Instant>,
    /// Waits in a row that ended with an answer on its way (see [`MAX_WAITS_ON`]).
    waited_on: u32,
    /// Alive holders whose request with restored tasks' questions failed: asked again at the
    /// next tick.
    ask_again: Vec<PeerId>,
    /// This node has seen a member alive since it started.
    joined: bool,
    /// Per holder: the request in flight and what waits for it.
    links: HashMap<PeerId, Link>,
    next_tag: u64,
}

/// The stream of copies to one holder.
#[derive(Default)]
struct Link {
    /// The request in flight: its tag and the batches it carries.
    in_flight: Option<(u64, Vec<u64>)>,
    /// The newest version of each record changed since, and the batches they came from.
    queued: HashMap<String, RecordCopy>,
    queued_batches: Vec<u64>,
}

impl Copies {
    pub(super) fn new(config: &TasksConfig) -> Self {
        Copies {
            wanted: config.record_copies,
            local_sync_only: config.fsync == Fsync::Always || config.record_copies == 0,
            confirm_within: Duration::from_secs(config.adopt_after_secs),
            members: Vec::new(),
            pending: BTreeMap::new(),
            confirming: HashMap::new(),
            confirm_deadline: None,
            waited_on: 0,
            ask_again: Vec::new(),
            joined: false,
            links: HashMap::new(),
            next_tag: 0,
        }
    }
}

impl Link {
    /// Batch `seq` is in the request in flight or waits for the next one.
    fn carries(&self, seq: u64) -> bool {
        self.in_flight.as_ref().is_some_and(|(_, batches)| batches.contains(&seq)) || self.queued_batches.contains(&seq)
    }
}

/// One flush's copies, gathered per holder.
#[derive(Default)]
pub(super) struct Outgoing {
    per_holder: HashMap<PeerId, Vec<RecordCopy>>,
    /// A record in the batch has fewer holders than wanted.
    short: bool,
}

impl Gateway {
    /// The alive members other than this node, as membership now sees them.
    pub fn set_members(&mut self, members: impl IntoIterator<Item = PeerId>) {
        // Members already known keep their key (a SHA-256 each: this runs at every change).
        let old = &self.copies.members;
        let key = |p: PeerId| match old.binary_search_by_key(&p, |(q, _)| *q) {
            Ok(i) => old[i].1,
            Err(_) => placement_key(&p.to_bytes()),
        };
        let mut members: Vec<(PeerId, u64)> =
            members.into_iter().filter(|p| *p != self.local).map(|p| (p, key(p))).collect();
        members.sort_unstable_by_key(|(p, _)| *p);
        if !members.is_empty() && !self.copies.joined {
            self.copies.joined = true;
            // Restored tasks waited for a join; their holders get the whole wait from now.
            if self.copies.confirm_deadline.is_some() {
                self.copies.confirm_deadline = Some(Instant::now() + self.copies.confirm_within);
            }
        }
        self.copies.members = members;
    }

    /// Names the holders of a new task's copies.
    pub(super) fn place_copies(&mut self, id: &str) {
        let holders = place(super::replicas::family(id), &self.copies.members, self.copies.wanted);
        let names = holders.iter().map(|p| self.names_of(p)).collect();
        if let Some(e) = self.entries.get_mut(id) {
            e.record.owner = self.local_name.clone();
            e.record.copies = names;
            e.holders = holders;
        }
    }

    fn names_of(&self, peer: &PeerId) -> String {
        self.names.get(peer).cloned().unwrap_or_else(|| peer.to_string())
    }

    /// Adds one record to this flush's copies.
    pub(super) fn gather(
        &self,
        out: &mut Outgoing,
        id: &str,
        seq: u64,
        submitted_ms: u64,
        finished_ms: Option<u64>,
        bytes: &[u8],
    ) {
        let Some(e) = self.entries.get(id) else { return };
        if e.holders.len() < self.copies.wanted {
            out.short = true;
        }
        let restored = self.copies.confirming.contains_key(id);
        for holder in &e.holders {
            out.per_holder.entry(*holder).or_default().push(RecordCopy {
                id: id.to_string(),
                epoch: e.record.epoch,
                seq,
                submitted_ms,
                finished_ms,
                bytes: bytes.to_vec(),
                restored,
            });
        }
    }

    /// Queues this flush's copies for their holders (sent at once to a holder with nothing in
    /// flight) and notes what releases batch `seq`.
    pub(super) fn send_copies(&mut self, seq: u64, out: Outgoing) {
        let holders = out.per_holder.len();
        let waits = if self.copies.local_sync_only || out.short || holders == 0 { None } else { Some(holders) };
        self.copies.pending.insert(seq, waits);
        for (peer, records) in out.per_holder {
            let link = self.copies.links.entry(peer).or_default();
            for copy in records {
                link.queued.insert(copy.id.clone(), copy);
            }
            link.queued_batches.push(seq);
            if link.in_flight.is_none() {
                self.send_link(peer);
            }
        }
    }

    /// Sends what waits for `peer` as one request.
    fn send_link(&mut self, peer: PeerId) {
        let Some(link) = self.copies.links.get_mut(&peer) else { return };
        if link.queued.is_empty() {
            return;
        }
        self.copies.next_tag += 1;
        let tag = self.copies.next_tag;
        let records: Vec<RecordCopy> = link.queued.drain().map(|(_, c)| c).collect();
        link.in_flight = Some((tag, std::mem::take(&mut link.queued_batches)));
        self.effects.push(Effect::Replicate { peer, tag, records });
    }

    /// Batch `seq` is released: everything up to it synced locally, or its holders all answered.
    pub(super) fn copies_release(&self, seq: u64, local_done: u64) -> bool {
        seq <= local_done || !self.copies.pending.contains_key(&seq)
    }

    /// A holder's answer to request `tag` (or the failure to get one: the local sync releases
    /// its batches then). Fenced records are handed over to their new owner.
    pub fn on_replicated(&mut self, peer: PeerId, tag: u64, result: Result<(Vec<Fenced>, Vec<RecordCopy>), String>) {
        let batches = match self.copies.links.get_mut(&peer) {
            Some(link) if link.in_flight.as_ref().is_some_and(|(t, _)| *t == tag) => {
                link.in_flight.take().map(|(_, b)| b).unwrap_or_default()
            }
            _ => return,
        };
        self.send_link(peer);
        let (fenced, finals) = match result {
            Ok(answer) => answer,
            Err(why) => {
                tracing::debug!(%peer, tag, %why, "record copies not confirmed; the local sync releases them");
                // Restored tasks that asked in it ask again at the next tick while the holder
                // is alive (a request can fail before the connection to it is up).
                let asked_in_it = self
                    .copies
                    .confirming
                    .values()
                    .any(|(asked, waiting)| batches.contains(asked) && waiting.contains(&peer));
                let alive = self.copies.members.binary_search_by_key(&peer, |(p, _)| *p).is_ok();
                if asked_in_it && alive && !self.copies.ask_again.contains(&peer) {
                    self.copies.ask_again.push(peer);
                }
                return;
            }
        };
        for seq in &batches {
            if let Some(Some(left)) = self.copies.pending.get_mut(seq) {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.copies.pending.remove(seq);
                }
            }
        }
        for f in fenced {
            self.surrender(&f.id, f.owner, f.epoch);
        }
        for copy in finals {
            self.take_final(&copy);
        }
        let confirmed: Vec<String> = self
            .copies
            .confirming
            .iter_mut()
            .filter_map(|(id, (asked, waiting))| {
                if batches.contains(asked) {
                    waiting.retain(|p| *p != peer);
                }
                waiting.is_empty().then(|| id.clone())
            })
            .collect();
        for id in confirmed {
            self.copies.confirming.remove(&id);
            self.resume(&id);
        }
        self.release_ready();
    }

    /// Someone with a higher epoch owns `id` now: stop driving it, keep the record as handed
    /// over (queries go to the new owner), and never run it again.
    pub(super) fn surrender(&mut self, id: &str, owner: String, epoch: u32) {
        let Some(e) = self.entries.get(id) else { return };
        if epoch <= e.record.epoch || e.handed_over {
            return;
        }
        tracing::warn!(task_id = %id, %owner, epoch, "task adopted by another node: handing it over");
        self.copies.confirming.remove(id);
        self.halt(id, AttemptOutcome::Cancelled, Some(format!("adopted by {owner}")));
        self.waiters.remove(id);
        // Its adopter pays for it now.
        self.unreserve(id);
        if let Some(e) = self.entries.get_mut(id) {
            e.handed_over = true;
            e.record.note(now_ms(), TimelineKind::Adopted, None, Some(format!("by {owner}")));
            e.record.owner = owner;
            e.record.epoch = epoch;
            e.holders.clear();
        }
        self.metrics.tasks_handed_over.inc();
        self.touch(id);
        self.hold_evict(id);
    }

    /// A restored task that its holder knows final (it finished before the restart, and only
    /// the copy heard of it): the final record is taken, and the task does not run again.
    fn take_final(&mut self, copy: &RecordCopy) {
        let Ok(stored) = super::durable::decode(&copy.bytes) else { return };
        if !stored.record.state.is_final()
            || stored.record.epoch < self.entries.get(&copy.id).map_or(u32::MAX, |e| e.record.epoch)
        {
            return;
        }
        let Some(e) = self.entries.get_mut(&copy.id) else { return };
        if e.record.state.is_final() || e.handed_over {
            return;
        }
        e.record = stored.record;
        self.copies.confirming.remove(&copy.id);
        self.unqueue(&copy.id);
        self.metrics.tasks_final_from_copies.inc();
        self.touch(&copy.id);
        self.hold_evict(&copy.id);
    }

    /// A restored task waits for its holders before it runs again.
    pub(super) fn confirm_before_resuming(&mut self, id: &str) {
        let Some(e) = self.entries.get(id) else { return };
        let asked = self.durable_next();
        self.copies.confirming.insert(id.to_string(), (asked, e.holders.clone()));
        let wait =
            if self.copies.joined { self.copies.confirm_within } else { self.copies.confirm_within * ALONE_WAITS };
        self.copies.confirm_deadline = Some(Instant::now() + wait);
    }

    /// Restored tasks still waiting on `peer` ask it again with the next batch, and give it
    /// the whole wait to answer.
    pub(super) fn reask(&mut self, peer: &PeerId) {
        if !self.ask(peer) {
            return;
        }
        let answer_by = Instant::now() + self.copies.confirm_within;
        if let Some(at) = self.copies.confirm_deadline.as_mut() {
            *at = (*at).max(answer_by);
        }
    }

    /// Restored tasks still waiting on `peer` ask it again with the next batch. Returns
    /// whether any did.
    fn ask(&mut self, peer: &PeerId) -> bool {
        let next = self.durable_next();
        let ids: Vec<String> = self
            .copies
            .confirming
            .iter_mut()
            .filter(|(_, (_, waiting))| waiting.contains(peer))
            .map(|(id, (asked, _))| {
                *asked = next;
                id.clone()
            })
            .collect();
        for id in &ids {
            self.touch(id);
        }
        !ids.is_empty()
    }

    /// Restored tasks whose holders never answered run once the wait is over. A task whose
    /// question is still on its way to a holder, or whose answer is, waits on: the holder is
    /// alive and slow, and may have adopted it. Questions whose request failed are asked
    /// again first (holders still alive only); `MAX_WAITS_ON` bounds how long this goes on.
    pub fn tick_copies(&mut self, now: Instant) {
        for peer in std::mem::take(&mut self.copies.ask_again) {
            self.ask(&peer);
        }
        if self.copies.confirm_deadline.is_none_or(|at| now < at) {
            return;
        }
        self.copies.confirm_deadline = None;
        let links = &self.copies.links;
        let on_its_way =
            |asked: u64, waiting: &[PeerId]| waiting.iter().any(|p| links.get(p).is_some_and(|l| l.carries(asked)));
        let wait_on = self.copies.waited_on < MAX_WAITS_ON;
        let silent: Vec<String> = self
            .copies
            .confirming
            .iter()
            .filter(|(_, (asked, waiting))| !wait_on || !on_its_way(*asked, waiting))
            .map(|(id, _)| id.clone())
            .collect();
        let answering = self.copies.confirming.len() - silent.len();
        if answering > 0 {
            tracing::info!(tasks = answering, "restored tasks wait on for answers their copy holders are sending");
            self.copies.waited_on += 1;
            self.copies.confirm_deadline = Some(now + self.copies.confirm_within);
        } else {
            self.copies.waited_on = 0;
        }
        if !silent.is_empty() {
            tracing::info!(tasks = silent.len(), "resuming restored tasks whose copy holders did not answer");
        }
        for id in silent {
            self.copies.confirming.remove(&id);
            self.resume(&id);
        }
    }

    /// A member is gone: the unfinished records it held copies of get a new holder, and
    /// restored tasks stop waiting for it.
    pub fn on_member_lost(&mut self, peer: PeerId) {
        // What waited for it is re-sent to the new holders below (the records are touched).
        self.copies.links.remove(&peer);
        let mut moved = Vec::new();
        for (id, e) in &self.entries {
            if !e.record.state.is_final() && !e.handed_over && e.holders.contains(&peer) {
                moved.push(id.clone());
            }
        }
        for id in moved {
            let Some(e) = self.entries.get(&id) else { continue };
            let keep: Vec<PeerId> = e.holders.iter().copied().filter(|p| *p != peer).collect();
            let candidates: Vec<(PeerId, u64)> =
                self.copies.members.iter().filter(|(p, _)| !keep.contains(p)).copied().collect();
            let mut holders = keep;
            let need = self.copies.wanted.saturating_sub(holders.len());
            holders.extend(place(super::replicas::family(&id), &candidates, need));
            let names: Vec<String> = holders.iter().map(|p| self.names_of(p)).collect();
            if let Some(e) = self.entries.get_mut(&id) {
                e.holders = holders;
                e.record.copies = names;
            }
            self.touch(&id);
        }
        let mut ready = Vec::new();
        for (id, (_, waiting)) in self.copies.confirming.iter_mut() {
            waiting.retain(|p| *p != peer);
            if waiting.is_empty() {
                ready.push(id.clone());
            }
        }
        if !ready.is_empty() {
            tracing::info!(tasks = ready.len(), %peer, "resuming restored tasks: the copy holder they waited for is gone");
        }
        for id in ready {
            self.copies.confirming.remove(&id);
            self.resume(&id);
        }
    }

    /// Whether an alive member goes by `name` (a peer id as text).
    pub(super) fn member_named(&self, name: &str) -> bool {
        self.copies.members.iter().any(|(p, _)| p.to_string() == name)
    }

    /// Names new holders for an adopted task: neither this node nor `lost`.
    pub(super) fn replace_holders(&mut self, id: &str, lost: &PeerId) {
        let candidates: Vec<(PeerId, u64)> = self.copies.members.iter().filter(|(p, _)| p != lost).copied().collect();
        let holders = place(super::replicas::family(id), &candidates, self.copies.wanted);
        let names: Vec<String> = holders.iter().map(|p| self.names_of(p)).collect();
        if let Some(e) = self.entries.get_mut(id) {
            e.holders = holders;
            e.record.copies = names;
        }
    }

    /// Runs a restored task again.
    fn resume(&mut self, id: &str) {
        if self.entries.get(id).is_some_and(|e| !e.record.state.is_final() && !e.handed_over && e.queued.is_none()) {
            self.enqueue(id, false);
        }
    }

    /// Tasks waiting for their holders' confirmation after a restart.
    pub fn confirming(&self) -> usize {
        self.copies.confirming.len()
    }
}
