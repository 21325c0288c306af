//! The worker side: runs task attempts sent by gateways (or by this node's own gateway),
//! at most `max_concurrent_tasks` at a time, and answers every one of them.
//!
//! Admission is credit-based: up to `max_concurrent_tasks` attempts execute while at most
//! `task_backlog` more wait here for a slot. The backlog hides the network round trip (a
//! gateway can have the next attempt in transit while this one runs) without letting work
//! pile up: beyond it the worker answers `Busy` at once, and the gateway, which knows other
//! workers, is where a task waits. CPU work runs on the blocking pool so it never stalls the
//! event loops, and every attempt, waiting included, is bounded by its deadline.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing::field::Empty;

use crate::metrics::{ExecutedLabels, Limit, Metrics};
use crate::network::{Client, InboundId};
use crate::protocol::{TaskError, TaskOutcome, TaskRequest, TaskResponse, WIRE_VERSION};
use crate::tasks::{self, StorageOp, TaskKind};
use crate::telemetry::{Remote, TARGET};
use crate::wasm::{Outcome, WasmCall, WasmService};

/// Where an attempt came from, and so where its answer goes (and, for a `wasm` task, where
/// a module this worker lacks is fetched from).
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    Remote(InboundId, PeerId),
    Local,
}

/// An answer for this node's own gateway.
#[derive(Debug)]
pub struct LocalAnswer {
    pub peer: PeerId,
    pub response: TaskResponse,
}

#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    local: PeerId,
    /// `local` as text, for every answer (encoded once, not per task).
    local_name: String,
    capabilities: HashSet<String>,
    /// Execution slots.
    slots: Arc<Semaphore>,
    /// Admission: executing plus waiting.
    admission: Arc<Semaphore>,
    capacity: u32,
    executing: AtomicU32,
    draining: AtomicBool,
    network: Client,
    local_answers: mpsc::Sender<LocalAnswer>,
    difficulty: u32,
    replication: usize,
    metrics: Metrics,
    /// The node's task tracker: every attempt runs on it and is awaited at shutdown.
    tasks: TaskTracker,
    /// Runs `wasm` tasks (the node's WebAssembly service).
    wasm: WasmService,
    /// Test-only fault injection (`wasm.test_corrupt_output`): every `wasm` result this
    /// worker returns is altered, as a dishonest or broken worker's would be.
    corrupt_wasm: bool,
}

impl Executor {
    /// An executor with the node's capabilities and limits from `config`.
    pub fn new(
        network: Client,
        config: &crate::config::Config,
        metrics: Metrics,
        local_answers: mpsc::Sender<LocalAnswer>,
        tasks: TaskTracker,
        wasm: WasmService,
    ) -> Self {
        let capacity = config.max_concurrent_tasks();
        let backlog = config.node.task_backlog;
        Self {
            inner: Arc::new(Inner {
                local: network.local_peer_id(),
                local_name: network.local_peer_id().to_string(),
                capabilities: config.node.capabilities.iter().cloned().collect(),
                slots: Arc::new(Semaphore::new(capacity)),
                admission: Arc::new(Semaphore::new(capacity + backlog)),
                capacity: (capacity + backlog) as u32,
                executing: AtomicU32::new(0),
                draining: AtomicBool::new(false),
                network,
                local_answers,
                difficulty: config.tasks.compute_difficulty,
                replication: config.tasks.storage_replication,
                metrics,
                tasks,
                wasm,
                corrupt_wasm: config.wasm.test_corrupt_output,
            }),
        }
    }

    /// Attempts this worker admits at once (executing plus waiting for a slot).
    pub fn capacity(&self) -> u32 {
        self.inner.capacity
    }

    /// Attempts admitted right now (executing or waiting for a slot).
    pub fn load(&self) -> u32 {
        self.inner.executing.load(Ordering::Relaxed)
    }

