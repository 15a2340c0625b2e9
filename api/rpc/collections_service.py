"""Service `qdrant.Collections`: each RPC translated into the REST call it stands for and run
through api.rpc.dispatch.Bridge (the REST route's own handler); results converted back to
Qdrant's messages.

Translation only. A request becomes its REST twin's body through qdrant-client's GrpcToRest
converters (CreateCollection has no converter of its own: its parts are converted one by one
into Qdrant's REST CreateCollection body); results go back through RestToGrpc over the REST
models. What the REST parser refuses, the RPC refuses with the same message; a message the
converters cannot read (an empty oneof, an unknown enum value) is INVALID_ARGUMENT.

Cluster-layout RPCs (cluster setup, shard keys) stand for REST operations Quiver does not
serve (api/qdrant_paths.py): they answer UNIMPLEMENTED with REST's message naming them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from qdrant_client.grpc import collections_pb2, collections_service_pb2_grpc
from qdrant_client.http import models

from api.rpc.convert import GrpcToRest, RestToGrpc, jsonable, payload_json, rest_body, rest_model
from api.rpc.dispatch import Bridge

C = "/collections/{collection_name}"
Body = dict[str, Any]

# CreateCollection field → (REST body key, converter of the set field to its JSON)
_CREATE_FIELDS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("vectors_config", "vectors", lambda v: jsonable(GrpcToRest.convert_vectors_config(v))),
    ("shard_number", "shard_number", int),
    ("replication_factor", "replication_factor", int),
    ("write_consistency_factor", "write_consistency_factor", int),
    ("on_disk_payload", "on_disk_payload", bool),
    ("hnsw_config", "hnsw_config", lambda v: rest_body(GrpcToRest.convert_hnsw_config_diff(v))),
    ("wal_config", "wal_config", lambda v: rest_body(GrpcToRest.convert_wal_config_diff(v))),
    ("optimizers_config", "optimizers_config",
     lambda v: rest_body(GrpcToRest.convert_optimizers_config_diff(v))),
    ("quantization_config", "quantization_config",
     lambda v: jsonable(GrpcToRest.convert_quantization_config(v))),
    ("sharding_method", "sharding_method",
     lambda v: jsonable(GrpcToRest.convert_sharding_method(v))),
    ("sparse_vectors_config", "sparse_vectors",
     lambda v: jsonable(GrpcToRest.convert_sparse_vector_config(v))),
    ("strict_mode_config", "strict_mode_config",
     lambda v: rest_body(GrpcToRest.convert_strict_mode_config(v))),
    ("payload", "payload", lambda v: rest_body(GrpcToRest.convert_payload_storage_params(v))),
)


def _float32_fields(*roots: Descriptor) -> frozenset[str]:
    """Names of the `float` (32-bit) fields reachable from these messages."""
    seen: set[str] = set()
    names: set[str] = set()

    def walk(d: Descriptor) -> None:
        if d.full_name in seen:
            return
        seen.add(d.full_name)
        for f in d.fields:
            if f.type == FieldDescriptor.TYPE_FLOAT:
                names.add(f.name)
            if f.message_type is not None:
                walk(f.message_type)
    for root in roots:
        walk(root)
    return frozenset(names)


# quantile, search_max_oversampling: f32 in Qdrant too
_FLOAT32 = _float32_fields(collections_pb2.CreateCollection.DESCRIPTOR,
                           collections_pb2.UpdateCollection.DESCRIPTOR)


def _as_sent(node: Any) -> Any:
    """A 32-bit float field read from a message is 0.699999988… for a sent 0.7: it goes to
    REST as the shortest decimal of that f32 (0.7), the value Qdrant stores and reports.
    Metadata (JSON doubles) is left alone."""
    if isinstance(node, dict):
        return {k: float(str(np.float32(v))) if k in _FLOAT32 and isinstance(v, float)
                else v if k == "metadata" else _as_sent(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_as_sent(v) for v in node]
    return node


def create_body(msg: Any) -> Body:
    """A CreateCollection message → Qdrant's REST CreateCollection body (set fields only)."""
    body: Body = _as_sent({key: conv(getattr(msg, field)) for field, key, conv in _CREATE_FIELDS
                           if msg.HasField(field)})
    if msg.metadata:  # proto3 maps have no presence: an empty one means "none", as in Qdrant
        body["metadata"] = payload_json(msg.metadata)
    return body


