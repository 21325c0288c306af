//! `p2p-load`: a load generator for a running cluster, through its public HTTP API.
//!
//! Submits N tasks with at most C in flight (keep-alive connections, round-robin over the
//! given gateways) for at most T seconds, then checks every accepted task reached a final
//! state and prints throughput, latency percentiles and failures by reason (text and JSON).
//! Used by `stress-test.sh` and the benchmarks.
//!
//! With `--wasm FILE.wasm` the tasks are `wasm` tasks of that module (uploaded first, the
//! payload is its input); with `--fresh-modules` as well, every task gets a module no node
//! has seen (the file with a custom section of random bytes appended: the same code under a
//! new id), which measures a cold start: upload, fetch by the worker, compile, run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hyper::Method;
use p2p_network::cli::client::{ApiClient, ClientError};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(name = "p2p-load", about = "Load generator for a p2p-network cluster (HTTP API)")]
struct Args {
    /// Gateway API addresses (host:port), comma-separated; tasks go round-robin.
    #[arg(long, value_delimiter = ',', required = true)]
    api: Vec<SocketAddr>,
    /// Tasks to submit.
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// Tasks in flight at most.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Stop submitting after this many seconds (tasks already accepted still finish).
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Task type.
    #[arg(long = "type", default_value = "echo")]
    task_type: String,
    /// Submit `wasm` tasks of this module (a WASI command): uploaded first to every gateway
    /// of `--api` (`POST /v1/modules`); `--payload` is its input.
    #[arg(long, conflicts_with_all = ["task_type", "sleep_range"])]
    wasm: Option<std::path::PathBuf>,
    /// With `--wasm`: every task (warm-ups too) runs a module of its own, the file with a
    /// random custom section appended, uploaded to its gateway just before it is submitted.
    /// The upload is timed apart (`upload_ms`); the task's latency is its cold start.
    #[arg(long, requires = "wasm", conflicts_with_all = ["batch", "poll"])]
    fresh_modules: bool,
    /// Payload; `{i}` is replaced by the task's index.
    #[arg(long, default_value = "load-{i}")]
    payload: String,
    /// For sleep tasks: a random duration in this range of milliseconds, e.g. 100-500.
    #[arg(long)]
    sleep_range: Option<String>,
    /// Per-attempt timeout in milliseconds to ask for.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Submit through `POST /v1/tasks/batch` in batches of this many tasks (then
    /// `--concurrency` counts batches in flight, and a task's latency is its batch's).
    #[arg(long)]
    batch: Option<usize>,
    /// Tasks to run first, outside the measurement (connections, caches, JIT-free warm-up).
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Label for the report.
    #[arg(long, default_value = "load")]
    label: String,
    /// Submit without waiting (`202` and an id) and poll each task until it is final,
    /// through gateway crashes: a poll that cannot reach the gateway is tried again until
    /// `--poll-grace-secs` after the submissions end. Submissions that got no answer were
    /// never acknowledged and are reported, not failed.
    #[arg(long)]
    poll: bool,
    /// With `--poll`: poll through these APIs (comma-separated, round-robin) instead of the
    /// gateway that accepted each task: any node answers for any task, so polls go on while
    /// that gateway is gone and a copy holder finishes its tasks.
    #[arg(long, value_delimiter = ',')]
    poll_via: Vec<SocketAddr>,
    /// With `--poll`: how long after the last submission accepted tasks may take to be final.
    #[arg(long, default_value_t = 90)]
    poll_grace_secs: u64,
}

struct Outcome {
    id: Option<String>,
    latency: Duration,
    state: String,
    reason: Option<String>,
    /// With `--fresh-modules`: how long the module's upload took (not part of `latency`).
    upload: Option<Duration>,
}

/// Custom section name of the nonce `--fresh-modules` appends.
const NONCE_SECTION: &str = "p2p-load.nonce";

/// `module` with a custom section of 16 random bytes appended: the same code under a new id.
/// A custom section is `0x00`, its size, then its name and contents (sizes as unsigned LEB128).
fn fresh_module(module: &[u8]) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let nonce: [u8; 16] = rand::random();
    let mut contents = Vec::new();
    leb128(NONCE_SECTION.len(), &mut contents);
    contents.extend_from_slice(NONCE_SECTION.as_bytes());
    contents.extend_from_slice(&nonce);
    let mut out = module.to_vec();
    out.push(0);
    leb128(contents.len(), &mut out);
    out.extend_from_slice(&contents);
    out
}

