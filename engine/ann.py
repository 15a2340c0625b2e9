"""HNSW indexes over a segment's leading rows (faiss-cpu), and when to use them.

Rows are immutable once written, so an index built over a segment's first `rows` rows stays
valid while the segment keeps growing: a search asks the index for those rows and scans the
unindexed tail exactly, and results merge like any two segments'. Deleted and filtered-out
rows are excluded inside the graph walk with a faiss IDSelectorBitmap. Indexes are built (and
extended) in the background on a copy, then swapped in with one reference assignment, so
readers and writers never wait for a build.

Qdrant's semantics kept: `indexing_threshold` (KB of vectors; 0 disables indexing) decides
when a segment gets an index; `hnsw_config.m` / `ef_construct` shape it; `params.hnsw_ef`
sets the search beam and `params.exact` bypasses the index; a filter matching fewer vectors
than `full_scan_threshold` (KB) is answered exactly, since a graph walk through mostly
excluded nodes loses recall.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

try:
    import faiss
except ImportError:  # pragma: no cover - the bare GPU image has no faiss: exact search only
    faiss = None

# The C entry points behind faiss's Python wrappers: search_one calls them directly (each
# wrapper frame is a measurable share of a short single-query walk).
_swig = getattr(faiss, "_swigfaiss", None)
_swig_ptr: Any = getattr(_swig, "swig_ptr", None) or getattr(faiss, "swig_ptr", None)
_search_c: Any = getattr(_swig, "IndexHNSW_search", None) or (
    (lambda index, *args: index.search_c(*args)) if faiss is not None else None)

# Quiver's own walk over the same graph (engine/_hnsw_walk.c, built at install where a C
# compiler is found): the same results as faiss's, ~15-25 % less time per query (bench.ann).
# Without it every search goes through faiss.
try:
    from engine import _hnsw_walk
except ImportError:  # pragma: no cover - installed without a C compiler
    _hnsw_walk = None  # type: ignore[assignment]
WALK_METRICS = {"ip": 0, "l2": 1}  # L1 stays on faiss
# on_chunk(a, b, sims, rows): a batch's final results for query rows a..b (HnswIndex.search)
OnChunk = Callable[[int, int, np.ndarray, np.ndarray], None]

log = logging.getLogger(__name__)
FAISS_METRICS = {"ip": "METRIC_INNER_PRODUCT", "l2": "METRIC_L2", "l1": "METRIC_L1"}
# A filter keeping less than this fraction of a segment is searched exactly as well: faiss
# walks the whole graph and drops excluded nodes, so tiny fractions would starve the beam.
MIN_FILTERED_FRACTION = 0.05
MAX_EF = 4096
# A build adds its rows in batches sized to last about BATCH_S each (measured as it goes,
# between MIN_BATCH and ADD_BATCH rows). Progress and the snapshot gate are heard between
# batches: 64k rows of 768-d took ~15 s on 2 cores, a whole snapshot's time, and a batch
# still running when a snapshot starts finishes at the indexer's low priority. faiss (1.15)
# links one add()'s rows in parallel, each blind to the others: on uniform [0, 1) 768-d rows
# under inner product one 60k-row call gave recall@10 0.73 at ef 64, batches of 1-8k 0.94;
# on bench.data's 128-d and 768-d sets batches change recall by < 0.03. Smaller batches cost
# build time: 60k x 768 took 5.7 s in one call, 5.9 s at 0.5 s batches (~5k rows), 6.6 s at
# 0.2 s (~1.8k rows)
ADD_BATCH = 1 << 16
MIN_BATCH = 1 << 10
BATCH_S = 0.5
_CORES = os.cpu_count() or 1
_build_count = 0
_count_lock = threading.Lock()


def available() -> bool:
    return faiss is not None


def builds() -> int:
    """How many index builds/extensions ran in this process (tests prove recovery adds none)."""
    return _build_count


@dataclass(frozen=True)
class HnswIndex:
    """An immutable HNSW graph over rows [0, rows) of one segment's vectors."""

    index: Any
    rows: int
    metric: str
    m: int
    ef_construct: int
    # engine/_hnsw_walk.Walker over this index's arrays (None: faiss walks it)
    walker: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "walker", _walker(self.index, self.rows, self.metric))

    @classmethod
    def build(cls, vectors: np.ndarray, metric: str, m: int, ef_construct: int,
              base: HnswIndex | None = None,
              progress: Callable[[int], None] | None = None) -> HnswIndex:
        """Index `vectors` (host float32, all rows to cover). With `base`, extend a copy of
        it by the rows it lacks instead of starting over. `progress(rows)` hears of every
        batch added (BATCH_S)."""
        global _build_count
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if base is not None and base.m == m and base.metric == metric and base.rows <= len(x):
            index = faiss.deserialize_index(faiss.serialize_index(base.index))  # a private copy
            start = base.rows
        else:
            index = faiss.IndexHNSWFlat(x.shape[1], m, getattr(faiss, FAISS_METRICS[metric]))
            index.hnsw.efConstruction = ef_construct
            start = 0
        faiss.omp_set_num_threads(_CORES)
        a, size = start, MIN_BATCH
        while a < len(x):
            b = min(len(x), a + size)
            began = time.perf_counter()
            index.add(x[a:b])
            took = time.perf_counter() - began
            if progress is not None:
                progress(b - a)
            size = int(min(ADD_BATCH, max(MIN_BATCH, (b - a) * BATCH_S / max(took, 1e-6))))
            a = b
        with _count_lock:
            _build_count += 1
        return cls(index, len(x), metric, m, ef_construct)

    def search(self, queries: np.ndarray, k: int, ef: int, mask: np.ndarray | None,
               on_chunk: OnChunk | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over the indexed rows as (similarity, rows), higher first; -inf/-1 padded.
        `mask` (bool, >= rows long) keeps only allowed rows. `on_chunk(a, b, sims, rows)`
        (no mask) is called in this thread with the results of query rows a..b as soon as
        they are final, every row once: a batch's callers build records meanwhile."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        ef = int(min(max(ef, k), MAX_EF))
        if mask is None and self.walker is not None and k > 0:
            return self._walk(q, min(k, self.rows), ef, on_chunk)
        if mask is None:
            params = _shared_params(ef)
        else:
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef
            bits = np.packbits(mask[: self.rows], bitorder="little")
            params.sel = faiss.IDSelectorBitmap(self.rows, faiss.swig_ptr(bits))
        faiss.omp_set_num_threads(_CORES if len(q) >= 8 else 1)
        dist, idx = self.index.search(q, min(k, self.rows), params=params)  # `bits` alive here
        sim = _similarity(dist, self.metric)
        if idx.min() < 0:  # fewer than k reachable: pad as the exact path does
            missing = idx < 0
            sim = np.where(missing, -np.inf, sim).astype(np.float32)
        if on_chunk is not None and mask is None and len(q):
            on_chunk(0, len(q), sim, idx)
        return sim, idx  # faiss returns float32 / int64 already

    def search_one(self, query: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        """One unfiltered query ((d,) float32, C-contiguous): the same result as
        `search(query[None], k, ef, None)` as 1-D arrays, without faiss's Python wrapper and
        its per-call allocations (the Python around a small graph walk costs as much as the
        walk: py-spy, bench.ann). The results live in this thread's buffers until its next
        call: copy or convert them before searching again."""
        k = min(k, self.rows)
        ef = int(min(max(ef, k), MAX_EF))
        dist, idx, dptr, iptr = _buffers(k)
        if self.walker is not None:
            self.walker.search(query, k, ef, dist, idx)
        else:
            # no omp_set_num_threads: faiss opens its parallel region only for n > 1, and
            # the setter alone costs as much as the rest of this wrapper (py-spy)
            _search_c(self.index, 1, _swig_ptr(query), k, dptr, iptr, _shared_params(ef))
        sim = _similarity(dist, self.metric)
        if idx[k - 1] < 0:  # faiss fills from the front: fewer than k reachable
            sim = np.where(idx < 0, -np.inf, sim).astype(np.float32)
        return sim, idx

    def _walk(self, q: np.ndarray, k: int, ef: int, on_chunk: OnChunk | None
              ) -> tuple[np.ndarray, np.ndarray]:
        """`search` without a mask through the walker. A batch of 8 or more runs on all
        cores: the pool's threads and this one take chunks from one counter in C, with the
        GIL released (a core slowed by other work takes fewer of them). Between its own
        chunks this thread hands finished ones to `on_chunk`, so building a batch's records
        overlaps the other threads' walks instead of following them on one core."""
        m = len(q)
        dist, idx = np.empty((m, k), np.float32), np.empty((m, k), np.int64)
        walker, metric = self.walker, self.metric
        if m < 8 or _CORES == 1:
            if m:
                walker.search(q, k, ef, dist, idx)
            sims = _similarity(dist, metric)  # a missing result is already -inf
            if on_chunk is not None and m:
                on_chunk(0, m, sims, idx)
            return sims, idx
        chunks, bounds = _schedule(m, _CORES)
        state = np.zeros(1 + len(chunks), np.int64)  # the next chunk, then one flag each
        fed = 0

        def feed() -> None:
            nonlocal fed
            ready = walker.ready(state, fed)
            if ready < 0:  # another thread failed: its run() raises below
                return
            for a, b in chunks[fed : fed + ready]:
                on_chunk(a, b, _similarity(dist[a:b], metric), idx[a:b])  # type: ignore[misc]
            fed += ready
        helpers = [_pool().submit(walker.run, q, k, ef, dist, idx, bounds, state, len(chunks))
                   for _ in range(min(_CORES, m // 4) - 1)]
        done = False
        try:
            if on_chunk is None:
                walker.run(q, k, ef, dist, idx, bounds, state, len(chunks))
            else:
                while walker.run(q, k, ef, dist, idx, bounds, state, 1):
                    feed()
            done = True
        finally:
            if not done:  # this thread failed: the counter past the end stops the helpers
                state[0] = len(chunks)  # after their current chunk (an aligned 8-byte store)
            failure = None
            for f in helpers:  # wait for every one: they write into dist and idx
                if not f.cancel():  # one that never started has nothing left to do
                    failure = failure or f.exception()
        if failure is not None:  # a helper failed (MemoryError): the batch has holes
            raise failure
        if on_chunk is not None:
            feed()
        return _similarity(dist, metric), idx  # a missing result is already -inf

    def vectors_view(self) -> np.ndarray:
        """The index's own float32 copy of its rows, as a read-only array that keeps the
        index alive: a sealed segment serves its vectors from here instead of holding them
        twice."""
        storage = faiss.downcast_index(self.index.storage)
        d = storage.d
        addr = faiss.rev_swig_ptr(storage.get_xb(), self.rows * d).ctypes.data if self.rows \
            else 0
        return np.asarray(_Borrowed(self.index, addr, (self.rows, d)))

    # ---- serialised form: the graph as plain arrays (the vectors are the segment's own) ----

    def graph(self) -> dict[str, np.ndarray]:
        """The graph (levels, offsets, neighbors, entry point) as arrays; with the segment's
        vectors this is the whole index, so archives and segment files never copy vectors."""
        h = self.index.hnsw
        return {"levels": faiss.vector_to_array(h.levels).astype(np.int32),
                "offsets": faiss.vector_to_array(h.offsets).astype(np.uint64),
                "neighbors": faiss.vector_to_array(h.neighbors).astype(np.int32),
                "entry": np.array([h.entry_point, h.max_level], dtype=np.int64)}

    @classmethod
    def from_graph(cls, vectors: np.ndarray, graph: dict[str, np.ndarray], metric: str, m: int,
                   ef_construct: int) -> HnswIndex:
        """Rebuild an index from its arrays and the first `rows` vectors, without re-running
        the construction. Every array is bounds-checked first: a hostile archive must not be
        able to make faiss read or write outside its buffers."""
        levels, offsets = graph["levels"], graph["offsets"]
        neighbors, entry = graph["neighbors"], graph["entry"]
        rows = len(levels)
        x = np.ascontiguousarray(vectors[:rows], dtype=np.float32)
        index = faiss.IndexHNSWFlat(x.shape[1], m, getattr(faiss, FAISS_METRICS[metric]))
        index.hnsw.efConstruction = ef_construct
        cum = faiss.vector_to_array(index.hnsw.cum_nneighbor_per_level).astype(np.int64)
        _check_graph(levels, offsets, neighbors, entry, cum, len(x))
        index.storage.add(x)
        faiss.copy_array_to_vector(levels.astype(np.int32), index.hnsw.levels)
        faiss.copy_array_to_vector(offsets.astype(np.uint64), index.hnsw.offsets)
        faiss.copy_array_to_vector(neighbors.astype(np.int32), index.hnsw.neighbors)
        index.hnsw.entry_point = int(entry[0])
        index.hnsw.max_level = int(entry[1])
        index.ntotal = rows
        return cls(index, rows, metric, m, ef_construct)


class _Borrowed:
    """Exposes faiss-owned memory to numpy; numpy keeps this object (and so the index) as
    the array's base."""

    def __init__(self, owner: Any, addr: int, shape: tuple[int, int]) -> None:
        self.owner = owner
        self.__array_interface__ = {"data": (addr, True), "shape": shape, "typestr": "<f4",
                                    "version": 3}


def _guided(m: int, cores: int) -> list[tuple[int, int]]:
    """A batch of m queries as chunks taken in turn by `cores` threads, each a share of what
    is left (guided scheduling): few chunks, and the last ones small, so the threads finish
    together (equal chunks of m / 16 left one core idle for up to a chunk's walk at the
    end: ~0.5 ms of a 500-query batch at ef 32, bench.ann)."""
    out, a = [], 0
    while a < m:
        b = min(m, a + max(4, (m - a) // (2 * cores)))
        out.append((a, b))
        a = b
    return out


@functools.lru_cache(maxsize=256)
def _schedule(m: int, cores: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """A batch size's chunks on `cores` threads, and their starts (plus m) as the read-only
    int64 bounds the walker takes (kept: a server sees few batch sizes)."""
    chunks = _guided(m, cores)
    bounds = np.array([a for a, _ in chunks] + [m], np.int64)
    bounds.flags.writeable = False
    return chunks, bounds


def _similarity(dist: np.ndarray, metric: str) -> np.ndarray:
    """faiss's distances (inner products, squared L2, L1) as similarities, higher first."""
    if metric == "ip":
        return dist
    if metric == "l2":
        return -np.sqrt(np.maximum(dist, 0.0))
    return -dist


_PARAMS: dict[int, Any] = {}
_local = threading.local()
_POOL: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The threads that walk a batch's other parts (the caller walks the first)."""
    global _POOL
    with _pool_lock:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max(1, _CORES - 1), thread_name_prefix="quiver-hnsw")
        return _POOL


def _walker(index: Any, rows: int, metric: str) -> Any:
    """A Walker over an IndexHNSWFlat's own vectors and graph arrays (borrowed: the index
    is never modified after it is built, and the Walker keeps it alive); None where the
    module is not built, the metric is L1 or the graph is empty."""
    if _hnsw_walk is None or metric not in WALK_METRICS or rows == 0 \
            or os.environ.get("QUIVER_HNSW_WALK", "1") == "0":
        return None
    h = index.hnsw
    storage = faiss.downcast_index(index.storage)
    d = storage.d
    nb = h.neighbors
    try:
        return _hnsw_walk.Walker(
            vectors=faiss.rev_swig_ptr(storage.get_xb(), rows * d).ctypes.data, n=rows, d=d,
            neighbors=faiss.rev_swig_ptr(nb.data(), nb.size()).ctypes.data,
            offsets=_address(h.offsets, rows + 1),
            cum=faiss.vector_to_array(h.cum_nneighbor_per_level).astype(int).tolist(),
            entry=int(h.entry_point), max_level=int(h.max_level), metric=WALK_METRICS[metric],
            owner=index)
    except ValueError as exc:  # a shape the walker does not take: faiss walks this one
        log.warning("HNSW walk through faiss for this index: %s", exc)
        return None


def _address(vec: Any, size: int) -> int:
    """The address of a faiss std::vector<size_t>'s data, checked against its size."""
    if vec.size() != size:
        raise GraphError(f"HNSW offsets hold {vec.size()} entries, not {size}")
    return int(faiss.rev_swig_ptr(vec.data(), size).ctypes.data)


def _buffers(k: int) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """This thread's (k,) distance and label buffers for search_one and their faiss
    pointers, kept between calls."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None or len(bufs[0]) != k:
        dist, idx = np.empty(k, np.float32), np.empty(k, np.int64)
        bufs = _local.bufs = (dist, idx, _swig_ptr(dist), _swig_ptr(idx))
    return bufs


def _shared_params(ef: int) -> Any:
    """Selector-free search parameters, built once per ef (SWIG construction costs more than
    a small graph walk); faiss only reads them, so threads can share them."""
    params = _PARAMS.get(ef)
    if params is None:
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef
        _PARAMS[ef] = params
    return params


class GraphError(ValueError):
    """An HNSW graph whose arrays are inconsistent (corrupt or hostile)."""


def _check_graph(levels: np.ndarray, offsets: np.ndarray, neighbors: np.ndarray,
                 entry: np.ndarray, cum: np.ndarray, nvec: int) -> None:
    rows = len(levels)
    if levels.ndim != 1 or offsets.shape != (rows + 1,) or neighbors.ndim != 1 \
            or entry.shape != (2,):
        raise GraphError("HNSW graph arrays have the wrong shapes")
    if rows > nvec:
        raise GraphError(f"HNSW graph covers {rows} rows but the segment has {nvec}")
    if rows == 0:
        if len(neighbors) or int(offsets[0]) != 0:
            raise GraphError("empty HNSW graph with neighbours")
        return
    if levels.min() < 1 or levels.max() >= len(cum):
        raise GraphError("HNSW graph levels out of range")
    sizes = cum[levels.astype(np.int64)]
    if int(offsets[0]) != 0 or not np.array_equal(np.diff(offsets.astype(np.int64)), sizes) \
            or int(offsets[-1]) != len(neighbors):
        raise GraphError("HNSW graph offsets do not match its levels")
    if len(neighbors) and (neighbors.min() < -1 or neighbors.max() >= rows):
        raise GraphError("HNSW graph neighbours out of range")
    ep, top = int(entry[0]), int(entry[1])
    if not 0 <= ep < rows or top != int(levels.max()) - 1 or int(levels[ep]) - 1 != top:
        raise GraphError("HNSW graph entry point is invalid")
    # a link on level L must lead to a node that has level L: a walk reads that node's
    # level-L list, which a lower node does not have (past the array's end for the last)
    lv = levels.astype(np.int64)
    starts = offsets[:-1].astype(np.int64)
    for level in range(1, int(lv.max())):
        nodes = np.flatnonzero(lv > level)
        width = int(cum[level + 1] - cum[level])
        at = (starts[nodes] + int(cum[level]))[:, None] + np.arange(width)
        linked = neighbors[at.ravel()]
        linked = linked[linked >= 0]
        if len(linked) and int(lv[linked].min()) <= level:
            raise GraphError(f"HNSW graph links level {level} to a node without it")


def threshold_rows(indexing_threshold_kb: Any, row_bytes: int) -> int | None:
    """Rows of unindexed vectors that trigger a build; None when indexing is disabled."""
    if not isinstance(indexing_threshold_kb, int | float) or indexing_threshold_kb <= 0:
        return None
    return max(1, int(indexing_threshold_kb * 1024 // max(row_bytes, 1)))


def full_scan_rows(hnsw_config: dict[str, Any], row_bytes: int) -> int:
    """`full_scan_threshold` (KB) as rows: a filter allowing fewer rows scans them exactly."""
    return int(hnsw_config.get("full_scan_threshold") or 0) * 1024 // max(row_bytes, 1)


def use_index(index: HnswIndex | None, exact: bool, allowed: int, n: int,
              full_scan_rows: int) -> bool:
    """Whether a search over a segment of n rows, `allowed` of them passing filter and
    deletions, should walk the graph (else: exact scan of the allowed rows)."""
    if index is None or exact or index.rows == 0:
        return False
    if allowed < n and (allowed < full_scan_rows or allowed < n * MIN_FILTERED_FRACTION):
        return False
    return True


def filtered_ef(ef: int, allowed: int, n: int) -> int:
    """Widen the beam as a filter gets more selective, so recall stays close to unfiltered."""
    frac = allowed / n if n else 1.0
    return int(min(MAX_EF, ef / max(frac, 0.1)))
