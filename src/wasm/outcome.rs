//! What one run of a module ended as. Every variant but `DeadlineExceeded` and
//! `ModuleUnavailable` is deterministic: with the same module, input, arguments, limits and
//! engine settings it ends the same way on any worker, so retrying it elsewhere is useless.

/// The end of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `_start` returned (or the guest exited with status 0): its stdout, and the fuel it
    /// burned (deterministic for the same engine settings).
    Completed { stdout: Vec<u8>, fuel_used: u64 },
    /// The guest exited with a non-zero status; the tail of its stderr says why.
    Exited { code: i32, stderr: String },
    /// A WebAssembly trap (unreachable, out-of-bounds access, a Rust panic's abort, ...).
    Trapped(String),
    /// It burned all the fuel it was given (an infinite loop ends here).
    OutOfFuel { limit: u64 },
    /// It asked for more linear memory than its limit.
    OutOfMemory { limit: usize },
    /// It wrote more to stdout than its limit.
    OutputTooLarge { limit: usize },
    /// Still running at its wall-clock deadline (depends on the machine: not deterministic).
    DeadlineExceeded,
    /// The module could not be had (not in the store, not fetchable, or it failed to compile).
    ModuleUnavailable(String),
}

impl Outcome {
    /// Whether another worker would end the same way.
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, Self::DeadlineExceeded | Self::ModuleUnavailable(_))
    }

    /// The metric label of the variant.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Completed { .. } => "completed",
            Self::Exited { .. } => "exited",
            Self::Trapped(_) => "trapped",
            Self::OutOfFuel { .. } => "out_of_fuel",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::OutputTooLarge { .. } => "output_too_large",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::ModuleUnavailable(_) => "module_unavailable",
        }
    }

    /// One line for a task's error.
    pub fn describe(&self) -> String {
        match self {
            Self::Completed { fuel_used, .. } => format!("completed ({fuel_used} fuel)"),
            Self::Exited { code, stderr } if stderr.is_empty() => format!("exited with status {code}"),
            Self::Exited { code, stderr } => format!("exited with status {code}: {stderr}"),
            Self::Trapped(message) => format!("trapped: {message}"),
            Self::OutOfFuel { limit } => format!("out of fuel (limit {limit})"),
            Self::OutOfMemory { limit } => format!("out of memory (limit {limit} bytes)"),
            Self::OutputTooLarge { limit } => format!("output too large (limit {limit} bytes)"),
            Self::DeadlineExceeded => "wall-clock deadline exceeded".to_string(),
            Self::ModuleUnavailable(why) => format!("module unavailable: {why}"),
        }
    }
}
