//! Wire messages: what nodes say to each other, with their versions and size limits.
//!
//! Tasks travel over libp2p request-response (CBOR, size-limited by the codec); membership
//! travels over GossipSub as JSON (small, infrequent, and readable in a packet capture), each
//! message sealed in a libp2p signed envelope by the node it is about.
//! Every message carries `v`; a message with another version, or one that does not decode,
//! is dropped and counted by the receiver, never trusted.

use libp2p::PeerId;
use libp2p::core::SignedEnvelope;
use libp2p::identity::{Keypair, SigningError};
use serde::{Deserialize, Serialize};

use crate::membership::{MemberState, Reach};
use crate::telemetry::WireTrace;

/// Version of every message defined here.
pub const WIRE_VERSION: u16 = 1;

/// Largest task request a node accepts (payload plus envelope).
pub const MAX_TASK_REQUEST_BYTES: u64 = 1024 * 1024;
/// Largest task response a node accepts.
pub const MAX_TASK_RESPONSE_BYTES: u64 = 1024 * 1024;
/// Largest membership probe message.
pub const MAX_PROBE_BYTES: u64 = 1024;
/// Largest gossip message (heartbeat or advertisement), before its envelope.
pub const MAX_GOSSIP_BYTES: usize = 16 * 1024;
/// Most a signed envelope adds to a gossip message: the signer's public key, the payload
/// type and the signature, with their protobuf tags (an ed25519 signer adds about 120 bytes;
/// the rest leaves room for larger keys).
pub const MAX_ENVELOPE_OVERHEAD: usize = 1024;
/// Domain separation of gossip signatures: a signature made for anything else never verifies
/// as gossip, and ours never as anything else.
const GOSSIP_SIGNING_DOMAIN: &str = "p2p-network-gossip";
/// Payload type of a sealed gossip message: the JSON encoding of [`GossipMessage`], version 1.
const GOSSIP_PAYLOAD_TYPE: &[u8] = b"/p2p-network/gossip-json/1";

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
    /// W3C trace context of the gateway's span for this attempt, when it exports traces:
    /// the worker's spans become its children. Left out otherwise, and by older gateways; a
    /// malformed one starts a fresh trace on the worker.
    /// Boxed: most requests carry none, and every request in flight is held in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Box<WireTrace>>,
}

/// A worker's answer to one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResponse {
    pub v: u16,
    pub task_id: String,
    pub attempt: u32,
    pub worker: String,
    pub outcome: TaskOutcome,
    /// When the attempt started executing on the worker (Unix milliseconds, the worker's
    /// clock), for the task's timeline. Absent from refusals and from older workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// Fuel a `wasm` run burned (deterministic for the same engine settings: replicas of a
    /// task must agree on it). Absent for other task types and from older workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_used: Option<u64>,
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
    /// The task's own code failed in a way any worker would reproduce (a WebAssembly trap,
    /// out of fuel, out of memory, output too large): retrying elsewhere is useless.
    #[error("task failed: {0}")]
    Deterministic(String),
}

impl TaskError {
    /// Errors another worker could plausibly not have. A task's own failure is retried
    /// too (the worker may have been faulty), bounded by `max_attempts`; a bad payload or an
    /// unknown type will fail the same way everywhere.
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            TaskError::BadPayload(_) | TaskError::UnknownType(_) | TaskError::Version(_) | TaskError::Deterministic(_)
        )
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
    /// Not reachable because the helper's own ping timed out (it did not fail): no evidence
    /// that the target is down (Lifeguard's nack). Absent from older nodes' answers, which
    /// read as a failed ping, as they meant; older askers ignore it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
}

impl ProbeResponse {
    pub fn new(target: String, reach: Reach) -> Self {
        Self { v: WIRE_VERSION, target, reachable: reach == Reach::Reachable, timed_out: reach == Reach::Unknown }
    }

    /// The answer, about `target` (an answer about anyone else is a failure).
    pub fn reach(&self, target: &str) -> Reach {
        match (self.reachable && self.target == target, self.timed_out) {
            (true, _) => Reach::Reachable,
            (false, true) => Reach::Unknown,
            (false, false) => Reach::Unreachable,
        }
    }
}

/// Largest record-copy request: a batch of task records forwarded to one copy holder.
pub const MAX_RECORDS_REQUEST_BYTES: u64 = 4 * 1024 * 1024;
/// Largest record-copy response (a found record, or the fenced ids of a batch).
pub const MAX_RECORDS_RESPONSE_BYTES: u64 = 2 * 1024 * 1024;

/// One task record as its gateway forwards it to a copy holder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordCopy {
    pub id: String,
    /// The owner's fencing token: raised by every adoption; a lower one is stale.
    pub epoch: u32,
    /// The owner's batch number of this version: a later one replaces an earlier one, so
    /// batches that overtake each other on the wire never roll a record back.
    pub seq: u64,
    pub submitted_ms: u64,
    /// Set once the task is final.
    pub finished_ms: Option<u64>,
    /// The record as the owner's store keeps it (CBOR).
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// Sent by an owner that restarted and resumes the task: a holder with a final copy
    /// answers with it rather than take this older version.
    #[serde(default)]
    pub restored: bool,
}

