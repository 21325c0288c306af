//! Scale harness: one bootstrap and N workers inside ONE process (127.0.0.1 only), then
//! measurements of what the cluster does at that size.
//!
//! ```sh
//! cargo run --release --example scale -- --nodes 100 [--max-secs 240] [--json out.json]
//! cargo run --release --example scale -- --nodes 100 --compare /tmp/scale-old   # an older build first
//! ```
//!
//! The last line of the output is one JSON object with the headline figures (`nodes`,
//! `formed_s`, `gossip_delivered`, `gossip_p99_ms`, `false_suspicions`, `join_everywhere_p50_ms`,
//! `dead_everywhere_p50_ms`, `idle_cores` (and `idle_cores_second_half`), `rss_mib_per_node` (at
//! the end of formation),
//! `rss_mib_per_node_after_quiet` (after the quiet window), `separate_node_rss_mib`; with
//! `--compare`, the older build's under `compare`).
//!
//! Nodes are started in batches (`--batch`, `--batch-pause-ms`); every node listens on
//! 127.0.0.1 with p2p port 0, QUIC and mDNS off, metrics on 127.0.0.1:0. Phases, each bounded by
//! what is left of `--max-secs` (a watchdog thread prints whatever was measured and exits with
//! status 2 if the hard cap is ever reached):
//!
//! 1. formation: until every node's `peers()` lists all others as `alive` (else the fraction
//!    reached); then connections, routing tables, fds and CPU over a quiet window;
//! 2. gossip delivery, twice:
//!    a. join: a newly started worker until it is schedulable (listed under `compute` in
//!    `capabilities()`) on every node: its CapabilityAdvertisement, end to end;
//!    b. raw: a probe peer built here (identify + ping + gossipsub with the cluster's protocol
//!    names and its own signing key) joins through `--probe-links` workers and publishes
//!    `--gossip-bytes` signed CapabilityAdvertisements whose capability list carries a sequence
//!    number; each node's `capabilities()` shows when that message reached it;
//! 3. Kademlia: every node's `/metrics` (127.0.0.1) is scraped for libp2p-kad's
//!    `query_result_num_requests` / `num_success` / `duration` histograms (hops are not
//!    exported by libp2p), with ping, connection-error and membership breakdowns;
//! 4. kill: a worker's run future is aborted (its sockets close without a goodbye, as in
//!    `tests/in_process.rs`) until every other node's `peers()` shows it `dead`;
//! 5. memory: VmRSS before and after the nodes started, per node;
//! 6. pause: one more node, a separate `p2p-node` process (the binary beside this harness, or
//!    `--node-binary`), joins, is stopped with SIGSTOP for `--pause-secs` and resumed; healthy
//!    members suspected meanwhile are counted from the nodes' own counters (`pause.rs`).
//!
//! False suspicions are counted three times: members suspect or dead at the end of formation
//! (polled), changes to suspect or dead during the quiet window (every node's
//! `p2p_membership_transitions_total`: nobody was stopped then, so each one is false), and
//! healthy members that had to refute a suspicion during the pause phase.
//!
//! The order of execution is 1, 2a, 4, 6, 2b, 3 (the probe of 2b joins the membership, so it
//! comes after the measurements that count members).
//!
//! Exit status: 0 when every phase ran (whatever it measured), 2 when the hard cap hit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, gossipsub, identify, noise, ping, tcp, yamux};
use p2p_network::config::Config;
use p2p_network::membership::MemberState;
use p2p_network::network::{ProtocolNames, gossip_config, view};
use p2p_network::node::NodeHandle;
use p2p_network::node::{Node, StartError};
use p2p_network::protocol::{
    CapabilityAdvertisement, GossipMessage, HeartBeat, MAX_ENVELOPE_OVERHEAD, WIRE_VERSION, seal_payload,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

mod pause;

/// The shipped node's allocator (src/main.rs), so the memory per node measured here is the
/// allocator's behaviour a pod has.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The cluster name the shipped configs use; the probe must match it or Identify rejects it.
const PROTOCOL_VERSION: &str = "p2p-network";
/// Kademlia parallelism the nodes are built with (`network/names.rs`).
const KAD_ALPHA: f64 = 3.0;
/// Margin kept at the end of `--max-secs` for printing the table.
const OUTPUT_MARGIN: Duration = Duration::from_secs(3);
/// Each API request of the harness gives up after this (a stalled core must not stall us).
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often each node is asked while the harness waits for what the nodes time themselves
/// (`advertised_at_ms`): only how soon the harness moves on depends on it.
const POLL_BY_CLOCK: Duration = Duration::from_millis(250);

/// How often each node is asked while the harness waits for something to reach all of them:
/// `base` up to 25 nodes, longer in proportion above, so the harness's own questions (one
/// `capabilities()` or `peers()` per node and interval, each rendering every member) cost
/// the same at any size. At 100 nodes and a fixed 20 ms they were 5,000 calls a second,
/// enough CPU on 2 cores to stretch the very latencies measured.
fn poll_every(nodes: usize, base: Duration) -> Duration {
    base * u32::try_from(nodes.div_ceil(25).max(1)).unwrap_or(u32::MAX)
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Start a bootstrap and N workers in one process and measure formation, gossip, failure detection")]
struct Args {
    /// Workers to start (plus one bootstrap).
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Hard cap on the whole run, in seconds.
    #[arg(long, default_value_t = 240)]
    max_secs: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Nodes started together before a pause.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Pause between batches, in milliseconds.
    #[arg(long, default_value_t = 500)]
    batch_pause_ms: u64,
    /// `node.max_connections` of the bootstrap.
    #[arg(long, default_value_t = 400)]
    bootstrap_max_connections: u32,
    /// `node.max_connections` of the workers (the shipped default is 100).
    #[arg(long, default_value_t = 100)]
    worker_max_connections: u32,
    /// `node.heartbeat_interval` of every node, in seconds (the shipped configs: 30 for workers,
    /// 10 for bootstrap and relay; 1 is a stress setting: 30x the gossip of a default worker).
    #[arg(long, default_value_t = 1)]
    heartbeat_secs: u64,
    /// `membership.ping_interval_ms` of every node: SWIM's protocol period (one member pinged
    /// directly per period).
    #[arg(long, default_value_t = Config::default().membership.ping_interval_ms)]
    ping_interval_ms: u64,
    /// `network.active_peers` of every node: the members each keeps connected (default: the
    /// shipped default).
    #[arg(long, default_value_t = Config::default().network.active_peers)]
    active_peers: usize,
    /// Measured raw gossip messages (one warm-up message is sent first and not counted).
    #[arg(long, default_value_t = 20)]
    gossip_messages: usize,
    /// Size of each raw gossip message (the JSON payload, before GossipSub's envelope).
    #[arg(long, default_value_t = 1024)]
    gossip_bytes: usize,
    /// Workers the gossip probe connects to (its messages enter the cluster there).
    #[arg(long, default_value_t = 1)]
    probe_links: usize,
    /// Longest wait for the killed worker to be declared dead everywhere, in seconds.
    #[arg(long, default_value_t = 25)]
    kill_secs: u64,
    /// Quiet window after formation (nothing polled) over which steady CPU and false
    /// suspicions are measured, in seconds.
    #[arg(long, default_value_t = 5)]
    quiet_secs: u64,
    /// Starve the nodes at the start of the quiet window: `--starve-procs` busy-looping
    /// processes compete with them for the CPU for this many seconds (a machine busy with
    /// something else: pings answered late must not become suspicions). 0: none.
    #[arg(long, default_value_t = 0)]
    starve_secs: u64,
    /// Busy-looping processes for `--starve-secs`.
    #[arg(long, default_value_t = 6)]
    starve_procs: usize,
    /// How long the pause phase keeps its separate node stopped (SIGSTOP), in seconds; 0 skips
    /// the phase.
    #[arg(long, default_value_t = 3)]
    pause_secs: u64,
    /// The `p2p-node` binary the pause phase runs (default: the one beside this harness).
    #[arg(long)]
    node_binary: Option<PathBuf>,
    /// Tokio worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Log to stderr with RUST_LOG (default filter "warn").
    #[arg(long)]
    log: bool,
    /// Run this older build of the harness first, with the same arguments (one after the
    /// other: never both at once), and print its figures beside this build's.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Exit with status 1 unless the counts hold (formed, every message and the join delivered
    /// everywhere, the kill seen everywhere): the short form `./test.sh` runs.
    #[arg(long)]
    check: bool,
}

// ---------------------------------------------------------------------------------------------
// Results

#[derive(Debug, Default, Clone, Serialize)]
struct Dist {
    n: usize,
    min: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
    mean: Option<f64>,
}

impl Dist {
    fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if v.is_empty() {
                None
            } else {
                let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
                Some(v[rank - 1])
            }
        };
        Self {
            n: v.len(),
            min: v.first().copied(),
            p50: pick(0.50),
            p99: pick(0.99),
            max: v.last().copied(),
            mean: (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
        }
    }

    fn ms(&self) -> String {
        match (self.p50, self.p99, self.max) {
            (Some(a), Some(b), Some(c)) => format!("p50 {a:.0} ms, p99 {b:.0} ms, max {c:.0} ms"),
            _ => "n/a".into(),
        }
    }

    fn plain(&self) -> String {
        match (self.min, self.p50, self.max, self.mean) {
            (Some(lo), Some(a), Some(c), Some(m)) => format!("min {lo:.0}, p50 {a:.0}, mean {m:.1}, max {c:.0}"),
            _ => "n/a".into(),
        }
    }
}

#[derive(Debug, Default, Clone, Serialize)]
struct Formation {
    converged: bool,
    /// Every node listed all others alive in the same poll, seconds after the first node started.
    all_full_after_first_start_s: Option<f64>,
    /// The same, seconds after the last node started.
    all_full_after_last_start_s: Option<f64>,
    /// Per node: first time it listed all others alive, seconds after the last node started.
    per_node_full_s: Dist,
    nodes_full_at_end: usize,
    nodes: usize,
    /// Mean over nodes of (alive others seen / others), at the last poll.
    alive_fraction_at_end: f64,
    /// Smallest such fraction at the last poll.
    alive_fraction_min_at_end: f64,
    /// Members in other states at the last poll, summed over nodes.
    suspect_at_end: usize,
    dead_at_end: usize,
    /// Nodes whose API did not answer `peers()` within 2 s, at the last poll.
    unresponsive_at_end: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Steady {
    connected_peers: Dist,
    /// The same at the end of the quiet window.
    connected_peers_after_quiet: Dist,
    routing_table_size: Dist,
    /// Lifeguard local health score per node after formation (0 healthy, up to 8).
    local_health: Dist,
    open_fds: Option<usize>,
    fd_limit: Option<String>,
    threads: Option<usize>,
    /// Process CPU (user + system) over the formation phase, in cores.
    cpu_cores_during_formation: Option<f64>,
    /// Process CPU over a quiet window (`--quiet-secs`) after formation (nothing polled), in cores.
    cpu_cores_steady: Option<f64>,
    /// The same over the quiet window's second half only: formation's leftovers (transient
    /// connections closed, AutoNAT's first dial-backs, the starving) mostly fall in the first.
    cpu_cores_second_half: Option<f64>,
    /// The same per node: milliseconds of CPU per node per second.
    cpu_ms_per_node_per_s: Option<f64>,
    /// Connections established, and closed as outside the active view, per second over the
    /// quiet window, cluster-wide: a settled cluster opens none.
    connections_opened_per_s: Option<f64>,
    connections_trimmed_per_s: Option<f64>,
    /// Kademlia queries finished per second over the quiet window, cluster-wide (outside the
    /// active view, each one's requests dial peers).
    kad_queries_per_s: Option<f64>,
    /// Dials started per second over the quiet window, cluster-wide, by why (`p2p_dials_total`).
    dials_per_s: BTreeMap<String, f64>,
    /// SWIM probes started per second over the quiet window, cluster-wide.
    probes_per_s: Option<f64>,
    /// Changes of a member to suspect or dead during the quiet window, summed over nodes
    /// (nobody was stopped: every one is a false suspicion), and refutations meanwhile.
    suspicions_in_quiet_window: Option<f64>,
    refutations_in_quiet_window: Option<f64>,
    /// Per node, after the quiet window: workers it lists under `compute` (schedulable there),
    /// out of `workers`. Members alive are not enough to place tasks: their advertisements are.
    workers_listed: Dist,
    workers: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Delivery {
    /// What was measured, in a few words.
    what: String,
    delivered: usize,
    expected: usize,
    ratio: f64,
    latency_ms: Dist,
    /// For messages: time until the last node had it (one value per fully delivered message).
    full_coverage_ms: Option<Dist>,
    note: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Kill {
    victim: String,
    observers: usize,
    suspect_seen: usize,
    suspect_ms: Dist,
    dead_seen: usize,
    dead_ms: Dist,
    ratio: f64,
}

#[derive(Debug, Default, Clone, Serialize)]
struct KadType {
    query_type: String,
    queries: f64,
    requests_mean: Option<f64>,
    /// Upper bound of the bucket holding the median / 99th percentile (buckets 1, 2, 4, ... 512).
    requests_p50_le: Option<f64>,
    requests_p99_le: Option<f64>,
    successes_mean: Option<f64>,
    failures_mean: Option<f64>,
    duration_mean_s: Option<f64>,
    /// num_requests / alpha: a lower bound of sequential rounds, not a hop count.
    rounds_estimate: Option<f64>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Kad {
    nodes_scraped: usize,
    log2_nodes: f64,
    queries: Vec<KadType>,
    gossip_in_per_node_per_s: Option<f64>,
    gossip_in_bytes_per_node_per_s: Option<f64>,
    ping_rtt_mean_ms: Option<f64>,
    /// Counters summed over all nodes, by one label (see `BREAKDOWNS`).
    breakdowns: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Families summed over all nodes and broken down by one label: what went wrong, and where.
const BREAKDOWNS: &[(&str, &str)] = &[
    ("libp2p_ping_failure_total", "reason"),
    ("libp2p_swarm_outgoing_connection_error_total", "error"),
    ("libp2p_swarm_connections_incoming_error_total", "error"),
    ("libp2p_swarm_connections_duration_seconds_count", "cause"),
    ("p2p_membership_members", "state"),
    ("p2p_messages_dropped_total", "reason"),
    // No labels: shown as `none=<sum>`.
    ("p2p_connections_trimmed_total", ""),
    ("p2p_dials_total", "reason"),
];

#[derive(Debug, Default, Clone, Serialize)]
struct Memory {
    rss_before_kib: Option<u64>,
    rss_after_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
    per_node_kib: Option<f64>,
    /// VmRSS at the end of the quiet window: formation's transient connections closed by then.
    rss_after_quiet_kib: Option<u64>,
    per_node_after_quiet_kib: Option<f64>,
}

#[derive(Debug, Default, Clone, Serialize)]
struct Report {
    workers: usize,
    nodes_total: usize,
    cpus: usize,
    runtime_threads: usize,
    max_secs: u64,
    heartbeat_secs: u64,
    ping_interval_ms: u64,
    active_peers: usize,
    bootstrap_max_connections: u32,
    worker_max_connections: u32,
    /// The machine's load average (1, 5, 15 min) at the start and at the end: other work on
    /// the machine competes with the nodes for the CPUs.
    loadavg_start: Option<String>,
    loadavg_end: Option<String>,
    /// Cost of one ed25519 signature check of a 1 KB message on this machine: a node checks
    /// each gossip message it receives once, when it opens the message's envelope (GossipSub
    /// drops the duplicate copies before).
    ed25519_verify_us: Option<f64>,
    /// Gossip messages the cluster originates per second (a HeartBeat and a CapabilityAdvertisement
    /// per node per heartbeat interval) and the signature checks that implies for the process:
    /// one per (message, other node).
    gossip_originated_per_s: Option<f64>,
    verifications_per_s: Option<f64>,
    /// Copies of those messages received per second, duplicates included: with GossipSub's
    /// defaults (flood publish to every connected peer, then every receiver forwarding to its ~6
    /// mesh peers but the one it heard it from) about (connections + 5 * (nodes - 1)) per message.
    copies_received_per_s_estimate: Option<f64>,
    /// `verifications_per_s` in CPU cores at `ed25519_verify_us`.
    verify_cores: Option<f64>,
    start_all_s: Option<f64>,
    formation: Option<Formation>,
    steady: Option<Steady>,
    join: Option<Delivery>,
    /// The joiner's own view: from its start until it lists every running node alive, and
    /// every running worker under `compute` (what it learns from neighbours and gossip).
    joiner_sees_all_members_ms: Option<f64>,
    joiner_sees_all_workers_ms: Option<f64>,
    /// The joiner's `p2p_membership_pulls_total` by outcome at the end of the join phase.
    joiner_pulls: Option<String>,
    kill: Option<Kill>,
    pause: Option<pause::Pause>,
    gossip: Option<Delivery>,
    kad: Option<Kad>,
    memory: Memory,
    phase: String,
    /// `--compare`: the older build's report, run first in the same sitting.
    #[serde(skip_serializing_if = "Option::is_none")]
    compared: Option<serde_json::Value>,
    hard_cap_hit: bool,
    elapsed_s: f64,
    notes: Vec<String>,
}

type Shared = Arc<Mutex<Report>>;

fn update(shared: &Shared, f: impl FnOnce(&mut Report)) {
    let mut r = shared.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut r);
}

fn note(shared: &Shared, text: impl Into<String>) {
    let text = text.into();
    eprintln!("scale: {text}");
    update(shared, |r| r.notes.push(text));
}

fn phase(shared: &Shared, name: &str, t_start: Instant) {
    eprintln!("scale: [{:6.1} s] {name}", t_start.elapsed().as_secs_f64());
    update(shared, |r| r.phase = name.to_string());
}

// ---------------------------------------------------------------------------------------------
// Process facts from /proc

fn proc_status_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

fn threads() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines().find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
}

/// This process's soft and hard limits on open files, as `/proc/self/limits` writes them.
fn fd_limits() -> Option<(String, String)> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    // "Max open files  <soft> <hard> files"
    let mut parts = line.split_whitespace().skip(3);
    Some((parts.next()?.to_string(), parts.next()?.to_string()))
}

/// File descriptors all nodes may hold at once: every connection their limits allow (one
/// socket each end, both ends in this process), plus listeners, stores and the runtime.
fn fds_wanted(args: &Args) -> u64 {
    let per_node = 16;
    let workers = args.nodes as u64;
    workers * u64::from(args.worker_max_connections)
        + u64::from(args.bootstrap_max_connections)
        + (workers + 1) * per_node
}

fn fd_limit() -> Option<String> {
    fd_limits().map(|(soft, hard)| format!("{soft} soft / {hard} hard"))
}

/// Microseconds per ed25519 verification of a signed 1 KB message.
fn verify_cost_us() -> Option<f64> {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let msg = vec![7u8; 1024];
    let sig = key.sign(&msg).ok()?;
    let public = key.public();
    let rounds = 2000;
    let t0 = Instant::now();
    let mut ok = 0;
    for _ in 0..rounds {
        ok += usize::from(public.verify(std::hint::black_box(&msg), std::hint::black_box(&sig)));
    }
    (ok == rounds).then(|| t0.elapsed().as_secs_f64() * 1e6 / rounds as f64)
}

fn loadavg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// Busy-looping child processes, each ended by coreutils' `timeout` after `secs`, even if this
/// harness exits first (`--starve-secs` is at most the quiet window, so they are done by the
/// time it ends). Their CPU is not this process's: the quiet window's CPU figure stays the nodes'.
fn starve(secs: u64, procs: usize) -> Vec<tokio::process::Child> {
    if secs == 0 {
        return Vec::new();
    }
    eprintln!("scale: starving the nodes with {procs} busy processes for {secs} s");
    (0..procs)
        .filter_map(|_| {
            tokio::process::Command::new("timeout")
                .args([&secs.to_string(), "sh", "-c", "while :; do :; done"])
                .spawn()
                .map_err(|e| eprintln!("scale: cannot start a busy process: {e}"))
                .ok()
        })
        .collect()
}

/// User + system CPU seconds of this process.
fn cpu_secs() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

// ---------------------------------------------------------------------------------------------
// Nodes

struct Running {
    name: String,
    handle: NodeHandle,
    peer_id: String,
    metrics_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// Kept so the node is not told to stop; dropped with the process.
    _stop: oneshot::Sender<()>,
}

struct Spawner {
    dir: PathBuf,
    used_ports: HashSet<u16>,
    args: Args,
}

impl Spawner {
    fn free_port(&mut self) -> u16 {
        loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("bind an ephemeral loopback port");
            if self.used_ports.insert(port) {
                return port;
            }
        }
    }

    fn yaml(&mut self, name: &str, bootstrap: Option<&str>) -> String {
        let (role, caps, max_conn) = match bootstrap {
            None => ("bootstrap", "[bootstrap, discovery]", self.args.bootstrap_max_connections),
            Some(_) => ("worker", "[compute, storage]", self.args.worker_max_connections),
        };
        let boot = bootstrap.map(|b| format!("[\"{b}\"]")).unwrap_or_else(|| "[]".into());
        let key = serde_json::to_string(&self.dir.join(format!("{name}.key")).display().to_string())
            .expect("a string serializes");
        let data = serde_json::to_string(&self.dir.join(format!("{name}-data")).display().to_string())
            .expect("a string serializes");
        let (hb, api) = (self.args.heartbeat_secs, self.free_port());
        format!(
            "node:\n  role: {role}\n  listen_address: 127.0.0.1\n  listen_port: 0\n  capabilities: {caps}\n  \
             max_connections: {max_conn}\n  heartbeat_interval: {hb}\n  identity_file: {key}\n  \
             data_dir: {data}\n  max_concurrent_tasks: 2\n\
             network:\n  protocol_version: {PROTOCOL_VERSION}\n  enable_mdns: false\n  enable_quic: false\n  \
             bootstrap_peers: {boot}\n  active_peers: {active}\n\
             api:\n  listen: \"127.0.0.1:{api}\"\nmetrics:\n  listen: \"127.0.0.1:0\"\n\
             tasks:\n  compute_difficulty: 4\nmembership:\n  ping_interval_ms: {ping}\n",
            ping = self.args.ping_interval_ms,
            active = self.args.active_peers,
        )
    }

    async fn start(&mut self, name: &str, bootstrap: Option<&str>) -> anyhow::Result<Running> {
        let mut last_err = None;
        for _ in 0..5 {
            let yaml = self.yaml(name, bootstrap);
            let config = Config::from_yaml_str(&yaml, name, Vec::new())?;
            match Node::start(config).await {
                Ok(node) => {
                    let handle = node.handle();
                    let peer_id = node.peer_id().to_string();
                    let metrics_addr = node.metrics_addr();
                    let (stop, stopped) = oneshot::channel::<()>();
                    // With `--log`, each line names the node it came from.
                    let span = tracing::info_span!("node", name);
                    let task = tokio::spawn(
                        node.run(async move {
                            let _ = stopped.await;
                        })
                        .instrument(span),
                    );
                    return Ok(Running { name: name.to_string(), handle, peer_id, metrics_addr, task, _stop: stop });
                }
                // The free-port picker races with the rest of the machine; pick another.
                Err(e @ StartError::ApiBind { .. }) => last_err = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_err.map_or_else(|| anyhow::anyhow!("node {name} did not start"), Into::into))
    }
}

async fn tcp_addr(node: &Running, within: Duration) -> anyhow::Result<String> {
    let t0 = Instant::now();
    loop {
        if let Ok(Ok(status)) = tokio::time::timeout(ASK_TIMEOUT, node.handle.status()).await
            && let Some(tcp) = status.listen_addresses.iter().find(|a| a.contains("/tcp/"))
        {
            return Ok(format!("{tcp}/p2p/{}", node.peer_id));
        }
        anyhow::ensure!(t0.elapsed() < within, "{} never listened", node.name);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node's view of the others: (alive, suspect, dead) among `expected`.
async fn view(node: &Running, expected: &HashSet<String>) -> Option<(usize, usize, usize)> {
    let peers = tokio::time::timeout(ASK_TIMEOUT, node.handle.peers()).await.ok()?.ok()?;
    let mut counts = (0, 0, 0);
    for p in peers.iter().filter(|p| p.peer_id != node.peer_id && expected.contains(&p.peer_id)) {
        match p.state.as_str() {
            "alive" => counts.0 += 1,
            "suspect" => counts.1 += 1,
            "dead" => counts.2 += 1,
            _ => {}
        }
    }
    Some(counts)
}

/// Per node: how many of the workers (all of `nodes` but the bootstrap, first) it lists under `compute`.
async fn workers_listed(nodes: &[Running]) -> Dist {
    let workers: HashSet<&String> = nodes.iter().skip(1).map(|n| &n.peer_id).collect();
    let counts = futures::future::join_all(nodes.iter().map(|n| {
        let workers = &workers;
        async move {
            let caps = tokio::time::timeout(ASK_TIMEOUT, n.handle.capabilities()).await.ok()?.ok()?;
            let listed =
                caps.cluster.get("compute").map_or(0, |c| c.workers.iter().filter(|w| workers.contains(w)).count());
            Some(listed as f64)
        }
    }))
    .await;
    Dist::of(&counts.into_iter().flatten().collect::<Vec<_>>())
}

async fn steady_facts(nodes: &[Running]) -> (Dist, Dist, Dist) {
    let statuses = futures::future::join_all(
        nodes.iter().map(|n| async move { tokio::time::timeout(ASK_TIMEOUT, n.handle.status()).await.ok()?.ok() }),
    )
    .await;
    let conn: Vec<f64> = statuses.iter().flatten().map(|s| s.connected_peers as f64).collect();
    let rt: Vec<f64> = statuses.iter().flatten().map(|s| s.routing_table_size as f64).collect();
    let health: Vec<f64> = statuses.iter().flatten().map(|s| f64::from(s.local_health)).collect();
    (Dist::of(&conn), Dist::of(&rt), Dist::of(&health))
}

// ---------------------------------------------------------------------------------------------
// The gossip probe: a minimal peer of the cluster that can publish arbitrary signed messages.

#[derive(NetworkBehaviour)]
struct ProbeBehaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour,
}

enum ProbeCommand {
    Dial(Multiaddr),
    Publish { data: Vec<u8>, reply: oneshot::Sender<Result<(), String>> },
}

#[derive(Default)]
struct ProbeState {
    connected: HashSet<PeerId>,
    /// Peers that told us they subscribe to the capabilities topic.
    subscribed: HashSet<PeerId>,
}

struct Probe {
    peer_id: PeerId,
    tx: mpsc::Sender<ProbeCommand>,
    state: Arc<Mutex<ProbeState>>,
    task: tokio::task::JoinHandle<()>,
}

fn topic(name: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("{PROTOCOL_VERSION}/{name}"))
}

fn start_probe() -> anyhow::Result<Probe> {
    let signing_key = libp2p::identity::Keypair::generate_ed25519();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(signing_key.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
        .with_behaviour(|key| {
            // The nodes' own gossipsub settings (network/gossip_settings.rs), so the probe is an ordinary mesh member.
            let config = gossip_config(&ProtocolNames::new(PROTOCOL_VERSION))
                .heartbeat_interval(Duration::from_millis(700))
                .max_transmit_size(16 * 1024 + MAX_ENVELOPE_OVERHEAD)
                .build()?;
            Ok(ProbeBehaviour {
                identify: identify::Behaviour::new(
                    identify::Config::new(PROTOCOL_VERSION.into(), key.public())
                        .with_agent_version("p2p-node/scale-probe role=probe".into()),
                ),
                ping: ping::Behaviour::new(ping::Config::new()),
                gossipsub: gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, config)?,
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    for t in ["heartbeat", "capabilities"] {
        swarm.behaviour_mut().gossipsub.subscribe(&topic(t))?;
    }
    let peer_id = *swarm.local_peer_id();
    let state = Arc::new(Mutex::new(ProbeState::default()));
    let (tx, mut rx) = mpsc::channel::<ProbeCommand>(64);
    let st = state.clone();
    let incarnation = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs());
    let task = tokio::spawn(async move {
        // Heartbeats keep the probe a live member everywhere, so nobody probes or suspects it.
        let mut hb = tokio::time::interval(Duration::from_secs(1));
        let mut heartbeats = 0u64;
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(ProbeCommand::Dial(addr)) => {
                        let _ = swarm.dial(addr);
                    }
                    Some(ProbeCommand::Publish { data, reply }) => {
                        let r = seal_payload(&signing_key, data).map_err(|e| e.to_string()).and_then(|sealed| {
                            swarm.behaviour_mut().gossipsub.publish(topic("capabilities"), sealed).map_err(|e| e.to_string())
                        });
                        let _ = reply.send(r.map(|_| ()));
                    }
                    None => break,
                },
                _ = hb.tick() => {
                    let msg = GossipMessage::HeartBeat(HeartBeat {
                        v: WIRE_VERSION,
                        node: peer_id.to_string(),
                        incarnation,
                        state: MemberState::Alive,
                        load: 0,
                        seq: heartbeats,
                        rumors: Vec::new(),
                    });
                    heartbeats += 1;
                    if let Ok(sealed) = msg.seal(&signing_key) {
                        let _ = swarm.behaviour_mut().gossipsub.publish(topic("heartbeat"), sealed);
                    }
                }
                event = swarm.select_next_some() => {
                    let mut s = st.lock().unwrap_or_else(|e| e.into_inner());
                    match event {
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                            s.connected.insert(peer_id);
                        }
                        SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                            s.connected.remove(&peer_id);
                            s.subscribed.remove(&peer_id);
                        }
                        SwarmEvent::Behaviour(ProbeBehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                            peer_id, topic: t, ..
                        })) if t == topic("capabilities").hash() => {
                            s.subscribed.insert(peer_id);
                        }
                        _ => {}
                    }
                }
            }
        }
    });
    Ok(Probe { peer_id, tx, state, task })
}

