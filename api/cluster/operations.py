"""What the router does per REST route in cluster mode: (method, template) → operation.

Collections are created on every replica and listed from the metadata; writes are validated
once against the collection's config (bad input: 400, nothing stored anywhere), split by
shard and fanned out; reads are scattered and merged exactly (api/cluster/merge.py). A route
or a request form missing here answers 400 naming it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from api.cluster import aliases, merge, plans
from api.cluster.split import shard_of, split_write, unsupported
from api.http import body_dict
from api.parse import common, legacy, reads
from api.parse import groups as parse_groups
from api.parse.matrix import matrix_request
from api.parse.writes import WRITES, batch_ops
from engine.config import apply_update
from engine.errors import AlreadyExists, BadRequest
from engine.groups import key_selector
from engine.ids import parse_id, parse_ids
from engine.matrix import vector_name

if TYPE_CHECKING:
    from api.cluster.router import ClusterRouter

Op = Callable[["ClusterRouter", Any, str, Any], Any]
C = "/collections/{collection_name}"
P = C + "/points"
FACET_ALL = (1 << 31) - 1  # per shard: every value, so that the summed counts are exact


def _name(req: Any) -> str:
    return req.path_params["collection_name"]


def _args(req: Any) -> tuple[dict[str, str], dict[str, str]]:
    return dict(req.path_params), dict(req.query_params)


# ---------------------------------------------------------------- collections


def list_collections(rt: ClusterRouter, req: Any, t: str, body: Any) -> dict[str, Any]:
    return {"collections": [{"name": n} for n in rt.state["collections"]]}


def create(rt: ClusterRouter, req: Any, t: str, body: Any) -> bool:
    name = _name(req)
    if name in aliases.table(rt):
        raise AlreadyExists(f"Collection `{name}` already exists!")
    return rt.create(name, body, *_args(req))


def info(rt: ClusterRouter, req: Any, t: str, body: Any) -> dict[str, Any]:
    return rt.info(_name(req), *_args(req))


def delete(rt: ClusterRouter, req: Any, t: str, body: Any) -> bool:
    plans.forget(rt, _name(req))
    return rt.delete(_name(req))  # by alias: no such collection, a no-op as on one node


def exists(rt: ClusterRouter, req: Any, t: str, body: Any) -> dict[str, bool]:
    return {"exists": _name(req) in rt.state["collections"]}


def everywhere(rt: ClusterRouter, req: Any, t: str, body: Any) -> Any:
    """A change of the collection itself (config, payload index): every replica of every
    shard."""
    name = _name(req)
    rt._entry(name)
    out = rt.broadcast(name, req.method, t, *_args(req), body)
    plans.forget(rt, name)  # payload indexes: the scratch collections copy them
    if req.method == "PATCH":
        rt.update_config(name, apply_update(rt.configs[name], body_dict(body)))
    return out


# ---------------------------------------------------------------- writes

WRITE_ROUTES = {
    "upsert": ("PUT", P), "delete": ("POST", P + "/delete"),
    "set_payload": ("POST", P + "/payload"), "overwrite_payload": ("PUT", P + "/payload"),
    "delete_payload": ("POST", P + "/payload/delete"),
    "clear_payload": ("POST", P + "/payload/clear"),
    "update_vectors": ("PUT", P + "/vectors"), "delete_vectors": ("POST", P + "/vectors/delete"),
}


def _apply(rt: ClusterRouter, req: Any, kind: str, body: Any) -> Any:
    name = _name(req)
    entry = rt._entry(name)
    b = body_dict(body)
    WRITES[kind](rt.configs[name], b)  # validated once, before any shard sees it
    method, template = WRITE_ROUTES[kind]
    return rt.write(name, split_write(kind, b, entry["shard_number"]), method, template,
                    *_args(req))


def _writer(kind: str) -> Op:
    def op(rt: ClusterRouter, req: Any, t: str, body: Any) -> Any:
        return _apply(rt, req, kind, body)
    return op


def batch(rt: ClusterRouter, req: Any, t: str, body: Any) -> list[Any]:
    rt._entry(_name(req))
    return [_apply(rt, req, kind, args) for kind, args in batch_ops(body_dict(body))]


# ---------------------------------------------------------------- point reads


def retrieve(rt: ClusterRouter, req: Any, t: str, body: Any) -> list[Any]:
    name = _name(req)
    entry = rt._entry(name)
    b = body_dict(body)
    raw = b.get("ids")
    if not isinstance(raw, list) or not raw:
        return rt.read(name, {0: ("POST", t, b)}, *_args(req))[0]  # its answer or its error
    shards = shard_of(parse_ids(raw), entry["shard_number"]).tolist()
    parts: dict[int, list[Any]] = {}
    for s, pid in zip(shards, raw, strict=True):
        parts.setdefault(s, []).append(pid)
    got = rt.read(name, {s: ("POST", t, {**b, "ids": ids}) for s, ids in parts.items()},
                  *_args(req))
    return merge.retrieve(list(got.values()), raw)


def get_point(rt: ClusterRouter, req: Any, t: str, body: Any) -> Any:
    name = _name(req)
    entry = rt._entry(name)
    try:
        sid = int(shard_of([parse_id(common.path_point_id(req.path_params["id"]))],
                           entry["shard_number"])[0])
    except BadRequest:
        sid = 0  # shard 0 answers the invalid id's error
    return rt.read(name, {sid: ("GET", t, None)}, *_args(req))[sid]


def scroll(rt: ClusterRouter, req: Any, t: str, body: Any) -> dict[str, Any]:
    name = _name(req)
    b = body_dict(body)
    limit = common.limit(b.get("limit"), 10)
    order_by = b.get("order_by")
    if order_by is not None:
        pages = rt.read_all(name, "POST", t, *_args(req), {**b, "limit": limit})
        desc = isinstance(order_by, dict) and order_by.get("direction") == "desc"
        return merge.scroll_ordered(pages, limit, desc)
    pages = rt.read_all(name, "POST", t, *_args(req), {**b, "limit": limit + 1})
    return merge.scroll(pages, limit)


def count(rt: ClusterRouter, req: Any, t: str, body: Any) -> dict[str, int]:
    return merge.count(rt.read_all(_name(req), "POST", t, *_args(req), body))


def facet(rt: ClusterRouter, req: Any, t: str, body: Any) -> dict[str, Any]:
    b = body_dict(body)
    limit = common.limit(b.get("limit"), 10)
    results = rt.read_all(_name(req), "POST", t, *_args(req), {**b, "limit": FACET_ALL})
    return merge.facet(results, limit)


# ---------------------------------------------------------------- searches


def _idf_checked(rt: ClusterRouter, name: str, using: Any) -> None:
    plans.check_exact(rt, name, {"using": using})


def query_points(rt: ClusterRouter, req: Any, t: str, body: Any) -> dict[str, Any]:
    name = _name(req)
    rt._entry(name)
    return {"points": plans.query(rt, name, _args(req), body_dict(body))}


def _searches(body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    b = body_dict(body)
    items = b.get("searches")
    if not isinstance(items, list):
        raise BadRequest("`searches` must be a list")
    return b, [body_dict(i) for i in items]


def query_batch(rt: ClusterRouter, req: Any, t: str, body: Any) -> list[dict[str, Any]]:
    """Direct plans in one scatter, the others (central plans) one by one."""
    name = _name(req)
    rt._entry(name)
    args = _args(req)
    b, items = _searches(body)
    resolved = [plans.resolve(rt, name, args, i) for i in items]
    simple = [n for n, r in enumerate(resolved) if plans.is_direct(r)]
    out: list[Any] = [None] * len(items)
    if simple:
        results = rt.read_all(name, "POST", t, *args,
                              {**b, "searches": [plans.widened(resolved[n]) for n in simple]})
        for k, n in enumerate(simple):
            r = resolved[n]
            out[n] = {"points": plans.merge_node(
                rt, name, r, [res[k]["points"] for res in results],
                common.offset(r.get("offset")), common.limit(r.get("limit"), 10))}
    for n, r in enumerate(resolved):
        if out[n] is None:
            out[n] = {"points": plans.run(rt, name, args, r)}
    return out


def _search_using(b: dict[str, Any]) -> Any:
    v = b.get("vector")
    return v.get("name") if isinstance(v, dict) else None


def _search_merge(rt: ClusterRouter, name: str, b: dict[str, Any],
                  lists: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    offset, limit = common.offset(b.get("offset")), common.limit(b.get("limit"), 10)
    using = _search_using(b)
    _idf_checked(rt, name, using)
    asc = plans.ascending(rt, name, {"query": [], "using": using})
    return merge.scored(lists, offset, limit, asc)


def search(rt: ClusterRouter, req: Any, t: str, body: Any) -> list[dict[str, Any]]:
    name = _name(req)
    rt._entry(name)
    b = body_dict(body)
    return _search_merge(rt, name, b, rt.read_all(name, "POST", t, *_args(req),
                                                  plans.widened(b)))


def search_batch(rt: ClusterRouter, req: Any, t: str, body: Any) -> list[list[dict[str, Any]]]:
    name = _name(req)
    rt._entry(name)
    b, items = _searches(body)
    results = rt.read_all(name, "POST", t, *_args(req),
                          {**b, "searches": [plans.widened(i) for i in items]})
    return [_search_merge(rt, name, i, [r[n] for r in results]) for n, i in enumerate(items)]


def _legacy(convert: Callable[[dict[str, Any]], dict[str, Any]], batch: bool) -> Op:
    """Legacy recommend / discover (and their batches): query bodies (api/parse/legacy.py),
    answered as lists of points."""
    def op(rt: ClusterRouter, req: Any, t: str, body: Any) -> Any:
        name = _name(req)
        rt._entry(name)
        items = reads.searches(body_dict(body)) if batch else [body]
        out = []
        for raw in items:
            b = body_dict(raw)
            if b.get("limit") is None:  # required in Qdrant's legacy bodies
                raise BadRequest("Json deserialize error: missing field `limit`")
            out.append(plans.query(rt, name, _args(req), convert(b)))
        return out if batch else out[0]
    return op


def _lookup_target(rt: ClusterRouter, raw: Any) -> tuple[str, Any, Any] | None:
    """`with_lookup` (as api/parse/groups.py reads it): (collection, with_payload,
    with_vector); the collection must exist."""
    if raw is None:
        return None
    wp: Any
    wv: Any
    if isinstance(raw, str):
        coll, wp, wv = raw, True, False
    elif isinstance(raw, dict) and isinstance(raw.get("collection"), str):
        coll = raw["collection"]
        wp = raw.get("with_payload")
        wv = raw.get("with_vectors", raw.get("with_vector"))
        wp, wv = True if wp is None else wp, False if wv is None else wv
    else:
        raise BadRequest("`with_lookup` must be a collection name or {\"collection\": ...}")
    real = aliases.resolve(rt, coll)
    rt._entry(real)
    return real, wp, wv


def _add_lookups(rt: ClusterRouter, args: tuple[dict[str, str], dict[str, str]],
                 target: tuple[str, Any, Any], groups: list[dict[str, Any]]) -> None:
    """Each group's point of the lookup collection whose id is the group id."""
    coll, wp, wv = target
    ids = []
    for g in groups:
        with contextlib.suppress(BadRequest):  # a group id that is no point id: no lookup
            ids.append((g, parse_id(g["id"])))
    found = {parse_id(r["id"]): r
             for r in plans.fetch(rt, coll, args, [g["id"] for g, _ in ids], wp, wv)}
    for g, pid in ids:
        if pid in found:
            g["lookup"] = found[pid]


