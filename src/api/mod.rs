//! The HTTP API on `api.listen`: task submission and queries, the views behind the CLI
//! commands, and the health endpoints Kubernetes probes. JSON in and out; every error is
//! `{"error": "...", "code": "..."}` with a status that says what kind of problem it is.
//! The contract is written down in `docs/openapi.yaml`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing::field::Empty;

use crate::node::handle::{BatchSubmitted, HandleError, NodeHandle, Submitted};
use crate::node::views::{CapabilitiesView, StatusView};
use crate::scheduler::{CancelError, SubmitError, TaskRecord, TaskSpec};
use crate::telemetry::{Remote, TARGET, TraceContext};
use crate::wasm::call::CallLimits;
use crate::wasm::{ModuleId, UploadError, WasmCall, WasmService};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// The core loop must have turned within this for `/healthz` to pass.
const LIVENESS_WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    pub code: String,
    #[serde(skip)]
    status: u16,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, error: impl Into<String>) -> Self {
        Self { error: error.into(), code: code.into(), status: status.as_u16() }
    }

    fn unavailable() -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "node is shutting down")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self)).into_response();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read, so the connection cannot carry another
            // request: say so, or a keep-alive client sends its next request on a connection
            // the server is closing (the API tests' pooled client met exactly that).
            response
                .headers_mut()
                .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        let (status, code) = match &e {
            SubmitError::UnknownType(_) => (StatusCode::BAD_REQUEST, "unknown_task_type"),
            SubmitError::Invalid { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
            SubmitError::NoCapableWorker { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_capable_worker"),
            SubmitError::NotEnoughWorkers { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_enough_workers"),
            SubmitError::QueueFull(_) => (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
            SubmitError::InsufficientCredits { .. } => (StatusCode::PAYMENT_REQUIRED, "insufficient_credits"),
            SubmitError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            SubmitError::StoreFull => (StatusCode::INSUFFICIENT_STORAGE, "store_full"),
            SubmitError::NotStored(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_stored"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> Self {
        match &e {
            CancelError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            CancelError::AlreadyFinal(..) => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
        }
    }
}

impl From<HandleError> for ApiError {
    fn from(e: HandleError) -> Self {
        match e {
            HandleError::Unavailable => Self::unavailable(),
            HandleError::Submit(e) => e.into(),
            HandleError::Batch(i, e) => {
                let mut err = ApiError::from(e);
                err.error = format!("tasks[{i}]: {}", err.error);
                err
            }
            HandleError::NotFound(id) => Self::new(StatusCode::NOT_FOUND, "not_found", format!("no task with id {id}")),
            HandleError::Cancel(e) => e.into(),
        }
    }
}

/// Body of `POST /v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    #[serde(rename = "type")]
    task_type: String,
    #[serde(default)]
    payload: String,
    timeout_ms: Option<u64>,
    max_attempts: Option<u32>,
    /// `wasm` tasks: the module (`sha256:...`, uploaded with `POST /v1/modules`).
    module: Option<String>,
    /// `wasm` tasks: the module's arguments (after `argv[0]`).
    args: Option<Vec<String>>,
    /// `wasm` tasks: limits below the workers' own (`fuel`, `memory_bytes`, `output_bytes`).
    limits: Option<CallLimits>,
    /// `wasm` tasks: run on this many distinct workers (default 1) ...
    replicas: Option<u32>,
    /// ... and complete when this many agree on the output (default: a majority).
    quorum: Option<u32>,
}

/// Most tasks one batch may carry.
pub const MAX_BATCH: usize = 10_000;

/// Body of `POST /v1/tasks/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    tasks: Vec<SubmitBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitQuery {
    #[serde(default)]
    wait: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
}

pub fn router(handle: NodeHandle) -> Router {
    // One byte over the limit is enough to tell an oversized module (400, naming the limit).
    let module_body_limit =
        handle.wasm().map_or(0, |w| usize::try_from(w.max_module_bytes()).unwrap_or(usize::MAX).saturating_add(1));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/tasks", get(list_tasks).post(submit_task))
        .route("/v1/tasks/batch", axum::routing::post(submit_batch))
        .route("/v1/tasks/{id}", get(get_task).delete(cancel_task))
        .route("/v1/peers", get(peers))
        .route("/v1/status", get(status))
        .route("/v1/capabilities", get(capabilities))
        .route("/v1/modules", axum::routing::post(upload_module).layer(DefaultBodyLimit::max(module_body_limit)))
        .route("/v1/modules/{id}", get(get_module))
        .route("/v1/ledger", get(ledger::summary))
        .route("/v1/ledger/accounts/{peer}", get(ledger::account))
        .route("/v1/ledger/blocks/{peer}/{seq}", get(ledger::block))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(handle)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: NodeHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // A response written in two pieces must not wait for the client's delayed ACK (Nagle).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(handle)).with_graceful_shutdown(shutdown).await
}

async fn healthz(State(h): State<NodeHandle>) -> Response {
    if h.health().is_live(LIVENESS_WINDOW) {
        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"}))).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stalled", "event loop has not turned in 5 s").into_response()
    }
}

async fn readyz(State(h): State<NodeHandle>) -> Response {
    if h.health().ready.load(Ordering::Relaxed) {
        return (StatusCode::OK, axum::Json(serde_json::json!({"ready": true}))).into_response();
    }
    let reason = if h.health().shutting_down.load(Ordering::Relaxed) {
        "shutting down"
    } else {
        "not joined: no cluster peer connected or routing table empty"
    };
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"ready": false, "reason": reason}))).into_response()
}

