"""kill -9 soak, as qdrant/crasher: writes, searches and snapshots over HTTP, killed at random.

Each cycle runs, against the real server (tests/server.py), a writer upserting batches of new
points with wait=true, a searcher, and a snapshotter creating a collection snapshot about
every second; the server gets SIGKILL at a random moment (seeded), is restarted, and then:

- it started (every time);
- every acknowledged point is present with exactly the vector sent;
- no point exists that was never sent, and every batch is all-or-nothing;
- no temp debris: no `.tmp-*`, `.trash-*`, `.part`, `.upload` entries in storage or the
  snapshots dir, and `snapshots/.tmp` is empty (one known exception, KNOWN_SIDECAR_GAP);
- every listed snapshot's checksum matches its bytes, it recovers (file:// location) into a
  scratch collection with 200, every point in it has the vector sent for that id, every
  batch in it is whole, and it holds at least every point acknowledged before its creation
  was requested (the point-in-time lower bound).

The default test runs 3 cycles; the `slow` variant 30. Figures are printed.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from faultfs import FaultFS, PowerCut
from server import QuiverServer
from slow import require_slow

from snapshots.storage import LocalStorage

DIM = 16
BATCH = 20

# A kill -9 between publishing an archive and its .checksum sidecar leaves the snapshot
# listed without a checksum and the sidecar's temp file behind (the xfail test at the end of
# this file pins it down). Until that is fixed the soak counts those two symptoms in its
# figures instead of failing; set this to False (and drop the xfail) once it is.
KNOWN_SIDECAR_GAP = False


class Soak:
    def __init__(self, tmp_path: Path, seed: int) -> None:
        self.rng = random.Random(seed)
        self.snaps = tmp_path / "snaps"
        self.srv = QuiverServer(tmp_path / "storage", env={
            "QUIVER__STORAGE__SNAPSHOTS_PATH": str(self.snaps),
            "QUIVER__STORAGE__FLUSH__WAL_BYTES_MB": "1",  # flushes (and kills mid-flush)
            "QUIVER__STORAGE__FLUSH__IDLE_SECONDS": "0.5"})
        self.sent: dict[int, np.ndarray] = {}  # every vector ever sent, by id
        self.batch_of: dict[int, int] = {}  # id -> batch number
        self.batches: list[list[int]] = []
        self.acked: set[int] = set()
        self.lock = threading.Lock()
        self.next_id = 0
        self.snap_floor: dict[str, int] = {}  # snapshot name -> acked ids when requested
        self.acked_order: list[int] = []
        self.verified: set[str] = set()
        self.sidecar_debris: set[str] = set()
        self.figures = {"cycles": 0, "acked_points": 0, "requests": 0, "snapshots_created": 0,
                        "snapshots_verified": 0, "restart_s_max": 0.0, "kills_mid_snapshot": 0,
                        "listed_without_checksum": 0, "sidecar_temp_debris": 0}

    # ---- load ------------------------------------------------------------------------------

    def writer(self, stop: threading.Event, errors: list[str]) -> None:
        rng = np.random.default_rng(self.rng.randrange(1 << 30))
        with httpx.Client(base_url=self.srv.url, timeout=30) as c:
            while not stop.is_set():
                with self.lock:
                    ids = list(range(self.next_id, self.next_id + BATCH))
                    self.next_id += BATCH
                    vecs = rng.standard_normal((BATCH, DIM)).astype(np.float32)
                    b = len(self.batches)
                    self.batches.append(ids)
                    for i, v in zip(ids, vecs, strict=True):
                        self.sent[i] = v
                        self.batch_of[i] = b
                body = {"points": [{"id": i, "vector": v.tolist(), "payload": {"b": b}}
                                   for i, v in zip(ids, vecs, strict=True)]}
                try:
                    r = c.put("/collections/soak/points", params={"wait": "true"}, json=body)
                except httpx.HTTPError:
                    return  # killed mid-request: not acknowledged
                self.figures["requests"] += 1
                if r.status_code != 200:
                    errors.append(f"upsert {r.status_code} {r.text[:200]}")
                    return
                with self.lock:
                    self.acked.update(ids)
                    self.acked_order.extend(ids)

    def searcher(self, stop: threading.Event, errors: list[str]) -> None:
        rng = np.random.default_rng(self.rng.randrange(1 << 30))
        with httpx.Client(base_url=self.srv.url, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/collections/soak/points/query", json={
                        "query": rng.standard_normal(DIM).tolist(), "limit": 5})
                except httpx.HTTPError:
                    return
                self.figures["requests"] += 1
                if r.status_code != 200:
                    errors.append(f"query {r.status_code} {r.text[:200]}")
                    return
                for p in r.json()["result"]["points"]:
                    if p["id"] not in self.sent:
                        errors.append(f"query returned an id never sent: {p['id']}")

    def snapshotter(self, stop: threading.Event, errors: list[str]) -> None:
        with httpx.Client(base_url=self.srv.url, timeout=60) as c:
            while not stop.wait(self.rng.uniform(0.6, 1.2)):
                with self.lock:
                    floor = len(self.acked_order)
                try:
                    r = c.post("/collections/soak/snapshots")
                except httpx.HTTPError:
                    self.figures["kills_mid_snapshot"] += 1
                    return
                self.figures["requests"] += 1
                if r.status_code != 200:
                    errors.append(f"snapshot {r.status_code} {r.text[:200]}")
                    return
                self.snap_floor[r.json()["result"]["name"]] = floor
                self.figures["snapshots_created"] += 1

    # ---- one cycle -------------------------------------------------------------------------

    def cycle(self) -> None:
        stop = threading.Event()
        errors: list[str] = []
        threads = [threading.Thread(target=f, args=(stop, errors), daemon=True)
                   for f in (self.writer, self.searcher, self.snapshotter)]
        for t in threads:
            t.start()
        time.sleep(self.rng.uniform(1.5, 3.5))
        self.srv.kill9()
        stop.set()
        for t in threads:
            t.join(60)
        assert errors == [], errors[:5]
        started = time.monotonic()
        self.srv.start()  # raises if the server does not come up
        self.figures["restart_s_max"] = max(self.figures["restart_s_max"],
                                            round(time.monotonic() - started, 2))
        self.figures["cycles"] += 1
        self.verify()

    def verify(self) -> None:
        assert self.debris() == []
        with httpx.Client(base_url=self.srv.url, timeout=120) as c:
            acked = sorted(self.acked)
            for s in range(0, len(acked), 2000):
                part = acked[s: s + 2000]
                r = c.post("/collections/soak/points", json={"ids": part, "with_vector": True})
                assert r.status_code == 200, r.text
                got = {p["id"]: p["vector"] for p in r.json()["result"]}
                missing = set(part) - set(got)
                assert not missing, f"{len(missing)} acknowledged points lost"
                for i in part:
                    assert np.array_equal(np.asarray(got[i], np.float32), self.sent[i]), i
            count = c.post("/collections/soak/points/count", json={}).json()["result"]["count"]
            assert len(self.acked) <= count <= len(self.sent)
            self.figures["acked_points"] = len(self.acked)
            listed = c.get("/collections/soak/snapshots").json()["result"]
            for snap in listed:
                if snap["name"] not in self.verified:
                    self.verify_snapshot(c, snap)
            # keep the two newest, so the disk stays small over a long soak
            for snap in sorted(listed, key=lambda s: s["name"])[:-2]:
                assert c.delete(f"/collections/soak/snapshots/{snap['name']}").status_code == 200

    def verify_snapshot(self, c: httpx.Client, snap: dict) -> None:
        path = self.snaps / "soak" / snap["name"]
        if snap.get("checksum") is None and KNOWN_SIDECAR_GAP:
            self.figures["listed_without_checksum"] += 1  # see KNOWN_SIDECAR_GAP
        else:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == snap["checksum"], snap
        r = c.put("/collections/scratch/snapshots/recover", json={"location": f"file://{path}"})
        assert r.status_code == 200, r.text
        ids: list[int] = []
        offset = None
        while True:
            r = c.post("/collections/scratch/points/scroll", json={
                "limit": 5000, "offset": offset, "with_vector": True, "with_payload": True})
            assert r.status_code == 200, r.text
            page = r.json()["result"]
            for p in page["points"]:
                i = p["id"]
                assert i in self.sent, f"{snap['name']}: id {i} was never sent"
                assert np.array_equal(np.asarray(p["vector"], np.float32), self.sent[i]), i
                assert p["payload"] == {"b": self.batch_of[i]}
                ids.append(i)
            offset = page.get("next_page_offset")
            if offset is None:
                break
        have = set(ids)
        assert len(have) == len(ids)
        for b in {self.batch_of[i] for i in have}:
            assert set(self.batches[b]) <= have, f"{snap['name']}: batch {b} is partial"
        floor = self.snap_floor.get(snap["name"])
        if floor is not None:  # its creation was acknowledged: a point-in-time lower bound
            assert set(self.acked_order[:floor]) <= have, snap["name"]
        assert c.delete("/collections/scratch").status_code == 200
        self.verified.add(snap["name"])
        self.figures["snapshots_verified"] += 1

    def debris(self) -> list[str]:
        found = []
        for root in (self.srv.storage, self.snaps):
            for dirpath, dirnames, filenames in os.walk(root):
                for name in dirnames + filenames:
                    if KNOWN_SIDECAR_GAP and root == self.snaps and name.startswith(".tmp-") \
                            and name.endswith(".snapshot.checksum"):
                        self.sidecar_debris.add(name)  # see KNOWN_SIDECAR_GAP
                        self.figures["sidecar_temp_debris"] = len(self.sidecar_debris)
                        continue
                    if name.startswith((".tmp-", ".trash-", ".swap-")) or name.endswith(
                            (".part", ".upload")):
                        found.append(os.path.join(dirpath, name))
        tmp = self.snaps / ".tmp"
        if tmp.exists():
            found += [str(tmp / n) for n in os.listdir(tmp)]
        return found


def run_soak(tmp_path: Path, cycles: int, capsys: pytest.CaptureFixture[str],
             record_property, seed: int = 1234) -> None:
    soak = Soak(tmp_path, seed)
    soak.srv.start()
    started = time.monotonic()
    try:
        r = httpx.put(soak.srv.url + "/collections/soak",
                      json={"vectors": {"size": DIM, "distance": "Euclid"}})
        assert r.status_code == 200, r.text
        for _ in range(cycles):
            soak.cycle()
    finally:
        soak.srv.stop()
        figures = {**soak.figures, "seconds": round(time.monotonic() - started, 1)}
        for k, v in figures.items():
            record_property(k, v)
        with capsys.disabled():
            print(f"\nkill -9 soak: {figures}")
    assert soak.figures["cycles"] == cycles
    assert soak.figures["acked_points"] > 0 and soak.figures["snapshots_verified"] > 0


def test_kill9_soak(tmp_path: Path, capsys: pytest.CaptureFixture[str], record_property) -> None:
    run_soak(tmp_path, 3, capsys, record_property)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill9_soak_long(request: pytest.FixtureRequest, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str], record_property) -> None:
    require_slow(request)
    run_soak(tmp_path, 30, capsys, record_property, seed=98765)


def test_kill_between_archive_and_checksum(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    snaps = tmp_path / "snaps"
    srv = QuiverServer(tmp_path / "storage",
                       env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(snaps)}).start()
    try:
        httpx.put(srv.url + "/collections/c", json={"vectors": {"size": 2, "distance": "Dot"}})
        name = httpx.post(srv.url + "/collections/c/snapshots").json()["result"]["name"]
    finally:
        srv.stop()
    # replay the end of that creation, dying inside the sidecar write as kill -9 would
    (snaps / "c" / f"{name}.checksum").unlink()
    part = snaps / ".tmp" / "replayed.part"
    os.rename(snaps / "c" / name, part)
    with monkeypatch.context() as mp:
        fs = FaultFS(snaps).install(mp)
        fs.crash_at = 2  # the sidecar's temp file exists, nothing is written or renamed
        with pytest.raises(PowerCut):
            LocalStorage(str(snaps)).publish(str(part), "c", name, "0" * 64)
    srv.start()
    try:
        listed = httpx.get(srv.url + "/collections/c/snapshots").json()["result"]
        assert all(s.get("checksum") for s in listed), f"listed without a checksum: {listed}"
        left = [n for n in os.listdir(snaps / "c") if n.startswith(".tmp-")]
        assert left == [], f"temp debris after restart: {left}"
    finally:
        srv.stop()
