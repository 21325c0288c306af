//! The limits of one run and the store's resource limiter that enforces the memory one.
//!
//! CPU is bounded by fuel (deterministic: the same count on every machine), wall-clock time
//! by epoch interruption (a backstop for what fuel does not see, like a slow host), memory by
//! [`MemoryLimiter`], output by the capacity of the stdout pipe.

use std::time::Duration;

/// Most table elements a guest may have (function tables; a pointer each in the host).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Limits of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel: roughly one unit per WebAssembly instruction.
    pub fuel: u64,
    /// Wall-clock time the run may take.
    pub deadline: Duration,
    /// Linear memory, in bytes.
    pub memory_bytes: usize,
    /// Bytes the guest may write to stdout.
    pub output_bytes: usize,
}

impl Limits {
    /// These limits, made no larger than `ceiling` (a task may ask for less than the node
    /// allows, never more).
    pub fn within(self, ceiling: Limits) -> Limits {
        Limits {
            fuel: self.fuel.min(ceiling.fuel),
            deadline: self.deadline.min(ceiling.deadline),
            memory_bytes: self.memory_bytes.min(ceiling.memory_bytes),
            output_bytes: self.output_bytes.min(ceiling.output_bytes),
        }
    }
}

/// Refuses memory growth past the limit and remembers that it did, so a run that then
/// aborts (what an allocation failure does in most languages) is reported as out of memory
/// rather than as a bare trap.
#[derive(Debug)]
pub struct MemoryLimiter {
    max_bytes: usize,
    denied: bool,
}

impl MemoryLimiter {
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, denied: false }
    }

    /// Whether a growth was refused during the run.
    pub fn denied(&self) -> bool {
        self.denied
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    // One module, one memory: a WASI command needs no more.
    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        8
    }
}
