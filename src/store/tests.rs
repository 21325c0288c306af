use super::tasks::{TaskLog, TaskWrite};
use super::{DB_FILE, SCHEMA_VERSION, Store};

fn write(id: &str, submitted_ms: u64, finished_ms: Option<u64>) -> TaskWrite {
    TaskWrite { id: id.into(), submitted_ms, finished_ms, bytes: format!("record of {id}").into_bytes() }
}

async fn commit(
    log: &TaskLog,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<super::tasks::Committed>,
    seq: u64,
    w: Vec<TaskWrite>,
) {
    log.write(seq, w);
    loop {
        let c = rx.recv().await.expect("the writer reports");
        c.result.expect("the commit holds");
        if c.seq >= seq {
            return;
        }
    }
}

#[tokio::test]
async fn records_survive_closing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let (log, mut rx) = TaskLog::start(store);
        commit(&log, &mut rx, 1, vec![write("a", 1, None), write("b", 2, Some(5))]).await;
    }
    // The writer thread ends with its last handle; the file lock goes with the database.
    let store = loop {
        match Store::open(dir.path()) {
            Ok(s) => break s,
            Err(e) if e.cause.contains("already in use") => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
    let (log, _rx) = TaskLog::start(store);
    assert_eq!(log.get("a").unwrap().unwrap(), b"record of a");
    assert_eq!(log.unfinished().unwrap(), vec![b"record of a".to_vec()]);
    assert_eq!(log.len().unwrap(), 2);
}

#[tokio::test]
async fn indexes_follow_a_task_to_its_final_state_and_pruning() {
    let (log, mut rx) = TaskLog::start(Store::in_memory());
    commit(&log, &mut rx, 1, vec![write("old", 10, None), write("new", 20, None)]).await;
    assert_eq!(log.unfinished().unwrap().len(), 2);
    commit(&log, &mut rx, 2, vec![write("old", 10, Some(100)), write("new", 20, Some(300))]).await;
    assert!(log.unfinished().unwrap().is_empty(), "final tasks are not resumed");
    assert_eq!(log.recent(1).unwrap(), vec![b"record of new".to_vec()], "newest first");
    log.prune(200);
    // The prune is ordered before this batch on the writer's queue.
    commit(&log, &mut rx, 3, Vec::new()).await;
    assert!(log.get("old").unwrap().is_none(), "finished before the cutoff: pruned");
    assert!(log.get("new").unwrap().is_some(), "finished after the cutoff: kept");
    assert_eq!(log.recent(10).unwrap().len(), 1);
}

#[tokio::test]
async fn batches_queued_during_a_commit_are_committed_together() {
    let (log, mut rx) = TaskLog::start(Store::in_memory());
    for seq in 1..=500u64 {
        log.write(seq, vec![write(&format!("t{seq}"), seq, None)]);
    }
    let mut reports = 0;
    loop {
        let c = rx.recv().await.unwrap();
        c.result.unwrap();
        reports += 1;
        if c.seq == 500 {
            break;
        }
    }
    assert!(reports < 500, "500 batches queued at once took {reports} commits: no grouping");
    assert_eq!(log.len().unwrap(), 500);
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let e = Store::open(dir.path()).unwrap_err();
    let line = e.to_string();
    assert!(line.starts_with(&format!("node.data_dir {}:", dir.path().display())), "{line}");
    assert!(line.contains("already in use"), "{line}");
}

#[test]
fn a_newer_schema_is_refused_with_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path()).unwrap().set_schema_version(SCHEMA_VERSION + 1);
    let line = Store::open(dir.path()).unwrap_err().to_string();
    assert!(line.contains(&format!("schema version {}", SCHEMA_VERSION + 1)), "{line}");
    assert!(line.contains(&format!("reads up to {SCHEMA_VERSION}")), "{line}");
}

#[test]
fn a_corrupt_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(DB_FILE), vec![0x5a; 64 * 1024]).unwrap();
    let line = Store::open(dir.path()).unwrap_err().to_string();
    assert!(line.contains(DB_FILE), "{line}");
    assert!(!line.contains('\n'), "one line: {line}");
}

#[test]
fn a_data_dir_that_is_a_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let line = Store::open(&file).unwrap_err().to_string();
    assert!(line.starts_with(&format!("node.data_dir {}:", file.display())), "{line}");
    assert!(line.contains("cannot create the directory"), "{line}");
}

/// A disk in memory that can be made full: writes and growth fail with ENOSPC while `full`.
#[derive(Debug)]
pub(crate) struct FillableDisk {
    inner: redb::backends::InMemoryBackend,
    pub(crate) full: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FillableDisk {
    pub(crate) fn new() -> Self {
        FillableDisk { inner: redb::backends::InMemoryBackend::new(), full: Default::default() }
    }

    fn check(&self) -> std::io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        Ok(())
    }
}