def groups(rt: ClusterRouter, req: Any, t: str, body: Any) -> dict[str, Any]:
    """Direct plans in two rounds: every shard's best groups decide which groups win (a
    group's best hit is among its shard's best groups); then every shard gives its hits of
    just those groups. Plans with prefetch run centrally (api/cluster/plans.py)."""
    name = _name(req)
    rt._entry(name)
    args = _args(req)
    b = dict(body_dict(body))
    legacy_form = not t.endswith("/query/groups")
    if t.endswith("/search/groups"):
        b = parse_groups.search_as_query(b)
    elif t.endswith("/recommend/groups"):
        b = legacy.recommend_as_query(b)
    key = parse_groups._group_by(b)
    size = parse_groups._positive(b, "group_size", None if legacy_form else 3)
    limit = parse_groups._positive(b, "limit", None if legacy_form else 10)
    b.update(group_size=size, limit=limit)
    target = _lookup_target(rt, b.pop("with_lookup", None))
    b = plans.resolve(rt, name, args, b)
    if plans.prefetches(b):
        not_empty = {"must_not": [{"is_empty": {"key": key_selector(key)[0]}}]}
        out = plans.central(rt, name, args, b, plans.GROUPS, not_empty, size)
        plans.with_vectors_from_shards(rt, name, args, b,
                                       [h for g in out["groups"] for h in g["hits"]])
    else:
        out = _groups_direct(rt, name, args, b, key, size, limit)
    if target is not None:
        _add_lookups(rt, args, target, out["groups"])
    return out


