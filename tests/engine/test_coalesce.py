"""Concurrent searches coalesce into batches; errors stay with the request that caused them."""

from __future__ import annotations

import threading
import time
from typing import Any

from engine.coalesce import Coalescer


class FakeSpec:
    def __init__(self, value: int) -> None:
        self.value = value


def test_concurrent_requests_share_batches_and_get_their_own_results() -> None:
    sizes: list[int] = []

    def fake_batch(specs: list[FakeSpec]) -> list[Any]:
        sizes.append(len(specs))
        time.sleep(0.05)  # a batch in flight: requests arriving now must queue
        if any(s.value < 0 for s in specs):
            raise ValueError("bad request in batch")
        return [[s.value * 10] for s in specs]

    co = Coalescer()
    results: dict[int, Any] = {}
    start = threading.Barrier(16)

    def client(i: int) -> None:
        start.wait()
        try:
            results[i] = co.search([FakeSpec(i), FakeSpec(i + 100)], fake_batch)  # type: ignore[arg-type]
        except ValueError as exc:
            results[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(-1, 15)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(not t.is_alive() for t in threads)
    for i in range(15):  # every request got exactly its own answers, in order
        assert results[i] == [[i * 10], [(i + 100) * 10]]
    assert isinstance(results[-1], ValueError)  # only the bad request sees the error
    assert co.batches < 16 and co.coalesced > 0, sizes
    assert max(sizes) > 2  # the device saw real batches


def test_idle_collection_runs_immediately() -> None:
    co = Coalescer()
    one = lambda specs: [[1] for _ in specs]  # noqa: E731
    assert co.search([FakeSpec(1)], one) == [[1]]  # type: ignore[arg-type]
    assert co.search([FakeSpec(2)], one) == [[1]]  # type: ignore[arg-type]
    assert co.batches == 2 and co.coalesced == 0
