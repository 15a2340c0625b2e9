"""Quiver's own HNSW walk (engine/_hnsw_walk.c) against faiss's walk over the same graph:
the same ids and scores for single queries and batches, inner product and L2, padding when
fewer than k are reachable, threads, a recovered graph, and arguments it must refuse. The
HTTP tests (test_ann.py and the API suites) go through it too: every unfiltered search of an
indexed host segment does."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from c_modules import toolchain

from engine import ann

pytestmark = pytest.mark.skipif(not ann.available(), reason="faiss-cpu not installed")
needs_walk = pytest.mark.skipif(ann._hnsw_walk is None, reason="engine._hnsw_walk not built")


def data(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d))
    x = centres[rng.integers(0, 20, n)] + 0.5 * rng.standard_normal((n, d))
    return x.astype(np.float32)


def faiss_walk(index: ann.HnswIndex, q: np.ndarray, k: int, ef: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """faiss's own search of the same index (what HnswIndex did before the walker)."""
    params = ann.faiss.SearchParametersHNSW()
    params.efSearch = ef
    ann.faiss.omp_set_num_threads(1)
    return index.index.search(np.ascontiguousarray(q), k, params=params)


def test_the_walk_is_built_where_a_compiler_is() -> None:
    """`pip install` builds it (setup.py); a silent build failure would cost every query."""
    if not toolchain():
        pytest.skip("no C compiler or Python headers here: Quiver runs on faiss's walk")
    assert ann._hnsw_walk is not None
    x = data(500, 8, 0)
    assert ann.HnswIndex.build(x, "ip", 8, 40).walker is not None


@needs_walk
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_same_results_as_faiss(metric: str) -> None:
    x = data(4000, 24, 1)
    if metric == "ip":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = data(200, 24, 2)
    index = ann.HnswIndex.build(x, metric, 16, 64)
    assert index.walker is not None
    for ef in (10, 32, 100):
        dist, ids = faiss_walk(index, q, 10, ef)
        sim_ref = dist if metric == "ip" else -np.sqrt(np.maximum(dist, 0.0))
        # search_one answers in this thread's buffers: copy each before the next query
        one = [tuple(a.copy() for a in index.search_one(np.ascontiguousarray(v), 10, ef))
               for v in q]
        sims = np.stack([s for s, _ in one])
        rows = np.stack([r for _, r in one])
        # the same walk: equal ids (a tie may swap two neighbours), scores to float rounding
        assert (rows == ids).mean() > 0.995, ef
        np.testing.assert_allclose(np.sort(sims, axis=1), np.sort(sim_ref, axis=1),
                                   rtol=1e-5, atol=1e-5)
        batch_sims, batch_rows = index.search(q, 10, ef, None)  # split across the cores
        np.testing.assert_array_equal(batch_rows, rows)
        np.testing.assert_array_equal(batch_sims, sims)


@needs_walk
def test_recall_matches_exact_search() -> None:
    x = data(3000, 16, 3)
    q = data(100, 16, 4)
    index = ann.HnswIndex.build(x, "l2", 16, 100)
    _, rows = index.search(q, 10, 128, None)
    d2 = ((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    truth = np.argsort(d2, axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), truth.tolist(),
                                                                strict=True)])
    assert recall > 0.97


@needs_walk
def test_fewer_reachable_than_k_are_padded() -> None:
    x = data(6, 4, 5)
    index = ann.HnswIndex.build(x, "ip", 4, 16)
    sims, rows = index.search(data(3, 4, 6), 10, 16, None)  # k clipped to the 6 rows
    assert rows.shape == (3, 6) and (rows >= 0).all()
    walker = index.walker
    d = np.empty(9, np.float32)
    i = np.empty(9, np.int64)
    found = walker.search(np.ascontiguousarray(x[0]), 9, 16, d, i)
    assert found == 6
    assert (i[6:] == -1).all() and np.isneginf(d[6:]).all()
    assert sorted(i[:6].tolist()) == list(range(6))


@needs_walk
def test_threads_share_an_index() -> None:
    x = data(3000, 16, 7)
    q = data(64, 16, 8)
    index = ann.HnswIndex.build(x, "ip", 16, 64)
    want = [index.search_one(np.ascontiguousarray(v), 10, 50)[1].copy() for v in q]
    errors: list[str] = []

    def worker() -> None:
        for _ in range(5):
            for v, w in zip(q, want, strict=True):
                got = index.search_one(np.ascontiguousarray(v), 10, 50)[1]
                if not np.array_equal(got, w):
                    errors.append("different result under threads")
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@needs_walk
def test_a_recovered_graph_walks_the_same() -> None:
    x = data(2000, 16, 9)
    q = data(50, 16, 10)
    built = ann.HnswIndex.build(x, "ip", 16, 64)
    again = ann.HnswIndex.from_graph(x, built.graph(), "ip", 16, 64)
    assert again.walker is not None
    np.testing.assert_array_equal(built.search(q, 10, 40, None)[1],
                                  again.search(q, 10, 40, None)[1])


