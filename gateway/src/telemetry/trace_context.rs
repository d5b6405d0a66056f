//! The trace context the gateway writes by hand rather than through the propagator: the
//! `traceparent` value of a span, store request headers without baggage, the current trace id.

use axum::http::{HeaderMap, HeaderValue};
use opentelemetry::Context;
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// The W3C `traceparent` value of the span of `cx` (also the value of `traceresponse`),
/// or `None` for a context without a valid span.
pub fn traceparent(cx: &Context) -> Option<HeaderValue> {
    let span = cx.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return None;
    }
    // version-trace_id-parent_id-flags, hex-encoded into place: 2 + 1 + 32 + 1 + 16 + 1 + 2.
    let mut traceparent = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let ids = [
        (&span_context.trace_id().to_bytes()[..], 3..35),
        (&span_context.span_id().to_bytes()[..], 36..52),
        (&[span_context.trace_flags().to_u8()][..], 53..55),
    ];
    for (bytes, range) in ids {
        hex::encode_to_slice(bytes, &mut traceparent[range])
            .expect("each range is twice as long as its bytes");
    }
    Some(HeaderValue::from_bytes(&traceparent).expect("hex digits and dashes are a header value"))
}

/// W3C trace context of `cx` as request headers: `traceparent`, and `tracestate` only when
/// it has entries. Never baggage: it is the client's, can be large (8 KB of it made the node
/// refuse a request with 400, issue 8), and the store has no use for it. Nothing is added
/// for a context without a valid span.
pub fn inject_trace_context(cx: &Context, headers: &mut HeaderMap) {
    let Some(value) = traceparent(cx) else {
        return;
    };
    headers.insert(TRACEPARENT, value);
    let tracestate = cx.span().span_context().trace_state().header();
    if !tracestate.is_empty()
        && let Ok(value) = HeaderValue::try_from(tracestate)
    {
        headers.insert(TRACESTATE, value);
    }
}

/// The trace id of the current span, as 32 hex characters (empty without telemetry).
pub fn current_trace_id() -> String {
    let cx = tracing::Span::current().context();
    let span_context = cx.span().span_context().clone();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::KeyValue;
    use opentelemetry::baggage::BaggageExt;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    /// A context holding a sampled remote span with `trace_state`, and 8 KB of baggage.
    fn context_with(trace_state: TraceState) -> Context {
        let span_context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            trace_state,
        );
        Context::new()
            .with_remote_span_context(span_context)
            .with_baggage([KeyValue::new("ml.experiment", "x".repeat(8 * 1024))])
    }

    #[test]
    fn store_requests_carry_traceparent_and_never_baggage_or_an_empty_tracestate() {
        let mut headers = HeaderMap::new();

        inject_trace_context(&context_with(TraceState::NONE), &mut headers);

        assert_eq!(
            headers[TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert!(!headers.contains_key(TRACESTATE), "{headers:?}");
        assert!(!headers.contains_key("baggage"), "{headers:?}");
        assert_eq!(headers.len(), 1);
    }

    #[test]
    fn a_non_empty_tracestate_is_passed_on() {
        let mut headers = HeaderMap::new();
        let state = TraceState::from_key_value([("vendor", "opaque")]).unwrap();

        inject_trace_context(&context_with(state), &mut headers);

        assert_eq!(headers[TRACESTATE], "vendor=opaque");
        assert!(!headers.contains_key("baggage"), "{headers:?}");
    }

    #[test]
    fn a_context_without_a_span_adds_no_header() {
        let mut headers = HeaderMap::new();

        inject_trace_context(&Context::new(), &mut headers);

        assert!(headers.is_empty(), "{headers:?}");
    }
}
