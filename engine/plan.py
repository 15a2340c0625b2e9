"""Typed read requests: what the API parses a request body into and the engine executes.

A request's vectors are not yet prepared (dimension, finiteness and Cosine normalisation are
checked by the engine against the collection's config).
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
