"""One error tree for the engine. `api/errors.py` maps each kind to an HTTP status.

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


class BadInput(EngineError):
    """Semantically invalid input (wrong dimension, unknown vector name...): 400."""

    prefix = "Wrong input: "


class BadRequest(EngineError):
    """Malformed request (bad JSON shape, invalid field values): 400."""

    prefix = "Bad request: "


class ValidationError(EngineError):
    """Request body failed validation: 422 in Qdrant for body format errors; 400 here by kind."""

    prefix = "Validation error: "


class Unprocessable(EngineError):
    """Syntactically valid but unprocessable (e.g. a malformed checksum): 422."""

    prefix = "Unprocessable entity: "


class NotFound(EngineError):
    prefix = "Not found: "


class AlreadyExists(EngineError):
    """Create of something that exists: 409 with Qdrant's 'Wrong input' prefix."""

    prefix = "Wrong input: "


class Conflict(EngineError):
    prefix = "Conflict: "


class Forbidden(EngineError):
    prefix = "Forbidden: "


class Unauthorized(EngineError):
    prefix = ""


class PayloadTooLarge(EngineError):
    prefix = "Payload too large: "


class StorageFull(EngineError):
    """No space left on device: 507, nothing acknowledged."""

    prefix = "Service internal error: No space left on device: "


class StorageError(EngineError):
    """I/O failure while persisting: 500, the operation is not acknowledged."""

    prefix = "Service internal error: "


class Timeout(EngineError):
    prefix = "Timeout error: "
