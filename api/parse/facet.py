"""FacetRequest body → engine.facet.FacetRequest."""

from __future__ import annotations

from typing import Any

from api.parse import common
from engine.errors import BadRequest
from engine.facet import DEFAULT_LIMIT, FacetRequest
from engine.filters import parse_filter


def facet_request(b: dict[str, Any]) -> FacetRequest:
    key = b.get("key")
    if not isinstance(key, str) or not key:
        raise BadRequest("`key` must be a non-empty string")
    lim = common.limit(b.get("limit"), DEFAULT_LIMIT)
    exact = common.body_bool(b.get("exact"), "exact")
    return FacetRequest(key, lim, parse_filter(b.get("filter")), bool(exact))
