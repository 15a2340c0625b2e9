"""Sparse vectors in the engine: validation, CSR rows (append, freeze, compact), posting
lists, IDF, WAL records, and a collection's search checked against a brute-force reference
through writes, deletes, restarts, flushes, vacuum and snapshot recovery (1.1 and 1.0)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lifecycle import replay_vacuum_snapshot

from api.parse.vectors import parse_query_vector
from api.parse.writes import apply_body
from engine.catalog import Catalog
from engine.config import parse_create
from engine.errors import BadInput, BadRequest, ValidationError
from engine.operations import SparseRows, Upsert, from_record, to_record
from engine.plan import RetrieveRequest, SearchSpec
from engine.query import retrieve, search_batch
from engine.segment import Segment
from engine.sparse import (
    PostingIndex,
    SparseBatch,
    SparseStore,
    SparseVector,
    checked_batch,
    idf,
    sparse_vector,
)
from snapshots.recovery import Recovery

DATA = Path(__file__).resolve().parent.parent / "data"


# ---- validation -------------------------------------------------------------------------------


def test_sparse_vector_sorted_and_typed() -> None:
    v = sparse_vector([9, 2, 5], [0.5, 1, -2.0])
    assert v.indices.tolist() == [2, 5, 9] and v.indices.dtype == np.uint32
    assert v.values.tolist() == [1.0, -2.0, 0.5] and v.values.dtype == np.float32
    empty = sparse_vector([], [])
    assert len(empty.indices) == 0


@pytest.mark.parametrize("indices, values", [
    ([1, 1], [1.0, 2.0]),  # not unique
    ([1, 2], [1.0]),  # lengths differ
    ([-1], [1.0]),  # not u32
    ([1 << 32], [1.0]),
    ([1.5], [1.0]),
    ([True], [1.0]),
    ([1], [float("nan")]),
    ([1], [float("inf")]),
    ([1], [1e39]),  # overflows float32
    ([1], [None]),
    ([1], ["1"]),
    ("1", [1.0]),
])
def test_sparse_vector_refused(indices: Any, values: Any) -> None:
    with pytest.raises(ValidationError):
        sparse_vector(indices, values)


def test_checked_batch_rows() -> None:
    b = checked_batch([[3, 1], [], [7]], [[3.0, 1.0], [], [7.0]])
    assert b.indptr.tolist() == [0, 2, 2, 3]
    assert b.indices.tolist() == [1, 3, 7] and b.values.tolist() == [1.0, 3.0, 7.0]
    with pytest.raises(ValidationError):  # a duplicate inside one row only
        checked_batch([[1], [2, 2]], [[1.0], [1.0, 1.0]])
    assert checked_batch([[1], [1]], [[1.0], [1.0]]).indices.tolist() == [1, 1]


def test_config() -> None:
    cfg = parse_create({"sparse_vectors": {"s": {"modifier": "idf", "index": {
        "on_disk": False, "full_scan_threshold": 100, "datatype": "float32"}}}})
    assert cfg.sparse_idf("s") and cfg.is_sparse("s") and cfg.search_name("s") == "s"
    assert cfg.to_json()["params"]["sparse_vectors"] == {"s": {"modifier": "idf", "index": {
        "on_disk": False, "full_scan_threshold": 100, "datatype": "float32"}}}
    for bad in ({"s": {"modifier": "bm25"}}, {"s": {"index": {"datatype": "float16"}}},
                {"s": {"index": {"datatype": "uint8"}}}, {"s": {"oops": 1}},
                {"s": {"index": {"full_scan_threshold": -1}}}, {"s": 3}):
        with pytest.raises(BadRequest):
            parse_create({"sparse_vectors": bad})
    with pytest.raises(BadRequest, match="float16"):
        parse_create({"sparse_vectors": {"s": {"index": {"datatype": "float16"}}}})
    with pytest.raises(BadInput):
        parse_create({"vectors": {"s": {"size": 2, "distance": "Dot"}},
                      "sparse_vectors": {"s": {}}})


def test_query_vector_kinds() -> None:
    cfg = parse_create({"vectors": {"d": {"size": 2, "distance": "Dot"}},
                        "sparse_vectors": {"s": {}}})
    assert parse_query_vector({"indices": [2, 1], "values": [1, 2]}, "s", cfg).indices.tolist() \
        == [1, 2]
    assert parse_query_vector([1, 2], "d", cfg).tolist() == [1.0, 2.0]
    for raw, using in (([1, 2], "s"), ({"indices": [1], "values": [1]}, "d"),
                       ({"indices": [1], "values": [1]}, "nope")):
        with pytest.raises(BadInput):
            parse_query_vector(raw, using, cfg)


# ---- storage ----------------------------------------------------------------------------------


def _batch(rows: list[dict[int, float]]) -> SparseBatch:
    return checked_batch([list(r) for r in rows], [list(r.values()) for r in rows])


def _dicts(b: SparseBatch) -> list[dict[int, float]]:
    out = []
    for j in range(len(b)):
        v = b.row(j)
        out.append(dict(zip(v.indices.tolist(), v.values.tolist(), strict=True)))
    return out


def test_segment_rows_append_freeze_compact() -> None:
    seg = Segment(0, {}, np, capacity=2, sparse=("s",))
    rng = np.random.default_rng(1)
    rows = [{int(i): float(np.float32(rng.random())) for i in rng.choice(50, rng.integers(0, 6), False)}
            for _ in range(40)]
    have = np.flatnonzero(rng.random(40) < 0.7)
    for start in range(0, 40, 10):  # batches, positions given out of order
        pos = np.array([p - start for p in have if start <= p < start + 10][::-1], np.int64)
        seg.append(list(range(start, start + 10)), np.zeros(10, seg.id_recs.dtype), {},
                   [{} for _ in range(10)], 1,
                   {"s": (pos, _batch([rows[start + p] for p in pos]))})
    expect = [rows[i] if i in set(have.tolist()) else {} for i in range(40)]
    assert seg.present["s"][:40].tolist() == [i in set(have.tolist()) for i in range(40)]
    assert _dicts(seg.sparse_of("s", np.arange(40))) == expect
    frozen = seg.freeze()
    assert _dicts(frozen.sparse["s"]) == expect
    seg.append([99], np.zeros(1, seg.id_recs.dtype), {}, [{}], 2,
               {"s": (np.array([0]), _batch([{1: 1.0}]))})
    assert _dicts(frozen.sparse["s"]) == expect  # a frozen view never changes
    seg.delete_rows(np.arange(0, 41, 3))
    comp = Segment.compacted(seg, 1)
    live = [i for i in range(41) if i % 3]
    assert _dicts(comp.sparse_of("s", np.arange(len(live)))) == \
        [(expect + [{1: 1.0}])[i] for i in live]
    assert comp.present["s"][: len(live)].tolist() == \
        [seg.present["s"][i] for i in live]


def test_posting_index_matches_brute_force() -> None:
    rng = np.random.default_rng(2)
    rows = [{int(i): float(rng.random()) for i in rng.choice(30, rng.integers(0, 8), False)}
            for _ in range(200)]
    index = PostingIndex.build(_batch(rows))
    assert index.rows == 200
    query = np.array([0, 3, 17, 29, 31], np.uint32)
    found = {int(query[q]): (a, b) for q, a, b in index.postings(query)}
    for term in query.tolist():
        want = [r for r, row in enumerate(rows) if term in row]
        if not want:
            assert term not in found
            continue
        a, b = found[term]
        assert index.post_rows[a:b].tolist() == want
        assert index.post_values[a:b].tolist() == pytest.approx([rows[r][term] for r in want])


def test_idf_formula() -> None:
    # Qdrant: ln((N - df + 0.5) / (df + 0.5) + 1)
    assert idf(np.array([0, 1, 10]), 10).tolist() == pytest.approx(
        [math.log((10 - d + 0.5) / (d + 0.5) + 1) for d in (0, 1, 10)])


def test_wal_record_round_trip_and_old_records() -> None:
    op = Upsert([1, 2, 3], {}, [{}, {}, {}],
                {"s": SparseRows(np.array([0, 2]), _batch([{4: 1.0, 1: 2.0}, {}]))})
    back = from_record(to_record(op))
    assert isinstance(back, Upsert)
    assert back.sparse["s"].positions.tolist() == [0, 2]
    assert _dicts(back.sparse["s"].rows) == [{1: 2.0, 4: 1.0}, {}]
    old = {"op": "upsert", "ids": [1], "payloads": [{}],
           "arrays": {"v:": np.ones((1, 2), np.float32)}}  # written before sparse vectors
    replayed = from_record(old)
    assert isinstance(replayed, Upsert) and replayed.sparse == {} and "" in replayed.vectors


# ---- a collection against a brute-force reference --------------------------------------------


def _reference(points: dict[int, dict[int, float]], query: dict[int, float], use_idf: bool,
               allowed: set[int] | None = None) -> list[tuple[int, float]]:
    weights = dict(query)
    if use_idf:
        n = len(points)
        for t in weights:
            df = sum(1 for p in points.values() if t in p)
            weights[t] *= math.log((n - df + 0.5) / (df + 0.5) + 1)
    out = []
    for pid, vec in points.items():
        shared = set(vec) & set(weights)
        if shared and (allowed is None or pid in allowed):
            out.append((pid, sum(vec[t] * weights[t] for t in sorted(shared))))
    return sorted(out, key=lambda x: -x[1])


def _search(coll: Any, query: dict[int, float], limit: int = 10, flt: Any = None,
            **kw: Any) -> list[tuple[int, float]]:
    from engine.filters import parse_filter  # noqa: PLC0415

    q = parse_query_vector({"indices": list(query), "values": list(query.values())}, "s",
                           coll.config)
    hits = search_batch(coll, [SearchSpec(q, "s", parse_filter(flt), limit, 0, None, False,
                                          False, filter_key=json.dumps(flt), **kw)])[0]
    return [(h["id"], h["score"]) for h in hits]


def _random_points(rng: np.random.Generator, ids: range, vocab: int = 40
                   ) -> dict[int, dict[int, float]]:
    return {i: {int(t): float(rng.random() + 0.1) for t in rng.choice(vocab, rng.integers(1, 7),
                                                                       False)} for i in ids}


def _upsert(coll: Any, points: dict[int, dict[int, float]]) -> None:
    apply_body(coll, "upsert", {"points": [
        {"id": i, "vector": {"s": {"indices": list(v), "values": list(v.values())}},
         "payload": {"g": i % 3}} for i, v in points.items()]})


def _check(coll: Any, points: dict[int, dict[int, float]], use_idf: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(6):
        query = {int(t): float(rng.random()) for t in rng.choice(45, 4, False)}
        want = _reference(points, query, use_idf)[:10]
        got = _search(coll, query)
        assert [g[0] for g in got] == [w[0] for w in want]
        assert [g[1] for g in got] == pytest.approx([w[1] for w in want], rel=1e-5)
        flt = {"must": [{"key": "g", "match": {"value": 1}}]}
        want = _reference(points, query, use_idf, {p for p in points if p % 3 == 1})[:5]
        got = _search(coll, query, 5, flt)
        assert [g[0] for g in got] == [w[0] for w in want]


@pytest.fixture(params=["postings", "dense columns"])
def small_segments(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.collection.SEGMENT_MAX_BYTES", 4096)
    monkeypatch.setattr("engine.sparse.TAIL_ROWS", 16)
    if request.param == "dense columns":  # most terms frequent enough for a dense column
        monkeypatch.setattr("engine.sparse.DENSE_MIN_ROWS", 1)
        monkeypatch.setattr("engine.sparse.DENSE_SHARE", 16)


def test_dense_columns_score_exactly_like_postings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frequent terms scored from their dense column give the same float32 sums and the same
    hits as the scatter over postings, with negative weights and zero products too."""
    from engine.sparse_search import _Part  # noqa: PLC0415

    rng = np.random.default_rng(5)
    rows = [{int(t): float(rng.choice([-1.5, 0.0, 0.25, 2.0]) if rng.random() < 0.3
                           else rng.random() + 0.01)
             for t in rng.choice(12, rng.integers(0, 6), False)} for _ in range(400)]

    class _Seg:  # what _Part reads of a segment
        def __init__(self) -> None:
            self.sparse = {"s": SparseStore.load(_batch(rows), len(rows))}

    for weights in ([0.5, 1.0, 2.0], [0.5, -1.0, 2.0]):
        query = SparseVector(np.array([0, 3, 7], np.uint32), np.array(weights, np.float32))
        got = []
        for share, min_rows in ((10**9, 10**9), (16, 1)):
            monkeypatch.setattr("engine.sparse.DENSE_SHARE", share)
            monkeypatch.setattr("engine.sparse.DENSE_MIN_ROWS", min_rows)
            part = _Part(_Seg(), 400, "s", query)  # type: ignore[arg-type]
            got.append(part.scores(query.values))
        assert part.dense, "the second index should score some terms from dense columns"
        np.testing.assert_array_equal(got[0][0], got[1][0])
        np.testing.assert_array_equal(got[0][1], got[1][1])


