"""Query plans across shards: the whole Query API answered exactly, as one node would.

1. Resolve: every point id a query names (a `nearest` id, recommend / discover / context
   examples; from this collection or from `lookup_from`'s) becomes its vector, fetched from
   the owning shards; ids of this collection are then excluded by a `must_not has_id` in the
   node's own filter, as the engine does (api/parse/reads.py). The plan is vectors only.
2. A plan the shards can answer alone (one vector, example, order_by, sample or no query, no
   prefetch, no mmr) is scattered and merged exactly (merge.py).
3. Any other plan (prefetch trees, fusion, formula, mmr) runs centrally: each leaf — a node
   without prefetch, its ancestors' filters merged in — is scattered (its own limit from
   every shard) and merged exactly; the union of the leaves' points (payloads and vectors)
   is loaded into a scratch collection of the same config on the front end, and there the
   engine itself runs the whole plan, each leaf restricted by `has_id` to the points it found
   globally. Fusion, formula, mmr, order_by and the outer query are the engine's own code over
   exactly the candidates one node would have had. Vectors in the answer come from the shards
   (a scratch copy re-normalises Cosine vectors).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import threading
import uuid
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from api.cluster import aliases, merge
from api.cluster.shard import ShardReplica, raise_relayed
from api.cluster.split import shard_of, unsupported
from api.parse import common
from api.parse.reads import EXAMPLE_KINDS, merge_filters
from engine.errors import BadInput, BadRequest, NotFound
from engine.ids import parse_id

if TYPE_CHECKING:
    from api.cluster.router import ClusterRouter

C = "/collections/{collection_name}"
P = C + "/points"
QUERY, QUERY_BATCH, GROUPS = P + "/query", P + "/query/batch", P + "/query/groups"
Args = tuple[dict[str, str], dict[str, str]]


# ---------------------------------------------------------------- small readers


def kind_of(q: Any) -> str:
    """A `query`'s kind (as api/parse/reads.py names them; `rrf` counts as fusion)."""
    if q is None:
        return "none"
    if isinstance(q, dict):
        for kind in ("nearest", "fusion", "formula", "order_by", "sample", *EXAMPLE_KINDS):
            if kind in q:
                return kind
        if "rrf" in q:
            return "fusion"
        if "indices" in q and "values" in q:
            return "nearest"
        return "unknown"
    return "nearest"


def prefetches(node: dict[str, Any]) -> list[Any]:
    raw = node.get("prefetch")
    return [] if raw is None else raw if isinstance(raw, list) else [raw]


def _is_id(x: Any) -> bool:
    return isinstance(x, int | str) and not isinstance(x, bool)


def mmr_of(node: dict[str, Any]) -> Any:
    q = node.get("query")
    return q.get("mmr") if isinstance(q, dict) and "nearest" in q else None


def is_direct(node: dict[str, Any]) -> bool:
    """Whether the shards answer this (resolved) plan alone, merged by merge.py."""
    return not prefetches(node) and mmr_of(node) is None and \
        kind_of(node.get("query")) not in ("fusion", "formula", "unknown")


def ascending(rt: ClusterRouter, name: str, node: dict[str, Any]) -> bool:
    """Whether smaller scores rank first: a nearest search by a distance (Euclid,
    Manhattan), average_vector recommendations too; custom scores never."""
    kind = kind_of(node.get("query"))
    if kind == "recommend":
        rec = node["query"]["recommend"]
        if isinstance(rec, dict) and (rec.get("strategy") or "average_vector") != \
                "average_vector":
            return False
    elif kind != "nearest":
        return False
    using = node.get("using")
    cfg = rt.configs[name]
    if not isinstance(using, str | None) or cfg.is_sparse(using):
        return False
    spec = cfg.multivectors[using or ""] if cfg.is_multi(using) else cfg.vector(using)
    return not spec.distance.higher_is_better


def check_exact(rt: ClusterRouter, name: str, node: dict[str, Any]) -> None:
    """Sparse vectors weighed by IDF: each shard knows only its own document frequencies."""
    using = node.get("using")
    cfg = rt.configs[name]
    if isinstance(using, str) and cfg.is_sparse(using) and cfg.sparse_idf(using):
        raise unsupported(f"a query on sparse vector `{using}` with `modifier: idf` (IDF "
                          "over all shards)")
    for p in prefetches(node):
        if isinstance(p, dict):
            check_exact(rt, name, p)


# ---------------------------------------------------------------- points from the shards


