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
    /// The W3C trace id of the task's journey (32 hex digits): the submitter's when its
    /// request carried a `traceparent`, else a fresh one. Every log line about the task
    /// carries it too. Empty in records stored before traces existed.
    #[serde(default)]
    pub trace_id: String,
    /// What happened when, attempt by attempt (at most [`MAX_TIMELINE`] events: the first,
    /// then the latest).
    #[serde(default)]
    pub timeline: Vec<TimelineEvent>,
    /// The gateway responsible for the task now: the one that accepted it, or the node that
    /// adopted it once that gateway was lost. Empty in records stored before copies existed.
    #[serde(default)]
    pub owner: String,
    /// The owner's fencing token: 1 at acceptance, raised by each adoption. Updates carrying
    /// a lower one come from a deposed owner and are ignored.
    #[serde(default)]
    pub epoch: u32,
    /// The nodes holding copies of the record (`tasks.record_copies`).
    #[serde(default)]
    pub copies: Vec<String>,
    /// The gateway the task was adopted from, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopted_from: Option<String>,
    /// Fuel the `wasm` run burned (for a replicated task, what the agreeing replicas burned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_used: Option<u64>,
    /// A replicated task: the replicas asked for ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// ... and how many of them must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// A replicated task: every replica launched, with its worker and what it said.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_results: Vec<ReplicaResult>,
    /// A replica: the replicated task it runs for (its id is that task's, then `.r<n>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<String>,
    /// What the completed task paid to whom, and why (`ledger`; none without a ledger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<super::payment::TaskPayment>,
}

/// One replica of a replicated task, as the task's record shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplicaResult {
    /// The replica's own task id (`<task id>.r<n>`).
    pub task: String,
    /// The worker of its latest attempt.
    pub worker: Option<String>,
    pub state: TaskState,
    /// SHA-256 (hex) of its output; of its error, for a failure any worker would reproduce.
    /// What the quorum compares, with `fuel_used`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_used: Option<u64>,
    /// The deterministic failure it reported, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether it agreed with the quorum, once there is one (false: it was in the minority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreed: Option<bool>,
}

/// Most events a task's timeline keeps; a task that keeps being refused (busy workers) would
/// otherwise grow its record without bound.
pub const MAX_TIMELINE: usize = 64;

/// One step of a task's journey.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TimelineEvent {
    /// When (Unix milliseconds; `started` is the worker's clock, the rest the gateway's).
    pub at_ms: u64,
    /// The attempt it belongs to (0: before the first dispatch).
    pub attempt: u32,
    pub event: TimelineKind,
    /// The worker, for `dispatched`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Why, for `attempt_failed` and `busy`; the error, for a final `failed` or `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    /// Waiting for a worker with room (again, after a retry or a busy refusal).
    Queued,
    /// Sent to `worker`.
    Dispatched,
    /// The worker started executing it (the worker's clock).
    Started,
    /// The worker's answer arrived.
    Answered,
    /// The worker was busy: the task goes to another at no cost.
    Busy,
    /// The attempt failed (`detail` says why); a retry follows unless the task failed.
    AttemptFailed,
    /// A copy holder took the task over from its lost gateway (`detail` names it).
    Adopted,
    /// The final states, as `state` spells them.
    Completed,
    Failed,
    Cancelled,
}

impl TimelineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimelineKind::Queued => "queued",
            TimelineKind::Dispatched => "dispatched",
            TimelineKind::Started => "started",
            TimelineKind::Answered => "answered",
            TimelineKind::Busy => "busy",
            TimelineKind::AttemptFailed => "attempt_failed",
            TimelineKind::Adopted => "adopted",
            TimelineKind::Completed => "completed",
            TimelineKind::Failed => "failed",
            TimelineKind::Cancelled => "cancelled",
        }
    }
}

impl TaskRecord {
    /// Adds an event at `at_ms`, keeping the first event and the latest ones within the cap.
    pub(super) fn note(&mut self, at_ms: u64, event: TimelineKind, worker: Option<String>, detail: Option<String>) {
        if self.timeline.len() >= MAX_TIMELINE {
            self.timeline.remove(1);
        }
        self.timeline.push(TimelineEvent { at_ms, attempt: self.attempts, event, worker, detail });
    }
}

/// Now, in Unix milliseconds.
pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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
