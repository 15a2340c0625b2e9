"""qdrant.Collections over gRPC against the same calls over REST, on one real server.

Every RPC runs through the REST route's handler (api/rpc/dispatch.py): each test makes a call
with qdrant-client over gRPC (prefer_grpc=True) and the same call over REST (prefer_grpc=False)
and compares the answers; configurations are drawn at random. Errors carry REST's message with
the gRPC code of REST's status; a refused configuration stores nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.grpc import collections_pb2, collections_service_pb2_grpc
from server import QuiverServer

# the gRPC code of each REST status an error below can have (Qdrant's tonic mapping)
CODE_OF_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
                  403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
                  409: grpc.StatusCode.ALREADY_EXISTS}
DISTANCES = [models.Distance.COSINE, models.Distance.DOT, models.Distance.EUCLID,
             models.Distance.MANHATTAN]


@pytest.fixture(scope="module")
def clients(server: Any) -> Iterator[tuple[QdrantClient, QdrantClient]]:
    g = QdrantClient(host="127.0.0.1", port=server.port, grpc_port=server.grpc_port,
                     prefer_grpc=True, timeout=30)
    r = QdrantClient(host="127.0.0.1", port=server.port, prefer_grpc=False, timeout=30)
    yield g, r
    g.close()
    r.close()


@pytest.fixture(scope="module")
def stub(server: Any) -> Iterator[collections_service_pb2_grpc.CollectionsStub]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield collections_service_pb2_grpc.CollectionsStub(channel)


def _config(rng: np.random.Generator) -> dict[str, Any]:
    """A random collection configuration, as qdrant-client's create_collection arguments."""
    dims = rng.integers(2, 64, size=2).tolist()
    return {
        "vectors_config": {
            "a": models.VectorParams(size=dims[0], distance=DISTANCES[rng.integers(4)]),
            "b": models.VectorParams(size=dims[1], distance=DISTANCES[rng.integers(4)],
                                     on_disk=bool(rng.integers(2))),
        },
        "sparse_vectors_config": {"s": models.SparseVectorParams(
            modifier=models.Modifier.IDF if rng.integers(2) else None)},
        "hnsw_config": models.HnswConfigDiff(m=int(rng.integers(4, 48)),
                                             ef_construct=int(rng.integers(8, 256))),
        "optimizers_config": models.OptimizersConfigDiff(
            indexing_threshold=int(rng.integers(0, 50_000)),
            deleted_threshold=float(rng.uniform(0.05, 0.9))),
        "wal_config": models.WalConfigDiff(wal_capacity_mb=int(rng.integers(1, 64))),
        "metadata": {"team": f"t{rng.integers(100)}", "n": int(rng.integers(1000))},
    }


