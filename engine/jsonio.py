"""JSON for storage files, WAL records and manifests: orjson when installed (the default
install has it), the standard library otherwise, so the engine, snapshot code and
`scripts/gpu-check` also run on machines where only numpy (and cupy) exist."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - exercised on the bare GPU image
    orjson = None  # type: ignore[assignment]


def _default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(obj: Any, *, indent: bool = False, non_str_keys: bool = False) -> bytes:
    if orjson is not None:
        opt = (orjson.OPT_INDENT_2 if indent else 0) | (orjson.OPT_NON_STR_KEYS if non_str_keys
                                                         else 0)
        return orjson.dumps(obj, option=opt or None, default=_default)
    return json.dumps(obj, ensure_ascii=False, indent=2 if indent else None,
                      separators=None if indent else (",", ":"), default=_default).encode()


def loads(data: bytes | str) -> Any:
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)

JSONDecodeError = json.JSONDecodeError  # orjson.JSONDecodeError subclasses it
