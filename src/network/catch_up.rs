//! Catching up on members (`/<protocol_version>/members/1.0.0`): a node asks a neighbour for
//! the latest HeartBeat and CapabilityAdvertisement it holds of every member, as memberlist's
//! push-pull does on join, and once in a while afterwards.
//!
//! Why: in a cluster larger than the active view, each member's heartbeat comes every
//! `members / 2` s and its advertisement refresh every fifth of those (the idle gossip
//! budget, `node/core/advertise.rs`). A node that joined a running cluster of 100 met the
//! members outside its active view only at their next heartbeat (up to 50 s) and their
//! capabilities at their next refresh (up to 250 s); a new gateway could place nothing there
//! meanwhile. Asked at its first connections, a neighbour hands them all over in one frame.
//! The periodic pull also mends a view that missed a refutation: a node that buried a member
//! whose refutation (a heartbeat with a higher incarnation) it never received held it dead
//! until that member's next heartbeat, up to 50 s later.
//!
//! What travels are the authors' sealed messages, byte for byte as gossiped: the receiver
//! opens and checks each one as if it came over GossipSub (signature, bounds, the signer is
//! the member it is about), so a neighbour can withhold advertisements but never forge or
//! alter one. A node holds the newest (highest `seq`) heartbeat and advertisement per member
//! and drops a member's when it is declared dead or left, so what it serves is what it
//! believes alive. Pulled heartbeats are passed on without their rumors: second-hand news
//! goes stale, a member's own word about itself does not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::{PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use super::frames::{MAX_FRAME, read_frame, write_frame};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::protocol::WIRE_VERSION;

/// Pulls at the first member connections after start: the first neighbour may itself have
/// just joined and know little.
const PULLS_ON_JOIN: u32 = 2;
/// After those, one pull from a neighbour this often: advertisements lost in gossip (a
/// partition, a mesh not yet formed when they were published) come back within it.
const PULL_EVERY: Duration = Duration::from_secs(30);
/// The longest one pull may take, stream opening included.
const PULL_TIMEOUT: Duration = Duration::from_secs(5);
/// Asks answered at once; further streams are closed unanswered.
const MAX_SERVING: usize = 8;
/// Room left in a frame for its envelope when filling it with advertisements.
const FRAME_MARGIN: usize = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Ask {
    v: u16,
    /// What the asker holds already: (member's peer id, kind, seq). Only newer messages come
    /// back, so a periodic pull in a settled cluster carries (and costs a signature check
    /// for) nothing but what changed.
    have: Vec<(ByteBuf, Kind, u64)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    v: u16,
    /// Sealed HeartBeats and CapabilityAdvertisements, as their authors published them.
    ads: Vec<ByteBuf>,
}

/// Which of a member's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(super) enum Kind {
    HeartBeat,
    Advertisement,
}

type Table = HashMap<(PeerId, Kind), (u64, Vec<u8>)>;

/// The newest sealed heartbeat and advertisement of each member, shared with the serving task.
#[derive(Clone, Default)]
pub(super) struct Held(Arc<Mutex<Table>>);

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `peer`'s message of `kind` with `seq` would be news.
    pub fn is_newer(&self, peer: PeerId, kind: Kind, seq: u64) -> bool {
        self.lock().get(&(peer, kind)).is_none_or(|(held, _)| seq > *held)
    }

    /// Keeps `sealed` as `peer`'s message of `kind` if it is newer than the one held.
    pub fn keep(&self, peer: PeerId, kind: Kind, seq: u64, sealed: &[u8]) {
        let mut held = self.lock();
        if held.get(&(peer, kind)).is_none_or(|(s, _)| seq > *s) {
            held.insert((peer, kind), (seq, sealed.to_vec()));
        }
    }

    /// `peer` is dead or left: its messages are no longer handed out.
    pub fn forget(&self, peer: &PeerId) {
        let mut held = self.lock();
        held.remove(&(*peer, Kind::HeartBeat));
        held.remove(&(*peer, Kind::Advertisement));
    }

    /// What this node holds, for an ask.
    fn summary(&self) -> Vec<(ByteBuf, Kind, u64)> {
        self.lock().iter().map(|((peer, kind), (seq, _))| (ByteBuf::from(peer.to_bytes()), *kind, *seq)).collect()
    }

    /// What one answer carries: every message held that is newer than what the asker `has`,
    /// as far as one frame goes.
    fn answer(&self, has: &HashMap<(PeerId, Kind), u64>) -> Vec<ByteBuf> {
        let mut size = 0;
        self.lock()
            .iter()
            .filter(|(key, (seq, _))| has.get(key).is_none_or(|theirs| seq > theirs))
            .map(|(_, held)| held)
            .take_while(|(_, bytes)| {
                size += bytes.len() + 16;
                size < MAX_FRAME - FRAME_MARGIN
            })
            .map(|(_, bytes)| ByteBuf::from(bytes.clone()))
            .collect()
    }
}

