//! The node's own client: a cloneable [`NodeHandle`] holding a bounded sender of
//! [`Request`]s into the core (each carrying its reply channel) and the shared health. The
//! HTTP API, the CLI's in-process uses and the tests all go through it.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::Health;
use super::views::{CapabilitiesView, PeerView, StatusView};
use crate::scheduler::{CancelError, SubmitError, TaskRecord, TaskSpec};

/// What the API asks of the node core; each carries its reply channel.
#[derive(Debug)]
pub enum Request {
    Submit {
        spec: TaskSpec,
        /// Resolved with the final record when given.
        waiter: Option<oneshot::Sender<TaskRecord>>,
        reply: oneshot::Sender<Result<String, SubmitError>>,
    },
    /// All tasks or none; `waiters` (one per task, in order) when the caller waits.
    SubmitBatch {
        specs: Vec<TaskSpec>,
        waiters: Vec<oneshot::Sender<TaskRecord>>,
        reply: oneshot::Sender<Result<Vec<String>, (usize, SubmitError)>>,
    },
    Get {
        id: String,
        reply: oneshot::Sender<Option<TaskRecord>>,
    },
    List {
        limit: usize,
        reply: oneshot::Sender<Vec<TaskRecord>>,
    },
    Cancel {
        id: String,
        reply: oneshot::Sender<Result<TaskRecord, CancelError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerView>>,
    },
    Status {
        reply: oneshot::Sender<StatusView>,
    },
    Capabilities {
        reply: oneshot::Sender<CapabilitiesView>,
    },
}

/// Why the node could not do what its handle asked.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The core has stopped (or is stopping) and will not answer.
    #[error("node is shutting down")]
    Unavailable,
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// A batch refused as a whole because of the task at this index.
    #[error("tasks[{0}]: {1}")]
    Batch(usize, SubmitError),
    #[error("no task with id {0}")]
    NotFound(String),
    #[error(transparent)]
    Cancel(#[from] CancelError),
}

/// A submission's outcome: its id, or its final record when the caller waited.
pub enum Submitted {
    Accepted(String),
    Final(Box<TaskRecord>),
}

/// A batch's outcome: the ids in order, or every final record when the caller waited.
pub enum BatchSubmitted {
    Accepted(Vec<String>),
    Final(Vec<TaskRecord>),
}

/// Cloneable handle the API (and tests) use to talk to the node core.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Request>,
    health: Arc<Health>,
    /// The node's WebAssembly modules (uploads and queries go to it directly, not through
    /// the core: they touch no task state).
    wasm: Option<crate::wasm::WasmService>,
    /// The node's credit ledger (reads go to it directly).
    ledger: Option<crate::ledger::LedgerHandle>,
}

impl NodeHandle {
    pub(super) fn new(tx: mpsc::Sender<Request>, health: Arc<Health>) -> Self {
        Self { tx, health, wasm: None, ledger: None }
    }

    pub(super) fn with_wasm(self, wasm: crate::wasm::WasmService) -> Self {
        Self { wasm: Some(wasm), ..self }
    }

    pub(super) fn with_ledger(self, ledger: Option<crate::ledger::LedgerHandle>) -> Self {
        Self { ledger, ..self }
    }

    /// The node's credit ledger, when `ledger.enabled`.
    pub fn ledger(&self) -> Option<&crate::ledger::LedgerHandle> {
        self.ledger.as_ref()
    }

    /// The node's WebAssembly service.
    pub fn wasm(&self) -> Option<&crate::wasm::WasmService> {
        self.wasm.as_ref()
    }

    /// Liveness and readiness, for the health endpoints.
    pub fn health(&self) -> &Health {
        &self.health
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, HandleError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| HandleError::Unavailable)?;
        rx.await.map_err(|_| HandleError::Unavailable)
    }

    /// Submits a task; with `wait`, resolves once it is final.
    pub async fn submit(&self, spec: TaskSpec, wait: bool) -> Result<Submitted, HandleError> {
        let (waiter, final_rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let id = self.ask(|reply| Request::Submit { spec, waiter, reply }).await??;
        match final_rx {
            Some(rx) => Ok(Submitted::Final(Box::new(rx.await.map_err(|_| HandleError::Unavailable)?))),
            None => Ok(Submitted::Accepted(id)),
        }
    }

    /// Submits a batch, all or nothing; with `wait`, resolves once every task is final.
    pub async fn submit_batch(&self, specs: Vec<TaskSpec>, wait: bool) -> Result<BatchSubmitted, HandleError> {
        let (waiters, receivers): (Vec<_>, Vec<_>) =
            if wait { (0..specs.len()).map(|_| oneshot::channel()).unzip() } else { (Vec::new(), Vec::new()) };
        let ids = self
            .ask(|reply| Request::SubmitBatch { specs, waiters, reply })
            .await?
            .map_err(|(i, e)| HandleError::Batch(i, e))?;
        if !wait {
            return Ok(BatchSubmitted::Accepted(ids));
        }
        let mut records = Vec::with_capacity(receivers.len());
        for rx in receivers {
            records.push(rx.await.map_err(|_| HandleError::Unavailable)?);
        }
        Ok(BatchSubmitted::Final(records))
    }

    pub async fn get(&self, id: String) -> Result<TaskRecord, HandleError> {
        self.ask(|reply| Request::Get { id: id.clone(), reply }).await?.ok_or(HandleError::NotFound(id))
    }

    pub async fn list(&self, limit: usize) -> Result<Vec<TaskRecord>, HandleError> {
        self.ask(|reply| Request::List { limit, reply }).await
    }

    pub async fn cancel(&self, id: String) -> Result<TaskRecord, HandleError> {
        Ok(self.ask(|reply| Request::Cancel { id, reply }).await??)
    }

    pub async fn peers(&self) -> Result<Vec<PeerView>, HandleError> {
        self.ask(|reply| Request::Peers { reply }).await
    }

    pub async fn status(&self) -> Result<StatusView, HandleError> {
        self.ask(|reply| Request::Status { reply }).await
    }

    pub async fn capabilities(&self) -> Result<CapabilitiesView, HandleError> {
        self.ask(|reply| Request::Capabilities { reply }).await
    }
}
