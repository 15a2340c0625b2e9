"""Scheduled snapshots in the real server (`quiver serve` with a config file), 1-second
interval: snapshots appear, verify, are pruned to the policy (never the user's), the ledger
survives a restart; a full disk and an S3 server that went away are reported in /metrics and
never cost the last good snapshot. A schedule the storage cannot honour stops start-up."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from diskfull import fill, tmpfs
from moto_s3 import MotoS3, moto_s3, s3_settings
from server import QuiverServer

BUCKET = "quiver-scheduled"


def _config(tmp_path: Path, snaps: Path, schedule: dict[str, Any],
            storage: dict[str, Any] | None = None) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "storage": {"snapshots_path": str(snaps), **(storage or {})},
        "snapshots": {"schedule": [schedule]}}))
    return str(path)


def _fill(http: httpx.Client, name: str, n: int = 2000, dim: int = 64) -> None:
    r = http.put(f"/collections/{name}", json={"vectors": {"size": dim, "distance": "Dot"}})
    assert r.status_code == 200, r.text
    vecs = np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32)
    r = http.put(f"/collections/{name}/points?wait=true", json={
        "batch": {"ids": list(range(n)), "vectors": vecs.tolist()}})
    assert r.status_code == 200, r.text


def _prefilled(tmp_path: Path, name: str, n: int = 2000, dim: int = 64) -> Path:
    """A storage holding collection `name`, written by a server without schedules (so the
    schedule's first run finds it, rather than failing on a missing collection)."""
    srv = QuiverServer(tmp_path / "storage",
                       env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "unused")}).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            _fill(http, name, n, dim)
    finally:
        srv.stop()
    return tmp_path / "storage"


def _metrics(http: httpx.Client, schedule: str, collection: str) -> dict[str, float]:
    """This schedule's series for one collection: {suffix: value}."""
    out = {}
    labels = f'{{schedule="{schedule}",collection="{collection}"}}'
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("quiver_snapshot_schedule_") and labels in line:
            key, _, value = line.rpartition(" ")
            out[key[len("quiver_snapshot_schedule_"):-len(labels)]] = float(value)
    return out


def _ledger(snaps: Path, schedule: str) -> dict[str, dict[str, float]]:
    path = snaps / ".schedules" / f"{schedule}.json"
    return json.loads(path.read_text())["folders"] if path.exists() else {}


def _listed(http: httpx.Client, collection: str) -> dict[str, dict[str, Any]]:
    r = http.get(f"/collections/{collection}/snapshots")
    assert r.status_code == 200, r.text
    return {s["name"]: s for s in r.json()["result"]}


