//! The ledger: every account's chain as this node knows it, the balances they make, the
//! pending pool, the equivocation proofs, and the views anti-entropy and the API need.
//! A state machine over inputs (`insert` a block, `apply_proof`), pure and synchronous.
//!
//! Its views (heads, digest, balances, ranges) are in `views`.
//!
//! Balances (see `mod.rs` for the model): `received` counts every payment to the account in
//! the blocks held, `acked` only those in blocks its own chain acknowledges through its
//! dependencies; `balance = initial + received - sent` is what is shown and what sums to
//! `initial × accounts`; `spendable = initial + acked - sent` must stay >= 0 after each block.
//! Both are kept incrementally and can be rebuilt from the chains (`recompute`), which is
//! what a freeze does.

use std::collections::{BTreeMap, VecDeque};

use libp2p::PeerId;

use super::LedgerConfig;
use super::block::{Block, BlockId, Hash};
use super::equivocation::{EquivocationProof, ProofError};
use super::owner::Payments;
use super::pending::{PendingPool, Wait};
use super::validate::{Position, Rejected, check_next, check_shape};

/// What became of an inserted block.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Added to its account's chain, with the pending blocks that it released (in the order
    /// they went in) and those that, once released, turned out invalid. The block, then
    /// `released`, is an order in which every block follows what it builds on: stored in that
    /// order, a restart replays them without the (bounded) pending pool.
    Accepted { released: Vec<BlockId>, dropped: Vec<(BlockId, Rejected)> },
    /// Held in the pending pool until what it waits for arrives.
    Pending(Wait),
    /// Already held (in the chain or the pending pool): ignored.
    Duplicate,
    /// A second block at a held seq: the account is now frozen; gossip the proof.
    Equivocation(Box<EquivocationProof>),
}

/// One account as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub peer: PeerId,
    pub balance: i128,
    pub spendable: i128,
    /// Its chain's head (0: no block yet).
    pub seq: u64,
    /// The seq it equivocated at, if it did.
    pub frozen_from: Option<u64>,
}

#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub(super) block: Block,
    pub(super) hash: Hash,
}

#[derive(Debug, Default)]
pub(super) struct Account {
    /// Block `seq` at index `seq - 1`; never beyond `frozen_from - 1`.
    pub(super) chain: Vec<Stored>,
    pub(super) frozen_from: Option<u64>,
    /// Highest seq of each other account this chain acknowledged (as signed, unclamped).
    pub(super) acks: BTreeMap<PeerId, u64>,
    pub(super) sent: i128,
    pub(super) received: i128,
    pub(super) acked: i128,
}

impl Account {
    pub(super) fn len(&self) -> u64 {
        self.chain.len() as u64
    }
}

/// What placing one block came to, before the pending pool is consulted.
enum Placed {
    Accepted,
    Pending(Block, Wait),
    Duplicate,
    Equivocation(EquivocationProof),
}

#[derive(Debug)]
pub struct Ledger {
    pub(super) config: LedgerConfig,
    pub(super) accounts: BTreeMap<PeerId, Account>,
    pub(super) pending: PendingPool,
    pub(super) proofs: BTreeMap<PeerId, EquivocationProof>,
    pub(super) payments: Payments,
    /// Freezes since the last `take_freezes` (their proofs), and the blocks they released
    /// from the pending pool (accepted, in order).
    pub(super) new_proofs: Vec<EquivocationProof>,
    pub(super) released_by_freeze: Vec<BlockId>,
}

impl Ledger {
    /// A ledger where every account starts with `initial_credits`, with default bounds.
    pub fn new(initial_credits: u64) -> Ledger {
        Ledger::with_config(LedgerConfig { initial_credits, ..LedgerConfig::default() })
    }

    pub fn with_config(config: LedgerConfig) -> Ledger {
        Ledger {
            pending: PendingPool::new(config.max_pending_blocks, config.max_pending_per_account),
            payments: Payments::new(config.max_pending_payments),
            config,
            accounts: BTreeMap::new(),
            proofs: BTreeMap::new(),
            new_proofs: Vec::new(),
            released_by_freeze: Vec::new(),
        }
    }

