"""Service `qdrant.Qdrant`: HealthCheck (the REST root's banner; open without a key, as the
REST root is)."""

from __future__ import annotations

from typing import Any

from qdrant_client.grpc import qdrant_pb2, qdrant_pb2_grpc

from api.http import QDRANT_API_VERSION
from api.routes.service import commit_hash
from api.rpc.dispatch import Bridge


class QdrantService(qdrant_pb2_grpc.QdrantServicer):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    async def HealthCheck(self, request: qdrant_pb2.HealthCheckRequest,  # noqa: N802
                          context: Any) -> qdrant_pb2.HealthCheckReply:
        return qdrant_pb2.HealthCheckReply(title="quiver - vector search engine",
                                           version=QDRANT_API_VERSION, commit=commit_hash())
