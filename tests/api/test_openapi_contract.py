"""Self-checks of tests/openapi_contract.py on hand-written Qdrant-shaped responses."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openapi_contract as oc
import pytest

COLLECTION_INFO: dict[str, Any] = {
    "result": {
        "status": "green",
        "optimizer_status": "ok",
        "segments_count": 1,
        "points_count": 3,
        "indexed_vectors_count": 0,
        "config": {
            "params": {
                "vectors": {"size": 4, "distance": "Cosine"},
                "shard_number": 1,
                "replication_factor": 1,
                "write_consistency_factor": 1,
                "on_disk_payload": True,
            },
            "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000},
            "optimizer_config": {
                "deleted_threshold": 0.2,
                "vacuum_min_vector_number": 1000,
                "default_segment_number": 0,
                "flush_interval_sec": 5,
            },
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
        },
        "payload_schema": {},
    },
    "status": "ok",
    "time": 0.001,
}
NOT_FOUND = {"status": {"error": "Not found: Collection `x` doesn't exist!"}, "time": 0.0}
UUID = "550e8400-e29b-41d4-a716-446655440000"


def query_response(n: int = 3, dim: int = 0) -> dict[str, Any]:
    points = []
    for i in range(n):
        point: dict[str, Any] = {
            "id": i if i % 2 else UUID,
            "version": 1,
            "score": 1.0 - i / 10,
            "payload": {"city": "Berlin", "n": i},
        }
        if dim:
            point["vector"] = [0.5] * dim
        points.append(point)
    return {"result": {"points": points}, "status": "ok", "time": 0.0002}


def edited(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Deep copy of ``body`` with ``a.b.0.c`` set to ``value`` (or deleted if value is DELETE)."""
    out = copy.deepcopy(body)
    *parents, last = dotted.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return out


DELETE = object()


def rejects(method: str, path: str, status: int, body: Any, **kw: Any) -> oc.ContractViolation:
    with pytest.raises(oc.ContractViolation) as info:
        oc.validate_response(method, path, status, body, **kw)
    return info.value


# --------------------------------------------------------------------------- the brief's four


def test_valid_collection_info_passes() -> None:
    oc.validate_response("GET", "/collections/foo", 200, COLLECTION_INFO)
    assert ("GET", "/collections/{collection_name}", "200") in oc.COVERED


@pytest.mark.parametrize(
    ("dotted", "value", "json_path"),
    [
        ("result.segments_count", "1", "$.result.segments_count"),
        ("result.status", "purple", "$.result.status"),
        ("result.config.params.vectors.distance", "cosine", "$.result.config.params.vectors"),
        ("result.points_count", 3.0, "$.result.points_count"),  # integers are strict
        ("result.config.hnsw_config.m", -1, "$.result.config.hnsw_config.m"),
        ("result.config", DELETE, "$.result"),
    ],
)
def test_wrong_collection_info_is_rejected(dotted: str, value: Any, json_path: str) -> None:
    violation = rejects("GET", "/collections/foo", 200, edited(COLLECTION_INFO, dotted, value))
    assert violation.json_path is not None and violation.json_path.startswith(json_path)
    message = str(violation)
    assert "GET /collections/foo -> 200" in message
    assert "GET /collections/{collection_name} responses[200]" in message
    assert violation.json_path in message


def test_error_envelope_404_passes() -> None:
    oc.validate_response("GET", "/collections/x", 404, NOT_FOUND)
    assert ("GET", "/collections/{collection_name}", "4XX") in oc.COVERED
    oc.validate_response("GET", "/collections/x", 500, NOT_FOUND)  # falls back to "default"
    assert ("GET", "/collections/{collection_name}", "default") in oc.COVERED


def test_scored_point_without_version_fails() -> None:
    body = edited(query_response(), "result.points.1.version", DELETE)
    violation = rejects("POST", "/collections/foo/points/query", 200, body)
    assert violation.json_path == "$.result.points[1]"
    assert "'version' is a required property" in str(violation)


# --------------------------------------------------------------------------- routing


def test_paths_are_normalised() -> None:
    oc.validate_response(
        "POST", "//collections/foo//points/query/?timeout=3", 200, query_response()
    )
    violation = rejects(
        "POST", "/collections/foo/points/query/", 200, edited(query_response(), "result", [])
    )
    assert violation.path == "/collections/foo/points/query"
    assert oc.normalise_path("/qdrant//collections/a/?x=1", "/qdrant/") == "/collections/a"


