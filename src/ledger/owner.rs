//! The owner's side: payments this node owes wait in a bounded pool, and `seal` turns them
//! into the next block of its own chain, aggregated per recipient, acknowledging whatever it
//! has been paid that its chain has not acknowledged yet (the credits it may then spend).
//!
//! Payments are sealed first come, first served: when the next one is not covered, sealing
//! stops there and the rest waits for credits to arrive. A payment to the node itself (a
//! task it ran for itself) moves nothing and is dropped at sealing.

use std::collections::{BTreeMap, VecDeque};

use libp2p::PeerId;
use libp2p::identity::Keypair;
use thiserror::Error;

use super::block::{Block, Dep, Entry, tasks_digest};
use super::state::{Inserted, Ledger};
use super::{MAX_DEPS, MAX_ENTRIES};

/// One payment owed, for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub to: PeerId,
    pub amount: u64,
    pub task: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PayError {
    #[error("payment of zero credits")]
    ZeroAmount,
    #[error("too many payments waiting to be sealed")]
    Full,
}

/// A block this node sealed, with the task ids each entry covers (same order as
/// `block.entries`), for the task records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub block: Block,
    pub tasks: Vec<Vec<String>>,
}

#[derive(Debug)]
pub(super) struct Payments {
    queue: VecDeque<Payment>,
    max: usize,
    /// Sum of the amounts in `queue`.
    owed: i128,
}

impl Payments {
    pub(super) fn new(max: usize) -> Payments {
        Payments { queue: VecDeque::new(), max, owed: 0 }
    }
}

impl Ledger {
    /// Queues a payment for the next sealed block.
    pub fn pay(&mut self, to: PeerId, amount: u64, task: impl Into<String>) -> Result<(), PayError> {
        if amount == 0 {
            return Err(PayError::ZeroAmount);
        }
        if self.payments.queue.len() >= self.payments.max {
            return Err(PayError::Full);
        }
        self.payments.queue.push_back(Payment { to, amount, task: task.into() });
        self.payments.owed += i128::from(amount);
        Ok(())
    }

    /// Credits owed by the payments waiting to be sealed.
    pub fn owed(&self) -> i128 {
        self.payments.owed
    }

    /// Payments waiting to be sealed.
    pub fn pending_payments(&self) -> usize {
        self.payments.queue.len()
    }

    /// Seals the next block of `keypair`'s account from the waiting payments it can cover,
    /// adds it to this ledger and returns it (to gossip). `None`: nothing to seal, nothing
    /// covered, or the account is frozen.
    pub fn seal(&mut self, keypair: &Keypair) -> Option<Sealed> {
        let (sealed, taken) = self.prepare_seal(keypair)?;
        self.commit_seal(&sealed, taken).then_some(sealed)
    }

    /// Adds a block `prepare_seal` made (once it is durable) and drops the `taken` payments
    /// it covers from the front of the queue (those queued since stay). False: it did not go
    /// in, and the payments stay queued.
    pub fn commit_seal(&mut self, sealed: &Sealed, taken: usize) -> bool {
        match self.insert(sealed.block.clone()) {
            Ok(Inserted::Accepted { .. }) => {
                let paid: i128 = self.payments.queue.drain(..taken).map(|p| i128::from(p.amount)).sum();
                self.payments.owed -= paid;
                true
            }
            // Built from this ledger's own state, the block always goes in (no other block
            // of this account is inserted between prepare and commit: only the owner seals).
            _ => false,
        }
    }

    /// Builds and signs the next block of `keypair`'s account from the waiting payments it
    /// can cover, without adding it to the ledger: the caller stores it first, then
    /// `commit_seal`s it, so that a block is never seen before it is durable. Returns the
    /// block and how many queued payments it covers.
    pub fn prepare_seal(&mut self, keypair: &Keypair) -> Option<(Sealed, usize)> {
        let me = keypair.public().to_peer_id();
        let head = self.head(&me);
        if head.frozen_from.is_some() {
            return None;
        }
        self.payments.queue.retain(|p| p.to != me);
        self.payments.owed = self.payments.queue.iter().map(|p| i128::from(p.amount)).sum();

        let acks = self.accounts.get(&me).map(|a| a.acks.clone()).unwrap_or_default();
        let mut deps = Vec::new();
        let mut gain = 0;
        for (payer, account) in &self.accounts {
            if deps.len() == MAX_DEPS {
                break;
            }
            let before = acks.get(payer).copied().unwrap_or(0);
            let upto = account.chain.len() as u64;
            let paid = if *payer == me || upto <= before { 0 } else { self.paid(payer, &me, before, upto) };
            if paid > 0 {
                deps.push(Dep { account: *payer, seq: upto });
                gain += paid;
            }
        }

        let mut spendable = self.spendable(&me) + gain;
        let mut groups: BTreeMap<PeerId, (u64, Vec<String>)> = BTreeMap::new();
        let mut taken = 0;
        for payment in &self.payments.queue {
            let amount = i128::from(payment.amount);
            if amount > spendable || (!groups.contains_key(&payment.to) && groups.len() == MAX_ENTRIES) {
                break;
            }
            let group = groups.entry(payment.to).or_default();
            let (Some(sum), true) = (group.0.checked_add(payment.amount), group.1.len() < u32::MAX as usize) else {
                break;
            };
            group.0 = sum;
            group.1.push(payment.task.clone());
            spendable -= amount;
            taken += 1;
        }
        // Groups emptied by an early `break` carry nothing.
        groups.retain(|_, (amount, _)| *amount > 0);
        if groups.is_empty() {
            return None;
        }

        let mut entries = Vec::with_capacity(groups.len());
        let mut tasks = Vec::with_capacity(groups.len());
        for (to, (amount, ids)) in groups {
            entries.push(Entry { to, amount, tasks: ids.len() as u32, tasks_digest: tasks_digest(&ids) });
            tasks.push(ids);
        }
        let block = Block::sign(keypair, head.seq + 1, head.hash, deps, entries);
        Some((Sealed { block, tasks }, taken))
    }
}
