//! Node configuration: one serde tree, defaults in one place, validated once at start.
//!
//! Sources, later ones winning: built-in defaults, the YAML file, then environment variables
//! named `P2P_<SECTION>__<KEY>` (for example `P2P_NODE__LISTEN_PORT=4001`). Kubernetes needs
//! the latter to inject the pod IP and ports. Every error names the file (or variable) and
//! the dotted key that was wrong, because that is what an operator has to fix.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

mod env;
#[cfg(test)]
mod tests;
mod validate;

pub use env::ENV_PREFIX;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {key}: {message}")]
    Invalid { file: String, key: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Bootstrap,
    Relay,
    Worker,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Bootstrap => "bootstrap",
            Role::Relay => "relay",
            Role::Worker => "worker",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    Noise,
    Tls,
}

/// When a gateway acknowledges a task (`tasks.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Once the record's copies hold it or the local store has synced it, whichever comes
    /// first; the local store syncs in groups. Survives the crash of any one node.
    Group,
    /// Only once the local store has synced it (copies are still kept). Survives the crash of
    /// the gateway with no other node: for single-node deployments.
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub network: NetworkConfig,
    pub api: ApiConfig,
    pub metrics: MetricsConfig,
    pub tasks: TasksConfig,
    pub membership: MembershipSettings,
    pub relay: RelaySettings,
    pub security: SecuritySettings,
    pub limits: LimitSettings,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    pub wasm: WasmConfig,
    pub ledger: LedgerSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub role: Role,
    pub listen_address: IpAddr,
    pub listen_port: u16,
    pub capabilities: Vec<String>,
    pub max_connections: u32,
    /// Seconds between HeartBeat messages.
    pub heartbeat_interval: u64,
    pub external_addresses: Vec<Multiaddr>,
    /// Where the ed25519 key lives; relative paths are relative to the config file.
    pub identity_file: PathBuf,
    /// The node's durable store (task records, DHT records); relative paths are relative to
    /// the config file. One node per directory: a second process is refused at start.
    pub data_dir: PathBuf,
    /// 0 means one per CPU.
    pub max_concurrent_tasks: usize,
    /// Attempts that may wait on this worker for a free slot; beyond, it answers busy.
    pub task_backlog: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    pub protocol_version: String,
    pub mesh_network: bool,
    pub enable_mdns: bool,
    pub enable_relay: bool,
    pub enable_quic: bool,
    pub security: Security,
    /// Seconds allowed for a connection's handshake (security and multiplexer upgrade).
    pub connection_timeout: u64,
    pub bootstrap_peers: Vec<Multiaddr>,
    /// Members each node stays connected to, on average, once the cluster is larger (the
    /// active view, `network/view.rs`); 0 keeps every connection.
    pub active_peers: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    pub max_attempts: u32,
    /// Per-attempt deadline when the submitter gives none.
    pub default_timeout_ms: u64,
    /// Tasks waiting for a free worker; beyond this, submissions are refused.
    pub queue_capacity: usize,
    /// How long final task records stay queryable.
    pub retention_secs: u64,
    pub storage_replication: usize,
    /// Leading zero bits the `compute` proof-of-work must reach.
    pub compute_difficulty: u32,
    /// Other nodes holding a copy of each task record before it is acknowledged; they adopt
    /// the task if its gateway is lost. 0: the gateway's own store only.
    pub record_copies: usize,
    pub fsync: Fsync,
    /// How long a gateway declared dead gets to come back before a copy holder adopts its
    /// unfinished tasks.
    pub adopt_after_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipSettings {
    pub ping_interval_ms: u64,
    pub probe_timeout_ms: u64,
    pub suspect_timeout_ms: u64,
    pub dead_retention_secs: u64,
    pub indirect_probes: usize,
}

