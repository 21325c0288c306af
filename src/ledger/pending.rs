//! The pending pool: blocks that arrived before what they build on (an earlier block of
//! their own account, or a block of another account they acknowledge). Bounded in all and
//! per account, so a peer cannot fill it with blocks from the future; what does not fit is
//! dropped and fetched again later by anti-entropy.
//!
//! Each held block is filed under the block it waits for; when an account's chain reaches
//! that block, `take_released` hands back what may now go in (the ledger retries each, and a
//! block that still lacks something is filed again).

use std::collections::{BTreeMap, BTreeSet};

use libp2p::PeerId;

use super::block::{Block, BlockId};
use super::validate::Rejected;

/// What a pending block waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Its account's blocks between `head + 1` and its own seq.
    Gap { head: u64 },
    /// The block `seq` of `account`, which it acknowledges.
    Dependency { account: PeerId, seq: u64 },
}

impl Wait {
    /// The block whose arrival may release the waiting one.
    fn key(&self, waiting: BlockId) -> BlockId {
        match *self {
            Wait::Gap { .. } => BlockId { account: waiting.account, seq: waiting.seq - 1 },
            Wait::Dependency { account, seq } => BlockId { account, seq },
        }
    }
}

#[derive(Debug)]
pub(super) struct PendingPool {
    blocks: BTreeMap<BlockId, (Block, Wait)>,
    /// The block each pending one waits for -> the pending ones.
    waiting_on: BTreeMap<BlockId, BTreeSet<BlockId>>,
    per_account: BTreeMap<PeerId, usize>,
    max_total: usize,
    max_per_account: usize,
}

impl PendingPool {
    pub(super) fn new(max_total: usize, max_per_account: usize) -> PendingPool {
        PendingPool {
            blocks: BTreeMap::new(),
            waiting_on: BTreeMap::new(),
            per_account: BTreeMap::new(),
            max_total,
            max_per_account,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.blocks.len()
    }

    pub(super) fn get(&self, id: &BlockId) -> Option<&Block> {
        self.blocks.get(id).map(|(block, _)| block)
    }

    /// Files `block` until what it waits for arrives.
    pub(super) fn insert(&mut self, block: Block, wait: Wait) -> Result<(), Rejected> {
        let id = block.id();
        if self.blocks.contains_key(&id) {
            return Ok(());
        }
        let count = self.per_account.get(&id.account).copied().unwrap_or(0);
        if self.blocks.len() >= self.max_total || count >= self.max_per_account {
            return Err(Rejected::PendingFull);
        }
        self.per_account.insert(id.account, count + 1);
        self.waiting_on.entry(wait.key(id)).or_default().insert(id);
        self.blocks.insert(id, (block, wait));
        Ok(())
    }

    fn remove(&mut self, id: &BlockId) -> Option<Block> {
        let (block, wait) = self.blocks.remove(id)?;
        let key = wait.key(*id);
        if let Some(set) = self.waiting_on.get_mut(&key) {
            set.remove(id);
            if set.is_empty() {
                self.waiting_on.remove(&key);
            }
        }
        if let Some(count) = self.per_account.get_mut(&id.account) {
            *count -= 1;
            if *count == 0 {
                self.per_account.remove(&id.account);
            }
        }
        Some(block)
    }

    /// Removes and returns the blocks waiting on any block of `account` up to `seq`.
    pub(super) fn take_released(&mut self, account: PeerId, seq: u64) -> Vec<Block> {
        let range = BlockId { account, seq: 0 }..=BlockId { account, seq };
        let ids: Vec<BlockId> = self.waiting_on.range(range).flat_map(|(_, set)| set.iter().copied()).collect();
        ids.iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Removes and returns every block waiting on anything of `account` (it was frozen: what
    /// waited on it is decided now).
    pub(super) fn take_all_waiting_on(&mut self, account: PeerId) -> Vec<Block> {
        self.take_released(account, u64::MAX)
    }

    /// Drops the blocks of `account` from `from` on (void: the account is frozen).
    pub(super) fn drop_from(&mut self, account: PeerId, from: u64) -> Vec<BlockId> {
        let range = BlockId { account, seq: from }..=BlockId { account, seq: u64::MAX };
        let ids: Vec<BlockId> = self.blocks.range(range).map(|(id, _)| *id).collect();
        ids.into_iter().filter(|id| self.remove(id).is_some()).collect()
    }

    /// Every wait, for asking peers for what is missing.
    pub(super) fn waits(&self) -> impl Iterator<Item = (BlockId, Wait)> + '_ {
        self.blocks.iter().map(|(id, (_, wait))| (*id, *wait))
    }
}
