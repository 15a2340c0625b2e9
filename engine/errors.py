"""One error tree for the engine. `api/errors.py` maps each kind to an HTTP status.

    EngineError
    ├── UserError        the request cannot be served as asked (4xx)
    │   ├── BadInput, BadRequest, ValidationError, Unprocessable
    │   ├── NotFound, Forbidden, Timeout
    │   └── Conflict
    │       └── AlreadyExists
    └── ServiceError     the server failed a valid request (5xx)
        └── StorageError
            └── StorageFull

Errors only HTTP knows about (a missing API key, a body over the limit, an unknown method)
live in `api/errors.py`, on the same two branches.

Each error's message carries Qdrant's prefix ("Wrong input: ", "Not found: ", ...) so that
clients which match on message text see what they would see from Qdrant.
"""

from __future__ import annotations


class EngineError(Exception):
    prefix = "Service internal error: "

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(self.prefix + detail)

    @property
    def message(self) -> str:
        return self.prefix + self.detail


class UserError(EngineError):
    """The client's request is at fault (or, for Timeout, its own time budget ran out):
    a 4xx, and retrying the same request will not help."""

    prefix = "Bad request: "


class ServiceError(EngineError):
    """The request was valid but the server could not serve it: a 5xx."""

    prefix = "Service internal error: "


class BadInput(UserError):
    """Semantically invalid input (wrong dimension, unknown vector name...): 400."""

    prefix = "Wrong input: "


class BadRequest(UserError):
    """Malformed request (bad JSON shape, invalid field values): 400."""

    prefix = "Bad request: "


class ValidationError(UserError):
    """Request body failed validation: 422 in Qdrant for body format errors; 400 here by kind."""

    prefix = "Validation error: "


class Unprocessable(UserError):
    """Syntactically valid but unprocessable (e.g. a malformed checksum): 422."""

    prefix = "Unprocessable entity: "


class NotFound(UserError):
    prefix = "Not found: "


class Conflict(UserError):
    prefix = "Conflict: "


class AlreadyExists(Conflict):
    """Create of something that exists: a conflict (409) with Qdrant's 'Wrong input' prefix."""

    prefix = "Wrong input: "


class Forbidden(UserError):
    prefix = "Forbidden: "


class Timeout(UserError):
    """The request's own `timeout` elapsed: 408, as Qdrant (the client chose the budget)."""

    prefix = "Timeout error: "


class StorageError(ServiceError):
    """I/O failure while persisting: 500, the operation is not acknowledged."""

    prefix = "Service internal error: "


class StorageFull(StorageError):
    """No space left on device: 507, nothing acknowledged."""

    prefix = "Service internal error: No space left on device: "