/// Limits of the circuit relay server (relay role). Defaults are sized for task traffic:
/// libp2p's own (2 minutes, 128 KiB per circuit) would cut a relayed gateway-to-worker
/// connection in the middle of a busy minute.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    pub max_reservations: usize,
    pub max_reservations_per_peer: usize,
    pub max_circuits: usize,
    pub max_circuits_per_peer: usize,
    pub max_circuit_duration_secs: u64,
    pub max_circuit_bytes: u64,
    /// New circuits a peer may open per minute (0 = unlimited). libp2p's default (30, then
    /// one per 2 minutes) starves a gateway that reconnects after each circuit limit.
    pub circuits_per_peer_per_minute: u32,
    /// Likewise per source IP; a whole NATed LAN shares one.
    pub circuits_per_ip_per_minute: u32,
    /// Reservation requests (and renewals) a peer may make per minute (0 = unlimited).
    pub reservations_per_peer_per_minute: u32,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration_secs: 600,
            max_circuit_bytes: 16 * 1024 * 1024,
            circuits_per_peer_per_minute: 120,
            circuits_per_ip_per_minute: 600,
            reservations_per_peer_per_minute: 30,
        }
    }
}

/// Who belongs to the cluster and who may do what in it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecuritySettings {
    /// Pre-shared key (libp2p pnet `swarm.key` format) that every TCP connection must prove
    /// before anything else is spoken. Unset: an open cluster. Relative paths are relative to
    /// the config file. pnet wraps TCP only, so a key requires `network.enable_quic: false`.
    pub psk_file: Option<PathBuf>,
    /// Peers that may send this worker tasks (empty: any member of the cluster).
    pub allowed_submitters: Vec<libp2p::PeerId>,
    /// Workers this node gives tasks to (empty: any member advertising the worker role).
    pub allowed_workers: Vec<libp2p::PeerId>,
    /// Addresses many honest nodes share (a node's IP under Kubernetes host networking, a NAT,
    /// loopback in tests): exempt from GossipSub's IP-colocation penalty. Loopback is always.
    pub gossip_shared_ips: Vec<IpAddr>,
}

/// Resource limits. Each one shows up in `p2p_limit_hits_total{limit=...}` when it bites.
/// Message sizes are fixed by the wire protocol (both ends must agree), see `protocol.rs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Established connections to one peer (the total is `node.max_connections`).
    pub max_connections_per_peer: u32,
    /// Connections still in their handshake, each direction.
    pub max_pending_incoming: u32,
    pub max_pending_outgoing: u32,
    /// New connections are refused once the process uses this share of the machine's memory.
    pub max_memory_percent: u8,
    /// Concurrent task streams per connection (the worker's own admission is the real bound).
    pub max_task_streams: usize,
    /// Concurrent SWIM probe streams per connection.
    pub max_probe_streams: usize,
    /// Task requests one peer may send this worker per second (0: unlimited); beyond it the
    /// worker answers busy, which costs the sender's task no attempt.
    pub task_requests_per_peer_per_sec: u32,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_connections_per_peer: 4,
            max_pending_incoming: 64,
            max_pending_outgoing: 64,
            max_memory_percent: 90,
            max_task_streams: 2048,
            max_probe_streams: 32,
            task_requests_per_peer_per_sec: 20_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// Traces exported over OTLP (HTTP/protobuf) to a collector. Off unless `otlp_endpoint` is
/// set; off, no exporter exists and spans cost nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Base URL of the collector's OTLP/HTTP receiver, e.g. `http://otel-collector:4318`
    /// (`/v1/traces` is added unless the URL has a path). Plain `http://` only. Empty: off.
    #[serde(deserialize_with = "null_as_empty")]
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces recorded, 0.0..=1.0; a trace that arrives sampled (or not) from
    /// a client or another node keeps its parent's decision.
    pub sampling_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: String::new(), service_name: "p2p-node".into(), sampling_ratio: 1.0 }
    }
}

impl TelemetryConfig {
    pub fn enabled(&self) -> bool {
        !self.otlp_endpoint.trim().is_empty()
    }

