//! Configuration loading: defaults, overrides, and errors that name the file and the key.

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
    let c =
        parse("network:\n  bootstrap_peers: [\"/dns4/p2p-bootstrap.net-test.svc.cluster.local/tcp/4001\"]\n").unwrap();
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
        ("tasks:\n  record_copies: 6\n", "tasks.record_copies: must be 0..=5"),
        ("tasks:\n  adopt_after_secs: 0\n", "tasks.adopt_after_secs: must be 1..=86400 seconds"),
        ("security:\n  psk_file: \"\"\n", "security.psk_file: must not be empty (leave it out for an open cluster)"),
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
        ("limits:\n  max_task_streams: 0\ntasks:\n  queue_capacity: 0\n", "tasks.queue_capacity: must be at least 1"),
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

#[test]
fn telemetry_is_off_by_default_and_validated() {
    let c = parse("").unwrap();
    assert!(!c.telemetry.enabled());
    assert_eq!(c.telemetry.service_name, "p2p-node");
    assert_eq!(c.telemetry.sampling_ratio, 1.0);
    let c = parse("telemetry:\n  otlp_endpoint: http://otel-collector:4318\n  sampling_ratio: 0.01\n").unwrap();
    assert!(c.telemetry.enabled());
    assert_eq!(c.telemetry.traces_url(), "http://otel-collector:4318/v1/traces");
    let c = parse("telemetry:\n  otlp_endpoint: http://127.0.0.1:4318/custom/traces\n").unwrap();
    assert_eq!(c.telemetry.traces_url(), "http://127.0.0.1:4318/custom/traces");
    assert!(!parse("telemetry:\n  otlp_endpoint: ~\n").unwrap().telemetry.enabled());

    let e = err("telemetry:\n  sampling_ratio: 1.5\n");
    assert!(e.starts_with("test.yaml: telemetry.sampling_ratio: 1.5 must be 0.0..=1.0"), "{e}");
    let e = err("telemetry:\n  sampling_ratio: -0.1\n");
    assert!(e.contains("telemetry.sampling_ratio"), "{e}");
    let e = err("telemetry:\n  sampling_ratio: often\n");
    assert!(e.contains("telemetry.sampling_ratio"), "{e}");
    let e = err("telemetry:\n  otlp_endpoint: https://collector:4318\n");
    assert!(
        e.contains("telemetry.otlp_endpoint") && e.contains("https is not supported") && e.contains("http://"),
        "{e}"
    );
    for bad in ["collector:4318", "grpc://collector:4317", "http://", "http:///v1/traces"] {
        let e = err(&format!("telemetry:\n  otlp_endpoint: \"{bad}\"\n"));
        assert!(e.starts_with("test.yaml: telemetry.otlp_endpoint:"), "{bad}: {e}");
    }
    let e = err("telemetry:\n  service_name: \"\"\n");
    assert!(e.contains("telemetry.service_name"), "{e}");
    let e = err("telemetry:\n  endpoint: http://x:4318\n");
    assert!(e.contains("telemetry.endpoint") && e.contains("unknown field"), "{e}");
}

#[test]
fn telemetry_takes_overrides_from_the_environment() {
    let env = vec![
        ("P2P_TELEMETRY__OTLP_ENDPOINT".to_string(), "http://127.0.0.1:4318".to_string()),
        ("P2P_TELEMETRY__SAMPLING_RATIO".to_string(), "0.25".to_string()),
        ("P2P_TELEMETRY__SERVICE_NAME".to_string(), "gateway".to_string()),
    ];
    let c = Config::from_yaml_str("", "test.yaml", env).unwrap();
    assert_eq!(c.telemetry.otlp_endpoint, "http://127.0.0.1:4318");
    assert_eq!(c.telemetry.sampling_ratio, 0.25);
    assert_eq!(c.telemetry.service_name, "gateway");
    // An empty variable switches it off again.
    let env = vec![("P2P_TELEMETRY__OTLP_ENDPOINT".to_string(), String::new())];
    let c = Config::from_yaml_str("telemetry: {otlp_endpoint: http://x:4318}", "test.yaml", env).unwrap();
    assert!(!c.telemetry.enabled());
    let env = vec![("P2P_TELEMETRY__SAMPLING_RATIO".to_string(), "lots".to_string())];
    let e = Config::from_yaml_str("", "test.yaml", env).unwrap_err().to_string();
    assert!(e.starts_with("environment variable P2P_TELEMETRY__SAMPLING_RATIO: telemetry.sampling_ratio"), "{e}");
}

#[test]
fn wasm_section_has_defaults_checks_and_overrides() {
    let c = parse("").unwrap();
    assert_eq!(c.wasm.max_module_bytes, 8 * 1024 * 1024);
    assert_eq!(c.wasm.limits().output_bytes, 512 * 1024);
    let e = err("wasm:\n  max_fuel: 0\n");
    assert!(e.starts_with("test.yaml: wasm.max_fuel: must be at least 1"), "{e}");
    let e = err("wasm:\n  max_module_bytes: 1000\n  cache_bytes: 10\n");
    assert!(e.contains("wasm.cache_bytes"), "{e}");
    let e = err("wasm:\n  max_output_bytes: 2000000\n");
    assert!(e.contains("wasm.max_output_bytes"), "{e}");
    let e = err("wasm:\n  gas: 1\n");
    assert!(e.contains("wasm.gas") && e.contains("unknown field"), "{e}");
    let env = vec![("P2P_WASM__MAX_FUEL".to_string(), "12345".to_string())];
    assert_eq!(Config::from_yaml_str("", "test.yaml", env).unwrap().wasm.max_fuel, 12345);
}

#[test]
fn ledger_section_has_defaults_checks_and_overrides() {
    let c = parse("").unwrap();
    assert!(c.ledger.enabled && !c.ledger.enforce && !c.ledger.pay_unverified && !c.ledger.test_equivocate);
    assert_eq!(c.ledger.prices.compute, 10);
    let c = parse("ledger:\n  initial_credits: 50\n  enforce: true\n  prices: {echo: 3}\n").unwrap();
    assert_eq!((c.ledger.initial_credits, c.ledger.enforce, c.ledger.prices.echo), (50, true, 3));
    let e = err("ledger:\n  seal_interval_ms: 0\n");
    assert!(e.starts_with("test.yaml: ledger.seal_interval_ms: must be 1..=3600000"), "{e}");
    let e = err("ledger:\n  seal_max_payments: 100001\n");
    assert!(e.contains("ledger.seal_max_payments: must be 1..=100000"), "{e}");
    let e = err("ledger:\n  sync_interval_ms: 5\n");
    assert!(e.contains("ledger.sync_interval_ms"), "{e}");
    let e = err("ledger:\n  prices: {gold: 1}\n");
    assert!(e.contains("ledger.prices.gold") && e.contains("unknown field"), "{e}");
    let e = err("ledger:\n  initial_credits: -1\n");
    assert!(e.contains("ledger.initial_credits"), "{e}");
    let env = vec![("P2P_LEDGER__ENFORCE".to_string(), "true".to_string())];
    assert!(Config::from_yaml_str("", "test.yaml", env).unwrap().ledger.enforce);
}
