"""What every route parses: its collection, boolean flags, limits, selectors, search params.

Imports nothing from api.http, so the HTTP plumbing may use these helpers too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from api.auth import Need
from engine.errors import BadRequest, Forbidden
from engine.quantization import QuantSearch

if TYPE_CHECKING:
    from engine.collection import Collection


def state_dict(app: Any) -> dict[str, Any]:
    """An app's `state` attributes as a dict: Starlette's State keeps them in `_state` and
    reaches each through a Python-level __getattr__ (two of them were a tenth of a cheap
    read's gate, py-spy); anything else (a test's namespace): its __dict__."""
    state = app.state
    attrs = getattr(state, "_state", None)
    return attrs if isinstance(attrs, dict) else vars(state)


def collection(request: Request) -> Collection:
    """The collection named in the path (an alias resolves; a missing one is a 404)."""
    # the attributes, not the scope: gRPC and cluster handlers pass request-like objects
    return state_dict(request.app)["catalog"].get(request.path_params["collection_name"])


def lookup(request: Request) -> Callable[[str], Collection]:
    """Collections a body names besides the path's (`lookup_from`, `with_lookup`), by name:
    under JWT RBAC each needs read access too, as in Qdrant (the middleware only saw the
    path's collection)."""
    catalog = request.app.state.catalog
    access = getattr(request.state, "access", None)
    if access is None:
        return catalog.get

    def checked(name: str) -> Collection:
        message = access.refusal(Need.COLL_READ, name)
        if message is not None:
            raise Forbidden(message)
        return catalog.get(name)
    return checked


def path_point_id(raw: str) -> int | str:
    """A point id from the URL path: an integer when it is one, else the string (a UUID, or
    an invalid id that parse_id reports). ASCII digits only: str.isdigit() also accepts "¹"
    or "１", which int() rejects or reads."""
    return int(raw) if raw.isascii() and raw.isdigit() else raw


# ---- booleans ---------------------------------------------------------------------------------


def query_flag(request: Request, name: str, default: bool = False,
               strict: bool = False) -> bool:
    """A boolean query parameter. Lenient by default (anything but true/1/yes is false, as
    the write endpoints' `wait`); `strict` accepts only true/false, as Qdrant's snapshot
    endpoints do."""
    v = request.query_params.get(name)
    if v is None:
        return default
    if strict:
        if v not in ("true", "false"):
            raise BadRequest(
                f"Deserialize error in query parameters: invalid value {v!r} for {name}")
        return v == "true"
    return v.lower() in ("true", "1", "yes")


def body_bool(value: Any, name: str) -> bool | None:
    """A boolean field of a request body; None when absent or null."""
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"`{name}` must be a boolean")
    return value


# ---- numbers ----------------------------------------------------------------------------------


def limit(v: Any, default: int = 10) -> int:
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise BadRequest(f"limit value {v} is invalid. Must be 1 or larger.")
    return v


def offset(v: Any) -> int:
    if v is None:
        return 0
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise BadRequest(f"offset value {v} is invalid. Must be 0 or larger.")
    return v


def score_threshold(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadRequest("`score_threshold` must be a number")
    return float(v)


def search_params(params: Any) -> tuple[int | None, bool]:
    """Qdrant's SearchParams → (hnsw_ef or None, exact): `hnsw_ef` and `exact` steer the
    index; the rest (quantization, indexed_only, acorn) is accepted and changes nothing here."""
    if params is None:
        return None, False
    if not isinstance(params, dict):
        raise BadRequest("`params` must be an object")
    ef = params.get("hnsw_ef")
    if ef is not None and (isinstance(ef, bool) or not isinstance(ef, int) or ef < 0):
        raise BadRequest("`params.hnsw_ef` must be a non-negative integer")
    exact = body_bool(params.get("exact"), "params.exact")
    return (ef or None), bool(exact)


def quantization_params(params: Any) -> QuantSearch | None:
    """Qdrant's `params.quantization` (QuantizationSearchParams) → typed, or None when not
    given. On a collection without quantization it is accepted and changes nothing."""
    q = params.get("quantization") if isinstance(params, dict) else None
    if q is None:
        return None
    if not isinstance(q, dict):
        raise BadRequest("`params.quantization` must be an object")
    ignore = body_bool(q.get("ignore"), "params.quantization.ignore")
    rescore = body_bool(q.get("rescore"), "params.quantization.rescore")
    over = q.get("oversampling")
    if over is not None and (isinstance(over, bool) or not isinstance(over, int | float)
                             or not over >= 1.0 or over == float("inf")):
        raise BadRequest("`params.quantization.oversampling` must be a number >= 1, "
                         f"got {over!r}")
    return QuantSearch(bool(ignore), rescore, float(over) if over is not None else 1.0)


# ---- selectors --------------------------------------------------------------------------------


def selectors(body: dict[str, Any], payload_default: bool) -> tuple[Any, Any]:
    """(with_payload, with_vector) of a read request. `with_vectors` is an alias of
    `with_vector` (which wins when both are given); null counts as absent. The payload is
    returned by default by retrieve and scroll, not by search and query; vectors never are."""
    wp = body.get("with_payload")
    wv = body.get("with_vector", body.get("with_vectors"))
    return (payload_default if wp is None else wp), (False if wv is None else wv)