@needs_walk
def test_bad_arguments_are_refused() -> None:
    x = data(100, 8, 11)
    walker = ann.HnswIndex.build(x, "ip", 8, 32).walker
    d, i = np.empty(10, np.float32), np.empty(10, np.int64)
    with pytest.raises(ValueError):
        walker.search(np.zeros(7, np.float32), 10, 20, d, i)  # not a whole d-float row
    with pytest.raises(ValueError):
        walker.search(np.zeros(8, np.float64), 10, 20, d, i)  # float64
    with pytest.raises(ValueError):
        walker.search(np.zeros(8, np.int32), 10, 20, d, i)  # 4-byte items, not floats
    with pytest.raises(ValueError):
        walker.search(np.zeros(8, np.float32), 10, 20, d, i.view(np.float64))  # not int64
    with pytest.raises(ValueError):
        walker.search(np.zeros(8, np.float32), 10, 5, d, i)  # ef < k
    with pytest.raises(ValueError):
        walker.search(np.zeros(16, np.float32), 10, 20, d, i)  # two queries, room for one
    with pytest.raises(TypeError):
        walker.search(np.zeros(8, np.float32), 10, 20, d)
    with pytest.raises(ValueError):
        ann._hnsw_walk.Walker(vectors=1, n=10, d=8, neighbors=1, offsets=1, cum=[0],
                              entry=0, max_level=0, metric=0, owner=None)  # no level 0
    with pytest.raises(ValueError):
        ann._hnsw_walk.Walker(vectors=1, n=10, d=8, neighbors=1, offsets=1, cum=[0, 8],
                              entry=10, max_level=0, metric=0, owner=None)  # entry >= n


def test_l1_and_the_switch_stay_on_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    x = data(300, 8, 12)
    assert ann.HnswIndex.build(x, "l1", 8, 32).walker is None
    monkeypatch.setenv("QUIVER_HNSW_WALK", "0")
    index = ann.HnswIndex.build(x, "ip", 8, 32)
    assert index.walker is None
    sims, rows = index.search_one(np.ascontiguousarray(x[0]), 5, 16)
    assert rows[0] == 0 or sims[0] >= float(x[0] @ x[0]) - 1e-4


@needs_walk
def test_a_graph_the_walker_does_not_take_is_walked_by_faiss(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Level-0 lists longer than the walker's 2048 (m > 1024, which Quiver refuses anyway)
    are refused by the Walker; the index then walks through faiss instead of failing."""
    with pytest.raises(ValueError):
        ann._hnsw_walk.Walker(vectors=1, n=10, d=8, neighbors=1, offsets=1, cum=[0, 4096],
                              entry=0, max_level=0, metric=0, owner=None)

    def refuse(**kw: object) -> None:
        raise ValueError("Walker: level degree out of range")
    monkeypatch.setattr(ann._hnsw_walk, "Walker", refuse)
    x = data(300, 8, 13)
    index = ann.HnswIndex.build(x, "ip", 8, 32)
    assert index.walker is None
    assert index.search_one(np.ascontiguousarray(x[5]), 3, 16)[1][0] >= 0


@pytest.mark.parametrize("m", [8, 9, 31, 500, 4097])
@pytest.mark.parametrize("cores", [2, 4, 16])
def test_a_batch_is_split_into_shrinking_chunks(m: int, cores: int) -> None:
    """`_guided`: contiguous chunks covering every query once, each a share of what is left
    (never below 4 but for the last), so the threads finish together."""
    chunks = ann._guided(m, cores)
    assert chunks[0][0] == 0 and chunks[-1][1] == m
    assert all(a == b_prev for (_, b_prev), (a, _) in zip(chunks, chunks[1:], strict=False))
    sizes = [b - a for a, b in chunks]
    assert all(s >= 4 for s in sizes[:-1]) and sizes[-1] >= 1
    assert sizes == sorted(sizes, reverse=True) or sizes[:-1] == sorted(sizes[:-1],
                                                                        reverse=True)
    assert sizes[0] == max(4, m // (2 * cores))


@needs_walk
@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("cores", [2, 4])
def test_a_batch_hands_every_chunk_over_once_in_order(metric: str, cores: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`on_chunk` sees rows 0..m in order, each once, with the final results, from the
    calling thread; the batch equals single walks, with or without `on_chunk`."""
    monkeypatch.setattr(ann, "_CORES", cores)
    x = data(3000, 16, 21)
    q = data(300, 16, 22)
    index = ann.HnswIndex.build(x, metric, 16, 64)
    seen: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    caller = threading.get_ident()

    def on_chunk(a: int, b: int, sims: np.ndarray, rows: np.ndarray) -> None:
        assert threading.get_ident() == caller
        seen.append((a, b, sims.copy(), rows.copy()))
    sims, rows = index.search(q, 10, 40, None, on_chunk)
    assert [a for a, _, _, _ in seen] == [0] + [b for _, b, _, _ in seen[:-1]]
    assert seen[-1][1] == len(q) and len(seen) == len(ann._guided(len(q), cores))
    np.testing.assert_array_equal(np.concatenate([s for _, _, s, _ in seen]), sims)
    np.testing.assert_array_equal(np.concatenate([r for _, _, _, r in seen]), rows)
    plain_sims, plain_rows = index.search(q, 10, 40, None)
    np.testing.assert_array_equal(plain_rows, rows)
    np.testing.assert_array_equal(plain_sims, sims)
    for i in (0, 7, 299):
        one_sims, one_rows = index.search_one(np.ascontiguousarray(q[i]), 10, 40)
        np.testing.assert_array_equal(one_rows, rows[i])
        np.testing.assert_array_equal(one_sims, sims[i])


@needs_walk
def test_a_failing_consumer_leaves_the_index_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ann, "_CORES", 2)
    x = data(2000, 8, 23)
    q = data(200, 8, 24)
    index = ann.HnswIndex.build(x, "ip", 8, 32)

    def on_chunk(a: int, b: int, sims: np.ndarray, rows: np.ndarray) -> None:
        raise RuntimeError("consumer failed")
    with pytest.raises(RuntimeError, match="consumer failed"):
        index.search(q, 10, 32, None, on_chunk)
    np.testing.assert_array_equal(index.search(q, 10, 32, None)[1],
                                  index.search(q, 10, 32, None, lambda *a: None)[1])


