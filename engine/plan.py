"""Typed read requests: what the API parses a request body into and the engine executes.

A request's vectors are not yet prepared (dimension, finiteness and Cosine normalisation are
checked by the engine against the collection's config). Selectors (`with_payload`,
`with_vector`) stay as the request gave them, defaults applied: the engine validates them when
it renders points, as Qdrant does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.filters import Predicate
from engine.ids import PointId
from engine.quantization import QuantSearch


@dataclass
class SearchSpec:
    # (d,) float32, not yet prepared; or a SparseVector, a MultiVector, or an
    # engine.recommend.ExampleQuery (recommend / discover / context: custom scores)
    vector: np.ndarray
    using: str
    pred: Predicate | None
    limit: int
    offset: int
    score_threshold: float | None
    with_payload: Any
    with_vector: Any
    exclude_ids: tuple[PointId, ...] = ()
    filter_key: str = ""  # searches with equal (using, filter_key, params) share one GEMM
    hnsw_ef: int | None = None  # params.hnsw_ef: HNSW beam width (default: ef_construct)
    exact: bool = False  # params.exact: bypass the HNSW index
    quantization: QuantSearch | None = None  # params.quantization (engine/quantized_search.py)


@dataclass(frozen=True)
class OrderBy:
    """Scroll by a payload value instead of by id."""

    key: str
    descending: bool = False
    start_from: float | None = None  # numbers as given, datetimes in microseconds


@dataclass
class ScrollRequest:
    pred: Predicate | None
    limit: int
    offset: PointId | None = None  # the first id of the page (never with order_by)
    with_payload: Any = True
    with_vector: Any = False
    order_by: OrderBy | None = None


@dataclass
class CountRequest:
    pred: Predicate | None


@dataclass
class RetrieveRequest:
    ids: list[PointId]  # ids that do not parse are already dropped (they match nothing)
    with_payload: Any = True
    with_vector: Any = False


@dataclass(frozen=True)
class Fusion:
    """Fuse the children's result lists: `rrf` (reciprocal rank, constant `k`, optional
    per-child `weights`) or `dbsf` (distribution-based score fusion)."""

    method: str  # "rrf" | "dbsf"
    k: int = 2  # Qdrant's default RRF constant
    weights: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Mmr:
    """Maximal marginal relevance over a nearest search's candidates."""

    diversity: float = 0.5
    candidates_limit: int | None = None  # None: the node's limit


@dataclass
class QueryRequest:
    """One query of the universal query API, and the node of a query plan.

    The node's query is one of: `nearest` (a nearest-neighbour search carrying the node's
    filter, limit and selectors; with `mmr`, re-ranked for diversity), `fusion`, `formula`
    (engine.formula.Formula), `order_by`, `sample` (random), or none of them ("no query": the
    points passing `pred` in id order, each scored 1.0). `prefetch` lists the child nodes:
    a node with children runs its query over the union of their candidates (nearest,
    order_by, sample, no query: restricted to those ids AND `pred`), or fuses / re-scores
    their result lists (fusion, formula). `pred` is the node's effective filter: the
    filters of its ancestors are already merged into it, as the server propagates them.
    """

    nearest: SearchSpec | None
    pred: Predicate | None
    limit: int
    offset: int
    with_payload: Any
    with_vector: Any
    prefetch: list[QueryRequest] = field(default_factory=list)
    score_threshold: float | None = None
    filter_key: str = ""  # canonical JSON of the effective filter ("" = none)
    fusion: Fusion | None = None
    formula: Any = None  # engine.formula.Formula (kept untyped: plan stays import-light)
    order_by: OrderBy | None = None
    sample: bool = False
    mmr: Mmr | None = None

    def as_scroll(self) -> ScrollRequest:
        """The no-query node as the scroll it runs: `offset` more points, skipped after."""
        return ScrollRequest(self.pred, self.limit + self.offset, None, self.with_payload,
                             self.with_vector)
