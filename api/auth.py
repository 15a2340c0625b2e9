"""API keys and JWT RBAC, as Qdrant's `service.api_key` / `read_only_api_key` / `jwt_rbac`.

A pure ASGI middleware: the decision is made from the method, path and headers alone, before a
single body byte is read, so a refused upload never reaches the disk (GHSA-3v92-w72v-j994).
Every key or token becomes an `Access` (a JWT's claims, or a key's fixed one) and every route
a `Need`, from its method and path by rule (`need_of`), so new routes fall into their class.
"""

from __future__ import annotations

import enum
import hmac
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import Unauthorized, from_exception, plain_text
from api.settings import ServiceSettings
from engine import query
from engine.errors import Forbidden, NotFound
from engine.filters import parse_filter
from engine.plan import CountRequest

# Qdrant's whitelist (src/actix/auth.rs): probes and the version banner need no key.
# The dashboard's static files carry no data (the calls the page makes need a key).
OPEN_EXACT = frozenset({"/", "/healthz", "/dashboard"})
OPEN_PREFIXES = ("/readyz", "/livez", "/dashboard/")

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



# --------------------------------------------------------------------------- route classes


class Need(enum.Enum):
    """What a route asks of the caller's access (Qdrant's AccessRequirements, per route)."""

    LIST = "list"                # GET /collections, /aliases: anyone; answers filtered
    GLOBAL_READ = "global_read"  # telemetry, metrics, cluster, full snapshots: global r or m
    MANAGE = "manage"            # create a collection, aliases, full snapshots, cluster: m
    COLL_READ = "coll_read"      # reads of one collection: r on it
    COLL_WRITE = "coll_write"    # points, payload indexes, its snapshots: rw on it
    COLL_MANAGE = "coll_manage"  # update/delete it, snapshot upload/recover, shards: m


LISTS = frozenset({"/collections", "/aliases"})
# `/collections/{c}...` paths whose first segment is not a collection name
NOT_COLLECTIONS = frozenset({"/collections/aliases"})
COLLECTION_PATH = re.compile(r"/collections/(?P<c>[^/]+)(?P<rest>/.*)?")
# Operations on one collection that only a manager may do (payload indexes too: Qdrant's
# FieldIndexOperation needs manage); other non-reads under /collections/{c} are writes
# (points, snapshots create/delete).
COLLECTION_MANAGE: tuple[tuple[str, str], ...] = (
    ("PATCH", "/collections/{c}"),
    ("PUT", "/collections/{c}/index"),
    ("DELETE", "/collections/{c}/index/.+"),  # {field_name:path}: a field may hold '/'
    ("DELETE", "/collections/{c}"),
    ("POST", "/collections/{c}/(shards/[^/]+/)?snapshots/upload"),
    ("PUT", "/collections/{c}/(shards/[^/]+/)?snapshots/recover"),
    ("PUT", "/collections/{c}/shards"),
    ("POST", "/collections/{c}/shards(/delete)?"),
    ("POST", "/collections/{c}/cluster"),
)
_COLLECTION_MANAGE = _compile(COLLECTION_MANAGE)


def need_of(method: str, path: str) -> tuple[Need, str | None]:
    """The class of a route and the collection it is scoped to (None: global)."""
    m = COLLECTION_PATH.fullmatch(path)
    if m is not None and path not in NOT_COLLECTIONS:
        name = m["c"]
        if is_read(method, path):
            return Need.COLL_READ, name
        if method == "PUT" and m["rest"] is None:  # creating a collection is global
            return Need.MANAGE, None
        pattern = _COLLECTION_MANAGE.get(method)
        if pattern is not None and pattern.fullmatch(path) is not None:
            return Need.COLL_MANAGE, name
        return Need.COLL_WRITE, name
    if is_read(method, path):
        return (Need.LIST if path in LISTS else Need.GLOBAL_READ), None
    return Need.MANAGE, None


# --------------------------------------------------------------------------- access


@dataclass(frozen=True)
class Access:
    """Global `mode` ("r" or "m"), or per-collection `collections` ({name: "r" | "rw"})."""

    mode: str | None = "m"
    collections: dict[str, str] = field(default_factory=dict)

    def refusal(self, need: Need, name: str | None) -> str | None:
        """None when allowed, else Qdrant's message (lib/storage/src/rbac)."""
        reads = (Need.LIST, Need.GLOBAL_READ, Need.COLL_READ)
        if self.mode == "m" or (self.mode == "r" and need in reads):
            return None
        if self.mode == "r":
            return "Global manage access is required"
        if need is Need.LIST:
            return None
        if need in (Need.GLOBAL_READ, Need.MANAGE) or name is None:
            return "Global access is required"
        level = self.collections.get(name)
        if level is None:
            return f"Access to collection {name} is required"
        if need is Need.COLL_READ:
            return None
        if level != "rw":
            return f"Write access to collection {name} is required"
        if need is Need.COLL_MANAGE:
            return "Manage access for this operation is required"
        return None


