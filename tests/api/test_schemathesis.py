"""Property-based fuzzing of the REST API from Qdrant's own OpenAPI schema (schemathesis).

Every operation of ``tests/data/qdrant-openapi-v1.19.json`` that Quiver implements gets a
bounded number of generated requests, sent to the real ``quiver serve`` over HTTP, in three
modes: ``positive`` (schemathesis' schema-conforming cases), ``negative`` (schemathesis' cases
that break the schema) and ``mutated`` (a conforming case with one value deep in its JSON body
swapped for one of the wrong type or out of range: what a client bug sends). Path parameters
are mostly pinned to a real collection (and its real snapshot), so the cases reach the handlers
instead of stopping at 404; some keep generated names, which must give a 4xx. Over the run:

* no response is a 5xx (and the server never drops a connection);
* every 4xx body is Qdrant's error envelope ``{"status": {"error": "<text>"}, "time": <n>}``;
* after each operation the pinned collections still answer reads (info, query, scroll,
  count) without a 5xx: an accepted request must not leave state that breaks later ones.

Generation is derandomized (fixed seed per operation, no example database), so a CI failure
reproduces locally. Operations run cheapest and least destructive first; the seed state
(collections, points, payload indexes, the pinned snapshots) is restored before each one, and
the destructive ones (point deletion, index deletion, snapshot deletion, collection deletion)
run last. ``wait=false`` snapshot operations fail, if they do, in the background, so the
server log must hold no ERROR record or traceback either.

``QUIVER_FUZZ_EXAMPLES`` (default 16) sets the examples per operation and mode, and
``QUIVER_FUZZ_SEED`` replaces the fixed derandomized seed (to explore further). The number of
cases run per operation is printed in pytest's terminal summary.
"""

from __future__ import annotations

import copy
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server import QuiverServer

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.errors import FailureGroup  # noqa: E402

