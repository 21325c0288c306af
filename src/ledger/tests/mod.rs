//! Tests of the ledger core: one file per concern, shared helpers here.

mod block;
mod equivocation;
mod random;
mod state;
mod sync;
mod validate;

use libp2p::PeerId;
use libp2p::identity::Keypair;

use super::{Block, Dep, Entry, Hash, tasks_digest};

/// A deterministic key (the `n`-th test account).
pub(super) fn key(n: u8) -> Keypair {
    Keypair::ed25519_from_bytes([n.max(1); 32]).expect("32 bytes are an ed25519 secret")
}

pub(super) fn peer(n: u8) -> PeerId {
    key(n).public().to_peer_id()
}

pub(super) fn entry(to: PeerId, amount: u64, task: &str) -> Entry {
    Entry { to, amount, tasks: 1, tasks_digest: tasks_digest(&[task]) }
}

/// A block of `from` at `seq` after `prev`, paying `payments`.
pub(super) fn block(from: &Keypair, seq: u64, prev: Hash, deps: Vec<Dep>, payments: &[(PeerId, u64)]) -> Block {
    let entries =
        payments.iter().enumerate().map(|(i, (to, amount))| entry(*to, *amount, &format!("t{seq}.{i}"))).collect();
    Block::sign(from, seq, prev, deps, entries)
}
