//! The gateway's task records on disk, written by one thread with group commit.
//!
//! The gateway hands over numbered batches of records; the writer commits everything that
//! queued up while the previous commit was syncing, in one transaction with one fsync, and
//! reports the highest batch number committed. Under load the groups grow by themselves, so
//! throughput is bounded by the disk's bandwidth rather than its sync latency; an idle node
//! pays one sync per batch.
//!
//! Records are opaque bytes here (the scheduler encodes them); the store keeps three indexes
//! beside them: unfinished tasks (what a restart resumes), final ones by finish time (what
//! pruning walks, oldest first) and all by submission time (what listing walks, newest first).

use std::sync::mpsc as std_mpsc;

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use tokio::sync::mpsc;

use super::{Store, StoreError};

const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
/// Unfinished tasks' ids.
const OPEN: TableDefinition<&str, ()> = TableDefinition::new("tasks_open");
/// (finished at, ms since the epoch; id) -> submitted at.
const FINISHED: TableDefinition<(u64, &str), u64> = TableDefinition::new("tasks_finished");
/// (submitted at, ms since the epoch; id).
const SUBMITTED: TableDefinition<(u64, &str), ()> = TableDefinition::new("tasks_submitted");

/// Batches taken into one commit at most, so a flood cannot delay its acknowledgements
/// without bound.
const MAX_GROUP: usize = 256;
/// Final records deleted per pruning pass, so a pass never holds the writer for long.
const PRUNE_STEP: usize = 5_000;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(TASKS)?;
    txn.open_table(OPEN)?;
    txn.open_table(FINISHED)?;
    txn.open_table(SUBMITTED)?;
    Ok(())
}

/// One task's record as it now stands.
#[derive(Debug, Clone)]
pub struct TaskWrite {
    pub id: String,
    pub submitted_ms: u64,
    /// Set once the task is final.
    pub finished_ms: Option<u64>,
    pub bytes: Vec<u8>,
}

enum Job {
    Batch { seq: u64, writes: Vec<TaskWrite> },
    Prune { before_ms: u64 },
}

/// What the writer reports after each commit: every batch up to `seq` is durable (or, with
/// an error, none of the batches since the last report is).
#[derive(Debug)]
pub struct Committed {
    pub seq: u64,
    pub result: Result<(), StoreError>,
}

/// The writer thread's handle, and the reads, which run on the caller's thread.
#[derive(Clone)]
pub struct TaskLog {
    store: Store,
    jobs: std_mpsc::Sender<Job>,
}

impl TaskLog {
    /// Starts the writer thread; it reports commits on the returned channel and ends when
    /// every `TaskLog` clone is dropped.
    pub fn start(store: Store) -> (Self, mpsc::UnboundedReceiver<Committed>) {
        let (jobs, rx) = std_mpsc::channel();
        let (done, committed) = mpsc::unbounded_channel();
        let writer = store.clone();
        std::thread::Builder::new()
            .name("task-store".into())
            .spawn(move || write_loop(&writer, &rx, &done))
            .expect("the task-store thread starts");
        (TaskLog { store, jobs }, committed)
    }

    /// Queues a batch; `Committed { seq }` follows once it is durable.
    pub fn write(&self, seq: u64, writes: Vec<TaskWrite>) {
        let _ = self.jobs.send(Job::Batch { seq, writes });
    }

    /// Deletes final records that finished before `before_ms` (a bounded number per call).
    pub fn prune(&self, before_ms: u64) {
        let _ = self.jobs.send(Job::Prune { before_ms });
    }

    /// See [`Store::low_on_space`].
    pub fn low_on_space(&self) -> Option<u64> {
        self.store.low_on_space()
    }

    pub fn get(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.store.db().begin_read().map_err(StoreError::from_redb)?;
        let t = txn.open_table(TASKS).map_err(StoreError::from_redb)?;
        Ok(t.get(id).map_err(StoreError::from_redb)?.map(|v| v.value().to_vec()))
    }