/// What a pull brought back to the event loop: the neighbour's advertisements, or why not.
pub(super) type Pulled = Result<Vec<ByteBuf>, String>;

pub(super) struct CatchUp {
    held: Held,
    control: libp2p_stream::Control,
    protocol: StreamProtocol,
    tracker: TaskTracker,
    metrics: Metrics,
    results_tx: mpsc::Sender<(PeerId, Pulled)>,
    /// Answers of our pulls, for the event loop to open.
    pub results: mpsc::Receiver<(PeerId, Pulled)>,
    pulls: u32,
    in_flight: bool,
    next_pull: Instant,
}

impl CatchUp {
    pub fn new(
        control: libp2p_stream::Control,
        protocol: StreamProtocol,
        tracker: TaskTracker,
        metrics: Metrics,
    ) -> Self {
        let (results_tx, results) = mpsc::channel(4);
        Self {
            held: Held::default(),
            control,
            protocol,
            tracker,
            metrics,
            results_tx,
            results,
            pulls: 0,
            in_flight: false,
            next_pull: Instant::now() + PULL_EVERY,
        }
    }

    pub fn held(&self) -> &Held {
        &self.held
    }

    /// Starts answering neighbours' pulls (until the swarm goes away).
    pub fn serve(&mut self) {
        let mut incoming = match self.control.accept(self.protocol.clone()) {
            Ok(incoming) => incoming,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve the members protocol");
                return;
            }
        };
        let (held, metrics, spawner) = (self.held.clone(), self.metrics.clone(), self.tracker.clone());
        let slots = Arc::new(Semaphore::new(MAX_SERVING));
        self.tracker.spawn(async move {
            while let Some((peer, mut stream)) = incoming.next().await {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "members pull refused: {MAX_SERVING} served already");
                    continue;
                };
                let (held, metrics) = (held.clone(), metrics.clone());
                spawner.spawn(async move {
                    let served = tokio::time::timeout(PULL_TIMEOUT, async {
                        let ask: Option<Ask> = read_frame(&mut stream).await?;
                        let Some(ask) = ask.filter(|a| a.v == WIRE_VERSION) else { return Ok(false) };
                        let has = ask
                            .have
                            .iter()
                            .filter_map(|(peer, kind, seq)| Some(((PeerId::from_bytes(peer).ok()?, *kind), *seq)))
                            .collect();
                        write_frame(&mut stream, &Answer { v: WIRE_VERSION, ads: held.answer(&has) }).await?;
                        Ok::<_, std::io::Error>(true)
                    })
                    .await;
                    let outcome = match served {
                        Ok(Ok(true)) => "served",
                        Ok(Ok(false)) => "refused",
                        Ok(Err(_)) | Err(_) => "serve_failed",
                    };
                    metrics.member_pulls.get_or_create(&OutcomeLabels { outcome }).inc();
                    drop(slot);
                });
            }
        });
    }

    /// A member was admitted (Identify confirmed our cluster): the first ones are asked at once.
    pub fn on_member(&mut self, peer: PeerId, now: Instant) {
        if self.pulls < PULLS_ON_JOIN && !self.in_flight {
            self.pull(peer, now);
        }
    }

    /// At the housekeeping tick: a periodic pull from the neighbour `pick` chooses.
    pub fn on_tick(&mut self, now: Instant, pick: impl FnOnce() -> Option<PeerId>) {
        if now >= self.next_pull && !self.in_flight {
            match pick() {
                Some(peer) => self.pull(peer, now),
                None => self.next_pull = now + PULL_EVERY,
            }
        }
    }

    /// A pull's answer reached the event loop.
    pub fn finished(&mut self, ok: bool) {
        self.in_flight = false;
        let outcome = if ok { "pulled" } else { "pull_failed" };
        self.metrics.member_pulls.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    fn pull(&mut self, peer: PeerId, now: Instant) {
        self.pulls += 1;
        self.in_flight = true;
        self.next_pull = now + PULL_EVERY;
        let (mut control, protocol, tx) = (self.control.clone(), self.protocol.clone(), self.results_tx.clone());
        let have = self.held.summary();
        self.tracker.spawn(async move {
            let pulled = tokio::time::timeout(PULL_TIMEOUT, async {
                let mut stream = control.open_stream(peer, protocol).await.map_err(|e| e.to_string())?;
                write_frame(&mut stream, &Ask { v: WIRE_VERSION, have }).await.map_err(|e| e.to_string())?;
                match read_frame::<_, Answer>(&mut stream).await.map_err(|e| e.to_string())? {
                    Some(answer) if answer.v == WIRE_VERSION => Ok(answer.ads),
                    Some(answer) => Err(format!("wire version {}", answer.v)),
                    None => Err("closed without an answer".to_string()),
                }
            })
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {PULL_TIMEOUT:?}")));
            let _ = tx.send((peer, pulled)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_keeps_the_newest_of_each_kind_and_forgets() {
        use Kind::{Advertisement, HeartBeat};
        let held = Held::default();
        let peer = PeerId::random();
        assert!(held.is_newer(peer, Advertisement, 1));
        held.keep(peer, Advertisement, 5, b"five");
        held.keep(peer, Advertisement, 3, b"three");
        assert!(!held.is_newer(peer, Advertisement, 5));
        assert!(held.is_newer(peer, Advertisement, 6));
        assert!(held.is_newer(peer, HeartBeat, 5), "kinds are kept apart");
        let nothing = HashMap::new();
        assert_eq!(held.answer(&nothing), vec![ByteBuf::from(b"five".to_vec())]);
        held.keep(peer, HeartBeat, 4, b"four");
        assert_eq!(held.answer(&nothing).len(), 2);
        // An asker holding the heartbeat and an older advertisement gets the advertisement only.
        let has = HashMap::from([((peer, HeartBeat), 4), ((peer, Advertisement), 3)]);
        assert_eq!(held.answer(&has), vec![ByteBuf::from(b"five".to_vec())]);
        let summary = held.summary();
        assert_eq!(summary.len(), 2);
        assert!(summary.contains(&(ByteBuf::from(peer.to_bytes()), Advertisement, 5)));
        held.forget(&peer);
        assert!(held.answer(&nothing).is_empty());
        assert!(held.is_newer(peer, Advertisement, 1));
    }

    #[test]
    fn an_answer_fits_one_frame() {
        let held = Held::default();
        let big = vec![7u8; 512 * 1024];
        for seq in 0..16 {
            held.keep(PeerId::random(), Kind::Advertisement, seq, &big);
        }
        let answer = held.answer(&HashMap::new());
        assert!(answer.len() < 16, "{} ads of 512 KiB cannot all fit", answer.len());
        let size: usize = answer.iter().map(|a| a.len() + 16).sum();
        assert!(size < MAX_FRAME - FRAME_MARGIN);
    }
}