def fetch(rt: ClusterRouter, name: str, args: Args, ids: list[Any], with_payload: Any,
          with_vector: Any) -> list[dict[str, Any]]:
    """The points of `ids` (in that order, missing ones left out), from their shards."""
    if not ids:
        return []
    n = rt._entry(name)["shard_number"]
    parts: dict[int, list[Any]] = {}
    for s, pid in zip(shard_of([parse_id(i) for i in ids], n).tolist(), ids, strict=True):
        parts.setdefault(s, []).append(pid)
    params = {**args[0], "collection_name": name}
    got = rt.read(name, {s: ("POST", P, {"ids": part, "with_payload": with_payload,
                                          "with_vector": with_vector})
                         for s, part in parts.items()}, params, {})
    return merge.retrieve(list(got.values()), ids)


def _vector_of(rec: dict[str, Any], vname: str) -> Any:
    v = rec.get("vector")
    return v.get(vname) if isinstance(v, dict) else v


class _Resolver:
    """Point ids in queries → vectors (step 1)."""

    def __init__(self, rt: ClusterRouter, name: str, args: Args) -> None:
        self.rt, self.name, self.args = rt, name, args

    def vectors(self, coll: str, ids: list[Any], vname: str) -> dict[Any, Any]:
        recs = fetch(self.rt, coll, self.args, ids, False, [vname] if vname else True)
        got = {parse_id(r["id"]): _vector_of(r, vname) for r in recs}
        for raw in ids:
            pid = parse_id(raw)
            if pid not in got:
                raise NotFound(f"No point with id {pid} found")
            if got[pid] is None:
                raise BadInput(f"Vector with name {vname!r} for point {pid} not found")
        return got

    def _source(self, node: dict[str, Any]) -> tuple[str, str, bool]:
        """(collection, vector name) ids are read from, and whether that is this one."""
        using = node.get("using")
        base = using if isinstance(using, str) else ""
        lf = node.get("lookup_from")
        if lf is None:
            return self.name, self._vname(self.name, base), True
        if not isinstance(lf, dict) or not isinstance(lf.get("collection"), str):
            raise BadRequest("`lookup_from` needs a `collection` name")
        coll = aliases.resolve(self.rt, lf["collection"])
        self.rt._entry(coll)
        vec = lf.get("vector")
        if vec is not None and not isinstance(vec, str):
            raise BadRequest("`lookup_from.vector` must be a vector name")
        return coll, self._vname(coll, vec if vec is not None else base), coll == self.name

    def _vname(self, coll: str, using: str) -> str:
        return self.rt.configs[coll].search_name(using)

    def node(self, node: Any) -> Any:
        if not isinstance(node, dict):
            return node  # the parser answers what is wrong with it
        out = dict(node)
        pf = node.get("prefetch")
        if isinstance(pf, list):
            out["prefetch"] = [self.node(p) for p in pf]
        elif isinstance(pf, dict):
            out["prefetch"] = self.node(pf)
        q = node.get("query")
        kind = kind_of(q)
        raw = q["nearest"] if isinstance(q, dict) and kind == "nearest" and "nearest" in q \
            else q
        if kind == "nearest" and _is_id(raw):
            coll, vname, _ = self._source(node)
            vec = self.vectors(coll, [raw], vname)[parse_id(raw)]
            out["query"] = {**q, "nearest": vec} if isinstance(q, dict) else vec
            self._done(out, [raw] if node.get("lookup_from") is None else [])
        elif kind in EXAMPLE_KINDS and isinstance(q, dict):
            ids = [x for x in _examples(kind, q[kind]) if _is_id(x)]
            if ids:
                coll, vname, same = self._source(node)
                vecs = self.vectors(coll, ids, vname)
                sub = _substitute(q[kind], lambda x: vecs[parse_id(x)] if _is_id(x) else x)
                out["query"] = {**q, kind: sub}
                self._done(out, ids if same else [])
        return out

    def _done(self, out: dict[str, Any], excluded: list[Any]) -> None:
        out.pop("lookup_from", None)
        if excluded:
            out["filter"] = merge_filters(out.get("filter"),
                                          {"must_not": [{"has_id": excluded}]})


def _examples(kind: str, raw: Any) -> list[Any]:
    if kind == "recommend":
        if not isinstance(raw, dict):
            return []
        return [x for k in ("positive", "negative") if isinstance(raw.get(k), list)
                for x in raw[k]]
    out = []
    if kind == "discover":
        if not isinstance(raw, dict):
            return []
        out.append(raw.get("target"))
        raw = raw.get("context")
    pairs = [] if raw is None else raw if isinstance(raw, list) else [raw]
    for p in pairs:
        if isinstance(p, dict):
            out.extend(p.get(k) for k in ("positive", "negative"))
    return out


