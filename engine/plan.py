"""Typed read requests: what the API parses a request body into and the engine executes.

A request's vectors are not yet prepared (dimension, finiteness and Cosine normalisation are
checked by the engine against the collection's config). Selectors (`with_payload`,
`with_vector`) stay as the request gave them, defaults applied: the engine validates them when
it renders points, as Qdrant does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.filters import Predicate
from engine.ids import PointId


@dataclass
class SearchSpec:
    vector: np.ndarray  # (d,) float32, not yet prepared
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


@dataclass
class QueryRequest:
    """One query of the universal query API, and the node of a query plan.

    `nearest` is the node's query: a nearest-neighbour search (carrying its own filter,
    limit and selectors), or None for "no query": the points passing `pred` in id order,
    `offset` skipped, each scored 1.0. The next query kinds (fusion, order_by, ...) and a
    `prefetch` list of child QueryRequests, whose candidates this node re-scores or fuses,
    hang off this node; until then the API refuses them.
    """

    nearest: SearchSpec | None
    pred: Predicate | None
    limit: int
    offset: int
    with_payload: Any
    with_vector: Any

    def as_scroll(self) -> ScrollRequest:
        """The no-query node as the scroll it runs: `offset` more points, skipped after."""
        return ScrollRequest(self.pred, self.limit + self.offset, None, self.with_payload,
                             self.with_vector)
