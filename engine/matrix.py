"""The distance matrix (/points/search/matrix/pairs and /offsets), as Qdrant computes it.

A random sample of up to `sample` points that match the filter and have the vector, ordered
by id (integers, then UUIDs); for each, its `limit` nearest others within the sample. The
pairwise part is one GEMM of the sample against itself and a partial top-k selection
(gpu/pairwise.py), on the device when the collection is there, else with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import BadInput
from engine.filters import Predicate
from engine.ids import PointId
from engine.tables import segment_mask
from engine.view import View
from gpu.device import DeviceFailure
from gpu.pairwise import nearest_others
from gpu.xp import get_xp, guard, to_device, to_host

DEFAULT_SAMPLE = 10
DEFAULT_LIMIT = 3


@dataclass(frozen=True)
class MatrixRequest:
    sample: int = DEFAULT_SAMPLE
    limit: int = DEFAULT_LIMIT
    pred: Predicate | None = None
    using: str | None = None


@dataclass(frozen=True)
class Matrix:
    """The sampled ids (by id) and, per sample, its neighbours' offsets and scores (best
    first). Qdrant's two wire formats render it."""

    ids: list[PointId]
    cols: np.ndarray  # (s, k) offsets into `ids`
    scores: np.ndarray  # (s, k) float32, in Qdrant's score convention

    def pairs(self) -> dict[str, Any]:
        s, k = self.cols.shape
        a = np.repeat(np.arange(s), k).tolist()
        ids = self.ids
        return {"pairs": [{"a": ids[i], "b": ids[j], "score": sc} for i, j, sc in
                          zip(a, self.cols.ravel().tolist(), self.scores.ravel().tolist(),
                              strict=True)]}

    def offsets(self) -> dict[str, Any]:
        s, k = self.cols.shape
        return {"offsets_row": np.repeat(np.arange(s), k).tolist(),
                "offsets_col": self.cols.ravel().tolist(),
                "scores": self.scores.ravel().tolist(),
                "ids": list(self.ids)}


EMPTY = Matrix([], np.empty((0, 0), np.int64), np.empty((0, 0), np.float32))


def vector_name(view: View, using: str | None) -> str:
    """The dense vector the matrix is computed on (400 for an unknown name)."""
    cfg = view.config
    if cfg.is_sparse(using) or cfg.is_multi(using):
        raise BadInput(f"the distance matrix supports dense vectors only, not {using!r}")
    return cfg.vector(using).name


def distance_matrix(view: View, req: MatrixRequest) -> Matrix:
    name = vector_name(view, req.using)
    spec = view.config.vectors[name]
    per_seg = [(seg, np.flatnonzero(segment_mask(view, seg, n, req.pred, name)))
               for seg, n in view.segments]
    total = sum(len(rows) for _, rows in per_seg)
    if total < 2:
        return EMPTY
    pick = np.random.default_rng().choice(total, size=min(req.sample, total), replace=False)
    take = np.zeros(total, dtype=bool)
    take[pick] = True
    recs, vecs, at = [], [], 0
    ids: list[PointId] = []
    for seg, rows in per_seg:  # per segment, not per point
        chosen = rows[take[at:at + len(rows)]]
        at += len(rows)
        if len(chosen):
            recs.append(seg.id_recs[chosen])
            vecs.append(seg.vectors_of(name, chosen))
            ids.extend(seg.ids[r] for r in chosen.tolist())
    rec = np.concatenate(recs)
    order = np.lexsort((rec["lo"], rec["hi"], rec["kind"]))  # Qdrant's id order
    rows = np.ascontiguousarray(np.concatenate(vecs)[order], dtype=np.float32)
    sorted_ids = [ids[i] for i in order.tolist()]
    cols, sim = _neighbours(view, rows, req.limit, spec.distance.metric)
    return Matrix(sorted_ids, cols, _scores(sim, spec.distance.metric))


def _neighbours(view: View, rows: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    if any(seg.on_device for seg, _ in view.segments):
        xp = get_xp()
        if xp is not np:
            try:
                with guard("distance matrix"):
                    cols, sim = nearest_others(xp, to_device(rows, xp), k, metric)
                    return to_host(cols), to_host(sim)
            except DeviceFailure as exc:
                view.on_device_failure(str(exc))  # logged once; the same matrix on the host
    return nearest_others(np, rows, k, metric)


def _scores(sim: np.ndarray, metric: str) -> np.ndarray:
    """Internal similarities → Qdrant's scores: Euclid and Manhattan report distances."""
    if metric == "l2":
        return np.sqrt(-sim)
    if metric == "l1":
        return -sim
    return sim