def _wait(check: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def test_one_second_schedule_creates_verifies_prunes(tmp_path: Path) -> None:
    snaps = tmp_path / "snaps"
    cfg = _config(tmp_path, snaps, {"name": "often", "collections": ["docs"], "interval": "1s",
                                    "keep_last": 2})
    srv = QuiverServer(_prefilled(tmp_path, "docs"), config_path=cfg).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            user = http.post("/collections/docs/snapshots").json()["result"]["name"]
            seen: set[str] = set()

            def four_runs() -> bool:
                listed = _listed(http, "docs")
                assert user in listed  # never pruned
                ours = set(listed) - {user}
                assert len(ours) <= 3  # two kept, plus a new one not yet pruned around it
                seen.update(ours)
                return len(seen) >= 4
            _wait(four_runs, what="four scheduled snapshots")
            m = _metrics(http, "often", "docs")
            assert m["failures_total"] == 0 and m["last_failure_timestamp_seconds"] == 0
            assert abs(m["last_success_timestamp_seconds"] - time.time()) < 30
            assert m["last_success_age_seconds"] < 30
            assert m["next_run_timestamp_seconds"] >= m["last_success_timestamp_seconds"]

            # a scheduled snapshot is a good snapshot: same bytes, recoverable
            name = max(_ledger(snaps, "often")["docs"])
            info = _listed(http, "docs")[name]
            data = http.get(f"/collections/docs/snapshots/{name}").content
            assert hashlib.sha256(data).hexdigest() == info["checksum"]
            r = http.put("/collections/copy/snapshots/recover",
                         json={"location": f"file://{snaps / 'docs' / name}"})
            assert r.status_code == 200, r.text
            assert http.post("/collections/copy/points/count", json={"exact": True}
                             ).json()["result"]["count"] == 2000
        srv.stop()
        before = set(_ledger(snaps, "often")["docs"])
        assert len(before) == 2

        # restarted: the ledger still says which snapshots are the schedule's, so the old
        # ones are pruned by the new runs and the user's is still kept
        srv.start()
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            _wait(lambda: not (before & set(_listed(http, "docs"))), what="old ones pruned")
            assert user in _listed(http, "docs")
            assert _metrics(http, "often", "docs")["failures_total"] == 0
    finally:
        srv.stop()
    listed = {p.name for p in (snaps / "docs").glob("*.snapshot")}
    assert listed == set(_ledger(snaps, "often")["docs"]) | {user}
    assert "copy" not in _ledger(snaps, "often")


def test_full_disk_is_reported_and_keeps_the_last_good(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "snapdisk", "8m") as snapdisk:
        snaps = snapdisk / "snapshots"
        cfg = _config(tmp_path, snaps, {"name": "often", "collections": ["s"],
                                        "interval": "1s", "keep_last": 1})
        storage = _prefilled(tmp_path, "s", n=4000, dim=64)  # a 1 MB archive
        srv = QuiverServer(storage, config_path=cfg).start()
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as http:
                _wait(lambda: _ledger(snaps, "often").get("s"), what="a first snapshot")
                filler = fill(snapdisk, leave=64 << 10)
                failures = _wait(lambda: _metrics(http, "often", "s")["failures_total"] >= 2
                                 and _metrics(http, "often", "s"), what="failures")
                assert failures["last_failure_timestamp_seconds"] \
                    > failures["last_success_timestamp_seconds"]
                [good] = _ledger(snaps, "often")["s"]
                time.sleep(1.5)  # more failed runs: still the same last good one
                listed = _listed(http, "s")
                assert set(listed) == {good}
                data = http.get(f"/collections/s/snapshots/{good}").content
                assert hashlib.sha256(data).hexdigest() == listed[good]["checksum"]
                log = srv.log_path.read_text(errors="replace")
                assert "scheduled snapshot often of s failed" in log
                assert "No space left on device" in log
                filler.unlink()
                _wait(lambda: good not in _listed(http, "s"), what="recovery and pruning")
                m = _metrics(http, "often", "s")
                assert m["last_success_timestamp_seconds"] > m["last_failure_timestamp_seconds"]
                assert len(_listed(http, "s")) == 1
        finally:
            srv.stop()


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoS3]:
    with moto_s3(tmp_path, BUCKET) as s3:
        yield s3


def _s3_storage(url: str) -> dict[str, Any]:
    return {"snapshots_config": s3_settings(url, BUCKET)}


def test_s3_down_is_reported_and_keeps_the_last_good(
        tmp_path: Path, moto: MotoS3) -> None:
    url = moto.url
    snaps = tmp_path / "snaps"
    cfg = _config(tmp_path, snaps, {"name": "s3", "collections": ["docs"], "interval": "1s",
                                    "keep_last": 1, "target": "s3"}, _s3_storage(url))
    srv = QuiverServer(_prefilled(tmp_path, "docs", n=500), config_path=cfg).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            seen: set[str] = set()

            def three_runs() -> bool:
                listed = set(_listed(http, "docs"))
                assert len(listed) <= 2
                seen.update(listed)
                return len(seen) >= 3
            _wait(three_runs, what="scheduled snapshots in S3")
            moto.stop()  # S3 goes away
            m = _wait(lambda: _metrics(http, "s3", "docs")["failures_total"] >= 2
                      and _metrics(http, "s3", "docs"), what="failures reported")
            assert m["last_failure_timestamp_seconds"] > m["last_success_timestamp_seconds"]
            assert m["last_success_age_seconds"] >= 1
            # the ledger still names the last good snapshot (and, if S3 went away between a
            # run and its pruning, the one before it): failed runs deleted nothing
            ledger = _ledger(snaps, "s3")["docs"]
            assert 1 <= len(ledger) <= 2
            assert max(ledger.values()) == m["last_success_timestamp_seconds"]
            time.sleep(1.5)
            assert _ledger(snaps, "s3")["docs"] == ledger
            assert _metrics(http, "s3", "docs")["failures_total"] > m["failures_total"]
    finally:
        srv.stop()


def test_a_target_the_storage_cannot_honour_stops_start_up(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "snaps", {"collections": "*", "interval": "1h",
                                                 "target": "s3"})
    with pytest.raises(RuntimeError, match=r"snapshots.schedule\[0\].target"):
        QuiverServer(tmp_path / "storage", config_path=cfg).start()
