//! The spans the gateway shapes beyond the server span: links from a served prediction to
//! the trace that computed it, and unsampled spans for background calls.

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::StoredPrediction;

/// Links `span` to the span that computed `stored` (`ml.link.reason` =
/// `computed_prediction`), so a hit, a coalesced waiter or a write retry leads to the
/// trace where the model was called. Ids that do not parse add no link.
pub fn link_to_computing_trace(span: &Span, stored: &StoredPrediction) {
    let (Ok(trace_id), Ok(span_id)) = (
        TraceId::from_hex(&stored.trace_id),
        SpanId::from_hex(&stored.span_id),
    ) else {
        return;
    };
    span.add_link_with_attributes(
        SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ),
        vec![KeyValue::new("ml.link.reason", "computed_prediction")],
    );
}

/// A span whose parent is not sampled: background calls (version refresh, readiness)
/// are neither exported nor make the model service record a trace for every probe. The
/// ids are random, as W3C Trace Context requires of every trace id a service sends.
pub fn untraced_span(name: &'static str) -> Span {
    let span = tracing::info_span!(target: "gateway::background", "background", otel.name = name);
    let ids = RandomIdGenerator::default();
    let parent = SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        TraceFlags::default(),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    span
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    /// The parent a background span was given: what its outgoing calls propagate.
    fn parent_of(span: &Span) -> SpanContext {
        span.context().span().span_context().clone()
    }

    #[test]
    fn background_spans_carry_random_unsampled_trace_ids() {
        crate::telemetry::init_for_tests();
        let ids: Vec<SpanContext> = (0..8)
            .map(|_| parent_of(&untraced_span("refresh live model")))
            .collect();

        for id in &ids {
            assert!(id.is_valid());
            assert!(!id.is_sampled(), "background calls are not recorded");
            let upper_half = u128::from_be_bytes(id.trace_id().to_bytes()) >> 64;
            assert_ne!(upper_half, 0, "not a clock value: {}", id.trace_id());
        }
        let distinct: std::collections::HashSet<_> = ids.iter().map(|id| id.trace_id()).collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
