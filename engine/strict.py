"""Strict mode: a collection's `strict_mode_config`, validated at PUT/PATCH and enforced.

Enforced only while `enabled` is true, with Qdrant's messages ("<error>. Help: <solution>",
400). A field Quiver cannot enforce (rate limits, payload storage size, resident memory) is
refused at create/update with a 400 naming it, never stored and ignored.

Write-side checks run from `api/parse/writes.apply_body` (`check_write`) and
`Collection.create_index` (`check_index_count`); read-side ones are `check_read`, for the
read parsers to call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from engine.errors import BadRequest
from engine.filters import FILTER_KEYS

# engine.collection imports this module: a collection is typed structurally here (no cycle)
Collection = Any


def _uint(minimum: int) -> Any:
    def check(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= minimum
    return check


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0


def _per_vector(key: str) -> Any:
    """sparse_config / multivector_config: {vector name: {key: uint >= 1}}."""
    def check(v: Any) -> bool:
        return isinstance(v, dict) and all(
            isinstance(c, dict) and set(c) <= {key}
            and (c.get(key) is None or _uint(1)(c[key])) for c in v.values())
    return check


FIELDS: dict[str, Any] = {
    "enabled": _bool, "max_query_limit": _uint(1), "max_timeout": _uint(1),
    "unindexed_filtering_retrieve": _bool, "unindexed_filtering_update": _bool,
    "search_max_hnsw_ef": _uint(0), "search_allow_exact": _bool,
    "search_max_oversampling": _number, "upsert_max_batchsize": _uint(0),
    "search_max_batchsize": _uint(0), "max_collection_vector_size_bytes": _uint(0),
    "max_points_count": _uint(1), "filter_max_conditions": _uint(0),
    "condition_max_size": _uint(0), "max_payload_index_count": _uint(0),
    "sparse_config": _per_vector("max_length"), "multivector_config": _per_vector("max_vectors"),
}
# Qdrant fields Quiver has nothing to enforce them with: refused, never silently ignored.
UNSUPPORTED = {
    "read_rate_limit": "rate limiting is not implemented by Quiver",
    "write_rate_limit": "rate limiting is not implemented by Quiver",
    "max_collection_payload_size_bytes": "Quiver does not track payload storage size",
    "max_resident_memory_percent": "deprecated in Qdrant; Quiver does not measure it",
}


def parse_config(raw: Any, strict: bool = True, base: dict[str, Any] | None = None
                 ) -> dict[str, Any] | None:
    """A StrictModeConfig (diff) merged over `base` → the stored dict (nulls: unchanged).
    strict (a request): a bad or unsupported field is a 400; not strict (stored state):
    it is dropped."""
    if raw is None:
        return base
    if not isinstance(raw, dict):
        if strict:
            raise BadRequest("`strict_mode_config` must be an object")
        return base
    out = dict(base or {})
    for key, value in raw.items():
        if value is None:
            continue
        problem = None
        if key in UNSUPPORTED:
            problem = f"is not supported: {UNSUPPORTED[key]}"
        elif key not in FIELDS:
            problem = "is not a strict mode field"
        elif not FIELDS[key](value):
            problem = f"has an invalid value {value!r}"
        if problem is not None:
            if strict:
                raise BadRequest(f"`strict_mode_config.{key}` {problem}")
            continue
        if key in ("sparse_config", "multivector_config"):
            merged = dict(out.get(key) or {})
            merged.update({n: {k: v for k, v in c.items() if v is not None}
                           for n, c in value.items()})
            value = merged
        out[key] = value
    return out


def _active(coll: Collection) -> dict[str, Any] | None:
    cfg = coll.config.strict_mode_config
    return cfg if isinstance(cfg, dict) and cfg.get("enabled") is True else None


def enforced(coll: Collection) -> bool:
    """Whether strict mode checks this collection's requests at all (callers skip gathering
    a request's limits when it does not: most collections)."""
    return _active(coll) is not None


def _error(error: str, solution: str) -> BadRequest:
    return BadRequest(f"{error}. Help: {solution}")


def _limit(value: Any, limit: Any, name: str) -> None:
    if value is not None and limit is not None and value > limit:
        raise _error(f'Limit exceeded {value} > {limit} for "{name}"',
                     f'Reduce the "{name}" parameter to or below {limit}.')


def _mb(limit: int) -> str:
    """Rust's f32 Display of bytes / MiB (shortest round-trip, never exponent notation)."""
    return np.format_float_positional(np.float32(limit / (1024.0 * 1024.0)), trim="-")


# ---- filters ----------------------------------------------------------------------------------

def _conditions(flt: Any) -> Iterator[Any]:
    if not isinstance(flt, dict):
        return
    for key in ("must", "should", "must_not"):
        cs = flt.get(key)
        yield from (cs if isinstance(cs, list) else [cs] if isinstance(cs, dict) else [])
    ms = flt.get("min_should")
    if isinstance(ms, dict) and isinstance(ms.get("conditions"), list):
        yield from ms["conditions"]