/// The probe's advertisement, padded to `size` bytes of JSON, carrying sequence number `seq`.
fn probe_message(probe: PeerId, incarnation: u64, seq: usize, size: usize) -> Vec<u8> {
    let make = |pad: usize| {
        GossipMessage::CapabilityAdvertisement(CapabilityAdvertisement {
            v: WIRE_VERSION,
            node: probe.to_string(),
            incarnation,
            role: "probe".into(),
            capabilities: vec![format!("scale-seq-{seq}"), format!("scale-pad-{}", "x".repeat(pad))],
            capacity: 0,
            load: 0,
            addresses: Vec::new(),
            seq: seq as u64,
        })
        .encode()
    };
    let base = make(0).len();
    make(size.saturating_sub(base))
}

/// The highest `scale-seq-N` a node holds from the probe, and when the node took that
/// advertisement in by its own clock (Unix ms; the nodes share this process's clock).
async fn probe_seen(node: &Running, probe: &str) -> Option<(usize, Option<u64>)> {
    let entry = peer_entry(node, probe).await?;
    let seq = entry.capabilities.iter().filter_map(|k| k.strip_prefix("scale-seq-")?.parse().ok()).max()?;
    Some((seq, entry.advertised_at_ms))
}

/// When `node` took in the latest advertisement of `peer` (Unix ms, its own clock).
async fn taken_in(node: &Running, peer: &str) -> Option<u64> {
    peer_entry(node, peer).await?.advertised_at_ms
}

