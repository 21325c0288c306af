//! W3C trace context (`traceparent`, `tracestate`): parsed from whatever a client or a peer
//! sent, formatted for the next hop, and turned into (and taken from) OpenTelemetry contexts.
//!
//! Parsing is forgiving by design: anything malformed yields `None`, and the caller starts a
//! fresh trace. A bad header is never an error a submitter sees.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use serde::{Deserialize, Serialize};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Longest `tracestate` passed on (the W3C limit is 32 members; 512 bytes holds them all in
/// practice). Longer ones are dropped, the `traceparent` still counts.
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// Where a span sits in a trace: enough to make the next hop's span its child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// The trace context as it travels with a task request between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTrace {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// A parsed trace context with the `tracestate` that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub context: TraceContext,
    pub state: Option<String>,
}

impl TraceContext {
    /// Parses a `traceparent` value: `00-<32 hex>-<16 hex>-<2 hex>`, lowercase; later
    /// versions are read for the same fields as the specification asks. `None` when it does
    /// not hold up (wrong length, upper case, all-zero ids, version `ff`).
    pub fn parse(traceparent: &str) -> Option<Self> {
        let s = traceparent.trim();
        let b = s.as_bytes();
        if b.len() < 55 {
            return None;
        }
        let version = hex_bytes::<1>(&s[0..2])?[0];
        if version == 0xff || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        // Version 00 has exactly these fields; a later version may add more after a '-'.
        if (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let trace_id = hex_bytes::<16>(&s[3..35])?;
        let span_id = hex_bytes::<8>(&s[36..52])?;
        let flags = hex_bytes::<1>(&s[53..55])?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, span_id, flags })
    }

    /// The `traceparent` value (version 00).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(self.span_id), self.flags)
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The context of `span` when the OpenTelemetry layer records it; `None` otherwise (no
    /// layer installed, or the span is disabled), which makes this free when telemetry is off.
    pub fn of_span(span: &tracing::Span) -> Option<Remote> {
        if span.is_disabled() {
            return None;
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() {
            return None;
        }
        let state = sc.trace_state().header();
        Some(Remote {
            context: Self {
                trace_id: sc.trace_id().to_bytes(),
                span_id: sc.span_id().to_bytes(),
                flags: sc.trace_flags().to_u8(),
            },
            state: (!state.is_empty()).then_some(state),
        })
    }
}

impl Remote {
    /// Parses a `traceparent` with its optional `tracestate`. A `tracestate` that is too long
    /// or not printable ASCII is dropped; the parent still counts.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let context = TraceContext::parse(traceparent)?;
        let state = tracestate
            .map(str::trim)
            .filter(|s| {
                !s.is_empty() && s.len() <= MAX_TRACESTATE_BYTES && s.bytes().all(|c| (0x20..0x7f).contains(&c))
            })
            .map(str::to_string);
        Some(Self { context, state })
    }

    /// A stand-in parent in the trace `trace_id` (hex): for work that resumes a trace whose
    /// span is gone (a task resumed after its gateway restarted). `None` for a bad id.
    pub fn joining(trace_id: &str) -> Option<Self> {
        let trace_id = hex_bytes::<16>(trace_id).filter(|id| *id != [0; 16])?;
        let mut span_id: [u8; 8] = rand::random();
        span_id[0] |= 1;
        Some(Self { context: TraceContext { trace_id, span_id, flags: 1 }, state: None })
    }

    pub fn from_wire(wire: &WireTrace) -> Option<Self> {
        Self::parse(&wire.traceparent, wire.tracestate.as_deref())
    }

    pub fn to_wire(&self) -> WireTrace {
        WireTrace { traceparent: self.context.traceparent(), tracestate: self.state.clone() }
    }

    /// An OpenTelemetry context whose (remote) span is this one: the parent of a new span.
    pub fn otel_context(&self) -> opentelemetry::Context {
        let state = self.state.as_deref().and_then(|s| s.parse::<TraceState>().ok()).unwrap_or_default();
        let sc = SpanContext::new(
            TraceId::from_bytes(self.context.trace_id),
            SpanId::from_bytes(self.context.span_id),
            TraceFlags::new(self.context.flags),
            true,
            state,
        );
        opentelemetry::Context::new().with_remote_span_context(sc)
    }

    /// Makes `span` a child of this context (no effect when telemetry is off).
    pub fn adopt(&self, span: &tracing::Span) {
        if !span.is_disabled() {
            // Fails only when the span was already started, which a fresh span is not.
            let _ = span.set_parent(self.otel_context());
        }
    }
}

/// A fresh random trace id (as hex): for the record of a task no trace context came with
/// while telemetry is off, so its log lines still share one id.
pub fn fresh_trace_id() -> String {
    let mut id: [u8; 16] = rand::random();
    id[0] |= 1; // never all zeros
    hex::encode(id)
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Lowercase only, as the specification requires.
    if s.len() != 2 * N || !s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let c = TraceContext::parse(GOOD).unwrap();
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(c.span_id), "00f067aa0ba902b7");
        assert_eq!(c.flags, 1);
        assert_eq!(c.traceparent(), GOOD);
        // Surrounding whitespace (header folding) is tolerated.
        assert_eq!(TraceContext::parse(&format!("  {GOOD} ")), Some(c));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", // no flags
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // v00 has no more fields
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // upper case
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero span id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // forbidden version
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", // wrong separators
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", // not hex
            "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é", // multibyte
            "é0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?} must not parse");
        }
    }

    #[test]
    fn a_later_version_is_read_for_the_known_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert_eq!(TraceContext::parse(later).unwrap().traceparent(), GOOD);
        assert_eq!(TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"), None);
    }

    #[test]
    fn tracestate_is_passed_through_when_sane() {
        let r = Remote::parse(GOOD, Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")).unwrap();
        assert_eq!(r.state.as_deref(), Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
        assert_eq!(Remote::from_wire(&r.to_wire()), Some(r));
        let long = "a=".to_string() + &"x".repeat(MAX_TRACESTATE_BYTES);
        assert_eq!(Remote::parse(GOOD, Some(&long)).unwrap().state, None);
        assert_eq!(Remote::parse(GOOD, Some("a=\u{7}")).unwrap().state, None);
        assert_eq!(Remote::parse("nope", Some("a=b")), None);
    }

    #[test]
    fn joining_keeps_the_trace_id() {
        let r = Remote::joining("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(r.context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(r.context.span_id, [0; 8]);
        assert_eq!(Remote::joining(""), None);
        assert_eq!(Remote::joining("00000000000000000000000000000000"), None);
    }

    #[test]
    fn without_the_layer_spans_have_no_context() {
        // No OpenTelemetry layer in unit tests: nothing to propagate, nothing allocated.
        let span = tracing::info_span!("x");
        assert_eq!(TraceContext::of_span(&span), None);
        assert_eq!(fresh_trace_id().len(), 32);
        assert_ne!(fresh_trace_id(), fresh_trace_id());
    }
}
