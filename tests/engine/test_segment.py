"""engine/segment.py on numpy (host memory), through its public methods: appending rows
(ids, vectors, payloads), capacity growth that keeps earlier rows, deletes and live masks,
payload updates and their change log, freeze() as an immutable snapshot, the sealed flag,
and rebuilding a segment from a frozen one (from_arrays) or without its deleted rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.columns import KIND_INT
from engine.config import VectorSpec
from engine.distance import get_distance
from engine.ids import ids_to_records
from engine.segment import FrozenSegment, Segment

UUID = "0b5b6f3e-2a9c-4d3e-9a1f-5f1f2c3d4e5f"
SPECS = {
    "": VectorSpec("", 4, get_distance("Cosine")),
    "e": VectorSpec("e", 3, get_distance("Euclid"), "float16"),
    "b": VectorSpec("b", 2, get_distance("Dot"), "uint8"),
}


def vecs(m: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((m, dim)).astype(np.float32)


def add(seg: Segment, ids: list[Any], version: int = 1, seed: int = 0,
        vectors: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
    """Append `ids`, every row with a default vector and payload {"i": id}."""
    m = len(ids)
    if vectors is None:
        vectors = {"": (np.arange(m, dtype=np.int64), vecs(m, 4, seed))}
    return seg.append(ids, ids_to_records(ids), vectors, [{"i": i} for i in ids], version)


def new_segment(capacity: int = 16) -> Segment:
    return Segment(7, SPECS, np, capacity=capacity)


def test_append_rows_ids_vectors_payloads() -> None:
    seg = new_segment()
    assert (seg.n, seg.on_device, seg.sealed) == (0, False, False)
    x = vecs(3, 4, 1)
    e = np.array([[1.5, -2.0, 0.25], [3.0, 4.0, 5.0]], np.float32)
    b = np.array([[300.0, -1.0], [7.9, 2.0]], np.float32)
    rows = seg.append([1, UUID, 3], ids_to_records([1, UUID, 3]),
                      {"": (np.arange(3, dtype=np.int64), x),
                       "e": (np.array([2, 0], np.int64), e),  # positions in any order
                       "b": (np.array([1, 2], np.int64), b)},
                      [{"a": 1}, {"a": 2}, {}], version=5)
    assert rows.tolist() == [0, 1, 2]
    assert seg.n == 3
    assert seg.ids == [1, UUID, 3]
    assert [seg.payload_at(r) for r in range(3)] == [{"a": 1}, {"a": 2}, {}]
    assert seg.payload_rows() == 3

    got = seg.vectors_of("", np.array([2, 0]))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x[[2, 0]])
    # row 2 got e[0] and row 0 got e[1]: positions say which batch row each vector is for
    np.testing.assert_array_equal(seg.vectors_of("e", np.array([0, 2])), e[[1, 0]])
    # uint8 storage saturates and truncates: 300 → 255, -1 → 0, 7.9 → 7
    np.testing.assert_array_equal(seg.vectors_of("b", np.array([1, 2])),
                                  [[255, 0], [7, 2]])
    assert seg.vectors_of("", np.array([], np.int64)).shape == (0, 4)

    assert seg.host_rows("e", 3).dtype == np.float16
    assert seg.host_rows("b", 3).dtype == np.uint8
    np.testing.assert_array_equal(seg.host_rows("", 3), x)
    assert seg.row_bytes("") == 16 and seg.row_bytes("e") == 6 and seg.row_bytes("b") == 2

    f = seg.freeze()
    assert f.present["e"].tolist() == [True, False, True]
    assert f.present["b"].tolist() == [False, True, True]
    assert f.versions.tolist() == [5, 5, 5]
    np.testing.assert_array_equal(f.id_recs, ids_to_records([1, UUID, 3]))
    assert seg.live_mask(3, "e")[0].tolist() == [True, False, True]


def test_capacity_growth_keeps_earlier_rows() -> None:
    seg = new_segment(capacity=16)
    first = vecs(10, 4, 1)
    add(seg, list(range(10)), vectors={"": (np.arange(10, dtype=np.int64), first)})
    before = seg.host_rows("", 10)  # a reader's view of the pre-growth array
    cap = seg.capacity
    more = vecs(40, 4, 2)
    rows = add(seg, list(range(10, 50)), version=2,
               vectors={"": (np.arange(40, dtype=np.int64), more)})
    assert rows.tolist() == list(range(10, 50))
    assert seg.n == 50 and seg.capacity >= 50 > cap
    np.testing.assert_array_equal(seg.host_rows("", 50), np.concatenate([first, more]))
    np.testing.assert_array_equal(before, first)  # the old array stays valid for readers
    assert seg.ids == list(range(50))
    f = seg.freeze()
    assert f.versions.tolist() == [1] * 10 + [2] * 40
    assert f.present[""].all() and not f.present["e"].any()
    assert [seg.payload_at(r)["i"] for r in (0, 9, 10, 49)] == [0, 9, 10, 49]


def test_delete_rows_and_live_mask() -> None:
    seg = new_segment()
    add(seg, list(range(6)))
    mask, allowed = seg.live_mask(6)
    assert mask.all() and allowed == 6
    assert not mask.flags.writeable  # shared by searches: read-only
    assert seg.live_mask(6)[0] is mask  # cached until rows change

    seg.delete_rows(np.array([1, 4]))
    mask2, allowed2 = seg.live_mask(6)
    assert mask2.tolist() == [True, False, True, True, False, True] and allowed2 == 4
    assert mask.all()  # the earlier mask is not changed under a reader
    # a reader with an older row count sees only its rows
    assert seg.live_mask(3)[0].tolist() == [True, False, True]
    assert seg.live_count() == 4
    assert seg.deleted_fraction() == pytest.approx(2 / 6)
    # rows without a vector are not live for that vector
    none, allowed_e = seg.live_mask(6, "e")
    assert not none.any() and allowed_e == 0

    seg.drop_vectors(np.array([0]), [""], version=9)
    assert seg.live_mask(6, "")[0].tolist() == [False, False, True, True, False, True]
    assert seg.freeze().versions[0] == 9


def changed_since(seg: Segment, version: int) -> list[int]:
    rows = seg.payload_changes_since(version)
    assert rows is not None  # None: history too old (not the case with a few changes)
    return sorted(rows.tolist())


def test_set_payloads_and_change_log() -> None:
    seg = new_segment()
    add(seg, list(range(4)))
    v0 = seg.payload_version
    assert changed_since(seg, v0) == []
    seg.set_payloads(np.array([2]), [{"i": 20}], version=3)
    seg.set_payloads(np.array([0, 3]), [{"i": 0, "x": 1}, {}], version=4)
    assert seg.payload_version == v0 + 2
    assert changed_since(seg, v0) == [0, 2, 3]
    assert changed_since(seg, v0 + 1) == [0, 3]
    assert [seg.payload_at(r) for r in range(4)] == [{"i": 0, "x": 1}, {"i": 1}, {"i": 20}, {}]
    assert seg.freeze().versions.tolist() == [4, 1, 3, 4]
    col = seg.column("i")  # payload columns follow the updates
    assert sorted(col.ints[col.kinds == KIND_INT].tolist()) == [0, 1, 20]


def test_freeze_is_unaffected_by_later_writes() -> None:
    seg = new_segment(capacity=16)
    x = vecs(5, 4, 3)
    add(seg, list(range(5)), vectors={"": (np.arange(5, dtype=np.int64), x)})
    f = seg.freeze()
    assert isinstance(f, FrozenSegment)
    assert (f.seg_id, f.n, f.sealed) == (7, 5, False)

    add(seg, list(range(5, 60)), version=2, seed=4)  # grows the arrays
    seg.delete_rows(np.array([0, 1]))
    seg.set_payloads(np.array([2]), [{"changed": True}], version=3)
    seg.drop_vectors(np.array([3]), [""], version=3)

    assert f.n == 5 and len(f.id_recs) == 5 and len(f.payloads) == 5
    assert not f.deleted.any()
    assert f.present[""].tolist() == [True] * 5
    assert f.versions.tolist() == [1] * 5
    assert f.payloads[2] == {"i": 2}
    np.testing.assert_array_equal(f.host_rows(""), x)
    assert seg.n == 60 and seg.freeze().deleted[:2].tolist() == [True, True]


def test_sealed_flag_and_rebuild_from_a_frozen_segment() -> None:
    seg = new_segment()
    add(seg, [1, UUID, 3, 4], seed=5)
    seg.delete_rows(np.array([2]))
    seg.sealed = True
    f = seg.freeze()
    assert f.sealed
    data = {"id_recs": f.id_recs, "vectors": {k: f.host_rows(k) for k in SPECS},
            "present": f.present, "deleted": f.deleted, "versions": f.versions,
            "payloads": f.payloads}
    back = Segment.from_arrays(8, SPECS, np, data, sealed=True)
    assert back.sealed and back.seg_id == 8 and back.n == 4
    assert back.ids == [1, UUID, 3, 4]
    assert back.live_mask(4)[0].tolist() == [True, True, False, True]
    np.testing.assert_array_equal(back.host_rows("", 4), seg.host_rows("", 4))
    assert [back.payload_at(r) for r in range(4)] == f.payloads

    small = Segment.compacted(seg, 9)  # vacuum: deleted rows gone, flag kept
    assert small.sealed and small.n == 3
    assert small.ids == [1, UUID, 4]
    assert small.live_count() == 3
    np.testing.assert_array_equal(small.host_rows("", 3),
                                  seg.host_rows("", 4)[[0, 1, 3]])
    assert [small.payload_at(r) for r in range(3)] == [{"i": 1}, {"i": UUID}, {"i": 4}]
