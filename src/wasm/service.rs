//! The node's WebAssembly service: the engine, the module store and fetching, shared by the
//! API (uploads, queries), the worker (runs) and the module protocol (serving other nodes).
//!
//! The engine (and its epoch thread) is made on first use: a node that never sees a module
//! pays nothing for it.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libp2p::{PeerId, StreamProtocol};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{EngineError, Prepared, WasmEngine};
use super::fetch::{self, FetchError};
use super::modules::{MODULES_DIR, ModuleStore, ModuleStoreError};
use super::{InvalidModule, Limits, ModuleId, Outcome, WasmCall};
use crate::config::WasmConfig;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Invalid(#[from] InvalidModule),
    #[error("cannot store the module: {0}")]
    Store(String),
}

#[derive(Clone)]
pub struct WasmService {
    inner: Arc<Inner>,
}

struct Inner {
    config: WasmConfig,
    engine: OnceLock<Result<WasmEngine, String>>,
    modules: Arc<ModuleStore>,
    streams: libp2p_stream::Control,
    protocol: StreamProtocol,
}

impl WasmService {
    /// Opens the module store under `data_dir`.
    pub fn open(
        config: &WasmConfig,
        data_dir: &Path,
        protocol_version: &str,
        streams: libp2p_stream::Control,
    ) -> Result<Self, ModuleStoreError> {
        let modules = ModuleStore::open(&data_dir.join(MODULES_DIR), config.cache_bytes)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                engine: OnceLock::new(),
                modules: Arc::new(modules),
                streams,
                protocol: fetch::protocol(protocol_version),
            }),
        })
    }

    fn engine(&self) -> Result<WasmEngine, String> {
        self.inner
            .engine
            .get_or_init(|| WasmEngine::new(self.inner.config.compiled_modules).map_err(|e: EngineError| e.to_string()))
            .clone()
    }

    /// The node's ceilings for one run.
    pub fn limits(&self) -> Limits {
        self.inner.config.limits()
    }

    pub fn max_module_bytes(&self) -> u64 {
        self.inner.config.max_module_bytes
    }

    /// Size of the module, if this node holds it.
    pub fn size(&self, id: &ModuleId) -> Option<u64> {
        self.inner.modules.size(id)
    }

    /// Serves this node's modules to other nodes until `stop`.
    pub fn serve(&self, tracker: TaskTracker, stop: CancellationToken) {
        fetch::serve(
            self.inner.streams.clone(),
            self.inner.protocol.clone(),
            self.inner.modules.clone(),
            tracker,
            stop,
        );
    }

    /// Validates, compiles (into the cache) and stores an upload; returns its id and size.
    pub async fn upload(&self, bytes: Vec<u8>) -> Result<(ModuleId, u64), UploadError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let engine = this.engine().map_err(UploadError::Store)?;
            let max = usize::try_from(this.inner.config.max_module_bytes).unwrap_or(usize::MAX);
            let (id, _) = engine.prepare(&bytes, max)?;
            this.inner.modules.put(&id, &bytes).map_err(|e| UploadError::Store(e.to_string()))?;
            Ok((id, bytes.len() as u64))
        })
        .await
        .map_err(|e| UploadError::Store(format!("the upload's thread failed: {e}")))?
    }

    /// The module compiled: from the engine's cache, the store, or fetched from `from` (the
    /// node that sent the task) and then kept.
    async fn prepared(&self, id: ModuleId, from: Option<PeerId>) -> Result<Prepared, String> {
        let engine = self.engine()?;
        if let Some(pre) = engine.cached(&id) {
            return Ok(pre);
        }
        let modules = self.inner.modules.clone();
        let local = tokio::task::spawn_blocking(move || modules.get(&id)).await.map_err(|e| e.to_string())?;
        let bytes = match (local, from) {
            (Some(bytes), _) => bytes,
            (None, None) => return Err(format!("{id} is not on this node")),
            (None, Some(peer)) => {
                let timeout = Duration::from_millis(self.inner.config.fetch_timeout_ms);
                let bytes = fetch::fetch(
                    self.inner.streams.clone(),
                    self.inner.protocol.clone(),
                    peer,
                    id,
                    self.inner.config.max_module_bytes,
                    timeout,
                )
                .await
                .map_err(|e: FetchError| format!("fetching {id} from {peer}: {e}"))?;
                tracing::debug!(module = %id, %peer, bytes = bytes.len(), "module fetched");
                bytes
            }
        };
        let modules = self.inner.modules.clone();
        let max = usize::try_from(self.inner.config.max_module_bytes).unwrap_or(usize::MAX);
        tokio::task::spawn_blocking(move || {
            let (_, pre) = engine.prepare(&bytes, max).map_err(|e| format!("{id}: {e}"))?;
            if let Err(e) = modules.put(&id, &bytes) {
                // Still runnable from memory; the next cold start fetches it again.
                tracing::warn!(module = %id, error = %e, "cannot keep the module on disk");
            }
            Ok(pre)
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Runs a call within this node's limits and `deadline`.
    pub async fn run(&self, call: WasmCall, from: Option<PeerId>, deadline: Duration) -> Outcome {
        let pre = match self.prepared(call.module, from).await {
            Ok(pre) => pre,
            Err(why) => return Outcome::ModuleUnavailable(why),
        };
        let engine = match self.engine() {
            Ok(engine) => engine,
            Err(why) => return Outcome::ModuleUnavailable(why),
        };
        let mut limits = call.limits.apply(self.limits());
        limits.deadline = limits.deadline.min(deadline);
        engine.run_blocking(pre, call.input.into_bytes(), call.args, limits).await
    }
}