    /// Stop taking new attempts (they are answered `ShuttingDown`); running ones finish.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    /// Starts an attempt on the node's task tracker, or returns the answer at once when it
    /// cannot run here (for the caller to send: no task is spawned for a refusal). Never
    /// blocks.
    #[must_use = "a refused attempt's answer must be sent"]
    pub fn submit(&self, origin: Origin, request: TaskRequest) -> Option<TaskResponse> {
        let inner = &self.inner;
        // The gateway's attempt span, when it exports traces; a malformed context is ignored.
        let parent = request.trace.as_deref().and_then(Remote::from_wire);
        // Admission is its own short span: it ends (and is exported) at once, so even an
        // attempt whose worker dies mid-task leaves a trace of having arrived here.
        let admit = tracing::info_span!(target: TARGET, parent: None, "admit", otel.kind = "server",
            task.id = %request.task_id, task.attempt = i64::from(request.attempt), worker.peer_id = %inner.local_name,
            admitted = Empty, error.message = Empty);
        if let Some(parent) = &parent {
            parent.adopt(&admit);
        }
        let refuse = |err: TaskError| {
            admit.record("admitted", false);
            admit.record("error.message", tracing::field::display(&err));
            Some(self.response(&request, TaskOutcome::Err(err), None))
        };
        if inner.draining.load(Ordering::Relaxed) {
            return refuse(TaskError::ShuttingDown);
        }
        let Some(kind) = TaskKind::parse(&request.task_type) else {
            return refuse(TaskError::UnknownType(request.task_type.clone()));
        };
        if let Some(missing) = request
            .required_capabilities
            .iter()
            .chain(kind.capability().map(str::to_string).as_ref())
            .find(|c| !inner.capabilities.contains(*c))
        {
            return refuse(TaskError::MissingCapability(missing.clone()));
        }
        let Ok(admitted) = inner.admission.clone().try_acquire_owned() else {
            inner.metrics.limit_hit(Limit::TaskBacklog);
            return refuse(TaskError::Busy);
        };
        admit.record("admitted", true);
        drop(admit);
        let execute = tracing::info_span!(target: TARGET, parent: None, "execute", task.id = %request.task_id,
            task.type = kind.name(), task.attempt = i64::from(request.attempt), worker.peer_id = %inner.local_name,
            attempt.outcome = Empty, otel.status_code = Empty, error.message = Empty);
        if let Some(parent) = &parent {
            parent.adopt(&execute);
        }
        let this = self.clone();
        let span = execute.clone();
        self.inner.tasks.spawn(
            async move {
                this.inner.executing.fetch_add(1, Ordering::Relaxed);
                this.inner.metrics.tasks_executing.inc();
                let deadline = Duration::from_millis(request.deadline_ms.max(1));
                let started = std::time::Instant::now();
                // When it got a slot (Unix ms; 0: never), for the gateway's timeline.
                let started_ms = AtomicU64::new(0);
                let work = async {
                    // Never closed: the semaphore lives as long as the executor.
                    let _slot = this.inner.slots.acquire().await.map_err(|_| TaskError::ShuttingDown)?;
                    started_ms.store(unix_ms(), Ordering::Relaxed);
                    let from = match origin {
                        Origin::Remote(_, peer) => Some(peer),
                        Origin::Local => None,
                    };
                    this.run(kind, &request.payload, deadline.saturating_sub(started.elapsed()), from).await
                };
                let (outcome, fuel_used) = match tokio::time::timeout(deadline, work).await {
                    Ok(Ok(ran)) => (TaskOutcome::Ok(ran.result), ran.fuel_used),
                    Ok(Err(e)) => (TaskOutcome::Err(e), None),
                    Err(_) => (TaskOutcome::Err(TaskError::Timeout), None),
                };
                this.inner.executing.fetch_sub(1, Ordering::Relaxed);
                this.inner.metrics.tasks_executing.dec();
                drop(admitted);
                this.inner
                    .metrics
                    .tasks_executed
                    .get_or_create(&ExecutedLabels {
                        r#type: kind.name().to_string(),
                        outcome: if matches!(outcome, TaskOutcome::Ok(_)) { "ok" } else { "error" },
                    })
                    .inc();
                tracing::debug!(task_id = %request.task_id,
                trace_id = parent.as_ref().map_or(String::new(), |p| p.context.trace_id_hex()),
                attempt = request.attempt, ok = matches!(outcome, TaskOutcome::Ok(_)), "attempt executed");
                match &outcome {
                    TaskOutcome::Ok(_) => span.record("attempt.outcome", "ok"),
                    TaskOutcome::Err(e) => {
                        span.record("otel.status_code", "error");
                        span.record("error.message", tracing::field::display(e));
                        span.record("attempt.outcome", "error")
                    }
                };
                let started_ms = Some(started_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0);
                let response = TaskResponse { fuel_used, ..this.response(&request, outcome, started_ms) };
                this.answer(origin, response).await;
            }
            .instrument(execute),
        );
        None
    }

