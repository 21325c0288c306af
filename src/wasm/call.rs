//! What a `wasm` task carries: the module, the input for its stdin and its arguments. The
//! gateway stores and sends it as the task's payload (JSON), so a `wasm` task travels, is
//! recorded and is retried like any other task.

use serde::{Deserialize, Serialize};

use super::{Limits, ModuleId};

/// Most arguments a call may pass, and most bytes all of them may take.
pub const MAX_ARGS: usize = 64;
pub const MAX_ARGS_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmCall {
    pub module: ModuleId,
    #[serde(default)]
    pub input: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The task's own limits, below the worker's (`wasm:` config): a worker applies the
    /// lower of the two. Replicas compare fuel, so a task that sets its limits runs under the
    /// same ones everywhere.
    #[serde(default, skip_serializing_if = "CallLimits::is_empty")]
    pub limits: CallLimits,
}

/// Limits a task asks for; each one left out is the worker's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

impl CallLimits {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `ceiling` lowered to what the task asked for.
    pub fn apply(&self, ceiling: Limits) -> Limits {
        let bytes = |v: Option<u64>| v.map_or(usize::MAX, |v| usize::try_from(v).unwrap_or(usize::MAX));
        Limits {
            fuel: self.fuel.unwrap_or(u64::MAX),
            deadline: ceiling.deadline,
            memory_bytes: bytes(self.memory_bytes),
            output_bytes: bytes(self.output_bytes),
        }
        .within(ceiling)
    }

    fn check(&self) -> Result<(), String> {
        for (name, v) in [("fuel", self.fuel), ("memory_bytes", self.memory_bytes), ("output_bytes", self.output_bytes)]
        {
            if v == Some(0) {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

impl WasmCall {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a call is plain data")
    }

    /// Parses and bounds-checks a task payload. Never panics.
    pub fn decode(payload: &str) -> Result<Self, String> {
        let call: WasmCall = serde_json::from_str(payload)
            .map_err(|e| format!("a wasm payload is {{\"module\": \"sha256:...\", \"input\", \"args\"}}: {e}"))?;
        call.check()?;
        Ok(call)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.args.len() > MAX_ARGS {
            return Err(format!("{} arguments exceed the maximum of {MAX_ARGS}", self.args.len()));
        }
        let bytes: usize = self.args.iter().map(String::len).sum();
        if bytes > MAX_ARGS_BYTES {
            return Err(format!("arguments of {bytes} bytes exceed the maximum of {MAX_ARGS_BYTES}"));
        }
        if self.args.iter().any(|a| a.contains('\0')) {
            return Err("an argument contains a NUL byte".into());
        }
        self.limits.check()
    }
}
