//! The DHT's records on disk, so that a value stored with `storage put` outlives a restart
//! of the nodes holding it.
//!
//! [`DhtStore`] is the Kademlia record store: reads are served from libp2p's `MemoryStore`
//! (its limits, its provider records, which their providers announce again anyway), and
//! every record put or removed is also written to the node's database by a writer thread, so
//! the swarm's event loop never waits for a disk. On start the records held before are
//! loaded back; expired ones are dropped.

use std::borrow::Cow;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig, RecordStore};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// Record key bytes -> (value, publisher's peer id bytes, expiry in ms since the epoch): the
/// expiry is wall-clock time, as an `Instant` means nothing after a restart.
/// (value, publisher, expires at).
type StoredValue<'a> = (&'a [u8], Option<&'a [u8]>, Option<u64>);
const RECORDS: TableDefinition<&[u8], StoredValue<'static>> = TableDefinition::new("dht_records");

/// Writes taken into one commit at most.
const MAX_GROUP: usize = 256;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(RECORDS)?;
    Ok(())
}

/// A record as written to disk.
struct StoredRecord {
    key: Vec<u8>,
    value: Vec<u8>,
    publisher: Option<Vec<u8>>,
    expires_unix_ms: Option<u64>,
}

enum Job {
    Put(StoredRecord),
    Remove(Vec<u8>),
}

/// Kademlia's record store, written through to the node's database.
pub struct DhtStore {
    memory: MemoryStore,
    /// `None` when the node keeps nothing on disk (tests on the memory transport).
    writes: Option<std_mpsc::Sender<Job>>,
}

impl DhtStore {
    /// Loads what `store` holds and starts the writer thread. Records that cannot be read
    /// back are skipped with a warning: the node still starts, without them.
    pub fn open(peer_id: PeerId, config: MemoryStoreConfig, store: Option<&Store>) -> Self {
        let mut memory = MemoryStore::with_config(peer_id, config);
        let Some(store) = store else {
            return DhtStore { memory, writes: None };
        };
        match load(store, &mut memory) {
            Ok((loaded, dropped)) if loaded + dropped > 0 => {
                tracing::info!(loaded, expired = dropped, "DHT records loaded from the store");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "DHT records could not be loaded from the store"),
        }
        let (tx, rx) = std_mpsc::channel();
        let writer = store.clone();
        std::thread::Builder::new()
            .name("dht-store".into())
            .spawn(move || write_loop(&writer, &rx))
            .expect("the dht-store thread starts");
        DhtStore { memory, writes: Some(tx) }
    }

    fn send(&self, job: Job) {
        if let Some(tx) = &self.writes {
            let _ = tx.send(job);
        }
    }
}

impl RecordStore for DhtStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.memory.get(k)
    }

    fn put(&mut self, r: Record) -> libp2p::kad::store::Result<()> {
        let stored = encode(&r);
        self.memory.put(r)?;
        self.send(Job::Put(stored));
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        self.memory.remove(k);
        self.send(Job::Remove(k.to_vec()));
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.memory.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> libp2p::kad::store::Result<()> {
        self.memory.add_provider(record)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.memory.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.memory.provided()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        self.memory.remove_provider(k, p)
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn encode(r: &Record) -> StoredRecord {
    let expires_unix_ms = r.expires.map(|at| {
        let left = at.saturating_duration_since(Instant::now());
        unix_ms(SystemTime::now()).saturating_add(left.as_millis() as u64)
    });
    StoredRecord {
        key: r.key.to_vec(),
        value: r.value.clone(),
        publisher: r.publisher.map(|p| p.to_bytes()),
        expires_unix_ms,
    }
}

/// The record, or why it cannot be used: `Ok(None)` when it has expired.
fn decode(stored: StoredRecord, now_ms: u64) -> Result<Option<Record>, String> {
    let expires = match stored.expires_unix_ms {
        Some(at) if at <= now_ms => return Ok(None),
        Some(at) => Some(Instant::now() + Duration::from_millis(at - now_ms)),
        None => None,
    };
    let publisher =
        stored.publisher.map(|p| PeerId::from_bytes(&p).map_err(|e| format!("publisher: {e}"))).transpose()?;
    Ok(Some(Record { key: RecordKey::from(stored.key), value: stored.value, publisher, expires }))
}

/// Puts every stored record that has not expired into `memory` and deletes the others;
/// returns (loaded, dropped).
fn load(store: &Store, memory: &mut MemoryStore) -> Result<(usize, usize), StoreError> {
    let now_ms = unix_ms(SystemTime::now());
    let mut stale = Vec::new();
    let mut loaded = 0;
    {
        let txn = store.db().begin_read().map_err(StoreError::from_redb)?;
        let table = txn.open_table(RECORDS).map_err(StoreError::from_redb)?;
        for item in table.iter().map_err(StoreError::from_redb)? {
            let (k, v) = item.map_err(StoreError::from_redb)?;
            let key = k.value().to_vec();
            let (value, publisher, expires_unix_ms) = v.value();
            let stored = StoredRecord {
                key: key.clone(),
                value: value.to_vec(),
                publisher: publisher.map(<[u8]>::to_vec),
                expires_unix_ms,
            };
            match decode(stored, now_ms) {
                Ok(Some(record)) => match memory.put(record) {
                    Ok(()) => loaded += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "a stored DHT record no longer fits the store's limits");
                        stale.push(key);
                    }
                },
                Ok(None) => stale.push(key),
                Err(e) => {
                    tracing::warn!(error = %e, "a stored DHT record cannot be decoded; dropped");
                    stale.push(key);
                }
            }
        }
    }
    let dropped = stale.len();
    if !stale.is_empty() {
        commit(store, stale.into_iter().map(Job::Remove).collect())?;
    }
    Ok((loaded, dropped))
}

