"""A read request's raw body → the figures strict mode limits (engine/strict.py enforces them).

Called by every read route after its body parsed: the limit (or its default, as Qdrant
counts it), every filter of the request (a query's prefetch filters too), the search params
and the `timeout` query parameter; a batch also reports its size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from engine.strict import check_read, enforced

if TYPE_CHECKING:
    from engine.collection import Collection


def _prefetches(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    pf = body.get("prefetch")
    for p in pf if isinstance(pf, list) else [pf] if isinstance(pf, dict) else []:
        if isinstance(p, dict):
            yield p
            yield from _prefetches(p)


def _object(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _number(v: Any) -> Any:
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


def check(request: Request, coll: Collection, body: dict[str, Any], default_limit: int | None,
          limit_key: str = "limit", batch: int | None = None) -> None:
    """One read body under the collection's strict mode (nothing when it is off)."""
    if not enforced(coll):
        return
    if batch is not None:
        check_read(coll, batch_size=batch)
    params = _object(body.get("params"))
    quant = _object(params.get("quantization"))
    raw_timeout = request.query_params.get("timeout")
    timeout = int(raw_timeout) if raw_timeout is not None and raw_timeout.isdigit() else None
    limit = _number(body.get(limit_key))
    check_read(coll, flt=body.get("filter"), limit=limit if limit is not None else default_limit,
               exact=params.get("exact") is True, hnsw_ef=_number(params.get("hnsw_ef")),
               oversampling=_number(quant.get("oversampling")), timeout=timeout)
    for p in _prefetches(body):  # a prefetch's limit defaults to 10, as the query's
        lim = _number(p.get("limit"))
        check_read(coll, flt=p.get("filter"), limit=lim if lim is not None else 10)
