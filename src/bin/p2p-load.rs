//! `p2p-load`: a load generator for a running cluster, through its public HTTP API.
//!
//! Submits N tasks with at most C in flight (keep-alive connections, round-robin over the
//! given gateways) for at most T seconds, then checks every accepted task reached a final
//! state and prints throughput, latency percentiles and failures by reason (text and JSON).
//! Used by `stress-test.sh` and the benchmarks.

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
    let make_body = |i: usize| {
        let payload = match range {
            Some((lo, hi)) => (lo + rand::random::<u64>() % (hi - lo + 1)).to_string(),
            None => args.payload.replace("{i}", &i.to_string()),
        };
        let mut body = json!({"type": args.task_type, "payload": payload});
        if let Some(t) = args.timeout_ms {
            body["timeout_ms"] = json!(t);
        }
        body
    };
    for i in 0..args.warmup {
        let _ = clients[i % clients.len()]
            .call(Method::POST, "/v1/tasks?wait=true", Some(make_body(i)), Duration::from_secs(60))
            .await;
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
        handles.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let r = client.call(Method::POST, "/v1/tasks?wait=true", Some(body), Duration::from_secs(600)).await;
            drop(permit);
            let latency = t0.elapsed();
            match r {
                Ok(rec) => record_outcome(&rec, latency),
                Err(e) => error_outcome(&e, latency),
            }
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
            None => return Outcome { id: None, latency: t0.elapsed(), state: "no-answer".into(), reason: None },
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
    Outcome { id: Some(id), latency: t0.elapsed(), state: last, reason: Some("not final in time".into()) }
}

fn record_outcome(rec: &Value, latency: Duration) -> Outcome {
    Outcome {
        id: rec["id"].as_str().map(str::to_string),
        latency,
        state: rec["state"].as_str().unwrap_or("?").to_string(),
        reason: rec["error"].as_str().map(reason_key),
    }
}

fn error_outcome(e: &ClientError, latency: Duration) -> Outcome {
    match e {
        ClientError::Api { code, message, .. } => {
            Outcome { id: None, latency, state: format!("refused:{code}"), reason: Some(reason_key(message)) }
        }
        other => Outcome { id: None, latency, state: "no-answer".into(), reason: Some(reason_key(&other.to_string())) },
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
    let report = json!({
        "label": args.label,
        "task_type": args.task_type,
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
            "p50": percentile(&latencies, 50.0),
            "p95": percentile(&latencies, 95.0),
            "p99": percentile(&latencies, 99.0),
            "max": latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        },
    });
    print_text(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    // Polling through gateway crashes, a submission without an answer was never acknowledged.
    let unanswered_fail = unknown > 0 && !args.poll;
    std::process::exit(if lost == 0 && !unanswered_fail { 0 } else { 1 });
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
    println!("  final states {}", r["states"]);
    println!("  failures     {}", r["failures_by_reason"]);
    println!("  lost         {} (accepted but never final)   unanswered {}", r["lost"], r["unanswered"]);
}