def test_undocumented_paths_are_recorded_not_checked() -> None:
    oc.validate_response("POST", "/collections/foo/points/search", 200, {"anything": 1})
    oc.validate_response("GET", "/quiver/debug", 200, [1, 2])
    assert ("POST", "/collections/{collection_name}/points/search") in oc.UNDOCUMENTED
    assert ("GET", "/quiver/debug") in oc.UNDOCUMENTED
    # /healthz and /metrics are in Qdrant's spec, as text/plain: documented, nothing to check
    oc.validate_response("GET", "/healthz", 200, None, content_type="text/plain")
    assert ("GET", "/healthz") not in oc.UNDOCUMENTED
    rejects("GET", "/metrics", 200, {"up": 1}, content_type="application/json")
    rejects("GET", "/collections/foo", 200, None, content_type="text/plain")


def test_literal_segments_beat_parameters() -> None:
    assert oc.match_operation("POST", "/collections/aliases") == ("POST", "/collections/aliases")
    assert oc.match_operation("GET", "/collections/aliases") == (
        "GET",
        "/collections/{collection_name}",
    )
    assert oc.match_operation("POST", "/collections/c/points/query/batch") == (
        "POST",
        "/collections/{collection_name}/points/query/batch",
    )
    assert oc.match_operation("POST", "/collections/c/points/search") is None
    assert ("POST", "/collections/{collection_name}/points/query") in oc.documented_operations()


def test_undocumented_status_code_fails() -> None:
    version = {"title": "qdrant - vector search engine", "version": "1.19.0", "commit": "a" * 40}
    oc.validate_response("GET", "/", 200, version)
    assert "not documented" in str(rejects("GET", "/", 500, NOT_FOUND))


# --------------------------------------------------------------------------- OpenAPI 3.0 specifics


def test_nullable() -> None:
    oc.validate_response("GET", "/collections/foo", 200, edited(COLLECTION_INFO, "usage", None))
    oc.validate_response(
        "GET", "/collections/foo", 200, edited(COLLECTION_INFO, "result.points_count", None)
    )
    # a bare {"nullable": true} arm means null, not "anything"
    rejects("GET", "/collections/foo", 200, edited(COLLECTION_INFO, "usage", "cheap"))
    rejects(
        "POST",
        "/collections/c/points/query",
        200,
        edited(query_response(), "result.points.0.payload", [1]),
    )
    # required + non-nullable stays non-null
    rejects("GET", "/collections/foo", 200, edited(COLLECTION_INFO, "result.segments_count", None))


def test_one_of_alternatives() -> None:
    error_status = {"error": "disk full"}
    oc.validate_response(
        "GET",
        "/collections/f",
        200,
        edited(COLLECTION_INFO, "result.optimizer_status", error_status),
    )
    rejects(
        "GET",
        "/collections/f",
        200,
        edited(COLLECTION_INFO, "result.optimizer_status", {"error": "x", "extra": 1}),
    )
    rejects("GET", "/collections/f", 200, edited(COLLECTION_INFO, "result.optimizer_status", "OK"))


def test_any_of_point_ids_and_vectors() -> None:
    body = query_response(4, dim=3)
    body["result"]["points"][2]["vector"] = {
        "image": [0.1, 0.2],
        "text": {"indices": [1], "values": [0.5]},
    }
    body["result"]["points"][3]["vector"] = [[0.1, 0.2], [0.3, 0.4]]
    oc.validate_response("POST", "/collections/c/points/query", 200, body)
    rejects("POST", "/collections/c/points/query", 200, edited(body, "result.points.1.id", -1))
    rejects("POST", "/collections/c/points/query", 200, edited(body, "result.points.1.id", 1.0))
    rejects("POST", "/collections/c/points/query", 200, edited(body, "result.points.1.vector", "x"))


