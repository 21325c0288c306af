//! Wire messages: what nodes say to each other, with their versions and size limits.
//!
//! Tasks travel over libp2p request-response (CBOR, size-limited by the codec); membership
//! travels over GossipSub as JSON (small, infrequent, and readable in a packet capture).
//! Every message carries `v`; a message with another version, or one that does not decode,
//! is dropped and counted by the receiver, never trusted.

use serde::{Deserialize, Serialize};

use crate::membership::MemberState;

/// Version of every message defined here.
pub const WIRE_VERSION: u16 = 1;

/// Largest task request a node accepts (payload plus envelope).
pub const MAX_TASK_REQUEST_BYTES: u64 = 1024 * 1024;
/// Largest task response a node accepts.
pub const MAX_TASK_RESPONSE_BYTES: u64 = 1024 * 1024;
/// Largest membership probe message.
pub const MAX_PROBE_BYTES: u64 = 1024;
/// Largest gossip message (heartbeat or advertisement).
pub const MAX_GOSSIP_BYTES: usize = 16 * 1024;

/// Sent by a gateway to a worker: run this attempt of this task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    pub v: u16,
    pub task_id: String,
    pub attempt: u32,
    pub task_type: String,
    pub payload: String,
    pub required_capabilities: Vec<String>,
    /// Milliseconds the worker may spend before the gateway gives up on this attempt.
    pub deadline_ms: u64,
}

/// A worker's answer to one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResponse {
    pub v: u16,
    pub task_id: String,
    pub attempt: u32,
    pub worker: String,
    pub outcome: TaskOutcome,
}

impl TaskResponse {
    /// Bytes of the result it carries (0 for an error), as the message metrics count them.
    pub fn result_len(&self) -> usize {
        match &self.outcome {
            TaskOutcome::Ok(result) => result.len(),
            TaskOutcome::Err(_) => 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskOutcome {
    Ok(String),
    Err(TaskError),
}

/// Why an attempt did not produce a result. `retryable` tells the gateway whether another
/// worker might do better.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TaskError {
    #[error("worker busy: at its concurrency limit")]
    Busy,
    #[error("worker lacks capability {0:?}")]
    MissingCapability(String),
    #[error("unknown task type {0:?}")]
    UnknownType(String),
    #[error("bad payload: {0}")]
    BadPayload(String),
    #[error("task failed: {0}")]
    Failed(String),
    #[error("deadline exceeded on the worker")]
    Timeout,
    #[error("worker is shutting down")]
    ShuttingDown,
    #[error("unsupported message version {0}")]
    Version(u16),
    #[error("this worker does not take tasks from the sender (security.allowed_submitters)")]
    NotAllowed,
}

impl TaskError {
    /// Errors another worker could plausibly not have. A task's own failure is retried
    /// too (the worker may have been faulty), bounded by `max_attempts`; a bad payload or an
    /// unknown type will fail the same way everywhere.
    pub fn retryable(&self) -> bool {
        !matches!(self, TaskError::BadPayload(_) | TaskError::UnknownType(_) | TaskError::Version(_))
    }
}

/// SWIM indirect probe: "can you reach `target`?"
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRequest {
    pub v: u16,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResponse {
    pub v: u16,
    pub target: String,
    pub reachable: bool,
}

/// Liveness and membership state, published on the heartbeat topic. Rumors piggyback
/// suspicions about other members (SWIM dissemination).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartBeat {
    pub v: u16,
    pub node: String,
    pub incarnation: u64,
    pub state: MemberState,
    pub load: u32,
    #[serde(default)]
    pub rumors: Vec<WireRumor>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRumor {
    pub peer: String,
    pub state: MemberState,
    pub incarnation: u64,
}

/// What a node can do and how busy it is, published on the capabilities topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityAdvertisement {
    pub v: u16,
    pub node: String,
    pub incarnation: u64,
    pub role: String,
    pub capabilities: Vec<String>,
    pub capacity: u32,
    pub load: u32,
    pub addresses: Vec<String>,
}

/// Most rumors a heartbeat may carry; more is a malformed message.
pub const MAX_RUMORS: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum GossipMessage {
    HeartBeat(HeartBeat),
    CapabilityAdvertisement(CapabilityAdvertisement),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unsupported version {0}")]
    Version(u16),
    #[error("field {0} out of bounds")]
    Bounds(&'static str),
}

impl GossipMessage {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("gossip messages contain only serializable plain data")
    }

    /// Decodes and bounds-checks a gossip message. Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_GOSSIP_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let msg: GossipMessage = serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let v = match &msg {
            GossipMessage::HeartBeat(h) => {
                if h.rumors.len() > MAX_RUMORS {
                    return Err(DecodeError::Bounds("rumors"));
                }
                h.v
            }
            GossipMessage::CapabilityAdvertisement(a) => {
                if a.capabilities.len() > 64 || a.addresses.len() > 32 || a.role.len() > 32 {
                    return Err(DecodeError::Bounds("capabilities/addresses/role"));
                }
                a.v
            }
        };
        if v != WIRE_VERSION {
            return Err(DecodeError::Version(v));
        }
        Ok(msg)
    }

    /// The node the message claims to come from; must match the GossipSub source.
    pub fn claimed_node(&self) -> &str {
        match self {
            GossipMessage::HeartBeat(h) => &h.node,
            GossipMessage::CapabilityAdvertisement(a) => &a.node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert() -> GossipMessage {
        GossipMessage::CapabilityAdvertisement(CapabilityAdvertisement {
            v: WIRE_VERSION,
            node: "peer".into(),
            incarnation: 7,
            role: "worker".into(),
            capabilities: vec!["compute".into()],
            capacity: 4,
            load: 1,
            addresses: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        })
    }

    #[test]
    fn gossip_round_trips() {
        let m = advert();
        assert_eq!(GossipMessage::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn garbage_oversized_and_wrong_version_are_rejected() {
        assert!(matches!(GossipMessage::decode(b"\xff\x00garbage"), Err(DecodeError::Malformed(_))));
        let big = vec![b' '; MAX_GOSSIP_BYTES + 1];
        assert_eq!(GossipMessage::decode(&big), Err(DecodeError::TooLarge(MAX_GOSSIP_BYTES + 1)));
        let mut m = advert();
        if let GossipMessage::CapabilityAdvertisement(a) = &mut m {
            a.v = 99;
        }
        assert_eq!(GossipMessage::decode(&m.encode()), Err(DecodeError::Version(99)));
    }

    #[test]
    fn too_many_rumors_is_malformed() {
        let hb = GossipMessage::HeartBeat(HeartBeat {
            v: WIRE_VERSION,
            node: "n".into(),
            incarnation: 1,
            state: MemberState::Alive,
            load: 0,
            rumors: (0..MAX_RUMORS + 1)
                .map(|i| WireRumor { peer: i.to_string(), state: MemberState::Suspect, incarnation: 0 })
                .collect(),
        });
        assert_eq!(GossipMessage::decode(&hb.encode()), Err(DecodeError::Bounds("rumors")));
    }

    #[test]
    fn only_deterministic_failures_are_final() {
        assert!(TaskError::Busy.retryable());
        assert!(TaskError::Timeout.retryable());
        assert!(TaskError::Failed("x".into()).retryable());
        assert!(!TaskError::UnknownType("x".into()).retryable());
        assert!(!TaskError::BadPayload("x".into()).retryable());
    }
}
