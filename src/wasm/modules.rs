//! The node's modules on disk, under `<node.data_dir>/modules/<hex>.wasm`: uploads and
//! fetched modules alike, at most `wasm.cache_bytes` of them, the least recently used removed
//! first. Every read is checked against the module's hash, so a damaged file is dropped and
//! fetched again instead of run.
//!
//! File operations block: call these from a blocking thread.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::ModuleId;

/// The modules directory inside the data dir.
pub const MODULES_DIR: &str = "modules";
const EXTENSION: &str = "wasm";

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ModuleStoreError {
    pub path: String,
    pub source: io::Error,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    size: u64,
    used: u64,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<ModuleId, Entry>,
    total: u64,
    clock: u64,
}

impl Index {
    fn touch(&mut self, id: &ModuleId) -> Option<u64> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(id).map(|e| {
            e.used = clock;
            e.size
        })
    }

    fn remove(&mut self, id: &ModuleId) {
        if let Some(e) = self.entries.remove(id) {
            self.total -= e.size;
        }
    }

    /// The least recently used modules to remove, other than `keep`, until `total <= cap`.
    fn over(&self, cap: u64, keep: &ModuleId) -> Vec<ModuleId> {
        let mut by_age: Vec<_> = self.entries.iter().filter(|(id, _)| *id != keep).collect();
        by_age.sort_by_key(|(_, e)| e.used);
        let mut total = self.total;
        let mut out = Vec::new();
        for (id, e) in by_age {
            if total <= cap {
                break;
            }
            total -= e.size;
            out.push(*id);
        }
        out
    }
}

/// Modules on disk, bounded in bytes.
#[derive(Debug)]
pub struct ModuleStore {
    dir: PathBuf,
    cap: u64,
    index: Mutex<Index>,
}

impl ModuleStore {
    /// Opens (creating) `dir`; what is there is indexed, oldest modification first, and
    /// trimmed to `cap_bytes`. Files that are not `<64 hex>.wasm` are left alone.
    pub fn open(dir: &Path, cap_bytes: u64) -> Result<Self, ModuleStoreError> {
        let err = |source| ModuleStoreError { path: dir.display().to_string(), source };
        fs::create_dir_all(dir).map_err(err)?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(err)? {
            let entry = entry.map_err(err)?;
            let path = entry.path();
            let Some(id) = id_of_path(&path) else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            found.push((meta.modified().ok(), id, meta.len()));
        }
        found.sort();
        let store = Self { dir: dir.to_path_buf(), cap: cap_bytes, index: Mutex::new(Index::default()) };
        {
            let mut index = store.lock();
            for (_, id, size) in found {
                index.clock += 1;
                let used = index.clock;
                index.entries.insert(id, Entry { size, used });
                index.total += size;
            }
        }
        let newest = store.lock().entries.iter().max_by_key(|(_, e)| e.used).map(|(id, _)| *id);
        if let Some(newest) = newest {
            store.evict(&newest);
        }
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: &ModuleId) -> PathBuf {
        self.dir.join(format!("{}.{EXTENSION}", id.hex()))
    }

    /// Size in bytes, if the store holds the module.
    pub fn size(&self, id: &ModuleId) -> Option<u64> {
        self.lock().entries.get(id).map(|e| e.size)
    }

    /// Bytes of all modules held.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total
    }

    /// Stores `bytes` as `id` (the caller has checked that they hash to it), then removes
    /// the least recently used others while the store is over its bound.
    pub fn put(&self, id: &ModuleId, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(id);
        if self.lock().touch(id).is_none() {
            // Unique per writer: two uploads of the same module at once must not share it.
            let tmp = self.dir.join(format!("{}.{:016x}.tmp", id.hex(), rand::random::<u64>()));
            if let Err(e) = fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, &path)) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            let mut index = self.lock();
            index.clock += 1;
            let used = index.clock;
            if index.entries.insert(*id, Entry { size: bytes.len() as u64, used }).is_none() {
                index.total += bytes.len() as u64;
            }
        }
        self.evict(id);
        Ok(())
    }

    fn evict(&self, keep: &ModuleId) {
        let victims = {
            let mut index = self.lock();
            let victims = index.over(self.cap, keep);
            for id in &victims {
                index.remove(id);
            }
            victims
        };
        for id in victims {
            let _ = fs::remove_file(self.path(&id));
            tracing::debug!(module = %id, "module evicted from the store");
        }
    }

    /// The module's bytes, checked against its hash; a missing or damaged file is dropped
    /// from the store and reads as absent.
    pub fn get(&self, id: &ModuleId) -> Option<Vec<u8>> {
        self.lock().touch(id)?;
        match fs::read(self.path(id)) {
            Ok(bytes) if id.matches(&bytes) => Some(bytes),
            _ => {
                tracing::warn!(module = %id, "module file missing or damaged; dropped from the store");
                self.lock().remove(id);
                let _ = fs::remove_file(self.path(id));
                None
            }
        }
    }

    /// Up to `max_len` bytes of the module from `offset`, with its total size (serving a
    /// fetch; the fetching side checks the hash of the whole).
    pub fn chunk(&self, id: &ModuleId, offset: u64, max_len: usize) -> Option<(u64, Vec<u8>)> {
        let size = self.lock().touch(id)?;
        let mut file = fs::File::open(self.path(id)).ok()?;
        if offset > size {
            return Some((size, Vec::new()));
        }
        file.seek(SeekFrom::Start(offset)).ok()?;
        let mut buf = Vec::with_capacity(max_len.min((size - offset) as usize));
        file.take(max_len as u64).read_to_end(&mut buf).ok()?;
        Some((size, buf))
    }
}

fn id_of_path(path: &Path) -> Option<ModuleId> {
    if path.extension()? != EXTENSION {
        return None;
    }
    format!("sha256:{}", path.file_stem()?.to_str()?).parse().ok()
}