def _is_filter(c: Any) -> bool:
    """A condition that is itself a filter ({"must"|"should"|...: [...]}), as the parser
    takes a nested clause (engine/filters.py)."""
    return isinstance(c, dict) and "key" not in c and bool(set(c) & FILTER_KEYS)


def _count(flt: Any) -> int:
    """Qdrant's total_conditions_count: leaves, nested filters counted through."""
    total = 0
    for c in _conditions(flt):
        if _is_filter(c):
            total += _count(c)
        elif isinstance(c, dict) and isinstance(c.get("nested"), dict):
            total += _count(c["nested"].get("filter"))
        else:
            total += 1
    return total


def _sizes(flt: Any) -> Iterator[int]:
    """Input sizes of the conditions (match any / except values, has_id ids)."""
    for c in _conditions(flt):
        if not isinstance(c, dict):
            continue
        if _is_filter(c):
            yield from _sizes(c)
        elif isinstance(c.get("nested"), dict):
            yield from _sizes(c["nested"].get("filter"))
        elif isinstance(c.get("has_id"), list):
            yield len(c["has_id"])
        elif isinstance(c.get("match"), dict):
            for k in ("any", "except"):
                if isinstance(c["match"].get(k), list):
                    yield len(c["match"][k])


def _index_types(c: dict[str, Any]) -> list[str]:
    """The payload index types that could serve a field condition (for the message)."""
    m = c.get("match")
    if isinstance(m, dict):
        if "text" in m or "phrase" in m or "text_any" in m:
            return ["text"]
        many = m.get("any") if isinstance(m.get("any"), list) else m.get("except")
        v = m["value"] if "value" in m else (many[0] if isinstance(many, list) and many
                                             else None)
        if isinstance(v, bool):
            return ["bool"]
        if isinstance(v, int):
            return ["integer"]
        return ["keyword", "uuid"] if isinstance(v, str) else ["integer", "keyword"]
    if c.get("range") is not None:
        r = c["range"]
        if isinstance(r, dict) and any(isinstance(v, str) for v in r.values()):
            return ["datetime"]
        return ["float", "integer"]
    if any(c.get(k) is not None for k in ("geo_radius", "geo_bounding_box", "geo_polygon")):
        return ["geo"]
    return ["bool", "datetime", "float", "geo", "integer", "keyword", "text", "uuid"]


def _unindexed(flt: Any, indexed: set[str], prefix: str = "") -> tuple[str, list[str]] | None:
    for c in _conditions(flt):
        if not isinstance(c, dict):
            continue
        if _is_filter(c):
            found = _unindexed(c, indexed, prefix)
        elif isinstance(c.get("nested"), dict):
            found = _unindexed(c["nested"].get("filter"), indexed,
                               f"{prefix}{c['nested'].get('key')}[].")
        elif isinstance(c.get("key"), str) and not any(
                k in c for k in ("is_empty", "is_null")):
            key = prefix + c["key"]
            found = None if key in indexed else (key, _index_types(c))
        else:
            found = None
        if found is not None:
            return found
    return None


def check_filter(coll: Collection, flt: Any, allow_unindexed: Any) -> None:
    """A filter under strict mode: its condition count and sizes, then (where the config
    says false) every key it reads must have a payload index."""
    cfg = _active(coll)
    if cfg is None or flt is None:
        return
    limit = cfg.get("filter_max_conditions")
    if limit is not None and _count(flt) > limit:
        raise _error(f"Filter condition limit reached ({_count(flt)} > {limit})",
                     "Reduce the amount of conditions of your filter.")
    limit = cfg.get("condition_max_size")
    size = max(_sizes(flt), default=0)
    if limit is not None and size > limit:
        raise _error(f"Condition size limit reached ({size} > {limit})",
                     "Reduce the size of your condition.")
    if allow_unindexed is False:
        found = _unindexed(flt, set(coll.payload_schema))
        if found is not None:
            key, types = found
            raise _error(f'Index required but not found for "{key}" of one of the following '
                         f"types: [{', '.join(sorted(set(types)))}]",
                         "Create an index for this key or use a different filter.")


# ---- writes -----------------------------------------------------------------------------------

