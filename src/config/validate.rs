//! Validation: the merged YAML tree typed into a checked [`Config`]; each error names the file (or variable) and key.

use libp2p::Multiaddr;

use super::{
    ApiConfig, Config, ConfigError, LedgerSettings, LimitSettings, MembershipSettings, NetworkConfig, NodeConfig,
    SecuritySettings, TasksConfig, TelemetryConfig, WasmConfig,
};

/// The first failed check: the dotted key to blame and what is wrong with it.
type Check = Result<(), (&'static str, String)>;

/// Types the tree, then checks the values. `overridden` pairs each dotted key set from the
/// environment with its variable, so a value the types reject names the variable instead
/// of `file`; values that type but fail a check name `file`.
pub(super) fn checked(
    tree: serde_yaml_ng::Value,
    file: &str,
    overridden: &[(String, String)],
) -> Result<Config, ConfigError> {
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
    validate(&config).map_err(|(key, message)| ConfigError::Invalid {
        file: file.to_string(),
        key: key.into(),
        message,
    })?;
    Ok(config)
}

/// The sections in a fixed order: when several values are wrong, the first one is reported.
fn validate(c: &Config) -> Check {
    node(&c.node)?;
    network(&c.network)?;
    api(&c.api)?;
    tasks(&c.tasks)?;
    security(&c.security, &c.network)?;
    limits(&c.limits)?;
    membership(&c.membership)?;
    telemetry(&c.telemetry)?;
    wasm(&c.wasm)?;
    ledger(&c.ledger)
}

fn wasm(w: &WasmConfig) -> Check {
    const MAX_MODULE: u64 = 256 * 1024 * 1024;
    // The result travels in a task response, with room for its envelope.
    const MAX_OUTPUT: u64 = crate::protocol::MAX_TASK_RESPONSE_BYTES - 4096;
    if w.max_module_bytes < 8 || w.max_module_bytes > MAX_MODULE {
        return Err(("wasm.max_module_bytes", format!("must be 8..={MAX_MODULE}")));
    }
    if w.cache_bytes < w.max_module_bytes {
        return Err(("wasm.cache_bytes", "must be at least wasm.max_module_bytes (a module must fit)".into()));
    }
    if w.compiled_modules == 0 {
        return Err(("wasm.compiled_modules", "must be at least 1".into()));
    }
    if w.max_fuel == 0 {
        return Err(("wasm.max_fuel", "must be at least 1".into()));
    }
    if w.max_memory_bytes < 65_536 || w.max_memory_bytes > 1 << 32 {
        return Err(("wasm.max_memory_bytes", "must be 65536 (one page)..=4294967296 (4 GiB)".into()));
    }
    if w.max_output_bytes == 0 || w.max_output_bytes > MAX_OUTPUT {
        return Err(("wasm.max_output_bytes", format!("must be 1..={MAX_OUTPUT} (a result fits in a task response)")));
    }
    if w.max_run_ms == 0 {
        return Err(("wasm.max_run_ms", "must be at least 1".into()));
    }
    if w.fetch_timeout_ms == 0 {
        return Err(("wasm.fetch_timeout_ms", "must be at least 1".into()));
    }
    Ok(())
}

fn node(n: &NodeConfig) -> Check {
    if n.max_connections == 0 {
        return Err(("node.max_connections", "must be at least 1".into()));
    }
    if n.heartbeat_interval == 0 || n.heartbeat_interval > 3600 {
        return Err(("node.heartbeat_interval", "must be 1..=3600 seconds".into()));
    }
    for c in &n.capabilities {
        if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
            return Err(("node.capabilities", format!("{c:?} is not a capability name (letters, digits, '-', '_')")));
        }
    }
    if n.identity_file.as_os_str().is_empty() {
        return Err(("node.identity_file", "must not be empty".into()));
    }
    if n.data_dir.as_os_str().is_empty() {
        return Err(("node.data_dir", "must not be empty".into()));
    }
    Ok(())
}