def _groups_direct(rt: ClusterRouter, name: str, args: tuple[dict[str, str], dict[str, str]],
                   b: dict[str, Any], key: str, size: int, limit: int) -> dict[str, Any]:
    kind = plans.kind_of(b.get("query"))
    if kind in ("none", "order_by", "sample"):
        raise unsupported("a grouped search without a vector query" if kind == "none" else
                          f"a grouped search by `{kind}`")
    if plans.prefetches(b) or plans.mmr_of(b) is not None:
        raise unsupported("`mmr` in a grouped search without `prefetch`")
    asc = plans.ascending(rt, name, b)
    first = merge.groups(rt.read_all(name, "POST", plans.GROUPS, *args, b), limit, size, asc)
    chosen = [g["id"] for g in first["groups"]]
    if not chosen:
        return first
    # match any takes keywords or integers, not both: one condition per kind
    kinds = ([v for v in chosen if isinstance(v, str)], [v for v in chosen if isinstance(v, int)])
    only = {"should": [{"key": key, "match": {"any": vals}} for vals in kinds if vals]}
    flt = {"must": [only] + ([b["filter"]] if b.get("filter") is not None else [])}
    second = rt.read_all(name, "POST", plans.GROUPS, *args, {**b, "filter": flt})
    return merge.groups(second, limit, size, asc)