    /// This worker's answer to `request`.
    fn response(&self, request: &TaskRequest, outcome: TaskOutcome, started_ms: Option<u64>) -> TaskResponse {
        TaskResponse {
            v: WIRE_VERSION,
            task_id: request.task_id.clone(),
            attempt: request.attempt,
            worker: self.inner.local_name.clone(),
            outcome,
            started_ms,
            fuel_used: None,
        }
    }

    async fn answer(&self, origin: Origin, response: TaskResponse) {
        // Either send fails only when the node is shutting down; the gateway's deadline
        // then takes care of the attempt.
        let _ = match origin {
            Origin::Remote(id, _) => self.inner.network.respond_task(id, response).await.map_err(|_| ()),
            Origin::Local => {
                self.inner.local_answers.send(LocalAnswer { peer: self.inner.local, response }).await.map_err(|_| ())
            }
        };
    }

    async fn run(
        &self,
        kind: TaskKind,
        payload: &str,
        deadline: Duration,
        from: Option<PeerId>,
    ) -> Result<Ran, TaskError> {
        let result = match kind {
            TaskKind::Wasm => {
                let call = WasmCall::decode(payload).map_err(TaskError::BadPayload)?;
                let outcome = self.inner.wasm.run(call, from, deadline).await;
                self.inner.metrics.wasm_outcome(outcome.label());
                return match outcome {
                    // The result is text (a task's result); bytes that are not UTF-8 are
                    // replaced the same way on every worker.
                    Outcome::Completed { stdout, fuel_used } => {
                        let mut result = String::from_utf8_lossy(&stdout).into_owned();
                        if self.inner.corrupt_wasm {
                            result.push_str(CORRUPTION);
                        }
                        Ok(Ran { result, fuel_used: Some(fuel_used) })
                    }
                    Outcome::DeadlineExceeded => Err(TaskError::Timeout),
                    other if other.is_deterministic() => Err(TaskError::Deterministic(other.describe())),
                    other => Err(TaskError::Failed(other.describe())),
                };
            }
            TaskKind::Echo => Ok(payload.to_string()),
            TaskKind::Fail => {
                Err(TaskError::Failed(if payload.is_empty() { "fail task".to_string() } else { payload.to_string() }))
            }
            TaskKind::Sleep => {
                let ms = tasks::parse_sleep(payload).map_err(TaskError::BadPayload)?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(format!("slept {ms} ms"))
            }
            TaskKind::Compute => {
                let data = payload.as_bytes().to_vec();
                let difficulty = self.inner.difficulty;
                let started = std::time::Instant::now();
                let proof = tokio::task::spawn_blocking(move || {
                    tasks::prove(&data, difficulty, || started.elapsed() > deadline)
                })
                .await
                .map_err(|e| TaskError::Failed(format!("compute thread failed: {e}")))?
                .ok_or(TaskError::Timeout)?;
                Ok(serde_json::to_string(&proof).expect("a proof is plain data"))
            }
            TaskKind::Storage => match StorageOp::parse(payload).map_err(TaskError::BadPayload)? {
                StorageOp::Put { key, value } => {
                    let stored = self
                        .inner
                        .network
                        .put_record(StorageOp::dht_key(&key), value.into_bytes(), self.inner.replication)
                        .await
                        .map_err(TaskError::Failed)?;
                    Ok(if stored.is_partial() {
                        format!("stored {key} on {} of {} peer(s): partial replication", stored.stored, stored.wanted)
                    } else {
                        format!("stored {key} on {} peer(s)", stored.stored)
                    })
                }
                StorageOp::Get { key } => {
                    match self.inner.network.get_record(StorageOp::dht_key(&key)).await.map_err(TaskError::Failed)? {
                        Some(value) => String::from_utf8(value)
                            .map_err(|_| TaskError::Failed(format!("value of {key} is not UTF-8"))),
                        None => Err(TaskError::Failed(format!("key {key:?} not found"))),
                    }
                }
            },
        };
        result.map(|result| Ran { result, fuel_used: None })
    }
}

/// What a run produced: the task's result and, for `wasm`, the fuel it burned.
struct Ran {
    result: String,
    fuel_used: Option<u64>,
}

/// What `wasm.test_corrupt_output` appends to every `wasm` result (test-only).
const CORRUPTION: &str = "[corrupted by wasm.test_corrupt_output]";

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
