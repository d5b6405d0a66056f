//! Telemetry set-up, in one place, with the guard that flushes it on shutdown.

mod baggage;
mod logs;
mod spans;
mod trace_context;
mod w3c;

use std::time::Duration;

use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracerProvider,
};
use opentelemetry_semantic_conventions::resource::{
    SERVICE_INSTANCE_ID, SERVICE_NAME as SERVICE_NAME_KEY, SERVICE_VERSION,
};
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

pub use baggage::BaggageLimits;
pub use spans::{link_to_computing_trace, untraced_span};
pub use trace_context::{current_trace_id, inject_trace_context, traceparent};
pub use w3c::W3cExtractor;

use crate::configuration::LogFormat;
use baggage::BaggageAttributes;
use logs::PlainLogRecords;

/// The default `service.name`, used when neither `OTEL_SERVICE_NAME` nor
/// `OTEL_RESOURCE_ATTRIBUTES` names the service.
pub const SERVICE_NAME: &str = "inference-gateway";

/// The variable capping the baggage entries copied onto one span.
const BAGGAGE_MAX_ENTRIES: &str = "GATEWAY__TELEMETRY__BAGGAGE_MAX_ENTRIES";
/// The variable capping the baggage bytes copied onto one span.
const BAGGAGE_MAX_BYTES: &str = "GATEWAY__TELEMETRY__BAGGAGE_MAX_BYTES";

/// Crates whose own logs must not go back into OTLP: the exporter's transport would
/// log about exporting its own logs (opentelemetry-rust #2877).
const TRANSPORT_TARGETS: [&str; 9] = [
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "reqwest",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
];

/// Keeps the providers alive; [`TelemetryGuard::shutdown`] flushes and stops them.
pub struct TelemetryGuard {
    tracer: SdkTracerProvider,
    meter: Option<SdkMeterProvider>,
    logger: Option<SdkLoggerProvider>,
}

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An OTLP exporter could not be built from the `OTEL_*` variables.
    #[error("cannot build the OTLP {signal} exporter")]
    Exporter {
        /// traces, metrics or logs.
        signal: &'static str,
        /// Why.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global subscriber was already installed.
    #[error("cannot install the tracing subscriber: {0}")]
    Subscriber(String),
    /// A `GATEWAY__TELEMETRY__` variable does not hold a count.
    #[error("{name}={value:?} is not a count")]
    InvalidLimit {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
}

/// Which signals leave the process, from `OTEL_SDK_DISABLED` and `OTEL_*_EXPORTER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exports {
    /// Spans are exported.
    pub traces: bool,
    /// Metrics are exported.
    pub metrics: bool,
    /// Logs are exported.
    pub logs: bool,
}

impl Exports {
    /// Reads the variables through `var` (the environment, or a test's table).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
        let disabled =
            var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let enabled = |name: &str| match var(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => true,
            Some(v) if v.is_empty() || v == "otlp" => true,
            Some(v) if v == "none" => false,
            Some(other) => {
                eprintln!(
                    "{name}={other} is not supported by the gateway (otlp or none); using none"
                );
                false
            }
        };
        Self {
            traces: !disabled && enabled("OTEL_TRACES_EXPORTER"),
            metrics: !disabled && enabled("OTEL_METRICS_EXPORTER"),
            logs: !disabled && enabled("OTEL_LOGS_EXPORTER"),
        }
    }
}

