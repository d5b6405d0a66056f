//! The layer stack of the API routes, declared in one function.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::uri::Authority;
use axum::http::{Method, Version, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use opentelemetry::{KeyValue, Value};
use opentelemetry_semantic_conventions::attribute::{
    CLIENT_ADDRESS, ERROR_TYPE, HTTP_REQUEST_METHOD, HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, NETWORK_PEER_ADDRESS, NETWORK_PEER_PORT,
    NETWORK_PROTOCOL_VERSION, SERVER_ADDRESS, SERVER_PORT, URL_PATH, URL_QUERY, URL_SCHEME,
    USER_AGENT_ORIGINAL,
};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;
use tracing::field::{self, Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::configuration::ServerSettings;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::telemetry;

/// Wraps `router` in the API layer stack; every limit comes from `settings`.
///
/// The layer stack of the API routes, declared in one function: the HTTP server span
/// (with W3C context extracted and `traceresponse` set), panic catching, load shedding
/// over a global in-flight cap, the total request deadline, and the body size limit.
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
                .layer(from_fn_with_state(
                    ServerTelemetry {
                        metrics,
                        known_methods: Arc::new(KnownMethods::from_env()),
                    },
                    server_span,
                ))
                .layer(CatchPanicLayer::custom(|_panic| {
                    ApiError::Internal("handler panicked".into()).into_response()
                }))
                .layer(HandleErrorLayer::new(layer_error))
                // Past the in-flight cap, answer 503 at once rather than queue without bound.
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(settings.max_in_flight))
                // The total deadline of a request, whatever its dependencies do.
                .timeout(settings.request_timeout),
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

/// What the server span middleware shares between requests.
#[derive(Clone)]
struct ServerTelemetry {
    metrics: Metrics,
    known_methods: Arc<KnownMethods>,
}

/// The request methods reported as they are; any other is `_OTHER`, so a client cannot
/// mint span names and metric series (semantic conventions, `http.request.method`).
struct KnownMethods(Vec<String>);

impl KnownMethods {
    /// The methods of RFC 9110, PATCH (RFC 5789) and QUERY, the conventions' default set.
    const DEFAULT: [&str; 10] = [
        "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE",
    ];

    /// `OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` (a comma-separated, case-sensitive full
    /// override, as the conventions require one) or the default set.
    fn from_env() -> Self {
        Self::parse(std::env::var("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS").ok())
    }

    fn parse(value: Option<String>) -> Self {
        match value.filter(|v| !v.trim().is_empty()) {
            Some(list) => Self(
                list.split(',')
                    .map(|m| m.trim().to_owned())
                    .filter(|m| !m.is_empty())
                    .collect(),
            ),
            None => Self(Self::DEFAULT.map(str::to_owned).to_vec()),
        }
    }

    /// `http.request.method` of `method`, and `http.request.method_original` when they differ.
    fn normalize(&self, method: &Method) -> (Cow<'static, str>, Option<String>) {
        let original = method.as_str();
        if self.0.iter().any(|known| known == original) {
            let name = static_method(method)
                .map_or_else(|| Cow::Owned(original.to_owned()), Cow::Borrowed);
            (name, None)
        } else {
            (Cow::Borrowed(OTHER_METHOD), Some(original.to_owned()))
        }
    }
}

/// `http.request.method` of a method outside the known set.
const OTHER_METHOD: &str = "_OTHER";

/// A method's name without allocating, for the well-known methods.
fn static_method(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::CONNECT => "CONNECT",
        Method::DELETE => "DELETE",
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::TRACE => "TRACE",
        _ if method.as_str() == "QUERY" => "QUERY",
        _ => return None,
    })
}

/// `network.protocol.version` as the conventions write it (`1.1`, `2`), not `HTTP/1.1`.
fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "unknown",
    }
}

/// Query parameters whose values the conventions say to redact in `url.query`: signed
/// URLs carry credentials in them.
const REDACTED_QUERY_KEYS: [&str; 4] = ["AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"];

/// `url.query` with the values of [`REDACTED_QUERY_KEYS`] replaced by `REDACTED`.
fn redacted_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if REDACTED_QUERY_KEYS.contains(&key) => format!("{key}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `server.address` and `server.port` from the request target's authority (HTTP/2) or
/// the `Host` header (HTTP/1.1); the port only when the client named one.
fn server_authority(request: &Request) -> Option<(String, Option<u16>)> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.clone(),
        None => request
            .headers()
            .get(header::HOST)?
            .to_str()
            .ok()?
            .parse::<Authority>()
            .ok()?,
    };
    Some((authority.host().to_owned(), authority.port_u16()))
}