def _f32(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _f32(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_f32(v) for v in node]
    return float(np.float32(node)) if isinstance(node, float) else node


def _same_info(got: models.CollectionInfo, want: models.CollectionInfo) -> None:
    """The differences the message format itself adds: qdrant-client's GrpcToRest reads an
    absent metadata map as {} where REST has null, and `quantile` /
    `search_max_oversampling` are 32-bit floats in the messages (compared at that
    precision)."""
    def norm(info: models.CollectionInfo) -> dict[str, Any]:
        d = info.model_dump()
        if d["config"]["metadata"] == {}:
            d["config"]["metadata"] = None
        return _f32(d)
    assert norm(got) == norm(want)


def _rest_error(http: httpx.Client, method: str, path: str, body: Any = None) -> tuple[int, str]:
    resp = http.request(method, path, json=body)
    return resp.status_code, resp.json()["status"]["error"]


def _assert_rpc_error(exc: pytest.ExceptionInfo[grpc.RpcError], status: int, message: str
                      ) -> None:
    err: Any = exc.value
    assert (err.code(), err.details()) == (CODE_OF_STATUS[status], message)


def test_create_over_grpc_is_what_rest_creates(clients: Any, collection_name: str) -> None:
    """A full random configuration created over gRPC reads back (over gRPC and REST) exactly
    as the same configuration created over REST."""
    g, r = clients
    cfg = _config(np.random.default_rng(1401))
    via_grpc, via_rest = collection_name + "_g", collection_name + "_r"
    assert g.create_collection(via_grpc, **cfg) is True
    assert r.create_collection(via_rest, **cfg) is True
    try:
        want = r.get_collection(via_rest)
        _same_info(r.get_collection(via_grpc), want)
        _same_info(g.get_collection(via_grpc), want)
        _same_info(g.get_collection(via_rest), want)
        assert want.config.metadata == cfg["metadata"]
    finally:
        r.delete_collection(via_grpc)
        r.delete_collection(via_rest)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_create_random_single_vector_configs(clients: Any, collection_name: str,
                                             seed: int) -> None:
    g, r = clients
    rng = np.random.default_rng(seed)
    params = models.VectorParams(size=int(rng.integers(1, 300)),
                                 distance=DISTANCES[rng.integers(4)])
    quant = models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
        type=models.ScalarType.INT8, quantile=round(float(rng.uniform(0.5, 1.0)), 3),
        always_ram=True))
    strict = models.StrictModeConfig(enabled=True, max_query_limit=int(rng.integers(10, 1000)))
    names = collection_name + "_g", collection_name + "_r"
    for client, name in zip((g, r), names, strict=True):
        assert client.create_collection(name, vectors_config=params, quantization_config=quant,
                                        strict_mode_config=strict,
                                        on_disk_payload=bool(seed % 2)) is True
    try:
        want = r.get_collection(names[1])
        assert r.get_collection(names[0]) == want  # 0.756 sent as f32 is stored as 0.756
        _same_info(g.get_collection(names[0]), want)
    finally:
        for name in names:
            r.delete_collection(name)


VARIANTS: dict[str, dict[str, Any]] = {
    "multivector_datatypes": {"vectors_config": {
        "mv": models.VectorParams(size=4, distance=models.Distance.COSINE,
                                  multivector_config=models.MultiVectorConfig(
                                      comparator=models.MultiVectorComparator.MAX_SIM)),
        "u8": models.VectorParams(size=4, distance=models.Distance.DOT,
                                  datatype=models.Datatype.UINT8),
        "f16": models.VectorParams(
            size=4, distance=models.Distance.DOT, datatype=models.Datatype.FLOAT16,
            hnsw_config=models.HnswConfigDiff(m=8),
            quantization_config=models.BinaryQuantization(
                binary=models.BinaryQuantizationConfig(always_ram=True)))}},
    "product_quantization": {
        "vectors_config": models.VectorParams(size=8, distance=models.Distance.EUCLID),
        "quantization_config": models.ProductQuantization(
            product=models.ProductQuantizationConfig(
                compression=models.CompressionRatio.X16))},
    "binary_quantization": {
        "vectors_config": models.VectorParams(size=8, distance=models.Distance.EUCLID),
        "quantization_config": models.BinaryQuantization(
            binary=models.BinaryQuantizationConfig(
                encoding=models.BinaryQuantizationEncoding.TWO_BITS))},
    "strict_sparse": {
        "vectors_config": models.VectorParams(size=8, distance=models.Distance.EUCLID),
        "strict_mode_config": models.StrictModeConfig(
            enabled=True, search_max_oversampling=1.3, max_points_count=100,
            sparse_config={"s": models.StrictModeSparse(max_length=5)}),
        "sparse_vectors_config": {"s": models.SparseVectorParams(
            index=models.SparseIndexParams(full_scan_threshold=10, on_disk=True),
            modifier=models.Modifier.IDF)}},
    "sharding_and_replication": {
        "vectors_config": models.VectorParams(size=8, distance=models.Distance.EUCLID),
        "sharding_method": models.ShardingMethod.CUSTOM, "shard_number": 2,
        "replication_factor": 2, "write_consistency_factor": 2},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_create_variants(clients: Any, collection_name: str, variant: str) -> None:
    """Multivectors, datatypes, every quantization, strict mode and sparse vectors, cluster
    parameters: created over gRPC, stored as REST stores them."""
    g, r = clients
    names = collection_name + "_g", collection_name + "_r"
    assert g.create_collection(names[0], **VARIANTS[variant]) is True
    assert r.create_collection(names[1], **VARIANTS[variant]) is True
    try:
        want = r.get_collection(names[1])
        assert r.get_collection(names[0]) == want
        _same_info(g.get_collection(names[0]), want)
    finally:
        for name in names:
            r.delete_collection(name)


def test_payload_schema(clients: Any, collection_name: str) -> None:
    """Every payload index type, with parameters, reads the same over gRPC."""
    g, r = clients
    r.create_collection(collection_name, vectors_config=models.VectorParams(
        size=4, distance=models.Distance.DOT))
    try:
        for field, schema in [
                ("k", models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD,
                                                is_tenant=True)),
                ("i", models.IntegerIndexParams(type=models.IntegerIndexType.INTEGER,
                                                lookup=True, range=False)),
                ("f", models.PayloadSchemaType.FLOAT), ("geo", models.PayloadSchemaType.GEO),
                ("t", models.TextIndexParams(type=models.TextIndexType.TEXT,
                                             tokenizer=models.TokenizerType.WORD,
                                             lowercase=True, min_token_len=2,
                                             max_token_len=10)),
                ("b", models.PayloadSchemaType.BOOL),
                ("dt", models.DatetimeIndexParams(type=models.DatetimeIndexType.DATETIME,
                                                  is_principal=True)),
                ("u", models.PayloadSchemaType.UUID)]:
            r.create_payload_index(collection_name, field, schema, wait=True)
        r.upsert(collection_name, [models.PointStruct(id=i, vector=[1.0, i, 0, 0],
                                                      payload={"k": f"v{i}", "i": i})
                                   for i in range(5)], wait=True)
        want = r.get_collection(collection_name)
        assert len(want.payload_schema) == 8
        _same_info(g.get_collection(collection_name), want)
    finally:
        r.delete_collection(collection_name)


