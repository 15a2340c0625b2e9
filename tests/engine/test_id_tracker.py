"""engine/id_tracker.py: id → (segment, row) handles, grouping, and reads racing writes."""

from __future__ import annotations

import numpy as np

from engine.id_tracker import ROW_BITS, IdTracker, handle, row_of, segment_of, split_handles
from engine.ids import parse_id


def test_handles_pack_segment_and_row() -> None:
    h = handle(7, 123)
    assert h == (7 << ROW_BITS) | 123
    assert segment_of(h) == 7 and row_of(h) == 123
    assert handle(0, (1 << ROW_BITS) - 1) < handle(1, 0)


def test_assign_locate_remove() -> None:
    t = IdTracker()
    u = parse_id("12345678-1234-5678-1234-567812345678")
    t.assign_range([1, 2, u], seg_id=3)
    t.assign([10, 11], seg_id=4, rows=[5, 9])
    assert len(t) == 5 and u in t and 99 not in t
    handles, missing = t.locate([2, 99, 11, u, 98])
    assert handles.dtype == np.int64
    assert handles.tolist() == [handle(3, 1), handle(4, 9), handle(3, 2)]
    assert missing == [99, 98]
    assert t.handles([99, 10, 1]) == [handle(4, 5), handle(3, 0)]
    t.remove([1, 42])  # removing an absent id is not an error
    assert t.get(1) is None and len(t) == 4


def test_upsert_moves_an_id() -> None:
    t = IdTracker()
    t.assign_range([1, 2, 3], seg_id=0)
    t.assign([2], seg_id=1, rows=[0])  # re-upserted: now lives in the appendable segment
    assert t.get(2) == handle(1, 0) and t.get(1) == handle(0, 0)


def test_assign_range_with_offset() -> None:
    t = IdTracker()
    t.assign_range([5, 6], seg_id=2, start=10)
    assert t.get(5) == handle(2, 10) and t.get(6) == handle(2, 11)


def test_split_handles_groups_by_segment_keeping_positions() -> None:
    hs = np.array([handle(2, 5), handle(0, 1), handle(2, 6), handle(0, 0)], np.int64)
    groups = [(sid, rows.tolist(), pos.tolist()) for sid, rows, pos in split_handles(hs)]
    assert groups == [(0, [1, 0], [1, 3]), (2, [5, 6], [0, 2])]
    assert list(split_handles(np.empty(0, np.int64))) == []


def test_rows_in_one_segment_below_a_row_count() -> None:
    t = IdTracker()
    t.assign_range(list(range(10)), seg_id=1)
    t.assign_range([100, 101], seg_id=2)
    rows = t.rows_in(1, [3, 100, 8, 55], n=5)  # 8 is past the reader's row count
    assert rows.tolist() == [3]
