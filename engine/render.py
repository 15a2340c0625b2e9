"""How points are rendered into Qdrant's records (id, version, score, payload, vector)."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import payload as payload_ops
from engine.errors import BadRequest
from engine.id_tracker import ROW_BITS, ROW_MASK
from engine.segment import Segment
from engine.view import View

# engine/_records.c (built by setup.py where a C compiler is found): plain_records in C
try:
    from engine import _records
except ImportError:  # pragma: no cover - installed without a C compiler
    _records = None  # type: ignore[assignment]


def plain_records(seg: Segment, rows: np.ndarray, scores: np.ndarray
                  ) -> list[list[dict[str, Any]]]:
    """The plain scored records (no payload, no vector: the common search result) of one
    segment's (b, k) int64 rows with their (b, k) float64 scores, one list per query."""
    if _records is not None and type(seg.ids) is list and seg.versions.dtype == np.uint64:
        return _records.records(seg.ids, seg.versions, np.ascontiguousarray(rows, np.int64),
                                np.ascontiguousarray(scores, np.float64))
    ids = seg.ids
    return [[{"id": ids[r], "version": ver, "score": sc}
             for r, ver, sc in zip(rows_q, vers_q, sc_q, strict=True)]
            for rows_q, vers_q, sc_q in zip(rows.tolist(), seg.versions[rows].tolist(),
                                            scores.tolist(), strict=True)]


def _with_vector_names(view: View, selector: Any) -> list[str] | None:
    if selector is None or selector is False:
        return None
    vectors = [*view.config.dense_names(), *view.config.sparse_vectors]
    if selector is True:
        return vectors
    if isinstance(selector, list) and all(isinstance(n, str) for n in selector):
        return [n for n in selector if n in vectors]
    raise BadRequest(f"invalid with_vector selector: {selector!r}")


def plain_selectors(with_payload: Any, with_vector: Any) -> bool:
    """Neither payload nor vector asked for: the plain scored record {id, version, score}."""
    return (with_payload is None or with_payload is False) \
        and (with_vector is None or with_vector is False)


def render(view: View, seg: Segment, rows: list[int] | np.ndarray, with_payload: Any,
           with_vector: Any, scores: list[float] | None = None) -> list[dict[str, Any]]:
    """Records of `rows` (a list, or an int64 array: converted once, here)."""
    if type(rows) is np.ndarray:
        if scores is not None and plain_selectors(with_payload, with_vector):
            # the plain scored record: the common search result, no selector work
            return plain_records(seg, rows[None, :], np.array(scores, np.float64)[None, :])[0]
        rows = rows.tolist()
    names = _with_vector_names(view, with_vector)
    out: list[dict[str, Any]] = []
    vecs: dict[str, list[Any]] = {}
    if names:
        r = np.asarray(rows, dtype=np.int64)
        for name in names:
            present = seg.present[name][r] if len(r) else np.zeros(0, bool)
            values: list[Any]
            if name in seg.sparse:
                values = _sparse_json(seg, name, r)
            elif name in seg.multi:
                values = _multi_json(seg, name, r)
            else:
                values = seg.vectors_of(name, r).tolist()
            vecs[name] = [v if p else None for v, p in zip(values, present.tolist(), strict=True)]
    bare = (with_vector is True and not view.config.named and not view.config.sparse_vectors)
    # the default vector next to sparse ones: a bare list when it is the point's only vector
    # (Qdrant's rule for its output), a map otherwise
    mixed = not view.config.named and bool(view.config.sparse_vectors)
    versions = seg.versions[np.asarray(rows, dtype=np.int64)].tolist() if rows else []
    if names is None and (with_payload is None or with_payload is False):
        ids = seg.ids
        if scores is None:
            return [{"id": ids[r]} for r in rows]
        return [{"id": ids[r], "version": ver, "score": sc}
                for r, ver, sc in zip(rows, versions, scores, strict=True)]
    for i, row in enumerate(rows):
        rec: dict[str, Any] = {"id": seg.ids[row]}
        if scores is not None:
            rec["version"] = versions[i]
            rec["score"] = scores[i]
        pl = payload_ops.select(seg.payloads[row], with_payload)
        if pl is not None:
            rec["payload"] = pl
        if names is not None:
            if bare:
                v = vecs[""][i]
                rec["vector"] = v if v is not None else {}
            else:
                named = {n: vecs[n][i] for n in names if vecs[n][i] is not None}
                rec["vector"] = named[""] if mixed and list(named) == [""] else named
        out.append(rec)
    return out


def _sparse_json(seg: Segment, name: str, rows: np.ndarray) -> list[dict[str, Any]]:
    """Rows of a sparse vector as Qdrant renders them: {"indices", "values"}, by index."""
    batch = seg.sparse_of(name, rows)
    ends = batch.indptr.tolist()
    idx, vals = batch.indices.tolist(), batch.values.tolist()
    return [{"indices": idx[a:b], "values": vals[a:b]}
            for a, b in zip(ends[:-1], ends[1:], strict=True)]


def _multi_json(seg: Segment, name: str, rows: np.ndarray) -> list[list[list[float]]]:
    """Rows of a multivector as Qdrant renders them: a list of token vectors."""
    batch = seg.multi_of(name, rows)
    ends = batch.offsets.tolist()
    toks = batch.tokens.tolist()
    return [toks[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]


def render_handles(view: View, handles: list[int], with_payload: Any, with_vector: Any,
                   scores: list[float] | None = None) -> list[dict[str, Any]]:
    """Render points given by handles (into the view's segments), keeping their order."""
    if not handles:
        return []
    segs = view.by_id
    first = handles[0] >> ROW_BITS
    if all(h >> ROW_BITS == first for h in handles):  # the common case: one segment
        return render(view, segs[first], [h & ROW_MASK for h in handles], with_payload,
                      with_vector, scores)
    out: list[dict[str, Any] | None] = [None] * len(handles)
    by_seg: dict[int, list[int]] = {}
    for i, h in enumerate(handles):
        by_seg.setdefault(h >> ROW_BITS, []).append(i)
    for sid, positions in by_seg.items():
        rows = [handles[p] & ROW_MASK for p in positions]
        sc = [scores[p] for p in positions] if scores is not None else None
        for p, rec in zip(positions, render(view, segs[sid], rows, with_payload, with_vector, sc),
                          strict=True):
            out[p] = rec
    return [r for r in out if r is not None]
