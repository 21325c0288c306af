//! In-process harness: nodes on 127.0.0.1 (p2p port 0) inside the test process, driven
//! through their `NodeHandle`s, with their metrics read over HTTP like a scraper would.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use p2p_network::config::Config;
use p2p_network::node::Node;
use p2p_network::node::NodeHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

#[path = "../common/ports.rs"]
mod ports;
pub use ports::free_port;

pub struct Running {
    pub handle: NodeHandle,
    pub peer_id: String,
    pub metrics_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("node stops").unwrap();
    }

    /// The node's `/metrics` text, fetched over HTTP.
    pub async fn metrics(&self) -> String {
        let mut s = tokio::net::TcpStream::connect(self.metrics_addr).await.expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
    }

    /// Sum of every sample whose name and labels start with `prefix`.
    pub async fn metric(&self, prefix: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// This node's TCP listen address with its peer id.
    pub async fn tcp_addr(&self) -> String {
        let t0 = Instant::now();
        loop {
            let status = self.handle.status().await.unwrap();
            if let Some(tcp) = status.listen_addresses.iter().find(|a| a.contains("/tcp/")) {
                return format!("{tcp}/p2p/{}", self.peer_id);
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "node never listened");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn alive(&self) -> Vec<String> {
        self.handle.peers().await.unwrap().into_iter().filter(|p| p.state == "alive").map(|p| p.peer_id).collect()
    }
}

/// Starts a node of `role` in this process; `extra` is YAML appended to the config (whole
/// sections only: it must not repeat a section the harness writes).
pub async fn start(dir: &Path, name: &str, role: &str, bootstrap: Option<&str>, extra: &str) -> Running {
    start_with_env(dir, name, role, bootstrap, extra, Vec::new()).await
}

/// [`start`], with `P2P_*` environment overrides (`env`) applied as the binary would.
pub async fn start_with_env(
    dir: &Path,
    name: &str,
    role: &str,
    bootstrap: Option<&str>,
    extra: &str,
    env: Vec<(String, String)>,
) -> Running {
    // RUST_LOG=... shows the nodes' logs (captured per test unless --nocapture).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let caps = if role == "worker" { "[compute, storage]" } else { "[bootstrap]" };
    let boot = bootstrap.map(|b| format!("[\"{b}\"]")).unwrap_or_else(|| "[]".into());
    let yaml = format!(
        "node:\n  role: {role}\n  listen_address: 127.0.0.1\n  listen_port: 0\n  capabilities: {caps}\n  \
         heartbeat_interval: 1\n  identity_file: {}\n  data_dir: {}\n  max_concurrent_tasks: 2\n\
         network:\n  enable_mdns: false\n  enable_quic: false\n  bootstrap_peers: {boot}\n\
         api:\n  listen: \"127.0.0.1:{}\"\nmetrics:\n  listen: \"127.0.0.1:0\"\ntasks:\n  compute_difficulty: 4\n{extra}",
        dir.join(format!("{name}.key")).display(),
        dir.join(format!("{name}-data")).display(),
        free_port()
    );
    let config = Config::from_yaml_str(&yaml, name, env).unwrap();
    let node = Node::start(config).await.unwrap();
    let handle = node.handle();
    let peer_id = node.peer_id().to_string();
    let metrics_addr = node.metrics_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(node.run(async move {
        let _ = stopped.await;
    }));
    Running { handle, peer_id, metrics_addr, stop: Some(stop), task }
}

pub async fn eventually(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !check().await {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