/// Uploads a module and returns its id.
async fn upload(client: &ApiClient, bytes: Vec<u8>) -> anyhow::Result<String> {
    let v = client
        .post_bytes("/v1/modules", bytes)
        .await
        .map_err(|e| anyhow::anyhow!("uploading the module to {}: {e}", client.addr()))?;
    v["id"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("no module id in {v}"))
}

/// One task sent with `?wait=true`; with `fresh`, a module of its own is uploaded first and
/// the body's `module` set to it.
async fn run_sync(client: &ApiClient, mut body: Value, fresh: Option<Arc<Vec<u8>>>) -> Outcome {
    let mut uploaded = None;
    if let Some(module) = fresh {
        let t0 = Instant::now();
        match upload(client, fresh_module(&module)).await {
            Ok(id) => body["module"] = json!(id),
            Err(e) => {
                let reason = Some(reason_key(&e.to_string()));
                return Outcome {
                    id: None,
                    latency: t0.elapsed(),
                    state: "upload-failed".into(),
                    reason,
                    upload: None,
                };
            }
        }
        uploaded = Some(t0.elapsed());
    }
    let t0 = Instant::now();
    let r = client.call(Method::POST, "/v1/tasks?wait=true", Some(body), Duration::from_secs(600)).await;
    let latency = t0.elapsed();
    let mut outcome = match r {
        Ok(rec) => record_outcome(&rec, latency),
        Err(e) => error_outcome(&e, latency),
    };
    outcome.upload = uploaded;
    outcome
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Short, stable reason keys for the failures table.
fn reason_key(text: &str) -> String {
    let lower = text.to_lowercase();
    for (needle, key) in [
        ("no answer within", "attempt timeout"),
        ("busy", "worker busy"),
        ("connection", "connection lost"),
        ("lost", "worker lost"),
        ("queue is full", "queue full"),
        ("capability", "no capable worker"),
        ("task failed", "task failed"),
        ("cannot reach", "gateway unreachable"),
    ] {
        if lower.contains(needle) {
            return key.to_string();
        }
    }
    text.chars().take(60).collect()
}

fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let clients: Vec<ApiClient> = args.api.iter().map(|a| ApiClient::new(*a)).collect();
    let pollers: Vec<ApiClient> = args.poll_via.iter().map(|a| ApiClient::new(*a)).collect();
    let range = match &args.sleep_range {
        Some(r) => Some(parse_range(r).ok_or_else(|| anyhow::anyhow!("--sleep-range must look like 100-500"))?),
        None => None,
    };
    let module = match &args.wasm {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Some(Arc::new(bytes))
        }
        None => None,
    };
    // One upload per gateway, unless every task brings its own module.
    let mut module_id = None;
    if let Some(bytes) = module.as_ref().filter(|_| !args.fresh_modules) {
        for client in &clients {
            module_id = Some(upload(client, bytes.to_vec()).await?);
        }
    }
    let fresh = module.filter(|_| args.fresh_modules);
    let make_body = |i: usize| {
        let payload = match range {
            Some((lo, hi)) => (lo + rand::random::<u64>() % (hi - lo + 1)).to_string(),
            None => args.payload.replace("{i}", &i.to_string()),
        };
        let mut body = match (&args.wasm, &module_id) {
            // A fresh module's id is set when it is uploaded (`run_sync`).
            (Some(_), id) => json!({"type": "wasm", "module": id, "payload": payload}),
            (None, _) => json!({"type": args.task_type, "payload": payload}),
        };
        if let Some(t) = args.timeout_ms {
            body["timeout_ms"] = json!(t);
        }
        body
    };
    for i in 0..args.warmup {
        let _ = run_sync(&clients[i % clients.len()], make_body(i), fresh.clone()).await;
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let deadline = Instant::now() + Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(args.tasks);
    if let Some(batch) = args.batch {
        let mut outcomes = Vec::with_capacity(args.tasks);
        let mut batch_handles = Vec::new();
        for (n, chunk) in (0..args.tasks).collect::<Vec<_>>().chunks(batch.max(1)).enumerate() {
            let permit = sem.clone().acquire_owned().await?;
            if Instant::now() >= deadline {
                break;
            }
            let client = clients[n % clients.len()].clone();
            let body = json!({"tasks": chunk.iter().map(|i| make_body(*i)).collect::<Vec<_>>()});
            let count = chunk.len();
            batch_handles.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let r =
                    client.call(Method::POST, "/v1/tasks/batch?wait=true", Some(body), Duration::from_secs(600)).await;
                drop(permit);
                let latency = t0.elapsed();
                match r {
                    Ok(v) => v["tasks"]
                        .as_array()
                        .map(|recs| recs.iter().map(|rec| record_outcome(rec, latency)).collect())
                        .unwrap_or_default(),
                    Err(e) => (0..count).map(|_| error_outcome(&e, latency)).collect::<Vec<_>>(),
                }
            }));
        }
        for h in batch_handles {
            outcomes.extend(h.await?);
        }
        return finish(&args, outcomes, started.elapsed());
    }
    if args.poll {
        let grace = Duration::from_secs(args.poll_grace_secs);
        for i in 0..args.tasks {
            let permit = sem.clone().acquire_owned().await?;
            if Instant::now() >= deadline {
                break;
            }
            let client = clients[i % clients.len()].clone();
            let poller = if pollers.is_empty() { client.clone() } else { pollers[i % pollers.len()].clone() };
            let body = make_body(i);
            handles.push(tokio::spawn(async move {
                let outcome = submit_and_poll(&client, &poller, body, deadline + grace).await;
                drop(permit);
                outcome
            }));
        }
        let mut outcomes = Vec::with_capacity(handles.len());
        for h in handles {
            outcomes.push(h.await?);
        }
        return finish(&args, outcomes, started.elapsed());
    }
    for i in 0..args.tasks {
        let permit = sem.clone().acquire_owned().await?;
        if Instant::now() >= deadline {
            break;
        }
        let client = clients[i % clients.len()].clone();
        let body = make_body(i);
        let fresh = fresh.clone();
        handles.push(tokio::spawn(async move {
            let outcome = run_sync(&client, body, fresh).await;
            drop(permit);
            outcome
        }));
    }
    let mut outcomes = Vec::with_capacity(handles.len());
    for h in handles {
        outcomes.push(h.await?);
    }
    finish(&args, outcomes, started.elapsed())
}

