//! The ledger in a running node: one task that owns the writes (blocks from gossip, from
//! anti-entropy, sealing this node's payments), persists what it accepts before passing it
//! on, and keeps the metrics; a [`LedgerHandle`] for the gateway (payments, funds) and the API
//! (reads). The ledger itself sits behind a mutex held only for one insert or one read.
//!
//! - Gossip: the event loop opens each message on the ledger topic (a block's signature, a
//!   proof's two blocks) before GossipSub forwards it; the core hands it here.
//! - Sealing: every `ledger.seal_interval_ms`, or once `ledger.seal_max_payments` wait.
//!   The block is in the store before it is published, so an honest node never signs two
//!   blocks at one seq.
//! - Anti-entropy: every `ledger.sync_interval_ms` one random member is asked for its heads
//!   ([`super::sync`]), and at once the member whose block could not be placed yet.
//! - Start: the store's proofs, then its blocks in acceptance order, are replayed.
//!
//! What it does not do: the payments waiting to be sealed live in memory only, so a node
//! killed (not stopped) loses at most one seal interval of payments it owed. A stopped node
//! seals them on its way out.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use libp2p::PeerId;
use libp2p::identity::Keypair;
use rand::seq::SliceRandom;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::sync::{self, Fetched};
use super::wire::Gossiped;
use super::{AccountRow, Block, EquivocationProof, Hash, Inserted, Ledger, LedgerConfig};
use crate::config::LedgerSettings;
use crate::metrics::LedgerMetrics;
use crate::network::Client;
use crate::scheduler::payment::Funds;
use crate::store::ledger::LedgerStore;

/// Bound of the gossip channel into the service; beyond it a message is dropped (and
/// counted): anti-entropy brings what was missed.
const INPUT_CHANNEL: usize = 4096;
/// GossipSub application score lost per invalid block an account signed.
const PENALTY: f64 = -25.0;

enum Input {
    Gossip { from: PeerId, message: Gossiped },
    Synced { peer: PeerId, result: Result<Fetched, String> },
}

struct Inner {
    ledger: Mutex<Ledger>,
    local: PeerId,
    settings: LedgerSettings,
    inputs: mpsc::Sender<Input>,
    seal_now: Notify,
    members: Mutex<Vec<PeerId>>,
    metrics: LedgerMetrics,
}

/// The node's ledger: cheap to clone.
#[derive(Clone)]
pub struct LedgerHandle {
    inner: Arc<Inner>,
}

/// The service's half, run by [`LedgerService::run`].
pub struct LedgerService {
    handle: LedgerHandle,
    inputs: mpsc::Receiver<Input>,
    keypair: Keypair,
    network: Client,
    store: LedgerStore,
    protocol: libp2p::StreamProtocol,
    /// The highest seq seen of each account (gossip, peers' heads): what the lag is measured to.
    best_known: BTreeMap<PeerId, u64>,
    syncing: bool,
    /// Invalid blocks signed by each account (its GossipSub penalty).
    strikes: BTreeMap<PeerId, u32>,
    /// `ledger.test_equivocate`: the one equivocation is done.
    equivocated: bool,
}

/// What one batch of inserts leaves to do: persist, then publish.
#[derive(Default)]
struct Outcome {
    /// What to append to the store, in the order the ledger took it in (`Gossiped` encodings).
    stored: Vec<Vec<u8>>,
    proofs: Vec<EquivocationProof>,
    /// Accounts whose blocks wait on something: worth a sync with the sender.
    waiting: bool,
}

