"""The direct search paths give the general paths' answers.

- Rows listed from payload indexes (engine/filters.py `rows`, engine/tables.index_rows) are
  exactly the rows the filter's mask selects, on random payloads (ints, floats, strings,
  arrays, nulls, integers past 2^53), for match value / any, ranges (infinite bounds too),
  has_id and conjunctions; a selective filter on an indexed field is answered from them.
- A single unfiltered query on one HNSW segment (engine/search._search_one) returns what the
  general batch path returns for it, and falls back where it must (deleted rows, a filter).
- Through the real server: filtered searches at <= 1 % selectivity, a different value per
  query, rank as QdrantClient(":memory:") does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from api.parse.writes import apply_body
from engine import query, tables
from engine import search as search_mod
from engine.collection import Collection
from engine.filters import candidate_rows, parse_filter
from engine.tables import SegmentTable
from tests.openapi_contract import validating_qdrant_client
from tests.ranking import assert_same_ranking


def _payload(rng: np.random.Generator, i: int) -> dict[str, Any]:
    kind = i % 7
    if kind == 0:
        v: Any = int(rng.integers(-20, 20))
    elif kind == 1:
        v = float(rng.integers(-40, 40)) / 2
    elif kind == 2:
        v = [int(x) for x in rng.integers(-20, 20, int(rng.integers(0, 4)))]
    elif kind == 3:
        v = str(rng.choice(["a", "b", "c", "d"]))
    elif kind == 4:
        v = None
    elif kind == 5:
        v = (1 << 60) + int(rng.integers(0, 3))  # past 2^53: compared exactly
    else:
        v = [str(rng.choice(["a", "b"])), int(rng.integers(-5, 5))]
    return {"f": v, "g": int(i % 5)}


FILTERS = [
    {"must": [{"key": "f", "match": {"value": 3}}]},
    {"must": [{"key": "f", "match": {"value": "b"}}]},
    {"must": [{"key": "f", "match": {"value": "zz"}}]},
    {"must": [{"key": "f", "match": {"value": (1 << 60) + 1}}]},
    {"must": [{"key": "f", "match": {"any": [1, "a", -3, "nope"]}}]},
    {"must": [{"key": "f", "match": {"any": []}}]},
    {"must": [{"key": "f", "range": {"gte": -2, "lt": 4.5}}]},
    {"must": [{"key": "f", "range": {"gt": -2.5, "lte": 3}}]},
    {"must": [{"key": "f", "range": {"gt": 1.5}}]},
    {"must": [{"key": "f", "range": {"lt": math.inf}}]},
    {"must": [{"key": "f", "range": {"gt": -math.inf, "lte": 0}}]},
    {"must": [{"key": "f", "range": {"gte": math.inf}}]},
    {"must": [{"key": "f", "range": {"gte": 1 << 60, "lt": (1 << 60) + 2}}]},
    {"must": [{"key": "f", "range": {}}]},
    {"must": [{"key": "f", "range": {"gte": -5, "lte": 5}}, {"key": "g", "match": {"value": 2}}]},
    {"must": [{"key": "f", "match": {"value": 1}, "range": {"gte": 0}}]},
    {"must": [{"has_id": [1, 5, 9, 400, 10_000]}, {"key": "f", "range": {"gte": -20}}]},
    {"must": [{"must": [{"key": "f", "match": {"value": "a"}}]}]},
]


def _collection(tmp_path: Path, n: int, indexed: bool, seed: int = 5) -> Collection:
    rng = np.random.default_rng(seed)
    coll = Collection.create("c", str(tmp_path / f"c{int(indexed)}"),
                             {"vectors": {"size": 8, "distance": "Cosine"}})
    if indexed:
        coll.create_index("f", "integer")
        coll.create_index("g", "integer")
    x = rng.standard_normal((n, 8)).astype(np.float32)
    apply_body(coll, "upsert", {"batch": {"ids": list(range(n)), "vectors": x,
                                          "payloads": [_payload(rng, i) for i in range(n)]}})
    return coll


@pytest.mark.parametrize("flt", FILTERS, ids=range(len(FILTERS)))
def test_index_rows_are_the_mask_rows(tmp_path: Path, flt: dict[str, Any]) -> None:
    coll = _collection(tmp_path, 700, indexed=True)
    apply_body(coll, "delete", {"points": [3, 10, 17, 24]})
    pred = parse_filter(flt)
    view = coll.view()
    for seg, n in view.segments:
        if not n:
            continue
        table = SegmentTable(view, seg, n)
        want = np.flatnonzero(pred(table) & seg.live_mask(n)[0])
        got = candidate_rows(pred, table)
        assert got is not None
        got = np.unique(got)
        got = got[got < n]
        got = got[seg.live_mask(n)[0][got]]
        assert got.tolist() == want.tolist()
    coll.close()


def test_unindexed_or_disjunctive_filters_use_masks(tmp_path: Path) -> None:
    coll = _collection(tmp_path, 50, indexed=False)
    view = coll.view()
    seg, n = next((s, n) for s, n in view.segments if n)
    table = SegmentTable(view, seg, n)
    assert candidate_rows(parse_filter(FILTERS[0]), table) is None  # no payload index
    for flt in ({"should": [{"key": "f", "match": {"value": 1}}]},
                {"must_not": [{"key": "f", "match": {"value": 1}}]},
                {"must": [{"key": "f", "match": {"text": "a"}}]},
                {"must": [{"key": "f", "match": {"value": True}}]}):
        assert getattr(parse_filter(flt), "rows", None) is None or \
            candidate_rows(parse_filter(flt), table) is None
    coll.close()


def _spec(v: np.ndarray, flt: dict[str, Any] | None = None, **kw: Any) -> query.SearchSpec:
    base: dict[str, Any] = {"limit": 10, "offset": 0, "score_threshold": None,
                            "with_payload": False, "with_vector": False}
    base.update(kw)
    return query.SearchSpec(vector=v, using="", pred=parse_filter(flt),
                            filter_key=repr(flt) if flt else "", **base)


def test_selective_filters_search_as_masks_do(tmp_path: Path) -> None:
    """The same searches with and without payload indexes: listed rows vs masks."""
    with_index = _collection(tmp_path, 3000, indexed=True)
    without = _collection(tmp_path, 3000, indexed=False)
    rng = np.random.default_rng(9)
    before = dict(tables.STATS)
    for flt in FILTERS:
        v = rng.standard_normal(8).astype(np.float32)
        for kw in ({}, {"offset": 3, "limit": 4}, {"score_threshold": 0.2},
                   {"with_payload": True}):
            a = query.search_batch(with_index, [_spec(v, flt, **kw)])[0]
            b = query.search_batch(without, [_spec(v, flt, **kw)])[0]
            assert [p["id"] for p in a] == [p["id"] for p in b], flt
            assert [p["score"] for p in a] == pytest.approx([p["score"] for p in b], rel=1e-6)
    assert tables.STATS["index_rows"] > before["index_rows"]
    with_index.close()
    without.close()


def _indexed_collection(tmp_path: Path, n: int, distance: str) -> Collection:
    rng = np.random.default_rng(3)
    coll = Collection.create("h", str(tmp_path / f"h{distance}"), {
        "vectors": {"size": 16, "distance": distance},
        "hnsw_config": {"m": 8, "ef_construct": 64},
        "optimizers_config": {"indexing_threshold": 1}})
    x = rng.standard_normal((n, 16)).astype(np.float32)
    apply_body(coll, "upsert", {"batch": {"ids": list(range(n)), "vectors": x,
                                          "payloads": [{"g": i % 3} for i in range(n)]}})
    while coll.build_pending_index():
        pass
    assert coll.info()["indexed_vectors_count"] == n
    return coll


@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid", "Manhattan"])
def test_single_query_path_matches_the_batch_path(tmp_path: Path, distance: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    coll = _indexed_collection(tmp_path, 1500, distance)
    rng = np.random.default_rng(11)
    calls = {"direct": 0}
    real = search_mod._search_one

    def counting(view: Any, s: Any) -> Any:
        out = real(view, s)
        calls["direct"] += out is not None
        return out

    monkeypatch.setattr(search_mod, "_search_one", counting)
    for kw in ({}, {"offset": 2, "limit": 5}, {"score_threshold": 0.1},
               {"hnsw_ef": 16}, {"with_payload": True, "with_vector": True}, {"limit": 2000}):
        for _ in range(5):
            v = rng.standard_normal(16).astype(np.float32)
            one = query.search_batch(coll, [_spec(v, **kw)])[0]
            # a batch of two never takes the direct path: the general one answers
            pair = query.search_batch(coll, [_spec(v, **kw), _spec(v, **kw)])[0]
            assert [p["id"] for p in one] == [p["id"] for p in pair]
            assert [p["score"] for p in one] == pytest.approx([p["score"] for p in pair],
                                                              rel=1e-5, abs=1e-6)
            assert one == [{**p, "score": q["score"]} for p, q in zip(pair, one, strict=True)]
    assert calls["direct"] == 30
    calls["direct"] = 0
    apply_body(coll, "delete", {"points": [0]})  # deleted rows: the general path
    v = rng.standard_normal(16).astype(np.float32)
    assert 0 not in {p["id"] for p in query.search_batch(coll, [_spec(v, limit=2000)])[0]}
    assert calls["direct"] == 0
    coll.close()


@pytest.mark.parametrize("distance", ["Cosine", "Euclid"])
def test_one_segment_batch_matches_the_general_loop(tmp_path: Path, distance: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch whose hits all lie in one segment is rendered for the whole matrix at once
    (engine/search._one_segment_batch); the per-query loop gives the same records."""
    coll = _indexed_collection(tmp_path, 1500, distance)
    rng = np.random.default_rng(12)
    kws: list[dict[str, Any]] = [{}, {"offset": 2, "limit": 5}, {"hnsw_ef": 16},
                                 {"with_payload": True}, {"with_vector": True},
                                 {"offset": 1498, "limit": 10}, {"limit": 1}]
    calls = {"fast": 0}
    real = search_mod._one_segment_batch

    def counting(*args: Any) -> Any:
        out = real(*args)
        calls["fast"] += out is not None
        return out

    for batch in (kws[:3], kws, [kws[0]] * 4, [kws[3], kws[4]]):
        specs = [_spec(rng.standard_normal(16).astype(np.float32), **kw) for kw in batch]
        monkeypatch.setattr(search_mod, "_one_segment_batch", counting)
        before = calls["fast"]
        fast = query.search_batch(coll, specs)
        assert calls["fast"] > before  # (one call per group of equal hnsw_ef)
        monkeypatch.setattr(search_mod, "_one_segment_batch", lambda *a: None)
        general = query.search_batch(coll, specs)
        assert fast == general
        for s, res in zip(specs, fast, strict=True):  # each alone: the same records
            alone = query.search_batch(coll, [s])[0]
            assert [p["id"] for p in alone] == [p["id"] for p in res]
    # a score threshold (hits dropped) is left to the general loop
    monkeypatch.setattr(search_mod, "_one_segment_batch", counting)
    before = calls["fast"]
    v = rng.standard_normal(16).astype(np.float32)
    thr = 0.999 if distance == "Cosine" else 0.001  # drops hits either way
    query.search_batch(coll, [_spec(v, score_threshold=thr), _spec(v)])
    assert calls["fast"] == before
    coll.close()


