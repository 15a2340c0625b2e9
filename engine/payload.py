"""Payload key paths (`a.b`, `a[].b`, `a[0]`, `"quoted.key"`) and payload mutation.

Payload dicts are never mutated in place once stored: every update builds a new dict, so
frozen references (flush, snapshots) stay valid while writes continue.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from engine.errors import BadRequest

_MISSING = object()


@dataclass(frozen=True)
class PathPart:
    key: str
    index: int | None = None  # a[3]
    flatten: bool = False  # a[]


_PART_RE = re.compile(r'^(?:"((?:[^"\\]|\\.)*)"|([^\[\]."]+))((?:\[\d*\])*)$')


def _split(path: str) -> list[str]:
    parts, buf, in_quote = [], [], False
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
def parse_path(path: str) -> tuple[PathPart, ...]:
    if not isinstance(path, str) or not path:
        raise BadRequest(f"invalid payload key {path!r}")
    out: list[PathPart] = []
    for raw in _split(path):
        m = _PART_RE.match(raw)
        if not m:
            raise BadRequest(f"invalid payload key {path!r}")
        key = m.group(1) if m.group(1) is not None else m.group(2)
        brackets = re.findall(r"\[(\d*)\]", m.group(3) or "")
        if not brackets:
            out.append(PathPart(key))
            continue
        out.append(PathPart(key, *_bracket(brackets[0])))
        for b in brackets[1:]:
            out.append(PathPart("", *_bracket(b)))
    return tuple(out)


def _bracket(b: str) -> tuple[int | None, bool]:
    return (None, True) if b == "" else (int(b), False)


def _step(values: list[Any], part: PathPart) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if part.key:
            if not isinstance(v, dict):
                continue  # no implicit traversal: `a.b` over a list needs `a[].b`
            v = v.get(part.key, _MISSING)
            if v is _MISSING:
                continue
        if part.flatten:
            if isinstance(v, list):
                out.extend(v)
        elif part.index is not None:
            if isinstance(v, list) and part.index < len(v):
                out.append(v[part.index])
        else:
            out.append(v)
    return out


def values_at(payload: dict[str, Any], path: str) -> list[Any]:
    """Every value the path reaches. Arrays at the leaf are flattened into their elements."""
    values: list[Any] = [payload]
    for part in parse_path(path):
        values = _step(values, part)
        if not values:
            return []
    out: list[Any] = []
    for v in values:
        if isinstance(v, list):
            out.extend(v)
        else:
            out.append(v)
    return out


def raw_values_at(payload: dict[str, Any], path: str) -> list[Any]:
    """Values the path reaches, arrays at the leaf kept whole (for is_empty / nested)."""
    values: list[Any] = [payload]
    for part in parse_path(path):
        values = _step(values, part)
        if not values:
            return []
    return values


# ---- mutation (copy-on-write) -------------------------------------------------------------


def set_payload(old: dict[str, Any], new: dict[str, Any], key: str | None) -> dict[str, Any]:
    """Qdrant set_payload: merge `new` into the payload, or into the object at `key`."""
    if key is None:
        out = dict(old)
        _merge(out, new)
        return out
    parts = parse_path(key)
    out = copy.deepcopy(old)
    _set_at(out, list(parts), new)
    return out


def _set_at(obj: Any, parts: list[PathPart], new: dict[str, Any]) -> None:
    part, rest = parts[0], parts[1:]
    if not isinstance(obj, dict):
        return
    if part.flatten or part.index is not None:
        arr = obj.get(part.key)
        if not isinstance(arr, list):
            return
        targets = arr if part.flatten else arr[part.index : part.index + 1]
        for i, t in enumerate(targets):
            if rest:
                _set_at(t, rest, new)
            elif isinstance(t, dict):
                _merge(t, new)
            else:
                idx = i if part.flatten else part.index
                arr[idx] = copy.deepcopy(new)
        return
    child = obj.get(part.key)
    if not isinstance(child, dict):
        child = {}
        obj[part.key] = child
    if rest:
        _set_at(child, rest, new)
    else:
        _merge(child, new)


def _merge(target: dict[str, Any], new: dict[str, Any]) -> None:
    """Top-level merge; a key set to null is removed (Qdrant's set_payload semantics)."""
    for k, v in new.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = copy.deepcopy(v)


def delete_keys(old: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(old)
    for key in keys:
        _delete_at(out, list(parse_path(key)))
    return out


def _delete_at(obj: Any, parts: list[PathPart]) -> None:
    part, rest = parts[0], parts[1:]
    if isinstance(obj, list):
        for e in obj:
            _delete_at(e, parts)
        return
    if not isinstance(obj, dict) or part.key not in obj:
        return
    if not rest and not part.flatten and part.index is None:
        del obj[part.key]
        return
    child = obj[part.key]
    if part.flatten:
        if isinstance(child, list):
            if not rest:
                obj[part.key] = []
            else:
                for e in child:
                    _delete_at(e, rest)
        return
    if part.index is not None:
        if isinstance(child, list) and part.index < len(child):
            if not rest:
                del child[part.index]
            else:
                _delete_at(child[part.index], rest)
        return
    _delete_at(child, rest)


def select(payload: dict[str, Any], selector: Any) -> dict[str, Any] | None:
    """Apply a with_payload selector: True/False, [keys], {"include": [...]}, {"exclude": [...]}."""
    if selector is None or selector is False:
        return None
    if selector is True:
        return payload
    if isinstance(selector, list):
        return _include(payload, selector)
    if isinstance(selector, dict):
        if "include" in selector:
            return _include(payload, selector["include"])
        if "exclude" in selector:
            return delete_keys(payload, list(selector["exclude"]))
    raise BadRequest(f"invalid with_payload selector: {selector!r}")


def _include(payload: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        parts = parse_path(key)
        if len(parts) == 1 and not parts[0].flatten and parts[0].index is None:
            if parts[0].key in payload:
                out[parts[0].key] = payload[parts[0].key]
            continue
        _copy_path(payload, out, list(parts))
    return out


def _copy_path(src: Any, dst: dict[str, Any], parts: list[PathPart]) -> None:
    part, rest = parts[0], parts[1:]
    if not isinstance(src, dict) or part.key not in src:
        return
    value = src[part.key]
    if not rest and not part.flatten and part.index is None:
        dst[part.key] = copy.deepcopy(value)
        return
    if part.flatten or part.index is not None:
        if not isinstance(value, list):
            return
        items = value if part.flatten else value[part.index : part.index + 1]
        if not rest:
            dst[part.key] = copy.deepcopy(items)
            return
        collected = []
        for item in items:
            sub: dict[str, Any] = {}
            _copy_path(item, sub, rest)
            if sub:
                collected.append(sub)
        dst[part.key] = collected
        return
    sub_dst = dst.setdefault(part.key, {})
    if isinstance(sub_dst, dict):
        _copy_path(value, sub_dst, rest)
