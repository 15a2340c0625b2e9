"""engine/columns.ColumnData.rows_where: a column with one entry per row, in row order (a
scalar field on every point) turns a selection over entries into the row mask as it is; the
answer equals the general scatter of the selected entries' rows, whatever the query's frozen
row count, and columns with gaps or repeated rows keep the scatter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.columns import ColumnData, Vocab, _empty


def column(rows: np.ndarray) -> ColumnData:
    return dataclasses.replace(_empty(Vocab()), rows=rows.astype(np.int64))


def scatter(rows: np.ndarray, sel: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    picked = rows[sel]
    out[picked[picked < n]] = True
    return out


@pytest.mark.parametrize("rows, dense", [
    (np.arange(1000), True),
    (np.arange(1, 1001), False),  # the first row has no entry
    (np.delete(np.arange(1000), 500), False),  # a gap
    (np.repeat(np.arange(500), 2), False),  # arrays: two entries a row
    (np.arange(0), False),
])
def test_rows_where_equals_the_scatter(rows: np.ndarray, dense: bool) -> None:
    col = column(rows)
    assert col.dense() is dense
    rng = np.random.default_rng(len(rows))
    for n in (0, 1, 499, len(rows), len(rows) + 37):
        sel = rng.random(len(rows)) < 0.5
        np.testing.assert_array_equal(col.rows_where(sel, n), scatter(col.rows, sel, n))
