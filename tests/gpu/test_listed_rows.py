"""gpu/_rows.c through gpu.flat.listed_similarity: one query's scores over listed host rows,
read in place, against numpy's gather + GEMV; the search paths that use it agree with each
other bit for bit, and bad arguments are refused before any row is read."""

from __future__ import annotations

import numpy as np
import pytest
from c_modules import toolchain

from gpu import flat

needs_rows = pytest.mark.skipif(flat._rows is None, reason="gpu._rows not built")


def test_the_module_is_built_where_a_compiler_is() -> None:
    if not toolchain():
        pytest.skip("no C compiler or Python headers here: listed rows are gathered")
    assert flat._rows is not None


@needs_rows
@pytest.mark.parametrize("d", [1, 7, 128, 768])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_scores_match_numpy(d: int, metric: str) -> None:
    rng = np.random.default_rng(d)
    x = rng.standard_normal((3000, d)).astype(np.float32)
    norms = (x * x).sum(axis=1)
    q = rng.standard_normal(d).astype(np.float32)
    rows = np.sort(rng.choice(3000, 400, replace=False)).astype(np.int64)
    got = flat.listed_similarity(x, rows, q, metric, norms)
    want = flat.similarity(x[rows], q[None], metric, norms[rows])[0]
    assert got is not None and got.dtype == np.float32 and got.shape == (400,)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.sqrt(d))


@needs_rows
def test_search_and_search_one_agree() -> None:
    """The batch entry with one query and the single-query entry score listed rows the
    same way, so the direct and general search paths return identical records."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 32)).astype(np.float32)
    norms = (x * x).sum(axis=1)
    q = rng.standard_normal(32).astype(np.float32)
    rows = np.sort(rng.choice(2000, 150, replace=False)).astype(np.int64)
    for metric in ("ip", "l2"):
        one_v, one_i = flat.search_one(x, q, 10, metric, rows, norms)
        vals, idx = flat.search(x, q[None], 10, metric, rows, norms)
        np.testing.assert_array_equal(one_i, idx[0])
        np.testing.assert_array_equal(one_v, vals[0])
        exact = flat.similarity(x[rows], q[None], metric, norms[rows])[0]
        assert set(one_i.tolist()) == set(rows[np.argsort(-exact)[:10]].tolist())


@needs_rows
def test_unusual_rows_fall_back_or_are_refused() -> None:
    x = np.ones((10, 4), np.float32)
    q = np.ones(4, np.float32)
    assert flat.listed_similarity(x.astype(np.float16), np.arange(3), q, "ip") is None
    assert flat.listed_similarity(x, np.arange(3), q, "l1") is None
    assert flat.listed_similarity(x, np.arange(3), q, "l2", None) is None  # no stored norms
    assert flat.listed_similarity(np.asfortranarray(x), np.arange(3), q, "ip") is None
    got = flat.listed_similarity(x, np.array([0, 9], np.int32), q, "ip")  # converted
    assert got is not None and got.tolist() == [4.0, 4.0]
    out = np.empty(2, np.float32)
    with pytest.raises(IndexError):
        flat._rows.dots(x, np.array([0, 10], np.int64), q, out)
    with pytest.raises(IndexError):
        flat._rows.dots(x, np.array([-1], np.int64), q, np.empty(1, np.float32))
    with pytest.raises(ValueError):
        flat._rows.dots(x, np.array([0, 1], np.int64), np.ones(5, np.float32), out)
    with pytest.raises(ValueError):
        flat._rows.dots(x, np.array([0, 1], np.int64), q, np.empty(3, np.float32))
    with pytest.raises(ValueError):
        flat._rows.dots(x.astype(np.float64), np.array([0, 1], np.int64), q, out)
    with pytest.raises(TypeError):
        flat._rows.dots(x, np.array([0, 1], np.int64), q)
    with pytest.raises(ValueError):  # 8-byte items that are not int64 rows
        flat._rows.dots(x, np.array([0.0, 1.0]), q, out)
    with pytest.raises(ValueError):
        flat._rows.dots(x, np.array([0, 1], np.int64), q.view(np.int32), out)
    empty = flat.listed_similarity(x, np.zeros(0, np.int64), q, "ip")
    assert empty is not None and empty.shape == (0,)