impl redb::StorageBackend for FillableDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

#[tokio::test]
async fn a_full_disk_fails_the_commit_as_full() {
    let disk = FillableDisk::new();
    let full = disk.full.clone();
    let (log, mut rx) = TaskLog::start(Store::with_backend(disk));
    commit(&log, &mut rx, 1, vec![write("before", 1, None)]).await;
    full.store(true, std::sync::atomic::Ordering::SeqCst);
    log.write(2, vec![write("during", 2, None)]);
    let c = rx.recv().await.unwrap();
    assert_eq!(c.seq, 2);
    assert!(matches!(c.result, Err(super::StoreError::Full(_))), "{:?}", c.result);
    assert_eq!(log.get("before").unwrap().unwrap(), b"record of before", "what was stored stays readable");
    full.store(false, std::sync::atomic::Ordering::SeqCst);
    log.write(3, vec![write("after", 3, None)]);
    let c = rx.recv().await.unwrap();
    eprintln!("commit after the disk has room again: {:?}", c.result);
}

mod copies {
    use super::super::copies::CopyLog;
    use super::Store;
    use crate::protocol::RecordCopy;

    fn copy(id: &str, epoch: u32, seq: u64, finished_ms: Option<u64>, body: &str) -> RecordCopy {
        RecordCopy {
            id: id.into(),
            epoch,
            seq,
            submitted_ms: 1,
            finished_ms,
            bytes: body.as_bytes().to_vec(),
            restored: false,
        }
    }

    /// Waits (bounded) for the writer to have `id` with body `body`.
    async fn holds(log: &CopyLog, id: &str, body: &str) {
        for _ in 0..500 {
            if log.get(id).unwrap().is_some_and(|r| r.copy.bytes == body.as_bytes()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        panic!("{id} never held {body:?}: {:?}", log.get(id).unwrap());
    }

    #[tokio::test]
    async fn a_copy_keeps_its_newest_version_whatever_order_the_batches_arrive_in() {
        let log = CopyLog::start(Store::in_memory());
        log.keep("owner".into(), vec![copy("t", 1, 5, Some(9), "final")]);
        log.keep("owner".into(), vec![copy("t", 1, 4, None, "running")]);
        log.keep("owner".into(), vec![copy("u", 1, 1, None, "u1")]);
        holds(&log, "u", "u1").await;
        assert_eq!(log.get("t").unwrap().unwrap().copy.bytes, b"final", "an older batch never rolls it back");
        // A deposed owner (lower epoch) cannot overwrite its adopter's version either.
        log.keep("adopter".into(), vec![copy("u", 2, 1, None, "adopted")]);
        holds(&log, "u", "adopted").await;
        log.keep("owner".into(), vec![copy("u", 1, 99, None, "stale")]);
        log.keep("owner".into(), vec![copy("v", 1, 1, None, "v1")]);
        holds(&log, "v", "v1").await;
        assert_eq!(log.get("u").unwrap().unwrap().copy.bytes, b"adopted");
    }

    #[tokio::test]
    async fn unfinished_copies_are_listed_by_owner_until_final_or_adopted() {
        let log = CopyLog::start(Store::in_memory());
        log.keep(
            "a".into(),
            vec![copy("1", 1, 1, None, "x"), copy("2", 1, 1, None, "x"), copy("3", 1, 1, Some(5), "x")],
        );
        log.keep("b".into(), vec![copy("4", 1, 1, None, "x")]);
        holds(&log, "4", "x").await;
        let ids = |owner: &str| log.open_of(owner).unwrap().into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids("a"), vec!["1", "2"], "the final one is not open");
        assert_eq!(ids("b"), vec!["4"]);
        log.keep("a".into(), vec![copy("2", 1, 2, Some(7), "done")]);
        log.adopted("1".into(), "me".into(), 2, 10);
        // The writer takes jobs in order: once a later copy is held, the adoption is too
        // (waiting on "2" alone raced the adoption's commit).
        log.keep("z".into(), vec![copy("z1", 1, 1, None, "after")]);
        holds(&log, "z1", "after").await;
        assert!(ids("a").is_empty());
        assert_eq!(log.adoptions().unwrap(), vec![("1".to_string(), 2)]);
        // Pruning drops final copies and old adoption marks.
        log.prune(100);
        log.keep("c".into(), vec![copy("9", 1, 1, None, "sync")]);
        holds(&log, "9", "sync").await;
        assert!(log.get("2").unwrap().is_none() && log.get("3").unwrap().is_none());
        assert!(log.adoptions().unwrap().is_empty());
    }
}