def test_list_exists_delete(clients: Any, collection_name: str) -> None:
    g, r = clients
    r.create_collection(collection_name, vectors_config=models.VectorParams(
        size=4, distance=models.Distance.DOT))
    assert g.get_collections() == r.get_collections()
    assert collection_name in {c.name for c in g.get_collections().collections}
    assert g.collection_exists(collection_name) is r.collection_exists(collection_name) is True
    missing = collection_name + "_missing"
    assert g.collection_exists(missing) is r.collection_exists(missing) is False
    assert g.delete_collection(collection_name) is True
    assert r.collection_exists(collection_name) is False
    assert g.delete_collection(collection_name) is r.delete_collection(collection_name)
    assert g.get_collections() == r.get_collections()


def test_update_matches_rest_update(clients: Any, collection_name: str) -> None:
    g, r = clients
    rng = np.random.default_rng(1402)
    cfg = _config(rng)
    names = collection_name + "_g", collection_name + "_r"
    for name in names:
        r.create_collection(name, **cfg)
    update: dict[str, Any] = {
        "optimizers_config": models.OptimizersConfigDiff(
            indexing_threshold=int(rng.integers(0, 50_000))),
        "hnsw_config": models.HnswConfigDiff(m=int(rng.integers(4, 48))),
        "metadata": {"extra": int(rng.integers(100))},
    }
    try:
        assert g.update_collection(names[0], **update) is True
        assert r.update_collection(names[1], **update) is True
        _same_info(r.get_collection(names[0]), r.get_collection(names[1]))
    finally:
        for name in names:
            r.delete_collection(name)


