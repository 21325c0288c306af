//! The ledger's blocks and equivocation proofs as this node holds them, so that a restarted
//! node keeps its ledger and fetches only what it lacks.
//!
//! Blocks are kept in the order the ledger accepted them (`Inserted::Accepted` hands out an
//! order in which every block follows what it builds on), under a running number: a restart
//! replays them in that order without needing the bounded pending pool. Proofs are kept per
//! account and replayed first, so that the voided blocks of a frozen account stay void.

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// Acceptance order -> encoded block.
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger_blocks");
/// Account (peer id bytes) -> encoded equivocation proof.
const PROOFS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ledger_proofs");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(BLOCKS)?;
    txn.open_table(PROOFS)?;
    Ok(())
}

/// What the store holds of the ledger, in replay order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub proofs: Vec<Vec<u8>>,
    pub blocks: Vec<Vec<u8>>,
}

/// The ledger's tables in the node's store; cheap to clone.
#[derive(Clone, Debug)]
pub struct LedgerStore {
    store: Store,
}

impl LedgerStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Everything held, proofs first, then blocks in acceptance order.
    pub fn load(&self) -> Result<Stored, StoreError> {
        let txn = self.store.db().begin_read().map_err(StoreError::from_redb)?;
        let mut stored = Stored::default();
        let proofs = txn.open_table(PROOFS).map_err(StoreError::from_redb)?;
        for row in proofs.iter().map_err(StoreError::from_redb)? {
            let (_, proof) = row.map_err(StoreError::from_redb)?;
            stored.proofs.push(proof.value().to_vec());
        }
        let blocks = txn.open_table(BLOCKS).map_err(StoreError::from_redb)?;
        for row in blocks.iter().map_err(StoreError::from_redb)? {
            let (_, block) = row.map_err(StoreError::from_redb)?;
            stored.blocks.push(block.value().to_vec());
        }
        Ok(stored)
    }

    /// Appends `blocks` (in acceptance order) and keeps `proofs` (account, proof), in one
    /// synced transaction: what the ledger accepted is on disk before it is gossiped on.
    pub fn append(&self, blocks: &[Vec<u8>], proofs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        if blocks.is_empty() && proofs.is_empty() {
            return Ok(());
        }
        let mut txn = self.store.db().begin_write().map_err(StoreError::from_redb)?;
        txn.set_durability(Durability::Immediate).map_err(|e| StoreError::Other(e.to_string()))?;
        {
            let mut table = txn.open_table(BLOCKS).map_err(StoreError::from_redb)?;
            let last = table.last().map_err(StoreError::from_redb)?.map(|(k, _)| k.value());
            for (key, block) in (last.map_or(0, |k| k + 1)..).zip(blocks) {
                table.insert(key, block.as_slice()).map_err(StoreError::from_redb)?;
            }
            let mut table = txn.open_table(PROOFS).map_err(StoreError::from_redb)?;
            for (account, proof) in proofs {
                table.insert(account.as_slice(), proof.as_slice()).map_err(StoreError::from_redb)?;
            }
        }
        txn.commit().map_err(StoreError::from_redb)
    }

    /// Blocks held (for the metric and the tests of what a restart re-fetches).
    pub fn block_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.store.db().begin_read().map_err(StoreError::from_redb)?;
        txn.open_table(BLOCKS).map_err(StoreError::from_redb)?.len().map_err(StoreError::from_redb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_back_in_the_order_they_went_in_and_proofs_first() {
        let store = LedgerStore::new(Store::in_memory());
        assert_eq!(store.load().unwrap(), Stored::default());
        store.append(&[b"b1".to_vec(), b"b2".to_vec()], &[]).unwrap();
        store.append(&[b"b0".to_vec()], &[(b"acct".to_vec(), b"proof".to_vec())]).unwrap();
        store.append(&[], &[(b"acct".to_vec(), b"proof2".to_vec())]).unwrap();
        let stored = store.load().unwrap();
        assert_eq!(stored.blocks, vec![b"b1".to_vec(), b"b2".to_vec(), b"b0".to_vec()]);
        assert_eq!(stored.proofs, vec![b"proof2".to_vec()]);
        assert_eq!(store.block_count().unwrap(), 3);
    }
}
