"""engine/recommend.py: the example-vector math against qdrant-client's local-mode formulas
(qdrant_client.local.distances), on random data, for every distance."""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import models
from qdrant_client.local import distances as ql

from engine.distance import DISTANCES
from engine.errors import BadInput
from engine.recommend import ExampleQuery, average_vector, check_examples, score, similarities

NAMES = ["Cosine", "Dot", "Euclid", "Manhattan"]


def _data(dist: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((500, 16)).astype(np.float32)
    rows = DISTANCES[dist].prepare(rows)  # as stored
    return (rows, rng.standard_normal((4, 16)).astype(np.float32),
            rng.standard_normal((3, 16)).astype(np.float32),
            rng.standard_normal(16).astype(np.float32))


def _ours(q: ExampleQuery, dist: str, rows: np.ndarray) -> np.ndarray:
    ex = [q.positive, q.negative] + ([q.target[None]] if q.target is not None else [])
    sims = similarities(DISTANCES[dist], rows, np.concatenate(ex))
    assert sims.shape == (sum(len(e) for e in ex), len(rows))
    return score(q, sims)


@pytest.mark.parametrize("dist", NAMES)
@pytest.mark.parametrize("shape", ["both", "positive_only", "negative_only"])
def test_best_and_sum_scores_match_local_mode(dist: str, shape: str) -> None:
    rows, pos, neg, _ = _data(dist)
    if shape == "positive_only":
        neg = neg[:0]
    if shape == "negative_only":
        pos = pos[:0]
    for strategy, fn in (("best_score", ql.calculate_recommend_best_scores),
                         ("sum_scores", ql.calculate_recommend_sum_scores)):
        want = fn(ql.RecoQuery(positive=pos.tolist(), negative=neg.tolist(),
                               strategy=models.RecommendStrategy(strategy)),
                  rows.copy(), models.Distance(dist))
        got = _ours(ExampleQuery(strategy, pos, neg), dist, rows)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dist", NAMES)
def test_discover_and_context_match_local_mode(dist: str) -> None:
    rows, pos, neg, target = _data(dist, 1)
    pos, neg = pos[:3], neg[:3]
    pairs = [ql.ContextPair(positive=p.tolist(), negative=n.tolist())
             for p, n in zip(pos, neg, strict=True)]
    want = ql.calculate_discovery_scores(ql.DiscoveryQuery(target.tolist(), pairs),
                                         rows.copy(), models.Distance(dist))
    got = _ours(ExampleQuery("discover", pos, neg, target), dist, rows)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    want = ql.calculate_context_scores(ql.ContextQuery(pairs), rows.copy(),
                                       models.Distance(dist))
    got = _ours(ExampleQuery("context", pos, neg), dist, rows)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_average_vector() -> None:
    rng = np.random.default_rng(2)
    pos, neg = rng.standard_normal((5, 8)), rng.standard_normal((2, 8))
    np.testing.assert_allclose(average_vector(pos, neg),
                               2 * pos.mean(axis=0) - neg.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(average_vector(pos, neg[:0]), pos.mean(axis=0), rtol=1e-6)


def test_examples_are_checked() -> None:
    q = ExampleQuery("best_score", np.ones((1, 4), np.float32), np.ones((1, 3), np.float32))
    with pytest.raises(ValueError):  # mismatched shapes cannot even be stacked
        check_examples(q, 4)
    q = ExampleQuery("sum_scores", np.ones((1, 3), np.float32), np.empty((0, 3), np.float32))
    with pytest.raises(BadInput, match="dimension"):
        check_examples(q, 4)
    q = ExampleQuery("sum_scores", np.full((1, 4), np.nan, np.float32),
                     np.empty((0, 4), np.float32))
    with pytest.raises(BadInput, match="NaN"):
        check_examples(q, 4)


def test_average_sparse_and_multi_match_local_mode() -> None:
    from qdrant_client.local import sparse_distances as qs

    from engine.multivector import MultiVector
    from engine.recommend import average_multi, average_sparse
    from engine.sparse import SparseVector

    rng = np.random.default_rng(4)

    def sparse() -> SparseVector:
        idx = np.sort(rng.choice(30, int(rng.integers(1, 9)), replace=False)).astype(np.uint32)
        return SparseVector(idx, rng.standard_normal(len(idx)).astype(np.float32))

    pos, neg = [sparse() for _ in range(4)], [sparse() for _ in range(2)]

    def q(v: SparseVector) -> models.SparseVector:
        return models.SparseVector(indices=v.indices.tolist(), values=v.values.tolist())

    for negs in (neg, []):
        want = qs.sparse_avg([q(v) for v in pos])
        if negs:
            want = qs.merge_positive_and_negative_avg(want, qs.sparse_avg([q(v) for v in negs]))
        got = average_sparse(pos, negs)
        assert got.indices.tolist() == want.indices
        np.testing.assert_allclose(got.values, want.values, rtol=1e-5, atol=1e-6)
    a, b = rng.standard_normal((2, 4)), rng.standard_normal((3, 4))
    got_m = average_multi([MultiVector(a)], [MultiVector(b)])
    np.testing.assert_allclose(got_m.tokens, np.concatenate([a, -b]), rtol=1e-6)


@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid"])
def test_graph_candidates_recall(tmp_path, monkeypatch, distance: str) -> None:
    """With an HNSW graph, best_score and sum_scores score the graph neighbours of
    their leads: recall@10 against the exact scan (`params.exact`) stays high, every hit's
    score is its exact score, and a filter and the unindexed tail are honoured."""
    from api.parse.reads import query_request
    from api.parse.writes import apply_body
    from engine.collection import Collection
    from engine.query import query_points
    from gpu.device import HOST

    monkeypatch.setattr("engine.collection.default_device", lambda: HOST)  # the host graph
    coll = Collection.create("g", str(tmp_path / "g"), {
        "vectors": {"size": 16, "distance": distance},
        "optimizers_config": {"indexing_threshold": 50}, "hnsw_config": {"m": 16}})
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((20, 16))
    x = (centers[rng.integers(0, 20, 4000)] + 0.3 * rng.standard_normal((4000, 16)))
    for s in range(0, 4000, 1000):
        apply_body(coll, "upsert", {"batch": {
            "ids": list(range(s, s + 1000)), "vectors": x[s:s + 1000].tolist(),
            "payloads": [{"odd": i % 2} for i in range(s, s + 1000)]}})
    while coll.build_pending_index():
        pass
    assert any(seg.ann for seg in coll.segments)
    apply_body(coll, "upsert", {"points": [{"id": 5000 + i, "vector": x[i].tolist(),
                                            "payload": {"odd": 1}} for i in range(30)]})
    hits = total = 0
    for t in range(12):
        ex = rng.choice(4000, 8, replace=False).tolist()
        kind = ("best_score", "sum_scores", "discover")[t % 3]
        q: dict = ({"recommend": {"positive": ex[:5], "negative": ex[5:7], "strategy": kind}}
                   if kind != "discover" else {"discover": {"target": ex[0], "context": [
                       {"positive": ex[1], "negative": ex[2]}]}})
        body = {"query": q, "limit": 10, "with_payload": True}
        if t % 4 == 3:
            body["filter"] = {"must": [{"key": "odd", "match": {"value": 1}}]}
        graph = query_points(coll, [query_request(coll, body)])[0]
        exact = query_points(coll, [query_request(coll, {**body, "params": {"exact": True}})])[0]
        truth = {p["id"]: p["score"] for p in exact}
        full = query_points(coll, [query_request(coll, {**body, "limit": 4030, "params": {
            "exact": True}})])[0]
        every = {p["id"]: p["score"] for p in full}
        for p in graph:
            assert p["score"] == pytest.approx(every[p["id"]], rel=1e-5, abs=1e-6)
            assert "filter" not in body or p["payload"]["odd"] == 1
            assert p["id"] not in ex
        hits += len(truth.keys() & {p["id"] for p in graph})
        total += len(truth)
    assert hits / total >= 0.9, hits / total
    coll.close()
