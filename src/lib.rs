//! p2p-network: a peer-to-peer worker cluster on rust-libp2p.
//!
//! Where things happen, in the order a task meets them:
//! - `api`: the HTTP API where tasks are submitted and nodes are inspected;
//! - `scheduler`: the gateway that places each attempt on a worker and retries it;
//! - `network`: the one task that owns the libp2p swarm, and the wire `protocol`;
//! - `worker`: executes attempts of the built-in `tasks`;
//! - `membership`: SWIM-style view of who is alive, suspect, dead or left;
//! - `telemetry`: W3C trace context and the OTLP export of task spans;
//! - `ledger`: the credit ledger (blocks, validation, balances), pure for now;
//! - `store`: the node's durable store (task records, DHT records) under `node.data_dir`;
//! - `node`: wires the pieces together and runs them; `cli` and `config` face the user.

pub mod api;
pub mod cli;
pub mod config;
pub mod fuzz_targets;
pub mod identity;
pub mod ledger;
pub mod membership;
pub mod metrics;
pub mod network;
pub mod node;
pub mod protocol;
pub mod scheduler;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod wasm;
pub mod worker;
