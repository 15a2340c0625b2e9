"""Payload key paths (`a.b`, `a[].b`, `a[0]`, `"quoted.key"`) and payload mutation/selection.

A path is a sequence of items: a key (dict lookup), an index (`[3]`) or a wildcard (`[]`).
There is no implicit traversal: a key step on a list selects nothing (write `a[].b`).
Semantics follow Qdrant's server as mirrored by qdrant-client's local mode.

Payload dicts are never mutated in place once stored: every update builds a new dict, so
frozen references (flush, snapshots) stay valid while writes continue.
"""

from __future__ import annotations

import copy
import re
from functools import lru_cache
from typing import Any

from engine.errors import BadRequest

KEY, INDEX, WILD = "k", "i", "w"
Item = tuple[str, Any]

_PART_RE = re.compile(r'^(?:"((?:[^"\\]|\\.)*)"|([^\[\]."\s]+))((?:\[\d*\])*)$')


def _split(path: str) -> list[str]:
    parts: list[str] = []
    buf: list[str] = []
    in_quote = False
    for ch in path:
        if ch == '"':
            in_quote = not in_quote
        if ch == "." and not in_quote:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return parts


@lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[Item, ...]:
    if not isinstance(path, str) or not path:
        raise BadRequest(f"invalid payload key {path!r}")
    items: list[Item] = []
    for raw in _split(path):
        m = _PART_RE.match(raw)
        if not m:
            raise BadRequest(f"invalid payload key {path!r}")
        items.append((KEY, m.group(1) if m.group(1) is not None else m.group(2)))
        for b in re.findall(r"\[(\d*)\]", m.group(3) or ""):
            items.append((WILD, None) if b == "" else (INDEX, int(b)))
    return tuple(items)


def _resolve(data: Any, items: tuple[Item, ...], start: int, out: list[Any]) -> None:
    if start == len(items):
        out.append(data)
        return
    kind, arg = items[start]
    if kind == KEY:
        if isinstance(data, dict) and arg in data:
            _resolve(data[arg], items, start + 1, out)
    elif kind == INDEX:
        if isinstance(data, list) and arg < len(data):
            _resolve(data[arg], items, start + 1, out)
    elif isinstance(data, list):
        for e in data:
            _resolve(e, items, start + 1, out)


def raw_values_at(payload: dict[str, Any], path: str) -> list[Any]:
    """Values the path reaches, arrays at the leaf kept whole."""
    out: list[Any] = []
    _resolve(payload, parse_path(path), 0, out)
    return out


# ---- mutation (copy-on-write) -------------------------------------------------------------


def _merged(target: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Merge into `target` (in place) like Qdrant's merge_map: a null value removes the key."""
    for k, v in new.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = copy.deepcopy(v)
    return target


def set_payload(old: dict[str, Any], new: dict[str, Any], key: str | None) -> dict[str, Any]:
    """Qdrant set_payload: merge `new` into the payload, or into the object(s) at `key`."""
    if key is None:
        return _merged(dict(old), new)
    out = copy.deepcopy(old)
    _set(out, parse_path(key), 0, new, None, None)
    return out


def _set(data: Any, items: tuple[Item, ...], i: int, new: dict[str, Any],
         parent: Any, slot: Any) -> None:
    kind, arg = items[i]
    last = i == len(items) - 1
    if kind == KEY:
        if not isinstance(data, dict):
            # a key step through a non-object replaces it with an object
            parent[slot] = {arg: _merged({}, new) if last else {}}
            if not last:
                _set(parent[slot][arg], items, i + 1, new, parent[slot], arg)
            return
        child = data.setdefault(arg, {})
        if last:
            data[arg] = _merged(child, new) if isinstance(child, dict) else _merged({}, new)
        else:
            _set(child, items, i + 1, new, data, arg)
        return
    if not isinstance(data, list):
        parent[slot] = []  # an index step through a non-list leaves an empty list
        return
    targets = range(len(data)) if kind == WILD else ([arg] if arg < len(data) else [])
    for idx in targets:
        value = copy.deepcopy(new)
        if last:
            item = data[idx]
            data[idx] = _merged(item, value) if isinstance(item, dict) else _merged({}, value)
        else:
            _set(data[idx], items, i + 1, value, data, idx)


def delete_keys(old: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(old)
    for key in keys:
        _delete(out, parse_path(key), 0)
    return out


def _delete(data: Any, items: tuple[Item, ...], i: int) -> None:
    kind, arg = items[i]
    if i == len(items) - 1:
        if kind == KEY and isinstance(data, dict):
            data.pop(arg, None)
        elif kind == WILD and isinstance(data, list):
            data.clear()
        # a trailing index deletes nothing: deleting by position is not idempotent
        return
    if kind == KEY:
        if isinstance(data, dict) and arg in data:
            _delete(data[arg], items, i + 1)
    elif kind == INDEX:
        if isinstance(data, list) and arg < len(data):
            _delete(data[arg], items, i + 1)
    elif isinstance(data, list):
        for e in data:
            _delete(e, items, i + 1)


# ---- with_payload selectors --------------------------------------------------------------


@lru_cache(maxsize=256)
def _selector_tree(keys: tuple[str, ...]) -> dict[Any, Any]:
    """Merge selector paths into a prefix tree; True selects everything below. `[]` is the
    tree key None; an index is its int (which selects no list item)."""
    tree: dict[Any, Any] = {}
    for key in keys:
        steps = [None if kind == WILD else arg for kind, arg in parse_path(key)]
        node: Any = tree
        for step in steps[:-1]:
            node = node.setdefault(step, {})
            if node is True:
                break
        else:
            node[steps[-1]] = True
    return tree


def _include(value: Any, tree: dict[Any, Any]) -> Any:
    if isinstance(value, dict):
        return {k: (v if tree[k] is True else _include(v, tree[k]))
                for k, v in value.items() if k in tree}
    if isinstance(value, list):
        sub = tree.get(None)
        if sub is None:
            return []
        return value if sub is True else [_include(e, sub) for e in value]
    return value


def _exclude(value: Any, tree: dict[Any, Any]) -> Any:
    if isinstance(value, dict):
        return {k: (v if k not in tree else _exclude(v, tree[k]))
                for k, v in value.items() if tree.get(k) is not True}
    if isinstance(value, list):
        sub = tree.get(None)
        if sub is None:
            return value
        return [] if sub is True else [_exclude(e, sub) for e in value]
    return value


def select(payload: dict[str, Any], selector: Any) -> dict[str, Any] | None:
    """Apply a with_payload selector: True/False, [keys], {"include": [...]}, {"exclude": [...]}."""
    if selector is None or selector is False:
        return None
    if selector is True:
        return payload
    if isinstance(selector, list):
        return _include(payload, _selector_tree(_keys(selector)))
    if isinstance(selector, dict):
        if "include" in selector:
            return _include(payload, _selector_tree(_keys(selector["include"])))
        if "exclude" in selector:
            return _exclude(payload, _selector_tree(_keys(selector["exclude"])))
    raise BadRequest(f"invalid with_payload selector: {selector!r}")


def _keys(keys: Any) -> tuple[str, ...]:
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise BadRequest("payload selector keys must be a list of strings")
    return tuple(keys)
