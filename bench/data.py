"""Seeded, clustered synthetic vectors for benchmarks.

Points are drawn around `n_clusters` Gaussian centres and L2-normalised (so Cosine, dot and
L2 order them alike). Generation is chunked with one seed per chunk, so the first `n` rows
of a larger set are exactly the rows of a smaller one: the 100k set is a prefix of the 1M
set, and runs with the same seed see the same data on every machine.
"""

from __future__ import annotations

import numpy as np

DIM = 128
N_CLUSTERS = 100
SPREAD = 0.35  # per-coordinate std of points around their centre (centres are N(0, 1))
CHUNK = 50_000
DATA_SEED = 20240601
QUERY_SEED = 777


def centres(dim: int = DIM, n_clusters: int = N_CLUSTERS, seed: int = DATA_SEED) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n_clusters, dim), dtype=np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _around(c: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    which = rng.integers(0, len(c), size=n)
    x = c[which] + SPREAD * rng.standard_normal((n, c.shape[1]), dtype=np.float32)
    return _normalise(x)


def points(n: int, dim: int = DIM, seed: int = DATA_SEED) -> np.ndarray:
    """(n, dim) float32, unit norm, deterministic in (n, dim, seed) and prefix-stable in n."""
    c = centres(dim, seed=seed)
    out = np.empty((n, dim), dtype=np.float32)
    for k, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        rng = np.random.default_rng([seed, k + 1])
        out[start:stop] = _around(c, CHUNK, rng)[: stop - start]
    return out


def queries(m: int, dim: int = DIM, seed: int = DATA_SEED, query_seed: int = QUERY_SEED
            ) -> np.ndarray:
    """(m, dim) query vectors drawn like the points (same centres), from another stream."""
    return _around(centres(dim, seed=seed), m, np.random.default_rng([seed, query_seed, 0]))


def payload(i: int) -> dict[str, object]:
    """The benchmark payload: a 10%-selective keyword and an integer."""
    return {"tag": f"t{i % 10}", "n": i}


def payloads(start: int, stop: int) -> list[dict[str, object]]:
    return [{"tag": f"t{i % 10}", "n": i} for i in range(start, stop)]


def tag_mask(n: int, tag: str = "t3") -> np.ndarray:
    """Rows whose payload tag equals `tag` (point id == row number in these benchmarks)."""
    k = int(tag[1:])
    return (np.arange(n) % 10) == k


def exact_topk(x: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None
               ) -> np.ndarray:
    """Ground truth: (m, k) row ids by exact dot product (x and q are unit norm)."""
    out = np.empty((len(q), k), dtype=np.int64)
    rows = np.flatnonzero(mask) if mask is not None else None
    xs = x[rows] if rows is not None else x
    step = 64
    for s in range(0, len(q), step):
        sc = q[s : s + step] @ xs.T
        part = np.argpartition(-sc, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sc, part, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        out[s : s + step] = rows[top] if rows is not None else top
    return out