/// Task-record copies (`tasks.record_copies`): a gateway forwards its records to the nodes
/// that hold their copies, and any node asks the others for a record it does not hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RecordsRequest {
    /// Keep (or update) these copies for `owner`, the sender.
    Replicate { v: u16, records: Vec<RecordCopy> },
    /// Do you hold task `id` (as its owner or as a copy holder)?
    Get { v: u16, id: String },
    /// Which unfinished records do you keep for me, the sender (by id, after `after`)? Sent
    /// by a gateway that restarted with its peer id: its own store may lack records that its
    /// holders acknowledged (the tail it had not synced, or a data dir that did not survive).
    Mine {
        v: u16,
        #[serde(default)]
        after: Option<String>,
    },
}

/// A copy holder's refusal of one forwarded record: someone else owns it now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fenced {
    pub id: String,
    pub owner: String,
    pub epoch: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RecordsResponse {
    /// The batch is held, except the records in `fenced` (adopted at a higher epoch) and in
    /// `finals` (restored records the holder already knows final: here is the final one).
    Replicated {
        v: u16,
        fenced: Vec<Fenced>,
        #[serde(default)]
        finals: Vec<RecordCopy>,
    },
    /// The record, if held: `owner` says the answer comes from the task's current owner
    /// (authoritative) rather than a copy that may lag behind it.
    Found { v: u16, copy: Option<RecordCopy>, owner: bool },
    /// One page of the unfinished copies kept for the asker; `next` is the `after` of the next
    /// page, `None` on the last.
    Yours { v: u16, copies: Vec<RecordCopy>, next: Option<String> },
}

/// Bytes of record copies a [`RecordsResponse::Yours`] page carries at most (it always
/// carries one, when any is left), well inside [`MAX_RECORDS_RESPONSE_BYTES`].
pub const MINE_PAGE_BYTES: usize = 1024 * 1024;

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
    /// The sender's publication counter (see [`CapabilityAdvertisement::seq`]).
    pub seq: u64,
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
    /// The sender's publication counter, counted from its start time in milliseconds. GossipSub
    /// names a message by a hash of its bytes, and ed25519 signatures are deterministic, so
    /// without it a heartbeat equal to an earlier one would be taken for a duplicate and dropped.
    pub seq: u64,
}

/// Most rumors a heartbeat may carry; more is a malformed message.
pub const MAX_RUMORS: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum GossipMessage {
    HeartBeat(HeartBeat),
    CapabilityAdvertisement(CapabilityAdvertisement),
}

/// Why a sealed gossip message was not opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("not a signed envelope: {0}")]
    NotSealed(String),
    #[error("the envelope's signature does not verify")]
    BadSignature,
    #[error("the envelope carries another payload type")]
    PayloadType,
    #[error(transparent)]
    Payload(#[from] DecodeError),
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

    /// Signs the encoded message with `key`, the key of the node it is about.
    pub fn seal(&self, key: &Keypair) -> Result<Vec<u8>, SigningError> {
        seal_payload(key, self.encode())
    }

    /// Opens a sealed message: the envelope must decode and its signature verify; then the
    /// payload is decoded like [`GossipMessage::decode`]. Returns the signer with the
    /// message (whether the message is about its signer is the caller's check). Never panics.
    pub fn open(bytes: &[u8]) -> Result<(PeerId, Self), OpenError> {
        if bytes.len() > MAX_GOSSIP_BYTES + MAX_ENVELOPE_OVERHEAD {
            return Err(OpenError::TooLarge(bytes.len()));
        }
        let envelope =
            SignedEnvelope::from_protobuf_encoding(bytes).map_err(|e| OpenError::NotSealed(e.to_string()))?;
        let (payload, signer) = envelope
            .payload_and_signing_key(GOSSIP_SIGNING_DOMAIN.to_owned(), GOSSIP_PAYLOAD_TYPE)
            .map_err(|e| match e {
                libp2p::core::signed_envelope::ReadPayloadError::UnexpectedPayloadType { .. } => OpenError::PayloadType,
                _ => OpenError::BadSignature,
            })?;
        Ok((signer.to_peer_id(), Self::decode(payload)?))
    }

    /// The node the message claims to come from; must match its signer.
    pub fn claimed_node(&self) -> &str {
        match self {
            GossipMessage::HeartBeat(h) => &h.node,
            GossipMessage::CapabilityAdvertisement(a) => &a.node,
        }
    }
}

