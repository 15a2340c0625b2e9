"""Disk full, for real: the server's storage (or snapshots) on a small tmpfs.

Needs root and `mount -t tmpfs` (CI and this project's machines have both); skipped cleanly
otherwise. A filler file placed on the tmpfs takes the space; deleting it frees the space.

- Upserts until ENOSPC answer 507 in Qdrant's error envelope; nothing acknowledged is lost
  (retrieve and count, then again after a restart on the still-full disk); reads keep being
  served; after the filler is deleted, writes succeed again and survive a restart.
- Snapshot creation on a full snapshots volume answers 507, lists nothing and leaves no temp
  files; after freeing space a snapshot is created and verifies.
- Recovering an archive too big for the remaining storage space fails (before unpacking, or
  when building the collection) with the previous collection intact and no staging debris.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from diskfull import debris, fill, free_bytes, tmpfs
from server import QuiverServer

PAGE = 4096


def vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return rng.standard_normal((n, dim)).astype(np.float32)


def upsert(http: httpx.Client, coll: str, ids: list[int], vecs: np.ndarray) -> httpx.Response:
    return http.put(f"/collections/{coll}/points", params={"wait": "true"}, json={
        "points": [{"id": i, "vector": v.tolist(), "payload": {"i": i}}
                   for i, v in zip(ids, vecs, strict=True)]})


def check_points(http: httpx.Client, coll: str, expected: dict[int, np.ndarray]) -> None:
    r = http.post(f"/collections/{coll}/points/count", json={"exact": True})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["count"] == len(expected)
    ids = sorted(expected)
    for s in range(0, len(ids), 2000):
        part = ids[s: s + 2000]
        r = http.post(f"/collections/{coll}/points",
                      json={"ids": part, "with_vector": True, "with_payload": True})
        assert r.status_code == 200, r.text
        got = {p["id"]: p for p in r.json()["result"]}
        assert sorted(got) == part, f"{len(set(part) - set(got))} acknowledged points missing"
        for i in part:
            assert np.array_equal(np.asarray(got[i]["vector"], np.float32), expected[i]), i
            assert got[i]["payload"] == {"i": i}


def assert_envelope(r: httpx.Response, status: int | tuple[int, ...]) -> str:
    statuses = status if isinstance(status, tuple) else (status,)
    assert r.status_code in statuses, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"status", "time"} and isinstance(body["status"]["error"], str)
    return body["status"]["error"]


def deleted_fds(pid: int, under: Path) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(under)) and target.endswith("(deleted)"):
            out.append(target)
    with open(f"/proc/{pid}/maps") as maps:  # memory maps keep a deleted file's space too
        for line in maps:
            fields = line.split(maxsplit=5)
            path = fields[5].strip() if len(fields) == 6 else ""
            if path.startswith(str(under)) and path.endswith("(deleted)"):
                out.append("mapped " + path)
    return out


def test_storage_full_refuses_writes_keeps_reads_and_recovers(tmp_path: Path) -> None:
    dim = 64
    rng = np.random.default_rng(7)
    with tmpfs(tmp_path / "disk", "16m") as disk:
        srv = QuiverServer(disk / "storage", env={
            "QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps"),
            "QUIVER__STORAGE__FLUSH__IDLE_SECONDS": "1"})  # background flushes hit ENOSPC too
        srv.tmp = tmp_path  # the server log lives off the small disk
        srv.log_path = tmp_path / "server.log"
        srv.start()
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as http:
                assert http.put("/collections/c", json={
                    "vectors": {"size": dim, "distance": "Euclid"}}).status_code == 200
                acked: dict[int, np.ndarray] = {}
                vecs = vectors(rng, 200, dim)
                assert upsert(http, "c", list(range(200)), vecs).status_code == 200
                acked.update(zip(range(200), vecs, strict=True))
                filler = fill(disk, leave=400 << 10)
                next_id, failures = 200, []
                for _ in range(400):
                    ids = list(range(next_id, next_id + 64))
                    vecs = vectors(rng, 64, dim)
                    r = upsert(http, "c", ids, vecs)
                    next_id += 64
                    if r.status_code == 200:
                        acked.update(zip(ids, vecs, strict=True))
                    else:
                        failures.append(r)
                        if len(failures) == 3:
                            break
                assert failures, "the disk never filled up"
                for r in failures:
                    err = assert_envelope(r, 507)
                    assert "No space left on device" in err, err
                # reads go on while the disk is full
                check_points(http, "c", acked)
                assert http.get("/collections/c").status_code == 200
                r = http.post("/collections/c/points/query",
                              json={"query": acked[0].tolist(), "limit": 1})
                assert r.status_code == 200 and r.json()["result"]["points"][0]["id"] == 0
                r = http.post("/collections/c/points/scroll", json={"limit": 10})
                assert r.status_code == 200 and len(r.json()["result"]["points"]) == 10
                assert r.headers["x-request-id"]

            srv.restart()  # the shutdown flush fails on the full disk; start-up still works
            with httpx.Client(base_url=srv.url, timeout=60) as http:
                check_points(http, "c", acked)
                ids = list(range(next_id, next_id + 64))
                assert_envelope(upsert(http, "c", ids, vectors(rng, 64, dim)), 507)
                next_id += 64
                filler.unlink()  # free the space
                for _ in range(5):
                    ids = list(range(next_id, next_id + 64))
                    vecs = vectors(rng, 64, dim)
                    r = upsert(http, "c", ids, vecs)
                    assert r.status_code == 200, r.text
                    acked.update(zip(ids, vecs, strict=True))
                    next_id += 64
                check_points(http, "c", acked)
            srv.restart(kill=True)
            with httpx.Client(base_url=srv.url, timeout=60) as http:
                check_points(http, "c", acked)
            log = (tmp_path / "server.log").read_text(errors="replace")
            assert "status=507" in log and "request_id=" in log  # the error line carries the id
        finally:
            srv.stop()


@contextmanager
def snapshot_volume(tmp_path: Path, dim: int) -> Iterator[tuple[httpx.Client, Path, Path]]:
    """The snapshots directory on a 6 MB tmpfs (storage elsewhere), a server on it, and a
    client; collection `s` (`dim`, Dot) created."""
    with tmpfs(tmp_path / "snapdisk", "6m") as snapdisk:
        snaps = snapdisk / "snapshots"
        srv = QuiverServer(tmp_path / "storage",
                           env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(snaps)}).start()
        try:
            with httpx.Client(base_url=srv.url, timeout=120) as http:
                http.put("/collections/s", json={"vectors": {"size": dim, "distance": "Dot"}})
                yield http, snapdisk, snaps
        finally:
            srv.stop()


def test_snapshot_on_full_volume_fails_cleanly(tmp_path: Path) -> None:
    dim = 128
    rng = np.random.default_rng(3)
    with snapshot_volume(tmp_path, dim) as (http, snapdisk, snaps):
        expected = {}
        for s in range(0, 6000, 1000):  # about 3 MB of vectors
            vecs = vectors(rng, 1000, dim)
            assert upsert(http, "s", list(range(s, s + 1000)), vecs).status_code == 200
            expected.update(zip(range(s, s + 1000), vecs, strict=True))
        filler = fill(snapdisk, leave=1 << 20)
        for _ in range(2):
            err = assert_envelope(http.post("/collections/s/snapshots"), 507)
            assert "No space left on device" in err
            assert http.get("/collections/s/snapshots").json()["result"] == []
            assert debris(snaps) == [] and os.listdir(snaps / ".tmp") == []
            assert {p.name for p in snapdisk.iterdir()} == {"snapshots", "filler.bin"}
        check_points(http, "s", expected)  # the collection is untouched
        filler.unlink()
        r = http.post("/collections/s/snapshots")
        assert r.status_code == 200, r.text
        snap = r.json()["result"]
        listed = http.get("/collections/s/snapshots").json()["result"]
        assert [s["name"] for s in listed] == [snap["name"]]
        data = http.get(f"/collections/s/snapshots/{snap['name']}").content
        assert hashlib.sha256(data).hexdigest() == snap["checksum"] == listed[0]["checksum"]
        r = http.put("/collections/s2/snapshots/recover",
                     json={"location": f"file://{snaps / 's' / snap['name']}"})
        assert r.status_code == 200, r.text
        check_points(http, "s2", expected)


def test_snapshot_that_fits_but_its_checksum_does_not(tmp_path: Path) -> None:
    dim = 128
    rng = np.random.default_rng(4)
    with snapshot_volume(tmp_path, dim) as (http, snapdisk, snaps):
        assert upsert(http, "s", list(range(2000)),
                      vectors(rng, 2000, dim)).status_code == 200
        first = http.post("/collections/s/snapshots").json()["result"]
        http.delete(f"/collections/s/snapshots/{first['name']}")
        pages = -(-first["size"] // PAGE)
        fill(snapdisk, leave=pages * PAGE)  # room for the archive, not its sidecar
        r = http.post("/collections/s/snapshots")
        listed = http.get("/collections/s/snapshots").json()["result"]
        if r.status_code == 200:
            assert [s["name"] for s in listed] == [r.json()["result"]["name"]]
            assert listed[0].get("checksum")
        else:
            assert_envelope(r, 507)
            assert listed == [], f"a failed creation left {listed} listed"
        assert debris(snaps) == []


@contextmanager
def recovery_setup(tmp_path: Path) -> Iterator[tuple[QuiverServer, Path, Path, str, dict, dict]]:
    """Storage on a 40 MB tmpfs; a ~4 MB snapshot of `big` (kept off that disk); `big`
    deleted; `target` (same vectors config) holding 100 points."""
    dim = 256
    rng = np.random.default_rng(5)
    with tmpfs(tmp_path / "disk", "40m") as disk:
        storage = disk / "storage"
        snaps = tmp_path / "snaps"
        srv = QuiverServer(storage, env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(snaps)})
        srv.tmp = tmp_path
        srv.log_path = tmp_path / "server.log"
        srv.start()
        try:
            with httpx.Client(base_url=srv.url, timeout=120) as http:
                cfg = {"vectors": {"size": dim, "distance": "Euclid"}}
                http.put("/collections/big", json=cfg)
                for s in range(0, 4000, 1000):
                    assert upsert(http, "big", list(range(s, s + 1000)),
                                  vectors(rng, 1000, dim)).status_code == 200
                snap = http.post("/collections/big/snapshots").json()["result"]
                assert http.delete("/collections/big").status_code == 200
                http.put("/collections/target", json=cfg)
                target = vectors(rng, 100, dim)
                assert upsert(http, "target", list(range(100)), target).status_code == 200
            yield (srv, disk, storage, f"file://{snaps / 'big' / snap['name']}", snap,
                   dict(zip(range(100), target, strict=True)))
        finally:
            srv.stop()


def test_recovery_too_big_for_the_disk_keeps_the_old_collection(tmp_path: Path) -> None:
    with recovery_setup(tmp_path) as (srv, disk, storage, location, snap, before):
        with httpx.Client(base_url=srv.url, timeout=120) as http:
            # The snapshot lives on another filesystem, so recovery copies the archive into
            # storage (once: it is never extracted). Less room than the archive: the copy
            # fails, twice in a row, and the old collection serves throughout.
            filler = fill(disk, leave=snap["size"] // 2)
            for _ in range(2):
                r = http.put("/collections/target/snapshots/recover",
                             json={"location": location})
                err = assert_envelope(r, 507)
                assert "space" in err.lower(), err
                check_points(http, "target", before)  # the previous collection serves
                assert debris(storage) == []
            filler.unlink()
            # no disk doubling: the archive's size plus a little is all a recovery needs
            filler = fill(disk, leave=snap["size"] + (1 << 20))
            r = http.put("/collections/target/snapshots/recover", json={"location": location})
            assert r.status_code == 200, r.text
            filler.unlink()
            r = http.put("/collections/target/snapshots/recover", json={"location": location})
            assert r.status_code == 200, r.text
            assert http.post("/collections/target/points/count",
                             json={}).json()["result"]["count"] == 4000
        srv.restart()
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            assert http.post("/collections/target/points/count",
                             json={}).json()["result"]["count"] == 4000
            assert debris(storage) == []


def test_failed_recovery_releases_its_files(tmp_path: Path) -> None:
    with recovery_setup(tmp_path) as (srv, disk, storage, location, snap, before):
        with httpx.Client(base_url=srv.url, timeout=120) as http:
            free = free_bytes(disk)
            # the copy of the archive runs out of space
            filler = fill(disk, leave=snap["size"] // 2)
            r = http.put("/collections/target/snapshots/recover", json={"location": location})
            assert_envelope(r, 507)
            filler.unlink()
            leaked = deleted_fds(srv.pid, storage)
            assert leaked == [], f"a failed recovery left files open: {leaked}"
            assert free_bytes(disk) >= free - (1 << 20), "its disk space is still allocated"
            # the copy fits and the collection is built on its memory maps, then the
            # checksum (verified alongside) fails: the maps and the copy go at once
            r = http.put("/collections/target/snapshots/recover",
                         json={"location": location, "checksum": "0" * 64})
            assert "Checksum mismatch" in assert_envelope(r, 400)
            leaked = deleted_fds(srv.pid, storage)
            assert leaked == [], f"a failed recovery left files mapped or open: {leaked}"
            assert free_bytes(disk) >= free - (1 << 20), "its disk space is still allocated"
            check_points(http, "target", before)