    /// Validates `block` and adds it, holds it until what it needs arrives, or rejects it.
    pub fn insert(&mut self, block: Block) -> Result<Inserted, Rejected> {
        check_shape(&block)?;
        let id = block.id();
        // Gossip and anti-entropy deliver most blocks more than once: a copy of a held body
        // is known before the signature check, which costs most of an insert.
        let held = self.block(&id.account, id.seq).or_else(|| self.pending.get(&id));
        if held.is_some_and(|held| held.body_bytes() == block.body_bytes()) {
            return Ok(Inserted::Duplicate);
        }
        block.verify_signature()?;
        if let Some(held) = self.pending.get(&id) {
            let proof = EquivocationProof::new(held.clone(), block);
            self.freeze(proof.clone());
            return Ok(Inserted::Equivocation(Box::new(proof)));
        }
        match self.place(block)? {
            Placed::Accepted => {
                let (released, dropped) = self.release(id.account);
                Ok(Inserted::Accepted { released, dropped })
            }
            Placed::Pending(block, wait) => {
                self.pending.insert(block, wait)?;
                Ok(Inserted::Pending(wait))
            }
            Placed::Duplicate => Ok(Inserted::Duplicate),
            Placed::Equivocation(proof) => {
                self.freeze(proof.clone());
                Ok(Inserted::Equivocation(Box::new(proof)))
            }
        }
    }

    /// Checks a proof gossiped by another node and freezes the account. `Ok(false)`: the
    /// account was already frozen at or before that seq.
    pub fn apply_proof(&mut self, proof: EquivocationProof) -> Result<bool, ProofError> {
        proof.verify()?;
        Ok(self.freeze(proof))
    }

    /// Credits paid by `payer`'s blocks `after + 1 ..= upto` to `to`.
    pub(super) fn paid(&self, payer: &PeerId, to: &PeerId, after: u64, upto: u64) -> i128 {
        let Some(account) = self.accounts.get(payer) else { return 0 };
        let upto = upto.min(account.len());
        if after >= upto {
            return 0;
        }
        account.chain[after as usize..upto as usize].iter().map(|s| s.block.paid_to(to)).sum()
    }

    /// Places one block whose shape and signature were checked.
    fn place(&mut self, block: Block) -> Result<Placed, Rejected> {
        let head = self.head(&block.account);
        match check_next(&head, &block)? {
            Position::Held => {
                let held = self.block(&block.account, block.seq).expect("a seq at or below the head is held");
                if held.body_bytes() == block.body_bytes() {
                    Ok(Placed::Duplicate)
                } else {
                    Ok(Placed::Equivocation(EquivocationProof::new(held.clone(), block)))
                }
            }
            Position::Gap => Ok(Placed::Pending(block, Wait::Gap { head: head.seq })),
            Position::Next => {
                let me = block.account;
                let acks = self.accounts.get(&me).map(|a| a.acks.clone()).unwrap_or_default();
                let mut gain = 0;
                for dep in block.deps.clone() {
                    let before = acks.get(&dep.account).copied().unwrap_or(0);
                    if dep.seq <= before {
                        return Err(Rejected::BadDependency("not beyond its previous acknowledgement"));
                    }
                    let dep_head = self.head(&dep.account);
                    // Of a frozen account only the blocks before the fork count.
                    let needed = dep_head.frozen_from.map_or(dep.seq, |f| dep.seq.min(f - 1));
                    if dep_head.seq < needed {
                        return Ok(Placed::Pending(block, Wait::Dependency { account: dep.account, seq: needed }));
                    }
                    gain += self.paid(&dep.account, &me, before, needed);
                }
                let spendable = self.spendable(&me) + gain - block.total_out();
                if spendable < 0 {
                    return Err(Rejected::Overspend { spendable });
                }
                self.apply(block, gain);
                Ok(Placed::Accepted)
            }
        }
    }

    /// Adds a validated block to its chain and the balances it moves.
    fn apply(&mut self, block: Block, gain: i128) {
        for entry in &block.entries {
            self.accounts.entry(entry.to).or_default().received += i128::from(entry.amount);
        }
        let account = self.accounts.entry(block.account).or_default();
        for dep in &block.deps {
            account.acks.insert(dep.account, dep.seq);
        }
        account.acked += gain;
        account.sent += block.total_out();
        let hash = block.hash();
        account.chain.push(Stored { block, hash });
    }

