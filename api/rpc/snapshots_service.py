"""Service `qdrant.Snapshots`: each RPC translated into the REST call it stands for and run
through api.rpc.dispatch.Bridge (the REST route's own handler); results converted back to
Qdrant's messages.

gRPC has no `wait` flag: every RPC runs as REST's `wait=true` (the snapshot exists, or is
gone, when the answer comes), as Qdrant's gRPC snapshots do. A REST SnapshotDescription's
ISO `creation_time` (UTC, as Qdrant writes it) becomes a google.protobuf.Timestamp.
"""

from __future__ import annotations

import time
from typing import Any

from qdrant_client.grpc import snapshots_service_pb2, snapshots_service_pb2_grpc
from qdrant_client.http import models

from api.rpc.convert import RestToGrpc, rest_model
from api.rpc.dispatch import Bridge

S = "/collections/{collection_name}/snapshots"
FULL = "/snapshots"
WAIT = {"wait": "true"}


def description(snap: dict[str, Any]) -> snapshots_service_pb2.SnapshotDescription:
    """A REST SnapshotDescription → its message (no `creation_time` when REST has none:
    qdrant-client's converter needs one)."""
    model = rest_model(models.SnapshotDescription, snap)
    if model.creation_time is None:
        return snapshots_service_pb2.SnapshotDescription(name=model.name, size=model.size,
                                                         checksum=model.checksum)
    return RestToGrpc.convert_snapshot_description(model)


def _created(res: Any, started: float) -> snapshots_service_pb2.CreateSnapshotResponse:
    return snapshots_service_pb2.CreateSnapshotResponse(
        snapshot_description=description(res), time=time.perf_counter() - started)


def _listed(res: Any, started: float) -> snapshots_service_pb2.ListSnapshotsResponse:
    return snapshots_service_pb2.ListSnapshotsResponse(
        snapshot_descriptions=[description(s) for s in res],
        time=time.perf_counter() - started)


def _deleted(started: float) -> snapshots_service_pb2.DeleteSnapshotResponse:
    return snapshots_service_pb2.DeleteSnapshotResponse(time=time.perf_counter() - started)


class SnapshotsService(snapshots_service_pb2_grpc.SnapshotsServicer):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    # ---- collection snapshots --------------------------------------------------------------

    async def Create(self, request: snapshots_service_pb2.CreateSnapshotRequest,  # noqa: N802
                     context: Any) -> snapshots_service_pb2.CreateSnapshotResponse:
        started = time.perf_counter()
        res = await self.bridge.call(context, "Create", "POST", S,
                                     {"collection_name": request.collection_name}, WAIT)
        return _created(res, started)

    async def List(self, request: snapshots_service_pb2.ListSnapshotsRequest,  # noqa: N802
                   context: Any) -> snapshots_service_pb2.ListSnapshotsResponse:
        started = time.perf_counter()
        res = await self.bridge.call(context, "List", "GET", S,
                                     {"collection_name": request.collection_name})
        return _listed(res, started)

    async def Delete(self, request: snapshots_service_pb2.DeleteSnapshotRequest,  # noqa: N802
                     context: Any) -> snapshots_service_pb2.DeleteSnapshotResponse:
        started = time.perf_counter()
        await self.bridge.call(context, "Delete", "DELETE", S + "/{snapshot_name}",
                               {"collection_name": request.collection_name,
                                "snapshot_name": request.snapshot_name}, WAIT)
        return _deleted(started)

    # ---- full storage snapshots ------------------------------------------------------------

    async def CreateFull(self, request: snapshots_service_pb2.CreateFullSnapshotRequest,  # noqa: N802
                         context: Any) -> snapshots_service_pb2.CreateSnapshotResponse:
        started = time.perf_counter()
        res = await self.bridge.call(context, "CreateFull", "POST", FULL, {}, WAIT)
        return _created(res, started)

    async def ListFull(self, request: snapshots_service_pb2.ListFullSnapshotsRequest,  # noqa: N802
                       context: Any) -> snapshots_service_pb2.ListSnapshotsResponse:
        started = time.perf_counter()
        res = await self.bridge.call(context, "ListFull", "GET", FULL)
        return _listed(res, started)

    async def DeleteFull(self, request: snapshots_service_pb2.DeleteFullSnapshotRequest,  # noqa: N802
                         context: Any) -> snapshots_service_pb2.DeleteSnapshotResponse:
        started = time.perf_counter()
        await self.bridge.call(context, "DeleteFull", "DELETE", FULL + "/{snapshot_name}",
                               {"snapshot_name": request.snapshot_name}, WAIT)
        return _deleted(started)