    /// The URL spans are posted to: the endpoint, with `/v1/traces` when it has no path.
    pub fn traces_url(&self) -> String {
        let base = self.otlp_endpoint.trim();
        let after_scheme = base.split_once("://").map_or(base, |(_, rest)| rest);
        match after_scheme.find('/') {
            Some(i) if after_scheme[i..] != *"/" => base.to_string(),
            _ => format!("{}/v1/traces", base.trim_end_matches('/')),
        }
    }
}

/// WebAssembly tasks (`src/wasm/`): the node's module store and the ceilings of every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WasmConfig {
    /// Largest module accepted at upload, and fetched from another node.
    pub max_module_bytes: u64,
    /// Bytes of modules kept under `<node.data_dir>/modules/`, least recently used out first.
    pub cache_bytes: u64,
    /// Compiled modules kept in memory, ready to instantiate (a warm task does not compile).
    pub compiled_modules: usize,
    /// Most fuel one run may burn (about one unit per WebAssembly instruction).
    pub max_fuel: u64,
    /// Most linear memory one run may have.
    pub max_memory_bytes: u64,
    /// Most a run may write to stdout (its result).
    pub max_output_bytes: u64,
    /// Most wall-clock time one run may take (never more than the attempt's deadline).
    pub max_run_ms: u64,
    /// Longest a worker waits to fetch a module it lacks from the task's sender.
    pub fetch_timeout_ms: u64,
    /// TEST ONLY, never in production: this worker alters every `wasm` result it returns
    /// (a dishonest worker, for the tests of verification by redundancy). Off by default.
    pub test_corrupt_output: bool,
}

impl Default for WasmConfig {
    fn default() -> Self {
        Self {
            max_module_bytes: 8 * 1024 * 1024,
            cache_bytes: 256 * 1024 * 1024,
            compiled_modules: 32,
            max_fuel: 10_000_000_000,
            max_memory_bytes: 256 * 1024 * 1024,
            max_output_bytes: 512 * 1024,
            max_run_ms: 30_000,
            fetch_timeout_ms: 10_000,
            test_corrupt_output: false,
        }
    }
}

impl WasmConfig {
    /// The ceilings of one run.
    pub fn limits(&self) -> crate::wasm::Limits {
        crate::wasm::Limits {
            fuel: self.max_fuel,
            deadline: Duration::from_millis(self.max_run_ms),
            memory_bytes: usize::try_from(self.max_memory_bytes).unwrap_or(usize::MAX),
            output_bytes: usize::try_from(self.max_output_bytes).unwrap_or(usize::MAX),
        }
    }
}

/// The credit ledger (`src/ledger/`): what accounts start with, what tasks cost, and how
/// often this node seals its payments and compares ledgers with a peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerSettings {
    /// Keep the ledger at all (off: no credits, no ledger gossip, the API answers 404).
    pub enabled: bool,
    /// Credits every account starts with. In an open network anyone can mint identities and
    /// so credits: a private cluster (`security.psk_file`) bounds who has an account.
    pub initial_credits: u64,
    /// Refuse (`402`) a task this node cannot pay the highest price of. Off: accounting only.
    pub enforce: bool,
    /// Pay for results the gateway cannot verify (`sleep`, `storage`, `fail`, `wasm` without
    /// a quorum of at least 2). Off: only verified work earns.
    pub pay_unverified: bool,
    pub prices: Prices,
    /// This node seals its waiting payments into a block this often...
    pub seal_interval_ms: u64,
    /// ...or as soon as this many are waiting. Each block is a synced write on every node:
    /// sealing every 1,000 payments under load cost 12% of task throughput, once a second
    /// nothing measurable (bench/ledger_bench.sh).
    pub seal_max_payments: usize,
    /// Anti-entropy: how often this node compares its ledger with one peer.
    pub sync_interval_ms: u64,
    /// TEST ONLY, never in production: this node signs two different blocks at one sequence
    /// number (an equivocation), for the tests that every node freezes it. Off by default.
    pub test_equivocate: bool,
}

