"""The one place that maps errors to HTTP statuses and the JSON error body; 5xx bodies stay opaque."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_service.api.admin_auth import AdminDisabledError, AdminUnauthorizedError
from model_service.faults import InjectedFaultError
from model_service.model import NoModelAvailableError, UnknownModelVersionError
from model_service.prediction_service import BatchTooLargeError, UnknownDataIdError
from model_service.schemas import ErrorDetail, ErrorResponse
from model_service.spans import record_failure

logger = logging.getLogger(__name__)

# Seconds a client should wait before retrying while no model is loaded.
_RETRY_AFTER_NO_MODEL = "5"
# A batch of 1,000 bad ids would otherwise give a 1,000-part message.
_PROBLEMS_DESCRIBED = 5
# The protection space of the admin token, named in 401 challenges.
_ADMIN_REALM = "model-service-admin"
# Errors Starlette raises itself (routing, body parsing); any other status maps to "http_error".
_CODE_OF_STATUS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """`{"error": {"code", "message", "trace_id"}}` with the id of the request's trace, when it has one."""
    span_context = trace.get_current_span().get_span_context()
    trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else None
    body = ErrorResponse(error=ErrorDetail(code=code, message=message, trace_id=trace_id))
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


async def _unknown_data_id(_: Request, error: UnknownDataIdError) -> JSONResponse:
    return error_response(404, "unknown_data_id", str(error))


async def _unknown_model_version(_: Request, error: UnknownModelVersionError) -> JSONResponse:
    return error_response(404, "unknown_model_version", str(error))


async def _batch_too_large(_: Request, error: BatchTooLargeError) -> JSONResponse:
    return error_response(422, "batch_too_large", str(error))


async def _no_model(_: Request, error: NoModelAvailableError) -> JSONResponse:
    logger.warning("request refused: %s", error)
    return error_response(
        503, "model_unavailable", "no model is loaded yet", headers={"Retry-After": _RETRY_AFTER_NO_MODEL}
    )


async def _injected_fault(_: Request, error: InjectedFaultError) -> JSONResponse:
    _mark_request_span_failed(error)
    logger.error("injected fault: %s", error)
    return error_response(500, "injected_fault", str(error))


async def _admin_disabled(_: Request, error: AdminDisabledError) -> JSONResponse:
    # 403, not 401: no credential can help until the operator configures a token.
    return error_response(403, "admin_disabled", str(error))


async def _admin_unauthorized(_: Request, error: AdminUnauthorizedError) -> JSONResponse:
    # RFC 6750, section 3: the challenge names the scheme, and `invalid_token` when a token was sent.
    challenge = f'Bearer realm="{_ADMIN_REALM}"' + (', error="invalid_token"' if error.token_presented else "")
    return error_response(401, "unauthorized", str(error), headers={"WWW-Authenticate": challenge})


async def _invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    if any(problem["type"] == "json_invalid" for problem in problems):
        return error_response(400, "malformed_body", "the request body is not valid JSON")
    described = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'][1:]) or 'body'}: {problem['msg']}"
        for problem in problems[:_PROBLEMS_DESCRIBED]
    )
    if len(problems) > _PROBLEMS_DESCRIBED:
        described += f"; and {len(problems) - _PROBLEMS_DESCRIBED} more"
    return error_response(422, "invalid_request", described)


async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
    code = _CODE_OF_STATUS.get(error.status_code, "http_error")
    return error_response(error.status_code, code, str(error.detail), headers=error.headers)


class UnexpectedErrorMiddleware:
    """Answers an exception that no handler maps with the opaque JSON 500, inside the app.

    Registered as a handler of `Exception`, it would run in Starlette's outermost
    ServerErrorMiddleware, which re-raises after answering: through the FastAPI
    instrumentation, which records the exception on the server span a second time (with
    `exception.escaped` as a string). Caught here, it is recorded once, by us.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def send_tracked(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as error:
            if response_started:
                raise  # too late for an answer; the server closes the connection
            _mark_request_span_failed(error)
            logger.exception("unexpected error while serving a request")
            response = error_response(500, "internal_error", "internal error; the trace id identifies it")
            await response(scope, receive, send)


def _mark_request_span_failed(error: Exception) -> None:
    # Handled here (it becomes a 500 answer), so it does not escape the server span.
    record_failure(trace.get_current_span(), error, escaped=False)


def install_error_handlers(app: FastAPI) -> None:
    """Register every mapping above on `app`, and the catch-all for the rest."""
    app.add_exception_handler(UnknownDataIdError, _unknown_data_id)
    app.add_exception_handler(UnknownModelVersionError, _unknown_model_version)
    app.add_exception_handler(BatchTooLargeError, _batch_too_large)
    app.add_exception_handler(NoModelAvailableError, _no_model)
    app.add_exception_handler(InjectedFaultError, _injected_fault)
    app.add_exception_handler(AdminDisabledError, _admin_disabled)
    app.add_exception_handler(AdminUnauthorizedError, _admin_unauthorized)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(UnexpectedErrorMiddleware)
