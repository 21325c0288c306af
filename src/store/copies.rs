//! Copies of other gateways' task records (`tasks.record_copies`): what this node keeps so
//! that a task outlives the permanent loss of the gateway that accepted it.
//!
//! Copies arrive in batches from their owners and are acknowledged as soon as they are
//! queued here (as Kafka's followers do): the owner holds the record too, so one crash of
//! either side loses nothing, and neither waits for the other's disk. For the same reason the
//! writer syncs them at most every [`SYNC_EVERY`] (redb's non-durable commits in between), so
//! that the copies of a busy gateway do not compete with its own syncs for the disk. The
//! writer thread commits them in groups, keeping for each task only the newest version: the highest
//! (epoch, seq), so that batches overtaking each other on the wire never roll a copy back and
//! a deposed owner never overwrites its adopter.
//!
//! Indexes: unfinished copies by owner (what an adoption reads), final ones by finish time
//! (what pruning walks), and the tasks this node adopted (what fences their old owner).

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use tokio::sync::oneshot;

use crate::protocol::{MINE_PAGE_BYTES, RecordCopy};

/// id -> [`Row`] (CBOR).
const COPIES: TableDefinition<&str, &[u8]> = TableDefinition::new("copies");
/// (owner, id): unfinished copies.
const OPEN: TableDefinition<(&str, &str), ()> = TableDefinition::new("copies_open");
/// (finished at, ms since the epoch; id).
const FINISHED: TableDefinition<(u64, &str), ()> = TableDefinition::new("copies_finished");
/// id -> (epoch, adopted at ms): tasks this node adopted from a lost owner.
const ADOPTED: TableDefinition<&str, (u32, u64)> = TableDefinition::new("copies_adopted");

const MAX_GROUP: usize = 256;
/// Copies are synced to disk at most this often (and this long after the last change at most).
const SYNC_EVERY: Duration = Duration::from_millis(200);
/// Rows deleted per pruning pass.
const PRUNE_STEP: usize = 5_000;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(COPIES)?;
    txn.open_table(OPEN)?;
    txn.open_table(FINISHED)?;
    txn.open_table(ADOPTED)?;
    Ok(())
}

/// A copy as kept: whose it is, and the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub owner: String,
    pub copy: RecordCopy,
}

enum Job {
    Keep {
        owner: String,
        copies: Vec<RecordCopy>,
    },
    /// This node took the task over at `epoch`: the copy is no longer anyone else's to adopt.
    Adopted {
        id: String,
        owner: String,
        epoch: u32,
        at_ms: u64,
    },
    Prune {
        before_ms: u64,
    },
    /// A page of `owner`'s unfinished copies, read after every job queued before it.
    Page {
        owner: String,
        after: Option<String>,
        reply: oneshot::Sender<Page>,
    },
}

/// Up to [`MINE_PAGE_BYTES`] of an owner's unfinished copies, in id order, and the id to
/// continue after when more are left.
pub type Page = Result<(Vec<RecordCopy>, Option<String>), StoreError>;

/// The writer thread's handle, and the reads, which run on the caller's thread (but for
/// [`CopyLog::page_of`], which the writer answers in its order).
#[derive(Clone)]
pub struct CopyLog {
    store: Store,
    jobs: std_mpsc::Sender<Job>,
}

impl CopyLog {
    /// Starts the writer thread; it ends when every clone is dropped.
    pub fn start(store: Store) -> Self {
        let (jobs, rx) = std_mpsc::channel();
        let writer = store.clone();
        std::thread::Builder::new()
            .name("copy-store".into())
            .spawn(move || write_loop(&writer, &rx))
            .expect("the copy-store thread starts");
        CopyLog { store, jobs }
    }

    /// Queues copies from `owner`; older versions than those already kept are ignored.
    pub fn keep(&self, owner: String, copies: Vec<RecordCopy>) {
        let _ = self.jobs.send(Job::Keep { owner, copies });
    }

    pub fn adopted(&self, id: String, owner: String, epoch: u32, at_ms: u64) {
        let _ = self.jobs.send(Job::Adopted { id, owner, epoch, at_ms });
    }

