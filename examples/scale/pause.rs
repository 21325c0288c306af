//! The pause phase: one more node runs as its own `p2p-node` process, joins, is stopped with
//! SIGSTOP for `--pause-secs` (a stalled VM, a long GC pause, a CPU-starved pod) and resumed
//! with SIGCONT. Every other member was healthy throughout, so any of them suspected or
//! declared dead meanwhile is a false suspicion. Counted from the nodes' own counters, not
//! from polls that could miss a suspicion refuted between two of them:
//! `p2p_membership_refutations_total` of the healthy nodes (a node refutes each suspicion or
//! death of itself it hears of) and the paused node's `p2p_membership_transitions_total`
//! to suspect or dead (its accusations after it woke up). The paused node's own fate
//! (suspected or declared dead by how many, alive again everywhere) is polled.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{ASK_TIMEOUT, Running, Spawner, parse_sample, scrape};

/// How long the phase watches after the resume: a suspicion of the paused node is refuted or
/// has become a death within a few suspect timeouts.
const OBSERVE_AFTER_RESUME: Duration = Duration::from_secs(12);
/// How long the separate node gets to be alive on every in-process node before the pause.
const JOIN_WITHIN: Duration = Duration::from_secs(20);
/// How long the phase waits for every node's local health to be back at 0 before the stop: a
/// node whose timeouts are stretched (after a busy formation) would not notice a short stop.
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);
/// How long the paused node gets to leave in order when the phase ends.
const LEAVE_WITHIN: Duration = Duration::from_secs(5);

/// The separate node's pid while it runs: the harness's exit (at the hard cap too) kills it.
static CHILD: Mutex<Option<u32>> = Mutex::new(None);

/// Kills the separate node if it still runs (called on every way out of the harness).
pub fn reap() {
    if let Some(pid) = CHILD.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Pause {
    /// The paused node's peer id.
    pub node: String,
    pub paused_ms: u64,
    /// In-process nodes watching it.
    pub observers: usize,
    /// The highest local health score among them when the stop began (0: every node's
    /// timeouts at their configured length; the phase waits up to 30 s for that).
    pub local_health_max_at_stop: Option<u32>,
    /// Observers that saw the paused node suspect, or dead, at some poll of the phase.
    pub suspect_seen: usize,
    pub dead_seen: usize,
    /// Observers listing the paused node alive when the phase ended.
    pub alive_after: usize,
    /// Refutations by the healthy nodes during the phase: each is a healthy node somebody
    /// suspected or declared dead (a false suspicion). None: the nodes do not count them.
    pub healthy_refutations: Option<f64>,
    /// State changes to suspect or dead the paused node made of others during the phase.
    pub accusations_by_paused: Option<f64>,
    /// Refutations by the paused node itself (it heard it was suspected).
    pub paused_refutations: Option<f64>,
    /// The separate node's resident memory once it had joined (before the stop): what one
    /// node costs as its own process, as in a pod (binary, runtime and allocator included).
    pub rss_kib: Option<u64>,
    /// All in-process nodes' changes to suspect or dead during the phase, whoever they were
    /// about (the paused node's included).
    pub observer_transitions: Option<f64>,
}

/// Membership counters of one node: changes to suspect, changes to dead, refutations; None
/// for a build that does not export them (an older one under `--compare`).
pub fn membership_counters(body: &str) -> Option<[f64; 3]> {
    let mut c = [0.0; 3];
    let mut exported = false;
    for (name, labels, value) in body.lines().filter_map(parse_sample) {
        match name {
            "p2p_membership_transitions_total" if labels.get("to") == Some(&"suspect") => c[0] += value,
            "p2p_membership_transitions_total" if labels.get("to") == Some(&"dead") => c[1] += value,
            "p2p_membership_refutations_total" => {
                c[2] += value;
                exported = true;
            }
            _ => {}
        }
    }
    exported.then_some(c)
}

/// The same, summed over `addrs`; None unless every node answered (a difference between two
/// sums over different nodes would count nothing real, or less than nothing).
pub async fn summed_counters(addrs: impl Iterator<Item = SocketAddr>) -> Option<[f64; 3]> {
    let bodies = futures::future::join_all(addrs.map(scrape)).await;
    let counts: Vec<[f64; 3]> = bodies.iter().flatten().filter_map(|b| membership_counters(b)).collect();
    (!counts.is_empty() && counts.len() == bodies.len())
        .then(|| counts.iter().fold([0.0; 3], |a, b| [a[0] + b[0], a[1] + b[1], a[2] + b[2]]))
}

/// The `p2p-node` binary beside this harness (`target/release/examples/scale` ->
/// `target/release/p2p-node`).
pub fn default_node_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let binary = exe.parent()?.parent()?.join("p2p-node");
    binary.is_file().then_some(binary)
}

async fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("kill").args([sig, &pid.to_string()]).status().await?;
    anyhow::ensure!(status.success(), "kill {sig} {pid}: {status}");
    Ok(())
}

