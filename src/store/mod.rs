//! The node's durable store: one embedded database file under `node.data_dir`, owned by the
//! node and shared by the parts that persist something (the gateway's task records in
//! [`tasks`], the DHT's records, the credit ledger's blocks).
//!
//! The database is redb: pure Rust, ACID with copy-on-write B-trees (a crash leaves the last
//! committed transaction, never a torn one), a file lock against a second process, and
//! checksums that catch a corrupt file at open. Opening checks the schema version so that a
//! later release can migrate what an earlier one wrote.

pub mod copies;
pub mod dht;
pub mod ledger;
pub mod tasks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

/// The layout this release writes. Bump it, and migrate in [`Store::open`], when a table or
/// an encoding changes.
pub const SCHEMA_VERSION: u32 = 1;

/// The database file inside the data dir.
pub const DB_FILE: &str = "node.redb";

/// Page cache of the database. Small on purpose: records are read rarely (queries, restart)
/// and resident memory must not grow with the number of records kept.
const CACHE_BYTES: usize = 8 * 1024 * 1024;

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const SCHEMA_KEY: &str = "schema_version";

/// Why the store could not be opened: always names the path, so the one line a failed start
/// prints says where to look.
#[derive(Debug, thiserror::Error)]
#[error("node.data_dir {path}: {cause}")]
pub struct OpenError {
    pub path: PathBuf,
    pub cause: String,
}

/// Below this much free space in the data dir, new tasks are refused (`507`) while the ones
/// already accepted can still be written to their final states: the disk never fills up
/// under the store, which would fail its commits (and make redb refuse every later one until
/// the node restarts). Elasticsearch's flood-stage watermark works the same way.
pub const MIN_FREE_BYTES: u64 = 32 * 1024 * 1024;

/// How long a reading of the free space is trusted (it is taken at most this often).
const SPACE_CHECK_EVERY: Duration = Duration::from_millis(100);

/// A failure while the node runs (a write that did not commit, a read that failed).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the data dir is full: {0}")]
    Full(String),
    #[error("store: {0}")]
    Other(String),
}

impl StoreError {
    pub(crate) fn from_redb(e: impl Into<redb::Error>) -> Self {
        let e: redb::Error = e.into();
        match &e {
            redb::Error::Io(io) if is_full(io) => StoreError::Full(io.to_string()),
            _ => StoreError::Other(e.to_string()),
        }
    }
}

