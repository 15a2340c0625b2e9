"""API keys, as Qdrant's `service.api_key` / `service.read_only_api_key`.

A pure ASGI middleware: the decision is made from the method, path and headers alone, before a
single body byte is read, so a refused upload never reaches the disk (GHSA-3v92-w72v-j994).
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import Unauthorized, from_exception, plain_text
from api.settings import ServiceSettings
from engine.errors import Forbidden

# Qdrant's whitelist (src/actix/auth.rs): probes and the version banner need no key.
OPEN_EXACT = frozenset({"/", "/healthz"})
OPEN_PREFIXES = ("/readyz", "/livez")

# What a read-only key may call; anything not listed needs the full key. `{c}` is one path
# segment. Every GET/HEAD reads (lists, info, snapshot downloads, as in Qdrant's RBAC matrix).
READS: tuple[tuple[str, str], ...] = (
    ("GET", ".*"),
    ("HEAD", ".*"),
    ("POST", "/collections/{c}/points"),  # retrieve by ids
    ("POST", "/collections/{c}/points/(scroll|count)"),
    ("POST", "/collections/{c}/points/query(/batch|/groups)?"),
    ("POST", "/collections/{c}/points/search(/batch|/groups|/matrix/pairs|/matrix/offsets)?"),
    ("POST", "/collections/{c}/points/recommend(/batch|/groups)?"),
    ("POST", "/collections/{c}/points/discover(/batch)?"),
    ("POST", "/collections/{c}/facet"),
)

# Uploads are refused by an extractor in Qdrant, before the handler: plain text, no envelope.
PLAIN_403 = re.compile(r"/collections/[^/]+/(shards/[^/]+/)?snapshots/upload")

NO_KEY = "Must provide an API key or an Authorization bearer token"
BAD_KEY = "Invalid API key or JWT"
READ_ONLY = "Forbidden: Global manage access is required"
_READ_ONLY = Forbidden(READ_ONLY.removeprefix(Forbidden.prefix))  # message == READ_ONLY


def _compile(table: tuple[tuple[str, str], ...]) -> dict[str, re.Pattern[str]]:
    by_method: dict[str, list[str]] = {}
    for method, pattern in table:
        by_method.setdefault(method, []).append(pattern.replace("{c}", "[^/]+"))
    return {m: re.compile("|".join(f"(?:{p})" for p in ps)) for m, ps in by_method.items()}


_READS = _compile(READS)


def is_read(method: str, path: str) -> bool:
    pattern = _READS.get(method)
    return pattern is not None and pattern.fullmatch(path) is not None


def is_open(path: str) -> bool:
    return path in OPEN_EXACT or path.startswith(OPEN_PREFIXES)


def _key(value: Any) -> bytes | None:
    """A configured key; empty or unset means none (numbers from YAML become their text)."""
    if value is None or value == "":
        return None
    return str(value).encode()


def keys_from_settings(service: ServiceSettings) -> tuple[bytes | None, bytes | None]:
    return _key(service.api_key), _key(service.read_only_api_key)


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """`api-key` wins over `Authorization: Bearer` (Qdrant's order); the prefix is exact."""
    bearer = None
    for name, value in headers:
        if name == b"api-key":
            return value
        if name == b"authorization" and bearer is None and value.startswith(b"Bearer "):
            bearer = value[len(b"Bearer "):]
    return bearer


def _matches(given: bytes, key: bytes | None) -> bool:
    # constant time; both keys are always compared so timing does not tell which one exists
    return key is not None and hmac.compare_digest(given, key)


class ApiKeyAuth:
    """401 without a valid key; 403 when the read-only key asks for anything but a read."""

    def __init__(self, app: ASGIApp, api_key: bytes | None,
                 read_only_api_key: bytes | None) -> None:
        self.app = app
        self.api_key = api_key
        self.read_only_api_key = read_only_api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = presented_key(scope.get("headers", []))
        if given is None:
            await plain_text(Unauthorized(NO_KEY))(scope, receive, send)
            return
        manage = _matches(given, self.api_key)
        read = _matches(given, self.read_only_api_key)
        if manage or (read and is_read(scope["method"], scope["path"])):
            await self.app(scope, receive, send)
            return
        if not read:
            response = plain_text(Unauthorized(BAD_KEY))
        elif PLAIN_403.fullmatch(scope["path"]):
            response = plain_text(_READ_ONLY)
        else:
            response = from_exception(_READ_ONLY)
        await response(scope, receive, send)
