"""Collection snapshots through the real server and qdrant-client, as the Qdrant docs use them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from openapi_contract import validating_qdrant_client
from qdrant_client import models
from server import QuiverServer


@pytest.fixture
def srv(tmp_path: Path):
    s = QuiverServer(tmp_path / "storage",
                     env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")}).start()
    s.snaps = tmp_path / "snaps"  # type: ignore[attr-defined]
    yield s
    s.stop()


def _client(srv: QuiverServer):
    return validating_qdrant_client(srv.url, timeout=60)


def _fill(client, name: str, n: int = 300, dim: int = 8, distance: str = "Cosine") -> None:
    rng = np.random.default_rng(1)
    client.create_collection(name, vectors_config=models.VectorParams(size=dim,
                                                                      distance=distance))
    client.upsert(name, [models.PointStruct(id=i, vector=rng.standard_normal(dim).tolist(),
                                            payload={"i": i, "tag": f"t{i % 5}"})
                         for i in range(n)])


def _answers(client, name: str, using: str | None = None, dim: int = 8) -> list:
    rng = np.random.default_rng(9)
    out = []
    for _ in range(5):
        pts = client.query_points(name, query=rng.standard_normal(dim).tolist(), using=using,
                                  limit=7, with_payload=True, with_vectors=True).points
        out.append([(p.id, round(p.score, 5), p.payload, p.vector) for p in pts])
    return out


def test_seed_document_python_examples(srv: QuiverServer) -> None:
    client = _client(srv)
    _fill(client, "{collection_name}".replace("{collection_name}", "test_collection"))
    # create, list
    snap = client.create_snapshot(collection_name="test_collection")
    assert snap.name.startswith("test_collection-") and snap.name.endswith(".snapshot")
    assert len(snap.checksum) == 64 and snap.size > 0
    assert [s.name for s in client.list_snapshots(collection_name="test_collection")] == [snap.name]
    # download over HTTP: the bytes hash to the listed checksum, Content-Length is set
    r = httpx.get(f"{srv.url}/collections/test_collection/snapshots/{snap.name}")
    assert r.status_code == 200 and int(r.headers["content-length"]) == snap.size
    assert hashlib.sha256(r.content).hexdigest() == snap.checksum
    before = _answers(client, "test_collection")
    # recover from a URL (the server downloads from itself) into a new collection
    client.recover_snapshot("restored_url",
                            f"{srv.url}/collections/test_collection/snapshots/{snap.name}")
    assert _answers(client, "restored_url") == before
    # recover from a file URI, with checksum and priority
    path = srv.snaps / "test_collection" / snap.name
    client.recover_snapshot("test_collection", f"file://{path}", checksum=snap.checksum,
                            priority=models.SnapshotPriority.SNAPSHOT)
    assert _answers(client, "test_collection") == before
    # upload with priority (the Qdrant docs use curl -F snapshot=@file)
    r = httpx.post(f"{srv.url}/collections/uploaded/snapshots/upload?priority=snapshot",
                   files={"snapshot": (snap.name, r.content)}, timeout=60)
    assert r.status_code == 200 and r.json()["result"] is True
    assert _answers(client, "uploaded") == before
    # delete
    assert client.delete_snapshot(collection_name="test_collection", snapshot_name=snap.name)
    assert client.list_snapshots("test_collection") == []
    assert client.contract.failures == []


@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid", "Manhattan"])
def test_round_trip_every_distance(srv: QuiverServer, distance: str) -> None:
    client = _client(srv)
    _fill(client, "rt", distance=distance)
    client.delete("rt", points_selector=models.PointIdsList(points=[3, 4]))
    client.set_payload("rt", payload={"x": 1}, points=[5])
    client.create_payload_index("rt", "tag", models.PayloadSchemaType.KEYWORD)
    before = _answers(client, "rt")
    snap = client.create_snapshot("rt")
    client.delete_collection("rt")
    client.recover_snapshot("rt", f"file://{srv.snaps / 'rt' / snap.name}")
    assert _answers(client, "rt") == before
    assert client.count("rt").count == 298
    assert client.get_collection("rt").payload_schema["tag"].data_type == "keyword"
    srv.restart()
    client = _client(srv)
    assert _answers(client, "rt") == before


def test_recovery_shares_the_archive_instead_of_copying_it(srv: QuiverServer) -> None:
    """file:// and upload recoveries keep the archive's blocks once: the collection maps its
    rows from a hard link to the snapshot file (no extraction, no second copy on disk)."""
    client = _client(srv)
    _fill(client, "src", n=2000)
    before = _answers(client, "src")
    snap = client.create_snapshot("src")
    path = srv.snaps / "src" / snap.name
    client.recover_snapshot("viafile", f"file://{path}")
    [blob] = (srv.storage / "collections" / "viafile" / "blobs").iterdir()
    assert blob.stat().st_ino == path.stat().st_ino
    with httpx.Client(base_url=srv.url, timeout=60) as http, open(path, "rb") as f:
        r = http.post("/collections/viaupload/snapshots/upload",
                      files={"snapshot": ("up.snapshot", f)})
        assert r.status_code == 200, r.text
    [blob2] = (srv.storage / "collections" / "viaupload" / "blobs").iterdir()
    kept = srv.snaps / "viaupload" / "up.snapshot"  # the upload, kept as Qdrant does
    assert blob2.stat().st_ino == kept.stat().st_ino
    for name in ("viafile", "viaupload"):
        assert _answers(client, name) == before
    client.delete_snapshot("src", snap.name)
    srv.restart()
    client = _client(srv)
    for name in ("viafile", "viaupload"):
        assert _answers(client, name) == before


def test_round_trip_named_vectors(srv: QuiverServer) -> None:
    client = _client(srv)
    client.create_collection("nv", vectors_config={
        "img": models.VectorParams(size=4, distance="Dot"),
        "txt": models.VectorParams(size=3, distance="Euclid")})
    rng = np.random.default_rng(2)
    client.upsert("nv", [models.PointStruct(
        id=i, vector={"img": rng.random(4).tolist(), **({"txt": rng.random(3).tolist()}
                                                        if i % 3 else {})},
        payload={"i": i}) for i in range(50)])
    before = [_answers(client, "nv", "img", 4), _answers(client, "nv", "txt", 3)]
    snap = client.create_snapshot("nv")
    client.delete_collection("nv")
    client.recover_snapshot("nv", f"file://{srv.snaps / 'nv' / snap.name}")
    assert [_answers(client, "nv", "img", 4), _answers(client, "nv", "txt", 3)] == before
    info = client.get_collection("nv")
    assert set(info.config.params.vectors) == {"img", "txt"}


def _wait_ready(url: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


def _manifest(data: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        first = tar.next()
        assert first is not None and first.name == "manifest.json"
        return json.loads(tar.extractfile(first).read())


def test_point_in_time_while_a_writer_runs(srv: QuiverServer) -> None:
    """The archive holds exactly the operations up to its recorded sequence number."""
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        http.put("/collections/pit", json={"vectors": {"size": 4, "distance": "Dot"}})
        acked: list[tuple[int, int]] = []  # (operation_id, point id)
        stop = threading.Event()

        def writer() -> None:
            with httpx.Client(base_url=srv.url, timeout=60) as w:
                i = 0
                while not stop.is_set():
                    r = w.put("/collections/pit/points?wait=true", json={"points": [
                        {"id": i, "vector": [i, 1, 2, 3], "payload": {"i": i}}]})
                    acked.append((r.json()["result"]["operation_id"], i))
                    if i % 7 == 0 and i:  # deletes too
                        r = w.post("/collections/pit/points/delete?wait=true",
                                   json={"points": [i - 3]})
                        acked.append((r.json()["result"]["operation_id"], -(i - 3)))
                    i += 1

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.5)
        snaps = [http.post("/collections/pit/snapshots").json()["result"] for _ in range(3)]
        time.sleep(0.2)
        stop.set()
        t.join()
        assert len({s["name"] for s in snaps}) == 3  # unique names even within one second
        for snap in snaps:
            data = http.get(f"/collections/pit/snapshots/{snap['name']}").content
            seq = _manifest(data)["seq"]
            expected: set[int] = set()
            for op, pid in sorted(acked):
                if op > seq:
                    break
                if pid >= 0:
                    expected.add(pid)
                else:
                    expected.discard(-pid)
            r = http.put("/collections/pit_restored/snapshots/recover",
                         json={"location": f"file://{srv.snaps / 'pit' / snap['name']}"})
            assert r.status_code == 200, r.text
            got = http.post("/collections/pit_restored/points/scroll",
                            json={"limit": 100000}).json()["result"]["points"]
            assert {p["id"] for p in got} == expected, f"seq {seq}"
        assert len(acked) > 20


def test_searches_keep_working_during_recovery(srv: QuiverServer) -> None:
    client = _client(srv)
    _fill(client, "live", n=2000)
    snap = client.create_snapshot("live")
    errors: list[str] = []
    stop = threading.Event()

    def searcher() -> None:
        with httpx.Client(base_url=srv.url, timeout=60) as h:
            while not stop.is_set():
                r = h.post("/collections/live/points/query", json={"query": [1] * 8, "limit": 3})
                if r.status_code != 200 or len(r.json()["result"]["points"]) != 3:
                    errors.append(r.text)

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(3):
        client.recover_snapshot("live", f"file://{srv.snaps / 'live' / snap.name}")
    stop.set()
    for t in threads:
        t.join()
    assert errors == []


def test_wait_false_answers_202_and_finishes(srv: QuiverServer) -> None:
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        http.put("/collections/w", json={"vectors": {"size": 2, "distance": "Dot"}})
        r = http.post("/collections/w/snapshots?wait=false")
        assert r.status_code == 202 and r.json()["status"] == "accepted"
        for _ in range(100):
            if http.get("/collections/w/snapshots").json()["result"]:
                break
            time.sleep(0.05)
        assert len(http.get("/collections/w/snapshots").json()["result"]) == 1


def _fill_big(http: httpx.Client) -> None:
    """40k x 256 points: big enough that creating or recovering takes a moment."""
    http.put("/collections/big", json={"vectors": {"size": 256, "distance": "Dot"}})
    rng = np.random.default_rng(0)
    for s in range(0, 40000, 5000):
        http.put("/collections/big/points?wait=true", json={"batch": {
            "ids": list(range(s, s + 5000)),
            "vectors": rng.random((5000, 256)).round(3).tolist()}})


def _kill9_during(srv: QuiverServer, method: str, path: str, body: Any, after_s: float) -> None:
    """Send a request and kill -9 the server while it is being served."""
    def call() -> None:
        try:
            httpx.request(method, srv.url + path, json=body, timeout=60)
        except httpx.HTTPError:
            pass  # the server died under it, as intended

    t = threading.Thread(target=call)
    t.start()
    time.sleep(after_s)
    srv.kill9()
    t.join()


def test_kill9_during_creation_leaves_nothing_listed(srv: QuiverServer) -> None:
    with httpx.Client(base_url=srv.url, timeout=120) as http:
        _fill_big(http)

        _kill9_during(srv, "POST", "/collections/big/snapshots", None, 0.15)
    srv.start()
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        listed = http.get("/collections/big/snapshots").json()["result"]
        for snap in listed:  # a listed snapshot is always complete and verified
            data = http.get(f"/collections/big/snapshots/{snap['name']}").content
            assert hashlib.sha256(data).hexdigest() == snap["checksum"]
        assert not os.listdir(srv.snaps / ".tmp")
        assert not [p for p in os.listdir(srv.storage) if p.startswith(".tmp-")]
        assert http.post("/collections/big/points/count", json={}).json()["result"]["count"] \
            == 40000


def test_full_storage_snapshot_and_startup_restores(srv: QuiverServer, tmp_path: Path) -> None:
    client = _client(srv)
    _fill(client, "a", n=120)
    _fill(client, "b", n=80, distance="Euclid")
    client.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="b",
                                                                    alias_name="bee"))])
    answers = {c: _answers(client, c) for c in ("a", "b")}
    full = client.create_full_snapshot()
    assert full.name.startswith("full-snapshot-") and len(full.checksum) == 64
    assert [s.name for s in client.list_full_snapshots()] == [full.name]
    data = httpx.get(f"{srv.url}/snapshots/{full.name}").content
    assert hashlib.sha256(data).hexdigest() == full.checksum
    single = client.create_snapshot("a")
    srv.stop()

    # --storage-snapshot on an empty storage restores every collection and alias
    fresh = QuiverServer(tmp_path / "fresh" / "storage")
    fresh.storage.mkdir(parents=True)
    full_path = srv.snaps / full.name
    from bench.server import ROOT, quiver_command
    fresh_cmd = quiver_command() + ["serve", "--host", "127.0.0.1", "--port", str(fresh.port),
                                    "--storage-path", str(fresh.storage)]
    fresh_env = {**os.environ, "QUIVER__GPU__ENABLED": "false",
                 "QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "fresh" / "snaps")}
    proc = subprocess.Popen(fresh_cmd + ["--storage-snapshot", str(full_path)], cwd=ROOT, env=fresh_env)
    try:
        _wait_ready(fresh.url)
        c2 = _client(fresh)
        assert {c: _answers(c2, c) for c in ("a", "b")} == answers
        assert [(a.alias_name, a.collection_name) for a in c2.get_aliases().aliases] == \
            [("bee", "b")]
    finally:
        proc.terminate()
        proc.wait(30)

    # --snapshot PATH:NAME refuses an existing target without --force-snapshot ...
    spec = f"{srv.snaps / 'a' / single.name}:a"
    r = subprocess.run(fresh_cmd + ["--snapshot", spec], cwd=ROOT, env=fresh_env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "already exists" in r.stderr
    # ... and replaces it with it (both spellings of the flag work)
    for flag in ("--force_snapshot", "--force-snapshot"):
        proc = subprocess.Popen(fresh_cmd + ["--snapshot", spec, flag, "--snapshot",
                                             f"{srv.snaps / 'a' / single.name}:a_copy"],
                                cwd=ROOT, env=fresh_env)
        try:
            _wait_ready(fresh.url)
            c3 = _client(fresh)
            assert _answers(c3, "a_copy") == answers["a"] == _answers(c3, "a")
        finally:
            proc.terminate()
            proc.wait(30)


def test_two_snapshots_at_once(srv: QuiverServer) -> None:
    client = _client(srv)
    _fill(client, "twice", n=3000)
    results: list[models.SnapshotDescription] = []

    def create() -> None:
        results.append(_client(srv).create_snapshot("twice"))

    threads = [threading.Thread(target=create) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.name for r in results}) == 2
    for r in results:
        data = httpx.get(f"{srv.url}/collections/twice/snapshots/{r.name}").content
        assert hashlib.sha256(data).hexdigest() == r.checksum


def test_kill9_during_recovery_keeps_the_old_collection(srv: QuiverServer) -> None:
    with httpx.Client(base_url=srv.url, timeout=120) as http:
        _fill_big(http)
        name = http.post("/collections/big/snapshots").json()["result"]["name"]
        http.post("/collections/big/points/delete?wait=true",
                  json={"points": list(range(100))})  # the live data now differs
        location = f"file://{srv.snaps / 'big' / name}"

        _kill9_during(srv, "PUT", "/collections/big/snapshots/recover",
                      {"location": location}, 0.3)
    srv.start()
    with httpx.Client(base_url=srv.url, timeout=60) as http:
        count = http.post("/collections/big/points/count", json={}).json()["result"]["count"]
        assert count in (39900, 40000)  # the old collection, or the fully recovered one
        assert not [p for p in os.listdir(srv.storage) if p.startswith((".tmp-", ".trash-"))]
        r = http.post("/collections/big/points/query", json={"query": [1] * 256, "limit": 3})
        assert len(r.json()["result"]["points"]) == 3