/// Credits paid to a worker per verified task of each type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Prices {
    pub echo: u64,
    pub compute: u64,
    pub storage: u64,
    pub sleep: u64,
    /// `wasm` is paid by the fuel its replicas agreed on: this many credits per million
    /// units of fuel (at least 1 credit per task).
    pub wasm_per_million_fuel: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_credits: 1_000_000,
            enforce: false,
            pay_unverified: false,
            prices: Prices::default(),
            seal_interval_ms: 1000,
            seal_max_payments: 50_000,
            sync_interval_ms: 2000,
            test_equivocate: false,
        }
    }
}

impl Default for Prices {
    fn default() -> Self {
        Self { echo: 1, compute: 10, storage: 1, sleep: 1, wasm_per_million_fuel: 1 }
    }
}

/// `otlp_endpoint: ~` (or `P2P_TELEMETRY__OTLP_ENDPOINT=` with nothing after it) means off.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            role: Role::Worker,
            listen_address: IpAddr::from([0, 0, 0, 0]),
            listen_port: 4001,
            capabilities: vec!["compute".into(), "storage".into()],
            max_connections: 100,
            heartbeat_interval: 30,
            external_addresses: Vec::new(),
            identity_file: PathBuf::from("identity.key"),
            data_dir: PathBuf::from("data"),
            max_concurrent_tasks: 0,
            task_backlog: 32,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            protocol_version: "p2p-network".into(),
            mesh_network: true,
            enable_mdns: true,
            enable_relay: true,
            enable_quic: true,
            security: Security::Noise,
            connection_timeout: 30,
            bootstrap_peers: Vec::new(),
            active_peers: 20,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8080)) }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([0, 0, 0, 0], 9090)) }
    }
}

impl Default for TasksConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            default_timeout_ms: 30_000,
            queue_capacity: 10_000,
            retention_secs: 3600,
            storage_replication: 3,
            compute_difficulty: 16,
            record_copies: 1,
            fsync: Fsync::Group,
            adopt_after_secs: 10,
        }
    }
}

impl Default for MembershipSettings {
    fn default() -> Self {
        Self {
            // Each ping is a stream of its own (open, negotiate, ask, answer, close) on both
            // ends: at 1 s they were a fifth of an idle 100-node cluster's CPU. A crash is found
            // by its closed connections whatever the period; a hung member a period later.
            ping_interval_ms: 2000,
            probe_timeout_ms: 1000,
            suspect_timeout_ms: 2000,
            dead_retention_secs: 60,
            indirect_probes: 3,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text }
    }
}

impl Config {
    /// Loads `path`, applies `P2P_*` overrides from `env`, and validates the result.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: file.clone(), source })?;
        let mut config = Self::from_yaml_str(&text, &file, env)?;
        if config.node.identity_file.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            config.node.identity_file = base.join(&config.node.identity_file);
        }
        if config.node.data_dir.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            config.node.data_dir = base.join(&config.node.data_dir);
        }
        if let Some(psk) = config.security.psk_file.as_mut()
            && psk.is_relative()
        {
            *psk = path.parent().unwrap_or(Path::new(".")).join(&*psk);
        }
        Ok(config)
    }

    /// Parses YAML text (named `file` in errors) with environment overrides and validates it.
    pub fn from_yaml_str(
        text: &str,
        file: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut tree: serde_yaml_ng::Value = if text.trim().is_empty() {
            serde_yaml_ng::Value::Mapping(Default::default())
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Invalid {
                file: file.to_string(),
                key: e
                    .location()
                    .map(|l| format!("line {} column {}", l.line(), l.column()))
                    .unwrap_or_else(|| "(document)".into()),
                message: format!("not valid YAML: {e}"),
            })?
        };
        if tree.is_null() {
            tree = serde_yaml_ng::Value::Mapping(Default::default());
        }
        let overridden = env::apply(&mut tree, env)?;
        validate::checked(tree, file, &overridden)
    }

    pub fn max_concurrent_tasks(&self) -> usize {
        match self.node.max_concurrent_tasks {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.node.heartbeat_interval)
    }

    /// The address a local client uses to reach this node's API (a wildcard bind becomes loopback).
    pub fn api_client_addr(&self) -> SocketAddr {
        let mut addr = self.api.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
                IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        addr
    }
}