def _substitute(raw: Any, f: Any) -> Any:
    """The example structure with each example replaced by f(example)."""
    if isinstance(raw, list):
        return [_substitute(x, f) if isinstance(x, dict) and "positive" in x else f(x)
                for x in raw]
    if isinstance(raw, dict):
        out = dict(raw)
        for k in ("positive", "negative"):
            if isinstance(raw.get(k), list):
                out[k] = [f(x) for x in raw[k]]
            elif k in raw and raw[k] is not None:
                out[k] = f(raw[k])  # a context pair's single example
        if "target" in raw and raw["target"] is not None:
            out["target"] = f(raw["target"])
        if "context" in raw and raw["context"] is not None:
            out["context"] = _substitute(raw["context"], f)
        return out
    return raw


def resolve(rt: ClusterRouter, name: str, args: Args, body: dict[str, Any]) -> dict[str, Any]:
    out = _Resolver(rt, name, args).node(body)
    check_exact(rt, name, out)
    return out


# ---------------------------------------------------------------- merging one node


def merge_node(rt: ClusterRouter, name: str, node: dict[str, Any],
               lists: list[list[dict[str, Any]]], offset: int, limit: int
               ) -> list[dict[str, Any]]:
    """The exact merge of the shards' answers to a direct node (each gave offset + limit)."""
    q = node.get("query")
    kind = kind_of(q)
    if kind == "none":
        return merge.by_id(lists, offset, limit)
    if kind == "order_by" and isinstance(q, dict):
        ob = q["order_by"]
        desc = isinstance(ob, dict) and ob.get("direction") == "desc"
        return merge.ordered(lists, offset, limit, desc)
    if kind == "sample":
        return merge.sample(lists, limit)
    return merge.scored(lists, offset, limit, ascending(rt, name, node))


def widened(b: dict[str, Any]) -> dict[str, Any]:
    """Each shard: the first offset + limit, from 0."""
    offset, limit = common.offset(b.get("offset")), common.limit(b.get("limit"), 10)
    return {**b, "limit": offset + limit, "offset": 0}


def direct(rt: ClusterRouter, name: str, args: Args, b: dict[str, Any]) -> list[Any]:
    results = rt.read_all(name, "POST", QUERY, *args, widened(b))
    offset, limit = common.offset(b.get("offset")), common.limit(b.get("limit"), 10)
    return merge_node(rt, name, b, [r["points"] for r in results], offset, limit)


# ---------------------------------------------------------------- central plans


@dataclasses.dataclass
class _Leaf:
    node: dict[str, Any]  # the node as the request gave it (resolved)
    shard_body: dict[str, Any]  # what each shard runs
    limit: int
    ids: list[Any] = dataclasses.field(default_factory=list)


def _leaves(node: dict[str, Any], parent_filter: Any, scale: int, out: list[_Leaf]) -> None:
    """Every leaf under `node` with its effective filter (the ancestors' merged in, as the
    parser propagates them); limits times `scale` (grouped searches' prefetch factor)."""
    flt = merge_filters(parent_filter, node.get("filter"))
    children = prefetches(node)
    if children:
        for c in children:
            if not isinstance(c, dict):
                raise BadRequest("`prefetch` must be an object or a list of objects")
            _leaves(c, flt, scale, out)
        return
    limit = common.limit(node.get("limit")) * scale
    body: dict[str, Any] = {k: node[k] for k in ("query", "using", "params",
                                                   "score_threshold") if k in node}
    mmr = mmr_of(node)
    if mmr is not None:  # its candidates; MMR picks among them centrally
        body["query"] = {"nearest": node["query"]["nearest"]}
        cand = mmr.get("candidates_limit") if isinstance(mmr, dict) else None
        limit = cand if isinstance(cand, int) and not isinstance(cand, bool) and cand > 0 \
            else limit
    body.update(filter=flt, limit=limit, offset=0, with_payload=False, with_vector=False)
    out.append(_Leaf(node, body, limit))


def _restricted(node: dict[str, Any], found: dict[int, list[Any]]) -> dict[str, Any]:
    """The plan with each leaf restricted to the points it found over all shards."""
    kids = prefetches(node)
    if not kids:
        ids = found[id(node)]
        return {**node, "filter": merge_filters(node.get("filter"),
                                                {"must": [{"has_id": ids}]})}
    new = [_restricted(c, found) for c in kids]
    return {**node, "prefetch": new if isinstance(node.get("prefetch"), list) else new[0]}