def test_single_query_path_checks_input(tmp_path: Path) -> None:
    coll = _indexed_collection(tmp_path, 300, "Cosine")
    from engine.errors import BadInput

    with pytest.raises(BadInput, match="dimension"):
        query.search_batch(coll, [_spec(np.ones(5, np.float32))])
    with pytest.raises(BadInput, match="NaN"):
        query.search_batch(coll, [_spec(np.full(16, np.nan, np.float32))])
    zero = query.search_batch(coll, [_spec(np.zeros(16, np.float32))])[0]
    assert len(zero) == 10 and all(p["score"] == 0 for p in zero)
    coll.close()


def test_selective_filters_rank_as_qdrant(server: Any, collection_name: str) -> None:
    """Through the server: keyword and integer indexes, <= 1 % selectivity, a different
    filter value on every query, against QdrantClient(":memory:")."""
    remote = validating_qdrant_client(server.url, timeout=60)
    local = QdrantClient(":memory:")
    rng = np.random.default_rng(21)
    n, dim = 4000, 16
    x = rng.standard_normal((n, dim)).astype(np.float32)
    payloads = [{"cat": f"c{i % 200}", "r": int(i * 7919 % n), "tags": [i % 300, i % 301]}
                for i in range(n)]
    for c in (remote, local):
        c.create_collection(collection_name, vectors_config=models.VectorParams(
            size=dim, distance=models.Distance.COSINE))
        c.upsert(collection_name, points=models.Batch(ids=list(range(n)), vectors=x.tolist(),
                                                      payloads=payloads))
        c.create_payload_index(collection_name, "cat", models.PayloadSchemaType.KEYWORD)
        c.create_payload_index(collection_name, "r", models.PayloadSchemaType.INTEGER)
        c.create_payload_index(collection_name, "tags", models.PayloadSchemaType.INTEGER)
    c.delete(collection_name, points_selector=models.PointIdsList(points=[5, 205]))
    remote.delete(collection_name, points_selector=models.PointIdsList(points=[5, 205]))
    for i in range(12):
        q = rng.standard_normal(dim).tolist()
        a = int(rng.integers(0, n - 40))
        flt = [models.Filter(must=[models.FieldCondition(
                   key="cat", match=models.MatchValue(value=f"c{i * 7 % 200}"))]),
               models.Filter(must=[models.FieldCondition(
                   key="r", range=models.Range(gte=a, lt=a + 40))]),
               models.Filter(must=[models.FieldCondition(
                   key="tags", match=models.MatchAny(any=[i, i + 100]))])][i % 3]
        got = remote.query_points(collection_name, query=q, query_filter=flt, limit=10).points
        want = local.query_points(collection_name, query=q, query_filter=flt, limit=10).points
        assert_same_ranking(got, want)
    remote.delete_collection(collection_name)
    remote.contract.assert_ok()
    remote.close()
    local.close()