@pytest.mark.parametrize("modifier", ["idf", "none"])
def test_collection_search_through_its_life(tmp_path: Path, modifier: str,
                                            small_segments: None) -> None:
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    coll = cat.create("c", {"sparse_vectors": {"s": {"modifier": modifier}},
                            "optimizers_config": {"vacuum_min_vector_number": 100}})
    rng = np.random.default_rng(3)
    use_idf = modifier == "idf"
    points = _random_points(rng, range(300))
    for lo in range(0, 300, 60):  # several segments, each searched while it grows
        _upsert(coll, {i: points[i] for i in range(lo, lo + 60)})
        _check(coll, {i: points[i] for i in range(lo + 60)}, use_idf, lo)
    assert len(coll.segments) >= 2
    apply_body(coll, "delete", {"points": list(range(0, 300, 4))})  # leave the IDF corpus
    apply_body(coll, "delete_vectors", {"points": [1, 2, 3], "vector": ["s"]})
    new = _random_points(rng, range(5, 60, 6))
    apply_body(coll, "update_vectors", {"points": [
        {"id": i, "vector": {"s": {"indices": list(v), "values": list(v.values())}}}
        for i, v in new.items()]})
    for i in range(0, 300, 4):
        points.pop(i, None)
    for i in (1, 2, 3):
        points.pop(i)
    points.update(new)
    _check(coll, points, use_idf, 10)
    got = retrieve(coll, RetrieveRequest([5, 1], False, True))
    assert got == [{"id": 5, "vector": {"s": {"indices": sorted(points[5]),
                                              "values": [pytest.approx(points[5][t])
                                                         for t in sorted(points[5])]}}},
                   {"id": 1, "vector": {}}]
    replay_vacuum_snapshot(tmp_path, cat, points,
                           lambda c, p, seed: _check(c, p, use_idf, seed), _upsert,
                           _random_points(rng, range(300, 330)), 10)


def test_format_1_0_archive_still_recovers(tmp_path: Path) -> None:
    """tests/data/snapshot-format-1.0.snapshot was written by Quiver before the sparse
    members (format 1.0); the answers next to it were computed by that same version."""
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    path = tmp_path / "old.snapshot"
    shutil.copy(DATA / "snapshot-format-1.0.snapshot", path)
    Recovery(cat, str(tmp_path)).recover_file("old", str(path), None)
    want = json.loads((DATA / "snapshot-format-1.0.answers.json").read_text())
    coll = cat.get("old")
    assert coll.points_count() == want["count"]
    assert retrieve(coll, RetrieveRequest(list(range(200)), True, True)) == want["retrieve"]
    for case in want["search"]:
        spec = SearchSpec(np.array(case["vector"], np.float32), case["using"], None, 10, 0,
                          None, True, True)
        got = search_batch(coll, [spec])[0]
        # scores within float rounding (the answers were computed on the CPU; on a device
        # the GEMM may round the last bit differently), everything else exactly
        assert [{**h, "score": None} for h in got] == [{**h, "score": None}
                                                        for h in case["hits"]]
        assert [h["score"] for h in got] == pytest.approx([h["score"] for h in case["hits"]],
                                                          rel=1e-5)
    cat.close()
