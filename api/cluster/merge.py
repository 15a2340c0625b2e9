"""Exact merges of per-shard answers into what one node holding every point would answer.

Each shard is asked for the first `offset + limit` results with offset 0 (shards hold disjoint
points, so the global first `offset + limit` are among the union); the union is then ordered by
the engine's own rule and cut. Ties are broken by point id (engine.ids order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.ids import id_order_key, parse_id


def _id_key(point: dict[str, Any]) -> tuple[int, int]:
    return id_order_key(parse_id(point["id"]))


def scored(lists: list[list[dict[str, Any]]], offset: int, limit: int,
           ascending: bool) -> list[dict[str, Any]]:
    """Top-k by score (descending, or ascending for distances: Euclid, Manhattan)."""
    sign = 1.0 if ascending else -1.0
    merged = sorted((p for ps in lists for p in ps),
                    key=lambda p: (sign * p["score"], _id_key(p)))
    return merged[offset:offset + limit]


def by_id(lists: list[list[dict[str, Any]]], offset: int, limit: int) -> list[dict[str, Any]]:
    merged = sorted((p for ps in lists for p in ps), key=_id_key)
    return merged[offset:offset + limit]


def scroll(pages: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """Scroll by id: each shard gave its first limit+1 points from the offset; the merged page
    is the first `limit`, the next offset the one after (None when there is none)."""
    merged = sorted((p for page in pages for p in page["points"]), key=_id_key)
    nxt = merged[limit]["id"] if len(merged) > limit else None
    return {"points": merged[:limit], "next_page_offset": nxt}


def ordered(lists: list[list[dict[str, Any]]], offset: int, limit: int,
            descending: bool) -> list[dict[str, Any]]:
    """Points ordered by a payload value (order_by): by order_value, then id (one node
    keeps equal values in row order, which no merge can know: ties are ties)."""
    sign = -1 if descending else 1
    merged = sorted((p for ps in lists for p in ps),
                    key=lambda p: (sign * p["order_value"], _id_key(p)))
    return merged[offset:offset + limit]


def scroll_ordered(pages: list[dict[str, Any]], limit: int, descending: bool) -> dict[str, Any]:
    """Scroll with order_by: by order_value (then id); Qdrant gives no next offset."""
    return {"points": ordered([page["points"] for page in pages], 0, limit, descending),
            "next_page_offset": None}


def sample(lists: list[list[dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """`sample: random`: `limit` of the shards' random picks, at random (each shard gave up
    to `limit`, so there are enough whenever the collection has them)."""
    pool = [p for ps in lists for p in ps]
    pick = np.random.default_rng().permutation(len(pool))[:limit]
    return [pool[i] for i in pick.tolist()]


def count(results: list[dict[str, int]]) -> dict[str, int]:
    return {"count": sum(r["count"] for r in results)}


def facet(results: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """Counts summed per value; count descending, then value ascending (engine/facet.py)."""
    totals: dict[Any, int] = {}
    for r in results:
        for hit in r["hits"]:
            key = (type(hit["value"]).__name__, hit["value"])
            totals[key] = totals.get(key, 0) + hit["count"]
    order = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0][0] != "bool",
                                                   kv[0][0] == "str", kv[0][1]))
    return {"hits": [{"value": k[1], "count": c} for k, c in order[:limit]]}


def retrieve(lists: list[list[dict[str, Any]]], ids: list[Any]) -> list[dict[str, Any]]:
    """The union in request order, a repeated id repeated (as engine/retrieve.py answers)."""
    found = {parse_id(p["id"]): p for ps in lists for p in ps}
    return [found[pid] for pid in map(parse_id, ids) if pid in found]


def groups(results: list[dict[str, Any]], limit: int, group_size: int,
           ascending: bool) -> dict[str, Any]:
    """Groups of every shard (second round: only the chosen group values) joined per group
    value: hits merged by score and cut to group_size; groups ordered by their best hit."""
    sign = 1.0 if ascending else -1.0
    hits: dict[Any, list[dict[str, Any]]] = {}
    for r in results:
        for g in r["groups"]:
            key = (type(g["id"]).__name__, g["id"])
            hits.setdefault(key, []).extend(g["hits"])
    out = []
    for (_, gid), hs in hits.items():
        hs.sort(key=lambda p: (sign * p["score"], _id_key(p)))
        out.append({"id": gid, "hits": hs[:group_size]})
    out.sort(key=lambda g: (sign * g["hits"][0]["score"], _id_key(g["hits"][0])))
    return {"groups": out[:limit]}
