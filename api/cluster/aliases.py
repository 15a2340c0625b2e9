"""Collection aliases in cluster mode.

An alias belongs to the collection it names: each cluster collection's metadata entry keeps
its aliases (`entry["aliases"]`), stored through the metadata actor's `put_collection`, so
they are persisted with the collection and go with it when it is deleted (as Qdrant drops a
deleted collection's aliases). The rules and messages are engine/catalog.py's
`update_aliases`: the actions apply all or nothing, an alias may not take a collection's name,
re-pointing an existing alias is allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.catalog import not_found, validate_name
from engine.errors import AlreadyExists, BadRequest, NotFound

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


def _apply(colls: dict[str, Any], old: dict[str, str], actions: Any) -> dict[str, str]:
    """The alias table after `actions` (nothing changes on an error)."""
    if not isinstance(actions, list):
        raise BadRequest("`actions` must be a list")
    new = dict(old)
    for action in actions:
        if not isinstance(action, dict) or len(action) != 1:
            raise BadRequest(f"invalid alias action: {action!r}")
        (kind, body), = action.items()
        if not isinstance(body, dict):
            raise BadRequest(f"invalid alias action: {action!r}")
        if kind == "create_alias":
            coll = body.get("collection_name")
            alias = validate_name(body.get("alias_name"), "alias")
            if coll not in colls:
                raise not_found(str(coll))
            if alias in colls:
                raise AlreadyExists(f"Alias `{alias}` clashes with a collection name")
            new[alias] = coll
        elif kind == "delete_alias":
            gone = body.get("alias_name")
            if gone not in new:
                raise NotFound(f"Alias {gone} does not exists!")
            del new[gone]
        elif kind == "rename_alias":
            old_name, to = body.get("old_alias_name"), body.get("new_alias_name")
            if old_name not in new:
                raise NotFound(f"Alias {old_name} does not exists!")
            to = validate_name(to, "alias")
            if to in colls:
                raise AlreadyExists(f"Alias `{to}` clashes with a collection name")
            new[to] = new.pop(old_name)
        else:
            raise BadRequest(f"unknown alias action {kind!r}")
    return new


def update(rt: ClusterRouter, actions: Any) -> bool:
    """Apply alias actions; each collection whose aliases changed is stored again."""
    with rt.lock:
        colls = rt.state["collections"]
        new = _apply(colls, table(rt), actions)
        for name, entry in colls.items():
            mine = sorted(a for a, c in new.items() if c == name)
            if mine != sorted(entry.get("aliases", ())):
                entry["aliases"] = mine
                rt.ray.get(rt.meta.put_collection.remote(name, entry))
    return True
