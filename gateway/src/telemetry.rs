//! Telemetry set-up, in one place: tracer, meter and logger providers exporting OTLP over
//! gRPC as the standard `OTEL_*` variables say, W3C propagators, the tracing subscriber,
//! and the guard that flushes everything on shutdown.
//!
//! Honoured here because the SDK does not read them: `OTEL_SDK_DISABLED` and
//! `OTEL_{TRACES,METRICS,LOGS}_EXPORTER` (`otlp` or `none`). With telemetry disabled,
//! spans are still created (so responses carry trace ids) but nothing is exported.
//!
//! One default differs from the SDK's: metrics are exported with delta temporality unless
//! `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE` says otherwise, as Elastic's EDOT
//! SDKs (and so the model service) do, because the collector's elasticsearch exporter
//! drops cumulative histograms.

use std::time::Duration;

use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::{Span as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};
use opentelemetry_sdk::{Resource, trace};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::configuration::LogFormat;

/// The default `service.name`, used when neither `OTEL_SERVICE_NAME` nor
/// `OTEL_RESOURCE_ATTRIBUTES` names the service.
pub const SERVICE_NAME: &str = "inference-gateway";

/// `ml.*` attributes the gateway sets itself; baggage entries cannot overwrite them.
const OWN_ML_ATTRIBUTES: [&str; 5] = [
    "ml.data_id",
    "ml.model.name",
    "ml.model.version",
    "ml.run_id",
    "ml.cache.result",
];

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
pub fn init(log_format: LogFormat) -> Result<TelemetryGuard, TelemetryError> {
    let exports = Exports::from_env(|name| std::env::var(name).ok());
    if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
        && protocol.trim() != "grpc"
    {
        eprintln!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: the gateway exports OTLP over gRPC only"
        );
    }
    set_propagator();
    let resource = resource();

    let mut tracer_builder = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_span_processor(BaggageAttributes);
    if exports.traces {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|source| TelemetryError::Exporter {
                signal: "traces",
                source,
            })?;
        tracer_builder = tracer_builder.with_batch_exporter(exporter);
    }
    let tracer = tracer_builder.build();
    global::set_tracer_provider(tracer.clone());

    let meter = if exports.metrics {
        let mut builder = opentelemetry_otlp::MetricExporter::builder().with_tonic();
        if std::env::var_os(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE).is_none() {
            builder = builder.with_temporality(Temporality::Delta);
        }
        let exporter = builder.build().map_err(|source| TelemetryError::Exporter {
            signal: "metrics",
            source,
        })?;
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
            .map_err(|source| TelemetryError::Exporter {
                signal: "logs",
                source,
            })?;
        Some(
            SdkLoggerProvider::builder()
                .with_resource(resource)
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

/// Telemetry for in-process tests: propagators and spans with real ids, nothing exported.
/// Safe to call from every test; only the first call installs anything.
pub fn init_for_tests() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        set_propagator();
        let tracer = SdkTracerProvider::builder()
            .with_span_processor(BaggageAttributes)
            .build();
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

/// The resource from the `OTEL_*` resource variables, with `service.name` defaulting to
/// [`SERVICE_NAME`]. `OTEL_SERVICE_NAME` wins over `OTEL_RESOURCE_ATTRIBUTES` as the
/// specification says (the SDK does the opposite).
fn resource() -> Resource {
    let mut builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    let service_name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty());
    let named_in_attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|attributes| {
        attributes
            .split(',')
            .any(|kv| kv.trim().starts_with("service.name="))
    });
    match service_name {
        Some(name) => builder = builder.with_service_name(name),
        None if !named_in_attributes => builder = builder.with_service_name(SERVICE_NAME),
        None => {}
    }
    builder.build()
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
        .with_filter(Targets::new().with_target("gateway", LevelFilter::TRACE))
}

/// Copies `ml.*` baggage entries onto every span started in their context, so an
/// experiment tag set by a client shows on the gateway's spans as on the model service's.
#[derive(Debug)]
struct BaggageAttributes;

impl SpanProcessor for BaggageAttributes {
    fn on_start(&self, span: &mut trace::Span, cx: &Context) {
        for (key, (value, _)) in cx.baggage().iter() {
            let name = key.as_str();
            if name.starts_with("ml.") && !OWN_ML_ATTRIBUTES.contains(&name) {
                span.set_attribute(KeyValue::new(key.clone(), value.to_string()));
            }
        }
    }

    fn on_end(&self, _span: SpanData) {}

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
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