@needs_walk
def test_small_batches_and_faiss_walks_hand_over_one_chunk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    x = data(500, 8, 25)
    q = data(20, 8, 26)
    for metric, switch in (("ip", "1"), ("l1", "1"), ("ip", "0")):
        monkeypatch.setenv("QUIVER_HNSW_WALK", switch)
        index = ann.HnswIndex.build(x, metric, 8, 32)
        for m in (1, 7, 20):
            seen: list[tuple[int, int]] = []

            def on_chunk(a: int, b: int, s: np.ndarray, r: np.ndarray,
                         seen: list[tuple[int, int]] = seen) -> None:
                seen.append((a, b))
            index.search(q[:m], 5, 32, None, on_chunk)
            if index.walker is None or m < 8:
                assert seen == [(0, m)]
            assert seen[0][0] == 0 and seen[-1][1] == m
            seen.clear()
            index.search(q[:m], 5, 32, np.ones(500, bool), on_chunk)
            assert seen == []  # a masked search is not the segment's answer: never handed over


@needs_walk
def test_run_and_ready_refuse_bad_schedules() -> None:
    x = data(300, 8, 27)
    walker = ann.HnswIndex.build(x, "ip", 8, 32).walker
    q = data(12, 8, 28)
    d, i = np.empty((12, 5), np.float32), np.empty((12, 5), np.int64)
    good = np.array([0, 4, 8, 12], np.int64)
    state = np.zeros(4, np.int64)
    assert walker.run(q, 5, 16, d, i, good, state, 2) == 2
    assert walker.ready(state, 0) == 2 and walker.ready(state, 2) == 0
    assert walker.run(q, 5, 16, d, i, good, state, 5) == 1  # the one chunk left
    assert walker.run(q, 5, 16, d, i, good, state, 5) == 0
    assert walker.ready(state, 0) == 3 and walker.ready(state, 1) == 2
    state[2] = -1
    assert walker.ready(state, 0) == -1  # a failed chunk is reported, not skipped
    before = d.copy()
    for counter in (-1, -(1 << 40)):  # a counter below 0 walks nothing, writes nothing
        below = np.array([counter, 0, 0, 0], np.int64)
        assert walker.run(q, 5, 16, d, i, good, below, 3) == 0
        assert (below[1:] == 0).all()
    np.testing.assert_array_equal(d, before)
    for bounds in (np.array([0, 8, 4, 12], np.int64), np.array([0, 4, 13], np.int64),
                   np.array([-1, 4], np.int64)):
        with pytest.raises(ValueError, match="bounds"):
            walker.run(q, 5, 16, d, i, bounds, np.zeros(len(bounds), np.int64), 1)
    with pytest.raises(ValueError, match="state"):
        walker.run(q, 5, 16, d, i, good, np.zeros(2, np.int64), 1)  # no flag for each chunk
    with pytest.raises(ValueError):
        walker.run(q, 5, 16, d, i, good.astype(np.float64), state, 1)
    with pytest.raises(ValueError):
        walker.run(q, 5, 16, d, i, good, state, -1)
    with pytest.raises(TypeError):
        walker.run(q, 5, 16, d, i, good, state)
    with pytest.raises(TypeError):
        walker.ready(state)
