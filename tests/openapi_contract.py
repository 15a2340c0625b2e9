"""Validate HTTP responses against Qdrant's OpenAPI contract (``tests/data/qdrant-openapi-v1.19.json``).

Public API
----------
``validate_response(method, path, status_code, body, *, content_type=None, strict=True)``
    Validate one decoded JSON ``body``; raise :class:`ContractViolation` (an ``AssertionError``)
    on mismatch. A method + path the spec does not describe is recorded in :data:`UNDOCUMENTED`
    and passes; each documented response checked is recorded in :data:`COVERED`.
    ``body=None`` (non-JSON or empty response) skips the schema check.
``install_httpx_hook(client, *, raise_on_violation=True, base_path="", strict=True)``
    Validate every response an ``httpx.Client``/``httpx.AsyncClient`` receives (Starlette's /
    FastAPI's ``TestClient`` is an ``httpx.Client``). Returns the :class:`ContractRecorder`.
``validating_qdrant_client(url, *, raise_on_violation=True, strict=True, **kw)`` (and
``validating_async_qdrant_client``)
    A ``QdrantClient`` whose every REST response is validated; it carries ``contract`` (the
    recorder) and ``contract_failures`` (the recorder's list of violations).
``documented_operations()``, ``match_operation()``, ``normalise_path()``, ``strict_json_loads()``,
``build_all_validators()``
    Helpers for coverage reports and self-checks.

How OpenAPI 3.0 is read (decided once, here)
--------------------------------------------
* Schemas are translated to JSON Schema draft 4 (the dialect OAS 3.0 is based on: boolean
  ``exclusiveMinimum``, and ``integer`` excludes ``1.0``). ``$ref: #/components/schemas/X`` is
  resolved inside one document per response.
* ``nullable: true`` beside a ``type`` adds ``"null"`` to it (and to ``enum``). Qdrant's generator
  (schemars) writes ``Option<T>`` as ``anyOf: [{$ref: T}, {nullable: true}]``. Read literally
  (OAS 3.0.3), a bare ``{nullable: true}`` has no ``type`` and so accepts *anything*, which would
  switch off checking of every optional field; it is translated to ``{"type": "null"}``, its
  intended meaning. Other ``nullable`` schemas (``$ref``/``anyOf``) become ``anyOf [X, null]``.
* Integers are strict: ``1.0`` fails where the schema says ``integer``. JSON Schema draft 6+
  would accept it (same number), but Qdrant never emits it and serde-based clients (Rust, and
  Go/Java decoders into u64) reject it, so for a Qdrant-compatible server it is a bug. Python's
  ``json`` keeps ``1`` and ``1.0`` apart, so the distinction survives decoding. ``number``
  accepts integers, as JSON does.
* ``format``: the integer formats (``uint``, ``uint64``, ``uint32``, ``uint16``, ``uint8``,
  ``int64``, ``int32``) become ``minimum``/``maximum`` bounds, ``float``/``double`` become the
  f32/f64 finite range (catches ``1e999`` -> inf); ``uuid`` must be canonical lowercase
  hyphenated (Qdrant prints ids that way whatever form it was sent); ``date-time`` is a lenient
  ISO-8601 check (UTC offset optional). Other formats (``partial-date-time``, ``binary``,
  ``uri``) are ignored. ``NaN``/``Infinity`` tokens are rejected when the hook parses the body
  (:func:`strict_json_loads`).
* ``oneOf`` stays strict (exactly one alternative must match). Every ``oneOf`` in the v1.19 spec
  is discriminated (distinct ``enum``/``type``, or ``additionalProperties: false`` with
  different required keys), so strictness causes no false failures; the overlapping unions
  (``ExtendedPointId`` int|uuid, ``VectorStructOutput``, ``VectorOutput``, ``ShardKey``...) are
  already ``anyOf`` in the spec. ``test_openapi_contract.py`` checks the discrimination, so a
  future spec with overlapping ``oneOf`` alternatives fails there first; then set
  :data:`ONEOF_AS_ANYOF` (``oneOf`` read as ``anyOf``) rather than chase false failures.
* ``example``, ``default``, ``deprecated``, ``discriminator``, ``readOnly``, ``x-*``... dropped.

``strict=True`` (the default) adds what the spec leaves optional but the Qdrant server always
sends and upstream's OpenAPI tests expect: a 200 envelope has ``status == "ok"``, ``time`` and
``result``; a 202 envelope has ``status == "accepted"`` and ``time``; an error envelope has
``time`` and ``status.error``. ``strict=False`` is the spec verbatim (every envelope field
optional, so ``{}`` passes).

Speed: each response schema is compiled once with ``fastjsonschema`` (pure Python code
generation, 10-50x faster than ``jsonschema``) for the passing case; only a failing body is run
through ``jsonschema`` to produce the error path and message. Without ``fastjsonschema``
installed everything still works, through ``jsonschema`` alone (slower).
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

try:
    import fastjsonschema
except ImportError:  # pragma: no cover - optional accelerator
    fastjsonschema = None

if TYPE_CHECKING:  # pragma: no cover
    import httpx

SPEC_PATH = Path(__file__).resolve().parent / "data" / "qdrant-openapi-v1.19.json"

#: ``(METHOD, path)`` of responses whose method + path are not in the spec (legacy
#: ``/points/search``, Quiver-only endpoints, ...). A collection name right after
#: ``/collections/`` is replaced by ``{collection_name}`` to keep the set small.
UNDOCUMENTED: set[tuple[str, str]] = set()
#: ``(METHOD, path template, response key)`` of every documented response that was checked.
COVERED: set[tuple[str, str, str]] = set()

#: Read ``oneOf`` as ``anyOf``. Off: see the module docstring. Set before the first validation.
ONEOF_AS_ANYOF = False

_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_JSON_MEDIA = "application/json"
_DRAFT4 = "http://json-schema.org/draft-04/schema#"
# OpenAPI-only keywords and annotations with no validation meaning: dropped.
_DROPPED = frozenset(
    {
        "nullable",
        "example",
        "examples",
        "default",
        "deprecated",
        "discriminator",
        "readOnly",
        "writeOnly",
        "xml",
        "externalDocs",
        "format",
    }
)
# A schema with only these keys besides ``nullable`` constrains nothing: it means "null".
_ANNOTATIONS = frozenset({"description", "title", "default", "example", "examples", "deprecated"})
_INT_FORMATS = {
    "uint": (0, 2**64 - 1),  # Rust usize on a 64-bit target
    "uint64": (0, 2**64 - 1),
    "uint32": (0, 2**32 - 1),
    "uint16": (0, 2**16 - 1),
    "uint8": (0, 2**8 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "int32": (-(2**31), 2**31 - 1),
}
_FLOAT_FORMATS = {"float": 3.4028234663852886e38, "double": sys.float_info.max}
# Checked string formats; the same regexes drive both engines. Others are ignored.
_STRING_FORMATS = {
    "uuid": r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z",
    "date-time": r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:?\d{2})?\Z",
}


class ContractViolation(AssertionError):
    """A response that does not match the OpenAPI contract."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        status_code: int,
        template: str | None = None,
        json_path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.status_code = status_code
        self.template = template
        self.json_path = json_path


