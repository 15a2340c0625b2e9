"""A plain HNSW batch's records, built chunk by chunk while the graph walk goes on
(engine/search._ChunkRecords through HnswIndex.search's on_chunk), are the general path's,
record for record: every distance, batch sizes around the walk's chunking, a collection
smaller than the limit. Where the general path must decide (offsets, thresholds, payloads,
exclusions, mixed limits, deleted rows, overflowing scores, several segments) the stream
steps aside and the answer is still the general path's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.parse.writes import apply_body
from engine import ann, query
from engine import search as search_mod
from engine.collection import Collection

pytestmark = pytest.mark.skipif(not ann.available(), reason="faiss-cpu not installed")


def _indexed(tmp_path: Path, distance: str, n: int, *, overflow: bool = False,
             segment_kb: int = 1 << 20) -> Collection:
    """n random 16-d points in one HNSW-indexed segment (several with a small segment_kb)."""
    rng = np.random.default_rng(11)
    coll = Collection.create("b", str(tmp_path / f"{distance}{n}{overflow}{segment_kb}"), {
        "vectors": {"size": 16, "distance": distance},
        "hnsw_config": {"m": 8, "ef_construct": 32},
        "optimizers_config": {"indexing_threshold": 1, "max_segment_size": segment_kb}})
    x = rng.standard_normal((n, 16)).astype(np.float32)
    if overflow:
        x[:20] = 1e38  # Dot scores overflow to inf: never a hit on the general path
    step = 100
    for start in range(0, n, step):
        stop = min(n, start + step)
        apply_body(coll, "upsert", {"batch": {"ids": list(range(start, stop)),
                                              "vectors": x[start:stop],
                                              "payloads": [{"n": i} for i in range(start, stop)]}})
    while coll.build_pending_index():
        pass
    return coll


def _spec(v: np.ndarray, **kw: Any) -> query.SearchSpec:
    base: dict[str, Any] = {"limit": 10, "offset": 0, "score_threshold": None,
                            "with_payload": False, "with_vector": False, "hnsw_ef": 40}
    base.update(kw)
    return query.SearchSpec(vector=v, using="", pred=None, **base)


def _both(coll: Collection, specs: list[query.SearchSpec], monkeypatch: pytest.MonkeyPatch
          ) -> tuple[list[Any], list[Any], bool]:
    """(the answer, the general path's answer, whether the stream gave the first)."""
    streamed: list[bool] = []
    real_result = search_mod._ChunkRecords.result

    def result(self: Any) -> Any:
        out = real_result(self)
        streamed.append(out is not None)
        return out
    with monkeypatch.context() as m:
        m.setattr(search_mod._ChunkRecords, "result", result)
        answer = query.search_batch(coll, specs)
    with monkeypatch.context() as m:
        m.setattr(search_mod._ChunkRecords, "of", classmethod(lambda cls, *a: None))
        general = query.search_batch(coll, specs)
    return answer, general, any(streamed)


def _queries(m: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((m, 16)).astype(np.float32)


@pytest.mark.parametrize("distance", ["Cosine", "Dot", "Euclid"])
@pytest.mark.parametrize("m", [8, 9, 64, 300])
def test_streamed_records_are_the_general_paths(tmp_path: Path, distance: str, m: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    coll = _indexed(tmp_path, distance, 1500)
    assert coll.info()["indexed_vectors_count"] == 1500
    for cores in (2, 4):  # more threads than this machine may have: chunks still in order
        monkeypatch.setattr(ann, "_CORES", cores)
        specs = [_spec(v) for v in _queries(m, m + cores)]
        answer, general, streamed = _both(coll, specs, monkeypatch)
        assert streamed
        assert answer == general
        assert all(len(r) == 10 for r in answer)
        assert all(type(r[0]["score"]) is float for r in answer)
    coll.close()


def test_a_collection_smaller_than_the_limit(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    coll = _indexed(tmp_path, "Cosine", 30)
    specs = [_spec(v, limit=50) for v in _queries(40, 3)]
    answer, general, streamed = _both(coll, specs, monkeypatch)
    assert streamed and answer == general
    assert all(len(r) == 30 for r in answer)
    coll.close()


@pytest.mark.parametrize("change", [
    {"offset": 3}, {"score_threshold": 0.1}, {"with_payload": True},
    {"with_vector": True}, {"exclude_ids": (1, 2, 3)}, {"limit": 4},
])
def test_the_stream_steps_aside_where_the_general_path_decides(
        tmp_path: Path, change: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    coll = _indexed(tmp_path, "Cosine", 600)
    q = _queries(32, 5)
    specs = [_spec(v) for v in q[:31]] + [_spec(q[31], **change)]  # one query differs
    answer, general, streamed = _both(coll, specs, monkeypatch)
    assert not streamed
    assert answer == general
    coll.close()


def test_deleted_rows_and_overflowing_scores_leave_it_to_the_general_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    coll = _indexed(tmp_path, "Dot", 600, overflow=True)
    q = np.abs(_queries(24, 6))  # positive: the 1e38 rows score +inf where the walk meets them
    answer, general, streamed = _both(coll, [_spec(v) for v in q], monkeypatch)
    assert not streamed and answer == general
    assert all(r["id"] >= 20 for res in answer for r in res)  # the infinite scores dropped
    seg = next(s for s in coll.segments if s.n)
    rows = np.arange(20, dtype=np.int64).reshape(2, 10)
    sims = np.ones((2, 10), np.float32)
    for bad_sims, bad_rows in ((np.where(rows == 13, np.inf, sims), rows),
                               (sims, np.where(rows == 19, -1, rows))):
        stream = search_mod._ChunkRecords(seg, 4, False, 10)
        stream(0, 2, sims, rows)
        stream(2, 4, bad_sims.astype(np.float32), bad_rows)  # a miss or an overflow: stop
        assert stream.result() is None
    stream = search_mod._ChunkRecords(seg, 4, True, 10)
    stream(0, 2, sims, rows)
    assert stream.result() is None  # rows 2..3 never came
    stream(2, 4, sims, rows)
    assert stream.result()[3][0]["score"] == -1.0  # Euclid's negated similarity
    coll.close()

    coll = _indexed(tmp_path, "Cosine", 600)
    apply_body(coll, "delete", {"points": [0, 1, 2]})
    answer, general, streamed = _both(coll, [_spec(v) for v in _queries(24, 7)], monkeypatch)
    assert not streamed and answer == general
    assert all(r["id"] > 2 for res in answer for r in res)
    coll.close()


def test_several_segments_leave_it_to_the_general_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    coll = _indexed(tmp_path, "Cosine", 1200, segment_kb=20)
    assert sum(1 for s in coll.segments if s.n) > 1
    answer, general, streamed = _both(coll, [_spec(v) for v in _queries(16, 8)], monkeypatch)
    assert not streamed and answer == general
    coll.close()


def _single_and_general(coll: Collection, spec: query.SearchSpec,
                        monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    assert search_mod._search_one(coll.view(), spec) is not None  # the direct path answers
    one = query.search_batch(coll, [spec])[0]
    with monkeypatch.context() as m:
        m.setattr(search_mod, "_search_one", lambda *a: None)
        m.setattr(search_mod, "_tiny_one", lambda *a: None)
        general = query.search_batch(coll, [spec])[0]
    return one, general


def test_a_single_query_drops_overflowing_scores_as_a_batch_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`_search_one` (engine/_records.c `hits`) keeps neither a missing hit nor a score that
    overflowed: the general path's records, offsets counted past the dropped ones. (Dot:
    its huge rows score +inf, first; Euclid's would be last, never among the hits.)"""
    coll = _indexed(tmp_path, "Dot", 600, overflow=True)
    index = next(s for s in coll.segments if s.n).ann[""]
    q = np.abs(_queries(30, 9))
    overflowed = 0
    for v in q:
        raw = index.search_one(search_mod._prepared_one(v, 16, coll.config.vector("")
                                                        .distance), 30, 40)[0]
        overflowed += not np.isfinite(raw).all()
        for kw in ({"limit": 30}, {"limit": 5, "offset": 3}):
            one, general = _single_and_general(coll, _spec(v, **kw), monkeypatch)
            assert one == general
    assert overflowed  # the walk met the huge rows: the drop was exercised
    coll.close()


def test_an_ivf_segment_answers_a_single_query_directly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host segment served by a faiss IVF index (gpu.faiss_index) takes `_search_one`, with
    the general path's records."""
    from engine import ivf  # noqa: PLC0415

    coll = _indexed(tmp_path, "Cosine", 1200)
    seg = next(s for s in coll.segments if s.n)
    x = np.array(seg.host_rows("", seg.n), np.float32)  # the stored (unit) rows
    index = ivf.IvfIndex.build(x, "ip", ivf.IvfSpec("ivf_flat", nlist=16, nprobe=4))
    monkeypatch.setitem(seg.ann, "", index)
    for v in _queries(20, 10):
        for kw in ({}, {"offset": 2}, {"with_payload": True}, {"score_threshold": 0.2}):
            one, general = _single_and_general(coll, _spec(v, **kw), monkeypatch)
            assert one == general
            assert len(one) > 0
    coll.close()


def test_concurrent_batches_share_the_pool(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches from several request threads at once (one walker pool between them): each
    gets its own records, the same as alone."""
    import threading  # noqa: PLC0415

    monkeypatch.setattr(ann, "_CORES", 2)
    coll = _indexed(tmp_path, "Cosine", 1500)
    batches = [[_spec(v) for v in _queries(40 + 7 * i, 20 + i)] for i in range(6)]
    alone = [query.search_batch(coll, specs) for specs in batches]
    errors: list[str] = []

    def worker(i: int) -> None:
        for _ in range(5):
            if query.search_batch(coll, batches[i]) != alone[i]:
                errors.append(f"batch {i} differs under threads")
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    coll.close()