/// Sets up propagators, providers and the global subscriber. Call once, from `main`,
/// inside the Tokio runtime (the gRPC exporters are built there).
///
/// What it sets up: tracer, meter and logger providers exporting OTLP over
/// gRPC as the standard `OTEL_*` variables say, W3C propagators, the tracing subscriber,
/// and the guard that flushes everything on shutdown.
///
/// Honoured here because the SDK does not read them: `OTEL_SDK_DISABLED` and
/// `OTEL_{TRACES,METRICS,LOGS}_EXPORTER` (`otlp` or `none`). With telemetry disabled,
/// spans are still created (so responses carry trace ids) but nothing is exported.
///
/// One default differs from the SDK's: metrics are exported with delta temporality unless
/// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` says otherwise, as Elastic's EDOT
/// SDKs (and so the model service) do, because the collector's elasticsearch exporter
/// drops cumulative histograms. Set but empty counts as unset, as for every `OTEL_*`
/// variable.
///
/// Baggage copied onto spans is capped by `GATEWAY__TELEMETRY__BAGGAGE_MAX_ENTRIES`
/// (default 16) and `GATEWAY__TELEMETRY__BAGGAGE_MAX_BYTES` (default 1024), read here
/// with the `OTEL_*` variables because they shape telemetry only.
pub fn init(log_format: LogFormat) -> Result<TelemetryGuard, TelemetryError> {
    let var = |name: &str| std::env::var(name).ok();
    let exports = Exports::from_env(var);
    let limits = baggage_limits(var)?;
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
        && protocol.trim() != "grpc"
    {
        eprintln!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: the gateway exports OTLP over gRPC only"
        );
    }
    set_propagator();
    let resource = resource();

    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    if exports.traces {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(exporter_error("traces"))?;
        // Baggage becomes attributes only of spans that leave the process.
        tracer_builder = tracer_builder.with_span_processor(BaggageAttributes::new(
            BatchSpanProcessor::builder(exporter).build(),
            limits,
        ));
    }
    let tracer = tracer_builder.build();
    global::set_tracer_provider(tracer.clone());

    let meter = if exports.metrics {
        let preference = var(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE);
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_temporality(temporality(preference.as_deref()))
            .build()
            .map_err(exporter_error("metrics"))?;
        let provider = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(PeriodicReader::builder(exporter).build())
            .build();
        global::set_meter_provider(provider.clone());
        Some(provider)
    } else {
        None
    };

    let logger = if exports.logs {
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .build()
            .map_err(exporter_error("logs"))?;
        Some(
            SdkLoggerProvider::builder()
                .with_resource(resource)
                // Before the exporting processor: processors see a record in this order.
                .with_log_processor(PlainLogRecords)
                .with_batch_exporter(exporter)
                .build(),
        )
    } else {
        None
    };

    let bridge = logger.as_ref().map(|provider| {
        let mut targets = Targets::new().with_default(LevelFilter::INFO);
        for target in TRANSPORT_TARGETS {
            targets = targets.with_target(target, LevelFilter::OFF);
        }
        OpenTelemetryTracingBridge::new(provider).with_filter(targets)
    });
    install_subscriber(&tracer, bridge, log_format)?;
    Ok(TelemetryGuard {
        tracer,
        meter,
        logger,
    })
}

/// The error of `signal`'s OTLP exporter failing to build.
fn exporter_error(
    signal: &'static str,
) -> impl FnOnce(opentelemetry_otlp::ExporterBuildError) -> TelemetryError {
    move |source| TelemetryError::Exporter { signal, source }
}

/// Telemetry for in-process tests: propagators and spans with real ids, nothing exported.
/// Safe to call from every test; only the first call installs anything.
pub fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        set_propagator();
        let tracer = SdkTracerProvider::builder().build();
        global::set_tracer_provider(tracer.clone());
        let otel = otel_layer(&tracer);
        let console = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
            );
        let _ = tracing_subscriber::registry()
            .with(otel)
            .with(console)
            .try_init();
    });
}

impl TelemetryGuard {
    /// Flushes and shuts down every provider. Blocks (and retries against an unreachable
    /// collector): call it off the async runtime, e.g. in `spawn_blocking`.
    pub fn shutdown(self) {
        let timeout = Duration::from_secs(5);
        if let Err(error) = self.tracer.shutdown_with_timeout(timeout) {
            eprintln!("telemetry: tracer shutdown: {error}");
        }
        if let Some(meter) = self.meter
            && let Err(error) = meter.shutdown()
        {
            eprintln!("telemetry: meter shutdown: {error}");
        }
        if let Some(logger) = self.logger
            && let Err(error) = logger.shutdown_with_timeout(timeout)
        {
            eprintln!("telemetry: logger shutdown: {error}");
        }
    }
}

/// W3C trace context and baggage, in and out. The SDK does not read
/// `OTEL_PROPAGATORS`; this is the set the telemetry contract names.
fn set_propagator() {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
}

/// The context a request carries in its W3C headers (repeated and malformed fields
/// handled as the specifications say: [`W3cExtractor`]).
pub fn extract_context(headers: &HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&W3cExtractor::new(headers)))
}

/// Writes `cx` into outgoing request headers, without the empty `tracestate:` field the
/// SDK writes when there is no trace state (W3C: vendors SHOULD avoid sending it).
pub fn inject_context(cx: &Context, headers: &mut HeaderMap) {
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(cx, &mut opentelemetry_http::HeaderInjector(headers))
    });
    if headers
        .get("tracestate")
        .is_some_and(|value| value.as_bytes().trim_ascii().is_empty())
    {
        headers.remove("tracestate");
    }
}

/// The metric temporality `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` asks for:
/// delta when unset or empty (see [`init`]), or when it names no temporality.
fn temporality(preference: Option<&str>) -> Temporality {
    match preference.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("" | "delta") => Temporality::Delta,
        Some("cumulative") => Temporality::Cumulative,
        Some("lowmemory") => Temporality::LowMemory,
        Some(other) => {
            eprintln!(
                "{OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE}={other} is not a temporality \
                 (delta, cumulative or lowmemory); using delta"
            );
            Temporality::Delta
        }
    }
}

/// The baggage caps from `GATEWAY__TELEMETRY__BAGGAGE_MAX_{ENTRIES,BYTES}` (empty: default).
fn baggage_limits(var: impl Fn(&str) -> Option<String>) -> Result<BaggageLimits, TelemetryError> {
    let defaults = BaggageLimits::default();
    let read = |name: &'static str, default: usize| match var(name) {
        Some(value) if !value.trim().is_empty() => value
            .trim()
            .parse()
            .map_err(|_| TelemetryError::InvalidLimit { name, value }),
        _ => Ok(default),
    };
    Ok(BaggageLimits {
        max_entries: read(BAGGAGE_MAX_ENTRIES, defaults.max_entries)?,
        max_bytes: read(BAGGAGE_MAX_BYTES, defaults.max_bytes)?,
    })
}