def test_aliases(clients: Any, collection_name: str) -> None:
    g, r = clients
    r.create_collection(collection_name, vectors_config=models.VectorParams(
        size=4, distance=models.Distance.COSINE))
    a1, a2 = collection_name + "_a1", collection_name + "_a2"
    try:
        assert g.update_collection_aliases([
            models.CreateAliasOperation(create_alias=models.CreateAlias(
                collection_name=collection_name, alias_name=a1)),
            models.CreateAliasOperation(create_alias=models.CreateAlias(
                collection_name=collection_name, alias_name=a2)),
        ]) is True
        assert g.get_aliases() == r.get_aliases()
        assert g.get_collection_aliases(collection_name) == \
            r.get_collection_aliases(collection_name)
        assert {a.alias_name for a in g.get_collection_aliases(collection_name).aliases} == \
            {a1, a2}
        _same_info(g.get_collection(a1), r.get_collection(collection_name))
        assert g.update_collection_aliases([
            models.RenameAliasOperation(rename_alias=models.RenameAlias(
                old_alias_name=a1, new_alias_name=a1 + "x")),
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=a2)),
        ]) is True
        assert g.get_collection_aliases(collection_name) == \
            r.get_collection_aliases(collection_name)
        assert [a.alias_name for a in r.get_collection_aliases(collection_name).aliases] == \
            [a1 + "x"]
    finally:
        r.delete_collection(collection_name)


def test_cluster_info(clients: Any, collection_name: str) -> None:
    g, r = clients
    r.create_collection(collection_name, vectors_config=models.VectorParams(
        size=3, distance=models.Distance.EUCLID))
    try:
        r.upsert(collection_name, [models.PointStruct(id=i, vector=[i, 1.0, 2.0])
                                   for i in range(7)], wait=True)
        got, want = (c.collection_cluster_info(collection_name) for c in (g, r))
        # a repeated field has no "absent": GrpcToRest reads REST's missing list as []
        assert want.resharding_operations is None and got.resharding_operations == []
        assert got.model_copy(update={"resharding_operations": None}) == want
        assert got.local_shards[0].points_count == 7
    finally:
        r.delete_collection(collection_name)


def test_responses_carry_time(stub: Any, clients: Any, collection_name: str) -> None:
    """`time` is the seconds spent, as in Qdrant's messages."""
    _, r = clients
    created = stub.Create(collections_pb2.CreateCollection(
        collection_name=collection_name, vectors_config=collections_pb2.VectorsConfig(
            params=collections_pb2.VectorParams(size=4, distance=collections_pb2.Cosine))))
    try:
        assert created.result is True and 0 < created.time < 30
        for resp in (stub.Get(collections_pb2.GetCollectionInfoRequest(
                         collection_name=collection_name)),
                     stub.List(collections_pb2.ListCollectionsRequest()),
                     stub.CollectionExists(collections_pb2.CollectionExistsRequest(
                         collection_name=collection_name)),
                     stub.ListAliases(collections_pb2.ListAliasesRequest()),
                     stub.CollectionClusterInfo(collections_pb2.CollectionClusterInfoRequest(
                         collection_name=collection_name))):
            assert 0 < resp.time < 30
    finally:
        deleted = stub.Delete(collections_pb2.DeleteCollection(collection_name=collection_name))
        assert deleted.result is True and deleted.time > 0
    assert r.collection_exists(collection_name) is False


# ---- errors ------------------------------------------------------------------------------------


def test_unknown_collection_not_found(clients: Any, http: httpx.Client,
                                      collection_name: str) -> None:
    g, _ = clients
    status, message = _rest_error(http, "GET", f"/collections/{collection_name}")
    assert status == 404
    with pytest.raises(grpc.RpcError) as exc:
        g.get_collection(collection_name)
    _assert_rpc_error(exc, status, message)
    with pytest.raises(grpc.RpcError) as exc:
        g.collection_cluster_info(collection_name)
    _assert_rpc_error(exc, *_rest_error(http, "GET", f"/collections/{collection_name}/cluster"))
    with pytest.raises(grpc.RpcError) as exc:
        g.update_collection(collection_name, hnsw_config=models.HnswConfigDiff(m=8))
    _assert_rpc_error(exc, *_rest_error(http, "PATCH", f"/collections/{collection_name}",
                                        {"hnsw_config": {"m": 8}}))


def test_create_existing_is_refused_as_rest_refuses(clients: Any, http: httpx.Client,
                                                    collection_name: str) -> None:
    g, r = clients
    params = models.VectorParams(size=4, distance=models.Distance.COSINE)
    r.create_collection(collection_name, vectors_config=params)
    try:
        before = r.get_collection(collection_name)
        status, message = _rest_error(http, "PUT", f"/collections/{collection_name}",
                                      {"vectors": {"size": 8, "distance": "Dot"}})
        with pytest.raises(grpc.RpcError) as exc:
            g.create_collection(collection_name, vectors_config=models.VectorParams(
                size=8, distance=models.Distance.DOT))
        _assert_rpc_error(exc, status, message)
        assert r.get_collection(collection_name) == before
    finally:
        r.delete_collection(collection_name)


