"""Points by id: retrieve, get one point, and a point's vector (queries by point id)."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import BadInput, NotFound
from engine.id_tracker import ROW_BITS, ROW_MASK
from engine.ids import parse_id
from engine.multivector import MultiVector
from engine.plan import RetrieveRequest
from engine.render import render_handles
from engine.sparse import SparseVector
from engine.view import Readable


def retrieve(coll: Readable, req: RetrieveRequest) -> list[dict[str, Any]]:
    """The points of `req.ids` that exist, in that order."""
    view = coll.view(req.ids)
    return render_handles(view, view.found, req.with_payload, req.with_vector)


def get_point(coll: Readable, raw_id: Any) -> dict[str, Any]:
    pid = parse_id(raw_id)
    view = coll.view([pid])
    if not view.found:
        raise NotFound(f"No point with id {pid} found")
    return render_handles(view, view.found, True, True)[0]


def vector_of_point(coll: Readable, raw_id: Any, using: str
                    ) -> np.ndarray | MultiVector | SparseVector:
    pid = parse_id(raw_id)
    view = coll.view([pid])
    if not view.found:
        raise NotFound(f"No point with id {pid} found")
    h = view.found[0]
    seg = view.by_id[h >> ROW_BITS]
    row = h & ROW_MASK
    config = view.config
    sparse = config.is_sparse(using)
    name = using if sparse or config.is_multi(using) else config.vector(using).name
    if not seg.present[name][row]:
        raise BadInput(f"Vector with name {name!r} for point {pid} not found")
    if sparse:  # a sparse point: its indices and weights are the query
        return seg.sparse_of(name, np.array([row])).row(0)
    if name in seg.multi:  # a multivector point: its tokens are the query
        return MultiVector(seg.multi_of(name, np.array([row])).tokens)
    return seg.vectors_of(name, np.array([row]))[0]
