"""Multivectors in the engine: config, validation, token rows (append, freeze, compact),
WAL records, MaxSim against a per-point numpy reference, and a collection's search through
writes, deletes, vector updates, restarts (WAL replay, flushed files), vacuum and snapshot
recovery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lifecycle import replay_vacuum_snapshot

from api.parse.vectors import parse_query_vector
from api.parse.writes import apply_body
from engine.catalog import Catalog
from engine.config import apply_update, parse_create
from engine.errors import BadInput, BadRequest
from engine.multi_search import segment_scores
from engine.multivector import MultiBatch, MultiStore, MultiVector, checked_batch
from engine.operations import MultiRows, Upsert, from_record, to_record
from engine.plan import RetrieveRequest, SearchSpec
from engine.query import retrieve, search_batch
from engine.segment import Segment

MV = {"comparator": "max_sim"}


def _cfg(distance: str = "Cosine", **extra: Any) -> dict[str, Any]:
    return {"vectors": {"d": {"size": 3, "distance": "Dot"},
                        "m": {"size": 4, "distance": distance, "multivector_config": MV, **extra}},
            "optimizers_config": {"vacuum_min_vector_number": 100}}


# ---- config and validation --------------------------------------------------------------------


def test_config_splits_multivectors_and_echoes() -> None:
    cfg = parse_create(_cfg(hnsw_config={"m": 0}))
    assert set(cfg.vectors) == {"d"} and set(cfg.multivectors) == {"m"}
    assert cfg.to_json()["params"]["vectors"]["m"]["multivector_config"] == MV
    assert cfg.search_name("m") == "m"
    single = parse_create({"vectors": {"size": 2, "distance": "Dot", "multivector_config": MV}})
    assert set(single.multivectors) == {""} and not single.vectors
    updated = apply_update(cfg, {"vectors": {"m": {"on_disk": True}}})
    assert updated.multivectors["m"].size == 4


@pytest.mark.parametrize("extra, word", [
    ({"datatype": "uint8"}, "datatype"), ({"datatype": "float16"}, "datatype"),
    ({"hnsw_config": {"m": 16}}, "HNSW"), ({"multivector_config": {"comparator": "x"}}, "comp"),
    ({"quantization_config": {"scalar": {"type": "int8"}}}, "quantization"),
])
def test_config_refuses_what_is_not_implemented(extra: dict[str, Any], word: str) -> None:
    with pytest.raises(BadRequest, match=word):
        parse_create(_cfg(**extra))
    with pytest.raises(BadRequest, match="Manhattan"):
        parse_create(_cfg("Manhattan"))
    with pytest.raises(BadRequest, match="HNSW"):
        apply_update(parse_create(_cfg()), {"vectors": {"m": {"hnsw_config": {"m": 8}}}})


@pytest.mark.parametrize("rows", [[[]], [[[1, 2]]], [[[1, 2, 3, 4], [1, 2]]], [[[1, 2, 3, None]]],
                                  [[[1, 2, 3, float("nan")]]], [[[1, 2, 3, "4"]]], [[1, 2, 3, 4]],
                                  [[[1, 2, 3, True]]]])
def test_checked_batch_refuses(rows: list[Any]) -> None:
    with pytest.raises(Exception, match="(?i)multivector|dimension|NaN|number|empty"):
        checked_batch(rows, 4, "m")


def test_query_vector_kinds() -> None:
    cfg = parse_create(_cfg())
    q = parse_query_vector([[1, 2, 3, 4], [0, 0, 1, 0]], "m", cfg)
    assert isinstance(q, MultiVector) and q.tokens.shape == (2, 4)
    assert parse_query_vector([1, 2, 3, 4], "m", cfg).tokens.shape == (1, 4)  # type: ignore
    with pytest.raises(BadInput, match="not a multivector"):
        parse_query_vector([[1, 2, 3]], "d", cfg)
    with pytest.raises(BadInput, match="dimension"):
        parse_query_vector([[1, 2, 3]], "m", cfg)


# ---- token rows -------------------------------------------------------------------------------


def _batch(rows: list[np.ndarray], dim: int = 4) -> MultiBatch:
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    toks = np.concatenate(rows).astype(np.float32) if rows else np.empty((0, dim), np.float32)
    return MultiBatch(offsets, toks)


def test_store_append_freeze_compact() -> None:
    rng = np.random.default_rng(0)
    rows = [rng.random((int(rng.integers(1, 5)), 4)).astype(np.float32) for _ in range(40)]
    seg = Segment(0, {}, np, capacity=4, multi=parse_create(_cfg()).multivectors)
    for lo in range(0, 40, 10):  # grows several times
        pos = np.arange(0, 10, 2, dtype=np.int64)  # every other point has the vector
        seg.append(list(range(lo, lo + 10)), np.zeros(10, seg.id_recs.dtype),
                   {}, [{} for _ in range(10)], 1,
                   multi={"m": (pos[::-1].copy(), _batch([rows[lo + p] for p in pos[::-1]]))})
    have = [i for i in range(40) if i % 2 == 0]
    assert seg.present["m"][:40].tolist() == [i % 2 == 0 for i in range(40)]
    got = seg.multi_of("m", np.array(have))
    for j, i in enumerate(have):
        np.testing.assert_array_equal(got.row(j), rows[i])
    fz = seg.freeze()
    assert len(fz.multi["m"]) == 40 and len(fz.multi["m"].row(1)) == 0
    seg.delete_rows(np.array([0, 2, 3]))
    comp = Segment.compacted(seg, 1)
    assert comp.n == 37
    np.testing.assert_array_equal(comp.multi_of("m", np.array([1])).row(0), rows[4])


def _reference(query: np.ndarray, doc: np.ndarray, distance: str) -> float:
    if distance == "Cosine":
        query = query / np.linalg.norm(query, axis=1, keepdims=True)
        doc = doc / np.linalg.norm(doc, axis=1, keepdims=True)
    if distance == "Euclid":
        sims = [[-float(np.sum((q - t) ** 2)) for t in doc] for q in query]
        return float(np.sqrt(abs(sum(max(s) for s in sims))))
    return float(sum(max(float(q @ t) for t in doc) for q in query))


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("filtered", [False, True])
@pytest.mark.parametrize("chunk", [1 << 26, 40])  # one GEMM, or many small ones
def test_segment_maxsim_matches_per_point_reference(metric: str, filtered: bool, chunk: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.multi_search.CHUNK", chunk)
    rng = np.random.default_rng(1)
    rows = [rng.normal(size=(int(rng.integers(1, 9)), 4)).astype(np.float32) if i % 7
            else np.empty((0, 4), np.float32) for i in range(60)]  # some points without it
    store = MultiStore.load(_batch(rows), 4, 60)
    seg: Any = type("S", (), {"multi": {"m": store}})()
    q = rng.normal(size=(5, 4)).astype(np.float32)
    mask = (rng.random(60) < (0.2 if filtered else 1.0)) & (np.arange(60) % 7 > 0)
    got_rows, sums = segment_scores(seg, 60, "m", q, metric, mask, int(mask.sum()))
    assert got_rows.tolist() == np.flatnonzero(mask).tolist()
    dist = "Dot" if metric == "ip" else "Euclid"
    want = [_reference(q, rows[r], dist) for r in got_rows]
    got = sums if metric == "ip" else np.sqrt(np.abs(sums))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_wal_record_round_trip() -> None:
    b = _batch([np.ones((2, 4)), np.zeros((1, 4))])
    op = Upsert([1, 2], {}, [{}, {}], multi={"m": MultiRows(np.array([1, 0]), b)})
    back = from_record(to_record(op))
    assert isinstance(back, Upsert)
    np.testing.assert_array_equal(back.multi["m"].rows.tokens, b.tokens)
    assert back.multi["m"].positions.tolist() == [1, 0]
    assert "m:m" not in to_record(Upsert([1], {}, [{}]))["arrays"]  # old layout unchanged


# ---- a collection through its life -----------------------------------------------------------


def _points(rng: np.random.Generator, ids: range) -> dict[int, np.ndarray]:
    return {i: rng.normal(size=(int(rng.integers(1, 6)), 4)).round(3) for i in ids}


def _upsert(coll: Any, pts: dict[int, np.ndarray]) -> None:
    apply_body(coll, "upsert", {"points": [
        {"id": i, "vector": {"m": v.tolist(), "d": [1.0, 0.0, float(i)]}, "payload": {"g": i % 3}}
        for i, v in pts.items()]})


def _search(coll: Any, q: np.ndarray, limit: int, flt: Any = None) -> list[tuple[int, float]]:
    from engine.filters import parse_filter  # noqa: PLC0415

    spec = SearchSpec(parse_query_vector(q.tolist(), "m", coll.config), "m",  # type: ignore
                      parse_filter(flt), limit, 0, None, False, False, filter_key=json.dumps(flt))
    return [(h["id"], h["score"]) for h in search_batch(coll, [spec])[0]]


def _check(coll: Any, pts: dict[int, np.ndarray], distance: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for flt, keep in ((None, None), ({"must": [{"key": "g", "match": {"value": 1}}]}, 1)):
        q = rng.normal(size=(3, 4))
        ref = [(p, _reference(q, v, distance)) for p, v in pts.items()
               if keep is None or p % 3 == keep]
        ref.sort(key=lambda x: x[1] if distance == "Euclid" else -x[1])
        got = _search(coll, q, 7, flt)
        assert [g[0] for g in got] == [r[0] for r in ref[:7]]
        assert [g[1] for g in got] == pytest.approx([r[1] for r in ref[:7]], rel=1e-4)


@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid"])
def test_collection_search_through_its_life(tmp_path: Path, distance: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.collection.SEGMENT_MAX_BYTES", 6000)
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    coll = cat.create("c", _cfg(distance))
    rng = np.random.default_rng(3)
    pts = _points(rng, range(200))
    for lo in range(0, 200, 50):
        _upsert(coll, {i: pts[i] for i in range(lo, lo + 50)})
        _check(coll, {i: pts[i] for i in range(lo + 50)}, distance, lo)
    assert len(coll.segments) >= 2
    apply_body(coll, "delete", {"points": list(range(0, 200, 4))})
    apply_body(coll, "delete_vectors", {"points": [1, 2, 3], "vector": ["m"]})
    new = _points(rng, range(5, 60, 6))
    apply_body(coll, "update_vectors", {"points": [{"id": i, "vector": {"m": v.tolist()}}
                                                   for i, v in new.items()]})
    for i in [*range(0, 200, 4), 1, 2, 3]:
        pts.pop(i, None)
    pts.update(new)
    _check(coll, pts, distance, 10)
    got = retrieve(coll, RetrieveRequest([7, 1], False, ["m"]))
    assert got[1] == {"id": 1, "vector": {}}
    np.testing.assert_allclose(got[0]["vector"]["m"],
                               pts[7] / (np.linalg.norm(pts[7], axis=1, keepdims=True)
                                         if distance == "Cosine" else 1), rtol=1e-5)
    replay_vacuum_snapshot(tmp_path, cat, pts, lambda c, p, seed: _check(c, p, distance, seed),
                           _upsert, _points(rng, range(200, 230)), 11)


def test_mixed_with_dense_and_sparse_in_every_form(tmp_path: Path) -> None:
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    coll = cat.create("c", {**_cfg("Dot"), "sparse_vectors": {"s": {}}})
    m1, m2 = [[1, 0, 0, 0], [0, 2, 0, 0]], [[0, 0, 3, 0]]
    apply_body(coll, "upsert", {"points": [
        {"id": 1, "vector": {"d": [1, 2, 3], "m": m1, "s": {"indices": [4], "values": [1]}}},
        {"id": 2, "vector": {"m": m2}}, {"id": 3, "vector": {"d": [0, 0, 1]}}]})
    apply_body(coll, "upsert", {"batch": {"ids": [4, 5], "vectors": {"m": [m2, m1]}}})
    got = {p["id"]: p["vector"] for p in retrieve(coll, RetrieveRequest([1, 2, 3, 4, 5], False,
                                                                        True))}
    assert got[1] == {"d": [1.0, 2.0, 3.0], "m": m1, "s": {"indices": [4], "values": [1.0]}}
    assert got[2] == {"m": m2} and got[3] == {"d": [0.0, 0.0, 1.0]} and got[5] == {"m": m1}
    hits = _search(coll, np.array([[0, 1, 1, 0]]), 10)
    assert hits == [(2, 3.0), (4, 3.0), (1, 2.0), (5, 2.0)]
    from engine.filters import parse_filter  # noqa: PLC0415

    flt = parse_filter({"must": [{"has_vector": "m"}]})
    spec = SearchSpec(parse_query_vector([1, 1, 1], "d", coll.config), "d", flt, 10, 0, None,
                      False, False)
    assert [h["id"] for h in search_batch(coll, [spec])[0]] == [1]
    cat.close()
