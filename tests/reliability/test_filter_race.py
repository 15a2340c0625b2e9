"""Filtered reads racing writes must never fail (found by the load test, tests/test_load.py).

Writers append rows; readers run filtered counts on a payload field, indexed or not. Switching
threads every 10 µs makes any window between two related array assignments visible within a
second or so (it did, when payload columns replaced their parallel arrays one by one: 500s
from filtered queries under concurrent upserts, fixed by publishing one immutable ColumnData);
the test runs for 8 s and stops at the first failure.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from api.parse.writes import apply_body
from engine import query
from engine.catalog import Catalog
from engine.filters import parse_filter
from engine.plan import CountRequest


@pytest.mark.parametrize("indexed", [False, True], ids=["unindexed", "indexed"])
def test_filtered_reads_racing_writes(tmp_path: Path, indexed: bool) -> None:
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    c = cat.create("c", {"vectors": {"size": 2, "distance": "Dot"}})
    apply_body(c, "upsert", {"points": [{"id": i, "vector": [i, 1], "payload": {"g": i % 10}}
                         for i in range(20000)]})
    if indexed:
        c.create_index("g", "integer")
    stop = threading.Event()
    errors: list[str] = []

    def writer() -> None:
        i = 20000
        while not stop.is_set():
            apply_body(c, "upsert", {"points": [{"id": j, "vector": [j, 1], "payload": {"g": j % 10}}
                                 for j in range(i, i + 10)]})
            i += 10

    def reader() -> None:
        while not stop.is_set():
            try:
                query.count(c, CountRequest(parse_filter({"must": [{"key": "g", "match": {"value": 3}}]})))
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(f"{type(exc).__name__}: {exc}")
                stop.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader)
                                                   for _ in range(2)]
    try:
        for t in threads:
            t.start()
        stop.wait(8)
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(old)
        cat.close()
    assert errors == []