SPEC = Path(__file__).resolve().parents[1] / "data" / "qdrant-openapi-v1.19.json"
EXAMPLES = int(os.environ.get("QUIVER_FUZZ_EXAMPLES", "16"))
# Unset: derandomized (the same cases on every run). Set: that seed, to explore further.
SEED = os.environ.get("QUIVER_FUZZ_SEED")
# Negative cases (bodies and parameters that break the schema) are slower to generate.
NEGATIVE_EXAMPLES = max(1, EXAMPLES // 2)
MODES = ("positive", "negative", "mutated")
# What `mutated` puts in place of one value of a conforming body.
WRONG_VALUES = [None, True, False, 0, -1, 1, 2**63, -(2**63), 2**64, 1.5, -1e308, 1e308, "",
                "x", "-1", "1e999", "\u0000", [], [None], [1, "a"], {}, {"": None}]
DIM = 3

# The operations Quiver implements (README "API coverage"), in run order: reads, then writes,
# then the destructive ones. Each gets its own derandomized run.
OPERATIONS: list[tuple[str, str]] = [
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/telemetry"),
    ("GET", "/metrics"),
    ("GET", "/collections"),
    ("GET", "/aliases"),
    ("GET", "/collections/{collection_name}"),
    ("GET", "/collections/{collection_name}/exists"),
    ("GET", "/collections/{collection_name}/aliases"),
    ("GET", "/collections/{collection_name}/snapshots"),
    ("GET", "/collections/{collection_name}/snapshots/{snapshot_name}"),
    ("GET", "/snapshots"),
    ("GET", "/snapshots/{snapshot_name}"),
    ("GET", "/collections/{collection_name}/points/{id}"),
    ("POST", "/collections/{collection_name}/points"),
    ("POST", "/collections/{collection_name}/points/scroll"),
    ("POST", "/collections/{collection_name}/points/count"),
    ("POST", "/collections/{collection_name}/points/query"),
    ("POST", "/collections/{collection_name}/points/query/batch"),
    ("POST", "/collections/{collection_name}/points/query/groups"),
    ("POST", "/collections/{collection_name}/facet"),
    ("POST", "/collections/{collection_name}/points/search/matrix/pairs"),
    ("POST", "/collections/{collection_name}/points/search/matrix/offsets"),
    ("GET", "/cluster"),
    ("GET", "/collections/{collection_name}/cluster"),
    ("GET", "/issues"),
    ("DELETE", "/issues"),
    ("PUT", "/collections/{collection_name}"),
    ("PATCH", "/collections/{collection_name}"),
    ("POST", "/collections/aliases"),
    ("PUT", "/collections/{collection_name}/index"),
    ("PUT", "/collections/{collection_name}/points"),
    ("PUT", "/collections/{collection_name}/points/vectors"),
    ("POST", "/collections/{collection_name}/points/payload"),
    ("PUT", "/collections/{collection_name}/points/payload"),
    ("POST", "/collections/{collection_name}/points/payload/delete"),
    ("POST", "/collections/{collection_name}/points/payload/clear"),
    ("POST", "/collections/{collection_name}/points/vectors/delete"),
    ("POST", "/collections/{collection_name}/points/batch"),
    ("POST", "/collections/{collection_name}/snapshots"),
    ("POST", "/snapshots"),
    ("PUT", "/collections/{collection_name}/snapshots/recover"),
    ("POST", "/collections/{collection_name}/snapshots/upload"),
    # cluster operations and shard snapshots (api/routes/cluster.py): 400 on a single node
    ("POST", "/collections/{collection_name}/cluster"),
    ("POST", "/collections/{collection_name}/shards/{shard_id}/snapshots"),
    ("GET", "/collections/{collection_name}/shards/{shard_id}/snapshots"),
    ("PUT", "/collections/{collection_name}/shards/{shard_id}/snapshots/recover"),
    ("POST", "/collections/{collection_name}/shards/{shard_id}/snapshots/upload"),
    ("GET", "/collections/{collection_name}/shards/{shard_id}/snapshots/{snapshot_name}"),
    ("DELETE", "/collections/{collection_name}/shards/{shard_id}/snapshots/{snapshot_name}"),
    # destructive: last
    ("POST", "/collections/{collection_name}/points/delete"),
    ("DELETE", "/collections/{collection_name}/index/{field_name}"),
    ("DELETE", "/collections/{collection_name}/snapshots/{snapshot_name}"),
    ("DELETE", "/snapshots/{snapshot_name}"),
    ("DELETE", "/collections/{collection_name}"),
]
# Operations whose every case costs a whole archive: fewer examples.
EXPENSIVE = {("POST", "/snapshots"), ("POST", "/collections/{collection_name}/snapshots"),
             ("PUT", "/collections/{collection_name}/snapshots/recover")}
MIN_CASES = 10 * len(OPERATIONS) if EXAMPLES >= 10 else len(OPERATIONS)

PLAIN = "fuzz"         # one unnamed vector
NAMED = "fuzz_named"   # two named vectors
SEED_POINTS = 12


class Fixture:
    """The seed state the cases are pinned to, restored before each operation."""

    def __init__(self, srv: QuiverServer) -> None:
        self.srv = srv
        self.http = httpx.Client(base_url=srv.url, timeout=60)
        self.snapshot = ""       # a real snapshot of PLAIN
        self.full_snapshot = ""  # a real full-storage snapshot

    def _ok(self, r: httpx.Response) -> Any:
        assert r.status_code == 200, f"{r.request.method} {r.request.url}: {r.text}"
        return r.json()["result"]

    def reset(self) -> None:
        """Restore the seed state; a `wait=false` recovery or deletion still running in the
        background may race it, hence the retries."""
        for attempt in range(5):
            try:
                self._reset()
                return
            except AssertionError:
                if attempt == 4:
                    raise
                time.sleep(0.5)

    def _reset(self) -> None:
        h = self.http
        configs = {
            PLAIN: {"vectors": {"size": DIM, "distance": "Cosine"}},
            NAMED: {"vectors": {"a": {"size": DIM, "distance": "Dot"},
                                "b": {"size": 2, "distance": "Euclid"}}},
        }
        for name, config in configs.items():
            if not self._ok(h.get(f"/collections/{name}/exists"))["exists"]:
                self._ok(h.put(f"/collections/{name}", json=config))
        points = []
        for i in range(SEED_POINTS):
            payload = {"city": ["Berlin", "Paris", "Rome"][i % 3], "n": i, "tags": [f"t{i % 4}"],
                       "nested": {"x": i / 2, "flag": i % 2 == 0}}
            points.append({"id": i, "vector": [float(i + 1), 1.0, -0.5], "payload": payload})
        uuid_point = {"id": "00000000-0000-0000-0000-000000000001",
                      "vector": [0.5, 0.5, 0.5], "payload": {"city": "Oslo"}}
        self._ok(h.put(f"/collections/{PLAIN}/points?wait=true",
                       json={"points": points + [uuid_point]}))
        named = [{**p, "vector": {"a": p["vector"], "b": [1.0, float(i)]}}
                 for i, p in enumerate(points)]
        self._ok(h.put(f"/collections/{NAMED}/points?wait=true", json={"points": named}))
        for name in (PLAIN, NAMED):
            for field, schema in (("city", "keyword"), ("n", "integer")):
                self._ok(h.put(f"/collections/{name}/index?wait=true",
                               json={"field_name": field, "field_schema": schema}))
        listed = [s["name"] for s in self._ok(h.get(f"/collections/{PLAIN}/snapshots"))]
        if self.snapshot not in listed:
            self.snapshot = self._ok(h.post(f"/collections/{PLAIN}/snapshots"))["name"]
        listed = [s["name"] for s in self._ok(h.get("/snapshots"))]
        if self.full_snapshot not in listed:
            self.full_snapshot = self._ok(h.post("/snapshots"))["name"]

    def probe(self) -> list[str]:
        """Reads of the pinned collections that answer with a 5xx (or not at all)."""
        problems = []
        for name in (PLAIN, NAMED):
            using = {} if name == PLAIN else {"using": "a"}
            for method, path, body in (
                    ("GET", f"/collections/{name}", None),
                    ("POST", f"/collections/{name}/points/query",
                     {"query": [1.0, 0.5, -0.5], "limit": 3, "with_payload": True, **using}),
                    ("POST", f"/collections/{name}/points/query",
                     {"query": [0.5, 1.0, 0.5], "filter": {"must": [
                         {"key": "city", "match": {"value": "Berlin"}}]}, **using}),
                    ("POST", f"/collections/{name}/points/scroll",
                     {"limit": 5, "with_vector": True, "order_by": "n"}),
                    ("POST", f"/collections/{name}/points/count", {"exact": True})):
                try:
                    r = self.http.request(method, path, json=body)
                except httpx.HTTPError as exc:
                    problems.append(f"{method} {path}: {exc!r}")
                    continue
                if r.status_code >= 500:
                    problems.append(f"{method} {path} {body}: {r.status_code} {r.text[:300]}")
        return problems

    def pins(self, path: str) -> list[dict[str, Any] | None]:
        """Path-parameter choices for one operation: mostly the real objects, and None (every
        parameter generated: random names, which must be answered with a 4xx)."""
        choices: list[dict[str, Any] | None] = []
        if "{collection_name}" in path:
            if "{snapshot_name}" in path:
                choices += [{"collection_name": PLAIN, "snapshot_name": self.snapshot}] * 2
                choices += [{"collection_name": PLAIN}]
            elif "{field_name}" in path:
                choices += [{"collection_name": PLAIN, "field_name": "city"},
                            {"collection_name": NAMED, "field_name": "n"},
                            {"collection_name": PLAIN}]
            else:
                choices += [{"collection_name": PLAIN}] * 2 + [{"collection_name": NAMED}] * 2
        elif "{snapshot_name}" in path:
            choices += [{"snapshot_name": self.full_snapshot}] * 2
        return choices + [None]

    def bodies(self, method: str, path: str) -> list[Any]:
        """Hand-picked bodies that reach deep paths random ones rarely do."""
        if (method, path) == ("PUT", "/collections/{collection_name}/snapshots/recover"):
            local = self.srv.storage.parent / "snaps" / PLAIN / self.snapshot
            url = f"{self.srv.url}/collections/{PLAIN}/snapshots/{self.snapshot}"
            return [{"location": f"file://{local}"}, {"location": url}]
        return []


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuiverServer]:
    base = tmp_path_factory.mktemp("fuzz")
    srv = QuiverServer(base / "storage", env={
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps"),
        # Generated `location`s name arbitrary hosts: refuse them (403) without a DNS lookup,
        # so the run never leaves the machine; the server's own URL stays reachable.
        "QUIVER__STORAGE__SNAPSHOT_URL_ALLOWED_HOSTS": "['127.0.0.1']",
        "QUIVER__STORAGE__SNAPSHOT_URL_IDLE_TIMEOUT_S": "5",
        "QUIVER__STORAGE__WAL__FSYNC": "false",  # speed only: durability is tested elsewhere
        "QUIVER__SERVICE__ACCESS_LOG": "false",
    }).start()
    yield srv
    srv.stop()


