//! What the ledger shows: heads and the digest for anti-entropy, ranges of blocks to
//! serve, what the pending pool waits for, balances and account rows for the API.

use std::collections::BTreeMap;

use libp2p::PeerId;
use sha2::{Digest, Sha256};

use super::MAX_RANGE_BLOCKS;
use super::block::{Block, Hash, ZERO_HASH};
use super::equivocation::EquivocationProof;
use super::pending::Wait;
use super::state::{AccountRow, Ledger};
use super::validate::Head;

impl Ledger {
    /// Where `peer`'s chain stands here.
    pub fn head(&self, peer: &PeerId) -> Head {
        match self.accounts.get(peer) {
            None => Head { seq: 0, hash: ZERO_HASH, frozen_from: None },
            Some(a) => {
                Head { seq: a.len(), hash: a.chain.last().map_or(ZERO_HASH, |s| s.hash), frozen_from: a.frozen_from }
            }
        }
    }

    /// Every account with a chain or a freeze, and its head seq: what anti-entropy compares.
    pub fn heads(&self) -> Vec<(PeerId, u64)> {
        self.accounts
            .iter()
            .filter(|(_, a)| !a.chain.is_empty() || a.frozen_from.is_some())
            .map(|(p, a)| (*p, a.len()))
            .collect()
    }

    /// SHA-256 over every account's (peer, head seq, head hash, frozen_from or 0), sorted by
    /// the peer id's bytes. Chains are hash-linked and balances follow from the chains and
    /// the freezes, so equal digests mean equal ledgers.
    pub fn digest(&self) -> Hash {
        let mut rows: Vec<(Vec<u8>, Head)> = self
            .accounts
            .iter()
            .filter(|(_, a)| !a.chain.is_empty() || a.frozen_from.is_some())
            .map(|(p, _)| (p.to_bytes(), self.head(p)))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut h = Sha256::new();
        for (peer, head) in rows {
            h.update([peer.len() as u8]);
            h.update(&peer);
            h.update(head.seq.to_be_bytes());
            h.update(head.hash);
            h.update(head.frozen_from.unwrap_or(0).to_be_bytes());
        }
        h.finalize().into()
    }

    /// Credits of `peer`: initial + every payment to it held here - what it paid.
    pub fn balance(&self, peer: &PeerId) -> i128 {
        let initial = i128::from(self.config.initial_credits);
        self.accounts.get(peer).map_or(initial, |a| initial + a.received - a.sent)
    }

    /// What `peer` may still spend: like the balance, counting only the payments its own
    /// chain acknowledged.
    pub fn spendable(&self, peer: &PeerId) -> i128 {
        let initial = i128::from(self.config.initial_credits);
        self.accounts.get(peer).map_or(initial, |a| initial + a.acked - a.sent)
    }

    /// Every account known here (a chain of its own, or paid by one), sorted by peer id.
    pub fn accounts(&self) -> Vec<AccountRow> {
        self.accounts.keys().map(|p| self.row(p)).collect()
    }

    pub fn row(&self, peer: &PeerId) -> AccountRow {
        let head = self.head(peer);
        AccountRow {
            peer: *peer,
            balance: self.balance(peer),
            spendable: self.spendable(peer),
            seq: head.seq,
            frozen_from: head.frozen_from,
        }
    }

    /// The ranges to fetch from a peer that reported `remote_heads`: each account's blocks
    /// beyond ours up to theirs (never past a freeze), inclusive.
    pub fn missing_ranges(&self, remote_heads: &[(PeerId, u64)]) -> Vec<(PeerId, u64, u64)> {
        let mut out = Vec::new();
        for (peer, remote) in remote_heads {
            let head = self.head(peer);
            let cap = head.frozen_from.map_or(u64::MAX, |f| f - 1);
            let to = (*remote).min(cap);
            if to > head.seq {
                out.push((*peer, head.seq + 1, to));
            }
        }
        out
    }

    /// What the pending pool waits for, as ranges to fetch from anyone: the gap before each
    /// pending block, and each missing dependency.
    pub fn wanted(&self) -> Vec<(PeerId, u64, u64)> {
        let mut ranges: BTreeMap<PeerId, (u64, u64)> = BTreeMap::new();
        for (id, wait) in self.pending.waits() {
            let (peer, to) = match wait {
                Wait::Gap { .. } => (id.account, id.seq - 1),
                Wait::Dependency { account, seq } => (account, seq),
            };
            let from = self.head(&peer).seq + 1;
            if to >= from {
                let range = ranges.entry(peer).or_insert((from, to));
                range.1 = range.1.max(to);
            }
        }
        ranges.into_iter().map(|(p, (from, to))| (p, from, to)).collect()
    }

    /// Blocks `from..=to` of `peer` held here, at most `MAX_RANGE_BLOCKS`, to serve a range.
    pub fn blocks(&self, peer: &PeerId, from: u64, to: u64) -> Vec<Block> {
        let Some(account) = self.accounts.get(peer) else { return Vec::new() };
        let from = from.max(1);
        let to = to.min(account.len()).min(from.saturating_add(MAX_RANGE_BLOCKS as u64 - 1));
        if from > to {
            return Vec::new();
        }
        account.chain[(from - 1) as usize..to as usize].iter().map(|s| s.block.clone()).collect()
    }

    pub fn block(&self, peer: &PeerId, seq: u64) -> Option<&Block> {
        let index = usize::try_from(seq.checked_sub(1)?).ok()?;
        self.accounts.get(peer)?.chain.get(index).map(|s| &s.block)
    }

    /// The proofs of every frozen account.
    pub fn proofs(&self) -> impl Iterator<Item = &EquivocationProof> {
        self.proofs.values()
    }

    pub fn pending_blocks(&self) -> usize {
        self.pending.len()
    }
}
