//! `GET /openapi.json`: the OpenAPI 3 document, generated from the handlers' `#[utoipa::path]`
//! declarations, the types they exchange and the error answers each route declares.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Content, Header, OpenApi, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi as _};

use crate::error::{ApiError, ErrorBody};
use crate::model_client::ModelClientError;

/// The served document, generated once: it only changes with the code.
static DOCUMENT: LazyLock<OpenApi> = LazyLock::new(super::openapi_document);

/// Serves the OpenAPI document of every route of the router.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    summary = "This document",
    responses((status = 200, description = "The OpenAPI 3 document", body = Object)),
)]
pub async fn openapi() -> Json<&'static OpenApi> {
    Json(&DOCUMENT)
}

/// What the routes' own declarations do not say: the title, the shared error body, the
/// response headers every API answer carries and the fallback answers.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Inference gateway",
        description = "Cache-aside predictions: served from the prediction store for the live \
            model version, or computed by the model service, stored and returned. Every \
            response of the /v1 routes carries the W3C `traceresponse` header; JSON bodies \
            carry `trace_id`. A path no route serves answers 404 `not_found`, a method a \
            route does not accept 405 `method_not_allowed` (components `RouteNotFound`, \
            `MethodNotAllowed`)."
    ),
    components(schemas(ErrorBody)),
    modifiers(&Fallbacks)
)]
pub(super) struct ApiDoc;

/// The error answers of one route: the one declaration its `#[utoipa::path]` error
/// responses are generated from, and that the contract test holds against what each
/// error really answers.
pub trait DeclaredErrors {
    /// One instance of every error the route can answer with, the layer stack's included.
    fn errors() -> Vec<ApiError>;
}

/// Declares a route's error answers once: the [`DeclaredErrors`] impl of `$errors` (the
/// shared `groups` then the route's `own` errors) and the `utoipa::IntoResponses` impl its
/// `#[utoipa::path]` names. A macro because a blanket `IntoResponses` impl over
/// `DeclaredErrors` is not allowed: `IntoResponses` is utoipa's trait.
macro_rules! declare_errors {
    ($errors:ty, groups: [$($group:expr),* $(,)?], own: [$($own:expr),* $(,)?] $(,)?) => {
        impl $crate::routes::openapi::DeclaredErrors for $errors {
            fn errors() -> Vec<$crate::error::ApiError> {
                [$($group,)* vec![$($own),*]].into_iter().flatten().collect()
            }
        }

        impl utoipa::IntoResponses for $errors {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::Response>,
            > {
                $crate::routes::openapi::error_responses(
                    &<$errors as $crate::routes::openapi::DeclaredErrors>::errors(),
                )
            }
        }
    };
}
pub(super) use declare_errors;

/// What the layer stack answers on every API route: shed (503), past the request deadline
/// (504), a caught panic (500).
pub fn layer_errors() -> Vec<ApiError> {
    vec![
        ApiError::Overloaded,
        ApiError::DeadlineExceeded,
        ApiError::Internal("handler panicked".into()),
    ]
}

/// What the JSON body extractor answers on the routes that take a body.
pub fn body_errors() -> Vec<ApiError> {
    vec![
        ApiError::MalformedBody("expected value at line 1 column 1".into()),
        ApiError::UnsupportedMediaType,
        ApiError::PayloadTooLarge,
        ApiError::InvalidBody("missing field `data_id`".into()),
    ]
}

/// What a route that needs the model service answers when it fails: the live model is
/// read from it before any store lookup.
pub(super) fn model_errors() -> Vec<ApiError> {
    vec![
        ApiError::Model(ModelClientError::Unreachable(transport_error())),
        ApiError::Model(ModelClientError::Timeout(transport_error())),
        ApiError::Model(ModelClientError::UnexpectedStatus {
            status: 500,
            body: String::new(),
        }),
    ]
}

/// A transport error to build the documented errors that wrap one (only their status,
/// code and headers go into the document). reqwest errors have no public constructor, so
/// a request that cannot be built stands in.
pub(super) fn transport_error() -> Arc<reqwest::Error> {
    let error = reqwest::Client::new()
        .get("http://documented.invalid:no-port/")
        .build()
        .expect_err("a URL with a non-numeric port cannot be built");
    Arc::new(error)
}

/// What the router answers outside every route: no such path, no such method.
pub fn fallback_errors() -> Vec<ApiError> {
    vec![ApiError::RouteNotFound, ApiError::MethodNotAllowed]
}

/// The error codes whose answers carry `Cache-Status: inference-gateway; detail=not-cached`:
/// the cache answered without the model or a stored prediction.
const NOT_CACHED_CODES: [&str; 2] = ["not_cached", "prediction_not_found"];

