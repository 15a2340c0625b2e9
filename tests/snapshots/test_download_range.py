"""HTTP Range on snapshot downloads, for both storage backends: local files (Starlette's
FileResponse) and S3 objects (ranged GetObject, against a moto server on loopback). Starlette's
own range parser is the oracle for the single-range answers of both."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from moto_s3 import moto_s3, s3_env
from server import QuiverServer
from starlette.requests import ClientDisconnect
from starlette.responses import FileResponse
from starlette.responses import RangeNotSatisfiable as StarletteUnsatisfiable

import api.snapshot_cli
from api.cli import main as quiver
from api.routes.snapshots import _ClosingStream
from snapshots.storage import BodyChunks, RangeNotSatisfiable, parse_range

BUCKET = "quiver-range"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuiverServer]:
    base = tmp_path_factory.mktemp("range_s3")
    with moto_s3(base, BUCKET) as s3:
        env = {"QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps"), **s3_env(s3.url, BUCKET)}
        srv = QuiverServer(base / "storage", env=env).start()
        yield srv
        srv.stop()


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest) -> QuiverServer:
    return request.getfixturevalue("server" if request.param == "local" else "s3_server")


class Snap:
    def __init__(self, srv: QuiverServer, path: str, info: dict[str, Any]) -> None:
        self.url = f"{srv.url}{path}/{info['name']}"
        self.name, self.checksum = info["name"], info["checksum"]
        r = httpx.get(self.url, timeout=60)
        assert r.status_code == 200, r.text
        self.data, self.headers = r.content, r.headers
        self.size = len(self.data)

    def get(self, **headers: str) -> httpx.Response:
        return httpx.get(self.url, headers=headers, timeout=60)


_snaps: dict[str, Snap] = {}


@pytest.fixture
def snap(backend: QuiverServer) -> Snap:
    """One collection snapshot per server (a few hundred KB of random vectors)."""
    if backend.url not in _snaps:
        coll = "range_" + str(backend.port)
        with httpx.Client(base_url=backend.url, timeout=60) as c:
            c.put(f"/collections/{coll}", json={"vectors": {"size": 32, "distance": "Dot"}})
            rng = np.random.default_rng(7)
            vecs = rng.random((2000, 32)).tolist()
            r = c.put(f"/collections/{coll}/points?wait=true",
                      json={"points": [{"id": i, "vector": v} for i, v in enumerate(vecs)]})
            assert r.status_code == 200, r.text
            r = c.post(f"/collections/{coll}/snapshots")
            assert r.status_code == 200, r.text
            _snaps[backend.url] = Snap(backend, f"/collections/{coll}/snapshots",
                                       r.json()["result"])
    return _snaps[backend.url]


def _oracle(header: str, size: int) -> tuple[int, int]:
    [(start, end)] = FileResponse._parse_range_header(header, size)
    return start, end


def _single_ranges(size: int) -> list[str]:
    rng = np.random.default_rng(size)
    a, b = sorted(int(x) for x in rng.integers(0, size, 2))
    return ["bytes=0-0", f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{size - a}",
            f"bytes={size - 1}-", f"bytes=-{size * 2}", f"bytes={a}-{size * 3}",
            f"bytes=0-{size - 1}", f"Bytes = {b} -"]


def test_whole_download_advertises_ranges(snap: Snap) -> None:
    h = snap.headers
    assert h["accept-ranges"] == "bytes"
    assert int(h["content-length"]) == snap.size
    assert h["etag"] and not h["etag"].startswith("W/") and h["last-modified"]
    assert hashlib.sha256(snap.data).hexdigest() == snap.checksum


def test_single_ranges_answer_206_with_content_range(snap: Snap) -> None:
    for header in _single_ranges(snap.size):
        start, end = _oracle(header, snap.size)
        r = snap.get(Range=header)
        assert r.status_code == 206, (header, r.status_code)
        assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{snap.size}", header
        assert int(r.headers["content-length"]) == end - start
        assert r.content == snap.data[start:end], header


def test_unsatisfiable_ranges_answer_416(snap: Snap) -> None:
    for header in [f"bytes={snap.size}-", f"bytes={snap.size + 10}-{snap.size + 20}",
                   "bytes=-0"]:
        with pytest.raises(RangeNotSatisfiable):  # the S3 path's parser agrees with ...
            parse_range(header, snap.size)
        with pytest.raises(StarletteUnsatisfiable):  # ... Starlette's
            FileResponse._parse_range_header(header, snap.size)
        r = snap.get(Range=header)
        assert r.status_code == 416, header
        assert r.headers["content-range"] == f"bytes */{snap.size}"


def test_if_range_resumes_only_the_same_archive(snap: Snap) -> None:
    half = snap.size // 2
    for validator in (snap.headers["etag"], snap.headers["last-modified"]):
        r = snap.get(Range=f"bytes={half}-", **{"If-Range": validator})
        assert r.status_code == 206 and r.content == snap.data[half:]
    for other in ('"not-this-version"', "W/" + snap.headers["etag"],
                  "Thu, 01 Jan 1970 00:00:00 GMT"):
        r = snap.get(Range=f"bytes={half}-", **{"If-Range": other})
        assert r.status_code == 200 and r.content == snap.data, other


def test_resume_after_a_cut_reassembles_the_archive(snap: Snap) -> None:
    """Read part of the body, drop the connection, fetch the rest with Range."""
    got = b""
    with httpx.stream("GET", snap.url, timeout=60) as r:
        for chunk in r.iter_bytes(4096):
            got += chunk
            if len(got) >= snap.size // 3:
                break
    r = snap.get(Range=f"bytes={len(got)}-", **{"If-Range": snap.headers["etag"]})
    assert r.status_code == 206
    assert hashlib.sha256(got + r.content).hexdigest() == snap.checksum


def test_full_storage_snapshot_ranges(backend: QuiverServer) -> None:
    r = httpx.post(f"{backend.url}/snapshots", timeout=120)
    assert r.status_code == 200, r.text
    full = Snap(backend, "/snapshots", r.json()["result"])
    header = f"bytes={full.size // 4}-{full.size // 2}"
    start, end = _oracle(header, full.size)
    r = full.get(Range=header)
    assert r.status_code == 206 and r.content == full.data[start:end]
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{full.size}"
    assert httpx.delete(f"{backend.url}/snapshots/{full.name}").status_code == 200


@pytest.mark.parametrize("backend", ["s3"], indirect=True)
def test_s3_ignores_what_a_server_may_ignore(snap: Snap) -> None:
    """RFC 9110: a malformed range, another unit, last < first or several ranges may be
    ignored: the S3 path then sends the whole archive (200). (Starlette answers a malformed
    one 400 and several with multipart/byteranges; the CLI never sends either.)"""
    for header in ["bytes=10-5", "items=0-10", "bytes=0-1,5-9", "bytes=abc", "bytes=-"]:
        assert parse_range(header, snap.size) is None
        r = snap.get(Range=header)
        assert r.status_code == 200 and r.content == snap.data, header


class _StopHalfWay:
    """A progress bar that interrupts the download (Ctrl-C) once half the archive is in."""

    def __init__(self, *args: Any, total: int, **kw: Any) -> None:
        self.total, self.n = total, 0

    def __enter__(self) -> _StopHalfWay:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, n: int) -> None:
        self.n += n
        if self.n >= self.total // 2:
            raise KeyboardInterrupt


def test_cli_resumes_an_s3_download_from_its_part_file(snap: Snap, backend: QuiverServer,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The `.part` (and its meta) left by an interrupted run is completed with a ranged
    request, verified and renamed; for the local and the S3 backend alike."""
    out = tmp_path / snap.name
    part, meta = Path(str(out) + ".part"), Path(str(out) + ".part.meta")
    coll = snap.url.split("/collections/")[1].split("/")[0]
    argv = ["snapshot", "download", snap.name, "-c", coll, "-o", str(out), "--url",
            backend.url, "--json", "--no-progress"]
    with monkeypatch.context() as m:
        m.setattr(api.snapshot_cli, "_bar", lambda args, total, *a: _StopHalfWay(total=total))
        assert quiver(argv) == 130  # interrupted
    assert 0 < part.stat().st_size < snap.size and part.read_bytes() == \
        snap.data[: part.stat().st_size]
    assert json.loads(meta.read_text())["validator"] in (snap.headers["etag"],
                                                         snap.headers["last-modified"])
    capsys.readouterr()
    rc = quiver(argv)
    assert rc == 0, capsys.readouterr().err
    assert out.read_bytes() == snap.data and not part.exists() and not meta.exists()
    report = json.loads(capsys.readouterr().out)
    assert report["resumed"] == 1 and report["verified"] and report["sha256"] == snap.checksum