fn is_full(e: &std::io::Error) -> bool {
    // ENOSPC and EDQUOT (quota): the two ways a disk says it has no room.
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

/// The open database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    /// The last reading of the data dir's free space; `None` for a store not on a disk.
    space: Option<Arc<Mutex<(Instant, u64)>>>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, or says in one line why it cannot.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let fail = |cause: String| OpenError { path: dir.to_path_buf(), cause };
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create the directory: {e}")))?;
        let file = dir.join(DB_FILE);
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(&file).map_err(|e| fail(open_cause(e)))?;
        let free = fs4::available_space(dir).map_err(|e| fail(format!("cannot read its free space: {e}")))?;
        let space = Some(Arc::new(Mutex::new((Instant::now(), free))));
        let store = Store { db: Arc::new(db), path: dir.to_path_buf(), space };
        store.check_schema().map_err(fail)?;
        Ok(store)
    }

    /// A store in memory only, for tests of the parts that persist (nothing survives it).
    pub fn in_memory() -> Self {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory database always opens");
        let store = Store { db: Arc::new(db), path: PathBuf::from(":memory:"), space: None };
        store.check_schema().expect("a new in-memory database takes the schema");
        store
    }

    /// A store on any redb backend (tests: a disk that fills up).
    #[cfg(test)]
    pub(crate) fn with_backend(backend: impl redb::StorageBackend) -> Self {
        let db = Database::builder().create_with_backend(backend).expect("the test backend opens");
        let store = Store { db: Arc::new(db), path: PathBuf::from(":test:"), space: None };
        store.check_schema().expect("a new database takes the schema");
        store
    }

    /// `Some(free bytes)` when the data dir has less than [`MIN_FREE_BYTES`] left.
    pub fn low_on_space(&self) -> Option<u64> {
        let space = self.space.as_ref()?;
        let mut last = space.lock().unwrap_or_else(|p| p.into_inner());
        if last.0.elapsed() >= SPACE_CHECK_EVERY {
            // A failed reading keeps the last one: it says nothing about the space.
            if let Ok(free) = fs4::available_space(&self.path) {
                *last = (Instant::now(), free);
            }
        }
        (last.1 < MIN_FREE_BYTES).then_some(last.1)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Writes the schema version into a new database, refuses one written by a newer release,
    /// and creates every table so that readers never meet a missing one.
    fn check_schema(&self) -> Result<(), String> {
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
            let found = meta.get(SCHEMA_KEY).map_err(|e| e.to_string())?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(format!(
                        "written by a newer release (schema version {v}; this release reads up to {SCHEMA_VERSION})"
                    ));
                }
                // Migrations from older versions go here, one step per version.
                Some(_) => {}
                None => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION).map_err(|e| e.to_string())?;
                }
            }
        }
        tasks::create_tables(&txn).map_err(|e| e.to_string())?;
        dht::create_tables(&txn).map_err(|e| e.to_string())?;
        copies::create_tables(&txn).map_err(|e| e.to_string())?;
        ledger::create_tables(&txn).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from_redb)?;
        let meta = txn.open_table(META).map_err(StoreError::from_redb)?;
        Ok(meta.get(SCHEMA_KEY).map_err(StoreError::from_redb)?.map(|v| v.value()))
    }

    #[cfg(test)]
    pub(crate) fn set_schema_version(&self, v: u32) {
        let txn = self.db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(SCHEMA_KEY, v).unwrap();
        txn.commit().unwrap();
    }
}

/// Waits for the next job, then takes whatever else already queued behind it (at most `max`):
/// one group, committed as one transaction with one sync. Under load the groups grow by
/// themselves; an idle writer pays one sync per job. `None` once every sender is gone.
pub(crate) fn next_group<J>(jobs: &std::sync::mpsc::Receiver<J>, max: usize) -> Option<Vec<J>> {
    let first = jobs.recv().ok()?;
    Some(group_after(first, jobs, max))
}

/// [`next_group`], waiting at most `wait` for the first job.
pub(crate) fn next_group_within<J>(
    jobs: &std::sync::mpsc::Receiver<J>,
    max: usize,
    wait: Duration,
) -> Result<Vec<J>, std::sync::mpsc::RecvTimeoutError> {
    let first = jobs.recv_timeout(wait)?;
    Ok(group_after(first, jobs, max))
}

fn group_after<J>(first: J, jobs: &std::sync::mpsc::Receiver<J>, max: usize) -> Vec<J> {
    let mut group = vec![first];
    while group.len() < max {
        match jobs.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    group
}

/// What an operator should read for each way opening fails.
fn open_cause(e: DatabaseError) -> String {
    match e {
        DatabaseError::DatabaseAlreadyOpen => {
            "already in use by another process (is a second node running with the same data_dir?)".into()
        }
        DatabaseError::Storage(redb::StorageError::Io(io)) => match io.kind() {
            std::io::ErrorKind::PermissionDenied => format!("permission denied: {io}"),
            std::io::ErrorKind::ReadOnlyFilesystem => format!("read-only file system: {io}"),
            _ if is_full(&io) => format!("no space left: {io}"),
            _ => format!("cannot open {DB_FILE}: {io}"),
        },
        DatabaseError::Storage(redb::StorageError::Corrupted(why)) => {
            format!("{DB_FILE} is corrupt ({why}); move it away to start with an empty store")
        }
        DatabaseError::UpgradeRequired(v) => format!("{DB_FILE} has an old file format ({v}) that must be upgraded"),
        other => format!("cannot open {DB_FILE}: {other}"),
    }
}

#[cfg(test)]
mod tests;
