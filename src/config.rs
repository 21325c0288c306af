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

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "P2P_";

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
        }
    }
}

impl Default for MembershipSettings {
    fn default() -> Self {
        Self {
            ping_interval_ms: 1000,
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
        let mut overridden = Vec::new();
        for (name, value) in env {
            if let Some(key) = env_key(&name) {
                apply_override(&mut tree, &key, &value).map_err(|message| ConfigError::Invalid {
                    file: format!("environment variable {name}"),
                    key: key.join("."),
                    message,
                })?;
                overridden.push((key.join("."), name));
            }
        }
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            // Name the environment variable when the bad value came from one.
            let origin = overridden
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, var)| format!("environment variable {var}"))
                .unwrap_or_else(|| file.to_string());
            ConfigError::Invalid {
                file: origin,
                key: if key == "." { "(document)".into() } else { key },
                message: e.into_inner().to_string(),
            }
        })?;
        config.validate().map_err(|(key, message)| ConfigError::Invalid {
            file: file.to_string(),
            key: key.into(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let n = &self.node;
        if n.max_connections == 0 {
            return Err(("node.max_connections", "must be at least 1".into()));
        }
        if n.heartbeat_interval == 0 || n.heartbeat_interval > 3600 {
            return Err(("node.heartbeat_interval", "must be 1..=3600 seconds".into()));
        }
        for c in &n.capabilities {
            if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
                return Err((
                    "node.capabilities",
                    format!("{c:?} is not a capability name (letters, digits, '-', '_')"),
                ));
            }
        }
        if n.identity_file.as_os_str().is_empty() {
            return Err(("node.identity_file", "must not be empty".into()));
        }
        let pv = &self.network.protocol_version;
        if pv.is_empty() || pv.len() > 64 || !pv.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err((
                "network.protocol_version",
                format!("{pv:?} must be 1-64 characters of letters, digits, '.', '_' or '-'"),
            ));
        }
        if self.network.connection_timeout == 0 {
            return Err(("network.connection_timeout", "must be at least 1 second".into()));
        }
        if matches!(self.network.active_peers, 1 | 2) {
            return Err((
                "network.active_peers",
                "must be 0 (keep every connection) or at least 3 (fewer leave the cluster split)".into(),
            ));
        }
        for addr in &self.network.bootstrap_peers {
            if !is_dialable(addr) {
                return Err((
                    "network.bootstrap_peers",
                    format!("{addr} has no /ip4, /ip6 or /dns address with a /tcp or /udp/quic-v1 port"),
                ));
            }
        }
        if self.api.listen.port() == 0 {
            return Err(("api.listen", "needs a fixed port: clients find the node there".into()));
        }
        let t = &self.tasks;
        if t.max_attempts == 0 || t.max_attempts > 100 {
            return Err(("tasks.max_attempts", "must be 1..=100".into()));
        }
        if t.default_timeout_ms == 0 {
            return Err(("tasks.default_timeout_ms", "must be at least 1".into()));
        }
        if t.queue_capacity == 0 {
            return Err(("tasks.queue_capacity", "must be at least 1".into()));
        }
        if t.storage_replication == 0 {
            return Err(("tasks.storage_replication", "must be at least 1".into()));
        }
        if t.compute_difficulty > 32 {
            return Err(("tasks.compute_difficulty", "must be 0..=32 bits".into()));
        }
        if let Some(psk) = &self.security.psk_file {
            if psk.as_os_str().is_empty() {
                return Err(("security.psk_file", "must not be empty (leave it out for an open cluster)".into()));
            }
            if self.network.enable_quic {
                return Err((
                    "network.enable_quic",
                    "must be false when security.psk_file is set: a pre-shared key (pnet) protects TCP only, \
                     QUIC would let nodes without the key in"
                        .into(),
                ));
            }
        }
        let l = &self.limits;
        if l.max_connections_per_peer == 0 || l.max_pending_incoming == 0 || l.max_pending_outgoing == 0 {
            return Err((
                "limits",
                "max_connections_per_peer, max_pending_incoming and max_pending_outgoing must be at least 1".into(),
            ));
        }
        if !(10..=100).contains(&l.max_memory_percent) {
            return Err(("limits.max_memory_percent", "must be 10..=100".into()));
        }
        if l.max_task_streams == 0 || l.max_probe_streams == 0 {
            return Err(("limits", "max_task_streams and max_probe_streams must be at least 1".into()));
        }
        let m = &self.membership;
        if m.ping_interval_ms == 0 || m.probe_timeout_ms == 0 || m.suspect_timeout_ms == 0 {
            return Err((
                "membership",
                "ping_interval_ms, probe_timeout_ms and suspect_timeout_ms must be at least 1".into(),
            ));
        }
        Ok(())
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

fn is_dialable(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    let mut host = false;
    let mut port = false;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(_) | Protocol::Ip6(_) | Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) => {
                host = true
            }
            Protocol::Tcp(p) | Protocol::Udp(p) => port = p != 0,
            _ => {}
        }
    }
    host && port
}

