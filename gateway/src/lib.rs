//! The inference gateway: serves predictions from the prediction store, or
//! computes them with the model service, stores them and returns them, with
//! one W3C trace across every hop.
//!
//! # Layout
//!
//! Data flows one way: `routes` (HTTP only) -> [`prediction_service`] (the
//! cache-aside logic, no HTTP types) -> [`store`] and [`model_client`].
//!
//! - [`configuration`]: typed settings (durations, URLs) checked at load, documented defaults,
//!   `GATEWAY__` env overrides.
//! - [`telemetry`]: tracer, meter and logger providers, propagators; the flush guard; and
//!   every trace helper: W3C extraction and injection (`telemetry/w3c.rs`,
//!   `telemetry/trace_context.rs`: `traceparent`/`traceresponse`, store headers without
//!   baggage, the current trace id), links to the computing trace and unsampled
//!   background spans (`telemetry/spans.rs`), baggage caps, plain log records.
//! - [`startup`]: [`startup::Application`] binds, builds the router, serves until shut down.
//! - [`server`]: the connections under the router: cap, header-read and idle timeouts,
//!   staged shutdown, JSON answers to unparsable request heads.
//! - [`serving_threads`]: the threads that serve connections, each with its own
//!   single-threaded runtime and accept loop; background work stays on the main runtime.
//! - [`thread_client`]: an HTTP client per thread (store and model service), so a
//!   connection is driven on the thread that uses it.
//! - [`middleware`]: the layer stack (server span, load shedding, timeout, body limit).
//! - [`routes`]: one file per endpoint group.
//! - [`domain`]: validated request types ([`domain::DataId`], the `Cache-Control` request
//!   directives), prediction types and the `Cache-Status` value.
//! - [`prediction_service`]: the cache-aside path (`mod.rs`: predict, batch, stored), with
//!   request coalescing (`coalescing.rs`), its cross-replica lease protocol (`leases.rs`),
//!   the live model version (`live_model.rs`) and readiness (`readiness.rs`) one file each.
//! - [`store`]: the [`store::PredictionStore`] trait (predictions and computation leases),
//!   Elasticsearch and in-memory implementations, the Elasticsearch lease requests in
//!   `store/leases.rs`; the index mapping is read from
//!   `deploy/elasticsearch/ml-predictions.index-template.json`, its one source.
//! - [`store::node_pool`]: which store node to ask next (round robin over live nodes) and
//!   the dead-node bookkeeping (growing back-off); `store/elasticsearch.rs` retries a
//!   request safe to repeat on another node.
//! - [`store::write_behind`]: the bounded queue of writes the store could not take, each
//!   retried on its own schedule, given up (counted, logged) when permanent or out of attempts.
//! - [`model_client`]: the HTTP client of the model service.
//! - [`model_client::circuit_breaker`]: fails model calls fast while the model service is down.
//! - [`purge`]: `gateway purge --keep N`, deleting the predictions of runs no longer kept.
//! - [`error`]: the one mapping from errors to HTTP status and JSON error body.
//! - [`metrics`]: the instruments, named by the semantic conventions.

pub mod configuration;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod middleware;
pub mod model_client;
pub mod prediction_service;
pub mod purge;
pub mod routes;
pub mod server;
pub mod serving_threads;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod thread_client;