fn write_loop(store: &Store, jobs: &std_mpsc::Receiver<Job>) {
    while let Some(group) = super::next_group(jobs, MAX_GROUP) {
        let n = group.len();
        if let Err(e) = commit(store, group) {
            // The records stay served from memory; only their copy on disk is missing.
            tracing::warn!(error = %e, records = n, "DHT records could not be written to the store");
        }
    }
}

fn commit(store: &Store, group: Vec<Job>) -> Result<(), StoreError> {
    let mut txn = store.db().begin_write().map_err(StoreError::from_redb)?;
    txn.set_durability(Durability::Immediate).map_err(|e| StoreError::Other(e.to_string()))?;
    {
        let mut table = txn.open_table(RECORDS).map_err(StoreError::from_redb)?;
        for job in group {
            match job {
                Job::Put(r) => table
                    .insert(r.key.as_slice(), (r.value.as_slice(), r.publisher.as_deref(), r.expires_unix_ms))
                    .map(drop),
                Job::Remove(k) => table.remove(k.as_slice()).map(drop),
            }
            .map_err(StoreError::from_redb)?;
        }
    }
    txn.commit().map_err(StoreError::from_redb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MemoryStoreConfig {
        MemoryStoreConfig { max_records: 8, max_value_bytes: 64, ..Default::default() }
    }

    /// Waits until the writer thread has written `n` records (bounded).
    fn stored(store: &Store) -> usize {
        let txn = store.db().begin_read().unwrap();
        txn.open_table(RECORDS).unwrap().iter().unwrap().count()
    }

    fn settle(store: &Store, n: usize) {
        for _ in 0..500 {
            if stored(store) == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the store holds {} records, expected {n}", stored(store));
    }

    #[test]
    fn records_put_are_loaded_again_and_removed_ones_are_not() {
        let store = Store::in_memory();
        let me = PeerId::random();
        let publisher = PeerId::random();
        {
            let mut dht = DhtStore::open(me, config(), Some(&store));
            let mut kept = Record::new(RecordKey::new(&"colour"), b"blue".to_vec());
            kept.publisher = Some(publisher);
            kept.expires = Some(Instant::now() + Duration::from_secs(3600));
            dht.put(kept).unwrap();
            dht.put(Record::new(RecordKey::new(&"forever"), b"x".to_vec())).unwrap();
            dht.put(Record::new(RecordKey::new(&"gone"), b"y".to_vec())).unwrap();
            dht.remove(&RecordKey::new(&"gone"));
            settle(&store, 2);
        }
        let dht = DhtStore::open(me, config(), Some(&store));
        let colour = dht.get(&RecordKey::new(&"colour")).expect("reloaded");
        assert_eq!(colour.value, b"blue");
        assert_eq!(colour.publisher, Some(publisher));
        let left = colour.expires.expect("expiry kept").saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600), "{left:?}");
        assert_eq!(dht.get(&RecordKey::new(&"forever")).unwrap().expires, None);
        assert!(dht.get(&RecordKey::new(&"gone")).is_none());
        assert_eq!(dht.records().count(), 2);
    }

    #[test]
    fn expired_and_unreadable_records_are_dropped_at_load() {
        let store = Store::in_memory();
        let me = PeerId::random();
        let expired =
            StoredRecord { key: b"old".to_vec(), value: b"v".to_vec(), publisher: None, expires_unix_ms: Some(1) };
        let bad_publisher = StoredRecord {
            key: b"bad".to_vec(),
            value: b"v".to_vec(),
            publisher: Some(vec![0xff]),
            expires_unix_ms: None,
        };
        let ok = encode(&Record::new(RecordKey::new(&"ok"), b"v".to_vec()));
        commit(&store, vec![Job::Put(expired), Job::Put(bad_publisher), Job::Put(ok)]).unwrap();
        let dht = DhtStore::open(me, config(), Some(&store));
        assert_eq!(dht.records().count(), 1);
        assert!(dht.get(&RecordKey::new(&"ok")).is_some());
        assert_eq!(stored(&store), 1, "the expired record and the one with a bad publisher are deleted");
    }

    #[test]
    fn a_record_over_the_limits_is_refused_and_not_written() {
        let store = Store::in_memory();
        let mut dht = DhtStore::open(PeerId::random(), config(), Some(&store));
        let big = Record::new(RecordKey::new(&"big"), vec![0; 64]);
        assert!(dht.put(big).is_err());
        dht.put(Record::new(RecordKey::new(&"small"), vec![0; 63])).unwrap();
        settle(&store, 1);
    }
}