/// `peer` as `node`'s `peers()` lists it.
async fn peer_entry(node: &Running, peer: &str) -> Option<p2p_network::node::PeerView> {
    let peers = tokio::time::timeout(ASK_TIMEOUT, node.handle.peers()).await.ok()?.ok()?;
    peers.into_iter().find(|p| p.peer_id == peer)
}

/// Now, in Unix milliseconds (what `advertised_at_ms` is compared with).
fn unix_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------------
// Metrics scraping

async fn scrape(addr: SocketAddr) -> Option<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), fetch).await.ok()?
}

/// One sample line: name, labels, value.
fn parse_sample(line: &str) -> Option<(&str, HashMap<&str, &str>, f64)> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((n, rest)) => {
            let inner = rest.strip_suffix('}')?;
            let labels = inner
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.trim(), v.trim().trim_matches('"')))
                })
                .collect();
            (n, labels)
        }
        None => (series, HashMap::new()),
    };
    Some((name, labels, value))
}

#[derive(Default)]
struct Hist {
    sum: f64,
    count: f64,
    /// Cumulative counts by upper bound.
    buckets: BTreeMap<u64, f64>,
}

impl Hist {
    fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// Upper bound of the bucket holding quantile q.
    fn quantile_le(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let target = q * self.count;
        self.buckets.iter().find(|(_, c)| **c >= target).map(|(le, _)| f64::from_bits(*le))
    }
}