# --------------------------------------------------------------------------- schema translation


def _translate(node: Any) -> Any:
    """Translate one OpenAPI 3.0 Schema Object into JSON Schema draft 4."""
    if not isinstance(node, dict):
        return node  # ``additionalProperties: true``
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key.startswith("x-"):
            continue
        if key == "properties":
            out[key] = {name: _translate(sub) for name, sub in value.items()}
        elif key in ("items", "not", "additionalProperties"):
            out[key] = _translate(value)
        elif key in ("allOf", "anyOf"):
            out[key] = [_translate(sub) for sub in value]
        elif key == "oneOf":
            out["anyOf" if ONEOF_AS_ANYOF else "oneOf"] = [_translate(sub) for sub in value]
        else:
            out[key] = value
    _apply_format(out, node.get("format"))
    if node.get("nullable") is True:
        out = _nullable(out)
    return out


def _apply_format(out: dict[str, Any], fmt: str | None) -> None:
    if fmt in _STRING_FORMATS:
        out["format"] = fmt
    elif fmt in _INT_FORMATS:
        lo, hi = _INT_FORMATS[fmt]
        _tighten(out, lo, hi)
    elif fmt in _FLOAT_FORMATS:
        _tighten(out, -_FLOAT_FORMATS[fmt], _FLOAT_FORMATS[fmt])


