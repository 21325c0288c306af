//! Task scheduling at the gateway: placement, retries, and the task records users query.

mod admission;
mod adoption;
mod attempts;
pub mod copies;
mod durable;
mod entry;
mod gateway;
mod lifecycle;
mod load;
pub mod payment;
pub mod placement;
mod queue;
pub mod quorum;
mod reasons;
mod record;
pub mod replicas;
pub mod retry;
mod timers;
mod types;

pub use admission::MAX_TIMEOUT_MS;
pub use adoption::Held;
pub use durable::{Reply, decode_record};
pub use gateway::Gateway;
pub use record::{AttemptRecord, MAX_TIMELINE, ReplicaResult, TaskRecord, TaskState, TimelineEvent, TimelineKind};
pub use timers::Timer;
pub use types::{CancelError, Effect, SubmitError, TaskSpec, WorkerView};

#[cfg(test)]
mod tests;
