"""engine/_records.c through engine.render.plain_records: the plain scored search records
built in C equal the Python comprehension's (ids of both kinds, large versions, float64
scores exactly), and bad arguments are refused before a record is built."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import numpy as np
import pytest
from c_modules import toolchain

from engine import render

needs_records = pytest.mark.skipif(render._records is None, reason="engine._records not built")


def segment(n: int, seed: int, uuids: bool = False) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    ids: list[object] = [str(uuid.UUID(int=int(v))) for v in rng.integers(0, 2**63, n)] \
        if uuids else [int(v) for v in rng.permutation(10 * n)[:n]]
    versions = rng.integers(0, 2**63, n).astype(np.uint64)
    versions[0] = np.uint64(2**64 - 1)
    return SimpleNamespace(ids=ids, versions=versions)


def test_the_module_is_built_where_a_compiler_is() -> None:
    if not toolchain():
        pytest.skip("no C compiler or Python headers here: records are built in Python")
    assert render._records is not None


@needs_records
@pytest.mark.parametrize("uuids", [False, True])
def test_same_records_as_python(uuids: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    seg = segment(500, 1, uuids)
    rng = np.random.default_rng(2)
    rows = rng.integers(0, 500, (40, 10)).astype(np.int64)
    rows[0, 0] = 0  # the largest version
    scores = rng.standard_normal((40, 10))
    got = render.plain_records(seg, rows, scores)  # type: ignore[arg-type]
    monkeypatch.setattr(render, "_records", None)
    want = render.plain_records(seg, rows, scores)  # type: ignore[arg-type]
    assert got == want
    assert [list(r) for r in got[0]] == [["id", "version", "score"]] * 10
    assert got[0][0]["version"] == 2**64 - 1
    assert all(type(r["score"]) is float and type(r["version"]) is int
               for q in got for r in q)
    empty = render.plain_records(seg, np.zeros((3, 0), np.int64), np.zeros((3, 0)))  # type: ignore[arg-type]
    assert empty == [[], [], []]


@needs_records
def test_bad_arguments_are_refused() -> None:
    seg = segment(10, 3)
    rec = render._records.records
    with pytest.raises(IndexError):
        rec(seg.ids, seg.versions, np.array([[10]], np.int64), np.zeros((1, 1)))
    with pytest.raises(IndexError):
        rec(seg.ids, seg.versions, np.array([[-1]], np.int64), np.zeros((1, 1)))
    with pytest.raises(IndexError):  # fewer versions than ids
        rec(seg.ids, seg.versions[:3], np.array([[5]], np.int64), np.zeros((1, 1)))
    with pytest.raises(ValueError):
        rec(seg.ids, seg.versions, np.array([[1]], np.int64), np.zeros((1, 1), np.float32))
    with pytest.raises(ValueError):
        rec(seg.ids, seg.versions, np.array([[1]], np.int64), np.zeros((1, 2)))
    with pytest.raises(ValueError):
        rec(seg.ids, seg.versions, np.array([1], np.int64), np.zeros(1))
    with pytest.raises(ValueError):
        rec(seg.ids, seg.versions.astype(np.float64), np.array([[1]], np.int64),
            np.zeros((1, 1)))
    with pytest.raises(TypeError):
        rec(tuple(seg.ids), seg.versions, np.array([[1]], np.int64), np.zeros((1, 1)))
