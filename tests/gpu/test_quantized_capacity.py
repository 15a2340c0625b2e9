"""Device capacity of quantized vectors: on a device segment only the codes take device
memory (budgeted); the float rows stay in host memory and rescoring gathers candidates from
there. Unmarked tests use a stand-in device (numpy in disguise, as tests/gpu/test_gpu_matrix.py)
so the placement and budget policy run on any machine; the `gpu` test repeats it on cupy.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine.collection as collection_module
from api.parse.writes import apply_body
from engine import indexing, query
from engine.collection import Collection
from gpu.config import GpuConfig
from gpu.device import HOST, Device, default_device

D, N = 64, 3000
QUANT = {"scalar": {"type": "int8"}}


def fake_device() -> Device:
    """A Device whose array module is numpy in disguise (`on_device` is true on a CPU)."""
    fake = types.SimpleNamespace(zeros=np.zeros, asarray=np.asarray, float32=np.float32)
    dev = Device(GpuConfig(enabled="false"))
    dev.array_module = lambda prefer_device=True: fake  # type: ignore[method-assign]
    return dev


def _collection(path: Path, device: Device, monkeypatch: pytest.MonkeyPatch,
                quant: dict[str, Any] = QUANT) -> Collection:
    monkeypatch.setattr(collection_module, "default_device", lambda: device)
    return Collection.create("c", str(path), {"vectors": {"size": D, "distance": "Euclid"},
                                              "quantization_config": quant})


def _fill(coll: Collection, x: np.ndarray) -> None:
    for s in range(0, len(x), 1000):
        apply_body(coll, "upsert", {"batch": {"ids": list(range(s, s + len(x[s:s + 1000]))),
                                              "vectors": x[s : s + 1000]}})


def _quantize(coll: Collection) -> None:
    while coll.quantize_pending():  # what the indexer thread does in the background
        pass


def _spec(vec: np.ndarray, limit: int = 10) -> query.SearchSpec:
    return query.SearchSpec(vector=vec, using="", pred=None, limit=limit, offset=0,
                            score_threshold=None, with_payload=False, with_vector=False,
                            filter_key="None")


def _ranked(coll: Collection, qs: np.ndarray) -> list[list[tuple[Any, float]]]:
    res = query.search_batch(coll, [_spec(q) for q in qs])
    return [[(p["id"], p["score"]) for p in r] for r in res]


def _data(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, D)).astype(np.float32),
            rng.standard_normal((8, D)).astype(np.float32))


def test_codes_on_device_floats_on_host_within_a_budget_that_fits_only_codes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, qs = _data()
    host = _collection(tmp_path / "h", HOST, monkeypatch)
    dev = fake_device()
    coll = _collection(tmp_path / "d", dev, monkeypatch)
    coll.quantize_pending()  # the indexer's first round: the float rows go to host memory
    floats = N * (D * 4 + 4)  # float32 rows + L2 norms
    codes = N * (D + 4)  # int8 codes + decoded norms
    dev.budget.configure(codes + codes // 2, None)  # fits the codes, not half the floats
    assert dev.budget.limit < floats / 2
    for c in (host, coll):
        _fill(c, x)
        _quantize(c)
    (seg,) = coll.segments
    rec = seg.quantized[""]
    assert seg.on_device and rec.on_device and rec.rows == N
    assert not seg.matrices[""].on_device  # the originals: host memory
    assert dev.budget.used == rec.nbytes() == codes and dev.budget.held_by(seg) == codes
    mem = indexing.memory_bytes(coll)
    assert mem["device_bytes"] == codes and mem["host_bytes"] >= N * D * 4
    # the same codes and rescoring as the host collection: the same answers
    assert _ranked(coll, qs) == _ranked(host, qs)
    exact = np.argsort(((qs[:, None, :] - x[None]) ** 2).sum(axis=2), axis=1)[:, :10]
    got = [[pid for pid, _ in r] for r in _ranked(coll, qs)]
    assert np.mean([len(set(a) & set(b.tolist())) / 10 for a, b in zip(got, exact,
                                                                      strict=True)]) >= 0.95
    # rows appended since the codes were built: scanned exactly on the host, then merged
    extra = np.random.default_rng(4).standard_normal((50, D)).astype(np.float32)
    for c in (host, coll):
        apply_body(c, "upsert", {"batch": {"ids": list(range(N, N + 50)), "vectors": extra}})
    assert _ranked(coll, extra[:3]) == _ranked(host, extra[:3])
    for c in (host, coll):
        c.close()


def test_codes_over_the_budget_leave_the_segment_on_the_host(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, qs = _data(5)
    host = _collection(tmp_path / "h", HOST, monkeypatch, {"binary": {}})
    dev = fake_device()
    coll = _collection(tmp_path / "d", dev, monkeypatch, {"binary": {}})
    coll.quantize_pending()
    dev.budget.configure(1000, None)  # not even the one-bit codes (8 B per row) fit
    for c in (host, coll):
        _fill(c, x)
        _quantize(c)
    (seg,) = coll.segments
    assert not seg.on_device and not seg.quantized[""].on_device and dev.budget.used == 0
    assert indexing.memory_bytes(coll)["device_bytes"] == 0
    assert _ranked(coll, qs) == _ranked(host, qs)
    for c in (host, coll):
        c.close()


def test_one_bit_codes_take_a_32th_of_the_float_rows(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = _data(6)
    dev = fake_device()
    coll = _collection(tmp_path / "d", dev, monkeypatch, {"binary": {}})
    coll.quantize_pending()
    _fill(coll, x)
    _quantize(coll)
    (seg,) = coll.segments
    assert seg.quantized[""].on_device and dev.budget.used == N * D // 8  # 32x: 4 B → 1 bit
    seg.move_to_host()  # eviction or a device failure: the codes come along
    assert not seg.on_device and not seg.quantized[""].on_device and dev.budget.used == 0
    coll.close()


@pytest.mark.gpu
def test_codes_on_a_real_device_floats_on_host(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    x, qs = _data(7)
    dev = Device(default_device().config)
    dev.configure()
    assert dev.available
    host = _collection(tmp_path / "h", HOST, monkeypatch)
    coll = _collection(tmp_path / "d", dev, monkeypatch)
    coll.quantize_pending()
    dev.budget.configure(N * (D + 4) * 2, None)
    for c in (host, coll):
        _fill(c, x)
        _quantize(c)
    (seg,) = coll.segments
    rec = seg.quantized[""]
    assert rec.on_device and type(rec.codes).__module__.startswith("cupy")
    assert not seg.matrices[""].on_device and dev.budget.used == rec.nbytes()
    got, want = _ranked(coll, qs), _ranked(host, qs)
    assert [[i for i, _ in r] for r in got] == [[i for i, _ in r] for r in want]
    for c in (host, coll):
        c.close()
