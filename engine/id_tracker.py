"""Id tracking: external point id → where the point's live row is (Qdrant's IdTracker).

A location is a *handle*: `segment id << ROW_BITS | row`, one int, so a batch of locations
is one int64 array that splits into segments and rows with two vector operations.

Writers mutate the tracker under the collection's write lock. Readers look ids up without
it: a dict `get` is atomic in CPython, and a handle found that way points into a segment
that the reader's `View` still holds (rows are never reused), so a reader racing a writer
sees the point either where it was or where it now is, never a torn location.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from engine.ids import PointId

ROW_BITS = 32
ROW_MASK = (1 << ROW_BITS) - 1


def handle(seg_id: int, row: int) -> int:
    return (seg_id << ROW_BITS) | row


def segment_of(h: int) -> int:
    return h >> ROW_BITS


def row_of(h: int) -> int:
    return h & ROW_MASK


def split_handles(handles: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Group handles by segment → (segment id, rows, positions in `handles`), by segment id."""
    if len(handles) == 0:
        return
    seg_ids = handles >> ROW_BITS
    rows = handles & ROW_MASK
    for sid in np.unique(seg_ids).tolist():
        sel = np.flatnonzero(seg_ids == sid)
        yield sid, rows[sel], sel


class IdTracker:
    def __init__(self) -> None:
        self._map: dict[PointId, int] = {}

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, pid: PointId) -> bool:
        return pid in self._map

    def get(self, pid: PointId) -> int | None:
        return self._map.get(pid)

    def handles(self, ids: Iterable[PointId]) -> list[int]:
        """Handles of the ids that exist, in order (missing ids are skipped)."""
        get = self._map.get
        return [h for h in (get(i) for i in ids) if h is not None]

    def locate(self, ids: list[PointId]) -> tuple[np.ndarray, list[PointId]]:
        """ids → (int64 handles of the existing ones, the missing ids)."""
        get = self._map.get
        found = [get(i) for i in ids]
        missing = [i for i, h in zip(ids, found, strict=True) if h is None]
        return np.array([h for h in found if h is not None], dtype=np.int64), missing

    def rows_in(self, seg_id: int, ids: Iterable[PointId], n: int) -> np.ndarray:
        """Rows below `n` of segment `seg_id` holding the given ids (has_id filters)."""
        hs = np.array([h for h in self.handles(ids) if h >> ROW_BITS == seg_id], np.int64)
        rows = hs & ROW_MASK
        return rows[rows < n]

    # ---- writers (under the collection's write lock) -------------------------------------------

    def assign(self, ids: list[PointId], seg_id: int, rows: Iterable[int]) -> None:
        """These ids now live at `rows` of segment `seg_id` (appends, vacuum, loading)."""
        base = seg_id << ROW_BITS
        self._map.update(zip(ids, (base + r for r in rows), strict=True))

    def assign_range(self, ids: list[PointId], seg_id: int, start: int = 0) -> None:
        """ids[i] lives at row start + i (a whole segment, or an appended block)."""
        base = (seg_id << ROW_BITS) + start
        self._map.update(zip(ids, range(base, base + len(ids)), strict=True))

    def remove(self, ids: Iterable[PointId]) -> None:
        pop = self._map.pop
        for i in ids:
            pop(i, None)