def _tighten(out: dict[str, Any], lo: float, hi: float) -> None:
    out["minimum"] = max(out.get("minimum", lo), lo)
    out["maximum"] = min(out.get("maximum", hi), hi)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = types if "null" in types else [*types, "null"]
        if "enum" in schema and None not in schema["enum"]:
            schema["enum"] = [*schema["enum"], None]
        return schema
    if all(key in _ANNOTATIONS for key in schema):
        return {**schema, "type": "null"}  # bare {nullable: true}: the Option<T> "None" arm
    return {"anyOf": [schema, {"type": "null"}]}


def _make_format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())  # starts empty: unregistered formats are ignored
    for name, pattern in _STRING_FORMATS.items():
        regex = re.compile(pattern)
        checker.checks(name)(
            lambda value, _r=regex: not isinstance(value, str) or _r.match(value) is not None
        )
    return checker


_FORMAT_CHECKER = _make_format_checker()


# --------------------------------------------------------------------------- spec and routing


@dataclass(frozen=True)
class _Operation:
    template: str
    method: str  # upper case
    responses: dict[str, Any]


_Route = tuple[tuple[str | None, ...], dict[str, _Operation]]


@dataclass
class _Spec:
    components: dict[str, Any]  # {"schemas": {...translated...}}
    routes: dict[int, list[_Route]]  # segment count -> routes, most specific first
    operations: dict[tuple[str, str], _Operation]  # (METHOD, template) -> operation


@cache
def _spec() -> _Spec:
    raw = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    schemas = {name: _translate(s) for name, s in raw["components"]["schemas"].items()}
    routes: dict[int, list[_Route]] = {}
    operations: dict[tuple[str, str], _Operation] = {}
    for template, item in raw["paths"].items():
        ops: dict[str, _Operation] = {}
        for method in _HTTP_METHODS:
            if method in item:
                op = _Operation(template, method.upper(), item[method].get("responses", {}))
                ops[op.method] = op
                operations[(op.method, template)] = op
        segments = tuple(
            None if seg.startswith("{") and seg.endswith("}") else seg for seg in _split(template)
        )
        routes.setdefault(len(segments), []).append((segments, ops))
    for candidates in routes.values():
        # Literal segments beat parameters, leftmost first, as in Qdrant's router:
        # POST /collections/aliases is not POST /collections/{collection_name}.
        candidates.sort(key=lambda route: tuple(seg is None for seg in route[0]))
    return _Spec({"schemas": schemas}, routes, operations)


def _split(path: str) -> list[str]:
    return [seg for seg in path.split("/") if seg]


def normalise_path(path: str, base_path: str = "") -> str:
    """Strip query/fragment, collapse ``//``, drop a trailing ``/`` and a leading ``base_path``."""
    segments = _split(path.split("?", 1)[0].split("#", 1)[0])
    base = _split(base_path)
    if base and segments[: len(base)] == base:
        segments = segments[len(base) :]
    return "/" + "/".join(segments)


@lru_cache(maxsize=8192)
def _match(method: str, path: str) -> _Operation | None:
    segments = _split(path)
    for route_segments, ops in _spec().routes.get(len(segments), ()):
        if method in ops and all(
            t is None or t == s for t, s in zip(route_segments, segments, strict=True)
        ):
            return ops[method]
    return None


def match_operation(method: str, path: str) -> tuple[str, str] | None:
    """``(METHOD, template)`` of the documented operation serving ``path``, or None."""
    op = _match(method.upper(), normalise_path(path))
    return (op.method, op.template) if op else None


def documented_operations() -> set[tuple[str, str]]:
    """Every ``(METHOD, template)`` in the spec; compare with :data:`COVERED` for coverage."""
    return set(_spec().operations)