type BodyResult = Result<Bytes, axum::extract::rejection::BytesRejection>;
type PathResult = Result<Path<String>, axum::extract::rejection::PathRejection>;

/// Parses a JSON body (one value, nothing after it), naming the offending field on error.
fn parse_body<T: serde::de::DeserializeOwned>(body: BodyResult) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("body: {}", e.body_text()))
        }
    })?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if path == "." || path == "?" { "body".to_string() } else { format!("field {path}") };
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("{what}: {inner}"))
    })?;
    de.end().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}")))?;
    Ok(value)
}

fn parse_id(path: PathResult) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("task id: {}", e.body_text())))
}

fn parse_query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("query string: {}", e.body_text())))
}

impl SubmitBody {
    /// The task to submit; `prefix` is the body's path to this task (`""` or `tasks[i].`),
    /// for error messages.
    fn into_spec(self, prefix: &str, wasm: Option<&WasmService>) -> Result<TaskSpec, ApiError> {
        let bad = |field: &str, why: String| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("field {prefix}{field}: {why}"))
        };
        if self.task_type.is_empty() {
            return Err(bad("type", "must not be empty".into()));
        }
        let payload = if self.task_type == "wasm" {
            let module = self.module.ok_or_else(|| bad("module", "a wasm task needs a module (sha256:...)".into()))?;
            let module: ModuleId =
                module.parse().map_err(|e: crate::wasm::BadModuleId| bad("module", e.to_string()))?;
            // The worker fetches the module from this node: it has to be here.
            if wasm.and_then(|w| w.size(&module)).is_none() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_module",
                    format!("field {prefix}module: no module {module} on this node (upload it: POST /v1/modules)"),
                ));
            }
            let limits = self.limits.unwrap_or_default();
            let call = WasmCall { module, input: self.payload, args: self.args.unwrap_or_default(), limits };
            call.check().map_err(|why| bad(if why.starts_with("limits.") { "limits" } else { "args" }, why))?;
            call.encode()
        } else {
            if self.module.is_some() {
                return Err(bad("module", "only for type wasm".into()));
            }
            for (field, given) in [
                ("args", self.args.is_some()),
                ("limits", self.limits.is_some()),
                ("replicas", self.replicas.is_some()),
                ("quorum", self.quorum.is_some()),
            ] {
                if given {
                    return Err(bad(field, "only for type wasm".into()));
                }
            }
            self.payload
        };
        Ok(TaskSpec {
            task_type: self.task_type,
            payload,
            timeout_ms: self.timeout_ms,
            max_attempts: self.max_attempts,
            trace: None,
            replicas: self.replicas,
            quorum: self.quorum,
        })
    }
}

/// The span of a submission, child of the caller's `traceparent` when it sent a valid one
/// (a malformed one is ignored: a fresh trace starts), and the trace its tasks join.
/// OpenTelemetry's HTTP conventions name a server span after its method and route.
fn submission(headers: &HeaderMap, name: &'static str, route: &'static str) -> (tracing::Span, Option<Remote>) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let caller = header("traceparent").and_then(|tp| {
        let parsed = Remote::parse(tp, header("tracestate"));
        if parsed.is_none() {
            tracing::debug!(traceparent = tp, "malformed traceparent ignored: the task starts a fresh trace");
        }
        parsed
    });
    let span = tracing::info_span!(target: TARGET, parent: None, "submit", otel.name = name, otel.kind = "server",
        http.request.method = "POST", http.route = route, http.response.status_code = Empty);
    if let Some(caller) = &caller {
        caller.adopt(&span);
    }
    let trace = TraceContext::of_span(&span).or(caller);
    (span, trace)
}

/// Notes the answer's status on the submission's span.
fn answered(span: &tracing::Span, result: Result<Response, ApiError>) -> Result<Response, ApiError> {
    let status = match &result {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.status,
    };
    span.record("http.response.status_code", i64::from(status));
    result
}

async fn submit_batch(
    State(h): State<NodeHandle>,
    headers: HeaderMap,
    query: Result<Query<SubmitQuery>, axum::extract::rejection::QueryRejection>,
    body: BodyResult,
) -> Result<Response, ApiError> {
    let (span, trace) = submission(&headers, "POST /v1/tasks/batch", "/v1/tasks/batch");
    let result = submit_batch_traced(h, query, body, trace).instrument(span.clone()).await;
    answered(&span, result)
}

