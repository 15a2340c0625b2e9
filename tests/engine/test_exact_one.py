"""The direct path for one unfiltered query over unindexed host segments
(engine/search._exact_one) gives the general batch path's records, bit for bit: one segment
or several (merged), deleted rows (gathered, or left to the general path), ties (vectors on
a small integer grid), overflowing vectors, offsets, thresholds, selectors, limits past the
collection; and it steps aside where it must (Manhattan, filters, exclusions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.parse.writes import apply_body
from engine import query
from engine import search as search_mod
from engine.collection import Collection
from engine.errors import BadInput
from engine.filters import parse_filter

KWS: list[dict[str, Any]] = [{}, {"limit": 1}, {"limit": 3}, {"offset": 2, "limit": 5},
                             {"score_threshold": 0.5}, {"limit": 500}, {"offset": 200},
                             {"with_payload": True, "with_vector": True},
                             {"offset": 1, "limit": 4, "with_payload": ["n"]}]


_REAL = search_mod._exact_one  # the tests below patch the module's name
_TINY = search_mod._tiny_one


@pytest.fixture(autouse=True)
def _without_the_tiny_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_tiny_one` answers first for a small segment; these tests are about `_exact_one`
    (the one test about `_tiny_one` puts it back)."""
    monkeypatch.setattr(search_mod, "_tiny_one", lambda *a: None)


def _spec(v: np.ndarray, **kw: Any) -> query.SearchSpec:
    base: dict[str, Any] = {"limit": 10, "offset": 0, "score_threshold": None,
                            "with_payload": False, "with_vector": False}
    flt = kw.pop("filter", None)
    base.update(kw)
    return query.SearchSpec(vector=v, using="", pred=parse_filter(flt),
                            filter_key=repr(flt) if flt else "", **base)


def _collection(tmp_path: Path, distance: str, n: int, segment_kb: int | None) -> Collection:
    rng = np.random.default_rng(7)
    cfg: dict[str, Any] = {"vectors": {"size": 8, "distance": distance}}
    if segment_kb:
        cfg["optimizers_config"] = {"max_segment_size": segment_kb}
    coll = Collection.create("e", str(tmp_path / f"{distance}{n}{segment_kb}"), cfg)
    step = 25
    for start in range(0, n, step):  # batches: each may seal a small segment
        x = rng.integers(-2, 3, (step, 8)).astype(np.float32)  # a coarse grid: many ties
        if start == 0:
            x[3] = 1e30  # overflows Dot and Euclid scores: never a match
        apply_body(coll, "upsert", {"batch": {"ids": list(range(start, start + step)),
                                              "vectors": x,
                                              "payloads": [{"n": i} for i in
                                                           range(start, start + step)]}})
    return coll


def _compare(coll: Collection, monkeypatch: pytest.MonkeyPatch, seed: int) -> int:
    """Every KWS search both ways; returns how many the direct path answered."""
    rng = np.random.default_rng(seed)
    real = _REAL
    direct = 0
    for kw in KWS:
        for grid in (True, False):
            v = (rng.integers(-2, 3, 8) if grid else rng.standard_normal(8)).astype(np.float32)
            monkeypatch.setattr(search_mod, "_exact_one", real)
            answered = real(coll.view(), _spec(v, **kw)) is not None
            direct += answered
            one = query.search_batch(coll, [_spec(v, **kw)])[0]
            monkeypatch.setattr(search_mod, "_exact_one", lambda *a: None)
            general = query.search_batch(coll, [_spec(v, **kw)])[0]
            assert one == general, (kw, v)
    return direct