FULL = Access("m")
READ_ONLY_ACCESS = Access("r")


# --------------------------------------------------------------------------- JWT

# Qdrant (src/common/auth/jwt_parser.rs): HS256 only, the API key is the secret, no audience,
# 30 s of leeway on `exp`, which must be present.
LEEWAY_S = 30
STATEFUL_FAILED = "Invalid JWT, stateful validation failed"


class TokenRefused(Exception):
    """A JWT that decoded far enough to be refused with its own status (401 or 403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ValueExists:
    collection: str
    matches: list[tuple[str, Any]]


@dataclass(frozen=True)
class Claims:
    access: Access
    exp: int | None
    value_exists: ValueExists | None


class _Malformed(Exception):
    """Claims that do not deserialise: Qdrant treats the key as not a JWT (401)."""


def _opt_str(payload: dict[str, Any], key: str) -> None:
    if payload.get(key) is not None and not isinstance(payload[key], str):
        raise _Malformed(key)


def _access(raw: Any) -> Access:
    if raw in ("r", "m"):
        return Access(raw)
    if not isinstance(raw, list):
        raise _Malformed("access")
    out: dict[str, str] = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("collection"), str) \
                or item.get("access") not in ("r", "rw"):
            raise _Malformed("access")
        if item.get("payload") is not None:  # deprecated in 1.16: the claims do not validate
            raise TokenRefused(401, "access: payload restrictions are not supported")
        if item["collection"] in out:
            raise TokenRefused(401, "access: Collection name should be unique")
        out[item["collection"]] = item["access"]
    return Access(None, out)


def _value_exists(raw: Any) -> ValueExists | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("collection"), str) \
            or not isinstance(raw.get("matches"), list):
        raise _Malformed("value_exists")
    pairs = []
    for m in raw["matches"]:
        value = m.get("value") if isinstance(m, dict) else None
        # ValueVariants: a string, an integer or a boolean
        if not isinstance(m, dict) or not isinstance(m.get("key"), str) or not m["key"] \
                or not isinstance(value, str | int) or (
                    isinstance(value, int) and not isinstance(value, bool)
                    and not -(1 << 63) <= value < (1 << 63)):
            raise _Malformed("value_exists")
        pairs.append((m["key"], value))
    return ValueExists(raw["collection"], pairs)


def parse_claims(payload: dict[str, Any]) -> Claims:
    """Raises _Malformed (not a usable JWT) or TokenRefused (claims that fail validation)."""
    exp = payload.get("exp")
    if exp is not None and (not isinstance(exp, int) or isinstance(exp, bool) or exp < 0):
        raise _Malformed("exp")
    _opt_str(payload, "sub")
    _opt_str(payload, "subject")
    # no `access` claim: full access (Qdrant's default_access)
    access = _access(payload["access"]) if "access" in payload else FULL
    return Claims(access, exp, _value_exists(payload.get("value_exists")))


class JwtVerifier:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    def decode(self, token: bytes) -> Claims | None:
        """None when the key is not a JWT signed for us in a usable form (→ 401 "Invalid API
        key or JWT"); TokenRefused for a bad signature or an expired token (403), as Qdrant."""
        try:
            payload = jwt.decode(token, self.secret, algorithms=["HS256"], options={
                "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                "verify_aud": False, "verify_iss": False})
        except jwt.InvalidSignatureError:
            raise TokenRefused(403, "InvalidSignature") from None
        except jwt.PyJWTError:
            return None
        try:
            claims = parse_claims(payload)
        except _Malformed:
            return None
        if claims.exp is None:  # jsonwebtoken's validation requires `exp`
            return None
        if claims.exp < time.time() - LEEWAY_S:
            raise TokenRefused(403, "ExpiredSignature")
        return claims


def value_exists(catalog: Any, check: ValueExists) -> None:
    """Qdrant's stateful validation: some point of the collection matches every pair."""
    try:
        coll = catalog.get(check.collection)
    except NotFound:
        raise TokenRefused(403, STATEFUL_FAILED) from None
    pred = parse_filter({"must": [{"key": k, "match": {"value": v}} for k, v in check.matches]})
    if query.count(coll, CountRequest(pred)) == 0:
        raise TokenRefused(401, STATEFUL_FAILED)


# --------------------------------------------------------------------------- the middleware


def _refused(path: str, message: str) -> Any:
    exc = Forbidden(message)
    # uploads are refused by an extractor in Qdrant, before the handler: plain text
    return plain_text(exc) if PLAIN_403.fullmatch(path) else from_exception(exc)


async def _filtered_list(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                         allowed: dict[str, str]) -> None:
    """GET /collections or /aliases for a per-collection token: only its collections."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def capture(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(chunks)
        assert start is not None
        if start["status"] == 200:
            doc = json.loads(body)
            result = doc.get("result") or {}
            if isinstance(result.get("collections"), list):
                result["collections"] = [c for c in result["collections"]
                                         if c.get("name") in allowed]
            if isinstance(result.get("aliases"), list):
                result["aliases"] = [a for a in result["aliases"]
                                     if a.get("collection_name") in allowed]
            body = json.dumps(doc, separators=(",", ":")).encode()
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    await app(scope, receive, capture)


class Authenticator:
    """A presented key or token → its Access, whatever the transport (REST headers, gRPC
    metadata). Refusals raise TokenRefused with Qdrant's status (401/403) and message."""

    def __init__(self, api_key: bytes | None, read_only_api_key: bytes | None,
                 jwt_rbac: bool) -> None:
        self.api_key = api_key
        self.read_only_api_key = read_only_api_key
        self.verifier = JwtVerifier(api_key) if jwt_rbac and api_key is not None else None

    def access(self, given: bytes | None) -> tuple[Access, ValueExists | None]:
        """The caller's Access and the stateful check its token asks for (run it with
        value_exists before answering)."""
        if given is None:
            raise TokenRefused(401, NO_KEY)
        manage = _matches(given, self.api_key)
        read = _matches(given, self.read_only_api_key)
        if manage:
            return FULL, None
        if read:
            return READ_ONLY_ACCESS, None
        claims = self.verifier.decode(given) if self.verifier is not None else None
        if claims is None:
            raise TokenRefused(401, BAD_KEY)
        return claims.access, claims.value_exists


class ApiKeyAuth:
    """401 without a valid key or token; 403 when its access does not cover the route.

    With `jwt_rbac` (None: read from the app's settings at the first request), a key that is
    neither API key is tried as a JWT signed with the API key (Qdrant's AuthKeys)."""

    def __init__(self, app: ASGIApp, api_key: bytes | None,
                 read_only_api_key: bytes | None, jwt_rbac: bool | None = None) -> None:
        self.app = app
        self.api_key = api_key
        self.read_only_api_key = read_only_api_key
        self.jwt_rbac = jwt_rbac
        self.auth: Authenticator | None = None

    def _authenticator(self, scope: Scope) -> Authenticator:
        if self.auth is None:
            jwt_rbac = self.jwt_rbac
            if jwt_rbac is None:
                settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
                jwt_rbac = bool(settings is not None and settings.service.jwt_rbac)
            self.auth = Authenticator(self.api_key, self.read_only_api_key, jwt_rbac)
        return self.auth

    async def _access(self, scope: Scope, given: bytes) -> Access | Any:
        """The caller's Access, or the response that refuses it."""
        try:
            access, check = self._authenticator(scope).access(given)
            if check is not None:
                catalog = scope["app"].state.catalog
                await run_in_threadpool(value_exists, catalog, check)
        except TokenRefused as exc:
            # Qdrant's AuthError: the bare message as text, 401 or 403
            return PlainTextResponse(exc.message, exc.status)
        return access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = presented_key(scope.get("headers", []))
        if given is None:
            await plain_text(Unauthorized(NO_KEY))(scope, receive, send)
            return
        access = await self._access(scope, given)
        if not isinstance(access, Access):
            await access(scope, receive, send)
            return
        path = scope["path"]
        need, name = need_of(scope["method"], path)
        message = access.refusal(need, name)
        if message is not None:
            await _refused(path, message)(scope, receive, send)
        elif need is Need.LIST and access.mode is None:
            await _filtered_list(self.app, scope, receive, send, access.collections)
        else:
            # the routes check collections named in a body (lookup_from, with_lookup) too
            scope.setdefault("state", {})["access"] = access
            await self.app(scope, receive, send)
