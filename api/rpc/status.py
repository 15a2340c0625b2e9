"""Error → gRPC status code, as Qdrant maps its errors (StorageError → tonic::Status).

Derived from the one HTTP table (api/errors.STATUS) so a new error class needs no second row:
the HTTP status of an error decides its gRPC code, except where Qdrant's gRPC mapping differs
from its REST one (a checksum mismatch is DATA_LOSS over gRPC, a 400 over REST).
"""

from __future__ import annotations

import grpc

from api.errors import status_of
from engine.errors import EngineError

BY_HTTP: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

# Where Qdrant's gRPC code is finer than the HTTP status, by class name (the most specific
# class of the exception's MRO wins; names, so snapshots' error classes need no import here)
BY_CLASS: dict[str, grpc.StatusCode] = {
    "ChecksumMismatch": grpc.StatusCode.DATA_LOSS,
    "AlreadyExists": grpc.StatusCode.ALREADY_EXISTS,
    "Conflict": grpc.StatusCode.FAILED_PRECONDITION,  # Qdrant's Locked / PreconditionFailed
    "Cancelled": grpc.StatusCode.CANCELLED,  # engine.tasks: DELETE /tasks/{id} stopped it
}


def code_of(exc: EngineError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = BY_CLASS.get(cls.__name__)
        if code is not None:
            return code
    return BY_HTTP.get(status_of(exc), grpc.StatusCode.INTERNAL)


def code_of_http(status: int) -> grpc.StatusCode:
    return BY_HTTP.get(status, grpc.StatusCode.INTERNAL if status >= 500
                       else grpc.StatusCode.INVALID_ARGUMENT)
