//! The layer stack of the API routes, declared in one function: the HTTP server span
//! (with W3C context extracted and `traceresponse` set), panic catching, load shedding
//! over a global in-flight cap, the total request deadline, and the body size limit.

use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tracing::{Instrument, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::configuration::ServerSettings;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Wraps `router` in the API layer stack; every limit comes from `settings`.
pub fn apply<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    settings: &ServerSettings,
    metrics: Metrics,
) -> Router<S> {
    router
        // Caps the memory one request can take; a predict body is a few dozen bytes.
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(
            ServiceBuilder::new()
                // Outermost, so every answer below (also shed and timed-out ones) is in the span.
                .layer(from_fn_with_state(metrics, server_span))
                .layer(CatchPanicLayer::custom(|_panic| {
                    ApiError::Internal("handler panicked".into()).into_response()
                }))
                .layer(HandleErrorLayer::new(layer_error))
                // Past the in-flight cap, answer 503 at once rather than queue without bound.
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(settings.max_in_flight))
                // The total deadline of a request, whatever its dependencies do.
                .timeout(settings.request_timeout()),
        )
}

/// Maps the errors of the tower layers (shed, timed out) to API errors.
async fn layer_error(error: BoxError) -> Response {
    if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Overloaded.into_response()
    } else if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::DeadlineExceeded.into_response()
    } else {
        ApiError::Internal(error.to_string()).into_response()
    }
}

/// The HTTP server span of one request, named `{method} {route}` with the attributes of
/// the semantic conventions, parented on the caller's `traceparent` (and carrying its
/// baggage); records the duration and in-flight metrics and sets `traceresponse`.
async fn server_span(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    let span = tracing::info_span!(
        target: "gateway::http",
        "http_request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = Empty,
        http.response.status_code = Empty,
        url.path = request.uri().path(),
        url.scheme = "http",
        network.protocol.version = ?request.version(),
        user_agent.original = Empty,
        error.type = Empty,
    );
    if let Some(route) = &route {
        span.record("http.route", route.as_str());
    }
    if let Some(agent) = request.headers().get(axum::http::header::USER_AGENT)
        && let Ok(agent) = agent.to_str()
    {
        span.record("user_agent.original", agent);
    }
    // Before the span is first entered, or the parent cannot be set any more.
    let _ = span.set_parent(parent);

    let mut attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("url.scheme", "http"),
    ];
    let active = ActiveRequest::start(&metrics, attributes.clone());
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed: Duration = started.elapsed();
    drop(active);

    let status = response.status().as_u16();
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.to_string());
    }
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    if span_context.is_valid() {
        let value = format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        );
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert("traceresponse", value);
        }
    }
    if let Some(route) = route {
        attributes.push(KeyValue::new("http.route", route));
    }
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    metrics
        .server_duration
        .record(elapsed.as_secs_f64(), &attributes);
    response
}

/// Counts a request in `http.server.active_requests` until dropped (also when the
/// client goes away mid-request and the future is dropped).
struct ActiveRequest<'a> {
    metrics: &'a Metrics,
    attributes: Vec<KeyValue>,
}

impl<'a> ActiveRequest<'a> {
    fn start(metrics: &'a Metrics, attributes: Vec<KeyValue>) -> Self {
        metrics.server_active.add(1, &attributes);
        Self {
            metrics,
            attributes,
        }
    }
}

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.metrics.server_active.add(-1, &self.attributes);
    }
}