# ---- the S3 body is closed on every path ----------------------------------------------------

class _Body:
    """A botocore StreamingBody stand-in: counts close() calls; may fail after its chunks."""

    def __init__(self, chunks: list[bytes], fail: bool = False) -> None:
        self.chunks, self.fail, self.closed = chunks, fail, 0

    def iter_chunks(self, size: int) -> Iterator[bytes]:
        yield from self.chunks
        if self.fail:
            raise RuntimeError("connection reset")  # as botocore's ResponseStreamingError

    def close(self) -> None:
        self.closed += 1


def test_body_chunks_close_the_body_on_every_path() -> None:
    body = _Body([b"a", b"b"])
    chunks = BodyChunks(body)
    chunks.close()  # before the first chunk: a generator's close() would skip its finally
    assert body.closed == 1 and chunks.closed and list(chunks) == []
    chunks.close()
    assert body.closed == 1

    body = _Body([b"a", b"b"])
    assert list(BodyChunks(body)) == [b"a", b"b"] and body.closed == 1  # the end

    body = _Body([b"a"], fail=True)
    chunks = BodyChunks(body)
    assert next(chunks) == b"a" and body.closed == 0
    with pytest.raises(RuntimeError):
        next(chunks)
    assert body.closed == 1  # a failed read

    empty = BodyChunks(None)  # an empty range: no GetObject at all
    assert list(empty) == [] and empty.closed
    empty.close()


