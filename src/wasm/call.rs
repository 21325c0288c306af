//! What a `wasm` task carries: the module, the input for its stdin and its arguments. The
//! gateway stores and sends it as the task's payload (JSON), so a `wasm` task travels, is
//! recorded and is retried like any other task.

use serde::{Deserialize, Serialize};

use super::ModuleId;

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
        Ok(())
    }
}
