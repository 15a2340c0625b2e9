"""Service `qdrant.Collections`: each RPC translated into the REST call it stands for and run
through api.rpc.dispatch.Bridge (the REST route's own handler); results converted back to
Qdrant's messages."""

from __future__ import annotations

from qdrant_client.grpc import collections_service_pb2_grpc

from api.rpc.dispatch import Bridge


class CollectionsService(collections_service_pb2_grpc.CollectionsServicer):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
