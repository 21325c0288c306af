//! Why the gateway refuses a submission, as the label values its metrics count it under
//! (answers it drops are counted under the crate-wide `metrics::DropReason`). The values are part of the metrics' interface (dashboards and alerts
//! select on them), so a variant may be renamed but its label never changes.

/// Why a submission was refused (`tasks_rejected{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejection {
    UnknownType,
    BadPayload,
    BadTimeout,
    BadMaxAttempts,
    NoCapableWorker,
    NotEnoughWorkers,
    BadReplicas,
    QueueFull,
    InsufficientCredits,
    StoreFull,
}

impl Rejection {
    pub(super) fn label(self) -> &'static str {
        match self {
            Rejection::UnknownType => "unknown_type",
            Rejection::BadPayload => "bad_payload",
            Rejection::BadTimeout => "bad_timeout",
            Rejection::BadMaxAttempts => "bad_max_attempts",
            Rejection::NoCapableWorker => "no_capable_worker",
            Rejection::NotEnoughWorkers => "not_enough_workers",
            Rejection::BadReplicas => "bad_replicas",
            Rejection::QueueFull => "queue_full",
            Rejection::InsufficientCredits => "insufficient_credits",
            Rejection::StoreFull => "store_full",
        }
    }
}