// ---------------------------------------------------------------------------------------------
// Output

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.1}{unit}"))
}

fn render(r: &Report) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
    row(
        "cluster",
        format!(
            "1 bootstrap + {} workers = {} nodes in one process; {} CPUs, {} runtime threads; heartbeat {} s; \
             ping {} ms; active view {}; max_connections bootstrap {} / workers {}",
            r.workers,
            r.nodes_total,
            r.cpus,
            r.runtime_threads,
            r.heartbeat_secs,
            r.ping_interval_ms,
            r.active_peers,
            r.bootstrap_max_connections,
            r.worker_max_connections
        ),
    );
    row(
        "machine load average (1 5 15 min)",
        format!(
            "{} at start, {} at end",
            r.loadavg_start.as_deref().unwrap_or("n/a"),
            r.loadavg_end.as_deref().unwrap_or("n/a")
        ),
    );
    row(
        "gossip load offered",
        format!(
            "{} messages/s originated; {} signature checks/s (one per message and node; copies received, \
             deduplicated before the check: est. {}/s); ed25519 verify {} -> {} cores for signature checks",
            fmt_opt(r.gossip_originated_per_s, ""),
            fmt_opt(r.verifications_per_s, ""),
            fmt_opt(r.copies_received_per_s_estimate, ""),
            fmt_opt(r.ed25519_verify_us, " us"),
            fmt_opt(r.verify_cores, ""),
        ),
    );
    row("start all nodes", fmt_opt(r.start_all_s, " s"));
    match &r.formation {
        Some(f) => {
            row(
                "1. formation (all alive everywhere)",
                if f.converged {
                    format!(
                        "{} after first start, {} after last start",
                        fmt_opt(f.all_full_after_first_start_s, " s"),
                        fmt_opt(f.all_full_after_last_start_s, " s")
                    )
                } else {
                    format!(
                        "NOT converged: {}/{} nodes full; alive fraction mean {:.3}, min {:.3}; suspect {}, dead {} \
                         (summed over nodes); {} nodes' API unresponsive (>2 s)",
                        f.nodes_full_at_end,
                        f.nodes,
                        f.alive_fraction_at_end,
                        f.alive_fraction_min_at_end,
                        f.suspect_at_end,
                        f.dead_at_end,
                        f.unresponsive_at_end
                    )
                },
            );
            let d = &f.per_node_full_s;
            row(
                "   per node, after last start",
                match (d.p50, d.p99, d.max) {
                    (Some(a), Some(b), Some(c)) => format!("p50 {a:.1} s, p99 {b:.1} s, max {c:.1} s ({} nodes)", d.n),
                    _ => "n/a".into(),
                },
            );
        }
        None => row("1. formation", "not measured".into()),
    }
    if let Some(s) = &r.steady {
        row("   connected peers per node", s.connected_peers.plain());
        row("   connected peers per node (after quiet)", s.connected_peers_after_quiet.plain());
        row("   Kademlia routing table per node", s.routing_table_size.plain());
        row("   local health per node (0 healthy, 8 worst)", s.local_health.plain());
        row(
            "   workers schedulable per node (after quiet)",
            format!("{} of {} workers", s.workers_listed.plain(), s.workers),
        );
        row(
            "   process",
            format!(
                "{} fds open (limit {}), {} threads; CPU {} cores during start + formation, {:.3} cores after \
                 ({} ms per node per s), {:.3} over the quiet window's second half",
                s.open_fds.map_or("n/a".into(), |v| v.to_string()),
                s.fd_limit.clone().unwrap_or_else(|| "n/a".into()),
                s.threads.map_or("n/a".into(), |v| v.to_string()),
                fmt_opt(s.cpu_cores_during_formation, ""),
                s.cpu_cores_steady.unwrap_or(f64::NAN),
                fmt_opt(s.cpu_ms_per_node_per_s, ""),
                s.cpu_cores_second_half.unwrap_or(f64::NAN),
            ),
        );
        row(
            "   connection churn after formation",
            format!(
                "{} opened, {} trimmed per s, cluster-wide ({} Kademlia queries finished per s)",
                fmt_opt(s.connections_opened_per_s, ""),
                fmt_opt(s.connections_trimmed_per_s, ""),
                fmt_opt(s.kad_queries_per_s, "")
            ),
        );
        let dials: Vec<String> = s.dials_per_s.iter().map(|(r, v)| format!("{r} {v:.1}")).collect();
        row(
            "   dials and probes after formation",
            format!(
                "dials per s by reason: {}; {} probes started per s, cluster-wide",
                if dials.is_empty() { "none".into() } else { dials.join(", ") },
                fmt_opt(s.probes_per_s, "")
            ),
        );
    }
    let delivery = |d: &Option<Delivery>, title: &str, rows: &mut Vec<(String, String)>| match d {
        Some(d) => {
            rows.push((
                title.to_string(),
                format!("{}/{} ({:.1} %); {}", d.delivered, d.expected, d.ratio * 100.0, d.latency_ms.ms()),
            ));
            rows.push(("   what".into(), d.what.clone()));
            if let Some(fc) = &d.full_coverage_ms {
                rows.push(("   time until the last node had it".into(), fc.ms()));
            }
            if let Some(n) = &d.note {
                rows.push(("   note".into(), n.clone()));
            }
        }
        None => rows.push((title.to_string(), "not measured".into())),
    };
    delivery(&r.join, "2a. join: schedulable everywhere", &mut rows);
    if r.join.is_some() {
        rows.push((
            "   the joiner's own view".into(),
            format!(
                "all members alive after {}, all workers schedulable after {}; its pulls: {}",
                fmt_opt(r.joiner_sees_all_members_ms, " ms"),
                fmt_opt(r.joiner_sees_all_workers_ms, " ms"),
                r.joiner_pulls.as_deref().unwrap_or("n/a")
            ),
        ));
    }
    delivery(&r.gossip, "2b. raw gossip delivery", &mut rows);
    match &r.kad {
        Some(k) => {
            rows.push((
                "3. Kademlia (libp2p-kad metrics)".into(),
                format!("{} nodes scraped; log2(nodes) = {:.2}; hops are not exported", k.nodes_scraped, k.log2_nodes),
            ));
            for q in &k.queries {
                rows.push((
                    format!("   {}", q.query_type),
                    format!(
                        "{:.0} queries; requests mean {} (p50 <= {}, p99 <= {}); successes mean {}; failures mean {}; \
                         duration mean {}; requests/alpha {}",
                        q.queries,
                        fmt_opt(q.requests_mean, ""),
                        fmt_opt(q.requests_p50_le, ""),
                        fmt_opt(q.requests_p99_le, ""),
                        fmt_opt(q.successes_mean, ""),
                        fmt_opt(q.failures_mean, ""),
                        fmt_opt(q.duration_mean_s, " s"),
                        fmt_opt(q.rounds_estimate, ""),
                    ),
                ));
            }
            if let (Some(m), Some(b)) = (k.gossip_in_per_node_per_s, k.gossip_in_bytes_per_node_per_s) {
                rows.push((
                    "   gossip received per node".into(),
                    format!("{m:.0} messages/s, {:.1} KiB/s (since node start)", b / 1024.0),
                ));
            }
            if let Some(rtt) = k.ping_rtt_mean_ms {
                rows.push(("   ping RTT mean (all connections)".into(), format!("{rtt:.1} ms")));
            }
            for (family, by) in &k.breakdowns {
                let d: Vec<String> = by.iter().map(|(k, v)| format!("{k}={v:.0}")).collect();
                rows.push((format!("   {family}"), d.join(", ")));
            }
        }
        None => rows.push(("3. Kademlia".into(), "not measured".into())),
    }
    match &r.kill {
        Some(k) => {
            rows.push((
                "4. killed worker marked dead".into(),
                format!("{}/{} ({:.1} %); {}", k.dead_seen, k.observers, k.ratio * 100.0, k.dead_ms.ms()),
            ));
            rows.push((
                "   first seen suspect".into(),
                format!("{}/{}; {}", k.suspect_seen, k.observers, k.suspect_ms.ms()),
            ));
        }
        None => rows.push(("4. killed worker marked dead".into(), "not measured".into())),
    }
    if let Some(s) = &r.steady {
        rows.push((
            "   false suspicions in the quiet window".into(),
            format!(
                "{} changes to suspect or dead (summed over nodes), {} refutations, in {}",
                fmt_opt(s.suspicions_in_quiet_window, ""),
                fmt_opt(s.refutations_in_quiet_window, ""),
                "the window after formation (nobody stopped)"
            ),
        ));
    }
    match &r.pause {
        Some(p) => {
            rows.push((
                format!("6. a node stopped {} ms, resumed", p.paused_ms),
                format!(
                    "healthy members suspected (their refutations): {}; its own accusations after waking: {}",
                    fmt_opt(p.healthy_refutations, ""),
                    fmt_opt(p.accusations_by_paused, "")
                ),
            ));
            rows.push((
                "   the stopped node".into(),
                format!(
                    "seen suspect by {}/{}, dead by {}/{}, alive again on {}/{} at the end; refuted {} times; \
                     highest local health when stopped {}",
                    p.suspect_seen,
                    p.observers,
                    p.dead_seen,
                    p.observers,
                    p.alive_after,
                    p.observers,
                    fmt_opt(p.paused_refutations, ""),
                    p.local_health_max_at_stop.map_or("n/a".into(), |h| h.to_string())
                ),
            ));
            rows.push((
                "   the stopped node's own process".into(),
                format!(
                    "VmRSS {} once joined (a node in its own process, as in a pod: binary, runtime and allocator included)",
                    p.rss_kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
                ),
            ));
        }
        None => rows.push(("6. a node stopped and resumed".into(), "not measured".into())),
    }
    let m = &r.memory;
    rows.push((
        "5. memory".into(),
        format!(
            "VmRSS {} -> {} KiB (peak {} KiB): {} KiB per node",
            m.rss_before_kib.map_or("n/a".into(), |v| v.to_string()),
            m.rss_after_kib.map_or("n/a".into(), |v| v.to_string()),
            m.rss_peak_kib.map_or("n/a".into(), |v| v.to_string()),
            m.per_node_kib.map_or("n/a".into(), |v| format!("{v:.0}")),
        ),
    ));
    rows.push((
        "   after the quiet window".into(),
        format!(
            "VmRSS {} KiB: {} KiB per node",
            m.rss_after_quiet_kib.map_or("n/a".into(), |v| v.to_string()),
            m.per_node_after_quiet_kib.map_or("n/a".into(), |v| format!("{v:.0}")),
        ),
    ));
    rows.push((
        "run".into(),
        format!(
            "{:.1} s of max {} s{}",
            r.elapsed_s,
            r.max_secs,
            if r.hard_cap_hit { format!("; HARD CAP HIT during {}", r.phase) } else { String::new() }
        ),
    ));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    out.push_str(&format!("{:-<w$}\n", "", w = width + 60));
    for (k, v) in rows {
        out.push_str(&format!("{k:<width$} | {v}\n"));
    }
    for n in &r.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out.push_str(&format!("{:-<w$}\n", "", w = width + 60));
    out
}