fn network(n: &NetworkConfig) -> Check {
    let pv = &n.protocol_version;
    if pv.is_empty() || pv.len() > 64 || !pv.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        return Err((
            "network.protocol_version",
            format!("{pv:?} must be 1-64 characters of letters, digits, '.', '_' or '-'"),
        ));
    }
    if n.connection_timeout == 0 {
        return Err(("network.connection_timeout", "must be at least 1 second".into()));
    }
    if matches!(n.active_peers, 1 | 2) {
        return Err((
            "network.active_peers",
            "must be 0 (keep every connection) or at least 3 (fewer leave the cluster split)".into(),
        ));
    }
    for addr in &n.bootstrap_peers {
        if !is_dialable(addr) {
            return Err((
                "network.bootstrap_peers",
                format!("{addr} has no /ip4, /ip6 or /dns address with a /tcp or /udp/quic-v1 port"),
            ));
        }
    }
    Ok(())
}

fn api(a: &ApiConfig) -> Check {
    if a.listen.port() == 0 {
        return Err(("api.listen", "needs a fixed port: clients find the node there".into()));
    }
    Ok(())
}

/// Copies beyond a few add write load on every node without making a loss much less likely.
const MAX_RECORD_COPIES: usize = 5;

fn tasks(t: &TasksConfig) -> Check {
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
    if t.record_copies > MAX_RECORD_COPIES {
        return Err(("tasks.record_copies", format!("must be 0..={MAX_RECORD_COPIES}")));
    }
    if t.adopt_after_secs == 0 || t.adopt_after_secs > 86_400 {
        return Err(("tasks.adopt_after_secs", "must be 1..=86400 seconds".into()));
    }
    Ok(())
}

fn security(s: &SecuritySettings, network: &NetworkConfig) -> Check {
    if let Some(psk) = &s.psk_file {
        if psk.as_os_str().is_empty() {
            return Err(("security.psk_file", "must not be empty (leave it out for an open cluster)".into()));
        }
        if network.enable_quic {
            return Err((
                "network.enable_quic",
                "must be false when security.psk_file is set: a pre-shared key (pnet) protects TCP only, \
                 QUIC would let nodes without the key in"
                    .into(),
            ));
        }
    }
    Ok(())
}

fn limits(l: &LimitSettings) -> Check {
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
    Ok(())
}

fn membership(m: &MembershipSettings) -> Check {
    if m.ping_interval_ms == 0 || m.probe_timeout_ms == 0 || m.suspect_timeout_ms == 0 {
        return Err((
            "membership",
            "ping_interval_ms, probe_timeout_ms and suspect_timeout_ms must be at least 1".into(),
        ));
    }
    Ok(())
}

fn telemetry(t: &TelemetryConfig) -> Check {
    if !(0.0..=1.0).contains(&t.sampling_ratio) {
        return Err(("telemetry.sampling_ratio", format!("{} must be 0.0..=1.0", t.sampling_ratio)));
    }
    if t.service_name.trim().is_empty() || t.service_name.len() > 128 {
        return Err(("telemetry.service_name", "must be 1-128 characters".into()));
    }
    if !t.enabled() {
        return Ok(());
    }
    let url = t.otlp_endpoint.trim();
    if url.starts_with("https://") {
        return Err((
            "telemetry.otlp_endpoint",
            format!(
                "{url}: https is not supported (this build has no TLS client for OTLP): use http://, e.g. a collector or agent inside the cluster"
            ),
        ));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err((
            "telemetry.otlp_endpoint",
            format!("{url:?} must be an http:// URL such as http://otel-collector:4318"),
        ));
    };
    let ok = t.traces_url().parse::<axum::http::Uri>().is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
    if !ok || rest.is_empty() || rest.starts_with('/') {
        return Err((
            "telemetry.otlp_endpoint",
            format!("{url:?} is not a URL with a host, such as http://otel-collector:4318"),
        ));
    }
    Ok(())
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

fn ledger(l: &LedgerSettings) -> Check {
    // Balances are i128 sums of u64 amounts: no bound is needed for them, only for the
    // intervals (a zero would spin).
    if l.seal_interval_ms == 0 || l.seal_interval_ms > 3_600_000 {
        return Err(("ledger.seal_interval_ms", "must be 1..=3600000".into()));
    }
    if !(1..=crate::ledger::LedgerConfig::default().max_pending_payments).contains(&l.seal_max_payments) {
        let max = crate::ledger::LedgerConfig::default().max_pending_payments;
        return Err(("ledger.seal_max_payments", format!("must be 1..={max} (the payments that may wait)")));
    }
    if l.sync_interval_ms < 100 || l.sync_interval_ms > 3_600_000 {
        return Err(("ledger.sync_interval_ms", "must be 100..=3600000".into()));
    }
    Ok(())
}