impl LedgerHandle {
    /// The ledger of `keypair`'s node, with what `store` holds replayed into it.
    pub fn open(
        settings: &LedgerSettings,
        keypair: Keypair,
        network: Client,
        store: LedgerStore,
        metrics: LedgerMetrics,
        protocol_version: &str,
    ) -> Result<(LedgerHandle, LedgerService), crate::store::StoreError> {
        let config = LedgerConfig { initial_credits: settings.initial_credits, ..LedgerConfig::default() };
        let mut ledger = Ledger::with_config(config);
        let stored = store.load()?;
        replay(&mut ledger, stored, &metrics);
        let (tx, inputs) = mpsc::channel(INPUT_CHANNEL);
        let handle = LedgerHandle {
            inner: Arc::new(Inner {
                ledger: Mutex::new(ledger),
                local: keypair.public().to_peer_id(),
                settings: settings.clone(),
                inputs: tx,
                seal_now: Notify::new(),
                members: Mutex::new(Vec::new()),
                metrics,
            }),
        };
        let service = LedgerService {
            handle: handle.clone(),
            inputs,
            keypair,
            network,
            store,
            protocol: sync::protocol(protocol_version),
            best_known: BTreeMap::new(),
            syncing: false,
            strikes: BTreeMap::new(),
            equivocated: false,
        };
        service.refresh_metrics();
        Ok((handle, service))
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.inner.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn local(&self) -> PeerId {
        self.inner.local
    }

    /// A ledger gossip message the event loop opened; dropped (and counted) when the service
    /// is this far behind.
    pub fn on_gossip(&self, from: PeerId, message: Gossiped) {
        if self.inner.inputs.try_send(Input::Gossip { from, message }).is_err() {
            self.inner.metrics.received("gossip", "dropped");
        }
    }

    /// Queues the payments of `task` for this node's next block.
    pub fn pay(&self, task: &str, payments: &[(PeerId, u64)]) {
        let mut ledger = self.ledger();
        for (to, amount) in payments {
            if let Err(e) = ledger.pay(*to, *amount, task) {
                self.inner.metrics.payments_dropped.inc();
                tracing::warn!(task_id = %task, %to, amount, error = %e, "payment not queued");
            }
        }
        let waiting = ledger.pending_payments();
        drop(ledger);
        self.inner.metrics.payments_waiting.set(waiting as i64);
        if waiting >= self.inner.settings.seal_max_payments {
            self.inner.seal_now.notify_one();
        }
    }

    /// The members anti-entropy may ask: alive and connected (a round never dials).
    pub fn set_members(&self, members: Vec<PeerId>) {
        *self.inner.members.lock().unwrap_or_else(|p| p.into_inner()) = members;
    }

    pub fn accounts(&self) -> Vec<AccountRow> {
        self.ledger().accounts()
    }

    pub fn digest(&self) -> Hash {
        self.ledger().digest()
    }

    pub fn row(&self, peer: &PeerId) -> AccountRow {
        self.ledger().row(peer)
    }

    pub fn block(&self, peer: &PeerId, seq: u64) -> Option<Block> {
        self.ledger().block(peer, seq).cloned()
    }

    /// The equivocation proof that froze `peer`, if one did.
    pub fn proof(&self, peer: &PeerId) -> Option<EquivocationProof> {
        self.ledger().proofs().find(|p| p.account() == *peer).cloned()
    }

    /// Payments this node owes and has not sealed yet, and their credits.
    pub fn owed(&self) -> (usize, i128) {
        let ledger = self.ledger();
        (ledger.pending_payments(), ledger.owed())
    }

    pub fn initial_credits(&self) -> u64 {
        self.inner.settings.initial_credits
    }

    /// Heads of every account, for anti-entropy answers.
    pub(super) fn with_ledger<T>(&self, f: impl FnOnce(&Ledger) -> T) -> T {
        f(&self.ledger())
    }
}

impl Funds for LedgerHandle {
    fn available(&self) -> i128 {
        let ledger = self.ledger();
        ledger.spendable(&self.inner.local) - ledger.owed()
    }
}

/// Replays what the store holds, in the order the ledger took it in: blocks and the proofs
/// of freezes, as they came.
fn replay(ledger: &mut Ledger, stored: Vec<Vec<u8>>, metrics: &LedgerMetrics) {
    let (mut blocks, mut bad) = (0usize, 0usize);
    for bytes in stored {
        let outcome = match Gossiped::open(&bytes) {
            Ok(Gossiped::Proof(proof)) => {
                if ledger.apply_proof(*proof).is_err() {
                    bad += 1;
                }
                continue;
            }
            Ok(Gossiped::Block(b)) => match ledger.insert(b) {
                Ok(Inserted::Accepted { .. }) => {
                    blocks += 1;
                    "accepted"
                }
                Ok(Inserted::Duplicate) => "duplicate",
                Ok(Inserted::Pending(_)) => "pending",
                Ok(Inserted::Equivocation(_)) => "equivocation",
                Err(_) => {
                    bad += 1;
                    "rejected"
                }
            },
            Err(_) => {
                bad += 1;
                "rejected"
            }
        };
        metrics.received("store", outcome);
    }
    // What freezes did while replaying is already in the store.
    let _ = ledger.take_freezes();
    if blocks > 0 || bad > 0 {
        tracing::info!(blocks, unreadable = bad, digest = %hex::encode(ledger.digest()), "ledger replayed from the store");
    }
}

impl LedgerService {
    /// Serves anti-entropy and runs until `stop`; then seals what this node owes one last time.
    pub async fn run(mut self, tracker: TaskTracker, stop: CancellationToken) {
        sync::serve(self.network.streams(), self.protocol.clone(), self.handle.clone(), tracker.clone(), stop.clone());
        let settings = self.handle.inner.settings.clone();
        let mut seal = tokio::time::interval(Duration::from_millis(settings.seal_interval_ms));
        seal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sync_tick = tokio::time::interval(Duration::from_millis(settings.sync_interval_ms));
        sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let handle = self.handle.clone();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(input) = self.inputs.recv() => self.on_input(input, &tracker).await,
                _ = handle.inner.seal_now.notified() => self.seal().await,
                _ = seal.tick() => {
                    self.seal().await;
                    self.refresh_metrics();
                }
                _ = sync_tick.tick() => {
                    let peer = self.random_member();
                    if let Some(peer) = peer {
                        self.start_sync(peer, &tracker);
                    }
                }
            }
        }
        self.seal().await;
    }

    fn random_member(&self) -> Option<PeerId> {
        let members = self.handle.inner.members.lock().unwrap_or_else(|p| p.into_inner());
        members.choose(&mut rand::thread_rng()).copied()
    }

    fn start_sync(&mut self, peer: PeerId, tracker: &TaskTracker) {
        if self.syncing {
            return;
        }
        self.syncing = true;
        let (handle, control, protocol) = (self.handle.clone(), self.network.streams(), self.protocol.clone());
        let inputs = self.handle.inner.inputs.clone();
        tracker.spawn(async move {
            let result = sync::round(control, protocol, peer, &handle).await;
            let _ = inputs.send(Input::Synced { peer, result }).await;
        });
    }

    async fn on_input(&mut self, input: Input, tracker: &TaskTracker) {
        match input {
            Input::Gossip { from, message: Gossiped::Block(block) } => {
                let best = self.best_known.entry(block.account).or_default();
                *best = (*best).max(block.seq);
                let outcome = self.absorb(vec![block], "gossip");
                if outcome.waiting {
                    // It builds on blocks this node lacks: the node that sent it has them.
                    self.start_sync(from, tracker);
                }
                self.persist_and_publish(outcome, false).await;
            }
            Input::Gossip { message: Gossiped::Proof(proof), .. } => {
                let mut outcome = Outcome::default();
                {
                    let mut ledger = self.handle.ledger();
                    if let Ok(true) = ledger.apply_proof(*proof) {
                        take_freezes(&mut ledger, &mut outcome);
                    }
                }
                for proof in &outcome.proofs {
                    self.on_frozen(proof);
                }
                // GossipSub forwards it on; this node keeps it.
                self.persist_and_publish(outcome, true).await;
            }
            Input::Synced { peer, result } => {
                self.syncing = false;
                match result {
                    Ok(fetched) => {
                        // Heads are the peer's word, unsigned: only accounts held here (or
                        // fetched now) are tracked, so a peer cannot grow the map at will.
                        let held: std::collections::BTreeSet<PeerId> =
                            fetched.blocks.iter().map(|b| b.account).collect();
                        for (account, seq) in &fetched.heads {
                            if held.contains(account) || self.handle.ledger().head(account).seq > 0 {
                                let best = self.best_known.entry(*account).or_default();
                                *best = (*best).max(*seq);
                            }
                        }
                        let label = if fetched.same { "same" } else { "fetched" };
                        self.handle
                            .inner
                            .metrics
                            .syncs
                            .get_or_create(&crate::metrics::OutcomeLabels { outcome: label })
                            .inc();
                        let mut outcome = Outcome::default();
                        {
                            let mut ledger = self.handle.ledger();
                            for proof in fetched.proofs {
                                if let Ok(true) = ledger.apply_proof(proof) {
                                    take_freezes(&mut ledger, &mut outcome);
                                }
                            }
                        }
                        for proof in &outcome.proofs {
                            self.on_frozen(proof);
                        }
                        let more = self.absorb(fetched.blocks, "sync");
                        outcome.stored.extend(more.stored);
                        outcome.proofs.extend(more.proofs);
                        // Proofs learnt by anti-entropy are not gossiped again: whoever has
                        // not heard of them asks the same way.
                        self.persist_and_publish(outcome, true).await;
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "ledger sync failed");
                        let labels = crate::metrics::OutcomeLabels { outcome: "failed" };
                        self.handle.inner.metrics.syncs.get_or_create(&labels).inc();
                    }
                }
            }
        }
    }

    /// Inserts `blocks`, each account's in seq order and, where they can be, after the
    /// blocks they depend on (anti-entropy brings many accounts' ranges at once, and the
    /// pending pool that would otherwise hold them is bounded).
    fn absorb(&mut self, blocks: Vec<Block>, via: &'static str) -> Outcome {
        let metrics = self.handle.inner.metrics.clone();
        let local = self.handle.inner.local;
        let mut outcome = Outcome::default();
        let mut queues: BTreeMap<PeerId, VecDeque<Block>> = BTreeMap::new();
        for block in blocks {
            queues.entry(block.account).or_default().push_back(block);
        }
        for q in queues.values_mut() {
            q.make_contiguous().sort_by_key(|b| b.seq);
        }
        let mut ledger = self.handle.ledger();
        let ready = |ledger: &Ledger, b: &Block| {
            ledger.head(&b.account).seq + 1 >= b.seq
                && b.deps.iter().all(|d| {
                    let h = ledger.head(&d.account);
                    h.seq >= d.seq || h.frozen_from.is_some()
                })
        };
        loop {
            let mut progress = false;
            for q in queues.values_mut() {
                while q.front().is_some_and(|b| ready(&ledger, b)) {
                    let b = q.pop_front().expect("checked above");
                    insert_one(&mut ledger, b, via, local, &metrics, &mut outcome, &mut self.strikes);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        // What still waits goes to the pending pool (or is refused by it).
        for b in queues.into_values().flatten() {
            insert_one(&mut ledger, b, via, local, &metrics, &mut outcome, &mut self.strikes);
        }
        drop(ledger);
        for proof in &outcome.proofs {
            self.on_frozen(proof);
        }
        self.penalize();
        outcome
    }

    fn on_frozen(&self, proof: &EquivocationProof) {
        self.handle.inner.metrics.equivocations.inc();
        tracing::warn!(account = %proof.account(), seq = proof.seq(), "account equivocated: frozen from that block on");
    }

    /// Sets the GossipSub application score of accounts that signed invalid blocks.
    fn penalize(&mut self) {
        for (peer, strikes) in std::mem::take(&mut self.strikes) {
            let network = self.network.clone();
            tokio::spawn(async move {
                let _ = network.set_app_score(peer, PENALTY * f64::from(strikes)).await;
            });
        }
    }

    /// Stores what was accepted, then gossips what this node made (its sealed blocks, the
    /// proofs it found itself). `relayed`: the proofs came from others (not republished).
    async fn persist_and_publish(&mut self, outcome: Outcome, relayed: bool) {
        if !self.persist(outcome.stored).await {
            return;
        }
        if !relayed {
            for proof in outcome.proofs {
                self.publish(Gossiped::Proof(Box::new(proof))).await;
            }
        }
    }

    async fn persist(&self, entries: Vec<Vec<u8>>) -> bool {
        if entries.is_empty() {
            return true;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.append(&entries)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "ledger blocks not stored");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger store task failed");
                false
            }
        }
    }

    async fn publish(&self, message: Gossiped) {
        let _ = self.network.publish_ledger(message.encode()).await;
    }

    /// Seals the payments this node owes into its next block: stored, then published.
    async fn seal(&mut self) {
        let prepared = self.handle.ledger().prepare_seal(&self.keypair);
        let Some((sealed, taken)) = prepared else { return };
        let block = sealed.block.clone();
        // Durable before anyone can see it (gossip, anti-entropy, the API): a restart never
        // signs another block at this seq. Not stored: not added, the payments stay queued.
        if !self.persist(vec![Gossiped::Block(block.clone()).encode()]).await {
            return;
        }
        if !self.handle.ledger().commit_seal(&sealed, taken) {
            tracing::error!(seq = block.seq, "a sealed block did not go into its own ledger");
            return;
        }
        let metrics = &self.handle.inner.metrics;
        metrics.blocks_sealed.inc();
        metrics.credits_paid.inc_by(u64::try_from(block.total_out()).unwrap_or(0));
        let tasks: usize = sealed.tasks.iter().map(Vec::len).sum();
        tracing::debug!(seq = block.seq, entries = block.entries.len(), tasks, "sealed a ledger block");
        self.publish(Gossiped::Block(block.clone())).await;
        if self.handle.inner.settings.test_equivocate && !self.equivocated {
            self.equivocate(block).await;
        }
        self.refresh_metrics();
    }

    /// TEST ONLY (`ledger.test_equivocate`): signs a second, different block at the seq just
    /// sealed and publishes it too; this node's own ledger finds the fork like any other.
    async fn equivocate(&mut self, block: Block) {
        self.equivocated = true;
        let mut entries = block.entries.clone();
        if let Some(first) = entries.first_mut() {
            first.amount = first.amount.saturating_add(1);
        }
        let twin = Block::sign(&self.keypair, block.seq, block.prev, block.deps.clone(), entries);
        tracing::warn!(seq = block.seq, "ledger.test_equivocate: signing a second block at one seq");
        let outcome = self.absorb(vec![twin.clone()], "gossip");
        self.publish(Gossiped::Block(twin)).await;
        self.persist_and_publish(outcome, false).await;
    }

    fn refresh_metrics(&self) {
        let m = &self.handle.inner.metrics;
        let local = self.handle.inner.local;
        let ledger = self.handle.ledger();
        m.balance.set(i64::try_from(ledger.balance(&local)).unwrap_or(i64::MAX));
        let heads = ledger.heads();
        m.accounts.set(ledger.accounts().len() as i64);
        m.blocks_held.set(heads.iter().map(|(_, s)| *s as i64).sum());
        m.frozen_accounts.set(ledger.proofs().count() as i64);
        m.pending_blocks.set(ledger.pending_blocks() as i64);
        m.payments_waiting.set(ledger.pending_payments() as i64);
        let lag: u64 = self
            .best_known
            .iter()
            .map(|(peer, best)| {
                let head = ledger.head(peer);
                let cap = head.frozen_from.map_or(u64::MAX, |f| f - 1);
                (*best).min(cap).saturating_sub(head.seq)
            })
            .fold(0, u64::saturating_add);
        m.sync_lag.set(lag as i64);
    }
}