fn finish(shared: &Shared, json: Option<&Path>, t_start: Instant, hard_cap: bool) {
    pause::reap();
    let report = {
        let mut r = shared.lock().unwrap_or_else(|e| e.into_inner());
        r.loadavg_end = loadavg();
        r.elapsed_s = t_start.elapsed().as_secs_f64();
        r.hard_cap_hit = hard_cap;
        r.clone()
    };
    print!("{}", render(&report));
    // The figures issue #22 sets targets for, as one line a script can compare across runs.
    let mut line = summary(&serde_json::to_value(&report).unwrap_or_default());
    if let Some(older) = &report.compared {
        let theirs = summary(older);
        println!("{:<24} {:>14} {:>14}", "compared (older, first)", "older", "this build");
        if let (Some(a), Some(b)) = (theirs.as_object(), line.as_object()) {
            let show = |v: Option<&serde_json::Value>| v.map_or("-".into(), |v| v.to_string());
            for key in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
                println!("{key:<24} {:>14} {:>14}", show(a.get(key)), show(b.get(key)));
            }
        }
        line["compare"] = theirs;
    }
    println!("{line}");
    if let Some(path) = json {
        match serde_json::to_vec_pretty(&report) {
            Ok(bytes) => {
                if let Err(e) = std::fs::write(path, bytes) {
                    eprintln!("scale: cannot write {}: {e}", path.display());
                }
            }
            Err(e) => eprintln!("scale: cannot encode the report: {e}"),
        }
    }
}

/// The headline figures as one JSON line, from a report as JSON (ours, or the one an older
/// build wrote with `--json`): `null` for what was not measured. `false_suspicions` is the
/// sum of three counts (each also under its own key): members seen suspect or dead, summed
/// over nodes, at the end of formation (before any kill: every node is alive then, so each
/// one is false); changes to suspect or dead during the quiet window; healthy members that
/// refuted a suspicion while another node was stopped and resumed (`false_suspicions_pause`;
/// `pause_dead_seen`: nodes that declared the stopped one dead). A run has one join and one kill: their
/// `_everywhere_p50_ms` is the time until the last node saw it (null unless every node did).
fn summary(r: &serde_json::Value) -> serde_json::Value {
    let f = |path: &str| r.pointer(path).and_then(serde_json::Value::as_f64);
    let all = |what: &str, seen: &str, of: &str| {
        let (seen, of) = (f(&format!("/{what}/{seen}")), f(&format!("/{what}/{of}")));
        seen.is_some() && seen == of
    };
    let at_formation = f("/formation/suspect_at_end").zip(f("/formation/dead_at_end")).map(|(s, d)| s + d);
    let quiet = f("/steady/suspicions_in_quiet_window");
    let paused = f("/pause/healthy_refutations");
    let suspicions = at_formation.map(|s| s + quiet.unwrap_or(0.0) + paused.unwrap_or(0.0));
    serde_json::json!({
        "nodes": f("/nodes_total"),
        "formed_s": f("/formation/all_full_after_last_start_s"),
        "gossip_delivered": f("/gossip/ratio"),
        "gossip_p99_ms": f("/gossip/latency_ms/p99"),
        "false_suspicions": suspicions,
        "false_suspicions_quiet": quiet,
        "false_suspicions_pause": paused,
        "pause_dead_seen": f("/pause/dead_seen"),
        "joiner_sees_all_workers_ms": f("/joiner_sees_all_workers_ms"),
        "join_everywhere_p50_ms": if all("join", "delivered", "expected") { f("/join/latency_ms/max") } else { None },
        "dead_everywhere_p50_ms": if all("kill", "dead_seen", "observers") { f("/kill/dead_ms/max") } else { None },
        "idle_cores": f("/steady/cpu_cores_steady"),
        "idle_cores_second_half": f("/steady/cpu_cores_second_half"),
        "rss_mib_per_node": f("/memory/per_node_kib").map(|k| k / 1024.0),
        "rss_mib_per_node_after_quiet": f("/memory/per_node_after_quiet_kib").map(|k| k / 1024.0),
        "separate_node_rss_mib": f("/pause/rss_kib").map(|k| k / 1024.0),
    })
}

