"""The device path against the numpy path on the same data (tests marked `gpu` need CUDA).

Unmarked tests here run everywhere: the bucket-select and the device search routine are
written against the xp API, so CI runs them under numpy; the `gpu` ones repeat them on cupy
and go through the engine (collections, filters, float16/uint8, budget eviction, device
failure fallback, snapshot → recover rehydration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.parse.writes import apply_body
from engine import query
from engine.catalog import Catalog
from engine.collection import Collection
from gpu import flat, select
from gpu.budget import DeviceBudget
from gpu.device import HOST, Device, default_device
from gpu.xp import DeviceFailure, get_xp, is_device_array

METRICS = ["ip", "l2", "l1"]
DISTANCES = ["Cosine", "Dot", "Euclid", "Manhattan"]


def oracle_topk(s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


def score_cases(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    masked = rng.standard_normal((3, 50_000)).astype(np.float32)
    masked[:, rng.random(50_000) < 0.7] = -np.inf
    sparse = np.full((2, 40_000), -np.inf, np.float32)
    sparse[0, [7, 9000, 39_999]] = [1.0, 3.0, 2.0]
    ties = np.zeros((2, 20_000), np.float32)
    ties[1, ::1000] = 1.0
    return [rng.standard_normal((5, 100_000)).astype(np.float32), masked, sparse, ties,
            rng.standard_normal((1, 3000)).astype(np.float32)]


@pytest.mark.parametrize("k", [1, 10, 100])
def test_bucket_select_matches_sort_on_host(k: int) -> None:
    for s in score_cases():
        v, i = select.select_topk(s, k)
        want_v, want_i = oracle_topk(s, k)
        np.testing.assert_array_equal(v, want_v)
        finite = np.isfinite(want_v)
        np.testing.assert_array_equal(i[finite], want_i[finite])
        # -inf entries (masked rows) carry any index: callers drop them by value


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_device_routine_under_numpy_matches_reference(metric: str, dtype: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flat, "SCORE_BYTES", 4 * 7 * 3000)  # several row chunks
    x, q, mask = _data(dtype)
    got = flat._device_search(x, q, 10, metric, mask, None)
    want = flat.search(x.astype(np.float32), q, 11, metric, mask, use_faiss=False)
    _same(got, want)


def _data(dtype: str, n: int = 12_000, d: int = 48, b: int = 7, seed: int = 4):
    rng = np.random.default_rng(seed)
    if dtype == "uint8":
        x = rng.integers(0, 256, (n, d)).astype(np.uint8)
        q = rng.integers(0, 256, (b, d)).astype(np.float32)
    else:
        x = rng.standard_normal((n, d)).astype(dtype)
        q = rng.standard_normal((b, d)).astype(np.float32)
    return x, q, rng.random(n) < 0.4


def _same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    """`want` holds one extra column, so a tie across the k-th place is seen too."""
    k = got[0].shape[1]
    np.testing.assert_allclose(got[0], want[0][:, :k], rtol=2e-4, atol=2e-3)
    # ids must agree wherever the score is not tied (within tolerance) with a neighbour
    v = want[0]
    close = np.isclose(v[:, 1:], v[:, :-1], rtol=2e-4, atol=2e-3)
    tied = np.zeros(v.shape, bool)
    tied[:, 1:] |= close
    tied[:, :-1] |= close
    tied = tied[:, :k]
    np.testing.assert_array_equal(got[1][~tied], want[1][:, :k][~tied])


def test_budget_evicts_coldest_sealed_resident() -> None:
    class Seg:
        def __init__(self, sealed: bool, t: float) -> None:
            self.sealed, self.last_used, self.moved = sealed, t, False

        def move_to_host(self) -> None:
            self.moved = True
            budget.release(self)

    budget = DeviceBudget()
    budget.configure(100, None)
    cold, warm, open_seg = Seg(True, 1.0), Seg(True, 5.0), Seg(False, 0.0)
    assert budget.reserve(cold, 40) and budget.reserve(warm, 40) and budget.reserve(open_seg, 10)
    assert budget.reserve(open_seg, 50)  # needs 20 more: the coldest sealed one goes
    assert cold.moved and not warm.moved and budget.used == 90
    assert not budget.reserve(Seg(False, 9.0), 60) or warm.moved
    with pytest.raises(ValueError):
        budget.configure("lots", None)


def test_search_recovers_from_a_device_failure(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    coll = _collection(tmp_path / "c", "Dot", 2000)
    spec = _spec(np.ones(16, np.float32))
    want = query.search_batch(coll, [spec])
    calls = {"n": 0}
    real = flat.search

    def failing(*a: Any, **kw: Any):
        calls["n"] += 1
        if calls["n"] == 1:
            raise DeviceFailure("exact search: CUDARuntimeError: simulated")
        return real(*a, **kw)

    monkeypatch.setattr(flat, "search", failing)
    monkeypatch.setattr(Device, "disable", lambda self, reason: None)
    got = query.search_batch(coll, [spec])
    assert [p["id"] for p in got[0]] == [p["id"] for p in want[0]]
    np.testing.assert_allclose([p["score"] for p in got[0]], [p["score"] for p in want[0]],
                               rtol=1e-4, atol=1e-3)  # device vs host float rounding
    assert not any(s.on_device for s in coll.segments)
    coll.close()


# ---- helpers for engine-level tests ------------------------------------------------------


def _collection(path: Path, distance: str, n: int, datatype: str = "float32", d: int = 16,
                seed: int = 0, host: bool = False) -> Collection:
    coll = Collection.create("c", str(path), {"vectors": {"size": d, "distance": distance,
                                                          "datatype": datatype}})
    if host:
        for seg in coll.segments:
            seg.move_to_host()
        coll.device = HOST
    _fill(coll, n, d, datatype, seed)
    return coll


def _fill(coll: Collection, n: int, d: int, datatype: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for s in range(0, n, 1000):
        m = min(1000, n - s)
        vecs = (rng.integers(0, 256, (m, d)) if datatype == "uint8"
                else rng.standard_normal((m, d))).astype(np.float32)
        apply_body(coll, "upsert", {"batch": {"ids": list(range(s, s + m)), "vectors": vecs,
                               "payloads": [{"g": int(i % 10)} for i in range(s, s + m)]}})


def _spec(vec: np.ndarray, flt: Any = None, limit: int = 10) -> query.SearchSpec:
    from engine.filters import parse_filter

    return query.SearchSpec(vector=vec, using="", pred=parse_filter(flt), limit=limit, offset=0,
                            score_threshold=None, with_payload=True, with_vector=False,
                            filter_key=repr(flt))


def _compare(dev: Collection, host: Collection, d: int, seed: int = 9) -> None:
    rng = np.random.default_rng(seed)
    for flt in [None, {"must": [{"key": "g", "match": {"any": [1, 2, 3]}}]},
                {"must": [{"key": "g", "match": {"value": 7}}]}]:
        specs = [_spec(rng.standard_normal(d).astype(np.float32), flt) for _ in range(5)]
        a, b = query.search_batch(dev, specs), query.search_batch(host, specs)
        for ra, rb in zip(a, b, strict=True):
            assert [p["id"] for p in ra] == [p["id"] for p in rb]
            np.testing.assert_allclose([p["score"] for p in ra], [p["score"] for p in rb],
                                       rtol=1e-4, atol=1e-3)


# ---- on a real device --------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 10, 100])
def test_bucket_select_on_device_matches_host(k: int) -> None:
    cp = get_xp()
    for s in score_cases(1):
        v, i = select.select_topk(cp.asarray(s), k)
        want_v, want_i = oracle_topk(s, k)
        np.testing.assert_array_equal(v.get(), want_v)
        finite = np.isfinite(want_v)
        np.testing.assert_array_equal(i.get()[finite], want_i[finite])


@pytest.mark.gpu
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
@pytest.mark.parametrize("batch", [1, 64])
def test_device_search_matches_numpy(metric: str, dtype: str, batch: int,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cp = get_xp()
    monkeypatch.setattr(flat, "SCORE_BYTES", 4 * 64 * 5000)
    x, _, mask = _data(dtype)
    q = np.random.default_rng(1).standard_normal((batch, x.shape[1])).astype(np.float32)
    for m in (None, mask, np.random.default_rng(3).random(len(x)) < 0.02):
        got = flat.search(cp.asarray(x), q, 10, metric, m)
        want = flat.search(x.astype(np.float32), q, 11, metric, m, use_faiss=False)
        _same(got, want)


@pytest.mark.gpu
@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("datatype", ["float32", "float16"])
def test_collection_on_device_answers_like_host(tmp_path: Path, distance: str,
                                                datatype: str) -> None:
    dev = _collection(tmp_path / "dev", distance, 6000, datatype)
    host = _collection(tmp_path / "host", distance, 6000, datatype, host=True)
    assert all(s.on_device for s in dev.segments)
    assert is_device_array(dev.segments[0].vectors[""])
    _compare(dev, host, 16)
    dev.close()
    host.close()


@pytest.mark.gpu
def test_budget_keeps_cold_segments_on_host_and_merges(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.collection.SEGMENT_MAX_BYTES", 64 * 1024)  # many segments
    budget = default_device().budget
    old = budget.limit
    budget.configure(budget.used + 200 * 1024, None)
    try:
        dev = _collection(tmp_path / "dev", "Euclid", 8000)
        host = _collection(tmp_path / "host", "Euclid", 8000, host=True)
        info = dev.device_info()
        assert info["segments_on_device"] >= 1 and info["segments_on_host"] >= 1, info
        _compare(dev, host, 16)
        dev.close()
        host.close()
    finally:
        budget.limit = old


@pytest.mark.gpu
def test_device_failure_falls_back_to_cpu(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import cupy

    dev = _collection(tmp_path / "dev", "Cosine", 3000)
    host = _collection(tmp_path / "host", "Cosine", 3000, host=True)

    def oom(*a: Any, **kw: Any):
        raise cupy.cuda.memory.OutOfMemoryError(1 << 40, 0)

    monkeypatch.setattr(flat, "_device_search", oom)
    _compare(dev, host, 16)
    info = dev.device_info()
    assert info["device"] == "cpu" and "OutOfMemory" in info["fallback_reason"]
    dev.close()
    host.close()


@pytest.mark.gpu
@pytest.mark.parametrize("datatype", ["float32", "float16"])
def test_snapshot_recovery_rehydrates_onto_device(tmp_path: Path, datatype: str) -> None:
    from snapshots.manager import SnapshotManager
    from snapshots.recovery import Recovery

    catalog = Catalog(str(tmp_path / "storage"))
    catalog.load()
    coll = catalog.create("c", {"vectors": {"size": 16, "distance": "Euclid",
                                            "datatype": datatype}})
    _fill(coll, 5000, 16, datatype, 0)
    manager = SnapshotManager(catalog, str(tmp_path / "snaps"), node_id=1)
    archive = manager.path("c", manager.create("c").name)
    host = _collection(tmp_path / "host", "Euclid", 5000, datatype, host=True)
    catalog.delete("c")
    Recovery(catalog, str(tmp_path / "snaps")).recover_file("c", archive, None)
    restored = catalog.get("c")
    assert all(s.on_device for s in restored.segments if s.n)
    _compare(restored, host, 16)
    host.close()
    catalog.close()