/// `P2P_NODE__LISTEN_PORT` -> `["node", "listen_port"]`; other variables -> `None`.
fn env_key(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let parts: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
    (parts.len() >= 2 && parts.iter().all(|p| !p.is_empty())).then_some(parts)
}

fn apply_override(tree: &mut serde_yaml_ng::Value, key: &[String], raw: &str) -> Result<(), String> {
    use serde_yaml_ng::Value;
    let mut node = tree;
    for (i, part) in key.iter().enumerate() {
        let map =
            node.as_mapping_mut().ok_or_else(|| format!("cannot set {}: parent is not a section", key.join(".")))?;
        let k = Value::String(part.clone());
        if i + 1 == key.len() {
            let is_list =
                matches!(map.get(&k), Some(Value::Sequence(_))) || LIST_KEYS.contains(&key.join(".").as_str());
            map.insert(k, parse_env_value(raw, is_list)?);
            return Ok(());
        }
        node = map.entry(k).or_insert_with(|| Value::Mapping(Default::default()));
    }
    Ok(())
}

/// Keys whose values are lists, so `a,b` in the environment means two entries.
const LIST_KEYS: &[&str] = &[
    "node.capabilities",
    "node.external_addresses",
    "network.bootstrap_peers",
    "security.allowed_submitters",
    "security.allowed_workers",
    "security.gossip_shared_ips",
];