/// The responses of `errors`, one per status: the JSON error body, each code with the
/// message a client sees, and the headers those answers carry.
pub(super) fn error_responses(errors: &[ApiError]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<&ApiError>> = BTreeMap::new();
    for error in errors {
        by_status
            .entry(error.documented_parts().0.as_u16())
            .or_default()
            .push(error);
    }
    by_status
        .into_iter()
        .map(|(status, errors)| {
            let codes: Vec<String> = errors
                .iter()
                .map(|error| format!("`{}`: {}", error.code(), error.message()))
                .collect();
            let mut response = ResponseBuilder::new()
                .description(codes.join("; "))
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("Error"))),
                );
            if errors.iter().any(|error| error.documented_parts().2) {
                response = response.header("Retry-After", retry_after_header());
            }
            if errors
                .iter()
                .any(|error| NOT_CACHED_CODES.contains(&error.code()))
            {
                response = response.header("Cache-Status", cache_status_header());
            }
            (status.to_string(), response.build().into())
        })
        .collect()
}

/// The `Cache-Control` request header of the API routes.
fn cache_control_parameter() -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name("Cache-Control")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "RFC 9111 request directives (section 5.2.1), case-insensitive, in one or several \
             field lines; unknown directives are ignored. `no-cache`: no stored prediction \
             answers; compute, store, answer `miss` (`Cache-Status: inference-gateway; \
             fwd=request; stored`). `no-store`: the prediction computed for this request is \
             not written (a stored one may still answer). `max-age=N`: a stored prediction \
             older than N seconds is a miss (`fwd=stale`); repeated, the smallest wins; \
             invalid counts as 0. `only-if-cached`: answer from the store or 504 \
             `not_cached`, never call the model; for a batch, ids not stored are listed in \
             `errors` with `not_cached`, 504 only when none is stored. On \
             `GET /v1/predictions/{data_id}` (only-if-cached by nature) `max-age` and \
             `no-cache` apply.",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .example(Some(serde_json::json!("no-cache, max-age=3600")))
        .build()
}

fn string_header(description: &str) -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(Type::String));
    header.description = Some(description.to_owned());
    header
}

fn retry_after_header() -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(Type::Integer));
    header.description = Some("Seconds to wait before retrying".to_owned());
    header
}

fn traceresponse_header() -> Header {
    string_header("W3C trace response: 00-<trace id>-<span id>-<flags>")
}

fn cache_status_header() -> Header {
    string_header(
        "RFC 9211 cache status of the gateway (an RFC 8941 list with one member, \
         `inference-gateway`, and parameters). `hit`: answered from the store. `fwd=miss` \
         (nothing usable stored, or the store could not be read: then also `detail=bypass`), \
         `fwd=request` (`no-cache`), `fwd=stale` (older than `max-age` or the configured \
         maximum age): the model computed it; `stored` (`?1`, written) or `stored=?0` \
         (`no-store`, or the write was queued for a retry); `collapsed`: the request waited \
         for another request's model call. `ttl`: remaining freshness lifetime in seconds, \
         only when the gateway has a maximum age for stored predictions. \
         `detail=not-cached`: nothing usable stored and the model may not be asked (504 \
         `not_cached`, or 404 on GET /v1/predictions). A batch has one member: `hit` when it \
         made no model call, else the reason of its one model call (`request` under \
         no-cache, `stale` when every id sent had a stale prediction, else `miss`), `stored` \
         when the bulk write was acknowledged, `ttl` the least of its items'. Example: \
         `inference-gateway; fwd=miss; stored`.",
    )
}

/// Adds the headers every API route (`/v1/...`) shares, written once here rather than in
/// each `#[utoipa::path]`: the `Cache-Control` request header all of them read,
/// `traceresponse` (set by the layer stack) on every answer, `Cache-Status` on every 200.
struct ApiHeaders;

impl Modify for ApiHeaders {
    fn modify(&self, openapi: &mut OpenApi) {
        for (_, item) in openapi
            .paths
            .paths
            .iter_mut()
            .filter(|(path, _)| path.starts_with("/v1/"))
        {
            for operation in operations(item) {
                operation
                    .parameters
                    .get_or_insert_with(Vec::new)
                    .push(cache_control_parameter());
                for (status, response) in operation.responses.responses.iter_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    response
                        .headers
                        .insert("traceresponse".to_owned(), traceresponse_header());
                    if status == "200" {
                        response
                            .headers
                            .insert("Cache-Status".to_owned(), cache_status_header());
                    }
                }
            }
        }
    }
}

/// The operations of a path item (the router serves GET and POST only).
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [item.get.as_mut(), item.post.as_mut()]
        .into_iter()
        .flatten()
}

/// The answers of the router's fallbacks, as reusable responses (`RouteNotFound`,
/// `MethodNotAllowed`): they belong to no operation.
struct Fallbacks;

impl Modify for Fallbacks {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (error, name) in fallback_errors()
            .iter()
            .zip(["RouteNotFound", "MethodNotAllowed"])
        {
            if let Some(response) = error_responses(std::slice::from_ref(error))
                .into_values()
                .next()
            {
                components.responses.insert(name.to_owned(), response);
            }
        }
    }
}

/// The whole document: [`ApiDoc`] with the operations of `routes`.
pub(super) fn document(routes: OpenApi) -> OpenApi {
    let mut document = ApiDoc::openapi().merge_from(routes);
    // After the merge: `ApiDoc`'s own modifiers run before it has any operation.
    ApiHeaders.modify(&mut document);
    document
}