/// The paused node's state on each observer (None: not listed or no answer).
async fn states(nodes: &[Running], id: &str) -> Vec<Option<String>> {
    futures::future::join_all(nodes.iter().map(|n| async move {
        let peers = tokio::time::timeout(ASK_TIMEOUT, n.handle.peers()).await.ok()?.ok()?;
        peers.into_iter().find(|p| p.peer_id == id).map(|p| p.state)
    }))
    .await
}

/// The highest local health score among `nodes` (None: none answered).
async fn max_local_health(nodes: &[Running]) -> Option<u32> {
    let scores = futures::future::join_all(nodes.iter().map(|n| async move {
        tokio::time::timeout(ASK_TIMEOUT, n.handle.status()).await.ok()?.ok().map(|s| s.local_health)
    }))
    .await;
    scores.into_iter().flatten().max()
}

/// Runs the phase; `end` bounds it (the separate node is stopped by then).
pub async fn run(
    spawner: &mut Spawner,
    binary: &Path,
    boot_addr: &str,
    nodes: &[Running],
    pause: Duration,
    end: Instant,
) -> anyhow::Result<Pause> {
    let name = "paused";
    let (keypair, _) = p2p_network::identity::load_or_create(&spawner.dir.join(format!("{name}.key")))?;
    let id = keypair.public().to_peer_id().to_string();
    let metrics_port = spawner.free_port();
    let yaml = spawner
        .yaml(name, Some(boot_addr))
        .replace("metrics:\n  listen: \"127.0.0.1:0\"", &format!("metrics:\n  listen: \"127.0.0.1:{metrics_port}\""));
    let config = spawner.dir.join(format!("{name}.yaml"));
    std::fs::write(&config, yaml)?;
    let log = std::fs::File::create(spawner.dir.join(format!("{name}.log")))?;
    let mut child = tokio::process::Command::new(binary)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("{name} exited at once"))?;
    *CHILD.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid);
    let result = watch(nodes, &id, pid, SocketAddr::from(([127, 0, 0, 1], metrics_port)), pause, end).await;
    // An orderly leave, so that the phases after this one do not chase a dead member.
    let _ = signal(pid, "-CONT").await;
    let _ = signal(pid, "-TERM").await;
    if tokio::time::timeout(LEAVE_WITHIN, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
    CHILD.lock().unwrap_or_else(|e| e.into_inner()).take();
    result
}

async fn watch(
    nodes: &[Running],
    id: &str,
    pid: u32,
    metrics: SocketAddr,
    pause: Duration,
    end: Instant,
) -> anyhow::Result<Pause> {
    let joined_by = (Instant::now() + JOIN_WITHIN).min(end);
    loop {
        let alive = states(nodes, id).await.iter().filter(|s| s.as_deref() == Some("alive")).count();
        if alive == nodes.len() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < joined_by,
            "the separate node was alive on {alive} of {} nodes after {JOIN_WITHIN:?}",
            nodes.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Let the join's own gossip settle, and every node's timeouts return to their configured
    // length, before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let healthy_by = (Instant::now() + HEALTHY_WITHIN).min(end);
    let health = loop {
        let worst = max_local_health(nodes).await;
        if worst == Some(0) || Instant::now() >= healthy_by {
            break worst;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|text| {
        text.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
    });
    let healthy = || nodes.iter().map(|n| n.metrics_addr);
    let before = summed_counters(healthy()).await;
    let child_before = scrape(metrics).await.and_then(|b| membership_counters(&b));

    signal(pid, "-STOP").await?;
    let t0 = Instant::now();
    let (mut suspect, mut dead) = (vec![false; nodes.len()], vec![false; nodes.len()]);
    let mut resumed = false;
    let mut last;
    loop {
        last = states(nodes, id).await;
        for (i, s) in last.iter().enumerate() {
            suspect[i] |= s.as_deref() == Some("suspect");
            dead[i] |= s.as_deref() == Some("dead");
        }
        if !resumed && t0.elapsed() >= pause {
            signal(pid, "-CONT").await?;
            resumed = true;
        }
        if resumed && (t0.elapsed() >= pause + OBSERVE_AFTER_RESUME || Instant::now() >= end) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let paused_ms = pause.as_millis() as u64;
    let after = summed_counters(healthy()).await;
    let child_after = scrape(metrics).await.and_then(|b| membership_counters(&b));
    let child_delta = child_before.zip(child_after).map(|(b, a)| [a[0] - b[0], a[1] - b[1], a[2] - b[2]]);
    Ok(Pause {
        node: id.to_string(),
        paused_ms,
        observers: nodes.len(),
        local_health_max_at_stop: health,
        suspect_seen: suspect.iter().filter(|s| **s).count(),
        dead_seen: dead.iter().filter(|d| **d).count(),
        alive_after: last.iter().filter(|s| s.as_deref() == Some("alive")).count(),
        healthy_refutations: before.zip(after).map(|(b, a)| a[2] - b[2]),
        accusations_by_paused: child_delta.map(|d| d[0] + d[1]),
        paused_refutations: child_delta.map(|d| d[2]),
        rss_kib,
        observer_transitions: before.zip(after).map(|(b, a)| (a[0] - b[0]) + (a[1] - b[1])),
    })
}