    /// The `limit` most recently submitted records, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.store.db().begin_read().map_err(StoreError::from_redb)?;
        let order = txn.open_table(SUBMITTED).map_err(StoreError::from_redb)?;
        let tasks = txn.open_table(TASKS).map_err(StoreError::from_redb)?;
        let mut out = Vec::new();
        for item in order.iter().map_err(StoreError::from_redb)?.rev() {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item.map_err(StoreError::from_redb)?;
            if let Some(v) = tasks.get(key.value().1).map_err(StoreError::from_redb)? {
                out.push(v.value().to_vec());
            }
        }
        Ok(out)
    }

    /// Every unfinished task's record: what a restarted gateway resumes.
    pub fn unfinished(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let txn = self.store.db().begin_read().map_err(StoreError::from_redb)?;
        let open = txn.open_table(OPEN).map_err(StoreError::from_redb)?;
        let tasks = txn.open_table(TASKS).map_err(StoreError::from_redb)?;
        let mut out = Vec::new();
        for item in open.iter().map_err(StoreError::from_redb)? {
            let (id, _) = item.map_err(StoreError::from_redb)?;
            if let Some(v) = tasks.get(id.value()).map_err(StoreError::from_redb)? {
                out.push(v.value().to_vec());
            }
        }
        Ok(out)
    }

    /// How many records the store holds (final and unfinished).
    pub fn len(&self) -> Result<u64, StoreError> {
        let txn = self.store.db().begin_read().map_err(StoreError::from_redb)?;
        let t = txn.open_table(TASKS).map_err(StoreError::from_redb)?;
        t.len().map_err(StoreError::from_redb)
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

fn write_loop(store: &Store, jobs: &std_mpsc::Receiver<Job>, done: &mpsc::UnboundedSender<Committed>) {
    while let Some(group) = super::next_group(jobs, MAX_GROUP) {
        let seq = group.iter().filter_map(|j| if let Job::Batch { seq, .. } = j { Some(*seq) } else { None }).max();
        let result = commit(store, group);
        if let Some(seq) = seq
            && done.send(Committed { seq, result }).is_err()
        {
            return;
        }
    }
}

fn commit(store: &Store, group: Vec<Job>) -> Result<(), StoreError> {
    let mut txn = store.db().begin_write().map_err(StoreError::from_redb)?;
    txn.set_durability(Durability::Immediate).map_err(|e| StoreError::Other(e.to_string()))?;
    apply(&txn, group).map_err(StoreError::from_redb)?;
    txn.commit().map_err(StoreError::from_redb)
}

fn apply(txn: &WriteTransaction, group: Vec<Job>) -> Result<(), redb::Error> {
    let mut tasks = txn.open_table(TASKS)?;
    let mut open = txn.open_table(OPEN)?;
    let mut finished = txn.open_table(FINISHED)?;
    let mut submitted = txn.open_table(SUBMITTED)?;
    for job in group {
        match job {
            Job::Batch { writes, .. } => {
                for w in writes {
                    tasks.insert(w.id.as_str(), w.bytes.as_slice())?;
                    submitted.insert((w.submitted_ms, w.id.as_str()), ())?;
                    match w.finished_ms {
                        Some(at) => {
                            open.remove(w.id.as_str())?;
                            finished.insert((at, w.id.as_str()), w.submitted_ms)?;
                        }
                        None => {
                            open.insert(w.id.as_str(), ())?;
                        }
                    }
                }
            }
            Job::Prune { before_ms } => {
                let mut old = Vec::new();
                for item in finished.range::<(u64, &str)>(..(before_ms, ""))?.take(PRUNE_STEP) {
                    let (k, v) = item?;
                    let (at, id) = k.value();
                    old.push((at, id.to_string(), v.value()));
                }
                for (at, id, sub) in old {
                    finished.remove((at, id.as_str()))?;
                    submitted.remove((sub, id.as_str()))?;
                    tasks.remove(id.as_str())?;
                }
            }
        }
    }
    Ok(())
}