    /// Deletes final copies that finished before `before_ms` (a bounded number per call), and
    /// adoption marks as old.
    pub fn prune(&self, before_ms: u64) {
        let _ = self.jobs.send(Job::Prune { before_ms });
    }

    /// The unfinished copies `owner` left with this node, one page from after `after`. Read by
    /// the writer once the copies queued before the call are applied, so that a page never
    /// misses what this node already acknowledged to the owner.
    pub fn page_of(&self, owner: String, after: Option<String>) -> oneshot::Receiver<Page> {
        let (reply, rx) = oneshot::channel();
        let _ = self.jobs.send(Job::Page { owner, after, reply });
        rx
    }

    pub fn get(&self, id: &str) -> Result<Option<Row>, StoreError> {
        let txn = self.store.db().begin_read().map_err(StoreError::from_redb)?;
        let t = txn.open_table(COPIES).map_err(StoreError::from_redb)?;
        let Some(v) = t.get(id).map_err(StoreError::from_redb)? else { return Ok(None) };
        Ok(decode(v.value()))
    }

    /// The unfinished copies `owner` left with this node.
    pub fn open_of(&self, owner: &str) -> Result<Vec<RecordCopy>, StoreError> {
        let txn = self.store.db().begin_read().map_err(StoreError::from_redb)?;
        let open = txn.open_table(OPEN).map_err(StoreError::from_redb)?;
        let copies = txn.open_table(COPIES).map_err(StoreError::from_redb)?;
        let mut out = Vec::new();
        for item in open.range((owner, "")..).map_err(StoreError::from_redb)? {
            let (key, _) = item.map_err(StoreError::from_redb)?;
            let (o, id) = key.value();
            if o != owner {
                break;
            }
            if let Some(row) = copies.get(id).map_err(StoreError::from_redb)?.and_then(|v| decode(v.value())) {
                out.push(row.copy);
            }
        }
        Ok(out)
    }

    /// Every task this node adopted, with the epoch it took it at (loaded at start: what
    /// fences an old owner that comes back).
    pub fn adoptions(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let txn = self.store.db().begin_read().map_err(StoreError::from_redb)?;
        let t = txn.open_table(ADOPTED).map_err(StoreError::from_redb)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(StoreError::from_redb)? {
            let (k, v) = item.map_err(StoreError::from_redb)?;
            out.push((k.value().to_string(), v.value().0));
        }
        Ok(out)
    }
}

fn decode(bytes: &[u8]) -> Option<Row> {
    cbor4ii::serde::from_slice(bytes).ok()
}

fn encode(row: &Row) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), row).expect("a copy row always encodes")
}

fn write_loop(store: &Store, jobs: &std_mpsc::Receiver<Job>) {
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    loop {
        // Idle and synced, the writer sleeps until the next job: woken every SYNC_EVERY for
        // nothing, each node's writer thread was a steady share of an idle cluster's wake-ups.
        let next = if unsynced {
            super::next_group_within(jobs, MAX_GROUP, SYNC_EVERY)
        } else {
            super::next_group(jobs, MAX_GROUP).ok_or(std_mpsc::RecvTimeoutError::Disconnected)
        };
        let group = match next {
            Ok(group) => group,
            Err(std_mpsc::RecvTimeoutError::Timeout) => Vec::new(),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                if unsynced {
                    let _ = commit(store, Vec::new(), Durability::Immediate);
                }
                return;
            }
        };
        if group.is_empty() && !unsynced {
            continue;
        }
        let sync = last_sync.elapsed() >= SYNC_EVERY;
        let durability = if sync { Durability::Immediate } else { Durability::None };
        match commit(store, group, durability) {
            Ok(()) if sync => {
                last_sync = Instant::now();
                unsynced = false;
            }
            Ok(()) => unsynced = true,
            // The owners still hold these records; only this node's copies are missing.
            Err(e) => tracing::warn!(error = %e, "task-record copies could not be written to the store"),
        }
    }
}

