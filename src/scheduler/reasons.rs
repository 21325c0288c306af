//! Why the gateway refuses a submission or drops an answer, as the label values its metrics
//! count them under. The values are part of the metrics' interface (dashboards and alerts
//! select on them), so a variant may be renamed but its label never changes.

/// Why a submission was refused (`tasks_rejected{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejection {
    UnknownType,
    BadPayload,
    BadTimeout,
    BadMaxAttempts,
    NoCapableWorker,
    QueueFull,
}

impl Rejection {
    pub(super) fn label(self) -> &'static str {
        match self {
            Rejection::UnknownType => "unknown_type",
            Rejection::BadPayload => "bad_payload",
            Rejection::BadTimeout => "bad_timeout",
            Rejection::BadMaxAttempts => "bad_max_attempts",
            Rejection::NoCapableWorker => "no_capable_worker",
            Rejection::QueueFull => "queue_full",
        }
    }
}

/// Why a worker's answer was dropped (`messages_dropped{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dropped {
    /// For an attempt already ended, or from a peer never given it.
    StaleTaskResult,
    /// From the right peer for the right attempt, but naming another task, attempt or worker.
    MismatchedTaskResult,
}

impl Dropped {
    pub(super) fn label(self) -> &'static str {
        match self {
            Dropped::StaleTaskResult => "stale_task_result",
            Dropped::MismatchedTaskResult => "mismatched_task_result",
        }
    }
}