def envelope_problem(resp: Any) -> str | None:
    """Why a 4xx body is not Qdrant's error envelope, or None when it is."""
    try:
        body = resp.json()
    except ValueError:
        return f"not JSON ({resp.headers.get('content-type')!r})"
    if not isinstance(body, dict) or set(body) != {"status", "time"}:
        return "keys are not exactly {status, time}"
    status = body["status"]
    if not isinstance(status, dict) or set(status) != {"error"}:
        return "`status` is not {error: ...}"
    if not isinstance(status["error"], str) or not status["error"].strip():
        return "`status.error` is not a non-empty string"
    t = body["time"]
    if isinstance(t, bool) or not isinstance(t, int | float):
        return "`time` is not a number"
    return None


def server_errors(log: str) -> list[str]:
    """ERROR records and tracebacks in the server log (the record and what follows it)."""
    lines = log.splitlines()
    return ["\n".join(lines[i:i + 12]) for i, line in enumerate(lines)
            if " ERROR " in line or line.startswith("Traceback")]


def _text(resp: Any) -> str:
    return resp.content[:300].decode("utf-8", "replace")


def _body_slots(body: Any, depth: int = 0) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every value in a JSON body, the containers themselves included."""
    if depth > 8:
        return
    items = body.items() if isinstance(body, dict) else \
        enumerate(body) if isinstance(body, list) else ()
    for key, value in items:
        yield body, key
        yield from _body_slots(value, depth + 1)


@st.composite
def _mutated(draw: Any, base: Any) -> Any:
    case = draw(base)
    if case.media_type != "application/json" or not isinstance(case.body, dict | list):
        return case  # multipart uploads keep their form
    body = copy.deepcopy(case.body)
    slots = list(_body_slots(body))
    if not slots:
        return case
    container, key = draw(st.sampled_from(slots))
    container[key] = copy.deepcopy(draw(st.sampled_from(WRONG_VALUES)))
    case.body = body
    return case


def _strategy(operation: Any, mode: str, pins: list[dict[str, Any] | None],
              bodies: list[Any]) -> Any:
    gen = GenerationMode.NEGATIVE if mode == "negative" else GenerationMode.POSITIVE
    parts = [operation.as_strategy(generation_mode=gen, path_parameters=p) for p in pins]
    if mode == "positive":
        parts += [operation.as_strategy(generation_mode=gen, path_parameters=pins[0], body=b)
                  for b in bodies]
    strategy = st.one_of(parts)
    return _mutated(strategy) if mode == "mutated" else strategy


def _fuzz_operation(schema: Any, fx: Fixture, method: str, path: str, mode: str,
                    max_examples: int, counts: Counter[str], statuses: Counter[str],
                    failures: list[str]) -> None:
    operation = schema[path][method]
    label = f"{method} {path}"
    strategy = _strategy(operation, mode, fx.pins(path), fx.bodies(method, path))
    base_url = fx.srv.url

    @settings(max_examples=max_examples, derandomize=SEED is None, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False)
    @given(case=strategy)
    def run(case: Any) -> None:
        counts[label] += 1
        try:
            resp = case.call(base_url=base_url, timeout=60)
        except Exception as exc:  # noqa: BLE001 - a dropped connection is a failure to report
            failures.append(f"{label}: request failed: {exc!r}\n  "
                            f"{case.as_curl_command(base_url=base_url)}")
            return
        statuses[f"{resp.status_code // 100}xx"] += 1
        problem = None
        try:
            case.validate_response(resp, checks=[not_a_server_error])
        except FailureGroup as exc:
            problem = "; ".join(f"{f.title} ({f.code})" for f in exc.exceptions)
        if problem is None and 400 <= resp.status_code < 500:
            why = envelope_problem(resp)
            if why:
                problem = f"{resp.status_code} is not the error envelope: {why}"
        if problem:
            failures.append(f"{label} [{mode}]: {problem}\n  body: {_text(resp)}\n  "
                            f"{case.as_curl_command(base_url=base_url)[:1500]}")

    if SEED is not None:
        run = seed(int(SEED))(run)
    try:
        run()
    except Unsatisfiable:
        pass  # negative mode with every parameter pinned: nothing left to break


def _examples(method: str, path: str, mode: str) -> int:
    n = EXAMPLES if (method, path) not in EXPENSIVE else max(2, EXAMPLES // 4)
    return max(1, min(n, NEGATIVE_EXAMPLES)) if mode == "negative" else n


def test_fuzz_implemented_operations(fuzz_server: QuiverServer,
                                     terminal_summary: list[str]) -> None:
    schema = schemathesis.openapi.from_path(SPEC)
    fx = Fixture(fuzz_server)
    counts: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    timings: dict[str, float] = {}
    started = time.perf_counter()
    for method, path in OPERATIONS:
        fx.reset()
        t0 = time.perf_counter()
        for mode in MODES:
            _fuzz_operation(schema, fx, method, path, mode, _examples(method, path, mode),
                            counts, statuses, failures)
            failures += [f"after {method} {path} [{mode}]: {p}" for p in fx.probe()]
        timings[f"{method} {path}"] = time.perf_counter() - t0
    elapsed = time.perf_counter() - started

    total = sum(counts.values())
    lines = [f"schemathesis: {total} cases over {len(counts)} operations in {elapsed:.1f}s "
             f"({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))})"]
    lines += [f"  {counts[f'{m} {p}']:4d}  {timings[f'{m} {p}']:5.1f}s  {m} {p}"
              for m, p in OPERATIONS]
    print("\n".join(lines))
    terminal_summary.extend(lines)

    # the server survived and the seed state still serves
    assert fuzz_server.proc is not None and fuzz_server.proc.poll() is None, fuzz_server.log()
    fx.reset()
    assert fx.http.post(f"/collections/{PLAIN}/points/count",
                        json={"exact": True}).json()["result"]["count"] >= SEED_POINTS
    fx.http.close()

    assert not failures, f"{len(failures)} failing case(s):\n" + "\n".join(failures[:25])
    # wait=false snapshot operations answer 202 at once and fail, if they do, in the
    # background: what would have been a 5xx shows up in the server log only
    logged = server_errors(fuzz_server.log_path.read_text(errors="replace"))
    assert not logged, "errors in the server log:\n" + "\n".join(logged[:10])
    missing = [f"{m} {p}" for m, p in OPERATIONS if counts[f"{m} {p}"] == 0]
    assert not missing, f"operations with no case: {missing}"
    assert total >= MIN_CASES, f"only {total} cases ran"



def test_every_routed_operation_of_the_schema_is_fuzzed() -> None:
    """A route added to the app that Qdrant's schema describes is fuzzed too (or listed here
    on purpose)."""
    import json
    import re

    from api.app import all_routes

    routed = set()
    for route in all_routes():
        template = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        routed |= {(m, template) for m in route.methods if m != "HEAD"}
    spec = json.loads(SPEC.read_text())
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert routed & documented <= set(OPERATIONS), sorted((routed & documented) - set(OPERATIONS))
    assert set(OPERATIONS) <= routed & documented, sorted(set(OPERATIONS) - routed)
