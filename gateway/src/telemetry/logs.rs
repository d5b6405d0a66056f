//! Makes the log records of `tracing` events plain OpenTelemetry log records.

use std::time::SystemTime;

use opentelemetry::InstrumentationScope;
use opentelemetry::logs::LogRecord as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogProcessor, SdkLogRecord};

/// The prefix of the names `tracing` gives events that were not named.
const GENERATED_NAME_PREFIX: &str = "event ";

/// A log processor placed before the exporting one.
///
/// Makes the log records of `tracing` events plain OpenTelemetry log records: no event
/// name, and a timestamp.
///
/// The tracing bridge names every record after the `tracing` event's metadata, which
/// for an event without an explicit name is `event <file>:<line>`; a log record with an
/// event name is an OpenTelemetry *event*, so every line would show as one. The bridge
/// also sets no `timestamp`, only the SDK's observed time.
#[derive(Debug, Default)]
pub struct PlainLogRecords;

impl LogProcessor for PlainLogRecords {
    fn emit(&self, record: &mut SdkLogRecord, _scope: &InstrumentationScope) {
        if record
            .event_name()
            .is_some_and(|name| name.starts_with(GENERATED_NAME_PREFIX))
        {
            // OTLP has no "absent" string: an empty name is an unset one on the wire.
            record.set_event_name("");
        }
        if record.timestamp().is_none() {
            record.set_timestamp(record.observed_timestamp().unwrap_or_else(SystemTime::now));
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn a_tracing_event_becomes_a_record_with_a_timestamp_and_no_event_name() {
        let exporter = InMemoryLogExporter::default();
        let provider = SdkLoggerProvider::builder()
            .with_log_processor(PlainLogRecords)
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry().with(
            opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(&provider),
        );

        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(answer = 42, "plain line");
            tracing::info!(name: "ml.prediction", "a named event keeps its name");
        });

        let logs = exporter.get_emitted_logs().unwrap();
        assert_eq!(logs.len(), 2);
        let plain = &logs[0].record;
        assert_eq!(plain.event_name(), Some(""));
        assert!(plain.timestamp().is_some());
        assert_eq!(logs[1].record.event_name(), Some("ml.prediction"));
    }
}
