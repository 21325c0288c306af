//! Task-record copies as the core carries them out: forwarding a batch to a holder, keeping
//! the copies others forward, and finding a record this node does not hold by asking the
//! other members (so that `GET /v1/tasks/{id}` works on any node).

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;
use tokio::sync::oneshot;

use super::Core;
use crate::metrics::DialCause;
use crate::network::{DispatchError, InboundId};
use crate::protocol::{RecordCopy, RecordsRequest, RecordsResponse, WIRE_VERSION};
use crate::scheduler::{Held, TaskRecord};

/// Tags of lookups have the top bit set; those of forwarded batches are batch numbers.
const LOOKUP: u64 = 1 << 63;

/// A record being looked for across the cluster.
struct Lookup {
    reply: oneshot::Sender<Option<TaskRecord>>,
    /// Members yet to answer.
    waiting: usize,
    /// The best answer so far: (from its owner, epoch, final) ranks it.
    best: Option<(bool, u32, bool, TaskRecord)>,
}

#[derive(Default)]
pub(super) struct Lookups {
    next: u64,
    pending: HashMap<u64, Lookup>,
}

fn decode(copy: &RecordCopy) -> Option<TaskRecord> {
    crate::scheduler::decode_record(&copy.bytes)
}

impl Core {
    /// Alive members other than this node: where copies may go.
    pub(super) fn alive_members(&self) -> Vec<PeerId> {
        self.membership
            .members()
            .filter(|m| m.state == crate::membership::MemberState::Alive && m.id != self.local)
            .map(|m| m.id)
            .collect()
    }

    pub(super) async fn replicate(&mut self, peer: PeerId, tag: u64, records: Vec<RecordCopy>) {
        let addresses = self.dial_addresses(&peer);
        if !addresses.is_empty() {
            let _ = self.network.dial(peer, addresses, DialCause::Records).await;
        }
        let request = RecordsRequest::Replicate { v: WIRE_VERSION, records };
        let _ = self.network.send_records(peer, tag, request).await;
    }

    pub(super) async fn on_records_requested(&mut self, id: InboundId, peer: PeerId, request: RecordsRequest) {
        let response = match request {
            RecordsRequest::Replicate { records, .. } => {
                let (fenced, finals) = self.gateway.keep_copies(peer, records);
                RecordsResponse::Replicated { v: WIRE_VERSION, fenced, finals }
            }
            RecordsRequest::Get { id: task, .. } => match self.gateway.held(&task) {
                Some(Held { copy, owner }) => RecordsResponse::Found { v: WIRE_VERSION, copy: Some(copy), owner },
                None => RecordsResponse::Found { v: WIRE_VERSION, copy: None, owner: false },
            },
            RecordsRequest::Mine { after, .. } => return self.answer_mine(id, peer, after),
        };
        let _ = self.network.respond_records(id, response).await;
    }

    pub(super) async fn on_records_answered(
        &mut self,
        peer: PeerId,
        tag: u64,
        result: Result<RecordsResponse, DispatchError>,
    ) {
        if tag & LOOKUP != 0 {
            self.lookup_answered(tag, result);
            return;
        }
        if tag == super::reclaim::MINE {
            self.on_mine_answered(peer, result).await;
            return;
        }
        let result = match result {
            Ok(RecordsResponse::Replicated { fenced, finals, .. }) => Ok((fenced, finals)),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        };
        self.gateway.on_replicated(peer, tag, result);
        let workers = self.workers();
        self.gateway.pump(&workers);
    }

    /// Adoptions that are due, restored tasks whose holders never answered, and asks for
    /// this node's own records to try again.
    pub(super) async fn tick_records(&mut self, now: Instant) {
        self.retry_mine(now).await;
        self.gateway.tick_copies(now);
        self.gateway.adopt_due(now);
        if self.gateway.queued() > 0 {
            let workers = self.workers();
            self.gateway.pump(&workers);
        }
    }

    /// Answers a query for task `id`: at once when this node owns the record, else from the
    /// best answer of the members (the owner's, else the newest copy).
    pub(super) async fn get_record(&mut self, id: String, reply: oneshot::Sender<Option<TaskRecord>>) {
        let local = self.gateway.held(&id);
        if let Some(Held { copy, owner: true }) = &local {
            let _ = reply.send(decode(copy));
            return;
        }
        let members = self.alive_members();
        let best = local.and_then(|h| decode(&h.copy).map(|r| (false, h.copy.epoch, r.state.is_final(), r)));
        if members.is_empty() {
            let _ = reply.send(best.map(|b| b.3));
            return;
        }
        self.lookups.next += 1;
        let tag = LOOKUP | self.lookups.next;
        self.lookups.pending.insert(tag, Lookup { reply, waiting: members.len(), best });
        for peer in members {
            let request = RecordsRequest::Get { v: WIRE_VERSION, id: id.clone() };
            if self.network.send_records(peer, tag, request).await.is_err() {
                self.lookup_answered(tag, Err(DispatchError::Unreachable("network closed".into())));
            }
        }
    }

    fn lookup_answered(&mut self, tag: u64, result: Result<RecordsResponse, DispatchError>) {
        let Some(lookup) = self.lookups.pending.get_mut(&tag) else { return };
        lookup.waiting = lookup.waiting.saturating_sub(1);
        if let Ok(RecordsResponse::Found { copy: Some(copy), owner, .. }) = result
            && let Some(record) = decode(&copy)
        {
            let rank = (owner, copy.epoch.max(record.epoch), record.state.is_final());
            if lookup.best.as_ref().is_none_or(|(o, e, f, _)| rank > (*o, *e, *f)) {
                lookup.best = Some((rank.0, rank.1, rank.2, record));
            }
        }
        let done = lookup.waiting == 0 || lookup.best.as_ref().is_some_and(|(owner, ..)| *owner);
        if done && let Some(lookup) = self.lookups.pending.remove(&tag) {
            let _ = lookup.reply.send(lookup.best.map(|b| b.3));
        }
    }
}
