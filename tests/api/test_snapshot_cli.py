"""`quiver snapshot ...` against the real server: the round trip of every action, a download
resumed after the connection is cut half-way (a TCP proxy in front of the server), checksum
verification, and the exit codes a script relies on."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from server import QuiverServer, free_port

from api.cli import main as quiver
from bench.server import ROOT, quiver_command


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `quiver snapshot ARGV` in-process: (exit code, stdout, stderr)."""
    try:
        rc = quiver(["snapshot", *argv, "--no-progress"])
    except SystemExit as exc:  # argparse: usage errors
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


KEY = "s3cret"


def _collection(url: str, name: str, n: int = 2000, seed: int = 5,
                headers: dict[str, str] | None = None) -> None:
    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=url, timeout=60, headers=headers) as c:
        r = c.put(f"/collections/{name}", json={"vectors": {"size": 32, "distance": "Dot"}})
        assert r.status_code == 200, r.text
        points = [{"id": i, "vector": v, "payload": {"i": i}}
                  for i, v in enumerate(rng.random((n, 32)).tolist())]
        assert c.put(f"/collections/{name}/points?wait=true",
                     json={"points": points}).status_code == 200


def _points(url: str, name: str) -> list[Any]:
    r = httpx.post(f"{url}/collections/{name}/points/scroll", headers={"api-key": KEY},
                   json={"limit": 100000, "with_vector": True, "with_payload": True})
    assert r.status_code == 200, r.text
    return sorted(r.json()["result"]["points"], key=lambda p: p["id"])


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuiverServer]:
    """A private server with an API key (its snapshots dir: <storage>/../snaps)."""
    base = tmp_path_factory.mktemp("keyed")
    srv = QuiverServer(base / "storage", env={"QUIVER__STORAGE__SNAPSHOTS_PATH":
                                              str(base / "snaps"),
                                              "QUIVER__SERVICE__API_KEY": KEY}).start()
    yield srv
    srv.stop()