def update_body(msg: collections_pb2.UpdateCollection) -> Body:
    body = _as_sent(rest_body(GrpcToRest.convert_update_collection(msg)))
    if not msg.metadata:  # the converter turns the absent map into {}: leave it out
        body.pop("metadata", None)
    return body


def _alias_action(op: collections_pb2.AliasOperations) -> Body:
    """One alias action in REST's form; an empty oneof becomes {}, which REST refuses."""
    if op.WhichOneof("action") is None:
        return {}
    return rest_body(GrpcToRest.convert_alias_operations(op))


def aliases_body(msg: collections_pb2.ChangeAliases) -> Body:
    return {"actions": [_alias_action(op) for op in msg.actions]}


def _timeout(msg: Any) -> dict[str, str]:
    return {"timeout": str(msg.timeout)} if msg.HasField("timeout") else {}


def _coll(msg: Any) -> dict[str, str]:
    return {"collection_name": msg.collection_name}


def _aliases(result: Any, started: float) -> collections_pb2.ListAliasesResponse:
    return collections_pb2.ListAliasesResponse(
        aliases=[RestToGrpc.convert_alias_description(rest_model(models.AliasDescription, a))
                 for a in result["aliases"]],
        time=time.perf_counter() - started)


class CollectionsService(collections_service_pb2_grpc.CollectionsServicer):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    # ---- plumbing --------------------------------------------------------------------------

    async def _operation(self, context: Any, rpc: str, method: str, template: str, msg: Any,
                         build: Callable[[Any], Body] | None
                         ) -> collections_pb2.CollectionOperationResponse:
        """A write answered by a bool (Create, Update, Delete, UpdateAliases)."""
        started = time.perf_counter()
        body = await self.bridge.body(context, build, msg) if build is not None else None
        params = _coll(msg) if "collection_name" in msg.DESCRIPTOR.fields_by_name else {}
        res = await self.bridge.call(context, rpc, method, template, params, _timeout(msg),
                                     body)
        return collections_pb2.CollectionOperationResponse(result=bool(res),
                                                           time=time.perf_counter() - started)

    async def _not_served(self, context: Any, rpc: str, msg: Any, method: str,
                          template: str) -> Any:
        """What REST answers (after its API-key check) for an operation it does not serve."""
        await self.bridge.unserved(context, rpc, method, template, _coll(msg))

    # ---- reads -----------------------------------------------------------------------------

    async def Get(self, request: collections_pb2.GetCollectionInfoRequest,  # noqa: N802
                  context: Any) -> collections_pb2.GetCollectionInfoResponse:
        started = time.perf_counter()
        res = await self.bridge.call(context, "Get", "GET", C, _coll(request))
        info = RestToGrpc.convert_collection_info(rest_model(models.CollectionInfo, res))
        return collections_pb2.GetCollectionInfoResponse(result=info,
                                                         time=time.perf_counter() - started)

    async def List(self, request: collections_pb2.ListCollectionsRequest,  # noqa: N802
                   context: Any) -> collections_pb2.ListCollectionsResponse:
        started = time.perf_counter()
        res = await self.bridge.call(context, "List", "GET", "/collections")
        return collections_pb2.ListCollectionsResponse(
            collections=[RestToGrpc.convert_collection_description(
                rest_model(models.CollectionDescription, c)) for c in res["collections"]],
            time=time.perf_counter() - started)

    async def CollectionExists(self, request: collections_pb2.CollectionExistsRequest,  # noqa: N802
                               context: Any) -> collections_pb2.CollectionExistsResponse:
        started = time.perf_counter()
        res = await self.bridge.call(context, "CollectionExists", "GET", C + "/exists",
                                     _coll(request))
        return collections_pb2.CollectionExistsResponse(
            result=collections_pb2.CollectionExists(exists=bool(res["exists"])),
            time=time.perf_counter() - started)

    async def ListCollectionAliases(  # noqa: N802
            self, request: collections_pb2.ListCollectionAliasesRequest,
            context: Any) -> collections_pb2.ListAliasesResponse:
        started = time.perf_counter()
        res = await self.bridge.call(context, "ListCollectionAliases", "GET", C + "/aliases",
                                     _coll(request))
        return _aliases(res, started)

    async def ListAliases(self, request: collections_pb2.ListAliasesRequest,  # noqa: N802
                          context: Any) -> collections_pb2.ListAliasesResponse:
        started = time.perf_counter()
        res = await self.bridge.call(context, "ListAliases", "GET", "/aliases")
        return _aliases(res, started)

    async def CollectionClusterInfo(  # noqa: N802
            self, request: collections_pb2.CollectionClusterInfoRequest,
            context: Any) -> collections_pb2.CollectionClusterInfoResponse:
        started = time.perf_counter()
        res = await self.bridge.call(context, "CollectionClusterInfo", "GET", C + "/cluster",
                                     _coll(request))
        out = RestToGrpc.convert_collection_cluster_info(
            rest_model(models.CollectionClusterInfo, res))
        out.time = time.perf_counter() - started
        return out

    # ---- writes ----------------------------------------------------------------------------

    async def Create(self, request: collections_pb2.CreateCollection,  # noqa: N802
                     context: Any) -> collections_pb2.CollectionOperationResponse:
        return await self._operation(context, "Create", "PUT", C, request, create_body)

    async def Update(self, request: collections_pb2.UpdateCollection,  # noqa: N802
                     context: Any) -> collections_pb2.CollectionOperationResponse:
        return await self._operation(context, "Update", "PATCH", C, request, update_body)

    async def Delete(self, request: collections_pb2.DeleteCollection,  # noqa: N802
                     context: Any) -> collections_pb2.CollectionOperationResponse:
        return await self._operation(context, "Delete", "DELETE", C, request, None)

    async def UpdateAliases(self, request: collections_pb2.ChangeAliases,  # noqa: N802
                            context: Any) -> collections_pb2.CollectionOperationResponse:
        return await self._operation(context, "UpdateAliases", "POST", "/collections/aliases",
                                     request, aliases_body)

    # ---- cluster layout: not served over REST, so not over gRPC ----------------------------

    async def UpdateCollectionClusterSetup(  # noqa: N802
            self, request: collections_pb2.UpdateCollectionClusterSetupRequest,
            context: Any) -> collections_pb2.UpdateCollectionClusterSetupResponse:
        return await self._not_served(context, "UpdateCollectionClusterSetup", request, "POST", C + "/cluster")

    async def CreateShardKey(self, request: collections_pb2.CreateShardKeyRequest,  # noqa: N802
                             context: Any) -> collections_pb2.CreateShardKeyResponse:
        return await self._not_served(context, "CreateShardKey", request, "PUT", C + "/shards")

    async def DeleteShardKey(self, request: collections_pb2.DeleteShardKeyRequest,  # noqa: N802
                             context: Any) -> collections_pb2.DeleteShardKeyResponse:
        return await self._not_served(context, "DeleteShardKey", request, "POST", C + "/shards/delete")

    async def ListShardKeys(self, request: collections_pb2.ListShardKeysRequest,  # noqa: N802
                            context: Any) -> collections_pb2.ListShardKeysResponse:
        return await self._not_served(context, "ListShardKeys", request, "GET", C + "/shards")
