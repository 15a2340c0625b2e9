"""Collection aliases in cluster mode.

An alias belongs to the collection it names: each cluster collection's metadata entry keeps
its aliases (`entry["aliases"]`), stored through the metadata actor's `put_collection`, so
they are persisted with the collection and go with it when it is deleted (as Qdrant drops a
deleted collection's aliases). The rules and messages are engine/catalog.py's
`applied_aliases`, as on a single node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.catalog import applied_aliases

if TYPE_CHECKING:
    from api.cluster.router import ClusterRouter


def table(rt: ClusterRouter) -> dict[str, str]:
    """alias → collection name, over every cluster collection."""
    return {a: name for name, entry in rt.state["collections"].items()
            for a in entry.get("aliases", ())}


def resolve(rt: ClusterRouter, name: str) -> str:
    """A collection's name, or the collection an alias names (unknown names unchanged:
    the caller answers 404 for them)."""
    if name in rt.state["collections"]:
        return name
    return table(rt).get(name, name)


def listing(rt: ClusterRouter, collection: str | None = None) -> list[dict[str, str]]:
    return [{"alias_name": a, "collection_name": c} for a, c in table(rt).items()
            if collection is None or c == collection]


def update(rt: ClusterRouter, actions: Any) -> bool:
    """Apply alias actions; each collection whose aliases changed is stored again."""
    with rt.lock:
        colls = rt.state["collections"]
        new = applied_aliases(colls, table(rt), actions)
        for name, entry in colls.items():
            mine = sorted(a for a, c in new.items() if c == name)
            if mine != sorted(entry.get("aliases", ())):
                entry["aliases"] = mine
                rt.ray.get(rt.meta.put_collection.remote(name, entry))
    return True
