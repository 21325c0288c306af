//! Test harness: real `p2p-node` processes on 127.0.0.1, each with its own directory,
//! config, identity and log, driven through the HTTP API and the CLI.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p2p_network::cli::client::ApiClient;
use serde_json::{Value, json};

mod ports;
pub use ports::free_port;

pub const BIN: &str = env!("CARGO_BIN_EXE_p2p-node");

#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub role: &'static str,
    pub p2p_port: u16,
    pub capabilities: Vec<String>,
    pub bootstrap: Vec<String>,
    pub protocol_version: String,
    pub max_concurrent_tasks: usize,
    pub extra_tasks: String,
    /// `P2P_*` overrides in the node's environment.
    pub env: Vec<(String, String)>,
}

impl Spec {
    pub fn new(name: &str, role: &'static str) -> Self {
        let capabilities = match role {
            "bootstrap" => vec!["bootstrap".into(), "discovery".into()],
            "relay" => vec!["relay".into()],
            _ => vec!["compute".into(), "storage".into()],
        };
        Self {
            name: name.into(),
            role,
            p2p_port: 0,
            capabilities,
            bootstrap: Vec::new(),
            protocol_version: "p2p-network".into(),
            max_concurrent_tasks: 4,
            extra_tasks: String::new(),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.into(), value.to_string()));
        self
    }

    pub fn bootstrap(mut self, addrs: &[String]) -> Self {
        self.bootstrap = addrs.to_vec();
        self
    }

    pub fn caps(mut self, caps: &[&str]) -> Self {
        self.capabilities = caps.iter().map(|c| c.to_string()).collect();
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.p2p_port = port;
        self
    }

    pub fn protocol(mut self, pv: &str) -> Self {
        self.protocol_version = pv.into();
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.max_concurrent_tasks = n;
        self
    }
}

pub struct NodeProc {
    pub spec: Spec,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub api_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub api: ApiClient,
    pub peer_id: String,
    child: Option<Child>,
}