/// Submits one task without waiting, then polls it through `poller` until final or `give_up`.
/// A task whose polls end without a final state comes back in its last known state (counted
/// as lost).
async fn submit_and_poll(client: &ApiClient, poller: &ApiClient, body: Value, give_up: Instant) -> Outcome {
    let t0 = Instant::now();
    let id = match client.call(Method::POST, "/v1/tasks", Some(body), Duration::from_secs(30)).await {
        Ok(v) => match v["id"].as_str() {
            Some(id) => id.to_string(),
            None => {
                return Outcome {
                    id: None,
                    latency: t0.elapsed(),
                    state: "no-answer".into(),
                    reason: None,
                    upload: None,
                };
            }
        },
        Err(e) => return error_outcome(&e, t0.elapsed()),
    };
    let mut last = "pending".to_string();
    while Instant::now() < give_up {
        if let Ok(rec) = poller.get(&format!("/v1/tasks/{id}")).await {
            let state = rec["state"].as_str().unwrap_or("?");
            if matches!(state, "completed" | "failed" | "cancelled") {
                return record_outcome(&rec, t0.elapsed());
            }
            last = state.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Outcome { id: Some(id), latency: t0.elapsed(), state: last, reason: Some("not final in time".into()), upload: None }
}

fn record_outcome(rec: &Value, latency: Duration) -> Outcome {
    Outcome {
        id: rec["id"].as_str().map(str::to_string),
        latency,
        state: rec["state"].as_str().unwrap_or("?").to_string(),
        reason: rec["error"].as_str().map(reason_key),
        upload: None,
    }
}

fn error_outcome(e: &ClientError, latency: Duration) -> Outcome {
    match e {
        ClientError::Api { code, message, .. } => Outcome {
            id: None,
            latency,
            state: format!("refused:{code}"),
            reason: Some(reason_key(message)),
            upload: None,
        },
        other => Outcome {
            id: None,
            latency,
            state: "no-answer".into(),
            reason: Some(reason_key(&other.to_string())),
            upload: None,
        },
    }
}

/// Checks, prints and writes the report; exits non-zero when an accepted task was lost.
fn finish(args: &Args, outcomes: Vec<Outcome>, elapsed: Duration) -> anyhow::Result<()> {
    let submitted = outcomes.len();

    // Every task a gateway accepted must come back final. A request that got no answer at
    // all (gateway unreachable) cannot be proven either way and is reported separately.
    let unknown = outcomes.iter().filter(|o| o.state == "no-answer").count();
    let mut lost = 0usize;
    for o in &outcomes {
        if let Some(id) = &o.id
            && !matches!(o.state.as_str(), "completed" | "failed" | "cancelled")
        {
            lost += 1;
            eprintln!("task {id} answered in non-final state {}", o.state);
        }
    }

    let mut latencies: Vec<Duration> = outcomes.iter().filter(|o| o.state == "completed").map(|o| o.latency).collect();
    latencies.sort();
    let completed = latencies.len();
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for o in &outcomes {
        *by_state.entry(o.state.clone()).or_default() += 1;
        if o.state != "completed"
            && let Some(r) = &o.reason
        {
            *reasons.entry(r.clone()).or_default() += 1;
        }
    }
    let throughput = completed as f64 / elapsed.as_secs_f64().max(1e-9);
    let mut uploads: Vec<Duration> = outcomes.iter().filter_map(|o| o.upload).collect();
    uploads.sort();
    let task_type = if args.wasm.is_some() { "wasm" } else { args.task_type.as_str() };
    let report = json!({
        "label": args.label,
        "task_type": task_type,
        "module": args.wasm.as_ref().map(|p| p.display().to_string()),
        "fresh_modules": args.fresh_modules,
        "submitted": submitted,
        "completed": completed,
        "states": by_state,
        "failures_by_reason": reasons,
        "lost": lost,
        "unanswered": unknown,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "elapsed_secs": elapsed.as_secs_f64(),
        "throughput_per_sec": throughput,
        "latency_ms": {
            "min": latencies.first().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            "p50": percentile(&latencies, 50.0),
            "p95": percentile(&latencies, 95.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        },
        // Each task's module upload (`--fresh-modules`), not part of its latency.
        "upload_ms": (!uploads.is_empty()).then(|| json!({
            "p50": percentile(&uploads, 50.0),
            "max": uploads.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        })),
    });
    print_text(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    // Polling through gateway crashes, a submission without an answer was never acknowledged.
    let unanswered_fail = unknown > 0 && !args.poll;
    let upload_failed = outcomes.iter().any(|o| o.state == "upload-failed");
    std::process::exit(if lost == 0 && !unanswered_fail && !upload_failed { 0 } else { 1 });
}

fn print_text(r: &Value) {
    println!(
        "{}: {} submitted, {} completed in {:.2} s",
        r["label"].as_str().unwrap_or(""),
        r["submitted"],
        r["completed"],
        r["elapsed_secs"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  throughput   {:.0} tasks/s (concurrency {})",
        r["throughput_per_sec"].as_f64().unwrap_or(0.0),
        r["concurrency"]
    );
    let l = &r["latency_ms"];
    println!(
        "  latency ms   p50 {:.3}  p95 {:.3}  p99 {:.3}  max {:.3}",
        l["p50"].as_f64().unwrap_or(0.0),
        l["p95"].as_f64().unwrap_or(0.0),
        l["p99"].as_f64().unwrap_or(0.0),
        l["max"].as_f64().unwrap_or(0.0)
    );
    if let Some(u) = r["upload_ms"].as_object() {
        println!(
            "  upload ms    p50 {:.3}  max {:.3} (each task's own module, before it)",
            u["p50"].as_f64().unwrap_or(0.0),
            u["max"].as_f64().unwrap_or(0.0)
        );
    }
    println!("  final states {}", r["states"]);
    println!("  failures     {}", r["failures_by_reason"]);
    println!("  lost         {} (accepted but never final)   unanswered {}", r["lost"], r["unanswered"]);
}
