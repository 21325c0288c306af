//! What passes between the node and its gateway: the task a user asks for, the workers
//! placement may use, the effects the node carries out, and the errors users are told.

use libp2p::PeerId;

use crate::protocol::TaskRequest;
use crate::telemetry::Remote;

/// What a user asks for.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub task_type: String,
    pub payload: String,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
    /// The trace the task joins: the submission's span, or the submitter's `traceparent`.
    /// `None` starts a fresh trace.
    pub trace: Option<Remote>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("unknown task type {0:?}; known types: compute, storage, echo, sleep, fail, wasm")]
    UnknownType(String),
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("no alive worker advertises capability {capability:?} ({alive} alive workers in the cluster)")]
    NoCapableWorker { capability: String, alive: usize },
    #[error("task queue is full ({0} tasks waiting); retry later")]
    QueueFull(usize),
    #[error("the node's data dir is full: it cannot store new tasks")]
    StoreFull,
    #[error("the task could not be stored: {0}")]
    NotStored(String),
    #[error("node is shutting down")]
    ShuttingDown,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    #[error("no task with id {0}")]
    NotFound(String),
    #[error("task {0} is already {1}")]
    AlreadyFinal(String, &'static str),
}

/// A worker the membership view considers alive, as placement needs it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub id: PeerId,
    pub capacity: u32,
    pub capabilities: Vec<String>,
}

/// What the node must do after an input.
#[derive(Debug)]
pub enum Effect {
    Dispatch {
        peer: PeerId,
        request: TaskRequest,
    },
    RunLocal {
        request: TaskRequest,
    },
    /// Forward changed records to one of their copy holders; its answer comes back with `tag`.
    Replicate {
        peer: PeerId,
        tag: u64,
        records: Vec<crate::protocol::RecordCopy>,
    },
}
