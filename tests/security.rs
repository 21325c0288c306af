//! Who gets in, and what a flood does: real `p2p-node` processes on 127.0.0.1.
//!
//! - A private cluster (pre-shared key): nodes without the key, or with another, never get
//!   past the connection handshake; a node with the key joins.
//! - A flood of 1,000 TCP connection attempts against one node: it stays within its
//!   configured limits (file descriptors, connections), counts the refusals, and keeps
//!   serving tasks throughout.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, NodeProc, Spec, scratch, wait_until};
use serde_json::json;

fn private(spec: Spec, key: &Path) -> Spec {
    spec.env("P2P_NETWORK__ENABLE_QUIC", "false").env("P2P_SECURITY__PSK_FILE", key.display())
}

fn make_key(path: &Path) {
    let out = Command::new(BIN).arg("psk").arg(path).output().unwrap();
    assert!(out.status.success(), "p2p-node psk: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim().len(), 32, "prints the key's fingerprint");
}

/// Whether `node` lists `worker` among the workers of any capability (it can place tasks there).
fn schedulable(node: &NodeProc, worker: &str) -> bool {
    node.get("/v1/capabilities").map(|v| v["cluster"].to_string().contains(worker)).unwrap_or(false)
}

fn run_task(node: &NodeProc, payload: &str) -> serde_json::Value {
    node.call("POST", "/v1/tasks?wait=true", Some(json!({"type": "echo", "payload": payload, "timeout_ms": 5000})))
        .unwrap_or_else(|e| panic!("task {payload}: {e}"))
}

#[test]
fn a_private_cluster_admits_only_nodes_with_its_key() {
    let root = scratch("psk");
    let cluster_key = root.path().join("cluster.key");
    let other_key = root.path().join("other.key");
    make_key(&cluster_key);
    make_key(&other_key);

    let boot = NodeProc::start(root.path(), private(Spec::new("bootstrap", "bootstrap"), &cluster_key));
    let addr = boot.p2p_addr();
    let w1 = NodeProc::start(
        root.path(),
        private(Spec::new("w1", "worker").bootstrap(std::slice::from_ref(&addr)), &cluster_key),
    );
    wait_until(Duration::from_secs(15), "w1 (with the key) to join", || schedulable(&boot, &w1.peer_id));
    let done = run_task(&boot, "inside");
    assert_eq!(done["state"], "completed", "{done}");

    let no_key = NodeProc::start(root.path(), Spec::new("no-key", "worker").bootstrap(std::slice::from_ref(&addr)));
    let wrong_key = NodeProc::start(
        root.path(),
        private(Spec::new("wrong-key", "worker").bootstrap(std::slice::from_ref(&addr)), &other_key),
    );
    let late = NodeProc::start(root.path(), private(Spec::new("late", "worker").bootstrap(&[addr]), &cluster_key));
    let joined = wait_until(Duration::from_secs(15), "a late node with the key to join", || {
        boot.alive_peers().contains(&late.peer_id)
    });
    // The intruders dialed at the same moment and keep retrying; give them as long again.
    std::thread::sleep(joined.max(Duration::from_secs(3)));
    let boot_view = boot.get("/v1/peers").unwrap().to_string();
    for intruder in [&no_key, &wrong_key] {
        let name = &intruder.spec.name;
        assert!(!boot_view.contains(&intruder.peer_id), "{name} appears at the bootstrap: {boot_view}");
        assert!(intruder.alive_peers().is_empty(), "{name} sees peers: {:?}", intruder.alive_peers());
        let status = intruder.get("/v1/status").unwrap();
        assert_eq!(status["connected_peers"], 0, "{name}: {status}");
        assert!(intruder.metric_sum("p2p_gossip_validation_total") == 0.0, "{name} received gossip");
    }
    // The cluster itself is unaffected.
    let done = run_task(&boot, "still inside");
    assert_eq!(done["state"], "completed", "{done}");
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn a_connection_flood_leaves_the_node_within_its_limits_and_serving_tasks() {
    const WAVES: usize = 10;
    const PER_WAVE: usize = 100;
    const MAX_CONNECTIONS: usize = 32;
    const MAX_PENDING: usize = 16;
    let root = scratch("flood");
    let boot = NodeProc::start(
        root.path(),
        Spec::new("bootstrap", "bootstrap")
            .env("P2P_NODE__MAX_CONNECTIONS", MAX_CONNECTIONS)
            .env("P2P_LIMITS__MAX_PENDING_INCOMING", MAX_PENDING)
            // Stalled handshakes are reaped after this long.
            .env("P2P_NETWORK__CONNECTION_TIMEOUT", 2),
    );
    let addr = boot.p2p_addr();
    let w1 = NodeProc::start(root.path(), Spec::new("w1", "worker").bootstrap(std::slice::from_ref(&addr)));
    wait_until(Duration::from_secs(15), "w1 to join", || schedulable(&boot, &w1.peer_id));
    let port: u16 = addr.split("/tcp/").nth(1).and_then(|r| r.split('/').next()).unwrap().parse().unwrap();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let fds_before = open_fds(boot.pid());

    // Waves of connections that start a handshake and stall, each wave held open at once.
    let started = Instant::now();
    let (mut attempts, mut max_fds, mut served) = (0, 0, 0);
    for wave in 0..WAVES {
        let mut held = Vec::with_capacity(PER_WAVE);
        for _ in 0..PER_WAVE {
            attempts += 1;
            if let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
                use std::io::Write;
                let _ = s.write_all(b"\x13/multistream/1.0.0\n");
                held.push(s);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        max_fds = max_fds.max(open_fds(boot.pid()));
        if wave % 3 == 1 {
            let done = run_task(&boot, &format!("during wave {wave}"));
            assert_eq!(done["state"], "completed", "wave {wave}: {done}");
            served += 1;
        }
        drop(held);
        assert!(started.elapsed() < Duration::from_secs(90), "the flood is bounded in time");
    }
    let took = started.elapsed();
    let refused = boot.metric_sum("p2p_limit_hits_total{limit=\"pending_incoming\"}");
    eprintln!(
        "{attempts} connection attempts in {took:?}: max {max_fds} fds (before {fds_before}), {refused} refused \
         by the pending limit, {served} tasks served during the flood"
    );
    assert_eq!(attempts, WAVES * PER_WAVE);
    // Every wave held 100 connections open at once; the node kept at most its limits' worth.
    assert!(
        max_fds <= fds_before + MAX_PENDING + MAX_CONNECTIONS,
        "fds grew from {fds_before} to {max_fds} (limits: {MAX_PENDING} pending, {MAX_CONNECTIONS} established)"
    );
    assert!(refused >= 1.0, "the pending-connection limit bit and was counted");
    let status = boot.get("/v1/status").unwrap();
    assert!(status["connected_peers"].as_u64().unwrap() as usize <= MAX_CONNECTIONS, "{status}");
    assert!(boot.alive_peers().contains(&w1.peer_id), "the worker stayed connected");
    let done = run_task(&boot, "after the flood");
    assert_eq!(done["state"], "completed", "{done}");
}