def _undocumented_key(method: str, path: str) -> tuple[str, str]:
    segments = _split(path)
    if len(segments) >= 2 and segments[0] == "collections":
        segments[1] = "{collection_name}"
    return method, "/" + "/".join(segments)


def _response_key(responses: dict[str, Any], status_code: int) -> str | None:
    if str(status_code) in responses:
        return str(status_code)
    wildcard = f"{status_code // 100}XX"
    for key in responses:
        if key.upper() == wildcard:
            return key
    return "default" if "default" in responses else None


# --------------------------------------------------------------------------- validators

_ERROR_REF = "#/components/schemas/ErrorResponse"


def _strict_envelope(raw_schema: dict[str, Any], key: str) -> dict[str, Any] | None:
    """What ``strict=True`` adds (``allOf``-ed with the spec's schema), or None."""
    if raw_schema.get("$ref") == _ERROR_REF:
        return {
            "type": "object",
            "required": ["status", "time"],
            "properties": {"status": {"type": "object", "required": ["error"]}},
        }
    props = raw_schema.get("properties", {})
    if raw_schema.get("type") != "object" or not {"status", "time"} <= props.keys():
        return None  # not an envelope (GET / answers a bare VersionInfo)
    extra: dict[str, Any] = {
        "required": ["status", "time"] + (["result"] if "result" in props else [])
    }
    expected = {"200": "ok", "202": "accepted"}.get(key)
    if expected:
        extra["properties"] = {"status": {"enum": [expected]}}
    return extra


class _ResponseValidator:
    """One response schema: a fast pass/fail check plus a lazily built diagnosing validator."""

    def __init__(self, schema: dict[str, Any]) -> None:
        # ``components`` rides along so ``#/components/schemas/X`` resolves in this document.
        self.document = {"$schema": _DRAFT4, "allOf": [schema], "components": _spec().components}
        self.fast: Callable[[Any], Any] | None = None
        if fastjsonschema is not None:
            self.fast = fastjsonschema.compile(
                self.document, formats=_STRING_FORMATS, use_default=False
            )
        self._slow: Draft4Validator | None = None

    @property
    def slow(self) -> Draft4Validator:
        if self._slow is None:
            self._slow = Draft4Validator(self.document, format_checker=_FORMAT_CHECKER)
        return self._slow

    def errors(self, body: Any) -> tuple[list[ValidationError], str | None]:
        """``(jsonschema errors, fast engine's message)``; both empty when ``body`` is valid."""
        if self.fast is None:
            return list(self.slow.iter_errors(body)), None
        try:
            self.fast(body)
        except fastjsonschema.JsonSchemaValueException as exc:
            return list(self.slow.iter_errors(body)), f"{exc.name}: {exc.message}"
        return [], None


@cache
def _validator(method: str, template: str, key: str, strict: bool) -> _ResponseValidator:
    op = _spec().operations[(method, template)]
    raw_schema = op.responses[key]["content"][_JSON_MEDIA]["schema"]
    schema = _translate(raw_schema)
    extra = _strict_envelope(raw_schema, key) if strict else None
    return _ResponseValidator({"allOf": [schema, extra]} if extra else schema)


def _describe(error: ValidationError) -> str:
    instance = json.dumps(error.instance, default=str)
    if len(instance) > 200:
        instance = instance[:197] + "..."
    return f"at {error.json_path}: {error.message} (got {instance})"


