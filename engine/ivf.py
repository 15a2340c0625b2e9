"""FAISS IVF-Flat / IVF-PQ / CAGRA indexes over a segment's leading rows (an extension).

Chosen by `gpu.faiss_index` (none | ivf_flat | ivf_pq | cagra; gpu.config.GpuConfig): when
set, segments that pass `indexing_threshold` get one of these instead of an HNSW graph, and
device-resident segments use it too (without it they are searched exactly on the GPU). Same
protocol as engine.ann.HnswIndex (`rows`, `metric`, `search(queries, k, ef, mask)`), so
engine.search merges it with the exact scan of the unindexed tail like any HNSW index.

Where faiss exposes GPUs (`faiss.get_num_gpus() > 0`, and gpu.enabled is not false) the
index is trained and searched on the GPU (IVF through index_cpu_to_gpu, CAGRA through faiss's
cuVS integration, GPU only); otherwise IVF-Flat / IVF-PQ run on the host with faiss-cpu (the
path CI tests). Training runs once per build: an index is extended by new rows without
retraining until the segment doubles. The node's own segment files carry the CPU index
(`index_gpu_to_cpu`; CAGRA's is IndexHNSWCagra) serialised as a uint8 array, rehydrated
(`index_cpu_to_gpu`) without retraining. Snapshot archives are untrusted, and faiss's reader
is not hardened: they carry plain arrays instead (`arrays()`: coarse and PQ centroids),
checked and re-filled with the segment's own rows on recovery (`from_arrays`), untrained.

Scores: IVF-Flat and CAGRA return exact distances; IVF-PQ's are approximate, so its
candidates (oversampled) are re-scored exactly against the segment's rows.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.ann import GraphError, _check_graph, _swig_ptr
from gpu.device import default_device

try:
    import faiss
except ImportError:  # pragma: no cover - the bare GPU image has no faiss: exact search only
    faiss = None

log = logging.getLogger("quiver.collection")

KINDS = ("ivf_flat", "ivf_pq", "cagra")
_ARCHIVE_KINDS = ("ivf_flat", "ivf_pq")  # IvfIndex.arrays()' kind codes (their order is format)
CHOICES = ("none", *KINDS)
PQ_OVERSAMPLE = 4  # IVF-PQ candidates per result, re-scored exactly
GPU_MAX_K = 2048  # faiss GPU IVF's largest k
MAX_CAGRA_ITOPK = 512
ADD_BATCH = 1 << 16
_CORES = os.cpu_count() or 1
_trainings = 0
_count_lock = threading.Lock()
_res_lock = threading.Lock()
_resources: dict[int, Any] = {}


class IvfError(ValueError):
    """A serialised IVF/CAGRA index that cannot be used (corrupt, hostile or mismatched)."""


def faiss_gpus() -> int:
    """GPUs faiss can use here (0 with faiss-cpu, or with a faiss GPU build and no device)."""
    if faiss is None or not hasattr(faiss, "get_num_gpus"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # noqa: BLE001 - a broken CUDA install means "no GPU"
        return 0


def trainings() -> int:
    """IVF/CAGRA trainings in this process (tests prove recovery and restart add none)."""
    return _trainings


@dataclass(frozen=True)
class IvfSpec:
    """The `gpu.faiss_index` settings: kind, nlist (0: auto), nprobe, pq_m (0: auto)."""

    kind: str
    nlist: int = 0
    nprobe: int = 32
    pq_m: int = 0
    gpu: bool = False
    device_id: int = 0


def configured() -> IvfSpec | None:
    """The process's IVF settings (from the default device's GpuConfig); None: HNSW as ever.
    CAGRA without a faiss GPU (refused at start by the settings) also means None."""
    cfg = default_device().config
    kind = str(getattr(cfg, "faiss_index", "none") or "none")
    if faiss is None or kind not in KINDS:
        return None
    gpu = cfg.enabled != "false" and faiss_gpus() > 0
    if kind == "cagra" and not gpu:
        return None
    return IvfSpec(kind, int(getattr(cfg, "nlist", 0) or 0),
                   int(getattr(cfg, "nprobe", 32) or 32), int(getattr(cfg, "pq_m", 0) or 0),
                   gpu, int(cfg.device_id))


def supports(spec: IvfSpec | None, metric: str) -> bool:
    """faiss IVF/CAGRA serve inner product (Dot, Cosine) and L2; Manhattan keeps HNSW."""
    return spec is not None and metric in ("ip", "l2")


def auto_nlist(n: int) -> int:
    """≈ 4·sqrt(n) lists, but at least 39 training points per list (faiss' own minimum)."""
    return max(1, min(round(4 * math.sqrt(n)), n // 39))


def auto_pq_m(d: int) -> int:
    """The most sub-quantizers of ≥ 4 dimensions each (GPU-supported counts) dividing d."""
    for m in (96, 64, 56, 48, 40, 32, 28, 24, 20, 16, 12, 8, 4, 3, 2):
        if d % m == 0 and m <= d // 4:
            return m
    return 1


def _metric(metric: str) -> int:
    return int(faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2)


def _resources_for(device_id: int) -> Any:
    """One StandardGpuResources per device for the whole process (it owns scratch memory)."""
    with _res_lock:
        res = _resources.get(device_id)
        if res is None:
            res = _resources[device_id] = faiss.StandardGpuResources()
        return res


def _to_gpu(cpu: Any, device_id: int) -> Any:
    return faiss.index_cpu_to_gpu(_resources_for(device_id), device_id, cpu)


def _counted_training() -> None:
    global _trainings
    with _count_lock:
        _trainings += 1


@dataclass(frozen=True)
class IvfIndex:
    """An immutable IVF-Flat / IVF-PQ / CAGRA index over rows [0, rows) of one segment.

    `index` is what searches run on (a GPU index when `on_gpu`); `source` the float32 rows it
    was built from, kept where they cost nothing extra (a host segment's own rows) or where
    IVF-PQ needs them for exact re-scoring."""

    index: Any
    rows: int
    metric: str
    kind: str
    nprobe: int
    nlist: int
    on_gpu: bool
    source: np.ndarray | None
    trained_rows: int = 0  # rows at the last training: extended without retraining up to 2x

    # ---- building -----------------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, metric: str, spec: IvfSpec,
              base: IvfIndex | None = None, keep_source: bool = True,
              progress: Callable[[int], None] | None = None) -> IvfIndex:
        """Index `vectors` (host rows, all rows to cover). An IVF `base` of the same kind is
        extended by the rows it lacks, without retraining, until the segment has doubled
        since its training; otherwise (and always for CAGRA) the index is trained anew."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = x.shape
        if not supports(spec, metric) or n == 0:
            raise ValueError(f"faiss {spec.kind} cannot index {metric} vectors")
        faiss.omp_set_num_threads(_CORES)
        if (base is not None and base.kind == spec.kind != "cagra" and base.metric == metric
                and base.index.d == d and base.rows <= n <= 2 * max(base.trained_rows, 1)):
            index, on_gpu = _clone_for(base, spec)
            start, nlist, trained = base.rows, base.nlist, base.trained_rows
        elif spec.kind == "cagra":
            index, nlist, on_gpu = _train_cagra(x, metric, spec), 0, True
            start = trained = n  # CAGRA's train() builds the graph over every row
        else:
            index, nlist, on_gpu = _train_ivf(x, metric, spec)
            start, trained = 0, n
        for a in range(start, n, ADD_BATCH):
            index.add(x[a : a + ADD_BATCH])
            if progress is not None:
                progress(min(ADD_BATCH, n - a))
        if progress is not None and start == n:
            progress(n - (base.rows if base is not None else 0))
        keep = keep_source or spec.kind == "ivf_pq"
        return cls(index, n, metric, spec.kind, spec.nprobe, nlist, on_gpu,
                   x if keep else None, trained)

    # ---- searching ----------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, ef: int, mask: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k over the indexed rows as (similarity, rows), higher first; -inf/-1 padded.
        `mask` (bool, >= rows long) keeps only allowed rows. `ef` sizes CAGRA's beam; IVF's
        knob is nprobe (widened as a filter gets more selective)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        want = min(k, self.rows)
        fetch = min(self.rows, want * PQ_OVERSAMPLE) if self.kind == "ivf_pq" else want
        allowed = None if mask is None else mask[: self.rows]
        frac = 1.0 if allowed is None else max(float(allowed.mean()), 1e-6)
        faiss.omp_set_num_threads(_CORES if len(q) >= 8 else 1)
        if self.on_gpu:
            dist, idx = self._gpu_search(q, fetch, ef, allowed, frac)
            if allowed is not None and _short(idx, min(want, int(allowed.sum()))):
                # the capped over-fetch lost allowed rows: the host form filters exactly
                dist, idx = _cpu_search(self._host_index(), q, fetch,
                                        self._cpu_params(ef, frac), allowed)
        else:
            params = self._cpu_params(ef, frac, shared=allowed is None)
            dist, idx = _cpu_search(self.index, q, fetch, params, allowed)
        if self.kind == "ivf_pq" and self.source is not None:
            sim = self._exact(q, idx)
        elif self.metric == "ip":
            sim = dist.astype(np.float32, copy=False)
        else:
            sim = -np.sqrt(np.maximum(dist, 0.0)).astype(np.float32, copy=False)
        if sim.size and sim.shape[1] == want and allowed is None and self.kind != "ivf_pq" \
                and math.isfinite(float(sim.sum())) and idx[:, -1].min() >= 0:
            # every result finite (a finite sum: no NaN or infinity) and found (faiss puts
            # the missing last: sorted, at -FLT_MAX / +FLT_MAX), the common unfiltered
            # query: the passes below would change nothing (~11 us of a ~75 us single
            # query, cold; isfinite().all() and min() took ~6 of it)
            return sim, idx
        sim = np.where(idx >= 0, sim, -np.inf).astype(np.float32, copy=False)
        if sim.shape[1] > want or allowed is not None or self.kind == "ivf_pq":
            order = np.argsort(-sim, axis=1, kind="stable")[:, :want]
            sim = np.take_along_axis(sim, order, 1)
            idx = np.take_along_axis(idx, order, 1)
        idx = np.where(np.isfinite(sim), idx, -1).astype(np.int64, copy=False)
        return sim, idx

    def search_one(self, query: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        """One unfiltered query ((d,) float32): `search(query[None], k, ef, None)` as 1-D
        arrays (engine/search.py `_search_one` takes HNSW and IVF indexes alike)."""
        sims, rows = self.search(query[None, :], k, ef, None)
        return sims[0], rows[0]

    def _gpu_search(self, q: np.ndarray, fetch: int, ef: int, allowed: np.ndarray | None,
                    frac: float) -> tuple[np.ndarray, np.ndarray]:
        """GPU indexes take no IDSelector: over-fetch (at most GPU_MAX_K), then filter."""
        if allowed is not None:
            fetch = min(self.rows, GPU_MAX_K, math.ceil(fetch / frac * 2))
        dist, idx = self.index.search(q, fetch, params=self._gpu_params(ef, fetch))
        if allowed is not None:
            idx = np.where((idx >= 0) & allowed[np.maximum(idx, 0)], idx, -1)
        return dist, idx

    def _host_index(self) -> Any:
        """The CPU form of a GPU index (kept once made: selective filters search it)."""
        with _res_lock:
            host = self.__dict__.get("_host")
            if host is None:
                host = self.cpu_index()
                object.__setattr__(self, "_host", host)
            return host

    def _cpu_params(self, ef: int, frac: float, shared: bool = False) -> Any:
        """Host search parameters; `shared` (no selector will be set on them): cached."""
        cagra = self.kind == "cagra"  # a recovered CAGRA graph without a GPU: an HNSW walk
        value = int(min(MAX_CAGRA_ITOPK, max(ef, 16) / max(frac, 0.1))) if cagra else \
            min(self.nlist, math.ceil(self.nprobe / max(frac, 0.05)))
        if shared and (params := _SHARED.get((cagra, value))) is not None:
            return params
        if cagra:
            params = faiss.SearchParametersHNSW()
            params.efSearch = value
        else:
            params = faiss.SearchParametersIVF()
            params.nprobe = value
        if shared:
            _SHARED[(cagra, value)] = params
        return params

    def _gpu_params(self, ef: int, k: int) -> Any:
        if self.kind == "cagra":
            params = faiss.SearchParametersCagra()
            params.itopk_size = int(min(MAX_CAGRA_ITOPK, max(ef, k, 64)))
            return params
        params = faiss.SearchParametersIVF()
        params.nprobe = min(self.nlist, self.nprobe)
        return params

    def _exact(self, q: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Exact similarities of candidate rows (IVF-PQ's own distances are approximate)."""
        assert self.source is not None
        cand = self.source[np.maximum(idx, 0)]  # (b, c, d)
        if self.metric == "ip":
            return np.einsum("bcd,bd->bc", cand, q)
        diff = cand - q[:, None, :]
        return -np.sqrt(np.einsum("bcd,bcd->bc", diff, diff))

    def vectors_view(self) -> np.ndarray:
        """The float32 rows this index was built from (engine.segment shares them with a
        sealed host segment, as it does an HNSW index's)."""
        if self.source is None:
            raise ValueError("this IVF index keeps no copy of its rows")
        return self.source

    # ---- serialised form: the CPU index as bytes ------------------------------------------------

    def cpu_index(self) -> Any:
        return faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index

    def blob(self) -> np.ndarray:
        """The CPU form, serialised (uint8): what segment files and archives carry."""
        return np.asarray(faiss.serialize_index(self.cpu_index()), dtype=np.uint8)

    @classmethod
    def from_blob(cls, blob: np.ndarray, vectors: np.ndarray, metric: str, spec: IvfSpec | None,
                  keep_source: bool = True) -> IvfIndex:
        """Rehydrate a serialised index over the segment `vectors` (its leading rows), on the
        GPU where faiss has one, without retraining. Everything is checked before use: a
        hostile blob raises IvfError, never reaches a search."""
        if not isinstance(blob, np.ndarray) or blob.dtype != np.uint8 or blob.ndim != 1:
            raise IvfError("IVF index blob must be a 1-D uint8 array")
        if metric not in ("ip", "l2"):
            raise IvfError(f"IVF indexes do not serve the {metric} metric")
        try:
            cpu = faiss.deserialize_index(np.ascontiguousarray(blob))
        except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError on bad bytes
            raise IvfError(f"not a faiss index ({type(exc).__name__})") from None
        kind = _kind_of(cpu)
        nvec, dim = vectors.shape if vectors.ndim == 2 else (0, -1)
        if cpu.d != dim:
            raise IvfError(f"IVF index has dimension {cpu.d}, the vectors {dim}")
        if int(cpu.metric_type) != _metric(metric):
            raise IvfError("IVF index metric does not match the collection's")
        rows = int(cpu.ntotal)
        if not 0 < rows <= nvec or not cpu.is_trained:
            raise IvfError(f"IVF index covers {rows} rows, the segment has {nvec}")
        nlist = _check_contents(cpu, kind, rows)
        return cls._adopt(cpu, kind, nlist, rows, vectors, metric, spec, keep_source)

    # ---- archive form: plain arrays, never a faiss blob ----------------------------------------

    def arrays(self) -> dict[str, np.ndarray]:
        """What snapshot archives carry: `meta` (int64: kind code, nlist, rows, pq m, pq
        nbits), the coarse centroids (nlist×d float32) and, for IVF-PQ, the PQ codebook
        (m×ksub×dsub float32). Recovery re-adds the segment's own rows to them (no
        training, no faiss reader on untrusted bytes). CAGRA has none: {} (rebuilt)."""
        if self.kind not in _ARCHIVE_KINDS:
            return {}
        cpu = self.cpu_index()
        coarse = cpu.quantizer.reconstruct_n(0, self.nlist)
        out = {"coarse": np.ascontiguousarray(coarse, dtype=np.float32)}
        m = nbits = 0
        if self.kind == "ivf_pq":
            pq = cpu.pq
            m, nbits = int(pq.M), int(pq.nbits)
            out["pq"] = faiss.vector_to_array(pq.centroids).astype(np.float32).reshape(
                m, int(pq.ksub), int(pq.dsub))
        out["meta"] = np.array([_ARCHIVE_KINDS.index(self.kind), self.nlist, self.rows, m,
                                nbits], np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], vectors: np.ndarray, metric: str,
                    spec: IvfSpec | None, keep_source: bool = True) -> IvfIndex:
        """Rebuild an index from `arrays()` over the segment `vectors` (its leading rows):
        shapes, dtypes and values are checked first (IvfError), then the centroids are set
        into a fresh index, which is marked trained and given the rows: no training."""
        if metric not in ("ip", "l2"):
            raise IvfError(f"IVF indexes do not serve the {metric} metric")
        meta = arrays.get("meta")
        if (not isinstance(meta, np.ndarray) or meta.dtype != np.int64 or meta.shape != (5,)):
            raise IvfError("IVF meta must be 5 int64 values")
        code, nlist, rows, m, nbits = (int(v) for v in meta)
        nvec, dim = vectors.shape if vectors.ndim == 2 else (0, 0)
        if not 0 <= code < len(_ARCHIVE_KINDS):
            raise IvfError(f"unknown IVF index kind {code}")
        kind = _ARCHIVE_KINDS[code]
        if not 0 < rows <= nvec or dim <= 0:
            raise IvfError(f"IVF index covers {rows} rows, the segment has {nvec}")
        if not 0 < nlist <= rows:
            raise IvfError(f"IVF index has {nlist} lists for {rows} rows")
        coarse = _checked(arrays.get("coarse"), (nlist, dim), "coarse centroids")
        if kind == "ivf_pq":
            if not (0 < m <= dim and dim % m == 0 and 1 <= nbits <= 8):
                raise IvfError(f"bad IVF-PQ layout m={m} nbits={nbits} for dimension {dim}")
            pq = _checked(arrays.get("pq"), (m, 1 << nbits, dim // m), "PQ centroids")
            desc = f"IVF{nlist},PQ{m}x{nbits}np"
        else:
            if "pq" in arrays or m or nbits:
                raise IvfError("IVF-Flat index with PQ parts")
            desc = f"IVF{nlist},Flat"
        x = np.ascontiguousarray(vectors[:rows], dtype=np.float32)
        try:
            cpu = faiss.index_factory(dim, desc, _metric(metric))  # typed, owns its parts
            faiss.downcast_index(cpu.quantizer).add(coarse)
            if kind == "ivf_pq":
                faiss.copy_array_to_vector(pq.ravel(), cpu.pq.centroids)
                cpu.precompute_table()
            cpu.is_trained = True
            for a in range(0, rows, ADD_BATCH):
                cpu.add(x[a : a + ADD_BATCH])
        except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError on bad input
            raise IvfError(f"IVF index cannot be rebuilt ({type(exc).__name__})") from None
        return cls._adopt(cpu, kind, nlist, rows, vectors, metric, spec, keep_source)

    @classmethod
    def _adopt(cls, cpu: Any, kind: str, nlist: int, rows: int, vectors: np.ndarray,
               metric: str, spec: IvfSpec | None, keep_source: bool) -> IvfIndex:
        """A checked CPU index, moved to the GPU where faiss has one."""
        nprobe = spec.nprobe if spec is not None else 32
        gpu = spec is not None and spec.gpu
        x = np.ascontiguousarray(vectors[:rows], dtype=np.float32)
        index = cpu
        if gpu:
            try:
                index = _to_gpu(cpu, spec.device_id)  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - stays usable on the host
                log.warning("IVF index stays on the host: %s", exc)
                gpu = False
        if kind == "cagra" and not gpu:
            index = cpu  # IndexHNSWCagra searches on the CPU as an HNSW graph
        keep = keep_source or kind == "ivf_pq"
        return cls(index, rows, metric, kind, nprobe, nlist, gpu, x if keep else None, rows)


def _checked(arr: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    """An archive's float32 array of exactly `shape`, all finite."""
    if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.shape != shape:
        raise IvfError(f"IVF {what} must be float32 of shape {shape}")
    arr = np.ascontiguousarray(arr)
    if not np.isfinite(arr).all():
        raise IvfError(f"IVF {what} hold NaN or infinity")
    return arr


# Unfiltered host search parameters, one per (CAGRA?, beam or nprobe), shared: faiss only
# reads them, and building one through SWIG took ~8 us of a ~90 us single query (cold)
_SHARED: dict[tuple[bool, int], Any] = {}


def _short(idx: np.ndarray, need: int) -> bool:
    """Whether some query got fewer than `need` results."""
    return bool(((idx >= 0).sum(axis=1) < need).any())


def _cpu_search(index: Any, q: np.ndarray, fetch: int, params: Any,
                allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A host faiss search, `allowed` applied inside faiss through an IDSelectorBitmap."""
    bits = None
    if allowed is not None:
        bits = np.packbits(allowed, bitorder="little")
        params.sel = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))  # n is in bytes
    n = len(q)
    if q.ndim != 2 or q.shape[1] != index.d or not q.flags.c_contiguous or fetch <= 0:
        raise ValueError(f"IVF search: ({n}, {index.d}) float32 rows and k > 0 needed")
    # search_c, not faiss's Python wrapper around it (its checks and allocations were ~5 us
    # of a ~75 us single query); the rows are ours: checked above, float32 (search())
    dist, idx = np.empty((n, fetch), np.float32), np.empty((n, fetch), np.int64)
    index.search_c(n, _swig_ptr(q), fetch, _swig_ptr(dist), _swig_ptr(idx), params)
    return dist, idx  # `bits` alive until here


def _kind_of(cpu: Any) -> str:
    if isinstance(cpu, faiss.IndexIVFPQ):
        return "ivf_pq"
    if isinstance(cpu, faiss.IndexIVFFlat):
        return "ivf_flat"
    if hasattr(faiss, "IndexHNSWCagra") and isinstance(cpu, faiss.IndexHNSWCagra):
        return "cagra"
    raise IvfError(f"unsupported faiss index type {type(cpu).__name__}")


def _check_contents(cpu: Any, kind: str, rows: int) -> int:
    """Every stored id must be one of rows [0, rows), each exactly once (a hostile list
    would make results point outside the segment). Returns nlist (0 for CAGRA)."""
    if kind == "cagra":
        h = cpu.hnsw
        try:
            _check_graph(faiss.vector_to_array(h.levels), faiss.vector_to_array(h.offsets),
                         faiss.vector_to_array(h.neighbors),
                         np.array([h.entry_point, h.max_level], np.int64),
                         faiss.vector_to_array(h.cum_nneighbor_per_level).astype(np.int64),
                         int(cpu.storage.ntotal))
        except GraphError as exc:
            raise IvfError(str(exc)) from None
        if len(faiss.vector_to_array(h.levels)) != rows or int(cpu.storage.ntotal) != rows:
            raise IvfError("CAGRA graph and storage disagree on their rows")
        return 0
    invlists = cpu.invlists
    nlist = int(cpu.nlist)
    if nlist <= 0 or invlists.nlist != nlist or cpu.quantizer.ntotal != nlist:
        raise IvfError("IVF index lists do not match its quantizer")
    sizes = np.array([invlists.list_size(i) for i in range(nlist)], np.int64)
    if sizes.min() < 0 or int(sizes.sum()) != rows:
        raise IvfError("IVF index lists do not hold its rows")
    seen = np.zeros(rows, bool)
    for i in np.flatnonzero(sizes):
        ids = faiss.rev_swig_ptr(invlists.get_ids(int(i)), int(sizes[i])).copy()
        if ids.min() < 0 or ids.max() >= rows or seen[ids].any() or len(np.unique(ids)) != len(ids):
            raise IvfError("IVF index ids out of range or repeated")
        seen[ids] = True
    return nlist


def _train_ivf(x: np.ndarray, metric: str, spec: IvfSpec) -> tuple[Any, int, bool]:
    """A trained, empty IVF index: (index, nlist, on the GPU)."""
    n, d = x.shape
    nlist = min(spec.nlist, n) if spec.nlist > 0 else auto_nlist(n)
    if spec.kind == "ivf_pq":
        m = spec.pq_m if spec.pq_m > 0 and d % spec.pq_m == 0 else auto_pq_m(d)
        if spec.pq_m > 0 and m != spec.pq_m:
            log.warning("gpu.pq_m=%d does not divide dimension %d; using %d", spec.pq_m, d, m)
        nbits = max(1, min(8, int(math.log2(max(n, 2)))))  # k-means needs 2^nbits points
        desc = f"IVF{nlist},PQ{m}x{nbits}np"  # np: no polysemous training (slow, unused)
    else:
        desc = f"IVF{nlist},Flat"
    cpu = faiss.index_factory(d, desc, _metric(metric))
    if spec.kind == "ivf_pq":  # codes are re-scored exactly: fewer k-means rounds suffice
        faiss.downcast_index(cpu).pq.cp.niter = 10
    index, on_gpu = cpu, False
    if spec.gpu:
        try:
            index, on_gpu = _to_gpu(cpu, spec.device_id), True
        except Exception as exc:  # noqa: BLE001 - e.g. a PQ layout the GPU lacks: host
            log.warning("faiss %s stays on the host: %s", spec.kind, exc)
    index.train(x)
    _counted_training()
    return index, nlist, on_gpu


def _train_cagra(x: np.ndarray, metric: str, spec: IvfSpec) -> Any:
    n, d = x.shape
    config = faiss.GpuIndexCagraConfig()
    config.device = spec.device_id
    config.graph_degree = int(min(64, max(2, n - 1)))
    config.intermediate_graph_degree = int(min(128, max(config.graph_degree, n - 1)))
    index = faiss.GpuIndexCagra(_resources_for(spec.device_id), d, _metric(metric), config)
    index.train(x)
    _counted_training()
    return index


def _clone_for(base: IvfIndex, spec: IvfSpec) -> tuple[Any, bool]:
    """A private copy of `base` to extend (readers keep searching the original)."""
    cpu = faiss.deserialize_index(faiss.serialize_index(base.cpu_index()))
    if spec.gpu and base.on_gpu:
        return _to_gpu(cpu, spec.device_id), True
    return cpu, False