def _serve(response: _ClosingStream, spec: str, receive: Any, send: Any) -> None:
    scope = {"type": "http", "asgi": {"spec_version": spec}}
    anyio.run(response, scope, receive, send)


def test_the_download_response_closes_the_body_on_every_path() -> None:
    """The route's streaming answer closes the S3 body at the end, on a failed read, and
    when the client hangs up before the first chunk or half-way (ASGI 2.0 and 2.4)."""
    async def never() -> dict[str, Any]:
        await anyio.sleep_forever()
        return {}

    async def hung_up() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    sent: list[bytes] = []

    async def collect(message: dict[str, Any]) -> None:
        sent.append(message.get("body", b""))

    async def stalled(message: dict[str, Any]) -> None:
        await anyio.sleep_forever()

    async def gone_after_start(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client gone")

    for spec in ("2.0", "2.4"):
        body = _Body([b"x" * 10, b"y" * 5])  # the end
        sent.clear()
        _serve(_ClosingStream(BodyChunks(body), status_code=200), spec, never, collect)
        assert b"".join(sent) == b"x" * 10 + b"y" * 5 and body.closed == 1, spec

        body = _Body([b"x"], fail=True)  # a failed read half-way
        with pytest.raises(BaseException) as failed:  # in an ExceptionGroup with ASGI 2.0
            _serve(_ClosingStream(BodyChunks(body), status_code=200), spec, never, collect)
        assert "connection reset" in repr(failed.value) and body.closed == 1, spec

    body = _Body([b"x"])  # ASGI 2.0: a disconnect before the first chunk was pulled
    _serve(_ClosingStream(BodyChunks(body), status_code=200), "2.0", hung_up, stalled)
    assert body.closed == 1

    body = _Body([b"x", b"y"])  # ASGI 2.4: the send fails once the client is gone
    with pytest.raises(ClientDisconnect):
        _serve(_ClosingStream(BodyChunks(body), status_code=200), "2.4", never,
               gone_after_start)
    assert body.closed == 1