class Scratch:
    """A single-node engine on the front end (a ShardReplica run in process, WAL without
    fsync) holding short-lived scratch collections for central plans."""

    def __init__(self, rt: ClusterRouter) -> None:
        path = os.path.join(rt.settings.storage.storage_path, "cluster", "scratch")
        shutil.rmtree(path, ignore_errors=True)  # left by an earlier run: never needed
        st = rt.settings.storage
        settings = dataclasses.replace(rt.settings, storage=dataclasses.replace(
            st, wal=dataclasses.replace(st.wal, fsync=False)))
        self.replica = ShardReplica(settings, path)
        self.schemas: dict[str, dict[str, Any]] = {}

    def call(self, method: str, template: str, name: str, body: Any,
             query: dict[str, str] | None = None) -> Any:
        got = self.replica.call(method, template, {"collection_name": name}, query or {},
                                body)
        if "error" in got:
            raise_relayed(got)
        return got["result"]

    @contextlib.contextmanager
    def collection(self, rt: ClusterRouter, name: str, args: Args,
                   points: list[dict[str, Any]]) -> Iterator[str]:
        """A scratch collection with `name`'s config, payload indexes and `points`."""
        tmp = f"scratch-{uuid.uuid4().hex}"
        self.call("PUT", C, tmp, rt._entry(name)["config"])
        try:
            for field, spec in self._schema(rt, name, args).items():
                schema = spec.get("params") or spec["data_type"]
                self.call("PUT", C + "/index", tmp, {"field_name": field,
                                                     "field_schema": schema},
                          {"wait": "true"})
            if points:
                self.call("PUT", P, tmp, {"points": points}, {"wait": "true"})
            yield tmp
        finally:
            self.call("DELETE", C, tmp, None)

    def _schema(self, rt: ClusterRouter, name: str, args: Args) -> dict[str, Any]:
        got = self.schemas.get(name)
        if got is None:
            params = {**args[0], "collection_name": name}
            info = rt.read(name, {0: ("GET", C, None)}, params, {})[0]
            got = self.schemas[name] = info.get("payload_schema") or {}
        return got

    def forget(self, name: str) -> None:
        """`name`'s payload indexes changed (or it is gone): read them again next time."""
        self.schemas.pop(name, None)


_SCRATCH: weakref.WeakKeyDictionary[Any, Scratch] = weakref.WeakKeyDictionary()
_SCRATCH_LOCK = threading.Lock()


def scratch(rt: ClusterRouter) -> Scratch:
    with _SCRATCH_LOCK:
        got = _SCRATCH.get(rt)
        if got is None:
            got = _SCRATCH[rt] = Scratch(rt)
        return got


def forget(rt: ClusterRouter, name: str) -> None:
    got = _SCRATCH.get(rt)
    if got is not None:
        got.forget(name)


def as_points(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in recs:
        p = {"id": r["id"], "payload": r.get("payload") or {}}
        if r.get("vector") is not None:
            p["vector"] = r["vector"]
        out.append(p)
    return out


def central(rt: ClusterRouter, name: str, args: Args, b: dict[str, Any], template: str,
            root_filter: Any = None, scale: int = 1) -> Any:
    """Run plan `b` (a query or groups body) centrally over the leaves' points: step 3."""
    leaves: list[_Leaf] = []
    _leaves(b, root_filter, scale, leaves)
    results = rt.read_all(name, "POST", QUERY_BATCH, *args,
                          {"searches": [lf.shard_body for lf in leaves]})
    found: dict[int, list[Any]] = {}
    for n, lf in enumerate(leaves):
        pts = merge_node(rt, name, lf.shard_body, [r[n]["points"] for r in results], 0,
                         lf.limit)
        found[id(lf.node)] = [p["id"] for p in pts]
    union = list(dict.fromkeys(i for ids in found.values() for i in ids))
    recs = fetch(rt, name, args, union, True, True)
    plan = _restricted(b, found)
    sc = scratch(rt)
    with sc.collection(rt, name, args, as_points(recs)) as tmp:
        return sc.call("POST", template, tmp, plan)


def with_vectors_from_shards(rt: ClusterRouter, name: str, args: Args, b: dict[str, Any],
                             records: list[dict[str, Any]]) -> None:
    """Replace the scratch copy's vectors in `records` by the shards' own."""
    wv = b.get("with_vector", b.get("with_vectors"))
    if not wv or not records:
        return
    ids = [r["id"] for r in records]
    got = {parse_id(r["id"]): r.get("vector")
           for r in fetch(rt, name, args, list(dict.fromkeys(ids)), False, wv)}
    for r in records:
        r["vector"] = got.get(parse_id(r["id"]), r.get("vector"))


# ---------------------------------------------------------------- entry points


def query(rt: ClusterRouter, name: str, args: Args, body: dict[str, Any]) -> list[Any]:
    """One QueryRequest body: its points."""
    return run(rt, name, args, resolve(rt, name, args, body))


def run(rt: ClusterRouter, name: str, args: Args, b: dict[str, Any]) -> list[Any]:
    """A resolved QueryRequest body: its points."""
    if is_direct(b):
        return direct(rt, name, args, b)
    points = central(rt, name, args, b, QUERY)["points"]
    with_vectors_from_shards(rt, name, args, b, points)
    return points
