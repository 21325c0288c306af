//! What keeps tracing from ever slowing a task: spans leave through the SDK's batch span
//! processor (its own thread, a bounded queue), and every span that does not reach the
//! collector is counted in `p2p_telemetry_spans_dropped_total`, whether it found the queue
//! full or its batch failed to export (collector down, unreachable, too slow).
//!
//! The SDK drops on a full queue without telling anyone, so the queue is counted here: a span
//! is pending from `on_end` until its batch's export returns. Past the queue's size a span is
//! dropped (and counted) before the SDK sees it, so the SDK's own queue never overflows
//! unseen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus_client::metrics::counter::Counter;

/// Spans accepted and not yet exported (or given up on), shared by the processor in front
/// and the exporter behind the batch queue.
#[derive(Debug, Clone, Default)]
pub(super) struct Pending(Arc<AtomicUsize>);

/// The batch processor with the queue counted in front of it.
#[derive(Debug)]
pub(super) struct CountedProcessor<P> {
    pub(super) inner: P,
    pub(super) pending: Pending,
    pub(super) max_queue: usize,
    pub(super) dropped: Counter,
}

impl<P: SpanProcessor> SpanProcessor for CountedProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.0.fetch_add(1, Ordering::Relaxed) >= self.max_queue {
            self.pending.0.fetch_sub(1, Ordering::Relaxed);
            self.dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, with failed batches counted as dropped spans.
#[derive(Debug)]
pub(super) struct CountedExporter<E> {
    pub(super) inner: E,
    pub(super) pending: Pending,
    pub(super) dropped: Counter,
    /// The last export failed: logged once per outage, not once per batch.
    pub(super) failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for CountedExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.pending.0.fetch_sub(n.min(self.pending.0.load(Ordering::Relaxed)), Ordering::Relaxed);
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("spans reach the OTLP collector again");
                }
            }
            Err(e) => {
                self.dropped.inc_by(n as u64);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, spans = n,
                        "the OTLP collector does not take spans: they are dropped (counted in p2p_telemetry_spans_dropped_total)");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_sdk::error::OTelSdkError;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SimpleSpanProcessor};

    use super::*;

    /// An exporter whose collector is down.
    #[derive(Debug)]
    struct Down;

    impl SpanExporter for Down {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            Err(OTelSdkError::InternalFailure("connection refused".into()))
        }
    }

    /// A processor that holds every span (a queue nobody drains).
    #[derive(Debug, Default)]
    struct Hold(std::sync::Mutex<Vec<SpanData>>);

    impl SpanProcessor for Hold {
        fn on_start(&self, _: &mut Span, _: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    #[test]
    fn failed_exports_count_their_spans() {
        let dropped = Counter::default();
        let exporter = CountedExporter {
            inner: Down,
            pending: Pending::default(),
            dropped: dropped.clone(),
            failing: false.into(),
        };
        let provider = SdkTracerProvider::builder().with_span_processor(SimpleSpanProcessor::new(exporter)).build();
        let tracer = provider.tracer("test");
        for _ in 0..3 {
            tracer.in_span("x", |_| {});
        }
        assert_eq!(dropped.get(), 3);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let dropped = Counter::default();
        let processor = CountedProcessor {
            inner: Hold::default(),
            pending: Pending::default(),
            max_queue: 2,
            dropped: dropped.clone(),
        };
        let provider = SdkTracerProvider::builder().with_span_processor(processor).build();
        let tracer = provider.tracer("test");
        for _ in 0..5 {
            tracer.in_span("x", |_| {});
        }
        assert_eq!(dropped.get(), 3);
    }
}