impl NodeProc {
    /// Writes the config and starts the node; returns once its API answers.
    pub fn start(root: &Path, spec: Spec) -> NodeProc {
        let dir = root.join(&spec.name);
        std::fs::create_dir_all(&dir).unwrap();
        let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.join("config.yaml");
        let yaml = format!(
            "node:\n  role: {role}\n  listen_address: 127.0.0.1\n  listen_port: {port}\n  capabilities: {caps}\n  \
             heartbeat_interval: 2\n  identity_file: identity.key\n  max_concurrent_tasks: {mct}\n\
             network:\n  protocol_version: {pv}\n  enable_mdns: false\n  bootstrap_peers: {boot}\n\
             api:\n  listen: \"{api}\"\nmetrics:\n  listen: \"{metrics}\"\n\
             tasks:\n  compute_difficulty: 8\n{extra}",
            role = spec.role,
            port = spec.p2p_port,
            caps = json!(spec.capabilities),
            mct = spec.max_concurrent_tasks,
            pv = spec.protocol_version,
            boot = json!(spec.bootstrap),
            api = api_addr,
            metrics = metrics_addr,
            extra = spec.extra_tasks,
        );
        std::fs::write(&config, yaml).unwrap();
        let mut node = NodeProc {
            api: ApiClient::new(api_addr),
            spec,
            dir,
            config,
            api_addr,
            metrics_addr,
            peer_id: String::new(),
            child: None,
        };
        node.launch();
        node
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("node.log")).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(["--log-format", "json", "run"])
            .env("RUST_LOG", "info,p2p_network=debug")
            .envs(self.spec.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn p2p-node");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(v) = self.get("/v1/status") {
                self.peer_id = v["peer_id"].as_str().unwrap().to_string();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited during start ({status}); log:\n{}", self.spec.name, self.log());
            }
            assert!(Instant::now() < deadline, "{} did not start; log:\n{}", self.spec.name, self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node's TCP listen address with its peer id, for others' `bootstrap_peers`.
    pub fn p2p_addr(&self) -> String {
        let status = self.get("/v1/status").unwrap();
        let tcp = status["listen_addresses"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a.as_str())
            .find(|a| a.contains("/tcp/"))
            .expect("node listens on TCP")
            .to_string();
        format!("{tcp}/p2p/{}", self.peer_id)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is running").id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; returns the exit code and how long the node took to exit.
    pub fn terminate(&mut self, within: Duration) -> (Option<i32>, Duration) {
        self.signal("TERM");
        self.wait_exit(within)
    }

    /// Waits for the process to exit by itself (killing it after `within`).
    pub fn wait_exit(&mut self, within: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let mut child = self.child.take().expect("node is running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                return (None, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same node again (same config, identity and ports).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Result<Value, String> {
        block_on(self.api.get(path)).map_err(|e| e.to_string())
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let m = hyper::Method::from_bytes(method.as_bytes()).unwrap();
        block_on(self.api.call(m, path, body, Duration::from_secs(120))).map_err(|e| e.to_string())
    }

    /// Peer ids this node lists in `peers` with state `alive`.
    pub fn alive_peers(&self) -> Vec<String> {
        self.get("/v1/peers")
            .map(|v| {
                v["peers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["state"] == "alive")
                    .map(|p| p["peer_id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn metrics(&self) -> String {
        let out = Command::new("curl").args(["-sf", &format!("http://{}/metrics", self.metrics_addr)]).output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => metrics_via_tcp(self.metrics_addr),
        }
    }

    /// Sum of a metric's samples whose line starts with `prefix` (name plus optional labels).
    pub fn metric_sum(&self, prefix: &str) -> f64 {
        sum_metric(&self.metrics(), prefix)
    }

    /// Runs the CLI against this node's config: `p2p-node --config CONFIG args...`, with
    /// `stdin` piped in when given. Returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn metrics_via_tcp(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

pub fn sum_metric(text: &str, prefix: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Runs a future to completion on a private runtime (tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Polls `check` every 100 ms until it is true or `limit` passes; returns the time taken.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    loop {
        if check() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fresh scratch directory for one test's nodes; kept after the test (its path printed)
/// when `P2P_KEEP_TEST_DIRS` is set, to read the nodes' logs.
pub fn scratch(name: &str) -> tempfile::TempDir {
    let keep = std::env::var_os("P2P_KEEP_TEST_DIRS").is_some();
    let dir = tempfile::Builder::new().prefix(&format!("p2p-{name}-")).disable_cleanup(keep).tempdir().unwrap();
    if keep {
        eprintln!("keeping {}", dir.path().display());
    }
    dir
}

/// Bootstrap plus `workers` workers that bootstrap from it; waits until every worker is
/// schedulable at the bootstrap (the gateway used by most task tests).
pub fn task_cluster(root: &Path, workers: Vec<Spec>) -> (NodeProc, Vec<NodeProc>) {
    let boot = NodeProc::start(root, Spec::new("bootstrap", "bootstrap"));
    let addr = boot.p2p_addr();
    let ws: Vec<NodeProc> =
        workers.into_iter().map(|s| NodeProc::start(root, s.bootstrap(std::slice::from_ref(&addr)))).collect();
    wait_schedulable(&boot, &ws);
    (boot, ws)
}

/// Waits until every one of `workers` is schedulable at `gateway`.
pub fn wait_schedulable(gateway: &NodeProc, workers: &[NodeProc]) {
    let expected = workers.len();
    wait_until(Duration::from_secs(15), "workers to be schedulable at the gateway", || {
        gateway
            .get("/v1/capabilities")
            .map(|v| {
                v["cluster"]
                    .as_object()
                    .map(|m| {
                        let mut ids: Vec<&str> = m
                            .values()
                            .flat_map(|c| c["workers"].as_array().unwrap().iter().filter_map(|w| w.as_str()))
                            .collect();
                        ids.sort();
                        ids.dedup();
                        ids.iter().filter(|id| workers.iter().any(|w| w.peer_id == **id)).count() == expected
                    })
                    .unwrap_or(false)
            })
            .unwrap_or(false)
    });
}
