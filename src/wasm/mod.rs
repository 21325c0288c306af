//! WebAssembly tasks: users' own code, sandboxed. A module is a WASI preview 1 command
//! (input on stdin, result on stdout) named by the SHA-256 of its bytes.
//!
//! - [`engine`]: wasmtime (Cranelift), the compiled-module cache, and one run of a module
//!   under its [`limits`] with a typed [`outcome`];
//! - [`validate`]: what an upload must be (WebAssembly, a WASI command, only our imports);
//! - [`modules`]: the node's on-disk module store, bounded, least recently used out first;
//! - [`fetch`]: the chunked protocol a worker uses to get a module from the task's sender;
//! - [`service`]: the node's engine, store and fetching together, made on first use;
//! - [`call`]: what a `wasm` task's payload carries (module, input, arguments).

pub mod call;
pub mod engine;
pub mod fetch;
pub mod limits;
pub mod modules;
pub mod outcome;
pub mod service;
#[cfg(test)]
mod tests;
pub mod validate;

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

pub use call::WasmCall;
pub use engine::WasmEngine;
pub use limits::Limits;
pub use modules::ModuleStore;
pub use outcome::Outcome;
pub use service::{UploadError, WasmService};
pub use validate::InvalidModule;

/// A module's name: the SHA-256 of its bytes, written `sha256:<64 hex digits>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId([u8; 32]);

impl ModuleId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    pub fn from_digest(digest: [u8; 32]) -> Self {
        Self(digest)
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 hex digits alone (file names).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `bytes` are this module (the check every fetched or read module passes).
    pub fn matches(&self, bytes: &[u8]) -> bool {
        Self::of(bytes) == *self
    }
}

impl fmt::Display for ModuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a module id (sha256: followed by 64 hex digits)")]
pub struct BadModuleId(pub String);

impl FromStr for ModuleId {
    type Err = BadModuleId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadModuleId(s.chars().take(80).collect());
        let hex_part = s.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex_part.len() != 64 {
            return Err(bad());
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_part.to_ascii_lowercase(), &mut digest).map_err(|_| bad())?;
        Ok(Self(digest))
    }
}

impl serde::Serialize for ModuleId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ModuleId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