@pytest.mark.parametrize(
    ("dotted", "value", "ok"),
    [
        ("result.points.0.id", UUID, True),
        ("result.points.0.id", UUID.upper(), False),  # Qdrant prints canonical lowercase
        ("result.points.0.id", UUID.replace("-", ""), False),
        ("result.points.0.id", "not-a-uuid", False),
        ("result.points.0.id", 2**64 - 1, True),  # uint64
        ("result.points.0.id", 2**64, False),
        ("result.points.0.version", 2**64, False),
        ("result.points.0.score", 1, True),  # an integer is a number
        ("result.points.0.score", float("inf"), False),  # "float" = finite f32
        ("result.points.0.score", 1e39, False),
        ("result.points.0.score", True, False),
        ("result.points.0.version", True, False),
    ],
)
def test_formats_and_numbers(dotted: str, value: Any, ok: bool) -> None:
    body = edited(query_response(), dotted, value)
    if ok:
        oc.validate_response("POST", "/collections/c/points/query", 200, body)
    else:
        rejects("POST", "/collections/c/points/query", 200, body)


def test_unknown_formats_are_ignored() -> None:
    # SnapshotDescription.creation_time has format "partial-date-time" (naive ISO time)
    snapshot = {
        "name": "c-1-2024-07-22-08-31-55.snapshot",
        "creation_time": "2022-08-04T10:49:10",
        "size": 1000,
        "checksum": "ab" * 32,
    }
    body = {"result": [snapshot], "status": "ok", "time": 0.001}
    oc.validate_response("GET", "/collections/c/snapshots", 200, body)


def test_strict_envelope() -> None:
    no_time = edited(COLLECTION_INFO, "time", DELETE)
    rejects("GET", "/collections/foo", 200, no_time)
    oc.validate_response("GET", "/collections/foo", 200, no_time, strict=False)
    oc.validate_response("GET", "/collections/foo", 200, {}, strict=False)  # the spec, verbatim
    rejects("GET", "/collections/foo", 200, edited(COLLECTION_INFO, "result", DELETE))
    rejects("GET", "/collections/foo", 200, edited(COLLECTION_INFO, "status", "accepted"))
    rejects("GET", "/collections/x", 404, {"status": {}, "time": 0.0})  # no status.error
    oc.validate_response("GET", "/collections/x", 404, {"status": {}, "time": 0.0}, strict=False)
    # the spec itself wants an object there, strict or not
    rejects("GET", "/collections/x", 404, {"status": "error", "time": 0.0}, strict=False)
    accepted = {"status": "accepted", "time": 0.01}
    oc.validate_response("POST", "/collections/c/snapshots?wait=false", 202, accepted)
    rejects("POST", "/collections/c/snapshots", 202, edited(accepted, "status", "ok"))


def test_every_response_schema_compiles() -> None:
    assert oc.build_all_validators() > 150


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _types(schema: dict[str, Any]) -> set[str] | None:
    declared = schema.get("type")
    if declared is None:
        return {"object"} if "properties" in schema or "required" in schema else None
    return set(declared) if isinstance(declared, list) else {declared}


