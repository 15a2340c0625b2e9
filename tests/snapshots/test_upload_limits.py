"""Snapshot upload size limits, through the real server over HTTP.

`POST /collections/{c}/snapshots/upload` is exempt from `service.max_request_size_mb` (snapshots
are big) and streams into the snapshots temp dir. `service.max_snapshot_upload_mb` caps it:

- a declared Content-Length over the cap is refused with 413 before any body byte is read
  (an `Expect: 100-continue` client never gets its 100 and sends nothing);
- a body without a declared length (chunked) is refused with 413 as soon as it passes the cap;
  reading stops there and the partial file is deleted;
- a declared length over the free space of the snapshots volume is refused with 507 up front;
  a body that fills the volume while streaming (tmpfs, root only) answers 507 with no debris;
- in every case the collection, its points and its snapshot list are untouched, and an upload
  within the limits still works afterwards.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from diskfull import debris, fill, tmpfs
from server import QuiverServer

CAP_MB = 0.25  # 256 KiB
CAP = int(CAP_MB * (1 << 20))
BOUNDARY = "quiverupload"
COLL = "up"


def multipart_head(filename: str = "up.snapshot") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"snapshot\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()


TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()


def raw_upload(srv: QuiverServer, path: str, chunks: Iterable[bytes], *,
               content_length: int | None = None, expect_continue: bool = False,
               pace: float = 0.0, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes, int]:
    """POST over a bare socket, so what is sent and when is exact: the body goes chunked
    unless `content_length` is given; sending stops as soon as the server answers (waiting
    up to `pace` seconds for an answer after each chunk). Returns
    (status, headers, body, body bytes sent). An interim `100 Continue` is reported as a
    `x-test-saw-100` header."""
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{srv.port}",
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}"]
    head.append(f"Content-Length: {content_length}" if content_length is not None
                else "Transfer-Encoding: chunked")
    if expect_continue:
        head.append("Expect: 100-continue")
    sent = 0
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        if expect_continue:  # as curl does: wait a moment for 100 or an early final answer
            select.select([sock], [], [], 5.0)
        try:
            for chunk in chunks:
                if select.select([sock], [], [], pace if sent else 0)[0]:
                    break  # the server has answered (or closed): stop sending, as a client would
                data = chunk if content_length is not None else \
                    b"%x\r\n%s\r\n" % (len(chunk), chunk)
                sock.sendall(data)
                sent += len(chunk)
            else:
                if content_length is None:
                    sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            raw += data
            if _complete(raw):
                break
    return (*_parse(raw), sent)


def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    while raw.startswith(b"HTTP/1.1 100"):
        raw = raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""
    if b"\r\n\r\n" not in raw:
        return [], b""
    head, body = raw.split(b"\r\n\r\n", 1)
    return head.split(b"\r\n"), body


def _complete(raw: bytes) -> bool:
    lines, body = _split(raw)
    for line in lines[1:]:
        k, _, v = line.decode().partition(":")
        if k.strip().lower() == "content-length":
            return len(body) >= int(v)
    return False


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    saw_100 = raw.startswith(b"HTTP/1.1 100")
    lines, body = _split(raw)
    assert lines, f"no response: {raw[:200]!r}"
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    if saw_100:
        headers["x-test-saw-100"] = "1"
    return status, headers, body


def error_of(status: int, body: bytes, expected: int) -> str:
    assert status == expected, (status, body[:300])
    env = orjson.loads(body)
    assert set(env) == {"status", "time"}, env
    assert isinstance(env["status"]["error"], str) and env["status"]["error"], env
    assert isinstance(env["time"], int | float)
    return env["status"]["error"]


def filler(total: int, size: int = 64 << 10) -> Iterator[bytes]:
    """`total` bytes of file content in `size` chunks, wrapped as the multipart field."""
    yield multipart_head()
    block = b"\x5a" * size
    while total > 0:
        yield block[:min(size, total)]
        total -= min(size, total)
    yield TAIL


def state(http: httpx.Client) -> Any:
    points = http.post(f"/collections/{COLL}/points/scroll",
                       json={"limit": 100, "with_vector": True, "with_payload": True})
    snaps = http.get(f"/collections/{COLL}/snapshots")
    assert points.status_code == 200 and snaps.status_code == 200
    return points.json()["result"], sorted(s["name"] for s in snaps.json()["result"])


def seed(http: httpx.Client) -> bytes:
    """A small collection and one real snapshot of it (returned: it fits under the cap)."""
    assert http.put(f"/collections/{COLL}",
                    json={"vectors": {"size": 4, "distance": "Dot"}}).status_code == 200
    r = http.put(f"/collections/{COLL}/points?wait=true", json={"points": [
        {"id": i, "vector": [i, 1.0, 0.5, -1.0], "payload": {"i": i}} for i in range(20)]})
    assert r.status_code == 200, r.text
    snap = http.post(f"/collections/{COLL}/snapshots").json()["result"]["name"]
    data = http.get(f"/collections/{COLL}/snapshots/{snap}").content
    assert len(data) < CAP
    return data


def upload_path(collection: str = COLL) -> str:
    return f"/collections/{collection}/snapshots/upload"


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuiverServer]:
    base = tmp_path_factory.mktemp("capped")
    srv = QuiverServer(base / "storage", env={
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps"),
        "QUIVER__SERVICE__MAX_SNAPSHOT_UPLOAD_MB": str(CAP_MB)}).start()
    srv.snaps = base / "snaps"  # type: ignore[attr-defined]
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        srv.snapshot_bytes = seed(http)  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def tmp_files(snaps: Path) -> list[str]:
    tmp = snaps / ".tmp"
    return sorted(os.listdir(tmp)) if tmp.exists() else []


def test_upload_within_the_cap_works(capped: QuiverServer) -> None:
    with httpx.Client(base_url=capped.url, timeout=60) as http:
        r = http.post(upload_path("up_copy"),
                      files={"snapshot": ("copy.snapshot", capped.snapshot_bytes)})
        assert r.status_code == 200, r.text
        assert http.post("/collections/up_copy/points/count",
                         json={"exact": True}).json()["result"]["count"] == 20


def test_declared_length_over_the_cap_is_refused_before_the_body(capped: QuiverServer) -> None:
    with httpx.Client(base_url=capped.url, timeout=60) as http:
        before = state(http)
        # Expect: 100-continue (curl's way for big bodies): the answer comes, the 100 never does
        status, headers, body, sent = raw_upload(
            capped, upload_path(), filler(4 * CAP), content_length=4 * CAP + 1000,
            expect_continue=True)
        msg = error_of(status, body, 413)
        assert "service.max_snapshot_upload_mb" in msg and str(CAP) in msg, msg
        assert "x-test-saw-100" not in headers and sent == 0
        assert headers.get("connection") == "close"
        # an ordinary client that sends its body at once (httpx, a body the socket buffers take)
        r = http.post(upload_path(), files={"snapshot": ("big.snapshot", b"\0" * (CAP + 1))})
        assert r.status_code == 413, r.text
        assert r.json()["status"]["error"].startswith("Payload too large: ")
        assert state(http) == before
        assert tmp_files(capped.snaps) == []


def test_streamed_body_over_the_cap_is_cut_off(capped: QuiverServer) -> None:
    with httpx.Client(base_url=capped.url, timeout=60) as http:
        before = state(http)
        status, headers, body, sent = raw_upload(capped, upload_path(), filler(8 * CAP),
                                                 pace=0.25)
        msg = error_of(status, body, 413)
        assert "service.max_snapshot_upload_mb" in msg, msg
        assert headers.get("connection") == "close"
        assert CAP < sent < 8 * CAP, f"answered after {sent} bytes"
        assert state(http) == before
        assert tmp_files(capped.snaps) == []
        # the same snapshot, within the cap, still goes through (and replaces nothing new)
        status, _, body, _ = raw_upload(
            capped, upload_path(), [multipart_head(), capped.snapshot_bytes, TAIL])
        assert status == 200, body
        assert state(http)[0] == before[0]


def test_declared_length_over_the_free_space_is_507(tmp_path: Path) -> None:
    snaps = tmp_path / "snaps"
    srv = QuiverServer(tmp_path / "storage",  # no cap: the free space is the only limit
                       env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(snaps)}).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            seed(http)
            before = state(http)
            free = os.statvfs(snaps).f_bavail * os.statvfs(snaps).f_frsize
            declared = free + (1 << 40)
            status, headers, body, sent = raw_upload(
                srv, upload_path(), filler(1 << 20), content_length=declared,
                expect_continue=True)
            msg = error_of(status, body, 507)
            assert "No space left on device" in msg and str(declared) in msg, msg
            assert sent == 0 and headers.get("connection") == "close"
            assert tmp_files(snaps) == []
            assert state(http) == before
    finally:
        srv.stop()


def test_streamed_upload_that_fills_the_volume_is_507(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "snapdisk", "4m") as snapdisk:
        srv = QuiverServer(tmp_path / "storage",
                           env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(snapdisk / "snaps")})
        srv.start()
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as http:
                data = seed(http)
                before = state(http)
                space = fill(snapdisk, leave=1 << 20)
                # no Content-Length: only the disk itself can stop it
                status, headers, body, _ = raw_upload(srv, upload_path(), filler(3 << 20),
                                                      pace=0.1)
                msg = error_of(status, body, 507)
                assert "No space left on device" in msg, msg
                assert headers.get("connection") == "close"
                assert tmp_files(snapdisk / "snaps") == []
                assert debris(snapdisk, tmp_path / "storage") == []
                assert state(http) == before
                # space freed: the same kind of upload, of a real snapshot, succeeds
                space.unlink()
                status, _, body, _ = raw_upload(srv, upload_path(),
                                                [multipart_head(), data, TAIL])
                assert status == 200, body
                assert state(http)[0] == before[0]
        finally:
            srv.stop()


def test_setting_is_validated() -> None:
    from api.settings import load_settings, max_snapshot_upload_bytes

    assert max_snapshot_upload_bytes(load_settings(env={})) == 0  # default: no cap
    env = {"QUIVER__SERVICE__MAX_SNAPSHOT_UPLOAD_MB": "1.5"}
    assert max_snapshot_upload_bytes(load_settings(env=env)) == 3 << 19
    for bad in ("-1", "lots", "true"):
        env = {"QUIVER__SERVICE__MAX_SNAPSHOT_UPLOAD_MB": bad}
        with pytest.raises(ValueError, match="max_snapshot_upload_mb"):
            max_snapshot_upload_bytes(load_settings(env=env))