/// Seals any payload as a gossip message signed by `key`: what [`GossipMessage::seal`] does
/// with an encoded message (tests use it to seal what no node would send).
pub fn seal_payload(key: &Keypair, payload: Vec<u8>) -> Result<Vec<u8>, SigningError> {
    let envelope = SignedEnvelope::new(key, GOSSIP_SIGNING_DOMAIN.to_owned(), GOSSIP_PAYLOAD_TYPE.to_vec(), payload)?;
    Ok(envelope.into_protobuf_encoding())
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
            seq: 1,
        })
    }

    #[test]
    fn sealed_gossip_opens_with_its_signer() {
        let key = Keypair::generate_ed25519();
        let m = advert();
        let sealed = m.seal(&key).unwrap();
        assert_eq!(GossipMessage::open(&sealed).unwrap(), (key.public().to_peer_id(), m));
    }

    #[test]
    fn unsealed_badly_signed_and_oversized_gossip_is_not_opened() {
        let key = Keypair::generate_ed25519();
        // A plain message (what an unsigned sender would publish).
        assert!(matches!(GossipMessage::open(&advert().encode()), Err(OpenError::NotSealed(_))));
        // The signature is the envelope's last field: any bit of it flipped.
        let mut sealed = advert().seal(&key).unwrap();
        *sealed.last_mut().unwrap() ^= 1;
        assert_eq!(GossipMessage::open(&sealed), Err(OpenError::BadSignature));
        // Signed for another domain: the signature does not carry over.
        let other = SignedEnvelope::new(&key, "another-domain".into(), GOSSIP_PAYLOAD_TYPE.to_vec(), advert().encode())
            .unwrap();
        assert_eq!(GossipMessage::open(&other.into_protobuf_encoding()), Err(OpenError::BadSignature));
        let other =
            SignedEnvelope::new(&key, GOSSIP_SIGNING_DOMAIN.into(), b"other".to_vec(), advert().encode()).unwrap();
        assert_eq!(GossipMessage::open(&other.into_protobuf_encoding()), Err(OpenError::PayloadType));
        // Well signed, but what is inside is checked as before.
        let garbage = seal_payload(&key, b"{not json".to_vec()).unwrap();
        assert!(matches!(GossipMessage::open(&garbage), Err(OpenError::Payload(DecodeError::Malformed(_)))));
        let big = seal_payload(&key, vec![b' '; MAX_GOSSIP_BYTES + 1]).unwrap();
        assert_eq!(GossipMessage::open(&big), Err(OpenError::Payload(DecodeError::TooLarge(MAX_GOSSIP_BYTES + 1))));
        let huge = vec![0u8; MAX_GOSSIP_BYTES + MAX_ENVELOPE_OVERHEAD + 1];
        assert_eq!(GossipMessage::open(&huge), Err(OpenError::TooLarge(huge.len())));
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
            seq: 1,
            rumors: (0..MAX_RUMORS + 1)
                .map(|i| WireRumor { peer: i.to_string(), state: MemberState::Suspect, incarnation: 0 })
                .collect(),
        });
        assert_eq!(GossipMessage::decode(&hb.encode()), Err(DecodeError::Bounds("rumors")));
    }

    #[test]
    fn trace_fields_are_optional_both_ways() {
        let request = TaskRequest {
            v: WIRE_VERSION,
            task_id: "t".into(),
            attempt: 2,
            task_type: "echo".into(),
            payload: "hi".into(),
            required_capabilities: Vec::new(),
            deadline_ms: 1000,
            trace: None,
        };
        // What an older node sends and expects: no trace field at all.
        #[derive(Serialize, Deserialize)]
        struct OldRequest {
            v: u16,
            task_id: String,
            attempt: u32,
            task_type: String,
            payload: String,
            required_capabilities: Vec<String>,
            deadline_ms: u64,
        }
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &request).unwrap();
        let old: OldRequest = cbor4ii::serde::from_slice(&bytes).unwrap();
        assert_eq!(old.attempt, 2);
        let back: TaskRequest = cbor4ii::serde::from_slice(&cbor4ii::serde::to_vec(Vec::new(), &old).unwrap()).unwrap();
        assert_eq!(back, request);
        // A new node's request still reads on an old node (unknown fields are ignored).
        let traced = TaskRequest {
            trace: Some(Box::new(WireTrace {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: None,
            })),
            ..request
        };
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &traced).unwrap();
        assert_eq!(cbor4ii::serde::from_slice::<OldRequest>(&bytes).unwrap().task_id, "t");
        assert_eq!(cbor4ii::serde::from_slice::<TaskRequest>(&bytes).unwrap(), traced);
    }

    #[test]
    fn only_deterministic_failures_are_final() {
        assert!(TaskError::Busy.retryable());
        assert!(TaskError::Timeout.retryable());
        assert!(TaskError::Failed("x".into()).retryable());
        assert!(!TaskError::UnknownType("x".into()).retryable());
        assert!(!TaskError::BadPayload("x".into()).retryable());
        assert!(!TaskError::Deterministic("out of fuel".into()).retryable());
    }
}
