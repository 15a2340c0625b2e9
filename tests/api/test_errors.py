"""The error tree and its one status table (api/errors.py): every EngineError subclass, the
engine's, the snapshot subsystem's and HTTP's own, answers with a status from STATUS (4xx for a
UserError, 5xx for a ServiceError) in Qdrant's envelope; then one error of each status through
the real app, byte for byte as Qdrant answers."""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from collections.abc import Iterator

import orjson
import pytest
from openapi_contract import validate_response

import api
import engine
import snapshots
from api import errors as http_errors
from api.auth import BAD_KEY, NO_KEY, READ_ONLY
from api.errors import (
    STATUS,
    MethodNotAllowed,
    PayloadTooLarge,
    Unauthorized,
    from_exception,
    plain_text,
    status_of,
)
from engine import errors as e
from engine.errors import EngineError, ServiceError, UserError

with warnings.catch_warnings():  # "install httpx2": the httpx-based client works as it is
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from api.app import create_app  # noqa: E402
from api.settings import load_settings  # noqa: E402


def _import_everything() -> None:
    """Every module that could define an error class, so __subclasses__ sees them all."""
    for pkg in (engine, snapshots, api):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            importlib.import_module(info.name)


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


_import_everything()
# the product's classes only: a test module may define its own (as one below does)
ALL = sorted({c for c in _subclasses(EngineError)
              if c.__module__.partition(".")[0] in ("engine", "snapshots", "api")},
             key=lambda c: f"{c.__module__}.{c.__qualname__}")
TREE_MODULES = (e.__name__, http_errors.__name__)

# Qdrant's message prefixes: clients match on them, so they must never drift.
PREFIXES: dict[type[EngineError], str] = {
    e.BadInput: "Wrong input: ",
    e.BadRequest: "Bad request: ",
    e.ValidationError: "Validation error: ",
    e.Unprocessable: "Unprocessable entity: ",
    e.NotFound: "Not found: ",
    e.AlreadyExists: "Wrong input: ",
    e.Conflict: "Conflict: ",
    e.Forbidden: "Forbidden: ",
    e.Timeout: "Timeout error: ",
    e.StorageError: "Service internal error: ",
    e.StorageFull: "Service internal error: No space left on device: ",
    Unauthorized: "",
    PayloadTooLarge: "Payload too large: ",
    MethodNotAllowed: "Method not allowed: ",
}


