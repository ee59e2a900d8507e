"""Errors the service raises, each with the status both APIs map it to (HTTP code, gRPC code name)."""

from __future__ import annotations


class OrchestratorError(Exception):
    http_status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(OrchestratorError):
    """Bad input; the message names the field."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class Unauthenticated(OrchestratorError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"


class PermissionDenied(OrchestratorError):
    http_status = 403
    grpc_code = "PERMISSION_DENIED"


class Overloaded(OrchestratorError):
    """The backend's queue is full (Triton rejected the request) or a rate limit was hit."""

    http_status = 429
    grpc_code = "RESOURCE_EXHAUSTED"


class BackendUnavailable(OrchestratorError):
    """Triton is unreachable or not ready; raised quickly, never after a hang."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class BackendTimeout(OrchestratorError):
    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"