/// The HTTP server span of one request, named `{method} {route}` with the attributes of
/// the semantic conventions, parented on the caller's `traceparent` (and carrying its
/// baggage); records the duration and in-flight metrics and sets `traceresponse`.
async fn server_span(
    State(telemetry): State<ServerTelemetry>,
    request: Request,
    next: Next,
) -> Response {
    let (method, method_original) = telemetry.known_methods.normalize(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    // An unknown method is not part of the name: `HTTP {route}`, as the conventions say.
    let verb = if method == OTHER_METHOD {
        "HTTP"
    } else {
        &method
    };
    let name = match &route {
        Some(route) => format!("{verb} {route}"),
        None => verb.to_owned(),
    };
    let version = protocol_version(request.version());
    let parent = telemetry::extract_context(request.headers());
    let query = request
        .uri()
        .query()
        .filter(|q| !q.is_empty())
        .map(redacted_query);
    let authority = server_authority(&request);
    // The peer is the client: the gateway trusts no forwarding header to say otherwise.
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let peer_address = peer.map(|peer| peer.ip());
    let server_port = authority
        .as_ref()
        .and_then(|(_, port)| *port)
        .map(i64::from);
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|agent| agent.to_str().ok());
    // The attributes are the span's fields, named by the conventions' constants: the
    // OpenTelemetry layer takes them in one pass when the span opens, where one
    // `set_attribute` per attribute looked the span up and locked it each time.
    //
    // Debug level: OpenTelemetry takes the gateway's spans at every level
    // (`telemetry::otel_layer`), while the console layer, at `info` by default, then does
    // not format this span's fields on every request for log lines a hit never writes.
    let span = tracing::debug_span!(
        target: "gateway::http",
        "http_request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        { HTTP_REQUEST_METHOD } = &*method,
        { HTTP_REQUEST_METHOD_ORIGINAL } = method_original.as_deref(),
        { HTTP_ROUTE } = route.as_deref(),
        { URL_PATH } = request.uri().path(),
        { URL_QUERY } = query.as_deref(),
        { URL_SCHEME } = "http",
        { NETWORK_PROTOCOL_VERSION } = version,
        { SERVER_ADDRESS } = authority.as_ref().map(|(host, _)| host.as_str()),
        { SERVER_PORT } = server_port,
        { CLIENT_ADDRESS } = peer_address.map(field::display),
        { NETWORK_PEER_ADDRESS } = peer_address.map(field::display),
        { NETWORK_PEER_PORT } = peer.map(|peer| i64::from(peer.port())),
        { USER_AGENT_ORIGINAL } = user_agent,
        { HTTP_RESPONSE_STATUS_CODE } = Empty,
        { ERROR_TYPE } = Empty,
    );
    // Before the span is first entered, or the parent cannot be set any more.
    let _ = span.set_parent(parent);

    let mut metric_attributes = vec![
        KeyValue::new(HTTP_REQUEST_METHOD, method),
        KeyValue::new(URL_SCHEME, "http"),
    ];
    let active = ActiveRequest::start(&telemetry.metrics, metric_attributes.clone());
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    drop(active);

    let status = i64::from(response.status().as_u16());
    span.record(HTTP_RESPONSE_STATUS_CODE, status);
    // Only 5xx are server errors; a 4xx is the client's (conventions, span status).
    let error_type = (status >= 500).then(|| Value::from(status.to_string()));
    if let Some(error_type) = &error_type {
        span.record("otel.status_code", "ERROR");
        span.record(ERROR_TYPE, error_type.as_str().as_ref());
    }
    if let Some(value) = telemetry::traceparent(&span.context()) {
        response.headers_mut().insert("traceresponse", value);
    }
    if let Some(route) = route {
        metric_attributes.push(KeyValue::new(HTTP_ROUTE, route));
    }
    metric_attributes.push(KeyValue::new(HTTP_RESPONSE_STATUS_CODE, status));
    metric_attributes.push(KeyValue::new(NETWORK_PROTOCOL_VERSION, version));
    if let Some(error_type) = error_type {
        metric_attributes.push(KeyValue::new(ERROR_TYPE, error_type));
    }
    telemetry
        .metrics
        .server_duration
        .record(elapsed.as_secs_f64(), &metric_attributes);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_differently_cased_methods_are_other_with_the_original_kept() {
        let known = KnownMethods::parse(None);
        let cases = [
            ("GET", "GET", None),
            ("PATCH", "PATCH", None),
            ("QUERY", "QUERY", None),
            ("ZZMETHOD1", "_OTHER", Some("ZZMETHOD1")),
            ("get", "_OTHER", Some("get")),
        ];
        for (method, name, original) in cases {
            let (normalized, kept) =
                known.normalize(&Method::from_bytes(method.as_bytes()).unwrap());
            assert_eq!(
                (&*normalized, kept.as_deref()),
                (name, original),
                "{method}"
            );
        }
    }

    #[test]
    fn the_known_methods_variable_is_a_full_override() {
        let known = KnownMethods::parse(Some("GET, PURGE".into()));
        assert_eq!(known.normalize(&Method::POST).0, "_OTHER");
        assert_eq!(known.normalize(&Method::GET).0, "GET");
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(known.normalize(&purge), (Cow::Borrowed("PURGE"), None));
    }

    #[test]
    fn protocol_versions_are_written_as_the_conventions_say() {
        assert_eq!(protocol_version(Version::HTTP_11), "1.1");
        assert_eq!(protocol_version(Version::HTTP_2), "2");
    }

    #[test]
    fn signed_url_parameters_are_redacted_in_the_query() {
        assert_eq!(
            redacted_query("a=1&sig=abc&Signature=x&b"),
            "a=1&sig=REDACTED&Signature=REDACTED&b"
        );
    }
}
