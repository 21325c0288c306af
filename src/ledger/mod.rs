//! The credit ledger. Its pure core: blocks, validation, equivocation, balances, and the
//! state machine that holds them (`block`, `validate`, `equivocation`, `pending`, `state`,
//! `owner`, `views`), with no networking. Around it, the node's side: [`service`] feeds
//! blocks in (from gossip, anti-entropy, the store) and sends out what `seal` and `insert`
//! hand back; [`sync`] is anti-entropy; [`wire`] what both put on the wire.
//!
//! The model, after Guerraoui et al., "The consensus number of a cryptocurrency" (PODC
//! 2019): each account (a peer id) is a hash-linked chain of signed blocks that only its
//! owner can extend, so double spending needs no consensus, only that every node sees each
//! account's one chain; a second block at one seq is an equivocation that freezes the account.
//!
//! Credits, precisely:
//! - every account starts with `initial_credits` (config; in an open network anyone can
//!   mint identities and so credits: a private cluster with a pre-shared key bounds that);
//! - a block's entries move credits from its account to others: `sent` is their sum over
//!   the account's chain;
//! - `received` is every payment to the account in the blocks this ledger holds, and
//!   `balance = initial + received - sent` is what is shown: the balances of all accounts
//!   sum to `initial × accounts` (credits are moved, never created);
//! - to spend what it received, an account acknowledges the payers' blocks: a dependency
//!   `(payer, seq)` in its block covers the payer's blocks `1..=seq`. `acked` is the
//!   payments to it in the blocks so acknowledged, and a block is valid only if afterwards
//!   `spendable = initial + acked - sent >= 0`. Whether a block is valid is thus decided by
//!   the chains it names, the same on every node whatever it holds besides;
//! - equivocation at seq `f` voids the account's blocks `f..`: they neither send nor pay,
//!   and acknowledgements of them count only up to `f - 1`. An honest account that had
//!   spent credits from a voided block may go below zero: the cost of having trusted an
//!   equivocator's block before the fork was known (see `equivocation`).

mod block;
mod equivocation;
mod owner;
mod pending;
pub mod service;
mod state;
pub mod sync;
mod validate;
mod views;
pub mod wire;

#[cfg(test)]
mod tests;

pub use block::{Block, BlockId, Dep, Entry, Hash, SIGNING_DOMAIN, ZERO_HASH, account_key, tasks_digest};
pub use equivocation::{EquivocationProof, ProofError};
pub use owner::{PayError, Payment, Sealed};
pub use pending::Wait;
pub use service::{LedgerHandle, LedgerService};
pub use state::{AccountRow, Inserted, Ledger};
pub use validate::{Head, Rejected};

/// Most entries (recipients) in one block.
pub const MAX_ENTRIES: usize = 512;
/// Most dependencies in one block.
pub const MAX_DEPS: usize = 256;
/// Largest encoded block; the bounds above keep a valid block below it.
pub const MAX_BLOCK_BYTES: usize = 64 * 1024;
/// Most blocks `Ledger::blocks` serves in one range.
pub const MAX_RANGE_BLOCKS: usize = 512;

/// The ledger's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Credits every account starts with.
    pub initial_credits: u64,
    /// Blocks held waiting for earlier ones, in all and per account.
    pub max_pending_blocks: usize,
    pub max_pending_per_account: usize,
    /// Payments owed by this node waiting to be sealed.
    pub max_pending_payments: usize,
}

impl Default for LedgerConfig {
    fn default() -> LedgerConfig {
        LedgerConfig {
            initial_credits: 1_000,
            max_pending_blocks: 4096,
            max_pending_per_account: 1024,
            max_pending_payments: 100_000,
        }
    }
}
