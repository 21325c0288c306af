//! What a gateway remembers about each task: its state, every attempt, and the final result.
//! This is also the JSON shape of a task in the HTTP API.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl TaskState {
    pub fn is_final(self) -> bool {
        matches!(self, TaskState::Completed | TaskState::Failed | TaskState::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
}

/// How an attempt ended, as `AttemptRecord::outcome` spells it (users and scripts read these
/// strings in the API, so they never change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AttemptOutcome {
    /// Dispatched and not ended yet.
    Running,
    Ok,
    /// The worker answered with an error, or a result that failed verification.
    Error,
    /// The worker refused for now; the task never ran there.
    Busy,
    /// No answer within the attempt's timeout.
    Timeout,
    /// The worker, the connection or the answer was lost (or the gateway gave up on it).
    Lost,
    /// No capable worker was free within the timeout: the task never left the queue.
    Queued,
    Cancelled,
}

impl AttemptOutcome {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Running => "running",
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::Error => "error",
            AttemptOutcome::Busy => "busy",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Lost => "lost",
            AttemptOutcome::Queued => "queued",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub worker: String,
    /// `ok`, `error`, `busy`, `timeout`, `lost`, `queued`, `cancelled`, or `running` while in
    /// flight (see `AttemptOutcome`).
    pub outcome: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskRecord {
    pub id: String,
    #[serde(rename = "type")]
    pub task_type: String,
    pub payload: String,
    pub state: TaskState,
    /// Attempts dispatched so far (busy refusals included).
    pub attempts: u32,
    /// The worker of the latest attempt.
    pub worker: Option<String>,
    pub result: Option<String>,
    pub error: Option<String>,
    #[serde(with = "rfc3339")]
    pub submitted_at: SystemTime,
    #[serde(with = "rfc3339_opt")]
    pub finished_at: Option<SystemTime>,
    pub attempt_history: Vec<AttemptRecord>,
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