/// The resource: built-in `service.name`, `service.version` (the crate's) and a random
/// `service.instance.id`, each overridden by `OTEL_RESOURCE_ATTRIBUTES`, and
/// `OTEL_SERVICE_NAME` over all, as the specification orders them (the SDK's own builder
/// lets code-set attributes win over the variables instead).
fn resource() -> Resource {
    let mut builder = Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes([
            KeyValue::new(SERVICE_NAME_KEY, SERVICE_NAME),
            KeyValue::new(SERVICE_VERSION, env!("CARGO_PKG_VERSION")),
            KeyValue::new(SERVICE_INSTANCE_ID, instance_id()),
        ])
        .with_detector(Box::new(EnvResourceDetector::new()));
    if let Some(name) = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
    {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

/// A random UUID (version 4), as the conventions recommend for `service.instance.id`
/// when nothing identifies the instance more stably.
fn instance_id() -> String {
    let mut bytes = u128::from_be_bytes(RandomIdGenerator::default().new_trace_id().to_bytes());
    bytes = (bytes & !(0xf << 76)) | (0x4 << 76);
    bytes = (bytes & !(0x3 << 62)) | (0x2 << 62);
    let hex = format!("{bytes:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn install_subscriber(
    tracer: &SdkTracerProvider,
    bridge: Option<impl Layer<Registry> + Send + Sync>,
    log_format: LogFormat,
) -> Result<(), TelemetryError> {
    // Only the gateway's own spans become OpenTelemetry spans; the transport crates'
    // internal spans would be noise in every trace.
    let otel = otel_layer(tracer);
    // RUST_LOG filters the console only: a global filter would also drop the spans
    // that feed OpenTelemetry.
    let console_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let console = match log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(bridge)
        .with(otel)
        .with(console.with_filter(console_filter))
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))
}

/// The layer that turns the gateway's tracing spans into OpenTelemetry spans, without
/// the layer's own extras (thread, target, busy/idle times) that no convention names.
/// Spans only: `tracing` events are log records (the bridge), and as span events too
/// they would be stored twice.
fn otel_layer<S>(tracer: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("inference-gateway"))
        .with_threads(false)
        .with_location(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(
            Targets::new()
                .with_target("gateway", LevelFilter::TRACE)
                .and(filter_fn(|metadata| metadata.is_span())),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exports(pairs: &[(&str, &str)]) -> Exports {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Exports::from_env(|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn every_signal_is_exported_by_default() {
        assert_eq!(
            exports(&[]),
            Exports {
                traces: true,
                metrics: true,
                logs: true
            }
        );
    }

    #[test]
    fn sdk_disabled_turns_every_export_off() {
        assert_eq!(
            exports(&[("OTEL_SDK_DISABLED", "true")]),
            Exports {
                traces: false,
                metrics: false,
                logs: false
            }
        );
    }

    #[test]
    fn an_empty_temporality_preference_means_unset_which_is_delta() {
        assert_eq!(temporality(None), Temporality::Delta);
        assert_eq!(temporality(Some("")), Temporality::Delta);
        assert_eq!(temporality(Some(" ")), Temporality::Delta);
        assert_eq!(temporality(Some("Cumulative")), Temporality::Cumulative);
        assert_eq!(temporality(Some("lowmemory")), Temporality::LowMemory);
    }

    #[test]
    fn baggage_limits_default_and_reject_what_is_not_a_count() {
        assert_eq!(baggage_limits(|_| None).unwrap(), BaggageLimits::default());
        let limits = baggage_limits(|name| (name == BAGGAGE_MAX_ENTRIES).then(|| "3".into()));
        assert_eq!(limits.unwrap().max_entries, 3);
        assert!(baggage_limits(|_| Some("many".into())).is_err());
    }

    #[test]
    fn the_instance_id_is_a_version_4_uuid() {
        let id = instance_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, instance_id());
    }

    #[test]
    fn an_empty_tracestate_is_not_sent() {
        init_for_tests();
        let mut headers = HeaderMap::new();
        let cx = extract_context(&HeaderMap::from_iter([(
            axum::http::header::HeaderName::from_static("traceparent"),
            axum::http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        )]));
        inject_context(&cx, &mut headers);
        assert!(headers.contains_key("traceparent"));
        assert!(!headers.contains_key("tracestate"));
    }

    #[test]
    fn an_exporter_set_to_none_turns_that_signal_off_only() {
        assert_eq!(
            exports(&[("OTEL_TRACES_EXPORTER", "none")]),
            Exports {
                traces: false,
                metrics: true,
                logs: true
            }
        );
    }
}