@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid", "Manhattan"])
def test_listed_single_query_matches_the_batch_path(tmp_path: Path, distance: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A single query whose filter the payload indexes list (engine/search._listed_one:
    gather, GEMV, 1-D top-k per segment, merged) returns the general batch path's records,
    over several segments (some indexed, deleted rows), and falls back where it must."""
    rng = np.random.default_rng(17)
    coll = Collection.create("s", str(tmp_path / distance), {
        "vectors": {"size": 16, "distance": distance},
        "hnsw_config": {"m": 8, "ef_construct": 32, "full_scan_threshold": 10},
        "optimizers_config": {"indexing_threshold": 1, "max_segment_size": 40}})
    coll.create_index("r", "integer")
    coll.create_index("g", "keyword")
    n = 2400
    for start in range(0, n, 600):  # several segments, the last ones not yet indexed
        x = rng.standard_normal((600, 16)).astype(np.float32)
        apply_body(coll, "upsert", {"batch": {
            "ids": list(range(start, start + 600)), "vectors": x,
            "payloads": [{"r": int(i * 7919 % n), "g": f"g{i % 40}"}
                         for i in range(start, start + 600)]}})
        if start < 1200:
            while coll.build_pending_index():
                pass
    apply_body(coll, "delete", {"points": list(range(0, n, 37))})
    assert sum(1 for _, m in coll.view().segments if m) > 1
    calls = {"direct": 0}
    real = search_mod._listed_one

    def counting(*args: Any) -> Any:
        out = real(*args)
        calls["direct"] += out is not None
        return out

    monkeypatch.setattr(search_mod, "_listed_one", counting)
    for kw in ({}, {"offset": 2, "limit": 5}, {"score_threshold": 0.1}, {"limit": 500},
               {"with_payload": True, "with_vector": True}, {"exact": True}):
        for i in range(4):
            v = rng.standard_normal(16).astype(np.float32)
            a = int(rng.integers(0, n - 30))
            flt = [{"must": [{"key": "r", "range": {"gte": a, "lt": a + 24}}]},
                   {"must": [{"key": "g", "match": {"value": f"g{i}"}}]},
                   {"must": [{"key": "r", "range": {"gte": a, "lt": a + 24}},
                             {"key": "g", "match": {"any": ["g1", "g2", "g3"]}}]},
                   {"must": [{"key": "r", "match": {"value": a}}]}][i]
            monkeypatch.setattr(search_mod, "_listed_one", counting)
            one = query.search_batch(coll, [_spec(v, flt, **kw)])[0]
            monkeypatch.setattr(search_mod, "_listed_one", lambda *a: None)
            general = query.search_batch(coll, [_spec(v, flt, **kw)])[0]
            assert one == general, (kw, flt)  # bit-identical: the same similarity call
            pair = query.search_batch(coll, [_spec(v, flt, **kw), _spec(v, flt, **kw)])[0]
            assert [p["id"] for p in one] == [p["id"] for p in pair]  # (a GEMM: last bits)
    assert calls["direct"] == 24
    monkeypatch.setattr(search_mod, "_listed_one", counting)
    # a filter the indexes cannot list, and a wide one the graph serves: the general path
    calls["direct"] = 0
    v = rng.standard_normal(16).astype(np.float32)
    for flt in ({"must_not": [{"key": "r", "range": {"lt": 10}}]},
                {"must": [{"key": "r", "range": {"gte": 0}}]}):
        query.search_batch(coll, [_spec(v, flt, limit=20)])
    assert calls["direct"] == 0
    with pytest.raises(Exception, match="dimension"):  # refused even when nothing matches
        query.search_batch(coll, [_spec(np.ones(5, np.float32),
                                        {"must": [{"key": "r", "match": {"value": -1}}]})])
    coll.close()