def _truncate(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_response(
    method: str,
    path: str,
    status_code: int,
    body: Any,
    *,
    content_type: str | None = None,
    strict: bool = True,
) -> None:
    """Check one response against the contract; raise :class:`ContractViolation` on mismatch.

    ``path``: the concrete request path (query string, ``//`` and a trailing ``/`` tolerated).
    ``body``: the decoded JSON, or None for a non-JSON/empty response (then only
    ``content_type``, the response's media type, is checked when given).
    """
    method = method.upper()
    norm = normalise_path(path)
    op = _match(method, norm)
    if op is None:
        UNDOCUMENTED.add(_undocumented_key(method, norm))
        return
    where = f"{method} {norm} -> {status_code}"

    def violation(message: str, json_path: str | None = None) -> ContractViolation:
        return ContractViolation(
            f"OpenAPI contract: {where}: {message}",
            method=method,
            path=norm,
            status_code=status_code,
            template=op.template,
            json_path=json_path,
        )

    key = _response_key(op.responses, status_code)
    if key is None:
        raise violation(
            f"status {status_code} is not documented for {method} {op.template} "
            f"(documented: {', '.join(sorted(op.responses))})"
        )
    COVERED.add((method, op.template, key))
    content = op.responses[key].get("content") or {}
    media = content_type.split(";", 1)[0].strip().lower() if content_type else None
    if media and content and media not in content:
        raise violation(f"content type {media!r}, but responses[{key}] declares {sorted(content)}")
    if _JSON_MEDIA not in content:
        if body is not None and content:
            raise violation(f"JSON body, but responses[{key}] declares only {sorted(content)}")
        return
    if body is None:
        return
    errors, fast_message = _validator(method, op.template, key, strict).errors(body)
    if not errors and fast_message is None:
        return
    schema_name = f"{method} {op.template} responses[{key}]"
    body_text = _truncate(json.dumps(body, default=str))
    if not errors:  # the engines disagree: report the fast engine's finding
        raise violation(f"does not match {schema_name}: {fast_message}\n  body: {body_text}")
    best = best_match(errors)
    others = [_describe(e) for e in errors if e is not best][:3]
    message = f"does not match {schema_name} {_describe(best)}"
    if others:
        message += "\n  also: " + "\n  also: ".join(others)
    raise violation(f"{message}\n  body: {body_text}", json_path=best.json_path)


def iter_response_schemas() -> Iterator[tuple[str, str, str]]:
    """``(METHOD, template, response key)`` of every response that has a JSON schema."""
    for (method, template), op in _spec().operations.items():
        for key, response in op.responses.items():
            if _JSON_MEDIA in (response.get("content") or {}):
                yield method, template, key


def build_all_validators(strict: bool = True) -> int:
    """Compile every JSON response validator (fails on a bad ``$ref``); returns the count."""
    count = 0
    for method, template, key in iter_response_schemas():
        validator = _validator(method, template, key, strict)
        Draft4Validator.check_schema(validator.document)
        validator.slow.is_valid(None)  # forces $ref resolution of the top level
        count += 1
    return count


# --------------------------------------------------------------------------- httpx integration


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON (RFC 8259 has no NaN/Infinity)")


def strict_json_loads(data: bytes | str) -> Any:
    """``json.loads`` that rejects the non-standard ``NaN``/``Infinity`` tokens."""
    return json.loads(data, parse_constant=_reject_constant)


@dataclass
class ContractRecorder:
    """Validates ``httpx`` responses; keeps every violation in :attr:`failures`."""

    raise_on_violation: bool = True
    base_path: str = ""
    strict: bool = True
    failures: list[ContractViolation] = field(default_factory=list)
    checked: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check_httpx_response(self, response: httpx.Response) -> None:
        request = response.request
        method = request.method.upper()
        path = normalise_path(request.url.raw_path.decode("ascii"), self.base_path)
        status = response.status_code
        media = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        try:
            body = None
            if method != "HEAD" and (media == _JSON_MEDIA or media.endswith("+json")):
                if not response.content:
                    raise ContractViolation(
                        f"OpenAPI contract: {method} {path} -> {status}: empty body with "
                        f"content type {media!r}",
                        method=method,
                        path=path,
                        status_code=status,
                    )
                try:
                    body = strict_json_loads(response.content)
                except ValueError as exc:
                    raise ContractViolation(
                        f"OpenAPI contract: {method} {path} -> {status}: invalid JSON ({exc}): "
                        f"{_truncate(response.text)}",
                        method=method,
                        path=path,
                        status_code=status,
                    ) from None
            validate_response(
                method, path, status, body, content_type=media or None, strict=self.strict
            )
        except ContractViolation as exc:
            with self._lock:
                self.failures.append(exc)
            if self.raise_on_violation:
                raise
        finally:
            with self._lock:
                self.checked += 1

    def hook(self, response: httpx.Response) -> None:
        """``httpx.Client`` response event hook (hooks run before the body is read)."""
        response.read()
        self.check_httpx_response(response)

    async def async_hook(self, response: httpx.Response) -> None:
        """``httpx.AsyncClient`` response event hook."""
        await response.aread()
        self.check_httpx_response(response)

    def assert_ok(self) -> None:
        """Raise one AssertionError listing every violation seen so far."""
        if self.failures:
            listed = "\n".join(f"- {failure}" for failure in self.failures)
            raise AssertionError(f"{len(self.failures)} OpenAPI contract violation(s):\n{listed}")


def install_httpx_hook(
    client: httpx.Client | httpx.AsyncClient,
    *,
    raise_on_violation: bool = True,
    base_path: str = "",
    strict: bool = True,
) -> ContractRecorder:
    """Validate every response ``client`` receives; returns the recorder.

    ``base_path`` is stripped from request paths first (server mounted under a prefix). With
    ``raise_on_violation`` the :class:`ContractViolation` propagates out of the request call.
    """
    import httpx

    recorder = ContractRecorder(raise_on_violation, base_path, strict)
    hook = recorder.async_hook if isinstance(client, httpx.AsyncClient) else recorder.hook
    hooks = client.event_hooks
    client.event_hooks = {**hooks, "response": [*hooks.get("response", []), hook]}
    return recorder


def _base_path_of(url: str | None, prefix: str | None) -> str:
    if prefix:
        return prefix
    if not url:
        return ""
    # QdrantRemote reads "localhost:6333" as "//localhost:6333"; do the same.
    return urlsplit(url if "://" in url or url.startswith("//") else "//" + url).path


def _qdrant_kwargs(
    url: str, recorder: ContractRecorder, is_async: bool, kw: dict[str, Any]
) -> dict[str, Any]:
    if kw.get("prefer_grpc"):
        raise ValueError("contract validation sees REST traffic only; prefer_grpc must be False")
    hooks = dict(kw.pop("event_hooks", None) or {})
    hooks["response"] = [
        *hooks.get("response", []),
        recorder.async_hook if is_async else recorder.hook,
    ]
    recorder.base_path = _base_path_of(url, kw.get("prefix"))
    # The version probe (GET /) runs in a thread through a bare httpx.get, bypassing the hooks,
    # and only ever warns; off unless asked for.
    kw.setdefault("check_compatibility", False)
    return {"url": url, "event_hooks": hooks, **kw}


def validating_qdrant_client(
    url: str, *, raise_on_violation: bool = True, strict: bool = True, **kw: Any
) -> Any:
    """``QdrantClient(url=url, **kw)`` whose every REST response is checked against the contract.

    qdrant-client passes unknown keyword arguments of ``QdrantClient`` verbatim to every
    ``httpx.Client`` it builds (the main one and the ``upload_points``/``upload_collection``
    workers), so this passes ``event_hooks={"response": [hook]}``. A violation raised in the hook
    reaches the caller wrapped by qdrant-client as ``ResponseHandlingException``: its ``str()``
    is the violation message and ``.source`` the :class:`ContractViolation`. Violations are also
    collected in ``client.contract_failures``; ``client.contract.assert_ok()`` raises on any.
    """
    from qdrant_client import QdrantClient

    recorder = ContractRecorder(raise_on_violation=raise_on_violation, strict=strict)
    client = QdrantClient(**_qdrant_kwargs(url, recorder, False, kw))
    client.contract = recorder
    client.contract_failures = recorder.failures
    return client


def validating_async_qdrant_client(
    url: str, *, raise_on_violation: bool = True, strict: bool = True, **kw: Any
) -> Any:
    """``AsyncQdrantClient`` counterpart of :func:`validating_qdrant_client`."""
    from qdrant_client import AsyncQdrantClient

    recorder = ContractRecorder(raise_on_violation=raise_on_violation, strict=strict)
    client = AsyncQdrantClient(**_qdrant_kwargs(url, recorder, True, kw))
    client.contract = recorder
    client.contract_failures = recorder.failures
    return client