fn commit(store: &Store, group: Vec<Job>, durability: Durability) -> Result<(), StoreError> {
    let mut txn = store.db().begin_write().map_err(StoreError::from_redb)?;
    txn.set_durability(durability).map_err(|e| StoreError::Other(e.to_string()))?;
    let mut pages = Vec::new();
    apply(&txn, group, &mut pages).map_err(StoreError::from_redb)?;
    txn.commit().map_err(StoreError::from_redb)?;
    // Answered once committed: a page's reader may go on to read the store (`get`), which
    // must then show every copy queued before its call.
    for (reply, page) in pages {
        let _ = reply.send(page);
    }
    Ok(())
}

type PageReply = (oneshot::Sender<Page>, Page);

fn apply(txn: &WriteTransaction, group: Vec<Job>, pages: &mut Vec<PageReply>) -> Result<(), redb::Error> {
    let mut copies = txn.open_table(COPIES)?;
    let mut open = txn.open_table(OPEN)?;
    let mut finished = txn.open_table(FINISHED)?;
    let mut adopted = txn.open_table(ADOPTED)?;
    for job in group {
        match job {
            Job::Keep { owner, copies: batch } => {
                for copy in batch {
                    let old = copies.get(copy.id.as_str())?.and_then(|v| decode(v.value()));

                    if let Some(old) = &old {
                        if (old.copy.epoch, old.copy.seq) > (copy.epoch, copy.seq) {
                            continue;
                        }
                        open.remove((old.owner.as_str(), copy.id.as_str()))?;
                    }
                    match copy.finished_ms {
                        Some(at) => {
                            finished.insert((at, copy.id.as_str()), ())?;
                        }
                        None => {
                            open.insert((owner.as_str(), copy.id.as_str()), ())?;
                        }
                    }
                    let row = Row { owner: owner.clone(), copy };
                    copies.insert(row.copy.id.as_str(), encode(&row).as_slice())?;
                }
            }
            Job::Adopted { id, owner, epoch, at_ms } => {
                let row = copies.get(id.as_str())?.and_then(|v| decode(v.value()));
                if let Some(mut row) = row {
                    open.remove((row.owner.as_str(), id.as_str()))?;
                    row.owner = owner;
                    row.copy.epoch = epoch;
                    copies.insert(id.as_str(), encode(&row).as_slice())?;
                }
                adopted.insert(id.as_str(), (epoch, at_ms))?;
            }
            Job::Prune { before_ms } => {
                let mut old = Vec::new();
                for item in finished.range::<(u64, &str)>(..(before_ms, ""))?.take(PRUNE_STEP) {
                    let (k, _) = item?;
                    let (at, id) = k.value();
                    old.push((at, id.to_string()));
                }
                for (at, id) in old {
                    finished.remove((at, id.as_str()))?;
                    copies.remove(id.as_str())?;
                }
                let mut stale = Vec::new();
                for item in adopted.iter()? {
                    let (k, v) = item?;
                    if v.value().1 < before_ms {
                        stale.push(k.value().to_string());
                    }
                    if stale.len() >= PRUNE_STEP {
                        break;
                    }
                }
                for id in stale {
                    adopted.remove(id.as_str())?;
                }
            }
            Job::Page { owner, after, reply } => {
                let page = read_page(&open, &copies, &owner, after.as_deref()).map_err(StoreError::from_redb);
                pages.push((reply, page));
            }
        }
    }
    Ok(())
}

fn read_page(
    open: &impl ReadableTable<(&'static str, &'static str), ()>,
    copies: &impl ReadableTable<&'static str, &'static [u8]>,
    owner: &str,
    after: Option<&str>,
) -> Result<(Vec<RecordCopy>, Option<String>), redb::Error> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for item in open.range((owner, after.unwrap_or(""))..)? {
        let (key, _) = item?;
        let (o, id) = key.value();
        if o != owner {
            break;
        }
        if after == Some(id) {
            continue;
        }
        let Some(row) = copies.get(id)?.and_then(|v| decode(v.value())) else { continue };
        if !out.is_empty() && bytes + row.copy.bytes.len() > MINE_PAGE_BYTES {
            let next = out.last().map(|c: &RecordCopy| c.id.clone());
            return Ok((out, next));
        }
        bytes += row.copy.bytes.len();
        out.push(row.copy);
    }
    Ok((out, None))
}
