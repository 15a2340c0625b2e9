"""The read API of a collection: the entry points the HTTP layer (and tools) call.

Each read takes a `View` of the collection (engine/view.py) and computes on it without the
write lock: search (engine/search.py), scroll and count (engine/scroll.py), retrieval by id
(engine/retrieve.py); filters become per-segment masks (engine/tables.py); results are
rendered by engine/render.py.
"""

from __future__ import annotations

from typing import Any

from engine import query_plan
from engine import retrieve as _retrieve
from engine import scroll as _scroll
from engine import search as _search
from engine.ids import PointId
from engine.plan import CountRequest, QueryRequest, RetrieveRequest, ScrollRequest, SearchSpec
from engine.retrieve import get_point, vector_of_point
from engine.tables import filtered_ids, segment_mask, segment_mask_count
from engine.view import Readable

__all__ = ["SearchSpec", "count", "filtered_ids", "get_point", "query_points", "retrieve",
           "scroll", "search", "search_batch", "segment_mask", "segment_mask_count",
           "vector_of_point"]


def search(coll: Readable, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    """For requests: on a device-resident collection concurrent searches are coalesced into
    batches (engine/coalesce.py); on the CPU each runs as it comes."""
    return coll.search(specs)


def search_batch(coll: Readable, specs: list[SearchSpec]) -> list[list[dict[str, Any]]]:
    """Run many searches as one batch now (no coalescing)."""
    return _search.search_batch(coll.view(), specs)


def query_points(coll: Readable, reqs: list[QueryRequest]) -> list[list[dict[str, Any]]]:
    """The universal query API: each request is a query plan (engine/query_plan.py); the
    nearest searches of all plans run level by level, each level as one search batch."""
    return query_plan.execute(coll, reqs)


def scroll(coll: Readable, req: ScrollRequest) -> tuple[list[dict[str, Any]], PointId | None]:
    return _scroll.scroll(coll.view(), req)


def count(coll: Readable, req: CountRequest) -> int:
    return _scroll.count(coll.view(), req)


def retrieve(coll: Readable, req: RetrieveRequest) -> list[dict[str, Any]]:
    return _retrieve.retrieve(coll, req)