@pytest.mark.parametrize("body,kwargs", [
    ({"vectors": {"size": 0, "distance": "Cosine"}},
     {"vectors_config": models.VectorParams(size=0, distance=models.Distance.COSINE)}),
    ({"vectors": {"size": 4, "distance": "Cosine"}, "hnsw_config": {"m": 1}},
     {"vectors_config": models.VectorParams(size=4, distance=models.Distance.COSINE),
      "hnsw_config": models.HnswConfigDiff(m=1)}),
    ({"vectors": {"size": 4, "distance": "Cosine"},
      "optimizers_config": {"deleted_threshold": 7.5}},
     {"vectors_config": models.VectorParams(size=4, distance=models.Distance.COSINE),
      "optimizers_config": models.OptimizersConfigDiff(deleted_threshold=7.5)}),
    ({"vectors": {"a": {"size": 4, "distance": "Cosine"}}, "sparse_vectors": {"a": {}}},
     {"vectors_config": {"a": models.VectorParams(size=4, distance=models.Distance.COSINE)},
      "sparse_vectors_config": {"a": models.SparseVectorParams()}}),
], ids=["size0", "hnsw_m1", "deleted_threshold", "dense_sparse_clash"])
def test_bad_config_invalid_argument_nothing_stored(clients: Any, http: httpx.Client,
                                                    collection_name: str, body: Any,
                                                    kwargs: Any) -> None:
    g, r = clients
    status, message = _rest_error(http, "PUT", f"/collections/{collection_name}", body)
    assert status == 400
    with pytest.raises(grpc.RpcError) as exc:
        g.create_collection(collection_name, **kwargs)
    _assert_rpc_error(exc, status, message)
    assert r.collection_exists(collection_name) is False


def test_unreadable_messages_invalid_argument(stub: Any, clients: Any, http: httpx.Client,
                                              collection_name: str) -> None:
    """What no REST body can say (an unknown distance, an empty oneof) is INVALID_ARGUMENT;
    an empty alias action goes to REST as {} and gets REST's message."""
    _, r = clients
    with pytest.raises(grpc.RpcError) as exc:
        stub.Create(collections_pb2.CreateCollection(
            collection_name=collection_name, vectors_config=collections_pb2.VectorsConfig(
                params=collections_pb2.VectorParams(size=4))))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as exc:
        stub.Create(collections_pb2.CreateCollection(
            collection_name=collection_name, vectors_config=collections_pb2.VectorsConfig()))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert r.collection_exists(collection_name) is False
    with pytest.raises(grpc.RpcError) as exc:
        stub.UpdateAliases(collections_pb2.ChangeAliases(
            actions=[collections_pb2.AliasOperations()]))
    _assert_rpc_error(exc, *_rest_error(http, "POST", "/collections/aliases",
                                        {"actions": [{}]}))


