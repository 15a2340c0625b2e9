"""A read's view of a collection: the segment list and row counts at one instant.

Reads take a view under the write lock (microseconds) and compute without it. Results render
through `by_id`, so a segment replaced by a vacuum meanwhile is still the one the handles
point into. `live` is the collection's current segment table (read, never written, here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from engine.config import CollectionConfig
from engine.id_tracker import IdTracker
from engine.segment import Segment

# Set while a read runs inline on the API's event loop (api/http.py): taking a view then must
# not wait for the write lock (a stalled loop stalls every request, /healthz included), so
# Collection.view() raises WouldBlock instead and the API reruns the read in its thread pool.
INLINE: ContextVar[bool] = ContextVar("quiver_inline_read", default=False)


class WouldBlock(Exception):  # noqa: N818 - a signal to retry elsewhere, not an error
    """An inline read would have waited for a lock: rerun it where waiting is fine. Never an
    EngineError: it must not reach a client (the API catches it before the envelope)."""


@dataclass(slots=True)
class View:  # immutable by convention (a frozen dataclass costs microseconds per read)
    segments: list[tuple[Segment, int]]  # (segment, rows visible to this read)
    by_id: dict[int, Segment]
    live: Mapping[int, Segment]
    ids: IdTracker
    config: CollectionConfig
    payload_schema: Mapping[str, Any]
    on_device_failure: Callable[[str], None]  # the collection moves to the CPU
    found: list[int]  # handles of the ids the view was taken for, looked up with it

    def index_type(self, field: str) -> str | None:
        entry = self.payload_schema.get(field)
        return entry["type"] if entry else None

    def hnsw_ef_construct(self) -> int:
        return int(self.config.hnsw_config.get("ef_construct") or 100)


class Readable(Protocol):
    """What the read paths need of a collection (engine.collection.Collection)."""

    def view(self, ids: list[Any] | None = None) -> View: ...

    def search(self, specs: list[Any]) -> list[list[dict[str, Any]]]: ...
