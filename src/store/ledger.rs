//! The ledger as this node accepted it, so that a restarted node keeps its ledger and fetches
//! only what it lacks.
//!
//! One append-only sequence under a running number: each entry a block or an equivocation
//! proof in its gossip encoding (`crate::ledger::wire::Gossiped`), in the order the ledger took
//! them in. A restart replays the sequence in that order, so it rebuilds exactly the ledger the
//! node had: a block accepted before a freeze is replayed before it, one a freeze released is
//! replayed after it, and nothing needs the bounded pending pool.

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// Acceptance order -> encoded block or proof.
const LEDGER: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(LEDGER)?;
    Ok(())
}

/// The ledger's table in the node's store; cheap to clone.
#[derive(Clone, Debug)]
pub struct LedgerStore {
    store: Store,
}

impl LedgerStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Every entry held, in the order it was appended.
    pub fn load(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.store.db().begin_read().map_err(StoreError::from_redb)?;
        let table = txn.open_table(LEDGER).map_err(StoreError::from_redb)?;
        let mut entries = Vec::new();
        for row in table.iter().map_err(StoreError::from_redb)? {
            let (_, entry) = row.map_err(StoreError::from_redb)?;
            entries.push(entry.value().to_vec());
        }
        Ok(entries)
    }

    /// Appends `entries` in order, in one synced transaction: what the ledger accepted is on
    /// disk before it is passed on.
    pub fn append(&self, entries: &[Vec<u8>]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut txn = self.store.db().begin_write().map_err(StoreError::from_redb)?;
        txn.set_durability(Durability::Immediate).map_err(|e| StoreError::Other(e.to_string()))?;
        {
            let mut table = txn.open_table(LEDGER).map_err(StoreError::from_redb)?;
            let last = table.last().map_err(StoreError::from_redb)?.map(|(k, _)| k.value());
            for (key, entry) in (last.map_or(0, |k| k + 1)..).zip(entries) {
                table.insert(key, entry.as_slice()).map_err(StoreError::from_redb)?;
            }
        }
        txn.commit().map_err(StoreError::from_redb)
    }

    /// Entries held.
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.store.db().begin_read().map_err(StoreError::from_redb)?;
        txn.open_table(LEDGER).map_err(StoreError::from_redb)?.len().map_err(StoreError::from_redb)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_in_the_order_they_went_in() {
        let store = LedgerStore::new(Store::in_memory());
        assert!(store.is_empty().unwrap());
        store.append(&[b"b1".to_vec(), b"b2".to_vec()]).unwrap();
        store.append(&[b"proof".to_vec(), b"b0".to_vec()]).unwrap();
        store.append(&[]).unwrap();
        assert_eq!(store.load().unwrap(), vec![b"b1".to_vec(), b"b2".to_vec(), b"proof".to_vec(), b"b0".to_vec()]);
        assert_eq!(store.len().unwrap(), 4);
    }
}
