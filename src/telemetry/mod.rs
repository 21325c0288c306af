//! Following one task across the cluster: W3C trace context carried with every task
//! (`context`), the spans of its journey exported over OTLP when `telemetry.otlp_endpoint`
//! is set (`install`), and spans that cannot be exported dropped and counted, never waited
//! for (`export`).
//!
//! The spans themselves are made where the work happens, through `tracing` with
//! `target: TARGET`: the HTTP submission (`api`), the task, its queueing, attempts and retry
//! backoffs (`scheduler`), and each attempt's admission and execution on a worker (`worker`).

mod context;
mod export;
mod install;

pub use context::{MAX_TRACESTATE_BYTES, Remote, TraceContext, WireTrace, fresh_trace_id};
pub use install::{InstallError, NodeIdentity, Telemetry, install};

/// The `tracing` target of task spans: only the OpenTelemetry layer listens to it.
pub const TARGET: &str = "p2p_trace";
