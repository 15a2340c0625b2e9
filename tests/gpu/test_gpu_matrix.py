"""gpu.matrix.DeviceMatrix: growth, writes, reads, search, budget and device-failure fallback.

Unmarked tests run everywhere. The placement policy (budget, fallback) is exercised on the
CPU through a stand-in "device" array module that stores numpy arrays: the matrix then
believes its rows are on a device, reserves budget and falls back like on a GPU. The `gpu`
tests repeat the essentials on cupy.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest

from engine.config import parse_create
from engine.segment import Segment
from gpu import flat
from gpu.config import GpuConfig
from gpu.device import HOST, Device, DeviceFailure, default_device
from gpu.matrix import DeviceMatrix
from gpu.xp import is_device_array


class Owner:
    """A budget resident holding matrices (what a segment is to its matrices)."""

    def __init__(self, sealed: bool = False, t: float = 0.0) -> None:
        self.sealed, self.last_used = sealed, t
        self.matrices: list[DeviceMatrix] = []
        self.moves = 0

    def move_to_host(self) -> None:
        self.moves += 1
        for m in self.matrices:
            m.move_to_host()


def fake_device(fail: dict[str, int] | None = None) -> Device:
    """A Device whose array module is numpy in disguise (so `on_device` is true on a CPU).
    `fail["asarray"] = k`: the next k host→"device" copies raise DeviceFailure."""
    fail = fail if fail is not None else {}

    def asarray(a: Any, *args: Any, **kw: Any) -> Any:
        if fail.get("asarray", 0) > 0:
            fail["asarray"] -= 1
            raise DeviceFailure("host-to-device copy: CUDARuntimeError: simulated")
        return np.asarray(a, *args, **kw)

    fake = types.SimpleNamespace(zeros=np.zeros, asarray=asarray, float32=np.float32)
    dev = Device(GpuConfig(enabled="false"))
    dev.array_module = lambda prefer_device=True: fake  # type: ignore[method-assign]
    return dev


def _rows(n: int, d: int = 8, seed: int = 0, dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def _matrix(device: Device, l2: bool = True, owner: Owner | None = None, d: int = 8
            ) -> DeviceMatrix:
    m = DeviceMatrix(device, d, np.float32, l2=l2, owner=owner)
    if owner is not None:
        owner.matrices.append(m)
    return m


@pytest.mark.parametrize("where", ["host", "fake-device"])
def test_grow_write_gather_and_host_rows(where: str) -> None:
    m = _matrix(HOST if where == "host" else fake_device())
    assert m.on_device == (where != "host")
    x = _rows(40)
    m.grow(16, 0)
    m.write(np.arange(10), x[:10])
    old = m.array
    m.grow(40, 10)  # doubling keeps the rows; the old array stays valid for readers
    assert m.capacity == 40 and old is not m.array
    np.testing.assert_array_equal(old[:10], x[:10])
    m.write(np.arange(10, 13), x[10:13])  # a contiguous block: one copy
    m.write(np.array([20, 25, 39]), x[[20, 25, 39]])  # scattered rows
    np.testing.assert_array_equal(m.host_rows(13), x[:13])
    np.testing.assert_array_equal(m.host_rows(13, start=10), x[10:13])
    np.testing.assert_array_equal(m.gather(np.array([39, 0, 25])), x[[39, 0, 25]])
    assert m.gather(np.array([], np.int64)).shape == (0, 8)
    np.testing.assert_allclose(m.norms[[0, 11, 25]], (x[[0, 11, 25]] ** 2).sum(axis=1), rtol=1e-6)
    assert m.row_bytes == 32
    if where == "host":  # a view on the host, never a copy
        assert np.shares_memory(m.host_rows(13), m.array)


@pytest.mark.parametrize("metric", ["ip", "l2", "l1"])
def test_search_matches_flat_search_over_a_row_range(metric: str) -> None:
    m = _matrix(HOST, l2=metric == "l2")
    x = _rows(500, seed=1)
    m.grow(500, 0)
    m.write(np.arange(500), x)
    q = _rows(3, seed=2)
    mask = np.random.default_rng(3).random(400) < 0.5
    for start, n, mk in [(0, 500, None), (100, 500, mask), (0, 300, mask[:300])]:
        got = m.search(start, n, q, 7, metric, mk)
        want = flat.search(x[start:n], q, 7, metric, mk)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)


def test_load_keeps_a_memory_map_only_on_the_host(tmp_path: Any) -> None:
    x = _rows(20, seed=4)
    path = tmp_path / "v.bin"
    x.tofile(path)
    mapped = np.memmap(path, np.float32, "r", shape=(20, 8))
    host = _matrix(HOST)
    host.grow(20, 0)
    host.load(mapped, 20, keep_mapped=True)
    assert np.shares_memory(host.array, mapped)
    np.testing.assert_allclose(host.norms[:20], (x**2).sum(axis=1), rtol=1e-6)
    dev = _matrix(fake_device())
    dev.grow(20, 0)
    dev.load(mapped, 20, keep_mapped=True)  # on a device: one copy
    assert not np.shares_memory(dev.array, mapped)
    np.testing.assert_array_equal(dev.host_rows(20), x)


def test_over_budget_the_owner_moves_to_host_memory() -> None:
    dev = fake_device()
    dev.budget.configure(1000, None)
    owner = Owner()
    a, b = _matrix(dev, owner=owner), _matrix(dev, owner=owner)
    a.grow(16, 0)  # 16 rows x (32 + 4) bytes = 576: fits
    b.grow(16, 0)  # 576 more: does not, and nothing sealed can be evicted
    assert owner.moves == 1 and not a.on_device and not b.on_device
    assert dev.budget.used == 0 and dev.budget.held_by(owner) == 0
    x = _rows(16)
    b.write(np.arange(16), x)  # host memory from now on
    np.testing.assert_array_equal(b.host_rows(16), x)


def test_budget_evicts_the_coldest_sealed_owner_with_all_its_matrices() -> None:
    dev = fake_device()
    dev.budget.configure(2000, None)
    cold, new = Owner(sealed=True, t=1.0), Owner(t=5.0)
    c1, c2 = _matrix(dev, owner=cold), _matrix(dev, owner=cold)
    c1.grow(16, 0)
    c2.grow(16, 0)
    assert dev.budget.stats()["resident_segments"] == 1 and dev.budget.used == 2 * 576
    n1 = _matrix(dev, owner=new)
    n1.grow(32, 0)  # 1152 bytes: the cold sealed owner goes to host memory
    assert cold.moves == 1 and not c1.on_device and not c2.on_device
    assert n1.on_device and dev.budget.used == 1152
    assert dev.budget.stats()["resident_segments"] == 1


def test_device_failure_while_writing_falls_back_and_keeps_the_rows() -> None:
    fail: dict[str, int] = {}
    dev = fake_device(fail)
    owner = Owner()
    m = _matrix(dev, owner=owner)
    x = _rows(30, seed=5)
    m.grow(32, 0)
    m.write(np.arange(10), x[:10])
    fail["asarray"] = 1
    m.write(np.arange(10, 30), x[10:30])
    assert owner.moves == 1 and not m.on_device
    np.testing.assert_array_equal(m.host_rows(30), x)
    np.testing.assert_allclose(m.norms[:30], (x**2).sum(axis=1), rtol=1e-6)


def test_a_device_failure_while_searching_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    m = _matrix(HOST)
    m.grow(16, 0)
    m.write(np.arange(16), _rows(16))

    def failing(*a: Any, **kw: Any) -> Any:
        raise DeviceFailure("exact search: CUDARuntimeError: simulated")

    monkeypatch.setattr(flat, "search", failing)
    with pytest.raises(DeviceFailure):
        m.search(0, 16, _rows(1), 3, "l2")


def test_segment_search_and_host_rows_go_through_its_matrices() -> None:
    cfg = parse_create({"vectors": {"a": {"size": 8, "distance": "Euclid"},
                                               "b": {"size": 8, "distance": "Dot",
                                                     "datatype": "float16"}}})
    seg = Segment(0, cfg.vectors, HOST)
    x = _rows(50, seed=6)
    ids_recs = np.zeros(50, seg.id_recs.dtype)
    seg.append(list(range(50)), ids_recs, {"a": (np.arange(50), x), "b": (np.arange(50), x)},
               [{} for _ in range(50)], 1)
    assert not seg.on_device and seg.row_bytes("a") == 32 and seg.row_bytes("b") == 16
    np.testing.assert_array_equal(seg.host_rows("a", 50), x)
    assert seg.host_rows("b", 50).dtype == np.float16
    assert seg.vectors["a"] is seg.matrices["a"].array and "b" not in seg.sq_norms
    q = _rows(2, seed=7)
    got = seg.search("a", 10, 50, q, 5, "l2")
    want = flat.search(x[10:], q, 5, "l2")
    np.testing.assert_array_equal(got[1], want[1])
    fz = seg.freeze()
    np.testing.assert_array_equal(fz.host_rows("b", 40), x[40:].astype(np.float16))


def test_config_parses_settings() -> None:
    assert GpuConfig.from_settings({"enabled": True, "device_id": "1"}) == GpuConfig("true", 1)
    assert GpuConfig.from_settings(types.SimpleNamespace(
        enabled="off", device_id=0, memory_limit=0.5)).memory_limit == 0.5
    assert GpuConfig(enabled="maybe").enabled == "auto"
    with pytest.raises(ValueError):
        GpuConfig(memory_limit="lots")
    assert HOST.name == "cpu (gpu.enabled=false)" and not HOST.available


# ---- on a real device --------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
def test_matrix_on_device_matches_host(dtype: Any) -> None:
    dev = default_device()
    x = (np.random.default_rng(8).integers(0, 256, (3000, 16)) if dtype == np.uint8
         else _rows(3000, 16, seed=8)).astype(dtype)
    on, off = DeviceMatrix(dev, 16, dtype, l2=True), DeviceMatrix(HOST, 16, dtype, l2=True)
    for m in (on, off):
        m.grow(1000, 0)
        m.write(np.arange(1000), x[:1000])
        m.grow(3000, 1000)
        m.write(np.arange(1000, 3000), x[1000:])
    assert on.on_device and is_device_array(on.array) and is_device_array(on.norms)
    np.testing.assert_array_equal(on.host_rows(3000), x)
    np.testing.assert_array_equal(on.gather(np.array([5, 2999])), off.gather(np.array([5, 2999])))
    np.testing.assert_allclose(on.norms.get()[:3000], off.norms[:3000], rtol=1e-5)
    q = _rows(4, 16, seed=9)
    mask = np.random.default_rng(10).random(2500) < 0.3
    for metric in ("ip", "l2", "l1"):
        a = on.search(500, 3000, q, 10, metric, mask)
        b = off.search(500, 3000, q, 10, metric, mask)
        np.testing.assert_allclose(a[0], b[0], rtol=2e-4, atol=2e-3)
    on.move_to_host()
    assert not on.on_device and not is_device_array(on.array)
    np.testing.assert_array_equal(on.host_rows(3000), x)


@pytest.mark.gpu
def test_matrix_over_budget_on_device_stays_on_host() -> None:
    dev = Device(default_device().config)
    dev.configure()
    assert dev.available
    dev.budget.configure(10_000, None)
    owner = Owner()
    m = _matrix(dev, owner=owner, d=16)
    m.grow(100, 0)  # 100 x (64 + 4) bytes: fits
    assert m.on_device
    m.grow(200, 0)  # 13 600 bytes: over the limit, nothing to evict
    assert owner.moves == 1 and not m.on_device and dev.budget.used == 0