def _discriminated(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when no JSON value can match both ``oneOf`` alternatives (sufficient test)."""
    ta, tb = _types(a), _types(b)
    if ta is not None and tb is not None and not ta & tb:
        return True
    if "enum" in a and "enum" in b and not set(map(repr, a["enum"])) & set(map(repr, b["enum"])):
        return True
    props_a, props_b = a.get("properties", {}), b.get("properties", {})
    for name in set(a.get("required", [])) & set(b.get("required", [])):
        ea, eb = props_a.get(name, {}).get("enum"), props_b.get(name, {}).get("enum")
        if ea and eb and not set(map(repr, ea)) & set(map(repr, eb)):
            return True
    for x, y in ((a, b), (b, a)):
        if x.get("additionalProperties") is False and set(y.get("required", [])) - set(
            x.get("properties", {})
        ):
            return True
    return False


def test_one_of_alternatives_in_spec_never_overlap() -> None:
    """Keeps strict oneOf safe: an overlapping oneOf would give false failures on valid data."""
    schemas = oc._spec().components["schemas"]
    found: list[tuple[str, list[Any]]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "oneOf" in node:
                found.append((where, node["oneOf"]))
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}/{i}")

    walk(schemas, "#/components/schemas")
    assert found, "expected oneOf in Qdrant's spec"
    for where, alternatives in found:
        resolved = [_resolve(alt, schemas) for alt in alternatives]
        for i, a in enumerate(resolved):
            for b in resolved[i + 1 :]:
                assert _discriminated(a, b), f"overlapping oneOf alternatives at {where}"


@pytest.mark.skipif(oc.fastjsonschema is None, reason="fastjsonschema not installed")
def test_fast_and_diagnosing_engines_agree() -> None:
    cases: list[tuple[str, str, int, Any]] = [
        ("GET", "/collections/{collection_name}", 200, COLLECTION_INFO),
        (
            "GET",
            "/collections/{collection_name}",
            200,
            edited(COLLECTION_INFO, "result.points_count", 3.0),
        ),
        ("GET", "/collections/{collection_name}", 200, edited(COLLECTION_INFO, "usage", "x")),
        (
            "GET",
            "/collections/{collection_name}",
            200,
            edited(COLLECTION_INFO, "result.optimizer_status", {"error": "e"}),
        ),
        ("POST", "/collections/{collection_name}/points/query", 200, query_response(4, 2)),
        (
            "POST",
            "/collections/{collection_name}/points/query",
            200,
            edited(query_response(), "result.points.0.id", UUID.upper()),
        ),
        (
            "POST",
            "/collections/{collection_name}/points/query",
            200,
            edited(query_response(), "result.points.0.score", 1e39),
        ),
        (
            "POST",
            "/collections/{collection_name}/points/query",
            200,
            edited(query_response(), "result.points.0.id", 2**64),
        ),
        ("GET", "/collections/{collection_name}", 404, NOT_FOUND),
        ("GET", "/collections/{collection_name}", 404, {"status": {}, "time": 0}),
    ]
    for method, template, status, body in cases:
        key = oc._response_key(oc._spec().operations[(method, template)].responses, status)
        validator = oc._validator(method, template, key, True)
        assert validator.fast is not None
        try:
            validator.fast(body)
            fast_ok = True
        except oc.fastjsonschema.JsonSchemaValueException:
            fast_ok = False
        assert fast_ok == validator.slow.is_valid(body), (method, template, body)


def test_validation_is_fast_enough() -> None:
    body = query_response(10)
    big = query_response(200, dim=128)
    oc.validate_response("POST", "/collections/c/points/query", 200, body)  # compile once
    start = time.perf_counter()
    for _ in range(2000):
        oc.validate_response("POST", "/collections/c/points/query", 200, body)
    for _ in range(5):
        oc.validate_response("POST", "/collections/c/points/query", 200, big)
    elapsed = time.perf_counter() - start
    budget = 5.0 if oc.fastjsonschema is not None else 60.0
    assert elapsed < budget, f"2000 small + 5 large validations took {elapsed:.2f}s"


# --------------------------------------------------------------------------- httpx hooks


def _mock_handler(request: httpx.Request) -> httpx.Response:
    path = request.url.path.removeprefix("/qdrant")
    if path == "/collections/good":
        return httpx.Response(200, json=COLLECTION_INFO)
    if path == "/collections/bad":
        return httpx.Response(200, json=edited(COLLECTION_INFO, "result.segments_count", "1"))
    if path == "/collections/nan/points/query":
        text = json.dumps(query_response()).replace("1.0", "NaN", 1)
        return httpx.Response(200, content=text, headers={"content-type": "application/json"})
    if path == "/healthz":
        return httpx.Response(200, text="healthz check passed")
    return httpx.Response(404, json={"status": {"error": f"no route {path}"}, "time": 0.0})


def test_httpx_hook_raises_and_collects() -> None:
    with httpx.Client(transport=httpx.MockTransport(_mock_handler), base_url="http://q") as client:
        recorder = oc.install_httpx_hook(client)
        assert client.get("/collections/good").json()["status"] == "ok"
        assert client.get("/healthz").text == "healthz check passed"
        assert client.get("/collections/missing").status_code == 404
        with pytest.raises(oc.ContractViolation, match=r"segments_count"):
            client.get("/collections/bad")
        with pytest.raises(oc.ContractViolation, match="NaN"):
            client.post("/collections/nan/points/query", json={})
        client.post("/collections/good/points/search", json={})
    assert recorder.checked == 6
    assert len(recorder.failures) == 2
    assert ("POST", "/collections/{collection_name}/points/search") in oc.UNDOCUMENTED
    with pytest.raises(AssertionError, match="2 OpenAPI contract violation"):
        recorder.assert_ok()


def test_async_httpx_hook_collects_without_raising() -> None:
    async def run() -> oc.ContractRecorder:
        transport = httpx.MockTransport(_mock_handler)
        async with httpx.AsyncClient(transport=transport, base_url="http://q/qdrant") as client:
            recorder = oc.install_httpx_hook(client, raise_on_violation=False, base_path="/qdrant")
            await client.get("/collections/good")
            await client.get("/collections/bad")
        return recorder

    recorder = asyncio.run(run())
    assert recorder.checked == 2
    assert [f.path for f in recorder.failures] == ["/collections/bad"]


# --------------------------------------------------------------------------- qdrant-client


class _StubQdrant(BaseHTTPRequestHandler):
    """Canned Qdrant answers, optionally under a path prefix."""

    routes: dict[tuple[str, str], tuple[int, Any]] = {}
    prefix = ""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        if self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix) :]
        status, body = self.routes.get(
            (self.command, path), (404, {"status": {"error": f"Not found: {path}"}, "time": 0.0})
        )
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, *args: Any) -> None:  # keep pytest output quiet
        pass


@pytest.fixture
def stub_qdrant() -> Iterator[tuple[str, type[_StubQdrant]]]:
    handler = type("Handler", (_StubQdrant,), {"routes": {}, "prefix": ""})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _stub_routes() -> dict[tuple[str, str], tuple[int, Any]]:
    return {
        ("GET", "/collections/foo"): (200, COLLECTION_INFO),
        ("GET", "/collections/foo/exists"): (200, {"result": {"exists": True}, "status": "ok"}),
        ("PUT", "/collections/foo/points"): (
            200,
            {"result": {"operation_id": 7, "status": "completed"}, "status": "ok", "time": 0.001},
        ),
        ("POST", "/collections/foo/points/query"): (200, query_response(2)),
    }


def test_validating_qdrant_client_collects(stub_qdrant: tuple[str, type[_StubQdrant]]) -> None:
    from qdrant_client import models
    from qdrant_client.http.exceptions import UnexpectedResponse

    url, handler = stub_qdrant
    handler.routes = _stub_routes()
    client = oc.validating_qdrant_client(url, raise_on_violation=False)
    try:
        assert client.get_collection("foo").points_count == 3
        client.upsert("foo", [models.PointStruct(id=1, vector=[0.1, 0.2, 0.3, 0.4])])
        assert [p.id for p in client.query_points("foo", query=[0.1, 0.2, 0.3, 0.4]).points] == [
            UUID,
            1,
        ]
        with pytest.raises(UnexpectedResponse):
            client.get_collection("missing")  # a well-formed 404 is no violation
        # qdrant-client happily parses an envelope without "time"; the contract check does not
        assert client.collection_exists("foo") is True
    finally:
        client.close()
    assert client.contract.checked == 5
    assert [(f.method, f.path) for f in client.contract_failures] == [
        ("GET", "/collections/foo/exists")
    ]
    assert "'time' is a required property" in str(client.contract_failures[0])


def test_validating_qdrant_client_raises(stub_qdrant: tuple[str, type[_StubQdrant]]) -> None:
    from qdrant_client.http.exceptions import ResponseHandlingException

    url, handler = stub_qdrant
    handler.routes = _stub_routes()
    handler.prefix = "/qdrant"
    client = oc.validating_qdrant_client(url + "/qdrant")
    try:
        assert client.get_collection("foo").status == "green"  # prefix stripped before matching
        with pytest.raises(ResponseHandlingException) as info:
            client.collection_exists("foo")
    finally:
        client.close()
    assert isinstance(info.value.source, oc.ContractViolation)
    assert "GET /collections/foo/exists -> 200" in str(info.value)
    assert len(client.contract_failures) == 1


def test_validating_async_qdrant_client(stub_qdrant: tuple[str, type[_StubQdrant]]) -> None:
    url, handler = stub_qdrant
    handler.routes = _stub_routes()

    async def run() -> Any:
        client = oc.validating_async_qdrant_client(url, raise_on_violation=False)
        try:
            info = await client.get_collection("foo")
            await client.collection_exists("foo")
        finally:
            await client.close()
        return client, info

    client, info = asyncio.run(run())
    assert info.segments_count == 1
    assert client.contract.checked == 2
    assert len(client.contract_failures) == 1


def test_works_without_fastjsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oc, "fastjsonschema", None)
    op = oc._spec().operations[("POST", "/collections/{collection_name}/points/query")]
    validator = oc._ResponseValidator(
        oc._translate(op.responses["200"]["content"]["application/json"]["schema"])
    )
    assert validator.fast is None
    assert validator.errors(query_response()) == ([], None)
    errors, _ = validator.errors(edited(query_response(), "result.points.0.id", 1.0))
    assert errors and errors[0].json_path.startswith("$.result.points[0]")
