"""Qdrant's gRPC messages ↔ the JSON-shaped bodies and results of the REST handlers.

The general path uses qdrant-client's own converters (GrpcToRest / RestToGrpc over its
pydantic REST models), so a message means over gRPC exactly what its REST twin means; hot
paths (points in, scored points out) may convert directly.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc

__all__ = ["GrpcToRest", "RestToGrpc", "rest_body", "rest_model"]

M = TypeVar("M", bound=BaseModel)


def rest_body(model: BaseModel | None) -> dict[str, Any]:
    """A REST model (as GrpcToRest builds it) → the JSON body its REST route reads.
    GrpcToRest spells absent optional fields as None: they are left out."""
    if model is None:
        return {}
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


def rest_model(cls: type[M], result: Any) -> M:
    """A REST handler's result → its REST model (for RestToGrpc)."""
    return cls.model_validate(result)
