//! Every rule a block must pass, each with its typed reason (and a label for metrics).
//!
//! The rules split by what they need: `check_shape` needs the block alone (bounds, zero
//! amounts, payments to self, dependencies that make no sense), `Block::verify_signature`
//! the block alone too, and `check_next` the account's current head. Balance and
//! dependency checks need the whole ledger and live in `state`; their reasons are here.
//!
//! What is not a rejection: a block already held (a duplicate: ignored and counted), a block
//! beyond the head + 1 (a gap) or one whose dependencies have not arrived (both wait in the
//! bounded pending pool), and a second block at a held sequence number (an equivocation).

use std::collections::BTreeSet;

use thiserror::Error;

use super::block::{Block, Hash, ZERO_HASH};
use super::{MAX_DEPS, MAX_ENTRIES};

/// Why a block was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejected {
    /// Does not decode, or a field has an impossible value (seq 0, an empty block).
    #[error("malformed block: {0}")]
    Malformed(&'static str),
    /// More entries, dependencies or bytes than a block may have.
    #[error("block too large")]
    Oversized,
    /// The account's peer id does not embed a public key that could sign for it.
    #[error("the account's peer id does not name a usable key")]
    KeyMismatch,
    #[error("bad signature")]
    BadSignature,
    /// `prev` is not the hash of the account's block at `seq - 1`.
    #[error("previous hash does not match the account's chain")]
    WrongPrev,
    /// After this block the account would have spent more than it holds.
    #[error("overspend: {spendable} credits spendable after the block")]
    Overspend { spendable: i128 },
    #[error("payment to the paying account itself")]
    SelfPayment,
    #[error("payment of zero credits")]
    ZeroAmount,
    /// A dependency on the account itself, twice on one account, or not beyond what the
    /// account's chain already acknowledged.
    #[error("bad dependency: {0}")]
    BadDependency(&'static str),
    /// The account equivocated at `from`: its blocks from there on are void.
    #[error("account frozen from seq {from}")]
    Frozen { from: u64 },
    /// The block would have to wait, and the pending pool is full.
    #[error("pending pool full")]
    PendingFull,
}

impl Rejected {
    /// Label for the rejected-blocks metric.
    pub fn label(&self) -> &'static str {
        match self {
            Rejected::Malformed(_) => "malformed",
            Rejected::Oversized => "oversized",
            Rejected::KeyMismatch => "key_mismatch",
            Rejected::BadSignature => "bad_signature",
            Rejected::WrongPrev => "wrong_prev",
            Rejected::Overspend { .. } => "overspend",
            Rejected::SelfPayment => "self_payment",
            Rejected::ZeroAmount => "zero_amount",
            Rejected::BadDependency(_) => "bad_dependency",
            Rejected::Frozen { .. } => "frozen",
            Rejected::PendingFull => "pending_full",
        }
    }

    /// Whether the sender is to blame (score it down) or the block may be fine and only
    /// this node could not take it now.
    pub fn blames_sender(&self) -> bool {
        !matches!(self, Rejected::PendingFull | Rejected::Frozen { .. })
    }
}

/// The rules that need the block alone, signature aside.
pub fn check_shape(block: &Block) -> Result<(), Rejected> {
    if block.entries.len() > MAX_ENTRIES || block.deps.len() > MAX_DEPS {
        return Err(Rejected::Oversized);
    }
    if block.seq == 0 {
        return Err(Rejected::Malformed("seq 0"));
    }
    if block.entries.is_empty() && block.deps.is_empty() {
        return Err(Rejected::Malformed("empty block"));
    }
    let mut total: u64 = 0;
    for entry in &block.entries {
        if entry.to == block.account {
            return Err(Rejected::SelfPayment);
        }
        if entry.amount == 0 {
            return Err(Rejected::ZeroAmount);
        }
        // Bounded so that every sum the ledger keeps fits comfortably.
        total = total.checked_add(entry.amount).ok_or(Rejected::Malformed("amounts overflow"))?;
    }
    let mut seen = BTreeSet::new();
    for dep in &block.deps {
        if dep.account == block.account {
            return Err(Rejected::BadDependency("on its own account"));
        }
        if dep.seq == 0 {
            return Err(Rejected::BadDependency("seq 0"));
        }
        if !seen.insert(dep.account) {
            return Err(Rejected::BadDependency("one account twice"));
        }
    }
    Ok(())
}

/// Where an account's chain stands, as far as the next block is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    pub seq: u64,
    /// Hash of the block at `seq`; [`ZERO_HASH`] before the first block.
    pub hash: Hash,
    pub frozen_from: Option<u64>,
}

/// Where a block stands against its account's head.
#[derive(Debug, PartialEq, Eq)]
pub enum Position {
    /// At or below the head: a duplicate or an equivocation, by comparing with the block held.
    Held,
    /// Exactly the next block, with the right `prev`.
    Next,
    /// Beyond the next: wait for the blocks between.
    Gap,
}

/// Checks a block's place in its account's chain: frozen accounts take nothing from their
/// fork point on, and the next block must link to the head.
pub fn check_next(head: &Head, block: &Block) -> Result<Position, Rejected> {
    if let Some(from) = head.frozen_from
        && block.seq >= from
    {
        return Err(Rejected::Frozen { from });
    }
    if block.seq <= head.seq {
        return Ok(Position::Held);
    }
    if block.seq > head.seq + 1 {
        return Ok(Position::Gap);
    }
    let expected = if head.seq == 0 { ZERO_HASH } else { head.hash };
    if block.prev != expected {
        return Err(Rejected::WrongPrev);
    }
    Ok(Position::Next)
}
