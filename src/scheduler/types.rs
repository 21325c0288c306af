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
    /// Run on this many distinct workers (`wasm` only; default 1) ...
    pub replicas: Option<u32>,
    /// ... and complete when this many agree on the output (default: a majority).
    pub quorum: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("unknown task type {0:?}; known types: compute, storage, echo, sleep, fail, wasm")]
    UnknownType(String),
    #[error("invalid {field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("no alive worker advertises capability {capability:?} ({alive} alive workers in the cluster)")]
    NoCapableWorker { capability: String, alive: usize },
    #[error("{replicas} replicas need {replicas} distinct workers with capability {capability:?}; {capable} alive")]
    NotEnoughWorkers { capability: String, replicas: u32, capable: usize },
    #[error(
        "this node cannot pay for the task: it may spend {available} credits and the task may cost up to {price} (ledger.enforce is on)"
    )]
    InsufficientCredits { available: i128, price: u64 },
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
    /// `peer`'s results were outvoted by replicas on other workers `strikes` times: lower its
    /// GossipSub application score (to `score`) so that a persistently wrong worker ends up
    /// graylisted.
    Penalize {
        peer: PeerId,
        strikes: u32,
        score: f64,
    },
    /// Pay the workers of a completed task (credits each), from this node's account.
    Pay {
        task: String,
        payments: Vec<(PeerId, u64)>,
    },
    /// Forward changed records to one of their copy holders; its answer comes back with `tag`.
    Replicate {
        peer: PeerId,
        tag: u64,
        records: Vec<crate::protocol::RecordCopy>,
    },
}