/// Moves the ledger's freezes since the last call into `outcome`: each proof, then the blocks
/// it released (accepted: stored like any other).
fn take_freezes(ledger: &mut Ledger, outcome: &mut Outcome) {
    let (proofs, released) = ledger.take_freezes();
    for proof in proofs {
        outcome.stored.push(Gossiped::Proof(Box::new(proof.clone())).encode());
        outcome.proofs.push(proof);
    }
    for id in released {
        if let Some(b) = ledger.block(&id.account, id.seq) {
            outcome.stored.push(Gossiped::Block(b.clone()).encode());
        }
    }
}

/// Inserts one block, noting what became of it.
fn insert_one(
    ledger: &mut Ledger,
    block: Block,
    via: &'static str,
    local: PeerId,
    metrics: &LedgerMetrics,
    outcome: &mut Outcome,
    strikes: &mut BTreeMap<PeerId, u32>,
) {
    let author = block.account;
    let first = block.id();
    match ledger.insert(block) {
        Ok(Inserted::Accepted { released, dropped }) => {
            metrics.received(via, "accepted");
            for id in std::iter::once(first).chain(released) {
                if let Some(b) = ledger.block(&id.account, id.seq) {
                    let earned = b.paid_to(&local);
                    if earned > 0 {
                        metrics.credits_earned.inc_by(u64::try_from(earned).unwrap_or(0));
                    }
                    outcome.stored.push(Gossiped::Block(b.clone()).encode());
                }
            }
            for (id, reason) in dropped {
                metrics.rejected(reason.label());
                if reason.blames_sender() {
                    *strikes.entry(id.account).or_default() += 1;
                }
            }
        }
        Ok(Inserted::Pending(_)) => {
            metrics.received(via, "pending");
            outcome.waiting = true;
        }
        Ok(Inserted::Duplicate) => metrics.received(via, "duplicate"),
        Ok(Inserted::Equivocation(_)) => metrics.received(via, "equivocation"),
        Err(reason) => {
            metrics.received(via, "rejected");
            metrics.rejected(reason.label());
            tracing::debug!(account = %author, reason = %reason, "ledger block rejected");
            if reason.blames_sender() {
                *strikes.entry(author).or_default() += 1;
            }
        }
    }
    // A freeze (this block's fork, or one found among the pending blocks it released) comes
    // after the blocks accepted, with what the freeze released in turn.
    take_freezes(ledger, outcome);
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::ledger::{Entry, Rejected, ZERO_HASH};

    fn pay(key: &Keypair, seq: u64, prev: Hash, amount: u64) -> Block {
        let to = Keypair::generate_ed25519().public().to_peer_id();
        Block::sign(key, seq, prev, vec![], vec![Entry { to, amount, tasks: 1, tasks_digest: [0; 32] }])
    }

    fn count(m: &LedgerMetrics, reason: &str) -> u64 {
        m.blocks_rejected.get_or_create(&crate::metrics::ReasonLabels { reason: reason.into() }).get()
    }

    fn received(m: &LedgerMetrics, outcome: &'static str) -> u64 {
        m.blocks_received.get_or_create(&crate::metrics::BlockLabels { via: "gossip", outcome }).get()
    }

    /// Every kind of bad block a hostile peer can send is refused and counted by reason, its
    /// author is struck, and the honest chain it interleaves with goes on unaffected.
    #[test]
    fn hostile_blocks_are_refused_counted_and_struck_while_honest_ones_go_in() {
        let metrics = LedgerMetrics::default();
        let mut ledger = Ledger::new(100);
        let (honest, hostile) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let local = Keypair::generate_ed25519().public().to_peer_id();
        let mut outcome = Outcome::default();
        let mut strikes = BTreeMap::new();
        let mut insert = |ledger: &mut Ledger, b: Block, outcome: &mut Outcome| {
            insert_one(ledger, b, "gossip", local, &metrics, outcome, &mut strikes)
        };

        // A bad signature never reaches the ledger: the event loop's open refuses it.
        let mut forged = pay(&hostile, 1, ZERO_HASH, 5);
        forged.entries[0].amount = 99;
        assert_eq!(Gossiped::open(&Gossiped::Block(forged).encode()), Err(Rejected::BadSignature));

        let h1 = pay(&honest, 1, ZERO_HASH, 10);
        insert(&mut ledger, h1.clone(), &mut outcome);
        let x1 = pay(&hostile, 1, ZERO_HASH, 10);
        insert(&mut ledger, x1.clone(), &mut outcome);
        // A gap waits (bounded) and is never accepted without the blocks before it.
        insert(&mut ledger, pay(&hostile, 5, [7; 32], 1), &mut outcome);
        // A wrong previous hash.
        insert(&mut ledger, pay(&hostile, 2, [9; 32], 1), &mut outcome);
        // A replay of a held block.
        insert(&mut ledger, x1.clone(), &mut outcome);
        // An overspend: 90 left, 91 spent.
        insert(&mut ledger, pay(&hostile, 2, x1.hash(), 91), &mut outcome);
        // The honest chain goes on.
        let h2 = pay(&honest, 2, h1.hash(), 20);
        insert(&mut ledger, h2, &mut outcome);

        assert_eq!(count(&metrics, "wrong_prev"), 1);
        assert_eq!(count(&metrics, "overspend"), 1);
        assert_eq!(received(&metrics, "duplicate"), 1);
        assert_eq!(received(&metrics, "pending"), 1);
        assert_eq!(received(&metrics, "rejected"), 2);
        assert_eq!(received(&metrics, "accepted"), 3);
        assert_eq!(strikes.get(&hostile.public().to_peer_id()), Some(&2));
        assert_eq!(strikes.get(&honest.public().to_peer_id()), None);
        assert_eq!(ledger.head(&honest.public().to_peer_id()).seq, 2);
        assert_eq!(ledger.head(&hostile.public().to_peer_id()).seq, 1);
        assert_eq!(ledger.balance(&honest.public().to_peer_id()), 70);
        assert_eq!(outcome.stored.len(), 3, "what was accepted is what gets stored");
        assert!(outcome.waiting, "the gap asks for a sync");
    }

    /// A store's blocks replay in acceptance order into the same ledger, proofs first.
    #[test]
    fn a_ledger_replayed_from_its_store_is_the_ledger_that_was_stored() {
        let metrics = LedgerMetrics::default();
        let store = LedgerStore::new(crate::store::Store::in_memory());
        let key = Keypair::generate_ed25519();
        let mut ledger = Ledger::new(100);
        let b1 = pay(&key, 1, ZERO_HASH, 10);
        let b2 = pay(&key, 2, b1.hash(), 10);
        let fork = pay(&key, 2, b1.hash(), 11);
        let mut outcome = Outcome::default();
        let mut strikes = BTreeMap::new();
        for b in [b1, b2, fork] {
            insert_one(&mut ledger, b, "gossip", key.public().to_peer_id(), &metrics, &mut outcome, &mut strikes);
        }
        assert_eq!(outcome.proofs.len(), 1);
        assert_eq!(outcome.stored.len(), 3, "two blocks, then the proof");
        store.append(&outcome.stored).unwrap();
        let mut replayed = Ledger::new(100);
        replay(&mut replayed, store.load().unwrap(), &metrics);
        assert_eq!(replayed.digest(), ledger.digest());
        assert_eq!(replayed.row(&key.public().to_peer_id()).frozen_from, Some(2));
    }

    /// A block waiting on an account that turns out to have forked is placed by the freeze:
    /// it is stored after the proof, and a replay of the store is the ledger that ran.
    #[test]
    fn blocks_a_freeze_releases_are_stored_after_its_proof() {
        let metrics = LedgerMetrics::default();
        let (x, y) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let xid = x.public().to_peer_id();
        let mut ledger = Ledger::new(100);
        let mut outcome = Outcome::default();
        let mut strikes = BTreeMap::new();
        let x1 = pay(&x, 1, ZERO_HASH, 5);
        insert_one(&mut ledger, x1.clone(), "gossip", xid, &metrics, &mut outcome, &mut strikes);
        let to = Keypair::generate_ed25519().public().to_peer_id();
        let dep = crate::ledger::Dep { account: xid, seq: 2 };
        let y1 =
            Block::sign(&y, 1, ZERO_HASH, vec![dep], vec![Entry { to, amount: 3, tasks: 1, tasks_digest: [0; 32] }]);
        insert_one(&mut ledger, y1.clone(), "gossip", xid, &metrics, &mut outcome, &mut strikes);
        assert!(outcome.waiting, "y1 waits for x's block 2");
        let proof = EquivocationProof::new(pay(&x, 2, x1.hash(), 1), pay(&x, 2, x1.hash(), 2));
        assert_eq!(ledger.apply_proof(proof.clone()), Ok(true));
        take_freezes(&mut ledger, &mut outcome);
        let proof_bytes = Gossiped::Proof(Box::new(proof)).encode();
        let y1_bytes = Gossiped::Block(y1.clone()).encode();
        assert_eq!(outcome.stored[1..], [proof_bytes, y1_bytes], "the proof, then what it released");
        assert_eq!(ledger.head(&y.public().to_peer_id()).seq, 1);

        let store = LedgerStore::new(crate::store::Store::in_memory());
        store.append(&outcome.stored).unwrap();
        let mut replayed = Ledger::new(100);
        replay(&mut replayed, store.load().unwrap(), &metrics);
        assert_eq!(replayed.digest(), ledger.digest());
    }
}