async fn submit_batch_traced(
    h: NodeHandle,
    query: Result<Query<SubmitQuery>, axum::extract::rejection::QueryRejection>,
    body: BodyResult,
    trace: Option<Remote>,
) -> Result<Response, ApiError> {
    let query = parse_query(query)?;
    let body: BatchBody = parse_body(body)?;
    if body.tasks.is_empty() || body.tasks.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("field tasks: must hold 1..={MAX_BATCH} tasks, got {}", body.tasks.len()),
        ));
    }
    let specs = body
        .tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.into_spec(&format!("tasks[{i}]."), h.wasm()).map(|s| TaskSpec { trace: trace.clone(), ..s }))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match h.submit_batch(specs, query.wait).await? {
        BatchSubmitted::Accepted(ids) => {
            (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"ids": ids, "state": "pending"}))).into_response()
        }
        BatchSubmitted::Final(records) => {
            (StatusCode::OK, axum::Json(serde_json::json!({"tasks": records}))).into_response()
        }
    })
}

async fn submit_task(
    State(h): State<NodeHandle>,
    headers: HeaderMap,
    query: Result<Query<SubmitQuery>, axum::extract::rejection::QueryRejection>,
    body: BodyResult,
) -> Result<Response, ApiError> {
    let (span, trace) = submission(&headers, "POST /v1/tasks", "/v1/tasks");
    let result = submit_task_traced(h, query, body, trace).instrument(span.clone()).await;
    answered(&span, result)
}

async fn submit_task_traced(
    h: NodeHandle,
    query: Result<Query<SubmitQuery>, axum::extract::rejection::QueryRejection>,
    body: BodyResult,
    trace: Option<Remote>,
) -> Result<Response, ApiError> {
    let query = parse_query(query)?;
    let spec = TaskSpec { trace, ..parse_body::<SubmitBody>(body)?.into_spec("", h.wasm())? };
    Ok(match h.submit(spec, query.wait).await? {
        Submitted::Accepted(id) => {
            (StatusCode::ACCEPTED, axum::Json(serde_json::json!({"id": id, "state": "pending"}))).into_response()
        }
        Submitted::Final(record) => (StatusCode::OK, axum::Json(record)).into_response(),
    })
}

async fn list_tasks(
    State(h): State<NodeHandle>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let limit = parse_query(query)?.limit.unwrap_or(100).min(10_000);
    let tasks = h.list(limit).await?;
    Ok(axum::Json(serde_json::json!({ "tasks": tasks })).into_response())
}

async fn get_task(State(h): State<NodeHandle>, id: PathResult) -> Result<axum::Json<TaskRecord>, ApiError> {
    Ok(axum::Json(h.get(parse_id(id)?).await?))
}

async fn cancel_task(State(h): State<NodeHandle>, id: PathResult) -> Result<axum::Json<TaskRecord>, ApiError> {
    Ok(axum::Json(h.cancel(parse_id(id)?).await?))
}

async fn peers(State(h): State<NodeHandle>) -> Result<Response, ApiError> {
    let peers = h.peers().await?;
    Ok(axum::Json(serde_json::json!({ "peers": peers })).into_response())
}

async fn status(State(h): State<NodeHandle>) -> Result<axum::Json<StatusView>, ApiError> {
    Ok(axum::Json(h.status().await?))
}

async fn capabilities(State(h): State<NodeHandle>) -> Result<axum::Json<CapabilitiesView>, ApiError> {
    Ok(axum::Json(h.capabilities().await?))
}

mod ledger;

fn wasm_of(h: &NodeHandle) -> Result<&WasmService, ApiError> {
    h.wasm().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "wasm_unavailable", "this node has no WebAssembly service")
    })
}

/// `POST /v1/modules`: the body is the module's bytes; `201 {"id", "size"}`, or `400` naming
/// why the module was refused.
async fn upload_module(State(h): State<NodeHandle>, body: BodyResult) -> Result<Response, ApiError> {
    let wasm = wasm_of(&h)?;
    let invalid = |why: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_module", why);
    let body = match body {
        Ok(body) => body,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let mut response =
                invalid(format!("module exceeds wasm.max_module_bytes ({})", wasm.max_module_bytes())).into_response();
            // The rest of the body was never read: this connection cannot carry another request.
            response
                .headers_mut()
                .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
            return Ok(response);
        }
        Err(e) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("body: {}", e.body_text())));
        }
    };
    match wasm.upload(body.to_vec()).await {
        Ok((id, size)) => {
            Ok((StatusCode::CREATED, axum::Json(serde_json::json!({"id": id, "size": size}))).into_response())
        }
        Err(UploadError::Invalid(why)) => Err(invalid(why.to_string())),
        Err(UploadError::Store(why)) => Err(ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "not_stored", why)),
    }
}

/// `GET /v1/modules/{id}`: whether this node holds the module.
async fn get_module(State(h): State<NodeHandle>, id: PathResult) -> Result<Response, ApiError> {
    let wasm = wasm_of(&h)?;
    let raw = id
        .map(|Path(id)| id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("module id: {}", e.body_text())))?;
    let id: ModuleId = raw.parse().map_err(|e: crate::wasm::BadModuleId| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("module id: {e}"))
    })?;
    match wasm.size(&id) {
        Some(size) => Ok(axum::Json(serde_json::json!({"id": id, "size": size})).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no module {id} on this node"))),
    }
}
