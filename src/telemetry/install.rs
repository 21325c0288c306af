//! The process's one `tracing` subscriber: log lines to stderr (coloured only on a terminal)
//! and, when `telemetry.otlp_endpoint` is set, the task spans exported over OTLP.
//!
//! Task spans use their own target ([`TARGET`]): the log layer never sees them, and without
//! the OpenTelemetry layer nothing enables them, so creating one is a disabled-callsite check
//! and nothing more. That is what "off costs nothing" rests on.

use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
use prometheus_client::metrics::counter::Counter;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use super::TARGET;
use super::export::{CountedExporter, CountedProcessor, Pending};
use crate::config::{LogFormat, TelemetryConfig};

/// Spans waiting for export at most; beyond, new ones are dropped and counted.
const MAX_QUEUE: usize = 4096;
/// Spans per OTLP request at most.
const MAX_BATCH: usize = 512;
/// How often the queue is sent, when it does not fill a batch first.
const EXPORT_EVERY: Duration = Duration::from_secs(1);
/// One export request's limit: a collector slower than that loses the batch, not the node.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
#[error("telemetry.otlp_endpoint {endpoint}: cannot build the OTLP exporter: {message}")]
pub struct InstallError {
    endpoint: String,
    message: String,
}

/// Who is exporting: the resource attributes every span of this process carries.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub peer_id: String,
    pub role: String,
}

/// The installed telemetry. Keep it until the node stopped, then [`Telemetry::shutdown`]
/// sends what is still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    spans_dropped: Counter,
}

impl Telemetry {
    /// Counts spans that never reached the collector; the node registers it as
    /// `p2p_telemetry_spans_dropped_total`.
    pub fn spans_dropped(&self) -> Counter {
        self.spans_dropped.clone()
    }

    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter, bounded in time. Blocks: call it off the async runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
        {
            tracing::debug!(error = %e, "telemetry shutdown incomplete");
        }
    }
}

/// Installs the global subscriber: logs in `format`, plus the OTLP export when `config` asks
/// for it. A second call (tests) leaves the first subscriber in place.
pub fn install(format: LogFormat, config: &TelemetryConfig, node: &NodeIdentity) -> Result<Telemetry, InstallError> {
    let spans_dropped = Counter::default();
    let provider = config.enabled().then(|| provider(config, node, spans_dropped.clone())).transpose()?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("p2p-network"))
            .with_location(false)
            .with_threads(false)
            .with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE))
    });
    let _ = tracing_subscriber::registry().with(log_layer(format)).with(otel).try_init();
    Ok(Telemetry { provider, spans_dropped })
}

/// Log lines on stderr. ANSI colours only when stderr is a terminal: `docker logs`,
/// `kubectl logs` and log files get plain text.
fn log_layer(format: LogFormat) -> Box<dyn Layer<Registry> + Send + Sync> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(format!("{TARGET}=off").parse().expect("a target directive with a level parses"));
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).with_filter(filter).boxed(),
        LogFormat::Text => fmt.with_filter(filter).boxed(),
    }
}

fn provider(
    config: &TelemetryConfig,
    node: &NodeIdentity,
    spans_dropped: Counter,
) -> Result<SdkTracerProvider, InstallError> {
    let url = config.traces_url();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| InstallError { endpoint: url.clone(), message: e.to_string() })?;
    let pending = Pending::default();
    let exporter = CountedExporter {
        inner: exporter,
        pending: pending.clone(),
        dropped: spans_dropped.clone(),
        failing: AtomicBool::new(false),
    };
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(MAX_QUEUE)
                .with_max_export_batch_size(MAX_BATCH)
                .with_scheduled_delay(EXPORT_EVERY)
                .build(),
        )
        .build();
    let processor = CountedProcessor { inner: batch, pending, max_queue: MAX_QUEUE, dropped: spans_dropped };
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio)));
    tracing::info!(endpoint = %url, sampling_ratio = config.sampling_ratio, "exporting task traces over OTLP");
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler)
        .with_resource(resource(config, node))
        .build())
}

/// `service.name`, the node's peer id and role, and in Kubernetes its pod and namespace
/// (`POD_NAME`, `POD_NAMESPACE` from the downward API in the manifests).
fn resource(config: &TelemetryConfig, node: &NodeIdentity) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.instance.id", node.peer_id.clone()),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("p2p.peer_id", node.peer_id.clone()),
        KeyValue::new("p2p.role", node.role.clone()),
    ];
    for (var, key) in [("POD_NAME", "k8s.pod.name"), ("POD_NAMESPACE", "k8s.namespace.name")] {
        if let Ok(value) = std::env::var(var)
            && !value.is_empty()
        {
            attributes.push(KeyValue::new(key, value));
        }
    }
    Resource::builder_empty().with_service_name(config.service_name.clone()).with_attributes(attributes).build()
}