fn parse_env_value(raw: &str, is_list: bool) -> Result<serde_yaml_ng::Value, String> {
    use serde_yaml_ng::Value;
    let trimmed = raw.trim();
    if is_list && !trimmed.starts_with('[') {
        let items =
            trimmed.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.to_string())).collect();
        return Ok(Value::Sequence(items));
    }
    serde_yaml_ng::from_str(trimmed).map_err(|e| format!("value {raw:?} is not valid YAML: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_str(yaml, "test.yaml", Vec::new())
    }

    fn err(yaml: &str) -> String {
        parse(yaml).expect_err("config should be rejected").to_string()
    }

    #[test]
    fn defaults_match_the_documented_worker() {
        let c = parse("").unwrap();
        assert_eq!(c.node.role, Role::Worker);
        assert_eq!(c.node.listen_port, 4001);
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.metrics.listen.to_string(), "0.0.0.0:9090");
        assert_eq!(c.tasks.max_attempts, 3);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = err("node:\n  role: worker\n  colour: blue\n");
        assert!(e.starts_with("test.yaml: node.colour: unknown field `colour`"), "{e}");
    }

    #[test]
    fn unknown_role_is_rejected() {
        let e = err("node:\n  role: miner\n");
        assert!(e.contains("node.role") && e.contains("miner"), "{e}");
    }

    #[test]
    fn wrong_type_names_key() {
        let e = err("node:\n  listen_port: lots\n");
        assert!(e.contains("node.listen_port"), "{e}");
        let e = err("node:\n  listen_port: 70000\n");
        assert!(e.contains("node.listen_port"), "{e}");
    }

    #[test]
    fn psk_requires_quic_off_and_resolves_next_to_the_file() {
        let e = err("security:\n  psk_file: swarm.key\n");
        assert!(e.contains("network.enable_quic") && e.contains("pnet"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.yaml");
        std::fs::write(&file, "network:\n  enable_quic: false\nsecurity:\n  psk_file: swarm.key\n").unwrap();
        let c = Config::load(&file, Vec::new()).unwrap();
        assert_eq!(c.security.psk_file, Some(dir.path().join("swarm.key")));
    }

    #[test]
    fn allow_lists_name_the_bad_entry_and_take_lists_from_the_environment() {
        let e = err("security:\n  allowed_workers: [\"not-a-peer\"]\n");
        assert!(e.contains("security.allowed_workers[0]"), "{e}");
        let a = libp2p::PeerId::random();
        let b = libp2p::PeerId::random();
        let env = vec![("P2P_SECURITY__ALLOWED_SUBMITTERS".to_string(), format!("{a}, {b}"))];
        let c = Config::from_yaml_str("", "test.yaml", env).unwrap();
        assert_eq!(c.security.allowed_submitters, vec![a, b]);
        let e = err("limits:\n  max_memory_percent: 5\n");
        assert!(e.contains("limits.max_memory_percent"), "{e}");
    }

    #[test]
    fn bad_multiaddr_names_key() {
        let e = err("network:\n  bootstrap_peers: [\"/ip4/999.1.1.1/tcp/1\"]\n");
        assert!(e.contains("network.bootstrap_peers[0]"), "{e}");
        let e = err("network:\n  bootstrap_peers: [\"/ip4/10.0.0.1\"]\n");
        assert!(e.contains("network.bootstrap_peers"), "{e}");
    }

    #[test]
    fn dns_bootstrap_peer_is_accepted() {
        let c = parse("network:\n  bootstrap_peers: [\"/dns4/p2p-bootstrap.net-test.svc.cluster.local/tcp/4001\"]\n")
            .unwrap();
        assert_eq!(c.network.bootstrap_peers.len(), 1);
    }

    #[test]
    fn env_overrides_file_and_names_variable_on_error() {
        let env = vec![
            ("P2P_NODE__LISTEN_PORT".to_string(), "4100".to_string()),
            (
                "P2P_NODE__EXTERNAL_ADDRESSES".to_string(),
                "/ip4/10.1.2.3/tcp/4100,/ip4/10.1.2.3/udp/4100/quic-v1".to_string(),
            ),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let c = Config::from_yaml_str("node:\n  listen_port: 4001\n", "f.yaml", env).unwrap();
        assert_eq!(c.node.listen_port, 4100);
        assert_eq!(c.node.external_addresses.len(), 2);

        let env = vec![("P2P_NODE__LISTEN_PORT".to_string(), "many".to_string())];
        let e = Config::from_yaml_str("", "f.yaml", env).unwrap_err().to_string();
        assert!(e.contains("P2P_NODE__LISTEN_PORT") && e.contains("node.listen_port"), "{e}");
    }

    #[test]
    fn invalid_protocol_version_is_rejected() {
        let e = err("network:\n  protocol_version: \"has space\"\n");
        assert!(e.contains("network.protocol_version"), "{e}");
    }

    /// Pins every validation message byte for byte, and that the first failing check wins:
    /// operators and scripts match on these strings.
    #[test]
    fn validation_messages_are_exact() {
        let cases: &[(&str, &str)] = &[
            ("node:\n  max_connections: 0\n", "node.max_connections: must be at least 1"),
            ("node:\n  heartbeat_interval: 0\n", "node.heartbeat_interval: must be 1..=3600 seconds"),
            (
                "node:\n  capabilities: [\"a b\"]\n",
                "node.capabilities: \"a b\" is not a capability name (letters, digits, '-', '_')",
            ),
            ("node:\n  identity_file: \"\"\n", "node.identity_file: must not be empty"),
            (
                "network:\n  protocol_version: \"has space\"\n",
                "network.protocol_version: \"has space\" must be 1-64 characters of letters, digits, '.', '_' or '-'",
            ),
            ("network:\n  connection_timeout: 0\n", "network.connection_timeout: must be at least 1 second"),
            (
                "network:\n  active_peers: 2\n",
                "network.active_peers: must be 0 (keep every connection) or at least 3 (fewer leave the cluster split)",
            ),
            (
                "network:\n  bootstrap_peers: [\"/ip4/10.0.0.1\"]\n",
                "network.bootstrap_peers: /ip4/10.0.0.1 has no /ip4, /ip6 or /dns address with a /tcp or /udp/quic-v1 port",
            ),
            ("api:\n  listen: \"127.0.0.1:0\"\n", "api.listen: needs a fixed port: clients find the node there"),
            ("tasks:\n  max_attempts: 0\n", "tasks.max_attempts: must be 1..=100"),
            ("tasks:\n  default_timeout_ms: 0\n", "tasks.default_timeout_ms: must be at least 1"),
            ("tasks:\n  queue_capacity: 0\n", "tasks.queue_capacity: must be at least 1"),
            ("tasks:\n  storage_replication: 0\n", "tasks.storage_replication: must be at least 1"),
            ("tasks:\n  compute_difficulty: 33\n", "tasks.compute_difficulty: must be 0..=32 bits"),
            (
                "security:\n  psk_file: \"\"\n",
                "security.psk_file: must not be empty (leave it out for an open cluster)",
            ),
            (
                "security:\n  psk_file: swarm.key\n",
                "network.enable_quic: must be false when security.psk_file is set: a pre-shared key (pnet) \
                 protects TCP only, QUIC would let nodes without the key in",
            ),
            (
                "limits:\n  max_pending_outgoing: 0\n",
                "limits: max_connections_per_peer, max_pending_incoming and max_pending_outgoing must be at least 1",
            ),
            ("limits:\n  max_memory_percent: 101\n", "limits.max_memory_percent: must be 10..=100"),
            ("limits:\n  max_probe_streams: 0\n", "limits: max_task_streams and max_probe_streams must be at least 1"),
            (
                "membership:\n  suspect_timeout_ms: 0\n",
                "membership: ping_interval_ms, probe_timeout_ms and suspect_timeout_ms must be at least 1",
            ),
            // Several faults: the checks run in a fixed order and the first one is reported.
            (
                "membership:\n  ping_interval_ms: 0\ntasks:\n  max_attempts: 0\nnode:\n  max_connections: 0\n",
                "node.max_connections: must be at least 1",
            ),
            (
                "limits:\n  max_task_streams: 0\ntasks:\n  queue_capacity: 0\n",
                "tasks.queue_capacity: must be at least 1",
            ),
        ];
        for (yaml, expected) in cases {
            assert_eq!(err(yaml), format!("test.yaml: {expected}"), "{yaml}");
        }
    }

    #[test]
    fn environment_errors_are_exact() {
        let env = |name: &str, value: &str| vec![(name.to_string(), value.to_string())];
        let e = Config::from_yaml_str("node:\n  listen_port: 4001\n", "f.yaml", env("P2P_NODE__LISTEN_PORT__X", "1"));
        assert_eq!(
            e.unwrap_err().to_string(),
            "environment variable P2P_NODE__LISTEN_PORT__X: node.listen_port.x: \
             cannot set node.listen_port.x: parent is not a section"
        );
        let e = Config::from_yaml_str("", "f.yaml", env("P2P_NODE__ROLE", "[unclosed")).unwrap_err().to_string();
        let prefix = "environment variable P2P_NODE__ROLE: node.role: value \"[unclosed\" is not valid YAML: ";
        assert!(e.starts_with(prefix), "{e}");
        // Validation failures name the file even when an override caused them.
        let e = Config::from_yaml_str("", "f.yaml", env("P2P_TASKS__MAX_ATTEMPTS", "0")).unwrap_err().to_string();
        assert_eq!(e, "f.yaml: tasks.max_attempts: must be 1..=100");
        let missing = std::path::Path::new("/nonexistent/p2p-node.yaml");
        let e = Config::load(missing, Vec::new()).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/p2p-node.yaml: cannot read: "), "{e}");
    }

    #[test]
    fn bad_yaml_reports_location() {
        let e = err("node: [unclosed\n");
        assert!(e.starts_with("test.yaml: line"), "{e}");
    }
}
