//! The built-in task types: what each needs (capability, payload shape), and the pure parts
//! of running them (the proof-of-work and its cheap verification). Shared by the gateway,
//! which validates and verifies, and the worker, which executes.

use sha2::{Digest, Sha256};

/// A task type the cluster knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Proof-of-work over the payload: find a nonce whose SHA-256 has `difficulty` leading zero bits.
    Compute,
    /// `put <key> <value>` or `get <key>` in the Kademlia DHT.
    Storage,
    Echo,
    /// `sleep <ms>`
    Sleep,
    /// Always fails with the payload as the message.
    Fail,
    /// A user's WebAssembly module run on its input (`crate::wasm`); the payload is a
    /// [`crate::wasm::WasmCall`].
    Wasm,
}

/// Longest `sleep` a task may ask for.
pub const MAX_SLEEP_MS: u64 = 600_000;
/// Largest payload: what fits in a task request with room for its envelope.
pub const MAX_PAYLOAD_BYTES: usize = crate::protocol::MAX_TASK_REQUEST_BYTES as usize - 4096;
/// Largest stored value.
pub const MAX_STORAGE_VALUE: usize = 60 * 1024;
/// Task types in the order `help` lists them.
pub const KNOWN_TYPES: &[&str] = &["compute", "storage", "echo", "sleep", "fail", "wasm"];

impl TaskKind {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "compute" => Self::Compute,
            "storage" => Self::Storage,
            "echo" => Self::Echo,
            "sleep" => Self::Sleep,
            "fail" => Self::Fail,
            "wasm" => Self::Wasm,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Compute => "compute",
            Self::Storage => "storage",
            Self::Echo => "echo",
            Self::Sleep => "sleep",
            Self::Fail => "fail",
            Self::Wasm => "wasm",
        }
    }

    /// The capability a worker must advertise; the test types run on any worker.
    pub fn capability(self) -> Option<&'static str> {
        match self {
            Self::Compute => Some("compute"),
            Self::Storage => Some("storage"),
            Self::Wasm => Some("wasm"),
            Self::Echo | Self::Sleep | Self::Fail => None,
        }
    }

    /// Checks the payload's shape before the task is accepted, so a malformed task is refused
    /// at the gateway instead of failing on every worker.
    pub fn validate_payload(self, payload: &str) -> Result<(), String> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(format!("{} bytes exceeds the maximum of {MAX_PAYLOAD_BYTES}", payload.len()));
        }
        match self {
            Self::Sleep => parse_sleep(payload).map(|_| ()),
            Self::Storage => StorageOp::parse(payload).map(|_| ()),
            Self::Wasm => crate::wasm::WasmCall::decode(payload).map(|_| ()),
            Self::Compute | Self::Echo | Self::Fail => Ok(()),
        }
    }
}

pub fn parse_sleep(payload: &str) -> Result<u64, String> {
    let ms: u64 =
        payload.trim().parse().map_err(|_| format!("sleep needs a number of milliseconds, got {payload:?}"))?;
    if ms > MAX_SLEEP_MS {
        return Err(format!("sleep of {ms} ms exceeds the maximum of {MAX_SLEEP_MS} ms"));
    }
    Ok(ms)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageOp {
    Put { key: String, value: String },
    Get { key: String },
}

impl StorageOp {
    pub fn parse(payload: &str) -> Result<Self, String> {
        let payload = payload.trim_start();
        let (op, rest) = payload.split_once(char::is_whitespace).unwrap_or((payload, ""));
        let rest = rest.trim_start();
        let usage = "storage needs `put <key> <value>` or `get <key>`";
        match op {
            "put" => {
                let (key, value) = rest.split_once(char::is_whitespace).ok_or_else(|| usage.to_string())?;
                let value = value.trim_start();
                if value.len() > MAX_STORAGE_VALUE {
                    return Err(format!("value of {} bytes exceeds {MAX_STORAGE_VALUE}", value.len()));
                }
                Ok(Self::Put { key: key.to_string(), value: value.to_string() })
            }
            "get" if !rest.is_empty() && !rest.contains(char::is_whitespace) => Ok(Self::Get { key: rest.to_string() }),
            _ => Err(usage.to_string()),
        }
    }

    /// DHT key: namespaced so application records never collide with anything else.
    pub fn dht_key(key: &str) -> Vec<u8> {
        format!("/p2p-network/storage/{key}").into_bytes()
    }
}

/// Result of a proof-of-work.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proof {
    pub nonce: u64,
    pub hash: String,
    pub difficulty: u32,
}