def _point_vectors(kind: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each point's vectors as {name: raw vector} (a bare vector under "")."""
    if kind == "upsert" and isinstance(body.get("batch"), dict):
        vecs = body["batch"].get("vectors")
        if isinstance(vecs, dict):
            for name, rows in vecs.items():
                for r in rows if isinstance(rows, list) else []:
                    yield {name: r}
        elif isinstance(vecs, list):
            yield from ({"": r} for r in vecs)
        return
    for p in body.get("points") or []:
        v = p.get("vector") if isinstance(p, dict) else None
        yield v if isinstance(v, dict) else {"": v}


def _vector_limits(cfg: dict[str, Any], kind: str, body: dict[str, Any]) -> None:
    sparse = {n: c.get("max_length") for n, c in (cfg.get("sparse_config") or {}).items()}
    multi = {n: c.get("max_vectors") for n, c in (cfg.get("multivector_config") or {}).items()}
    if not any(v is not None for v in (*sparse.values(), *multi.values())):
        return
    for vectors in _point_vectors(kind, body):
        for name, v in vectors.items():
            if sparse.get(name) is not None and isinstance(v, dict):
                n = len(v.get("indices") or [])
                if n > sparse[name] or len(v.get("values") or []) > sparse[name]:
                    raise BadRequest(f"Sparse vector '{name}' has a limit of {sparse[name]} "
                                     f"indices, but {n} were provided!")
            limit = multi.get(name)
            if limit is not None and isinstance(v, list) and v and isinstance(v[0], list) \
                    and len(v) > limit:
                raise BadRequest(f"Multivector '{name}' has a limit of {limit} vectors, but "
                                 f"{len(v)} were provided!")


def _vector_bytes(coll: Collection) -> int:
    """Estimated vector storage: dense rows of live points, sparse and multivector data."""
    total = 0
    widths = {"float32": 4, "float16": 2, "uint8": 1}
    for seg in coll.segments:
        n = seg.n
        live = ~seg.deleted[:n]
        for name, spec in coll.config.vectors.items():
            has = int(np.count_nonzero(seg.present[name][:n] & live))
            total += has * spec.size * widths.get(spec.datatype, 4)
        total += sum(store.nnz * 8 for store in seg.sparse.values())
        total += sum(store.ntok * store.dim * 4 for store in seg.multi.values())
    return total


def _size_limits(coll: Collection, cfg: dict[str, Any]) -> None:
    limit = cfg.get("max_collection_vector_size_bytes")
    if limit is not None and _vector_bytes(coll) >= limit:
        raise BadRequest(f"Max vector storage size limit of {_mb(limit)}MB reached!")
    limit = cfg.get("max_points_count")
    if limit is not None and coll.points_count() >= limit:
        raise BadRequest(f"Max points count limit of {limit} reached!")


def _selector_filter(body: dict[str, Any]) -> Any:
    sel = body.get("points")
    if isinstance(sel, dict) and "filter" in sel:
        return sel["filter"]
    return body.get("filter") if sel is None else None


def check_write(coll: Collection, kind: str, body: Any) -> None:
    """A point write (a writes.WRITES name and its parsed-OK body) under strict mode."""
    cfg = _active(coll)
    if cfg is None or not isinstance(body, dict):
        return
    allow = cfg.get("unindexed_filtering_update")
    if kind in ("upsert", "update_vectors"):
        if kind == "upsert":
            batch = body.get("batch")
            n = len(batch.get("ids") or []) if isinstance(batch, dict) \
                else len(body.get("points") or [])
        else:
            n = len(body.get("points") or [])
        _limit(n, cfg.get("upsert_max_batchsize"),
               "upsert limit" if kind == "upsert" else "update limit")
        _size_limits(coll, cfg)
        _vector_limits(cfg, kind, body)
        check_filter(coll, body.get("update_filter"), allow)
    else:
        check_filter(coll, _selector_filter(body), allow)


def check_index_count(coll: Collection, field: str) -> None:
    """PUT /index under strict mode: a new index beyond max_payload_index_count."""
    cfg = _active(coll)
    limit = cfg.get("max_payload_index_count") if cfg else None
    if limit is not None and field not in coll.payload_schema \
            and len(coll.payload_schema) >= limit:
        raise _error(f"Collection already has the maximum number of payload indices ({limit})",
                     "Please delete an existing index before creating a new one.")


# ---- reads (called by the read parsers) -------------------------------------------------------

def check_read(coll: Collection, *, limit: int | None = None, flt: Any = None,
               exact: bool | None = None, hnsw_ef: int | None = None,
               oversampling: float | None = None, timeout: int | None = None,
               batch_size: int | None = None) -> None:
    """One read request (or each search of a batch) under strict mode: `limit` (Qdrant: the
    request's limit, or its default when omitted), the raw filter JSON, search params, the
    `timeout` query parameter and the number of searches in a batch."""
    cfg = _active(coll)
    if cfg is None:
        return
    _limit(timeout, cfg.get("max_timeout"), "timeout")
    _limit(batch_size, cfg.get("search_max_batchsize"), "search batch size")
    _limit(limit, cfg.get("max_query_limit"), "limit")
    check_filter(coll, flt, cfg.get("unindexed_filtering_retrieve"))
    if exact and cfg.get("search_allow_exact") is False:
        raise _error("Exact search disabled!", "Set exact=false.")
    _limit(oversampling, cfg.get("search_max_oversampling"), "oversampling")
    _limit(hnsw_ef, cfg.get("search_max_hnsw_ef"), "hnsw_ef")