def _id(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_the_walk_finds_every_branch() -> None:
    names = {c.__name__ for c in ALL}
    assert {"UserError", "ServiceError", "StorageFull", "AlreadyExists", "Unauthorized",
            "PayloadTooLarge", "MethodNotAllowed", "ChecksumMismatch",
            "SnapshotFormatError"} <= names


@pytest.mark.parametrize("cls", ALL, ids=_id)
def test_every_error_has_its_status(cls: type[EngineError]) -> None:
    assert issubclass(cls, UserError) != issubclass(cls, ServiceError), \
        f"{_id(cls)} must be a UserError or a ServiceError, not neither nor both"
    if cls.__module__ in TREE_MODULES:  # the tree's own kinds each have a row
        assert cls in STATUS, f"{_id(cls)} has no row in api.errors.STATUS"
    else:  # a subsystem's refinement answers as its nearest kind with a row
        bases = (EngineError, UserError, ServiceError)
        assert any(k in STATUS for k in cls.__mro__[1:] if k not in bases)
    status = status_of(cls("detail"))
    if issubclass(cls, UserError):
        assert 400 <= status < 500, (_id(cls), status)
    else:
        assert 500 <= status < 600, (_id(cls), status)


@pytest.mark.parametrize("cls", ALL, ids=_id)
def test_from_exception_renders_qdrants_envelope(cls: type[EngineError]) -> None:
    exc = cls("what went wrong")
    resp = from_exception(exc, started=0.0)
    assert resp.status_code == status_of(exc) == STATUS[next(k for k in cls.__mro__
                                                             if k in STATUS)]
    assert resp.media_type == "application/json"
    body = orjson.loads(resp.body)
    assert list(body) == ["status", "time"]
    assert body["status"] == {"error": cls.prefix + "what went wrong"}
    assert body["status"]["error"] == exc.message == str(exc)
    assert isinstance(body["time"], float) and body["time"] > 0
    # refusals made outside a handler carry no timing, as before
    assert orjson.loads(from_exception(exc).body)["time"] == 0.0


@pytest.mark.parametrize("cls", sorted(PREFIXES, key=_id), ids=_id)
def test_prefixes_are_qdrants(cls: type[EngineError]) -> None:
    assert cls.prefix == PREFIXES[cls]
    assert cls("x").message == PREFIXES[cls] + "x"


def test_the_most_specific_row_wins_whatever_the_order(monkeypatch: pytest.MonkeyPatch) -> None:
    class Gone(e.NotFound):
        pass

    class Odd(EngineError):  # on neither branch: an internal error
        pass

    cases = {e.AlreadyExists: 409, e.StorageFull: 507, e.StorageError: 500, Gone: 404,
             Odd: 500, e.BadInput: 400, UserError: 400, ServiceError: 500}
    for table in (dict(STATUS), dict(reversed(STATUS.items()))):
        monkeypatch.setattr(http_errors, "STATUS", table)
        assert {cls: status_of(cls("x")) for cls in cases} == cases
    monkeypatch.delitem(http_errors.STATUS, EngineError)
    assert status_of(Odd("x")) == 500


def test_plain_text_refusals() -> None:
    for exc, status, text in ((Unauthorized(NO_KEY), 401, NO_KEY),
                              (Unauthorized(BAD_KEY), 401, BAD_KEY),
                              (e.Forbidden("Global manage access is required"), 403, READ_ONLY)):
        resp = plain_text(exc)
        assert (resp.status_code, resp.body) == (status, text.encode())
        assert resp.headers["content-type"] == "text/plain; charset=utf-8"


# ---- through the real app ------------------------------------------------------------------

KEY, RO = "manage-secret", "read-only-secret"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    base = tmp_path_factory.mktemp("errors")
    settings = load_settings(env={}, overrides={
        "storage": {"storage_path": str(base / "storage"), "snapshots_path": str(base / "snaps")},
        "service": {"api_key": KEY, "read_only_api_key": RO, "max_request_size_mb": 1,
                    "max_snapshot_upload_mb": 1}})
    with TestClient(create_app(settings), headers={"api-key": KEY}) as c:
        c.put("/collections/errs", json={"vectors": {"size": 2, "distance": "Dot"}}) \
            .raise_for_status()
        yield c


def _envelope(resp, status: int) -> str:  # type: ignore[no-untyped-def]
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = orjson.loads(resp.content)
    validate_response(resp.request.method, resp.request.url.path, resp.status_code, body)
    assert list(body) == ["status", "time"] and isinstance(body["time"], float)
    assert list(body["status"]) == ["error"]
    return body["status"]["error"]


def test_400_bad_json(client: TestClient) -> None:
    r = client.put("/collections/errs/points?wait=true", content=b"{bad")
    assert _envelope(r, 400).startswith("Bad request: Format error in JSON body: ")


def test_400_wrong_input(client: TestClient) -> None:
    r = client.put("/collections/errs/points?wait=true",
                   json={"points": [{"id": 1, "vector": [1, 2, 3]}]})
    assert _envelope(r, 400) == "Wrong input: Vector dimension error: expected dim: 2, got 3"


def test_404_unknown_collection_and_endpoint(client: TestClient) -> None:
    r = client.get("/collections/missing")
    assert _envelope(r, 404) == "Not found: Collection `missing` doesn't exist!"
    r = client.get("/nope")
    assert _envelope(r, 404) == "Not found: no such endpoint GET /nope"
    assert r.content == b'{"status":{"error":"Not found: no such endpoint GET /nope"},"time":0.0}'


def test_405(client: TestClient) -> None:
    r = client.delete("/")
    assert _envelope(r, 405) == "Method not allowed: DELETE /"
    assert r.content == b'{"status":{"error":"Method not allowed: DELETE /"},"time":0.0}'


def test_409_already_exists(client: TestClient) -> None:
    r = client.put("/collections/errs", json={"vectors": {"size": 2, "distance": "Dot"}})
    assert _envelope(r, 409) == "Wrong input: Collection `errs` already exists!"


def test_413_request_body(client: TestClient) -> None:
    r = client.post("/collections/errs/points/search", content=b"x" * (2 << 20))
    assert _envelope(r, 413).startswith("Payload too large: ")
    assert r.content == (b'{"status":{"error":"Payload too large: request body exceeds the '
                         b'limit of 1048576 bytes (service.max_request_size_mb)"},"time":0.0}')


def test_413_snapshot_upload(client: TestClient) -> None:
    r = client.post("/collections/errs/snapshots/upload", content=b"x" * (2 << 20),
                    headers={"content-type": "multipart/form-data; boundary=b"})
    assert _envelope(r, 413) == ("Payload too large: the upload exceeds the limit of 1048576 "
                                 "bytes (service.max_snapshot_upload_mb)")
    assert r.headers["connection"] == "close"


def test_422_bad_checksum(client: TestClient) -> None:
    r = client.post("/collections/errs/snapshots/upload?checksum=zz", content=b"--b--",
                    headers={"content-type": "multipart/form-data; boundary=b"})
    assert _envelope(r, 422) == \
        "Unprocessable entity: Validation error: [checksum: invalid_sha256_hash: 'zz']"


def test_401_plain_text(client: TestClient) -> None:
    """Qdrant answers these from its auth middleware in plain text (its OpenAPI says JSON)."""
    for headers, text in (({"api-key": ""}, BAD_KEY), ({"api-key": "wrong"}, BAD_KEY)):
        r = client.get("/collections", headers=headers)
        assert (r.status_code, r.text) == (401, text)
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
    del client.headers["api-key"]
    try:
        r = client.get("/collections")
    finally:
        client.headers["api-key"] = KEY
    assert (r.status_code, r.text) == (401, NO_KEY)
    assert r.headers["content-type"] == "text/plain; charset=utf-8"


def test_403_read_only_key(client: TestClient) -> None:
    r = client.delete("/collections/errs", headers={"api-key": RO})
    assert _envelope(r, 403) == READ_ONLY
    assert r.content == b'{"status":{"error":"' + READ_ONLY.encode() + b'"},"time":0.0}'
    r = client.post("/collections/errs/snapshots/upload", headers={"api-key": RO})
    assert (r.status_code, r.text) == (403, READ_ONLY)
    assert r.headers["content-type"] == "text/plain; charset=utf-8"


def test_ok_builds_the_response_starlette_would() -> None:
    """errors.ok builds its JSONResponse without Starlette's generic header set-up: the same
    body and raw headers (order included) as the class itself gives for that body."""
    import time as _time  # noqa: PLC0415

    import numpy as _np  # noqa: PLC0415

    result = {"points": [{"id": 1, "score": 0.5}], "n": _np.float32(2.5), "s": "é"}
    resp = http_errors.ok(result, _time.perf_counter())
    body = orjson.loads(resp.body)
    assert body["result"] == {"points": [{"id": 1, "score": 0.5}], "n": 2.5, "s": "é"}
    assert body["status"] == "ok" and 0 <= body["time"] < 1
    same = http_errors.JSONResponse(body)
    assert resp.body == same.body or orjson.loads(same.body) == body
    assert resp.raw_headers == [(b"content-length", str(len(resp.body)).encode()),
                                (b"content-type", b"application/json")]
    assert [k for k, _ in same.raw_headers] == [k for k, _ in resp.raw_headers]
    assert resp.status_code == 200 and resp.background is None and resp.media_type == \
        "application/json"
    resp.headers["x-extra"] = "1"  # a handler may still add headers to its own response
    assert (b"x-extra", b"1") in resp.raw_headers
    assert (b"x-extra", b"1") not in http_errors.ok(result, _time.perf_counter()).raw_headers
