"""A shard transfer's write log (api/cluster/transfer.py TransferLog): entries come back in
order and unchanged whether they stayed in memory or were spilled to disk; appends and reads
may run at once; the spill file is removed when the transfer ends and at start-up. No Ray."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from api.cluster.transfer import TransferLog, drop_spilled

P = "/collections/{collection_name}/points"


def _entry(i: int) -> tuple:
    body = {"points": [{"id": i, "vector": [i + 0.1, -1.5e-7, 3.0], "payload": {"k": f"v{i}"}}]}
    return (i if i % 3 else None, "PUT", P, {"collection_name": "c"}, {"wait": "true"}, body)


def test_memory_then_disk_in_order(tmp_path: Path) -> None:
    log = TransferLog(str(tmp_path / "transfers"), memory_bytes=1000)
    entries = [_entry(i) for i in range(200)]
    for e in entries:
        log.append(e)
    assert len(log) == 200 and 0 < log.spilled() < 200  # some in memory, the rest on disk
    assert log.path is not None and os.path.exists(log.path)
    assert [log[i] for i in range(200)] == entries  # the same values, floats exactly
    log.close()
    assert not os.path.exists(log.path)
    log.append(_entry(1))  # a write that picked the transfer as it ended: dropped
    assert len(log) == 0 and not os.listdir(tmp_path / "transfers")


def test_memory_only_and_numpy_bodies(tmp_path: Path) -> None:
    log = TransferLog(None)  # no spill dir: everything in memory
    vec = np.array([[0.5, 0.25]], np.float32)
    body = {"batch": {"ids": [np.int64(7)], "vectors": vec}}
    log.append((None, "PUT", P, {}, {}, body))
    body["batch"]["ids"].append(8)  # later changes to the request do not reach the log
    assert log.spilled() == 0
    assert log[0][5] == {"batch": {"ids": [7], "vectors": [[0.5, 0.25]]}}


def test_zero_memory_spills_everything(tmp_path: Path) -> None:
    log = TransferLog(str(tmp_path), memory_bytes=0)
    for i in range(5):
        log.append(_entry(i))
    assert log.spilled() == 5 and [log[i] for i in range(5)] == [_entry(i) for i in range(5)]
    log.close()


def test_reads_while_writes_are_appended(tmp_path: Path) -> None:
    log = TransferLog(str(tmp_path), memory_bytes=2000)
    n = 3000
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(n):
                log.append(_entry(i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    th = threading.Thread(target=writer)
    th.start()
    seen = 0
    while th.is_alive() or seen < len(log):  # as the transfer's replay reads it
        while seen < len(log):
            assert log[seen] == _entry(seen)
            seen += 1
    th.join()
    assert not errors and seen == n and log.spilled() > 0
    log.close()


def test_leftover_spill_files_are_dropped(tmp_path: Path) -> None:
    d = tmp_path / "transfers"
    log = TransferLog(str(d), memory_bytes=0)
    log.append(_entry(1))  # a crash now leaves the file
    assert os.listdir(d)
    drop_spilled(str(d))
    assert not d.exists()
    drop_spilled(str(d))  # nothing there: fine
    log.close()