def test_round_trip_of_every_action(keyed: QuiverServer, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    url = keyed.url
    _collection(url, "src", headers={"api-key": KEY})
    monkeypatch.setenv("QUIVER_API_KEY", KEY)  # the key comes from the environment
    u = ["--url", url]

    rc, out, _ = cli(capsys, "create", "-c", "src", "--json", *u)
    assert rc == 0
    created = json.loads(out)
    rc, out, _ = cli(capsys, "list", "-c", "src", "--json", *u)
    assert rc == 0 and json.loads(out) == [created]
    rc, out, _ = cli(capsys, "list", "-c", "src", *u)  # the text form: name size time checksum
    assert rc == 0 and out.split() == [created["name"], str(created["size"]),
                                       created["creation_time"], created["checksum"]]

    dest = tmp_path / "dl"
    dest.mkdir()
    rc, out, err = cli(capsys, "download", created["name"], "-c", "src", "-o", str(dest),
                       "--json", *u)
    assert rc == 0, err
    got = json.loads(out)
    path = dest / created["name"]
    assert got == {"name": created["name"], "path": str(path), "size": created["size"],
                   "sha256": created["checksum"], "verified": True, "resumed": 0}
    assert hashlib.sha256(path.read_bytes()).hexdigest() == created["checksum"]
    rc, _, err = cli(capsys, "download", created["name"], "-c", "src", "-o", str(dest), *u)
    assert rc == 2 and "exists" in err  # never overwritten without --force

    # upload: streamed multipart, checksum computed locally and checked by the server
    rc, _, err = cli(capsys, "upload", str(path), "-c", "uploaded", "--checksum", "auto",
                     "--priority", "snapshot", *u)
    assert rc == 0, err
    assert _points(url, "uploaded") == _points(url, "src")
    rc, _, err = cli(capsys, "upload", str(path), "-c", "nope", "--checksum", "0" * 64, *u)
    assert rc == 1 and "Checksum mismatch" in err

    # recover: from the server's own download URL, and from a path in its snapshots dir
    rc, _, err = cli(capsys, "recover", f"{url}/collections/src/snapshots/{created['name']}",
                     "-c", "by_url", "--checksum", created["checksum"], "--source-api-key",
                     KEY, *u)
    assert rc == 0, err
    on_server = keyed.storage.parent / "snaps" / "src" / created["name"]
    rc, _, err = cli(capsys, "recover", str(on_server), "-c", "by_path", *u)
    assert rc == 0, err
    assert _points(url, "by_url") == _points(url, "by_path") == _points(url, "src")
    rc, _, err = cli(capsys, "recover", str(on_server) + ".missing", "-c", "x", *u)
    assert rc == 1 and "does not exist" in err  # the server's message

    rc, out, _ = cli(capsys, "delete", created["name"], "-c", "src", *u)
    assert rc == 0 and created["name"] in out
    rc, out, _ = cli(capsys, "list", "-c", "src", "--json", *u)
    assert json.loads(out) == []

    # full-storage snapshots
    rc, out, _ = cli(capsys, "create", "--full", "--json", *u)
    full = json.loads(out)
    rc, out, _ = cli(capsys, "list", "--full", "--json", *u)
    assert rc == 0 and json.loads(out) == [full]
    rc, out, err = cli(capsys, "download", full["name"], "--full", "-o",
                       str(tmp_path / "full.snapshot"), *u)
    assert rc == 0, err
    assert out.split() == [str(tmp_path / "full.snapshot"), str(full["size"]), full["checksum"]]
    rc, _, _ = cli(capsys, "delete", full["name"], "--full", *u)
    assert rc == 0
    rc, _, err = cli(capsys, "delete", full["name"], "--full", *u)
    assert rc == 5 and "not found" in err

    rc, out, _ = cli(capsys, "create", "-c", "src", "--no-wait", "--json", *u)
    assert rc == 0 and json.loads(out)["status"] == "accepted"


class CutProxy:
    """A TCP proxy in front of the server that cuts the first connection whose responses
    pass `cut_after` bytes, right there (both sockets closed mid-body)."""

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target, self.cut_after, self.cuts_left = target_port, cut_after, 1
        self.sent_upstream = bytearray()  # every request, to see the Range headers
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                self.sent_upstream += data
                upstream.sendall(data)
        except OSError:
            pass

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))
        threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
        passed = 0
        try:
            while data := upstream.recv(65536):
                if self.cuts_left and passed + len(data) > self.cut_after:
                    self.cuts_left -= 1
                    client.sendall(data[: self.cut_after - passed])
                    return
                client.sendall(data)
                passed += len(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def snapshot(server: QuiverServer, collection_name: str) -> Iterator[dict[str, Any]]:
    _collection(server.url, collection_name, seed=11)
    r = httpx.post(f"{server.url}/collections/{collection_name}/snapshots", timeout=60)
    assert r.status_code == 200, r.text
    snap = r.json()["result"] | {"collection": collection_name}
    yield snap
    httpx.delete(f"{server.url}/collections/{collection_name}")


def test_download_resumes_after_the_connection_is_cut_half_way(
        server: QuiverServer, snapshot: dict[str, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    proxy = CutProxy(server.port, cut_after=snapshot["size"] // 2)
    try:
        out = tmp_path / "snap"
        rc, stdout, err = cli(capsys, "download", snapshot["name"], "-c",
                              snapshot["collection"], "-o", str(out), "--url", proxy.url,
                              "--json")
    finally:
        proxy.close()
    assert rc == 0, err
    assert proxy.cuts_left == 0 and "connection lost" in err  # it was cut, and resumed
    asked = [int(n) for n in re.findall(rb"(?i)\r\nrange: bytes=(\d+)-", proxy.sent_upstream)]
    assert len(asked) == 1 and 0 < asked[0] < snapshot["size"], err
    assert re.search(rb"(?i)\r\nif-range: ", proxy.sent_upstream)
    report = json.loads(stdout)
    assert report["resumed"] == 1 and report["verified"]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == snapshot["checksum"] \
        == report["sha256"]
    assert not Path(str(out) + ".part").exists()


def _interrupted(capsys: pytest.CaptureFixture[str], server: QuiverServer,
                 snapshot: dict[str, Any], out: Path) -> None:
    """Leave `<out>.part` and its meta as a download cut half-way (no retries) leaves them."""
    proxy = CutProxy(server.port, cut_after=snapshot["size"] // 2)
    try:
        rc, _, err = cli(capsys, "download", snapshot["name"], "-c", snapshot["collection"],
                         "-o", str(out), "--url", proxy.url, "--retries", "0")
    finally:
        proxy.close()
    assert rc == 3 and proxy.cuts_left == 0, err
    assert 0 < Path(str(out) + ".part").stat().st_size < snapshot["size"]
    assert Path(str(out) + ".part.meta").exists() and not out.exists()


def test_a_corrupted_partial_file_is_caught_by_the_checksum(
        server: QuiverServer, snapshot: dict[str, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out, part = tmp_path / "snap", tmp_path / "snap.part"
    meta = tmp_path / "snap.part.meta"
    _interrupted(capsys, server, snapshot, out)
    part.write_bytes(np.random.default_rng(1).bytes(part.stat().st_size))  # wrong bytes
    args = ("download", snapshot["name"], "-c", snapshot["collection"], "-o", str(out),
            "--url", server.url)
    rc, _, err = cli(capsys, *args)
    assert rc == 4 and "checksum mismatch" in err
    assert not out.exists() and not part.exists() and not meta.exists()  # the rerun: afresh
    rc, _, err = cli(capsys, *args)
    assert rc == 0, err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == snapshot["checksum"]
    assert not meta.exists()

    # a complete .part from an interrupted run (before the rename): 416, verified, renamed
    data = out.read_bytes()
    out.unlink()
    _interrupted(capsys, server, snapshot, out)
    part.write_bytes(data)
    rc, stdout, err = cli(capsys, *args, "--json")
    assert rc == 0, err
    assert json.loads(stdout)["resumed"] == 0 and out.read_bytes() == data


def _ranges(proxy: CutProxy) -> list[tuple[int, str | None]]:
    """(Range start, If-Range) of each request the proxy passed on."""
    out = []
    for head in bytes(proxy.sent_upstream).split(b"\r\n\r\n"):
        m = re.search(rb"(?i)\r\nrange: bytes=(\d+)-", head)
        if m:
            v = re.search(rb"(?i)\r\nif-range: ([^\r]*)", head)
            out.append((int(m[1]), v[1].decode() if v else None))
    return out


def test_a_part_of_another_snapshot_is_never_resumed(
        server: QuiverServer, snapshot: dict[str, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """-o reused: a .part with no meta, or a meta naming another snapshot, is discarded and
    the download starts over (never spliced, so never a checksum mismatch)."""
    out, part = tmp_path / "snap", tmp_path / "snap.part"
    meta = tmp_path / "snap.part.meta"
    args = ("download", snapshot["name"], "-c", snapshot["collection"], "-o", str(out),
            "--json")
    stray = np.random.default_rng(2).bytes(snapshot["size"] // 2)
    _interrupted(capsys, server, snapshot, out)
    kept = json.loads(meta.read_text())
    for meta_text in (None, json.dumps(kept | {"name": "other.snapshot"}),
                      json.dumps(kept | {"snapshot": "full"}),
                      json.dumps(kept | {"size": kept["size"] + 1}),
                      json.dumps(kept | {"sha256": "0" * 64}), "{not json"):
        part.write_bytes(stray)
        if meta_text is None:
            meta.unlink(missing_ok=True)
        else:
            meta.write_text(meta_text)
        proxy = CutProxy(server.port, cut_after=1 << 40)  # never cuts: records requests
        try:
            rc, stdout, err = cli(capsys, *args, "--url", proxy.url)
        finally:
            proxy.close()
        assert rc == 0, (meta_text, err)
        assert "starting over" in err and _ranges(proxy) == [], meta_text
        assert json.loads(stdout)["resumed"] == 0
        assert hashlib.sha256(out.read_bytes()).hexdigest() == snapshot["checksum"]
        assert not part.exists() and not meta.exists()
        out.unlink()


def test_a_replaced_snapshot_without_checksum_is_fetched_afresh(
        server: QuiverServer, snapshot: dict[str, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """No checksum published and the archive replaced under the same name (same size): the
    first request of the next run already carries If-Range, so the server sends the new
    archive whole instead of a tail to splice onto the old bytes."""
    archive = server.storage.parent / "snaps" / snapshot["collection"] / snapshot["name"]
    out, part = tmp_path / "snap", tmp_path / "snap.part"
    meta = tmp_path / "snap.part.meta"
    _interrupted(capsys, server, snapshot, out)
    old_validator, have = json.loads(meta.read_text())["validator"], part.stat().st_size
    assert old_validator
    replacement = np.random.default_rng(3).bytes(snapshot["size"])
    archive.write_bytes(replacement)
    os.utime(archive, (time.time() + 5, time.time() + 5))  # a new ETag and Last-Modified
    Path(str(archive) + ".checksum").unlink()
    args = ("download", snapshot["name"], "-c", snapshot["collection"], "-o", str(out),
            "--json")

    proxy = CutProxy(server.port, cut_after=1 << 40)
    try:
        rc, stdout, err = cli(capsys, *args, "--url", proxy.url)
    finally:
        proxy.close()
    assert rc == 0, err
    assert _ranges(proxy) == [(have, old_validator)]  # If-Range from the first request
    assert out.read_bytes() == replacement and "not verified" in err
    report = json.loads(stdout)
    assert report["resumed"] == 0 and not report["verified"]
    assert not part.exists() and not meta.exists()

    # no checksum and no validator to confirm the part with: never resumed
    out.unlink()
    _interrupted(capsys, server, snapshot, out)
    meta.write_text(json.dumps(json.loads(meta.read_text()) | {"validator": None}))
    proxy = CutProxy(server.port, cut_after=1 << 40)
    try:
        rc, stdout, err = cli(capsys, *args, "--url", proxy.url)
    finally:
        proxy.close()
    assert rc == 0, err
    assert _ranges(proxy) == [] and "starting over" in err
    assert out.read_bytes() == replacement


def test_recover_from_a_path_with_url_special_characters(
        server: QuiverServer, snapshot: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """An absolute path is sent as a percent-encoded file:// URI: '#', '?' and '%' stay part
    of the file name."""
    folder = server.storage.parent / "snaps" / snapshot["collection"]
    odd = folder / "odd #1?x=%41 b.snapshot"
    shutil.copyfile(folder / snapshot["name"], odd)
    target = snapshot["collection"] + "_odd"
    try:
        rc, out, err = cli(capsys, "recover", str(odd), "-c", target, "--json", "--url",
                           server.url)
        assert rc == 0, err
        assert json.loads(out)["location"] == odd.as_uri()
        assert _points(server.url, target) == _points(server.url, snapshot["collection"])
    finally:
        odd.unlink()
        httpx.delete(f"{server.url}/collections/{target}")


class _Stub(BaseHTTPRequestHandler):
    """Not Qdrant: an HTML page (a proxy's, a captive portal's), a body that does not decode,
    a snapshot whose download does not decode, or no answer in time."""

    def _answer(self) -> None:
        head = {"content-type": "application/json"}
        if self.path.startswith("/html/"):
            body, head = b"<html>please log in</html>", {"content-type": "text/html"}
        elif self.path.startswith("/gzip/") or self.path.startswith("/baddl/snapshots/"):
            body, head["content-encoding"] = b"not gzip at all", "gzip"
        elif self.path.startswith("/baddl/"):
            body = json.dumps({"result": [{"name": "s.snapshot", "size": 15,
                                           "checksum": "0" * 64}]}).encode()
        else:  # /slow/
            time.sleep(2)
            body = b"{}"
        self.send_response(200)
        for k, v in head.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_answers_that_are_not_qdrants_are_server_errors(
        stub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A non-JSON 200 or an undecodable body: exit 1 with a message, never a traceback;
    a timeout stays 3."""
    for argv, code, message in [
            (["list", "--full", "--url", f"{stub}/html"], 1, "not Qdrant's JSON"),
            (["create", "--full", "--url", f"{stub}/html"], 1, "not Qdrant's JSON"),
            (["download", "x.snapshot", "--full", "-o", str(tmp_path / "x"), "--url",
              f"{stub}/html"], 1, "not Qdrant's JSON"),
            (["list", "--full", "--url", f"{stub}/gzip"], 1, "bad answer"),
            (["download", "s.snapshot", "--full", "-o", str(tmp_path / "s"), "--url",
              f"{stub}/baddl"], 1, "bad answer"),
            (["list", "--full", "--url", f"{stub}/slow", "--timeout", "0.3"], 3, "timed out")]:
        rc, _, err = cli(capsys, *argv)
        assert rc == code and message in err, (argv, err)
        assert "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_exit_codes(server: QuiverServer, snapshot: dict[str, Any], tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    u = ("--url", server.url)
    rc, _, err = cli(capsys, "list", "-c", "no_such_collection", *u)
    assert rc == 5 and "not found" in err.lower()
    rc, _, _ = cli(capsys, "download", snapshot["name"], "-c", "no_such_collection",
                   "-o", str(tmp_path / "x"), *u)
    assert rc == 5
    rc, _, err = cli(capsys, "download", "missing.snapshot", "-c", snapshot["collection"],
                     "-o", str(tmp_path / "x"), *u)
    assert rc == 5 and "missing.snapshot" in err
    rc, _, _ = cli(capsys, "delete", "missing.snapshot", "-c", snapshot["collection"], *u)
    assert rc == 5
    nobody = f"http://127.0.0.1:{free_port()}"
    rc, _, err = cli(capsys, "list", "--full", "--url", nobody)
    assert rc == 3 and "cannot connect" in err
    rc, _, _ = cli(capsys, "list", *u)  # neither --collection nor --full
    assert rc == 2
    rc, _, _ = cli(capsys, "list", "--full", "--url", "localhost:6333")
    assert rc == 2
    rc, _, _ = cli(capsys, "recover", "relative/path.snapshot", "-c", "x", *u)
    assert rc == 2
    rc, _, _ = cli(capsys, "upload", str(tmp_path / "absent.snapshot"), "-c", "x", *u)
    assert rc == 2
    for argv, code in [(["list", "--full", *u], 0), (["list", "--full", "--url", nobody], 3)]:
        proc = subprocess.run([*quiver_command(), "snapshot", *argv], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == code, proc.stderr


def test_bad_api_key_is_a_server_error(keyed: QuiverServer,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = cli(capsys, "list", "--full", "--url", keyed.url, "--api-key", "wrong")
    assert rc == 1 and "Invalid API key" in err  # the server's message
    rc, _, err = cli(capsys, "list", "--full", "--url", keyed.url)
    assert rc == 1 and "Must provide an API key" in err
    rc, out, err = cli(capsys, "list", "--full", "--url", keyed.url, "--api-key", KEY,
                       "--json")
    assert rc == 0 and isinstance(json.loads(out), list), err
