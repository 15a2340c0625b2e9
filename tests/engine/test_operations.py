"""engine/operations.py: typed write operations and their WAL encoding (old WALs replay)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import operations as ops
from engine.filters import parse_filter
from engine.ids import parse_id
from engine.wal import decode, encode

U = parse_id("0B7F2C3E-8C9D-4A6B-9E1F-2A3B4C5D6E7F")  # UUID ids travel canonical


def _roundtrip(op: ops.Operation) -> ops.Operation:
    return ops.from_record(decode(encode(ops.to_record(op))))


def _same_vectors(a: dict[str, ops.VectorRows], b: dict[str, ops.VectorRows]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name].positions, b[name].positions)
        np.testing.assert_array_equal(a[name].values, b[name].values)


def test_upsert_roundtrip_through_wal_bytes() -> None:
    v = np.arange(6, dtype=np.float32).reshape(3, 2)
    op = ops.Upsert([1, U, 3], {"": ops.VectorRows(np.arange(3), v),
                                "img": ops.VectorRows(np.array([2]), v[:1])},
                    [{"a": 1}, {}, {"b": [1, 2]}])
    back = _roundtrip(op)
    assert isinstance(back, ops.Upsert)
    assert back.ids == [1, U, 3] and back.payloads == op.payloads
    _same_vectors(back.vectors, op.vectors)


def test_every_kind_roundtrips() -> None:
    v = np.ones((1, 2), np.float32)
    cases = [
        ops.DeletePoints([1, 2]),
        ops.SetPayload([1], payload={"x": {"y": 1}}, key="a.b"),
        ops.SetPayload([1], payload={"x": 1}),
        ops.OverwritePayload([U], payload={"z": None}),
        ops.DeletePayload([1], keys=["a", "b[].c"]),
        ops.ClearPayload([7]),
        ops.UpdateVectors([4], {"": ops.VectorRows(np.array([0]), v)}),
        ops.DeleteVectors([4, 5], names=["", "img"]),
    ]
    for op in cases:
        back = _roundtrip(op)
        assert type(back) is type(op)
        for f in ("ids", "payload", "key", "keys", "names"):
            assert getattr(back, f, None) == getattr(op, f, None), (op, f)
        if isinstance(op, ops.UpdateVectors):
            _same_vectors(back.vectors, op.vectors)  # type: ignore[attr-defined]


def test_record_layout_is_the_one_older_wals_hold() -> None:
    """Records written before operations were typed must replay unchanged."""
    v = np.zeros((2, 3), np.float32)
    old_upsert = {"op": "upsert", "ids": [1, 2], "payloads": [{}, {}], "arrays": {"v:": v}}
    op = ops.from_record(decode(encode(old_upsert)))
    assert isinstance(op, ops.Upsert) and op.vectors[""].positions.tolist() == [0, 1]
    rec = ops.to_record(ops.Upsert([1, 2], {"": ops.VectorRows(np.arange(2), v)}, [{}, {}]))
    assert set(rec) == {"op", "ids", "payloads", "arrays"} and set(rec["arrays"]) == {"v:"}
    partial = ops.to_record(ops.Upsert([1, 2], {"a": ops.VectorRows(np.array([1]), v[:1])},
                                       [{}, {}]))
    assert set(partial["arrays"]) == {"v:a", "p:a"}  # positions only where needed
    old_update = {"op": "update_vectors", "ids": [9], "arrays": {"v:": v[:1], "p:": np.array([0])}}
    assert isinstance(ops.from_record(old_update), ops.UpdateVectors)


def test_unresolved_filters_are_never_logged_and_unknown_kinds_refused() -> None:
    op = ops.DeletePoints([], filter=parse_filter({"must": [{"has_id": [1]}]}))
    with pytest.raises(ValueError, match="resolved"):
        ops.to_record(op)
    with pytest.raises(ValueError, match="unknown WAL op"):
        ops.from_record({"op": "teleport", "ids": []})
    assert ops.BY_KIND["clear_payload"] is ops.ClearPayload
    assert not ops.DeletePoints.requires_existing and ops.SetPayload.requires_existing
