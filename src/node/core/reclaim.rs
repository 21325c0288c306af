//! A restarted gateway takes back its records from their copy holders.
//!
//! A gateway acknowledges a task once its copy holders hold the record or its own sync is
//! done, whichever comes first (`tasks.fsync: group`). When it dies between the two and comes
//! back at once with the same peer id, its store lacks records the client was told are safe,
//! and nobody adopts them: their owner is alive. The same happens when the data dir does not
//! survive but the identity does (a Kubernetes pod rescheduled with its key in a Secret and
//! its store on an `emptyDir`). So a node whose peer id existed before this start asks every
//! member it sees alive, once connected to it, for the unfinished records it keeps for it,
//! page by page, and resumes those its own store does not have (`Gateway::reclaim`).
//!
//! A node whose identity was created at this start skips all of it: nobody can hold a record
//! for a peer id that did not exist.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::Core;
use crate::network::{DispatchError, InboundId};
use crate::protocol::{RecordsRequest, RecordsResponse, WIRE_VERSION};

/// Tag of the asks for this node's own records (lookups use the top bit, forwarded batches
/// their batch numbers, which never reach this one).
pub(super) const MINE: u64 = 1 << 62;

/// Failed asks are tried again after 1, 2, 4, 8 and 16 s, then given up (a member of an
/// older release drops the request as malformed).
const RETRIES: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Reclaim {
    /// Members asked (answered, being asked, or given up on).
    asked: HashSet<PeerId>,
    /// Members whose ask failed: when to ask again (`None` while the new ask is out), and how
    /// many asks failed so far.
    again: HashMap<PeerId, (Option<Instant>, u32)>,
    /// Members to be asked once connected.
    waiting: HashSet<PeerId>,
}

impl Core {
    /// Asks `peer`, just seen alive, for this node's records, unless it was asked already.
    pub(super) async fn ask_mine(&mut self, peer: PeerId) {
        let Some(reclaim) = self.reclaim.as_mut() else { return };
        if !reclaim.asked.insert(peer) {
            return;
        }
        self.first_mine(peer).await;
    }

    /// The first page's ask: now when connected, else once connected. It never dials: with a
    /// dial of its own at restart, the restored tasks' forwards to the same member failed as
    /// "dial failed" (request-response fails every request waiting for a peer when a dial to
    /// it fails; which dial failed was not pinned down, no connection error was logged), and
    /// the tasks then ran again without their holders' word. A member this node never
    /// connects to (beyond the active view of a large cluster) is not asked.
    async fn first_mine(&mut self, peer: PeerId) {
        if self.connections.contains_key(&peer) {
            return self.send_mine(peer, None).await;
        }
        if let Some(r) = self.reclaim.as_mut() {
            r.waiting.insert(peer);
        }
    }

    /// A member connected (and identified): ask it if it waits for that.
    pub(super) async fn mine_connected(&mut self, peer: PeerId) {
        if self.reclaim.as_mut().is_some_and(|r| r.waiting.remove(&peer)) {
            self.send_mine(peer, None).await;
        }
    }

    async fn send_mine(&mut self, peer: PeerId, after: Option<String>) {
        let request = RecordsRequest::Mine { v: WIRE_VERSION, after };
        if self.network.send_records(peer, MINE, request).await.is_err() {
            self.mine_failed(peer, "the network loop stopped");
        }
    }

    /// A page from `peer`: resume the tasks this node lost, then ask for the next page.
    pub(super) async fn on_mine_answered(&mut self, peer: PeerId, result: Result<RecordsResponse, DispatchError>) {
        match result {
            Ok(RecordsResponse::Yours { copies, next, .. }) => {
                if let Some(r) = self.reclaim.as_mut() {
                    r.again.remove(&peer);
                }
                let held = copies.len();
                let taken = self.gateway.reclaim(copies);
                if taken > 0 {
                    tracing::warn!(%peer, tasks = taken, held,
                        "took back unfinished tasks this gateway had accepted and its store had lost");
                    let workers = self.workers();
                    self.gateway.pump(&workers);
                }
                if next.is_some() {
                    self.send_mine(peer, next).await;
                }
            }
            Ok(other) => self.mine_failed(peer, &format!("unexpected answer {other:?}")),
            Err(e) => self.mine_failed(peer, &e.to_string()),
        }
    }

    fn mine_failed(&mut self, peer: PeerId, why: &str) {
        let Some(reclaim) = self.reclaim.as_mut() else { return };
        let failed = reclaim.again.get(&peer).map_or(0, |(_, n)| *n) + 1;
        if failed > RETRIES {
            reclaim.again.remove(&peer);
            tracing::warn!(%peer, why, "gave up asking a member for the records it keeps for this gateway");
            return;
        }
        let at = Instant::now() + FIRST_RETRY * 2u32.pow(failed - 1);
        reclaim.again.insert(peer, (Some(at), failed));
        tracing::debug!(%peer, why, failed, "asking a member for this gateway's records failed; will ask again");
    }

    /// Asks again the alive members whose ask failed and whose wait is over.
    pub(super) async fn retry_mine(&mut self, now: Instant) {
        let Some(reclaim) = self.reclaim.as_ref() else { return };
        let due: Vec<PeerId> =
            reclaim.again.iter().filter(|(_, (at, _))| at.is_some_and(|at| now >= at)).map(|(p, _)| *p).collect();
        for peer in due {
            let alive = self.membership.get(&peer).is_some_and(|m| m.state == crate::membership::MemberState::Alive);
            if alive {
                // Stays in `again` (with its count) until an answer comes.
                if let Some((at, _)) = self.reclaim.as_mut().and_then(|r| r.again.get_mut(&peer)) {
                    *at = None;
                }
                self.first_mine(peer).await;
            } else if let Some(r) = self.reclaim.as_mut() {
                // Asked again when it is seen alive.
                r.again.remove(&peer);
                r.asked.remove(&peer);
            }
        }
    }

    /// Answers a member's ask for the records kept for it, once the copy writer has applied
    /// everything queued before the ask (off the core's loop: the read waits for the writer).
    pub(super) fn answer_mine(&mut self, id: InboundId, peer: PeerId, after: Option<String>) {
        let page = self.gateway.kept_for(&peer, after);
        let network = self.network.clone();
        tokio::spawn(async move {
            let (copies, next) = match page {
                Some(rx) => match rx.await {
                    Ok(Ok(page)) => page,
                    Ok(Err(e)) => {
                        tracing::error!(%peer, error = %e, "cannot read the copies kept for a restarted gateway");
                        (Vec::new(), None)
                    }
                    Err(_) => (Vec::new(), None),
                },
                None => (Vec::new(), None),
            };
            let _ = network.respond_records(id, RecordsResponse::Yours { v: WIRE_VERSION, copies, next }).await;
        });
    }
}
