//! Task scheduling at the gateway: placement, retries, and the task records users query.

mod gateway;
pub mod placement;
mod reasons;
mod record;
pub mod retry;

pub use gateway::{CancelError, Effect, Gateway, MAX_TIMEOUT_MS, SubmitError, TaskSpec, Timer, WorkerView};
pub use record::{AttemptRecord, TaskRecord, TaskState};