@pytest.mark.parametrize("rpc,request_,method,path,body", [
    ("UpdateCollectionClusterSetup", collections_pb2.UpdateCollectionClusterSetupRequest(
        move_shard=collections_pb2.MoveShard(shard_id=0, from_peer_id=1, to_peer_id=2)),
     "POST", "/cluster", {"move_shard": {"shard_id": 0, "from_peer_id": 1, "to_peer_id": 2}}),
    ("CreateShardKey", collections_pb2.CreateShardKeyRequest(
        request=collections_pb2.CreateShardKey(
            shard_key=collections_pb2.ShardKey(keyword="k"))),
     "PUT", "/shards", {"shard_key": "k"}),
    ("DeleteShardKey", collections_pb2.DeleteShardKeyRequest(
        request=collections_pb2.DeleteShardKey(
            shard_key=collections_pb2.ShardKey(keyword="k"))),
     "POST", "/shards/delete", {"shard_key": "k"}),
    ("ListShardKeys", collections_pb2.ListShardKeysRequest(), "GET", "/shards", None),
])
def test_cluster_layout_unimplemented_as_rest(stub: Any, clients: Any, http: httpx.Client,
                                              collection_name: str, rpc: str, request_: Any,
                                              method: str, path: str, body: Any) -> None:
    """REST answers 400 naming the unserved operation; gRPC says UNIMPLEMENTED with that
    message."""
    _, r = clients
    r.create_collection(collection_name, vectors_config=models.VectorParams(
        size=4, distance=models.Distance.COSINE))
    try:
        status, message = _rest_error(http, method, f"/collections/{collection_name}{path}",
                                      body)
        assert status == 400 and "single node" in message
        request_.collection_name = collection_name
        with pytest.raises(grpc.RpcError) as exc:
            getattr(stub, rpc)(request_)
        assert (exc.value.code(), exc.value.details()) == \
            (grpc.StatusCode.UNIMPLEMENTED, message)
    finally:
        r.delete_collection(collection_name)


def test_api_keys_as_rest(tmp_path: Path) -> None:
    """No key, a read-only key, the full key: each RPC answers what its REST twin answers
    (the key is checked before an unserved operation is named, as over REST)."""
    key, ro = "g1-manage", "g1-read"
    srv = QuiverServer(tmp_path / "storage", grpc=True, env={
        "QUIVER__SERVICE__API_KEY": key, "QUIVER__SERVICE__READ_ONLY_API_KEY": ro,
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")}).start()
    try:
        with grpc.insecure_channel(srv.grpc_target) as channel, \
                httpx.Client(base_url=srv.url, timeout=30) as http:
            stub = collections_service_pb2_grpc.CollectionsStub(channel)
            name = "keyed"
            create = collections_pb2.CreateCollection(
                collection_name=name, vectors_config=collections_pb2.VectorsConfig(
                    params=collections_pb2.VectorParams(size=4, distance=collections_pb2.Dot)))
            shard_key = collections_pb2.CreateShardKeyRequest(
                collection_name=name, request=collections_pb2.CreateShardKey(
                    shard_key=collections_pb2.ShardKey(keyword="k")))
            rest_create = ("PUT", f"/collections/{name}",
                           {"vectors": {"size": 4, "distance": "Dot"}})
            rest_shard = ("PUT", f"/collections/{name}/shards", {"shard_key": "k"})

            def rest(api_key: str | None, method: str, path: str, body: Any = None
                     ) -> tuple[int, str]:
                resp = http.request(method, path, json=body,
                                    headers={"api-key": api_key} if api_key else {})
                if resp.status_code == 401:  # Qdrant's 401 is a plain-text body
                    return resp.status_code, resp.text
                return resp.status_code, resp.json()["status"]["error"]

            def refused(api_key: str | None, call: Any, msg: Any, method: str, path: str,
                        body: Any = None) -> None:
                status, message = rest(api_key, method, path, body)
                meta = (("api-key", api_key),) if api_key else ()
                with pytest.raises(grpc.RpcError) as exc:
                    call(msg, metadata=meta)
                _assert_rpc_error(exc, status, message)

            refused(None, stub.List, collections_pb2.ListCollectionsRequest(), "GET",
                    "/collections")
            refused(ro, stub.Create, create, *rest_create)
            assert not http.get(f"/collections/{name}/exists",
                                headers={"api-key": ro}).json()["result"]["exists"]
            refused(ro, stub.CreateShardKey, shard_key, *rest_shard)
            assert stub.Create(create, metadata=(("api-key", key),)).result is True
            assert stub.Get(collections_pb2.GetCollectionInfoRequest(collection_name=name),
                            metadata=(("api-key", ro),)).result.config.params.vectors_config \
                .params.size == 4
            status, message = rest(key, *rest_shard)
            assert status == 400
            with pytest.raises(grpc.RpcError) as exc:
                stub.CreateShardKey(shard_key, metadata=(("api-key", key),))
            assert (exc.value.code(), exc.value.details()) == \
                (grpc.StatusCode.UNIMPLEMENTED, message)
    finally:
        srv.stop()