# ---------------------------------------------------------------- distance matrix


def matrix(rt: ClusterRouter, req: Any, t: str, body: Any) -> dict[str, Any]:
    """A random sample over all shards (each gives up to `sample` of its points with the
    vector), scored centrally: the sample's vectors in a scratch collection, whose matrix
    route (engine/matrix.py) pairs them all."""
    name = _name(req)
    rt._entry(name)
    args = _args(req)
    b = body_dict(body)
    mreq = matrix_request(b)
    vname = vector_name(SimpleNamespace(config=rt.configs[name]), mreq.using)  # type: ignore[arg-type]
    flt = reads.merge_filters(b.get("filter"), {"must": [{"has_vector": vname}]})
    got = rt.read_all(name, "POST", plans.QUERY, *args, {
        "query": {"sample": "random"}, "filter": flt, "limit": mreq.sample,
        "with_payload": False, "with_vector": False})
    picked = merge.sample([r["points"] for r in got], mreq.sample)
    recs = plans.fetch(rt, name, args, [p["id"] for p in picked], False,
                       [vname] if vname else True)
    sc = plans.scratch(rt)
    with sc.collection(rt, name, args, plans.as_points(recs)) as tmp:
        return sc.call("POST", t, tmp, {"sample": max(len(recs), 2), "limit": mreq.limit,
                                        "using": mreq.using})


# ---------------------------------------------------------------- aliases


def update_aliases(rt: ClusterRouter, req: Any, t: str, body: Any) -> bool:
    return aliases.update(rt, body_dict(body).get("actions"))


def list_aliases(rt: ClusterRouter, req: Any, t: str, body: Any) -> dict[str, Any]:
    return {"aliases": aliases.listing(rt)}


def collection_aliases(rt: ClusterRouter, req: Any, t: str, body: Any) -> dict[str, Any]:
    name = _name(req)
    rt._entry(name)
    return {"aliases": aliases.listing(rt, name)}


class _Renamed:
    """A request whose collection_name (an alias) is replaced by the collection's name."""

    def __init__(self, req: Any, name: str) -> None:
        self._req = req
        self.path_params = {**req.path_params, "collection_name": name}

    def __getattr__(self, key: str) -> Any:
        return getattr(self._req, key)


def _resolving(op: Op) -> Op:
    """Aliases work wherever a collection name does (not in create and delete: creating
    over an alias is a clash, deleting by alias a no-op, as on one node)."""
    def run(rt: ClusterRouter, req: Any, t: str, body: Any) -> Any:
        name = req.path_params.get("collection_name")
        if name is not None:
            real = aliases.resolve(rt, name)
            if real != name:
                req = _Renamed(req, real)
        return op(rt, req, t, body)
    return run


# ---------------------------------------------------------------- the table

_OPS: dict[tuple[str, str], Op] = {
    ("GET", "/collections"): list_collections,
    ("POST", "/collections/aliases"): update_aliases,
    ("GET", "/aliases"): list_aliases,
    ("GET", C): info,
    ("PATCH", C): everywhere,
    ("GET", C + "/exists"): exists,
    ("GET", C + "/aliases"): collection_aliases,
    ("PUT", C + "/index"): everywhere,
    ("DELETE", C + "/index/{field_name:path}"): everywhere,
    **{route: _writer(kind) for kind, route in WRITE_ROUTES.items()},
    ("POST", P + "/batch"): batch,
    ("POST", P): retrieve,
    ("GET", P + "/{id}"): get_point,
    ("POST", P + "/scroll"): scroll,
    ("POST", P + "/count"): count,
    ("POST", C + "/facet"): facet,
    ("POST", P + "/query"): query_points,
    ("POST", P + "/query/batch"): query_batch,
    ("POST", P + "/search"): search,
    ("POST", P + "/search/batch"): search_batch,
    ("POST", P + "/recommend"): _legacy(legacy.recommend_as_query, False),
    ("POST", P + "/recommend/batch"): _legacy(legacy.recommend_as_query, True),
    ("POST", P + "/discover"): _legacy(legacy.discover_as_query, False),
    ("POST", P + "/discover/batch"): _legacy(legacy.discover_as_query, True),
    ("POST", P + "/query/groups"): groups,
    ("POST", P + "/search/groups"): groups,
    ("POST", P + "/recommend/groups"): groups,
    ("POST", P + "/search/matrix/pairs"): matrix,
    ("POST", P + "/search/matrix/offsets"): matrix,
}
OPS: dict[tuple[str, str], Op] = {
    ("PUT", C): create,
    ("DELETE", C): delete,
    **{route: _resolving(op) for route, op in _OPS.items()},
}
