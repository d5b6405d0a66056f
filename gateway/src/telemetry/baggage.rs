//! Copies `ml.*` baggage entries onto the spans started in their context.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{Span as _, SpanId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

/// The prefix of the baggage entries that become span attributes.
const ML_PREFIX: &str = "ml.";

/// `ml.*` names the gateway owns, whole namespaces of them: what they say is known only
/// to the gateway, so a client's baggage never supplies them, not even on a span the
/// gateway leaves them off (a store span with a caller's `ml.data_id` would point at the
/// wrong row). Namespaces rather than a list of names, so a new `ml.cache.*` or
/// `ml.batch.*` attribute is owned without being listed here (a list had already missed
/// `ml.cache.directive` and `ml.batch.failed`).
const OWNED: [&str; 7] = [
    "ml.data_id",
    "ml.run_id",
    "ml.model.",
    "ml.cache.",
    "ml.batch.",
    "ml.link.",
    "ml.coalescing.",
];

/// Whether the gateway owns `name` (see [`OWNED`]).
fn is_owned(name: &str) -> bool {
    OWNED.iter().any(|owned| {
        name.strip_prefix(owned)
            .is_some_and(|rest| owned.ends_with('.') || rest.is_empty())
    })
}

/// How much baggage may become attributes of one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaggageLimits {
    /// Most entries copied onto one span.
    pub max_entries: usize,
    /// Most bytes (keys plus values) copied onto one span.
    pub max_bytes: usize,
}

impl Default for BaggageLimits {
    /// 16 entries and 1 KiB: room for a few experiment tags; a client's 8 KB baggage
    /// header cannot multiply the size of every span of its trace.
    fn default() -> Self {
        Self {
            max_entries: 16,
            max_bytes: 1024,
        }
    }
}

/// Wraps the exporting processor `inner`.
///
/// Copies `ml.*` baggage entries onto the spans started in their context, capped in
/// entries and bytes, never for a name the gateway owns, and never over an attribute
/// the gateway sets on the span itself.
///
/// The SDK appends every `set_attribute` without replacing an earlier value of the same
/// key, so copying baggage at span start would give a span two `ml.batch.size` values.
/// The entries are therefore kept aside at start and added at the end only under keys
/// the span does not already carry, whichever was set first.
#[derive(Debug)]
pub struct BaggageAttributes<P> {
    inner: P,
    limits: BaggageLimits,
    /// Entries waiting for their span's end, by span id.
    pending: Mutex<HashMap<SpanId, Vec<KeyValue>>>,
    /// `pending.len()`, read without the lock: most spans carry no baggage.
    pending_count: AtomicUsize,
}

impl<P: SpanProcessor> BaggageAttributes<P> {
    /// Copies baggage within `limits` onto the spans `inner` receives.
    pub fn new(inner: P, limits: BaggageLimits) -> Self {
        Self {
            inner,
            limits,
            pending: Mutex::default(),
            pending_count: AtomicUsize::new(0),
        }
    }
}

/// The `ml.*` entries of `cx`'s baggage that fit `limits`, in key order (baggage has
/// no order of its own, and a cap must pick the same entries every time).
pub fn capped_entries(cx: &Context, limits: BaggageLimits) -> Vec<KeyValue> {
    let mut entries: Vec<(&str, String)> = cx
        .baggage()
        .iter()
        .filter(|(key, _)| key.as_str().starts_with(ML_PREFIX) && !is_owned(key.as_str()))
        .map(|(key, (value, _))| (key.as_str(), value.as_str().to_owned()))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut bytes = 0;
    let mut kept = Vec::new();
    for (key, value) in entries {
        if kept.len() == limits.max_entries {
            break;
        }
        let size = key.len() + value.len();
        if bytes + size > limits.max_bytes {
            continue;
        }
        bytes += size;
        kept.push(KeyValue::new(key.to_owned(), value));
    }
    kept
}

impl<P: SpanProcessor> SpanProcessor for BaggageAttributes<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        let entries = capped_entries(cx, self.limits);
        if !entries.is_empty()
            && let Ok(mut pending) = self.pending.lock()
        {
            pending.insert(span.span_context().span_id(), entries);
            self.pending_count.store(pending.len(), Ordering::Relaxed);
        }
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        if self.pending_count.load(Ordering::Relaxed) > 0
            && let Ok(mut pending) = self.pending.lock()
        {
            let entries = pending.remove(&span.span_context.span_id());
            self.pending_count.store(pending.len(), Ordering::Relaxed);
            drop(pending);
            for entry in entries.into_iter().flatten() {
                if !span.attributes.iter().any(|own| own.key == entry.key) {
                    span.attributes.push(entry);
                }
            }
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

#[cfg(test)]
mod tests {
    use opentelemetry::baggage::BaggageExt;
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SimpleSpanProcessor};

    use super::*;

    fn context(entries: &[(&str, &str)]) -> Context {
        Context::new().with_baggage(
            entries
                .iter()
                .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string())),
        )
    }

    /// The keys of the entries of `cx` that [`capped_entries`] keeps within these caps.
    fn kept_keys(cx: &Context, max_entries: usize, max_bytes: usize) -> Vec<String> {
        let limits = BaggageLimits {
            max_entries,
            max_bytes,
        };
        capped_entries(cx, limits)
            .iter()
            .map(|kv| kv.key.to_string())
            .collect()
    }

    #[test]
    fn only_ml_entries_not_owned_by_the_gateway_within_the_entry_cap_are_kept_in_key_order() {
        let cx = context(&[
            ("ml.c", "3"),
            ("other", "x"),
            ("ml.a", "1"),
            ("ml.data_id", "spoofed"),
            ("ml.b", "2"),
        ]);
        let kept = kept_keys(&cx, 2, 1024);
        assert_eq!(kept, ["ml.a", "ml.b"]);
    }

    #[test]
    fn every_name_the_gateway_sets_is_owned_and_client_tags_are_not() {
        for owned in [
            "ml.data_id",
            "ml.run_id",
            "ml.model.name",
            "ml.model.version",
            "ml.cache.result",
            "ml.cache.directive",
            "ml.batch.size",
            "ml.batch.failed",
            "ml.link.reason",
        ] {
            assert!(is_owned(owned), "{owned}");
        }
        for client in ["ml.experiment", "ml.data_id_hint", "ml.cachet", "ml.runner"] {
            assert!(!is_owned(client), "{client}");
        }
    }

    #[test]
    fn entries_past_the_byte_cap_are_left_out() {
        let cx = context(&[("ml.a", "1"), ("ml.big", &"x".repeat(100)), ("ml.c", "3")]);
        let kept = kept_keys(&cx, 16, 20);
        assert_eq!(kept, ["ml.a", "ml.c"]);
    }

    #[test]
    fn an_attribute_the_span_sets_itself_wins_over_baggage_of_the_same_key() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BaggageAttributes::new(
                SimpleSpanProcessor::new(exporter.clone()),
                BaggageLimits::default(),
            ))
            .build();
        let cx = context(&[("ml.tag", "from-baggage"), ("ml.experiment", "e1")]);

        let mut span = provider.tracer("test").start_with_context("batch", &cx);
        span.set_attribute(KeyValue::new("ml.tag", 3_i64));
        span.end();

        let spans = exporter.get_finished_spans().unwrap();
        let attributes: Vec<(String, String)> = spans[0]
            .attributes
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        assert_eq!(
            attributes,
            [
                ("ml.tag".to_owned(), "3".to_owned()),
                ("ml.experiment".to_owned(), "e1".to_owned())
            ]
        );
    }
}
