"""The service's errors in each API's terms: OpenAI-style JSON bodies for HTTP, status codes for gRPC.

Anything that is not an OrchestratorError is a bug: the caller gets a generic 500 / INTERNAL (details go to
the log, never to the client).
"""

from __future__ import annotations

import logging

import grpc

from orchestrator.errors import InvalidRequest, OrchestratorError

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; the server log has the details"

#: OpenAI's error `type` for each HTTP status the orchestrator returns.
OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
    504: "timeout",
}


def openai_error(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {
        "message": message,
        "type": OPENAI_ERROR_TYPES.get(status, "server_error"),
        "param": param,
        "code": code,
    }}


def as_orchestrator_error(exc: BaseException) -> OrchestratorError:
    """The error as the client sees it; unexpected exceptions are logged and become a generic internal error."""
    if isinstance(exc, OrchestratorError):
        return exc
    log.error("unexpected error while serving a request", exc_info=exc)
    return OrchestratorError(INTERNAL_MESSAGE)


def http_status_and_body(exc: BaseException) -> tuple[int, dict]:
    error = as_orchestrator_error(exc)
    param = error.field if isinstance(error, InvalidRequest) else None
    return error.http_status, openai_error(error.http_status, error.message, param, error.grpc_code.lower())


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    error = as_orchestrator_error(exc)
    return grpc.StatusCode[error.grpc_code], error.message