    /// Retries the pending blocks that `account`'s advance (or freeze) may release, and those
    /// the released ones release in turn, until nothing moves. Iterative: no recursion depth
    /// a peer could choose.
    fn release(&mut self, account: PeerId) -> (Vec<BlockId>, Vec<(BlockId, Rejected)>) {
        let mut released = Vec::new();
        let mut dropped = Vec::new();
        let mut queue = VecDeque::from([account]);
        while let Some(account) = queue.pop_front() {
            let head = self.head(&account);
            let ready = if head.frozen_from.is_some() {
                self.pending.take_all_waiting_on(account)
            } else {
                self.pending.take_released(account, head.seq)
            };
            for block in ready {
                let id = block.id();
                match self.place(block) {
                    Ok(Placed::Accepted) => {
                        released.push(id);
                        queue.push_back(id.account);
                    }
                    Ok(Placed::Pending(block, wait)) => {
                        if let Err(reason) = self.pending.insert(block, wait) {
                            dropped.push((id, reason));
                        }
                    }
                    Ok(Placed::Duplicate) => {}
                    Ok(Placed::Equivocation(proof)) => {
                        self.freeze_only(proof);
                        queue.push_back(id.account);
                    }
                    Err(reason) => dropped.push((id, reason)),
                }
            }
        }
        (released, dropped)
    }

    /// Freezes the proof's account and releases what waited on it. Returns whether anything
    /// changed (an earlier freeze of the same account stands).
    fn freeze(&mut self, proof: EquivocationProof) -> bool {
        let account = proof.account();
        if !self.freeze_only(proof) {
            return false;
        }
        // Blocks that waited on the frozen account are placed now (only its blocks before the
        // fork count): accepted like any other, so whoever stores blocks must see them.
        let (released, _) = self.release(account);
        self.released_by_freeze.extend(released);
        true
    }

    /// The freezes since the last call (however they came: an insert, a proof, a pending
    /// block released into a fork) and the blocks they released from the pending pool, in
    /// the order they went in: what a store of the ledger must add after the blocks the
    /// inserts accepted.
    pub fn take_freezes(&mut self) -> (Vec<EquivocationProof>, Vec<BlockId>) {
        (std::mem::take(&mut self.new_proofs), std::mem::take(&mut self.released_by_freeze))
    }

    fn freeze_only(&mut self, proof: EquivocationProof) -> bool {
        let (peer, from) = (proof.account(), proof.seq());
        let account = self.accounts.entry(peer).or_default();
        if account.frozen_from.is_some_and(|f| f <= from) {
            return false;
        }
        account.frozen_from = Some(from);
        account.chain.truncate((from - 1) as usize);
        self.new_proofs.push(proof.clone());
        self.proofs.insert(peer, proof);
        self.pending.drop_from(peer, from);
        self.recompute();
        true
    }

    /// Rebuilds every balance (and acknowledgement) from the chains alone.
    pub(super) fn recompute(&mut self) {
        // Acknowledgements are part of the chain: voided blocks take theirs with them.
        for account in self.accounts.values_mut() {
            account.acks = BTreeMap::new();
            for stored in &account.chain {
                for dep in &stored.block.deps {
                    account.acks.insert(dep.account, dep.seq);
                }
            }
        }
        let mut received: BTreeMap<PeerId, i128> = BTreeMap::new();
        let mut acked: BTreeMap<PeerId, i128> = BTreeMap::new();
        for (peer, account) in &self.accounts {
            for stored in &account.chain {
                for entry in &stored.block.entries {
                    *received.entry(entry.to).or_default() += i128::from(entry.amount);
                }
            }
            let gain = account.acks.iter().map(|(payer, seq)| self.paid(payer, peer, 0, *seq)).sum();
            acked.insert(*peer, gain);
        }
        for (peer, account) in &mut self.accounts {
            account.sent = account.chain.iter().map(|s| s.block.total_out()).sum();
            account.received = received.get(peer).copied().unwrap_or(0);
            account.acked = acked.get(peer).copied().unwrap_or(0);
        }
        // An account known only from payments that are now void is not known at all, as on
        // a node that never saw them.
        self.accounts.retain(|_, a| !a.chain.is_empty() || a.frozen_from.is_some() || a.received != 0);
    }

    /// Test support: the incremental balances equal a rebuild, and no credit was created.
    #[cfg(test)]
    pub(super) fn assert_consistent(&self) {
        let rows = self.accounts();
        let total: i128 = rows.iter().map(|r| r.balance).sum();
        assert_eq!(total, i128::from(self.config.initial_credits) * rows.len() as i128, "credits conserved");
        let mut rebuilt = Ledger::with_config(self.config.clone());
        rebuilt.accounts = self
            .accounts
            .iter()
            .map(|(p, a)| {
                let copy = Account { chain: a.chain.clone(), frozen_from: a.frozen_from, ..Account::default() };
                (*p, copy)
            })
            .collect();
        rebuilt.recompute();
        assert_eq!(rebuilt.accounts(), rows, "incremental balances equal a rebuild");
    }
}