/// `--compare BINARY`: runs an older build of this harness with the same arguments first (on
/// its own, so the two never share the CPU) and returns its report.
fn run_compared(binary: &Path) -> Result<serde_json::Value, String> {
    let out = std::env::temp_dir().join(format!("scale-compare-{}.json", std::process::id()));
    let mut args: Vec<String> = Vec::new();
    let mut skip = false;
    for a in std::env::args().skip(1) {
        if std::mem::take(&mut skip) {
            continue;
        }
        if a == "--compare" || a == "--json" {
            skip = true;
            continue;
        }
        if a.starts_with("--compare=") || a.starts_with("--json=") {
            continue;
        }
        args.push(a);
    }
    eprintln!("scale: running {} {} first", binary.display(), args.join(" "));
    let status = std::process::Command::new(binary)
        .args(&args)
        .arg("--json")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let bytes = std::fs::read(&out).map_err(|e| format!("{} wrote no report ({status}): {e}", binary.display()))?;
    let _ = std::fs::remove_file(&out);
    serde_json::from_slice(&bytes).map_err(|e| format!("{}'s report: {e}", binary.display()))
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args = Args::parse();
    let compared = args.compare.as_deref().map(|binary| {
        run_compared(binary).unwrap_or_else(|e| {
            eprintln!("scale: --compare: {e}");
            std::process::exit(2);
        })
    });
    let t_start = Instant::now();
    if args.log {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cpus).max(1);
    let shared: Shared = Arc::new(Mutex::new(Report {
        workers: args.nodes,
        nodes_total: args.nodes + 1,
        cpus,
        runtime_threads: threads,
        max_secs: args.max_secs,
        heartbeat_secs: args.heartbeat_secs,
        ping_interval_ms: args.ping_interval_ms,
        active_peers: args.active_peers,
        bootstrap_max_connections: args.bootstrap_max_connections,
        worker_max_connections: args.worker_max_connections,
        phase: "setup".into(),
        compared,
        ..Default::default()
    }));

    // The hard cap: whatever happens below, the process ends at --max-secs.
    {
        let shared = shared.clone();
        let json = args.json.clone();
        let cap = Duration::from_secs(args.max_secs);
        std::thread::spawn(move || {
            std::thread::sleep(cap.saturating_sub(t_start.elapsed()));
            finish(&shared, json.as_deref(), t_start, true);
            std::process::exit(2);
        });
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let outcome = runtime.block_on(run(args.clone(), shared.clone(), t_start));
    if let Err(e) = outcome {
        note(&shared, format!("aborted: {e:#}"));
    }
    finish(&shared, args.json.as_deref(), t_start, false);
    let failed = if args.check { check(&shared) } else { Vec::new() };
    for f in &failed {
        eprintln!("scale: check failed: {f}");
    }
    // Tearing down N nodes one by one adds nothing to the measurement; the OS closes the sockets.
    std::process::exit(if failed.is_empty() { 0 } else { 1 });
}

/// `--check` (the short form `./test.sh` runs): counts, never timings. Every node saw every
/// other alive, the joiner and every raw gossip message reached every node, the killed
/// worker was declared dead everywhere, and the stopped node is alive everywhere again after
/// its resume. (False suspicions are reported, not checked: on a
/// shared 2-core machine they depend on what else runs.)
fn check(shared: &Shared) -> Vec<String> {
    let r = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut failed = Vec::new();
    match &r.formation {
        Some(f) if f.converged => {}
        Some(f) => failed.push(format!(
            "formation: converged {}, {} of {} nodes full, {} suspect and {} dead at the end",
            f.converged, f.nodes_full_at_end, f.nodes, f.suspect_at_end, f.dead_at_end
        )),
        None => failed.push("formation was not measured".into()),
    }
    for (what, d) in [("join", &r.join), ("gossip", &r.gossip)] {
        match d {
            Some(d) if d.delivered == d.expected => {}
            Some(d) => failed.push(format!("{what}: delivered to {} of {}", d.delivered, d.expected)),
            None => failed.push(format!("{what} was not measured")),
        }
    }
    match &r.pause {
        Some(p) if p.alive_after == p.observers => {}
        Some(p) => failed.push(format!("pause: the resumed node alive on {} of {} nodes", p.alive_after, p.observers)),
        None => failed.push("pause was not measured".into()),
    }
    match &r.kill {
        Some(k) if k.dead_seen == k.observers => {}
        Some(k) => failed.push(format!("kill: dead on {} of {} observers", k.dead_seen, k.observers)),
        None => failed.push("kill was not measured".into()),
    }
    failed
}

/// Deadlines: the whole run ends `OUTPUT_MARGIN` before `--max-secs`.
struct Budget {
    end: Instant,
}

impl Budget {
    /// A phase may take up to `want`, leaving `reserve` for the phases after it.
    fn until(&self, want: Duration, reserve: Duration) -> Option<Instant> {
        let now = Instant::now();
        let latest = self.end.checked_sub(reserve)?;
        let end = (now + want).min(latest);
        (end > now + Duration::from_millis(500)).then_some(end)
    }
}

async fn run(args: Args, shared: Shared, t_start: Instant) -> anyhow::Result<()> {
    let budget = Budget { end: t_start + Duration::from_secs(args.max_secs).saturating_sub(OUTPUT_MARGIN) };
    let dir = tempfile::tempdir()?;
    let rss_before = proc_status_kib("VmRSS:");
    let verify_us = verify_cost_us();
    update(&shared, |r| {
        r.memory.rss_before_kib = rss_before;
        r.loadavg_start = loadavg();
        r.ed25519_verify_us = verify_us;
    });

    // Out of file descriptors, dials and accepts fail and healthy nodes look dead: the run
    // would measure the limit, not the cluster (250 nodes under 20,000 collapsed that way).
    let wanted = fds_wanted(&args);
    if let Some(limit) = fd_limits().and_then(|(soft, _)| soft.parse::<u64>().ok())
        && wanted > limit
    {
        let warning = format!(
            "{} nodes may hold up to {wanted} file descriptors at once, the soft limit is {limit}: raise it \
             (ulimit -n {}) or lower --worker-max-connections",
            args.nodes + 1,
            wanted.next_power_of_two()
        );
        eprintln!("scale: warning: {warning}");
        note(&shared, warning);
    }

    // ---- start: bootstrap, then workers in batches
    phase(&shared, "start", t_start);
    let mut spawner = Spawner { dir: dir.path().to_path_buf(), used_ports: HashSet::new(), args: args.clone() };
    let boot = spawner.start("boot", None).await?;
    let boot_addr = tcp_addr(&boot, Duration::from_secs(10)).await?;
    let mut nodes = vec![boot];
    let first_start = Instant::now();
    let cpu_at_first_start = cpu_secs();
    for i in 0..args.nodes {
        nodes.push(spawner.start(&format!("w{i}"), Some(&boot_addr)).await?);
        if (i + 1) % args.batch.max(1) == 0 && i + 1 < args.nodes {
            tokio::time::sleep(Duration::from_millis(args.batch_pause_ms)).await;
        }
        if Instant::now() >= budget.end {
            anyhow::bail!("ran out of time while starting nodes ({} of {} workers started)", i + 1, args.nodes);
        }
    }
    let last_start = Instant::now();
    update(&shared, |r| r.start_all_s = Some(first_start.elapsed().as_secs_f64()));
    eprintln!("scale: {} nodes started in {:.1} s", nodes.len(), first_start.elapsed().as_secs_f64());

    // ---- 1. formation
    phase(&shared, "formation", t_start);
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    let expected: HashSet<String> = ids.iter().cloned().collect();
    let others = nodes.len() - 1;
    let formation_end = budget
        .until(Duration::from_secs(args.max_secs), Duration::from_secs(75).min(Duration::from_secs(args.max_secs / 3)))
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
    let mut full_at: Vec<Option<f64>> = vec![None; nodes.len()];
    let mut formation = Formation { nodes: nodes.len(), ..Default::default() };
    let mut last_report = Instant::now();
    let mut last_cpu = cpu_secs();
    loop {
        let views = futures::future::join_all(nodes.iter().map(|n| view(n, &expected))).await;
        let now = Instant::now();
        let since_last = now.duration_since(last_start).as_secs_f64();
        let mut full = 0;
        let (mut frac_sum, mut frac_min, mut sus, mut dead) = (0.0, 1.0f64, 0, 0);
        let unresponsive = views.iter().filter(|v| v.is_none()).count();
        for (i, v) in views.iter().enumerate() {
            let (alive, s, d) = v.unwrap_or((0, 0, 0));
            let frac = alive as f64 / others.max(1) as f64;
            frac_sum += frac;
            frac_min = frac_min.min(frac);
            sus += s;
            dead += d;
            if alive == others {
                full += 1;
                full_at[i].get_or_insert(since_last);
            }
        }
        formation.nodes_full_at_end = full;
        formation.alive_fraction_at_end = frac_sum / nodes.len() as f64;
        formation.alive_fraction_min_at_end = frac_min;
        formation.suspect_at_end = sus;
        formation.dead_at_end = dead;
        formation.unresponsive_at_end = unresponsive;
        if full == nodes.len() {
            formation.converged = true;
            formation.all_full_after_first_start_s = Some(now.duration_since(first_start).as_secs_f64());
            formation.all_full_after_last_start_s = Some(since_last);
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            let cpu = cpu_secs();
            let cores = match (cpu, last_cpu) {
                (Some(b), Some(a)) => (b - a) / last_report.elapsed().as_secs_f64(),
                _ => f64::NAN,
            };
            last_report = Instant::now();
            last_cpu = cpu;
            eprintln!(
                "scale:   formation {:5.1} s: {full}/{} nodes full, alive fraction mean {:.3} min {:.3}, \
                 suspect {sus}, dead {dead}, unresponsive {unresponsive}; {cores:.2} cores, load {}",
                since_last,
                nodes.len(),
                formation.alive_fraction_at_end,
                frac_min,
                loadavg().unwrap_or_default()
            );
        }
        if now >= formation_end {
            break;
        }
        let snapshot = formation.clone();
        update(&shared, |r| r.formation = Some(snapshot));
        // Polling costs the nodes too (every peers() renders N peer ids): less often when N is large.
        tokio::time::sleep(Duration::from_millis(if nodes.len() > 50 { 500 } else { 250 })).await;
    }
    let cpu_after_formation = cpu_secs();
    formation.per_node_full_s = Dist::of(&full_at.iter().flatten().copied().collect::<Vec<_>>());
    let formation_wall = first_start.elapsed().as_secs_f64();
    update(&shared, |r| r.formation = Some(formation.clone()));

    // Steady-state facts (after formation, or at the cap of that phase).
    let rss_after = proc_status_kib("VmRSS:");
    let n_nodes = nodes.len() as f64;
    let (connected, routing, health) = steady_facts(&nodes).await;
    let churn0 = churn_counters(&nodes).await;
    let suspicions0 = pause::summed_counters(nodes.iter().map(|n| n.metrics_addr)).await;
    let t_quiet = Instant::now();
    let cpu_quiet0 = cpu_secs();
    // At most a quarter of what is left, so a short --max-secs still reaches the other phases.
    let quiet = Duration::from_secs(args.quiet_secs.max(1)).min(budget.end.saturating_duration_since(t_quiet) / 4);
    eprintln!("scale: quiet window of {:.1} s (steady CPU)", quiet.as_secs_f64());
    let starved = starve(args.starve_secs.min(quiet.as_secs()), args.starve_procs);
    tokio::time::sleep(quiet / 2).await;
    let (t_half, cpu_half) = (Instant::now(), cpu_secs());
    tokio::time::sleep(quiet - quiet / 2).await;
    for mut child in starved {
        let _ = child.wait().await;
    }
    let cpu_quiet1 = cpu_secs();
    let quiet_secs = t_quiet.elapsed().as_secs_f64();
    let half_secs = t_half.elapsed().as_secs_f64();
    let rss_after_quiet = proc_status_kib("VmRSS:");
    let (connected_after_quiet, _, _) = steady_facts(&nodes).await;
    let churn1 = churn_counters(&nodes).await;
    let workers_listed = workers_listed(&nodes).await;
    let suspicions1 = pause::summed_counters(nodes.iter().map(|n| n.metrics_addr)).await;
    let churn_rate = |i: usize| Some((churn1.sums[i] - churn0.sums[i]) / quiet_secs);
    let dials_per_s = churn1
        .dials
        .iter()
        .map(|(r, v)| (r.clone(), (v - churn0.dials.get(r).copied().unwrap_or(0.0)) / quiet_secs))
        .filter(|(_, rate)| *rate > 0.0)
        .collect();
    let steady = Steady {
        connected_peers: connected,
        connected_peers_after_quiet: connected_after_quiet,
        routing_table_size: routing,
        local_health: health,
        open_fds: open_fds(),
        fd_limit: fd_limit(),
        threads: threads(),
        cpu_cores_during_formation: match (cpu_at_first_start, cpu_after_formation) {
            (Some(a), Some(b)) => Some((b - a) / formation_wall.max(0.001)),
            _ => None,
        },
        cpu_cores_steady: match (cpu_quiet0, cpu_quiet1) {
            (Some(a), Some(b)) => Some((b - a) / quiet_secs),
            _ => None,
        },
        cpu_cores_second_half: cpu_half.zip(cpu_quiet1).map(|(a, b)| (b - a) / half_secs),
        cpu_ms_per_node_per_s: None,
        connections_opened_per_s: churn_rate(0),
        connections_trimmed_per_s: churn_rate(1),
        kad_queries_per_s: churn_rate(2),
        dials_per_s,
        probes_per_s: churn_rate(3),
        suspicions_in_quiet_window: suspicions0.zip(suspicions1).map(|(b, a)| a[0] - b[0] + a[1] - b[1]),
        refutations_in_quiet_window: suspicions0.zip(suspicions1).map(|(b, a)| a[2] - b[2]),
        workers_listed,
        workers: nodes.len() - 1,
    };
    let steady = Steady { cpu_ms_per_node_per_s: steady.cpu_cores_steady.map(|c| c * 1000.0 / n_nodes), ..steady };
    let n = nodes.len() as f64;
    let originated = n * 2.0 / args.heartbeat_secs.max(1) as f64;
    let checks = originated * (n - 1.0);
    let copies = steady.connected_peers.mean.map(|c| originated * (c + 5.0 * (n - 1.0)));
    update(&shared, |r| {
        r.gossip_originated_per_s = Some(originated);
        r.verifications_per_s = Some(checks);
        r.copies_received_per_s_estimate = copies;
        r.verify_cores = verify_us.map(|us| checks * us / 1e6);
        r.steady = Some(steady);
        r.memory.rss_after_kib = rss_after;
        r.memory.rss_peak_kib = proc_status_kib("VmHWM:");
        r.memory.rss_after_quiet_kib = rss_after_quiet;
        let per_node = |after: Option<u64>| Some(after?.saturating_sub(rss_before?) as f64 / nodes.len() as f64);
        r.memory.per_node_kib = per_node(rss_after);
        r.memory.per_node_after_quiet_kib = per_node(rss_after_quiet);
    });

    // ---- 2a. a newly started worker becomes schedulable on every node
    phase(&shared, "join", t_start);
    if let Some(end) = budget.until(Duration::from_secs(20), Duration::from_secs(50)) {
        let (t0, t0_unix) = (Instant::now(), unix_ms());
        let joiner = spawner.start("joiner", Some(&boot_addr)).await?;
        let jid = joiner.peer_id.clone();
        // The figure is the nodes' own time (below): polling sooner would only take CPU from them.
        let every = POLL_BY_CLOCK;
        let joiner_view = joiner_catches_up(&joiner, &nodes, t0, end);
        let others_view = futures::future::join_all(nodes.iter().map(|n| {
            let jid = jid.clone();
            async move {
                while Instant::now() < end {
                    if let Ok(Ok(caps)) = tokio::time::timeout(ASK_TIMEOUT, n.handle.capabilities()).await
                        && caps.cluster.get("compute").is_some_and(|c| c.workers.contains(&jid))
                    {
                        // The node's own time of taking the advertisement in, unless a later
                        // one replaced it (then the poll is the closer bound).
                        let polled = t0.elapsed().as_secs_f64() * 1000.0;
                        let at = taken_in(n, &jid).await.map(|at| (at as f64 - t0_unix).max(0.0));
                        return Some(at.map_or(polled, |at| at.min(polled)));
                    }
                    tokio::time::sleep(every).await;
                }
                None
            }
        }));
        let ((members_ms, workers_ms), results) = futures::join!(joiner_view, others_view);
        let pulls = scrape(joiner.metrics_addr).await.map(|body| {
            let outcomes: Vec<String> = body
                .lines()
                .filter_map(parse_sample)
                .filter(|(name, _, _)| *name == "p2p_membership_pulls_total")
                .map(|(_, labels, v)| format!("{}={v}", labels.get("outcome").unwrap_or(&"?")))
                .collect();
            outcomes.join(", ")
        });
        let lat: Vec<f64> = results.iter().flatten().copied().collect();
        let d = Delivery {
            what: format!(
                "a new worker's CapabilityAdvertisement: from Node::start of the joiner until it is listed \
                 under `compute` in capabilities() of each of the {} running nodes (when the node took the \
                 advertisement in, its peers() entry's advertised_at_ms; polled every {} ms)",
                nodes.len(),
                every.as_millis()
            ),
            delivered: lat.len(),
            expected: nodes.len(),
            ratio: lat.len() as f64 / nodes.len() as f64,
            latency_ms: Dist::of(&lat),
            full_coverage_ms: None,
            note: None,
        };
        update(&shared, |r| {
            r.join = Some(d);
            r.joiner_sees_all_members_ms = members_ms;
            r.joiner_sees_all_workers_ms = workers_ms;
            r.joiner_pulls = pulls;
        });
        nodes.push(joiner);
    } else {
        note(&shared, "join phase skipped: no time left");
    }

    // ---- 4. a worker crashes; how long until everybody calls it dead
    phase(&shared, "kill", t_start);
    let victim_index = 1 + args.nodes / 2;
    if victim_index < nodes.len()
        && let Some(end) = budget.until(Duration::from_secs(args.kill_secs), Duration::from_secs(28))
    {
        let victim = nodes.remove(victim_index);
        let vid = victim.peer_id.clone();
        let t0 = Instant::now();
        victim.task.abort();
        let every = poll_every(nodes.len(), Duration::from_millis(50));
        let results = futures::future::join_all(nodes.iter().map(|n| {
            let vid = vid.clone();
            async move {
                let mut suspect = None;
                while Instant::now() < end {
                    if let Ok(Ok(peers)) = tokio::time::timeout(ASK_TIMEOUT, n.handle.peers()).await
                        && let Some(p) = peers.iter().find(|p| p.peer_id == vid)
                    {
                        let ms = t0.elapsed().as_secs_f64() * 1000.0;
                        match p.state.as_str() {
                            "suspect" => {
                                suspect.get_or_insert(ms);
                            }
                            "dead" => return (suspect, Some(ms)),
                            _ => {}
                        }
                    }
                    tokio::time::sleep(every).await;
                }
                (suspect, None)
            }
        }))
        .await;
        let sus: Vec<f64> = results.iter().filter_map(|r| r.0).collect();
        let dead: Vec<f64> = results.iter().filter_map(|r| r.1).collect();
        let k = Kill {
            victim: format!("{} ({})", victim.name, vid),
            observers: nodes.len(),
            suspect_seen: sus.len(),
            suspect_ms: Dist::of(&sus),
            dead_seen: dead.len(),
            dead_ms: Dist::of(&dead),
            ratio: dead.len() as f64 / nodes.len() as f64,
        };
        update(&shared, |r| r.kill = Some(k));
    } else {
        note(&shared, "kill phase skipped: no time left");
    }

    // ---- 6. a node stopped for a few seconds and resumed: whom does the cluster suspect?
    phase(&shared, "pause", t_start);
    let binary = args.node_binary.clone().or_else(pause::default_node_binary);
    match binary {
        _ if args.pause_secs == 0 => note(&shared, "pause phase skipped: --pause-secs 0"),
        None => note(&shared, "pause phase skipped: no p2p-node beside the harness (--node-binary)"),
        Some(binary) => {
            let want = Duration::from_secs(args.pause_secs + 75);
            match budget.until(want, Duration::from_secs(35)) {
                Some(end) => {
                    let pause = Duration::from_secs(args.pause_secs);
                    match pause::run(&mut spawner, &binary, &boot_addr, &nodes, pause, end).await {
                        Ok(p) => update(&shared, |r| r.pause = Some(p)),
                        Err(e) => note(&shared, format!("pause phase failed: {e:#}")),
                    }
                }
                None => note(&shared, "pause phase skipped: no time left"),
            }
        }
    }

    // ---- 2b. raw gossip: signed messages of --gossip-bytes from an extra peer
    phase(&shared, "gossip", t_start);
    if let Some(end) = budget.until(Duration::from_secs(30), Duration::from_secs(8)) {
        match gossip_phase(&args, &nodes, end).await {
            Ok(d) => update(&shared, |r| r.gossip = Some(d)),
            Err(e) => note(&shared, format!("raw gossip phase failed: {e:#}")),
        }
    } else {
        note(&shared, "raw gossip phase skipped: no time left");
    }

    // ---- 3. Kademlia query statistics from every node's /metrics
    phase(&shared, "kad", t_start);
    if budget.until(Duration::from_secs(8), Duration::ZERO).is_some() {
        let k = kad_phase(&nodes).await;
        update(&shared, |r| r.kad = Some(k));
    } else {
        note(&shared, "Kademlia scrape skipped: no time left");
    }
    phase(&shared, "done", t_start);
    drop(dir);
    Ok(())
}

/// How long (ms after `t0`) until `joiner` lists every node of `nodes` alive, and every worker
/// among them (all but the bootstrap) under `compute`; polled every 50 ms until `end`.
async fn joiner_catches_up(
    joiner: &Running,
    nodes: &[Running],
    t0: Instant,
    end: Instant,
) -> (Option<f64>, Option<f64>) {
    let everyone: HashSet<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    let workers: HashSet<&String> = nodes.iter().skip(1).map(|n| &n.peer_id).collect();
    let (mut members, mut listed) = (None, None);
    while Instant::now() < end && (members.is_none() || listed.is_none()) {
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        if members.is_none() && view(joiner, &everyone).await.is_some_and(|(alive, _, _)| alive == everyone.len()) {
            members = Some(ms);
        }
        if listed.is_none()
            && let Ok(Ok(caps)) = tokio::time::timeout(ASK_TIMEOUT, joiner.handle.capabilities()).await
            && caps
                .cluster
                .get("compute")
                .is_some_and(|c| c.workers.iter().filter(|w| workers.contains(w)).count() == workers.len())
        {
            listed = Some(ms);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (members, listed)
}

async fn gossip_phase(args: &Args, nodes: &[Running], end: Instant) -> anyhow::Result<Delivery> {
    let probe = start_probe()?;
    let incarnation = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs());
    // Enter through workers only (not the bootstrap, whose fan-out is atypical), and in a
    // cluster larger than the active view only through those whose view includes the probe
    // (a worker closes an idle connection outside it after a few seconds, as it would a
    // member's).
    let (members, active) = (nodes.len() + 1, args.active_peers);
    let mut candidates = nodes.iter().filter(|n| {
        n.name.starts_with('w')
            && n.peer_id.parse::<PeerId>().is_ok_and(|id| view::keeps(&id, &probe.peer_id, members, active, 1.0))
    });
    let links = args.probe_links.max(1);
    let connect_deadline = (Instant::now() + Duration::from_secs(10)).min(end);
    let mut dialed = 0;
    let mut next_dial = Instant::now();
    loop {
        let (subscribed, connected) = {
            let s = probe.state.lock().unwrap_or_else(|e| e.into_inner());
            (s.subscribed.len(), s.connected.len())
        };
        if subscribed >= links {
            break;
        }
        anyhow::ensure!(
            Instant::now() < connect_deadline,
            "the probe reached only {subscribed} subscribed peers ({connected} connected) of {links}"
        );
        // Dial `links` workers; one that refuses (its connection limit) is replaced a second later.
        let short = dialed < links || (connected < links && Instant::now() >= next_dial);
        if short && dialed < links + 5 {
            // A node whose API does not answer is skipped.
            if let Some(n) = candidates.next()
                && let Ok(addr) = tcp_addr(n, Duration::from_secs(2)).await
            {
                probe.tx.send(ProbeCommand::Dial(addr.parse()?)).await?;
                dialed += 1;
            }
            if dialed >= links {
                next_dial = Instant::now() + Duration::from_secs(1);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the GossipSub heartbeats (700 ms) graft the probe into the mesh.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let publish = |seq: usize| {
        let tx = probe.tx.clone();
        let data = probe_message(probe.peer_id, incarnation, seq, args.gossip_bytes);
        async move {
            let (reply, rx) = oneshot::channel();
            tx.send(ProbeCommand::Publish { data, reply }).await.map_err(|_| anyhow::anyhow!("probe stopped"))?;
            rx.await.map_err(|_| anyhow::anyhow!("probe stopped"))?.map_err(|e| anyhow::anyhow!("publish: {e}"))
        }
    };
    // A node's latency is from the publish to when the node itself took the message in
    // (`advertised_at_ms`, same clock), so the poll interval bounds only how soon the harness
    // moves on, not the figure (polled, it was quantised to 80 ms at 100 nodes).
    let every = POLL_BY_CLOCK;
    let probe_id = probe.peer_id.to_string();
    let probe_id = probe_id.as_str();
    let wait_all = |seq: usize, t0: Instant, t0_unix: f64, until: Instant| {
        futures::future::join_all(nodes.iter().map(move |n| async move {
            while Instant::now() < until {
                // Asked once it has had time to arrive: a poll at once competes with the delivery.
                tokio::time::sleep(every).await;
                if let Some((seen, at)) = probe_seen(n, probe_id).await
                    && seen >= seq
                {
                    let polled = t0.elapsed().as_secs_f64() * 1000.0;
                    // Whole milliseconds against a fractional start: never below 0.
                    let at = at.map(|at| (at as f64 - t0_unix).max(0.0));
                    return Some(at.map_or(polled, |at| at.min(polled)));
                }
            }
            None
        }))
    };

    // Warm-up: the first message also makes the probe a member everywhere.
    let t0 = Instant::now();
    publish(0).await?;
    let _ = wait_all(0, t0, unix_ms(), (t0 + Duration::from_secs(5)).min(end)).await;

    let mut latencies = Vec::new();
    let mut coverage = Vec::new();
    let mut sent = 0;
    for seq in 1..=args.gossip_messages {
        let until = (Instant::now() + Duration::from_secs(5)).min(end);
        if until <= Instant::now() + Duration::from_millis(200) {
            break;
        }
        let (t0, t0_unix) = (Instant::now(), unix_ms());
        publish(seq).await?;
        sent += 1;
        let r = wait_all(seq, t0, t0_unix, until).await;
        let got: Vec<f64> = r.iter().flatten().copied().collect();
        if got.len() == nodes.len() {
            coverage.push(got.iter().copied().fold(0.0, f64::max));
        }
        latencies.extend(got);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    probe.task.abort();
    let expected = sent * nodes.len();
    Ok(Delivery {
        what: format!(
            "{sent} sealed gossip messages of {} bytes (JSON CapabilityAdvertisement from a probe peer, seq in \
             its capability list) entering through {links} worker(s); per (node, message): from the publish to \
             when the node took it in (its peers() entry's advertised_at_ms; polled every {} ms)",
            args.gossip_bytes,
            every.as_millis()
        ),
        delivered: latencies.len(),
        expected,
        ratio: if expected == 0 { 0.0 } else { latencies.len() as f64 / expected as f64 },
        latency_ms: Dist::of(&latencies),
        full_coverage_ms: Some(Dist::of(&coverage)),
        note: Some(
            "hop counts are not observable: GossipSub messages carry no hop count and the node does not expose \
             the propagation source"
                .into(),
        ),
    })
}

/// Counters of connection churn so far, summed over all nodes.
struct Churn {
    /// Connections established, connections trimmed, Kademlia queries finished, SWIM probes started.
    sums: [f64; 4],
    /// Dials started, by reason.
    dials: BTreeMap<String, f64>,
}

async fn churn_counters(nodes: &[Running]) -> Churn {
    let bodies = futures::future::join_all(nodes.iter().map(|n| scrape(n.metrics_addr))).await;
    let mut churn = Churn { sums: [0.0; 4], dials: BTreeMap::new() };
    for (name, labels, value) in bodies.iter().flatten().flat_map(|b| b.lines()).filter_map(parse_sample) {
        match name {
            "libp2p_swarm_connections_established_total" => churn.sums[0] += value,
            "p2p_connections_trimmed_total" => churn.sums[1] += value,
            "libp2p_kad_query_result_num_requests_count" => churn.sums[2] += value,
            "p2p_membership_probes_total" => churn.sums[3] += value,
            "p2p_dials_total" => {
                let reason = labels.get("reason").copied().unwrap_or("none").to_string();
                *churn.dials.entry(reason).or_default() += value;
            }
            _ => {}
        }
    }
    churn
}

async fn kad_phase(nodes: &[Running]) -> Kad {
    let bodies = futures::future::join_all(nodes.iter().map(|n| scrape(n.metrics_addr))).await;
    let mut hists: BTreeMap<(String, &'static str), Hist> = BTreeMap::new();
    let mut gossip_in = 0.0;
    let mut gossip_bytes = 0.0;
    let mut uptime = 0.0;
    let (mut rtt_sum, mut rtt_count) = (0.0, 0.0);
    let mut breakdowns: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let families = [
        ("libp2p_kad_query_result_num_requests", "requests"),
        ("libp2p_kad_query_result_num_success", "success"),
        ("libp2p_kad_query_result_num_failure", "failure"),
        ("libp2p_kad_query_result_duration_seconds", "duration"),
    ];
    for body in bodies.iter().flatten() {
        for line in body.lines() {
            let Some((name, labels, value)) = parse_sample(line) else { continue };
            for (family, short) in families {
                let Some(suffix) = name.strip_prefix(family) else { continue };
                let Some(t) = labels.get("type") else { continue };
                let h = hists.entry((t.to_string(), short)).or_default();
                match suffix {
                    "_sum" => h.sum += value,
                    "_count" => h.count += value,
                    "_bucket" => {
                        if let Some(le) = labels.get("le").and_then(|v| v.parse::<f64>().ok()) {
                            *h.buckets.entry(le.to_bits()).or_default() += value;
                        }
                    }
                    _ => {}
                }
            }
            match name {
                "p2p_messages_total"
                    if labels.get("direction") == Some(&"in") && labels.get("protocol") == Some(&"gossip") =>
                {
                    gossip_in += value
                }
                "p2p_message_bytes_total"
                    if labels.get("direction") == Some(&"in") && labels.get("protocol") == Some(&"gossip") =>
                {
                    gossip_bytes += value
                }
                "p2p_node_uptime_seconds" => uptime += value,
                "libp2p_ping_rtt_seconds_sum" => rtt_sum += value,
                "libp2p_ping_rtt_seconds_count" => rtt_count += value,
                _ => {}
            }
            for (family, label) in BREAKDOWNS {
                if name == *family {
                    let key = labels.get(label).unwrap_or(&"none").to_string();
                    *breakdowns.entry(family.to_string()).or_default().entry(key).or_default() += value;
                }
            }
        }
    }
    let mut types: Vec<String> = hists.keys().map(|(t, _)| t.clone()).collect();
    types.dedup();
    let queries = types
        .into_iter()
        .map(|t| {
            let get = |s: &'static str| hists.get(&(t.clone(), s));
            let req = get("requests");
            KadType {
                query_type: t.clone(),
                queries: req.map_or(0.0, |h| h.count),
                requests_mean: req.and_then(Hist::mean),
                requests_p50_le: req.and_then(|h| h.quantile_le(0.5)),
                requests_p99_le: req.and_then(|h| h.quantile_le(0.99)),
                successes_mean: get("success").and_then(Hist::mean),
                failures_mean: get("failure").and_then(Hist::mean),
                duration_mean_s: get("duration").and_then(Hist::mean),
                rounds_estimate: req.and_then(Hist::mean).map(|m| m / KAD_ALPHA),
            }
        })
        .collect();
    let scraped = bodies.iter().flatten().count();
    Kad {
        nodes_scraped: scraped,
        log2_nodes: (nodes.len() as f64).log2(),
        queries,
        gossip_in_per_node_per_s: (uptime > 0.0).then(|| gossip_in / uptime),
        gossip_in_bytes_per_node_per_s: (uptime > 0.0).then(|| gossip_bytes / uptime),
        ping_rtt_mean_ms: (rtt_count > 0.0).then(|| rtt_sum / rtt_count * 1000.0),
        breakdowns,
    }
}