@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid", "Manhattan"])
def test_one_segment_matches_the_general_path(tmp_path: Path, distance: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    coll = _collection(tmp_path, distance, 25, None)
    assert sum(1 for _, m in coll.view().segments if m) == 1
    direct = _compare(coll, monkeypatch, 1)
    # Manhattan: gpu.flat.search scans it with faiss, the general path's answer
    assert direct == (0 if distance == "Manhattan" else 2 * len(KWS))
    coll.close()


@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid"])
def test_segments_and_deletions_match_the_general_path(tmp_path: Path, distance: str,
                                                       monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    coll = _collection(tmp_path, distance, 150, 1)  # 1 KB: 32 rows of 8 floats a segment
    assert sum(1 for _, m in coll.view().segments if m) > 2
    assert _compare(coll, monkeypatch, 2) == 2 * len(KWS)
    # a few deleted rows in a segment: masked by gpu.flat.search, so the general path
    apply_body(coll, "delete", {"points": [1, 2]})
    assert _compare(coll, monkeypatch, 3) == 0
    # most rows of a segment deleted (and another emptied): gathered, as gpu.flat.search does
    first, second = [[seg.ids[r] for r in range(n)] for seg, n in coll.view().segments if n][:2]
    apply_body(coll, "delete", {"points": [i for i in first if i % 8] + second})
    live = [seg.live_mask(n) for seg, n in coll.view().segments if n]
    assert any(0 < allowed < 0.3 * len(mask) for mask, allowed in live)
    assert any(allowed == 0 for _, allowed in live)
    assert _compare(coll, monkeypatch, 4) == 2 * len(KWS)
    coll.close()


def test_steps_aside_and_checks_input(tmp_path: Path) -> None:
    from engine.errors import BadInput

    coll = _collection(tmp_path, "Cosine", 25, None)
    view = coll.view()
    v = np.ones(8, np.float32)
    assert search_mod._exact_one(view, _spec(v, filter={"must": [{"has_id": [1]}]})) is None
    assert search_mod._exact_one(view, _spec(v, exclude_ids=(1,))) is None
    assert search_mod._exact_one(view, _spec(v, limit=0)) is None
    with pytest.raises(BadInput, match="dimension"):
        search_mod._exact_one(view, _spec(np.ones(5, np.float32)))
    with pytest.raises(BadInput, match="NaN"):
        search_mod._exact_one(view, _spec(np.full(8, np.nan, np.float32)))
    coll.close()


@pytest.mark.parametrize("n", [1, 5, 10, 40])
def test_one_query_selection_matches_the_batch_selection(n: int) -> None:
    """gpu.topk: one query's selections (topk's 1-D branch, topk_one) pick what the 2-D
    batch selection picks for the same row, ties included (scores on a coarse grid)."""
    from gpu.topk import topk, topk_one

    rng = np.random.default_rng(n)
    for _ in range(20):
        row = rng.integers(-3, 4, n).astype(np.float32)
        batch = np.stack([row, rng.standard_normal(n).astype(np.float32)])
        for k in (1, 3, n - 1, n, n + 5):
            if k < 1:
                continue
            want_vals, want_idx = topk(batch, k)
            vals, idx = topk(row[None], k)
            one_vals, one_idx = topk_one(row, k)
            assert idx[0].tolist() == want_idx[0].tolist() == one_idx.tolist()
            assert vals[0].tolist() == want_vals[0].tolist() == one_vals.tolist()
            assert idx.dtype == want_idx.dtype == one_idx.dtype


def test_rows_moved_to_the_device_meanwhile_leave_it_to_the_general_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The direct paths read a segment's rows and norms together (gpu.matrix.host_resident);
    rows found on the device between the check and the read hand the query back (None),
    never pair host rows with device norms."""
    from gpu.matrix import DeviceMatrix  # noqa: PLC0415

    coll = _collection(tmp_path, "Euclid", 60, None)
    view = coll.view()
    v = np.ones(8, np.float32)
    assert _REAL(view, _spec(v)) is not None
    seg = next(s for s, n in view.segments if n)
    rows, norms = seg.matrices[""].host_resident(seg.n)  # type: ignore[misc]
    assert isinstance(rows, np.ndarray) and norms is not None and len(norms) == len(rows)
    monkeypatch.setattr(DeviceMatrix, "host_resident", lambda self, n: None)
    assert _REAL(view, _spec(v)) is None
    monkeypatch.undo()
    assert [r["id"] for r in query.search_batch(coll, [_spec(v)])[0]] == \
        [r["id"] for r in search_mod._search_group(view, [_spec(v)])[0]]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflowing row (inf - inf)
@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid"])
def test_a_small_segment_ranked_in_c_matches_the_general_path(
        tmp_path: Path, distance: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """All rows of one small segment within the limit: `_tiny_one` (engine/_records.c
    `ranked_query`: the query prepared, scored and ranked in one call; Cosine and Dot) and
    `_ranked_one` (`ranked`: the stable order, the float64 scores) give the general path's
    records, bit for bit, ties included; an overflowing score or query norm leaves it to the
    numpy steps, same records again; a bad query is refused as before."""
    from engine import _records  # noqa: PLC0415 - the C module the test is about

    rng = np.random.default_rng(11)
    coll = Collection.create("r", str(tmp_path / distance), {
        "vectors": {"size": 8, "distance": distance}})
    x = rng.integers(-2, 3, (40, 8)).astype(np.float32)  # a coarse grid: many ties
    apply_body(coll, "upsert", {"batch": {"ids": list(range(100, 140)), "vectors": x}})
    calls: dict[str, list[bool]] = {"ranked": [], "ranked_query": []}

    def spy(name: str) -> Any:
        real = getattr(_records, name)

        def call(*a: Any) -> Any:
            out = real(*a)
            calls[name].append(out is not None)
            return out
        return call

    for name in calls:
        monkeypatch.setattr(_records, name, spy(name))

    def run(v: np.ndarray, limit: int, path: str) -> list[dict[str, Any]]:
        monkeypatch.setattr(search_mod, "_tiny_one",
                            _TINY if path == "tiny" else lambda *a: None)
        monkeypatch.setattr(search_mod, "_exact_one",
                            lambda *a: None if path == "general" else _REAL(*a))
        return query.search_batch(coll, [_spec(v, limit=limit)])[0]

    tiny = distance != "Euclid"  # ranked_query serves inner products only
    for limit in (40, 41, 500):
        for grid in (True, False):
            v = (rng.integers(-2, 3, 8) if grid else rng.standard_normal(8)).astype(np.float32)
            general = run(v, limit, "general")
            assert run(v, limit, "tiny") == general and len(general) == 40, (limit, v)
            assert run(v, limit, "ranked") == general, (limit, v)
    # Euclid: the tiny path steps aside and _ranked_one answers both runs
    assert calls["ranked_query"] == [True] * 6 * tiny
    assert calls["ranked"] == [True] * 6 * (1 + (not tiny))
    # a query whose float32 sum of squares would overflow (a double one does not)
    big = np.full(8, 1e20, np.float32)
    assert run(big, 100, "tiny") == run(big, 100, "general")
    assert calls["ranked_query"][6:] == [True] * tiny
    # bad queries are refused as before: a wrong dimension, NaN
    for bad, message in ((np.ones(7, np.float32), "Vector dimension error"),
                         (np.array([np.nan] * 8, np.float32), "NaN")):
        with pytest.raises(BadInput, match=message):
            run(bad, 10, "tiny")
    # an overflowing row (Dot, Euclid: an infinite score): the numpy steps answer
    apply_body(coll, "upsert", {"batch": {"ids": [7], "vectors": np.full((1, 8), 1e38,
                                                                          np.float32)}})
    v = np.ones(8, np.float32)
    general = run(v, 100, "general")
    assert run(v, 100, "tiny") == general
    # Cosine: unit rows, finite; Dot: an infinite score; Euclid: never called
    assert calls["ranked_query"][7:] == [distance == "Cosine"] * tiny
    assert run(v, 100, "ranked") == general
    assert calls["ranked"][-1] is (distance == "Cosine")
    coll.close()


def test_a_single_query_is_prepared_in_c_as_in_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_prepared_one` (gpu/_rows.c `unit`): the float32 norm of a double sum of squares and
    a float32 division, the same bits as its numpy steps (used without the C module); Dot
    keeps the query itself; a zero vector stays zero; NaN and infinities are refused; a norm
    beyond float32 gives zeros, as numpy's division by inf."""
    from engine.distance import DISTANCES  # noqa: PLC0415

    assert search_mod._rows is not None
    rng = np.random.default_rng(5)
    cosine, dot = DISTANCES["Cosine"], DISTANCES["Dot"]
    cases = [rng.standard_normal(d).astype(np.float32) * scale
             for d in (1, 3, 8, 128, 769) for scale in (1e-30, 1e-3, 1.0, 1e3, 1e30)]
    cases += [np.zeros(16, np.float32), np.full(4, 3e38, np.float32)]
    for q in cases:
        c_unit = search_mod._prepared_one(q, len(q), cosine)
        assert c_unit is not q and c_unit.dtype == np.float32
        assert search_mod._prepared_one(q, len(q), dot) is q
        with monkeypatch.context() as m:
            m.setattr(search_mod, "_rows", None)
            numpy_unit = search_mod._prepared_one(q, len(q), cosine)
        assert c_unit.tobytes() == numpy_unit.tobytes()
        with np.errstate(over="ignore"):
            norm = np.float32(np.sqrt(np.sum(q.astype(np.float64) ** 2)))
            assert c_unit.tobytes() == (q / norm if norm else q).tobytes()
    assert not search_mod._prepared_one(np.full(4, 3e38, np.float32), 4, cosine).any()
    for bad in (np.array([1, np.nan], np.float32), np.array([np.inf, 1], np.float32)):
        for dist in (cosine, dot):
            with pytest.raises(BadInput, match="NaN or infinite"):
                search_mod._prepared_one(bad, 2, dist)
            with monkeypatch.context() as m, pytest.raises(BadInput, match="NaN or infinite"):
                m.setattr(search_mod, "_rows", None)
                search_mod._prepared_one(bad, 2, dist)
    with pytest.raises(BadInput, match="Vector dimension error"):
        search_mod._prepared_one(np.ones(3, np.float32), 4, cosine)


def test_a_query_is_prepared_to_the_same_bits_alone_or_in_a_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`_prepared_queries` (a batch: gpu/_rows.c `units`, or a float64 einsum without the C
    module) and `_prepared_one` (one query: `unit`) give the same float32 rows, zero and
    huge vectors included; a batch with a NaN or an infinity anywhere is refused either way."""
    from engine.distance import DISTANCES  # noqa: PLC0415

    assert search_mod._rows is not None
    rng = np.random.default_rng(9)
    for dim in (3, 128, 768):
        q = rng.standard_normal((64, dim)).astype(np.float32)
        q[:16] *= np.float32(1e-20)
        q[16:32] *= np.float32(1e19)
        q[32] = 0.0
        q[33] = 3e38
        specs = [_spec(v) for v in q]
        for name in ("Cosine", "Dot", "Euclid"):
            dist = DISTANCES[name]
            with np.errstate(over="ignore"):
                batch = search_mod._prepared_queries(specs, dim, dist)
                with monkeypatch.context() as m:
                    m.setattr(search_mod, "_rows", None)
                    numpy_batch = search_mod._prepared_queries(specs, dim, dist)
            assert batch.dtype == np.float32 and batch.flags.c_contiguous
            assert batch.tobytes() == numpy_batch.tobytes(), (dim, name)
            for i, v in enumerate(q):
                assert batch[i].tobytes() == search_mod._prepared_one(v, dim, dist).tobytes(), \
                    (dim, name, i)
            bad = q.copy()
            bad[40, dim - 1] = np.nan if dim % 2 else np.inf
            for c_module in (True, False):
                with monkeypatch.context() as m, \
                        pytest.raises(BadInput, match="NaN or infinite"):
                    if not c_module:
                        m.setattr(search_mod, "_rows", None)
                    search_mod._prepared_queries([_spec(v) for v in bad], dim, dist)


def test_a_batch_of_other_arrays_takes_numpys_path_to_the_same_rows() -> None:
    """gpu/_rows.c `gather_units` takes float32 (d,) C-order arrays; float64 rows, strided
    views and lists leave the batch to numpy's path (`units`), which prepares them to the
    same float32 rows; a wrong size anywhere is named as before."""
    from engine.distance import DISTANCES  # noqa: PLC0415

    rng = np.random.default_rng(12)
    q = rng.standard_normal((9, 32)).astype(np.float32)
    cosine = DISTANCES["Cosine"]
    want = search_mod._prepared_queries([_spec(v) for v in q], 32, cosine)
    wide = np.repeat(q, 2, axis=1)
    for other in (q[4].astype(np.float64), wide[4, ::2], q[4].tolist()):
        vectors: list[Any] = list(q)
        vectors[4] = other
        got = search_mod._prepared_queries([_spec(v) for v in vectors], 32, cosine)
        assert got.tobytes() == want.tobytes(), type(other)
    bad = list(q)
    bad[6] = q[6][:31]
    with pytest.raises(BadInput, match="expected dim: 32, got 31"):
        search_mod._prepared_queries([_spec(v) for v in bad], 32, cosine)


def test_an_empty_batch_answers_nothing(tmp_path: Path) -> None:
    coll = Collection.create("e", str(tmp_path / "e"), {"vectors": {"size": 4,
                                                                     "distance": "Cosine"}})
    assert query.search_batch(coll, []) == []
    coll.close()