fn pow_hash(payload: &[u8], nonce: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(payload);
    h.update(nonce.to_le_bytes());
    h.finalize().into()
}

fn leading_zero_bits(hash: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for byte in hash {
        if *byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

/// Finds the smallest nonce meeting `difficulty`; checks `cancelled` every 4096 hashes so a
/// task past its deadline stops burning CPU.
pub fn prove(payload: &[u8], difficulty: u32, cancelled: impl Fn() -> bool) -> Option<Proof> {
    for nonce in 0u64.. {
        if nonce % 4096 == 0 && cancelled() {
            return None;
        }
        let hash = pow_hash(payload, nonce);
        if leading_zero_bits(&hash) >= difficulty {
            return Some(Proof { nonce, hash: hex::encode(hash), difficulty });
        }
    }
    None
}

/// One hash: verifies a worker's compute result without redoing the work.
pub fn verify(payload: &[u8], result: &str, min_difficulty: u32) -> Result<Proof, String> {
    let proof: Proof = serde_json::from_str(result).map_err(|e| format!("result is not a proof: {e}"))?;
    let hash = pow_hash(payload, proof.nonce);
    if hex::encode(hash) != proof.hash {
        return Err("hash does not match payload and nonce".into());
    }
    if leading_zero_bits(&hash) < min_difficulty || proof.difficulty < min_difficulty {
        return Err(format!("proof below difficulty {min_difficulty}"));
    }
    Ok(proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_verifies_and_tampering_is_caught() {
        let proof = prove(b"test_payload", 12, || false).unwrap();
        let json = serde_json::to_string(&proof).unwrap();
        assert_eq!(verify(b"test_payload", &json, 12).unwrap(), proof);
        assert!(verify(b"other_payload", &json, 12).is_err());
        let mut forged = proof.clone();
        forged.nonce += 1;
        assert!(verify(b"test_payload", &serde_json::to_string(&forged).unwrap(), 12).is_err());
        assert!(verify(b"test_payload", &json, 40).is_err());
        assert!(verify(b"test_payload", "not json", 1).is_err());
    }

    #[test]
    fn cancelled_proof_stops() {
        assert_eq!(prove(b"x", 256, || true), None);
    }

    #[test]
    fn storage_payloads_parse() {
        assert_eq!(
            StorageOp::parse("put k hello world").unwrap(),
            StorageOp::Put { key: "k".into(), value: "hello world".into() }
        );
        assert_eq!(StorageOp::parse("get k").unwrap(), StorageOp::Get { key: "k".into() });
        for bad in ["", "put", "put k", "get", "get a b", "delete k"] {
            assert!(StorageOp::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn sleep_payload_is_bounded() {
        assert_eq!(parse_sleep("250").unwrap(), 250);
        assert!(parse_sleep("soon").is_err());
        assert!(parse_sleep("600001").is_err());
    }

    #[test]
    fn kinds_and_capabilities() {
        assert_eq!(TaskKind::parse("compute").unwrap().capability(), Some("compute"));
        assert_eq!(TaskKind::parse("echo").unwrap().capability(), None);
        assert!(TaskKind::parse("mine-bitcoin").is_none());
        for t in KNOWN_TYPES {
            assert_eq!(TaskKind::parse(t).unwrap().name(), *t);
        }
    }
}
