"""Congruence: Quiver (over HTTP, via qdrant-client) must answer like qdrant-client's local mode.

The same seeded random data goes into a Quiver collection and into ``QdrantClient(":memory:")``
(the oracle); then the same random queries, filters, scrolls, counts, retrieves and write
sequences run against both and the answers are compared: ids, scores (relative tolerance),
payloads, vectors, ``next_page_offset`` and ``order_value``.

Ground rules the comparisons follow (all verified against local mode):

* Ties: the order among equal scores is arbitrary. Every Quiver hit must sit at a position
  whose oracle score matches, and its id must be one of the oracle points holding that score
  (a *tie pool* taken from a wider oracle query), so ties may come back in either order.
* ``score_threshold`` is strict on both sides; thresholds are placed in the middle of a gap
  between two oracle scores so that float32 vs float64 rounding never decides.
* ``match.text`` follows the Qdrant server on Quiver: substring without an index, token match
  with a ``text`` payload index. Local mode always token-matches, so Quiver gets a text index on
  ``t``, the only field ``text``/``phrase``/``text_any`` conditions are generated for.
* Payload indexes are otherwise semantically inert; some datasets get keyword/integer/float/
  datetime/bool indexes on Quiver to check that.
* Datetime payloads only use the formats Qdrant core parses (see ``DT_FORMATS``).
* Some Quiver datasets are split over many small segments and vacuumed in the background.

Known divergences (Quiver disagreeing with local mode *and* with the Qdrant server) are listed
in ``AVOID``; the generators steer around them. ``CONGRUENCE_HUNT=1`` (or a comma-separated
list of AVOID names) turns that off; ``CONGRUENCE_SCALE=N`` runs N times more seeds/examples.
"""

from __future__ import annotations

import math
import os
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models

try:
    from openapi_contract import validating_qdrant_client
except ImportError:  # pragma: no cover - the contract module is optional
    validating_qdrant_client = None

# ------------------------------------------------------------------------------- known divergences

# Inputs on which Quiver is known to disagree with local mode *and* the Qdrant server (see the
# congruence report). While an entry is True the random generators steer around it, so the
# rest of the suite stays meaningful; set it to False to hunt for the divergence again.
AVOID = {
    # Fixed; kept as switches so the generators keep covering them (False = not avoided).
    "nested_on_object": False,
    "selector_paths_through_arrays": False,
    "delete_payload_array_paths": False,
    "set_payload_array_paths": False,
    "order_value_int_for_integral_float": False,
    "update_vectors_multi_point": False,
    "ints_beyond_2_53": False,
    "datetime_spellings": False,
    # A deliberate difference: set/overwrite/clear/delete_payload and update/delete_vectors
    # naming a missing id are rejected whole by Quiver (404, nothing applied: bad input loses
    # nothing and changes nothing); Qdrant applies them to the existing ids and then answers
    # 404, local mode up to the missing id. State after the error is not comparable, so the
    # random sequences only name live ids for those operations.
    "missing_ids_in_point_updates": True,
}

# CONGRUENCE_HUNT=1 turns every AVOID entry off, CONGRUENCE_HUNT=name,name only those (expect
# failures until the bugs are fixed).
_HUNT = os.environ.get("CONGRUENCE_HUNT", "")
for _name in AVOID if _HUNT in ("1", "all") else filter(None, _HUNT.split(",")):
    AVOID[_name] = False

# CONGRUENCE_SCALE=N multiplies the number of seeds and Hypothesis examples (a longer hunt).
SCALE = max(1, int(os.environ.get("CONGRUENCE_SCALE", "1")))

# ------------------------------------------------------------------------------- tolerances

SCORE_RTOL = 1e-4  # relative, with an absolute floor of SCORE_RTOL (scores near zero)
TIE_TOL = 3e-4  # scores this close are treated as a tie (either order accepted)
VEC_RTOL, VEC_ATOL = 1e-5, 1e-6


def close(a: float, b: float, tol: float = SCORE_RTOL) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


# ------------------------------------------------------------------------------- datasets

D = models.Distance


@dataclass(frozen=True)
class Spec:
    """One collection layout. ``""`` as the only vector name means an unnamed single vector."""

    id: str
    vectors: tuple[tuple[str, int, models.Distance], ...]
    n: int
    seed: int
    extra_indexes: bool = False  # non-text payload indexes on Quiver (must not change results)
    small_segments: bool = False  # Quiver seals segments at ~32 rows and vacuums eagerly

    @property
    def named(self) -> bool:
        return self.vectors[0][0] != ""

    def vectors_config(self) -> Any:
        if not self.named:
            _, dim, dist = self.vectors[0]
            return models.VectorParams(size=dim, distance=dist)
        return {name: models.VectorParams(size=dim, distance=dist)
                for name, dim, dist in self.vectors}


SPECS = [
    Spec("cosine", (("", 8, D.COSINE),), 300, 101),
    Spec("dot", (("", 8, D.DOT),), 300, 102, extra_indexes=True),
    Spec("euclid", (("", 8, D.EUCLID),), 300, 103, small_segments=True),
    Spec("manhattan", (("", 8, D.MANHATTAN),), 300, 104, extra_indexes=True),
    Spec("named_cos_euclid", (("img", 6, D.COSINE), ("txt", 4, D.EUCLID)), 300, 105),
    Spec("named_dot_manh", (("dense", 5, D.DOT), ("l1", 3, D.MANHATTAN)), 300, 106,
         extra_indexes=True, small_segments=True),
]
SPEC_BY_ID = {s.id: s for s in SPECS}
# every (dataset, vector name) a query can target
TARGETS = [(s.id, name) for s in SPECS for name, _, _ in s.vectors]


def target_id(t: tuple[str, str]) -> str:
    return f"{t[0]}-{t[1]}" if t[1] else t[0]


KW = ["red", "green", "blue", "Red", "grün", "a b", "", "x"]
WORDS = ["alpha", "beta", "gamma", "delta", "Alpha", "GAMMA", "épée", "naïve", "x1", "foo_bar",
         "omega"]
SEPS = [" ", " ", ", ", "-", ". ", "  "]
# formats Qdrant core (and local mode) parse; fromisoformat-only spellings are left out
DT_FORMATS = [
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S.%fZ",
    "%Y-%m-%dT%H:%M:%S+02:00",
    "%Y-%m-%dT%H:%M:%S.%f-05:30",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
]
DT_FORMATS_DIVERGENT = ["%Y%m%d", "%Y-%m-%dT%H", "%G-W%V-%u", "%Y-%m-%d %H:%M:%S UTC"]
DT_BASE = datetime(2023, 1, 1, tzinfo=UTC)

INT_KEYS = ["i", "nums", "n.x", "objs[].v", "objs[].w", "mix", "f", "nums[0]"]
STR_KEYS = ["s", "tags", "n.y", "objs[].k", "mix", "tags[1]"]
BOOL_KEYS = ["b", "n.z.w", "mix", "i"]
NUM_KEYS = ["i", "f", "nums", "n.x", "objs[].v", "mix", "b"]
DT_KEYS = ["dt", "dts", "objs[].d", "s"]
TEXT_KEYS = ["t"]  # text-indexed on Quiver
PLAIN_STR_KEYS = ["s", "t", "n.y", "tags"]  # prefix / substring
ANY_KEYS = ["i", "f", "b", "s", "tags", "nums", "t", "dt", "dts", "n", "n.x", "n.y", "n.z",
            "n.z.w", "objs", "objs[].k", "objs[].w", "objs[].sub", "maybe", "mix", "nope",
            "nope.deeper", "nums[0]"]
NESTED_INT_KEYS = ["v", "w", "sub[].q"]
NESTED_ANY_KEYS = ["k", "v", "w", "d", "sub", "nope"]
SELECTOR_KEYS = ["i", "n", "objs", "tags", "t", "nope", "meta", "meta.a", "meta.b", "meta.b.c",
                 "meta.nope"]  # `meta` is always an object: paths through it are unambiguous
SELECTOR_KEYS_DIVERGENT = ["n.x", "n.z", "n.z.w", "objs[].k", "objs[].sub[].q", "objs[0]",
                           "tags[]"]


def f32(xs: Any) -> list[float]:
    """Values exactly representable in float32, so both sides store the same numbers."""
    return np.asarray(xs, dtype=np.float32).astype(np.float64).tolist()


def gen_vector(rng: random.Random, dim: int) -> list[float]:
    return f32([rng.gauss(0.0, 1.0) for _ in range(dim)])


def gen_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def spell_uuid(rng: random.Random, u: str) -> str:
    """Non-canonical spellings the server normalises."""
    return rng.choice([u, u.upper(), u.replace("-", ""), "{" + u + "}", "urn:uuid:" + u])


def gen_dt(rng: random.Random) -> str:
    t = DT_BASE + timedelta(seconds=rng.randrange(365 * 86400),
                            microseconds=rng.choice([0, 0, rng.randrange(10**6)]))
    fmt = rng.choice(DT_FORMATS if AVOID["datetime_spellings"]
                     else DT_FORMATS + DT_FORMATS_DIVERGENT)
    if "+02:00" in fmt:
        t = t.astimezone(timezone(timedelta(hours=2)))
    elif "-05:30" in fmt:
        t = t.astimezone(timezone(-timedelta(hours=5, minutes=30)))
    return t.strftime(fmt.replace("+02:00", "%z").replace("-05:30", "%z")).replace(
        "+0200", "+02:00").replace("-0530", "-05:30")


def parse_core_datetime(s: str) -> datetime | None:
    """A datetime string as Qdrant core reads it (local mode mirrors core's formats)."""
    from qdrant_client.local.datetime_utils import parse

    return parse(s)


def gen_text(rng: random.Random) -> str:
    n = rng.randint(1, 7)
    out = rng.choice(WORDS)
    for _ in range(n - 1):
        out += rng.choice(SEPS) + rng.choice(WORDS)
    return out + rng.choice(["", ".", "!"])


def gen_payload(rng: random.Random) -> dict[str, Any]:
    p: dict[str, Any] = {}

    def put(key: str, make: Callable[[], Any], missing: float = 0.12, null: float = 0.05) -> None:
        r = rng.random()
        if r < missing:
            return
        p[key] = None if r < missing + null else make()

    def ints(lo: int, hi: int, k: int) -> list[int]:
        return [rng.randint(lo, hi) for _ in range(rng.randint(0, k))]

    def obj() -> dict[str, Any]:
        o: dict[str, Any] = {}
        if rng.random() < 0.85:
            o["k"] = rng.choice(KW)
        if rng.random() < 0.85:
            o["v"] = rng.randint(-10, 10)
        if rng.random() < 0.5:
            o["w"] = ints(-3, 3, 3)
        if rng.random() < 0.3:
            o["d"] = gen_dt(rng)
        if rng.random() < 0.3:
            o["sub"] = [{"q": rng.randint(0, 5)} for _ in range(rng.randint(0, 2))]
        return o

    def nested() -> Any:
        r = rng.random()
        if r < 0.08:
            return rng.randint(0, 3)  # not an object: `n.x` must not reach into it
        if r < 0.15:
            return [{"x": rng.randint(-10, 10)}]  # a list: `n.x` must not traverse it
        o: dict[str, Any] = {}
        if rng.random() < 0.85:
            o["x"] = rng.randint(-10, 10)
        if rng.random() < 0.7:
            o["y"] = rng.choice(KW)
        if rng.random() < 0.7:
            o["z"] = {"w": rng.random() < 0.5} if rng.random() < 0.9 else {}
        return o

    def mix() -> Any:
        return rng.choice([
            lambda: rng.randint(-3, 3),
            lambda: float(rng.randint(-3, 3)),  # 2.0 is a float: never an integer match
            lambda: rng.choice(KW),
            lambda: rng.random() < 0.5,
            lambda: [rng.randint(-3, 3), rng.choice(KW), None, rng.random() < 0.5],
            lambda: {"x": 1},
            lambda: [],
        ])()

    put("i", lambda: rng.randint(-20, 20) if rng.random() < 0.85 else ints(-20, 20, 3))
    if not AVOID["ints_beyond_2_53"] and rng.random() < 0.1:
        p["i"] = rng.choice([1, -1]) * (2**60 + rng.randint(0, 2))
    put("f", lambda: round(rng.uniform(-10, 10), rng.choice([0, 1, 3, 6])))
    put("b", lambda: rng.random() < 0.5 if rng.random() < 0.9 else [True, False][: rng.randint(0, 2)])
    put("s", lambda: rng.choice(KW) if rng.random() < 0.9 else gen_dt(rng))
    put("tags", lambda: rng.sample(KW, rng.randint(0, 4)))
    put("nums", lambda: ints(-5, 5, 4) + ([None] if rng.random() < 0.1 else []))
    put("t", lambda: gen_text(rng) if rng.random() < 0.9 else [gen_text(rng), gen_text(rng)])
    put("dt", lambda: gen_dt(rng))
    put("dts", lambda: [gen_dt(rng) for _ in range(rng.randint(0, 3))])
    put("n", nested)
    put("objs", lambda: [obj() for _ in range(rng.randint(0, 3))])
    put("maybe", lambda: rng.randint(0, 1), missing=0.4, null=0.4)
    put("mix", mix)
    if rng.random() < 0.85:
        meta: dict[str, Any] = {"a": rng.randint(0, 9)} if rng.random() < 0.8 else {}
        if rng.random() < 0.7:
            meta["b"] = {"c": rng.choice(KW)} if rng.random() < 0.8 else {}
        p["meta"] = meta
    return p


@dataclass
class PointData:
    id: int | str  # canonical form
    vector: Any  # list (unnamed) or {name: list}
    payload: dict[str, Any]


def gen_point(rng: random.Random, spec: Spec, pid: int | str) -> PointData:
    if spec.named:
        vec = {name: gen_vector(rng, dim) for name, dim, _ in spec.vectors if rng.random() < 0.8}
    else:
        vec = gen_vector(rng, spec.vectors[0][1])
    return PointData(pid, vec, gen_payload(rng))


def gen_ids(rng: random.Random, n: int) -> list[int | str]:
    ids: set[int | str] = set()
    while len(ids) < n:
        ids.add(rng.randrange(10**6) if rng.random() < 0.6 else gen_uuid(rng))
    out = sorted(ids, key=lambda x: (isinstance(x, str), x))
    rng.shuffle(out)
    return out


def as_struct(rng: random.Random, p: PointData) -> models.PointStruct:
    pid = spell_uuid(rng, p.id) if isinstance(p.id, str) and rng.random() < 0.2 else p.id
    return models.PointStruct(id=pid, vector=p.vector, payload=p.payload)


@dataclass
class Pools:
    """Values that occur in a dataset, so generated conditions actually hit something."""

    ints: list[int] = field(default_factory=lambda: list(range(-5, 6)))
    floats: list[float] = field(default_factory=list)
    dts: list[datetime] = field(default_factory=list)  # payload datetimes, as parsed by core
    ids: list[int | str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not AVOID["ints_beyond_2_53"]:
            self.ints += [2**60, 2**60 + 1, -(2**60) - 2]

    def absorb(self, points: Sequence[PointData]) -> None:
        for p in points:
            self.ids.append(p.id)
            pl = p.payload
            if isinstance(pl.get("f"), float):
                self.floats.append(pl["f"])
            dt = parse_core_datetime(pl["dt"]) if isinstance(pl.get("dt"), str) else None
            if dt is not None:
                self.dts.append(dt)
            if isinstance(pl.get("i"), int) and not isinstance(pl.get("i"), bool):
                self.ints.append(pl["i"])


# ------------------------------------------------------------------------------- pickers


class RngPick:
    """Random choices from a seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.rng.randrange(len(seq))]

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def uniform(self, lo: float, hi: float) -> float:
        return self.rng.uniform(lo, hi)


class DrawPick:
    """The same choices drawn through Hypothesis, so failures shrink (towards 'no', first)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def choice(self, seq: Sequence[Any]) -> Any:
        return self.data.draw(st.sampled_from(list(seq)))

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def chance(self, p: float) -> bool:
        return self.data.draw(st.integers(0, 999)) >= round(1000 * (1 - p))

    def uniform(self, lo: float, hi: float) -> float:
        return self.data.draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))


Pick = RngPick | DrawPick

# ------------------------------------------------------------------------------- filters


def _num(pick: Pick, pools: Pools) -> float:
    r = pick.integer(0, 3)
    if r == 0 and pools.floats:
        return pick.choice(pools.floats)
    if r == 1:
        return float(pick.choice(pools.ints))
    if r == 2:
        return round(pick.uniform(-12, 12), 2)
    return float(pick.integer(-20, 20))


def _bounds(pick: Pick, make: Callable[[], Any]) -> dict[str, Any]:
    ops = [op for op in ("gt", "gte", "lt", "lte") if pick.chance(0.4)] or [pick.choice(
        ["gt", "gte", "lt", "lte"])]
    return {op: make() for op in ops}


def _dt_bound(pick: Pick, pools: Pools) -> Any:
    r = pick.integer(0, 3)
    if r == 0 and pools.dts:
        return pick.choice(pools.dts)  # a payload's own instant: gt vs gte matters
    base = DT_BASE + timedelta(days=pick.integer(-10, 380), seconds=pick.integer(0, 86399))
    if r == 1:
        return base  # aware datetime
    if r == 2:
        return base.replace(tzinfo=None)  # naive = UTC
    return base.date()


def _match_value(pick: Pick, key_kind: str, pools: Pools) -> Any:
    if key_kind == "str":
        return pick.choice(KW)
    if key_kind == "bool":
        return pick.chance(0.5)
    return pick.integer(-6, 6) if pick.chance(0.7) else pick.choice(pools.ints)


def gen_field_condition(pick: Pick, pools: Pools, nested: bool = False) -> models.Condition:
    kind = pick.choice(["value", "value", "any", "except", "text", "range", "range", "dt",
                        "values_count", "is_empty", "is_null", "field_empty", "field_null",
                        "prefix"])
    if nested:
        if kind in ("text", "prefix", "dt"):
            kind = "range"
        int_keys, str_keys, bool_keys, num_keys = NESTED_INT_KEYS, ["k"], ["k", "v"], ["v", "w"]
        any_keys = NESTED_ANY_KEYS
    else:
        int_keys, str_keys, bool_keys, num_keys = INT_KEYS, STR_KEYS, BOOL_KEYS, NUM_KEYS
        any_keys = ANY_KEYS
    FC = models.FieldCondition
    if kind == "value":
        k = pick.choice(["int", "str", "bool"])
        keys = {"int": int_keys, "str": str_keys, "bool": bool_keys}[k]
        if pick.chance(0.15):  # cross-typed: an int against strings, a bool against ints...
            keys = any_keys
        return FC(key=pick.choice(keys), match=models.MatchValue(value=_match_value(pick, k, pools)))
    if kind in ("any", "except"):
        is_str = pick.chance(0.5)
        keys = str_keys if is_str else int_keys
        vals = [_match_value(pick, "str" if is_str else "int", pools)
                for _ in range(pick.integer(0, 3))]
        if pick.chance(0.15):  # the other type's key: strings against ints and vice versa
            keys = int_keys if is_str else str_keys
        m = models.MatchAny(any=vals) if kind == "any" else models.MatchExcept(**{"except": vals})
        return FC(key=pick.choice(keys), match=m)
    if kind == "text":
        words = [pick.choice(WORDS) for _ in range(pick.integer(1, 3))]
        text = pick.choice([" ", ", ", "-"]).join(words)
        if pick.chance(0.5):
            text = text.upper() if pick.chance(0.5) else text.lower()
        m = pick.choice([models.MatchText(text=text), models.MatchText(text=text),
                         models.MatchPhrase(phrase=text), models.MatchTextAny(text_any=text)])
        return FC(key=pick.choice(TEXT_KEYS), match=m)
    if kind == "prefix":
        base = pick.choice(KW + WORDS)
        cut = base[: pick.integer(0, len(base))] if base else ""
        m = models.MatchPrefix(prefix=cut) if pick.chance(0.5) else models.MatchSubstring(
            substring=cut[1:] if len(cut) > 1 else cut)
        return FC(key=pick.choice(PLAIN_STR_KEYS), match=m)
    if kind == "range":
        return FC(key=pick.choice(num_keys), range=models.Range(**_bounds(pick, lambda: _num(pick, pools))))
    if kind == "dt":
        return FC(key=pick.choice(DT_KEYS),
                  range=models.DatetimeRange(**_bounds(pick, lambda: _dt_bound(pick, pools))))
    if kind == "values_count":
        return FC(key=pick.choice(any_keys),
                  values_count=models.ValuesCount(**_bounds(pick, lambda: pick.integer(0, 4))))
    if kind == "is_empty":
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=pick.choice(any_keys)))
    if kind == "is_null":
        return models.IsNullCondition(is_null=models.PayloadField(key=pick.choice(any_keys)))
    if kind == "field_empty":
        return FC(key=pick.choice(any_keys), is_empty=pick.chance(0.5))
    return FC(key=pick.choice(any_keys), is_null=pick.chance(0.5))


def gen_condition(pick: Pick, pools: Pools, spec: Spec, depth: int,
                  nested: bool = False) -> models.Condition:
    r = pick.integer(0, 19)
    if depth < 2 and r == 0:
        return gen_filter(pick, pools, spec, depth + 1, nested)
    if not nested and depth < 2 and r in (1, 2):
        inner = gen_filter(pick, pools, spec, depth + 1, nested=True)
        key = pick.choice(["objs", "objs[]"] if AVOID["nested_on_object"]
                          else ["objs", "objs[]", "objs", "n"])
        return models.NestedCondition(nested=models.Nested(key=key, filter=inner))
    if nested and depth < 2 and r == 1:
        inner = gen_filter(pick, pools, spec, depth + 1, nested=True)
        return models.NestedCondition(nested=models.Nested(key="sub", filter=inner))
    if not nested and r == 3:
        ids = [pick.choice(pools.ids) for _ in range(pick.integer(0, 6))]
        if pick.chance(0.3):
            ids.append(pick.choice([424242424, "00000000-0000-4000-8000-000000000000"]))
        return models.HasIdCondition(has_id=ids)
    if not nested and r == 4 and spec.named:
        return models.HasVectorCondition(has_vector=pick.choice([n for n, _, _ in spec.vectors]))
    return gen_field_condition(pick, pools, nested)


def gen_filter(pick: Pick, pools: Pools, spec: Spec, depth: int = 0,
               nested: bool = False) -> models.Filter:
    def conds(hi: int) -> list[models.Condition]:
        return [gen_condition(pick, pools, spec, depth, nested) for _ in range(pick.integer(0, hi))]

    kw: dict[str, Any] = {}
    for clause in ("must", "should", "must_not"):
        if pick.chance(0.5):
            kw[clause] = conds(3)
    if pick.chance(0.2):
        cs = [gen_condition(pick, pools, spec, depth, nested) for _ in range(pick.integer(1, 3))]
        kw["min_should"] = models.MinShould(conditions=cs, min_count=pick.integer(1, len(cs)))
    if not kw:
        kw["must"] = [gen_condition(pick, pools, spec, depth, nested)]
    return models.Filter(**kw)


# ------------------------------------------------------------------------------- the pair


@dataclass
class Dataset:
    spec: Spec
    name: str
    points: list[PointData]
    pools: Pools


class Pair:
    """A Quiver client and the local-mode oracle, with lazily loaded datasets."""

    def __init__(self, remote: QdrantClient, local: QdrantClient) -> None:
        self.remote, self.local = remote, local
        self.datasets: dict[str, Dataset] = {}

    def create(self, name: str, spec: Spec, small_segments: bool | None = None) -> None:
        small = spec.small_segments if small_segments is None else small_segments
        # local mode ignores optimizer settings; on Quiver they give many segments (so results
        # merge across segments) and background vacuuming (rows move while we read)
        opt = models.OptimizersConfigDiff(max_segment_size=1, vacuum_min_vector_number=100,
                                          deleted_threshold=0.05) if small else None
        for c in (self.remote, self.local):
            if c.collection_exists(name):
                c.delete_collection(name)
            c.create_collection(name, vectors_config=spec.vectors_config(), optimizers_config=opt)
        # local mode has no indexes; on Quiver `text` switches match.text to token matching
        self.remote.create_payload_index(name, "t", field_schema=models.PayloadSchemaType.TEXT)
        if spec.extra_indexes:
            for key, schema in [("s", "keyword"), ("i", "integer"), ("f", "float"),
                                ("dt", "datetime"), ("b", "bool"), ("n.x", "integer"),
                                ("objs[].k", "keyword")]:
                self.remote.create_payload_index(name, key, field_schema=schema)

    def dataset(self, spec_id: str) -> Dataset:
        if spec_id not in self.datasets:
            spec = SPEC_BY_ID[spec_id]
            rng = random.Random(spec.seed)
            name = f"congruence_{spec.id}"
            self.create(name, spec)
            points = [gen_point(rng, spec, pid) for pid in gen_ids(rng, spec.n)]
            structs = [as_struct(rng, p) for p in points]
            step = 37 if spec.small_segments else 100  # a few requests; maybe several segments
            for i in range(0, len(structs), step):
                for c in (self.remote, self.local):
                    c.upsert(name, points=structs[i : i + step], wait=True)
            pools = Pools()
            pools.absorb(points)
            self.datasets[spec_id] = Dataset(spec, name, points, pools)
        return self.datasets[spec_id]

    def both(self, method: str, *args: Any, **kw: Any) -> tuple[Any, Any]:
        """Call a client method on both; if one raises the other must too."""
        out: list[Any] = []
        errs: list[BaseException | None] = []
        for c in (self.remote, self.local):
            try:
                out.append(getattr(c, method)(*args, **kw))
                errs.append(None)
            except Exception as exc:  # noqa: BLE001 - compared below
                out.append(None)
                errs.append(exc)
        if (errs[0] is None) != (errs[1] is None):
            raise AssertionError(
                f"{method}: quiver {'raised ' + repr(errs[0]) if errs[0] else 'succeeded'}, "
                f"local {'raised ' + repr(errs[1]) if errs[1] else 'succeeded'}; "
                f"args={args!r} kw={kw!r}")
        if errs[0] is not None:
            return errs[0], errs[1]
        return out[0], out[1]


@pytest.fixture(scope="module")
def pair(server: Any) -> Iterator[Pair]:
    if validating_qdrant_client is not None:
        remote = validating_qdrant_client(server.url, check_compatibility=True, timeout=60)
    else:  # pragma: no cover
        remote = QdrantClient(url=server.url, timeout=60)
    local = QdrantClient(":memory:")
    p = Pair(remote, local)
    yield p
    if hasattr(remote, "contract"):
        remote.contract.assert_ok()
    remote.close()
    local.close()


# ------------------------------------------------------------------------------- comparison


def norm_vector(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, dict):
        return {k: np.asarray(x, dtype=np.float64) for k, x in v.items()}
    return np.asarray(v, dtype=np.float64)


def assert_vectors_close(q: Any, loc: Any, ctx: str) -> None:
    q, loc = norm_vector(q), norm_vector(loc)
    if q is None or loc is None:
        assert q is None and loc is None, f"{ctx}: vector quiver={q!r} local={loc!r}"
        return
    if isinstance(loc, dict):
        assert isinstance(q, dict), f"{ctx}: vector quiver={q!r} local={loc!r}"
        assert sorted(q) == sorted(loc), f"{ctx}: vector names quiver={sorted(q)} local={sorted(loc)}"
        for k in loc:
            np.testing.assert_allclose(q[k], loc[k], rtol=VEC_RTOL, atol=VEC_ATOL, err_msg=ctx)
    else:
        np.testing.assert_allclose(q, loc, rtol=VEC_RTOL, atol=VEC_ATOL, err_msg=ctx)


def assert_record_equal(q: Any, loc: Any, ctx: str) -> None:
    assert q.id == loc.id, f"{ctx}: id quiver={q.id!r} local={loc.id!r}"
    assert q.payload == loc.payload, (
        f"{ctx}: payload of {q.id!r}\n quiver={q.payload!r}\n local ={loc.payload!r}")
    assert_vectors_close(q.vector, loc.vector, f"{ctx}: vector of {q.id!r}")


def assert_records_equal(qs: Sequence[Any], ls: Sequence[Any], ctx: str) -> None:
    assert [r.id for r in qs] == [r.id for r in ls], (
        f"{ctx}: ids differ\n quiver={[r.id for r in qs]}\n local ={[r.id for r in ls]}")
    for q, loc in zip(qs, ls, strict=True):
        assert_record_equal(q, loc, ctx)


def assert_scored_equal(qs: Sequence[Any], ls: Sequence[Any], pool: Sequence[Any],
                        ctx: str) -> None:
    """Same scores position by position; ids may differ only within ties.

    ``pool`` is the oracle's answer to the same query with offset 0 and a larger limit: it
    holds every candidate for every position, so a swapped tie can be told from a wrong hit.
    """
    ids = [p.id for p in qs]
    assert len(set(map(str, ids))) == len(ids), f"{ctx}: duplicate ids in {ids}"
    assert len(qs) == len(ls), (
        f"{ctx}: {len(qs)} hits from quiver, {len(ls)} from local\n"
        f" quiver={[(p.id, p.score) for p in qs]}\n local ={[(p.id, p.score) for p in ls]}")
    by_id = {p.id: p for p in pool}
    for i, (q, loc) in enumerate(zip(qs, ls, strict=True)):
        assert close(q.score, loc.score), (
            f"{ctx}: position {i}: quiver {q.id!r}@{q.score!r}, local {loc.id!r}@{loc.score!r}")
        ref = by_id.get(q.id)
        if q.id != loc.id:
            assert ref is not None and close(ref.score, loc.score, TIE_TOL), (
                f"{ctx}: position {i}: quiver {q.id!r}@{q.score!r} is not a tie of local "
                f"{loc.id!r}@{loc.score!r} (local scores it {ref.score if ref else None!r})")
        else:
            ref = loc
        assert close(q.score, ref.score), f"{ctx}: {q.id!r} scored {q.score!r} vs {ref.score!r}"
        assert_record_equal(q, ref, f"{ctx}: position {i}")


def threshold_in_gap(pick: Pick, scores: Sequence[float]) -> float | None:
    """A threshold half-way between two oracle scores at least 1e-3 apart."""
    s = sorted(scores)
    gaps = [(a + b) / 2 for a, b in zip(s, s[1:], strict=False)
            if b - a > 1e-3 * max(1.0, abs(a), abs(b))]
    return pick.choice(gaps) if gaps else None


def fmt_filter(f: models.Filter | None) -> str:
    return "None" if f is None else f.model_dump_json(exclude_none=True, by_alias=True)


# ------------------------------------------------------------------------------- queries


@dataclass
class QueryCase:
    query: Any
    using: str | None
    filter: models.Filter | None
    limit: int
    offset: int | None
    threshold: float | None
    with_payload: Any
    with_vectors: Any

    def kwargs(self, **over: Any) -> dict[str, Any]:
        kw = dict(query=self.query, using=self.using, query_filter=self.filter, limit=self.limit,
                  offset=self.offset, score_threshold=self.threshold,
                  with_payload=self.with_payload, with_vectors=self.with_vectors)
        kw.update(over)
        return kw

    def describe(self) -> str:
        q = self.query if not isinstance(self.query, list) else f"<vector dim {len(self.query)}>"
        return (f"query={q!r} using={self.using!r} limit={self.limit} offset={self.offset} "
                f"threshold={self.threshold!r} with_payload={self.with_payload!r} "
                f"with_vectors={self.with_vectors!r} filter={fmt_filter(self.filter)}")


def gen_payload_selector(pick: Pick) -> Any:
    r = pick.integer(0, 5)
    if r <= 1:
        return True
    if r == 2:
        return False
    pool = SELECTOR_KEYS + ([] if AVOID["selector_paths_through_arrays"]
                            else SELECTOR_KEYS_DIVERGENT)
    keys = [pick.choice(pool) for _ in range(pick.integer(1, 3))]
    if r == 3:
        return keys
    if r == 4:
        return models.PayloadSelectorInclude(include=keys)
    return models.PayloadSelectorExclude(exclude=keys)


def gen_vector_selector(pick: Pick, spec: Spec) -> Any:
    r = pick.integer(0, 3)
    if r == 0:
        return True
    if r == 1 and spec.named:
        return [pick.choice([n for n, _, _ in spec.vectors] + ["nope"])]
    return False


def gen_query_case(pick: Pick, ds: Dataset, using: str, by_id: bool = False) -> QueryCase:
    spec = ds.spec
    if by_id:
        having = [p.id for p in ds.points
                  if not spec.named or using in p.vector]
        query: Any = pick.choice(having)
    else:
        dim = next(d for n, d, _ in spec.vectors if n == using)
        query = f32([pick.uniform(-1.5, 1.5) for _ in range(dim)])
    return QueryCase(
        query=query,
        using=using or None,
        filter=gen_filter(pick, ds.pools, spec) if pick.chance(0.5) else None,
        limit=pick.choice([1, 3, 10, 25, 60]),
        offset=pick.choice([None, None, 0, 2, 7]),
        threshold=None,
        with_payload=gen_payload_selector(pick),
        with_vectors=gen_vector_selector(pick, spec),
    )


def oracle_pool(pair: Pair, ds: Dataset, case: QueryCase, extra: int = 40) -> list[Any]:
    off = case.offset or 0
    return pair.local.query_points(
        ds.name, **case.kwargs(limit=off + case.limit + extra, offset=None)).points


def check_query(pair: Pair, ds: Dataset, case: QueryCase, ctx: str) -> None:
    q, loc = pair.both("query_points", ds.name, **case.kwargs())
    ctx = f"{ctx}: {case.describe()}"
    assert not isinstance(q, BaseException), f"{ctx}: both rejected it: {q!r} / {loc!r}"
    assert_scored_equal(q.points, loc.points, oracle_pool(pair, ds, case), ctx)


QUERY_SEEDS = range(6 * SCALE)


@pytest.mark.parametrize("seed", QUERY_SEEDS, ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("target", TARGETS, ids=target_id)
def test_query_points(pair: Pair, target: tuple[str, str], seed: int) -> None:
    ds = pair.dataset(target[0])
    pick = RngPick(random.Random(f"query-{target}-{seed}"))
    for i in range(4):
        case = gen_query_case(pick, ds, target[1])
        if i == 3:  # a strict score threshold, placed in a gap of the oracle's scores
            full = pair.local.query_points(ds.name, **case.kwargs(limit=10_000, offset=None,
                                                                  with_payload=False))
            case.threshold = threshold_in_gap(pick, [p.score for p in full.points])
        check_query(pair, ds, case, f"{target_id(target)} case {i}")


@pytest.mark.parametrize("target", TARGETS, ids=target_id)
def test_query_points_by_id(pair: Pair, target: tuple[str, str]) -> None:
    ds = pair.dataset(target[0])
    pick = RngPick(random.Random(f"by-id-{target}"))
    for i in range(6):
        case = gen_query_case(pick, ds, target[1], by_id=True)
        if i % 2 and isinstance(case.query, str):
            case.query = spell_uuid(pick.rng, case.query)
        check_query(pair, ds, case, f"{target_id(target)} by id {i}")


@pytest.mark.parametrize("target", TARGETS, ids=target_id)
def test_query_scores_every_point(pair: Pair, target: tuple[str, str]) -> None:
    """No filter, no limit cut: every point, every score."""
    ds = pair.dataset(target[0])
    pick = RngPick(random.Random(f"all-{target}"))
    case = gen_query_case(pick, ds, target[1])
    case.filter, case.limit, case.offset = None, 1000, None
    case.with_payload, case.with_vectors = False, False
    check_query(pair, ds, case, f"{target_id(target)} all points")
    q = pair.remote.query_points(ds.name, **case.kwargs()).points
    having = [p for p in ds.points if not ds.spec.named or target[1] in p.vector]
    assert len(q) == len(having)


@pytest.mark.parametrize("spec_id", list(SPEC_BY_ID))
def test_query_batch_points(pair: Pair, spec_id: str) -> None:
    ds = pair.dataset(spec_id)
    pick = RngPick(random.Random(f"batch-{spec_id}"))
    cases = []
    for i in range(6):
        using = pick.choice([n for n, _, _ in ds.spec.vectors])
        cases.append(gen_query_case(pick, ds, using, by_id=i == 5))
    cases[1].filter = cases[0].filter  # a shared filter (Quiver groups these)
    reqs = [models.QueryRequest(query=c.query, using=c.using, filter=c.filter, limit=c.limit,
                                offset=c.offset, with_payload=c.with_payload,
                                with_vector=c.with_vectors) for c in cases]
    q, loc = pair.both("query_batch_points", ds.name, requests=reqs)
    assert len(q) == len(loc) == len(cases)
    for i, (qr, lr, case) in enumerate(zip(q, loc, cases, strict=True)):
        assert_scored_equal(qr.points, lr.points, oracle_pool(pair, ds, case),
                            f"{spec_id} batch {i}: {case.describe()}")


@pytest.mark.parametrize("spec_id", list(SPEC_BY_ID))
def test_query_without_vector_is_a_scroll(pair: Pair, spec_id: str) -> None:
    ds = pair.dataset(spec_id)
    pick = RngPick(random.Random(f"noquery-{spec_id}"))
    for i in range(3):
        flt = gen_filter(pick, ds.pools, ds.spec) if i else None
        kw = dict(query_filter=flt, limit=pick.choice([5, 40]), with_payload=True)
        q, loc = pair.both("query_points", ds.name, **kw)
        assert [p.id for p in q.points] == [p.id for p in loc.points], fmt_filter(flt)


# ------------------------------------------------------------------------------- filters


def check_filter(pair: Pair, ds: Dataset, flt: models.Filter, ctx: str) -> None:
    """The ids a filter selects (scroll) and their number (count) must agree.

    Local mode evaluates filters point by point in Python (the slow half), so its count is
    taken from its scroll rather than asked for separately.
    """
    q_all, l_all = pair.both("scroll", ds.name, scroll_filter=flt, limit=10_000,
                             with_payload=False)
    assert not isinstance(q_all, BaseException), f"{ctx}: both rejected {fmt_filter(flt)}: {q_all!r}"
    q_count = pair.remote.count(ds.name, count_filter=flt, exact=True)
    q_ids, l_ids = [r.id for r in q_all[0]], [r.id for r in l_all[0]]
    only_q, only_l = set(q_ids) - set(l_ids), set(l_ids) - set(q_ids)
    payloads = {p.id: p.payload for p in ds.points}
    sample = [(i, payloads.get(i)) for i in list(only_q)[:2] + list(only_l)[:2]]
    assert q_ids == l_ids, (
        f"{ctx}: filter {fmt_filter(flt)}\n only quiver: {sorted(map(str, only_q))}\n"
        f" only local: {sorted(map(str, only_l))}\n e.g. {sample}")
    assert q_count.count == len(l_ids), f"{ctx}: count {q_count.count}, {fmt_filter(flt)}"


@pytest.mark.parametrize("seed", range(4 * SCALE), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("spec_id", list(SPEC_BY_ID))
def test_count_and_filter_seeded(pair: Pair, spec_id: str, seed: int) -> None:
    ds = pair.dataset(spec_id)
    pick = RngPick(random.Random(f"filter-{spec_id}-{seed}"))
    for i in range(12):
        check_filter(pair, ds, gen_filter(pick, ds.pools, ds.spec), f"{spec_id} filter {i}")


@settings(max_examples=100 * SCALE, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_filters_hypothesis(pair: Pair, data: st.DataObject) -> None:
    spec_id = data.draw(st.sampled_from(["named_cos_euclid", "cosine", "dot"]), label="dataset")
    ds = pair.dataset(spec_id)
    flt = gen_filter(DrawPick(data), ds.pools, ds.spec)
    check_filter(pair, ds, flt, spec_id)


@pytest.mark.parametrize(
    "cond",
    [
        pytest.param(c, id=i) for i, c in [
            ("match-str", models.FieldCondition(key="s", match=models.MatchValue(value="red"))),
            ("match-empty-str", models.FieldCondition(key="s", match=models.MatchValue(value=""))),
            ("match-int", models.FieldCondition(key="i", match=models.MatchValue(value=3))),
            ("match-int-on-float", models.FieldCondition(key="f", match=models.MatchValue(value=2))),
            ("match-bool", models.FieldCondition(key="b", match=models.MatchValue(value=True))),
            ("match-bool-on-int", models.FieldCondition(key="i", match=models.MatchValue(value=True))),
            ("match-int-on-bool", models.FieldCondition(key="b", match=models.MatchValue(value=1))),
            ("match-array-elem", models.FieldCondition(key="tags", match=models.MatchValue(value="x"))),
            ("match-any-mix-int", models.FieldCondition(key="mix", match=models.MatchAny(any=[1, -2]))),
            ("match-any-mix-str", models.FieldCondition(key="mix", match=models.MatchAny(any=["red", "x"]))),
            ("match-any-empty", models.FieldCondition(key="s", match=models.MatchAny(any=[]))),
            ("match-except", models.FieldCondition(key="s", match=models.MatchExcept(**{"except": ["red", "x"]}))),
            ("match-except-array", models.FieldCondition(key="tags", match=models.MatchExcept(**{"except": ["red"]}))),
            ("match-except-ints", models.FieldCondition(key="nums", match=models.MatchExcept(**{"except": [0, 1]}))),
            ("match-except-empty", models.FieldCondition(key="i", match=models.MatchExcept(**{"except": []}))),
            ("text", models.FieldCondition(key="t", match=models.MatchText(text="alpha GAMMA"))),
            ("text-underscore", models.FieldCondition(key="t", match=models.MatchText(text="foo_bar"))),
            ("text-accents", models.FieldCondition(key="t", match=models.MatchText(text="ÉPÉE"))),
            ("phrase", models.FieldCondition(key="t", match=models.MatchPhrase(phrase="alpha beta"))),
            ("text-any", models.FieldCondition(key="t", match=models.MatchTextAny(text_any="omega x1"))),
            ("prefix", models.FieldCondition(key="s", match=models.MatchPrefix(prefix="gr"))),
            ("substring", models.FieldCondition(key="t", match=models.MatchSubstring(substring="pha be"))),
            ("range-int", models.FieldCondition(key="i", range=models.Range(gte=-3, lt=4))),
            ("range-float", models.FieldCondition(key="f", range=models.Range(gt=-2.5, lte=7.25))),
            ("range-array", models.FieldCondition(key="nums", range=models.Range(gt=4))),
            ("range-mixed", models.FieldCondition(key="mix", range=models.Range(gte=0))),
            ("dt-range", models.FieldCondition(key="dt", range=models.DatetimeRange(
                gte=datetime(2023, 3, 1, tzinfo=UTC), lt="2023-09-01T12:00:00+02:00"))),
            ("dt-range-date", models.FieldCondition(key="dts", range=models.DatetimeRange(
                gt=date(2023, 6, 1)))),
            ("dt-range-naive", models.FieldCondition(key="objs[].d", range=models.DatetimeRange(
                lte=datetime(2023, 7, 1, 8, 30)))),
            ("is-empty", models.IsEmptyCondition(is_empty=models.PayloadField(key="tags"))),
            ("is-empty-nested", models.IsEmptyCondition(is_empty=models.PayloadField(key="objs[].w"))),
            ("is-empty-missing", models.IsEmptyCondition(is_empty=models.PayloadField(key="nope"))),
            ("is-null", models.IsNullCondition(is_null=models.PayloadField(key="maybe"))),
            ("is-null-array", models.IsNullCondition(is_null=models.PayloadField(key="nums"))),
            ("is-null-nested", models.IsNullCondition(is_null=models.PayloadField(key="n.x"))),
            ("field-is-empty-false", models.FieldCondition(key="b", is_empty=False)),
            ("field-is-null-true", models.FieldCondition(key="mix", is_null=True)),
            ("values-count", models.FieldCondition(key="tags", values_count=models.ValuesCount(gte=2))),
            ("values-count-zero", models.FieldCondition(key="nums", values_count=models.ValuesCount(lt=1))),
            ("values-count-nested", models.FieldCondition(key="objs[].w", values_count=models.ValuesCount(gt=1, lte=2))),
            ("values-count-scalar", models.FieldCondition(key="i", values_count=models.ValuesCount(lte=1))),
            ("nested-key", models.FieldCondition(key="n.z.w", match=models.MatchValue(value=False))),
            ("no-list-traversal", models.FieldCondition(key="n.x", range=models.Range(gte=-10))),
            ("array-index", models.FieldCondition(key="tags[0]", match=models.MatchValue(value="red"))),
            ("array-of-objects", models.FieldCondition(key="objs[].k", match=models.MatchValue(value="blue"))),
            ("deep-array", models.FieldCondition(key="objs[].sub[].q", match=models.MatchAny(any=[0, 5]))),
            ("nested", models.NestedCondition(nested=models.Nested(key="objs", filter=models.Filter(
                must=[models.FieldCondition(key="k", match=models.MatchValue(value="red")),
                      models.FieldCondition(key="v", range=models.Range(gte=0))])))),
            ("nested-must-not", models.NestedCondition(nested=models.Nested(key="objs[]", filter=models.Filter(
                must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key="w"))])))),
            ("nested-in-nested", models.NestedCondition(nested=models.Nested(key="objs", filter=models.Filter(
                must=[models.NestedCondition(nested=models.Nested(key="sub", filter=models.Filter(
                    must=[models.FieldCondition(key="q", match=models.MatchValue(value=3))])))])))),
            ("nested-has-id", models.NestedCondition(nested=models.Nested(key="objs", filter=models.Filter(
                should=[models.HasIdCondition(has_id=[1, 2, 3])])))),
            ("nested-on-array-not-object", models.Filter(must=[
                # `n` is an object on most points; see AVOID["nested_on_object"]
                *([models.FieldCondition(key="n[]", is_empty=False)] if AVOID["nested_on_object"] else []),
                models.NestedCondition(nested=models.Nested(key="n", filter=models.Filter(
                    must=[models.FieldCondition(key="x", range=models.Range(gte=-100))])))])),
            ("has-vector", models.HasVectorCondition(has_vector="img")),
            ("has-vector-other", models.HasVectorCondition(has_vector="txt")),
            ("has-vector-unknown", models.HasVectorCondition(has_vector="nope")),
            ("min-should", models.Filter(min_should=models.MinShould(min_count=2, conditions=[
                models.FieldCondition(key="s", match=models.MatchValue(value="red")),
                models.FieldCondition(key="b", match=models.MatchValue(value=True)),
                models.FieldCondition(key="i", range=models.Range(gt=0))]))),
            ("empty-should", models.Filter(should=[])),
            ("empty-filter", models.Filter()),
        ]
    ],
)
def test_filter_condition(pair: Pair, cond: models.Condition) -> None:
    """Every kind of condition on its own, then negated, then inside should."""
    ds = pair.dataset("named_cos_euclid")
    check_filter(pair, ds, models.Filter(must=[cond]), "must")
    check_filter(pair, ds, models.Filter(must_not=[cond]), "must_not")
    other = models.FieldCondition(key="i", range=models.Range(lt=-10))
    check_filter(pair, ds, models.Filter(should=[cond, other]), "should")


def test_has_id_non_canonical_uuids(pair: Pair) -> None:
    ds = pair.dataset("cosine")
    rng = random.Random(7)
    uuids = [p.id for p in ds.points if isinstance(p.id, str)][:8]
    ids = [spell_uuid(rng, u) for u in uuids] + [p.id for p in ds.points if isinstance(p.id, int)][:4]
    check_filter(pair, ds, models.Filter(must=[models.HasIdCondition(has_id=ids)]), "has_id")


# ------------------------------------------------------------------------------- scroll / retrieve


@pytest.mark.parametrize("seed", range(3 * SCALE), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("spec_id", list(SPEC_BY_ID))
def test_scroll_pages(pair: Pair, spec_id: str, seed: int) -> None:
    """Walk every page; pages and next_page_offset must be identical."""
    ds = pair.dataset(spec_id)
    pick = RngPick(random.Random(f"scroll-{spec_id}-{seed}"))
    flt = gen_filter(pick, ds.pools, ds.spec) if seed else None
    limit = pick.choice([7, 23, 64])
    wp, wv = gen_payload_selector(pick), gen_vector_selector(pick, ds.spec)
    # start at a point, or between points (an id that does not exist)
    offset: Any = pick.choice([None, pick.choice(ds.pools.ids), 500_000,
                               "7fffffff-ffff-4fff-bfff-ffffffffffff"])
    pages = 0
    while True:
        kw = dict(scroll_filter=flt, limit=limit, offset=offset, with_payload=wp, with_vectors=wv)
        (q, q_next), (loc, l_next) = pair.both("scroll", ds.name, **kw)
        ctx = f"{spec_id} page {pages} offset={offset!r} limit={limit} wp={wp!r} wv={wv!r} " \
              f"filter={fmt_filter(flt)}"
        assert_records_equal(q, loc, ctx)
        assert q_next == l_next, f"{ctx}: next_page_offset quiver={q_next!r} local={l_next!r}"
        pages += 1
        if l_next is None:
            break
        offset = l_next
        if pages > 1 and isinstance(offset, str) and pick.chance(0.5):
            offset = spell_uuid(pick.rng, offset)
    assert pages >= 1


ORDER_KEYS = ["i", "f", "nums", "dt", "dts", "objs[].v", "mix", "n.x", "s"]


def check_order_by(pair: Pair, name: str, ob: models.OrderBy, flt: models.Filter | None,
                   limit: int, ctx: str) -> None:
    """Same order values in the same sequence; the same (value, id) pairs except among the
    ties at the cut-off (which of them make the page is arbitrary)."""
    ctx = f"{ctx}: order_by={ob!r} limit={limit} filter={fmt_filter(flt)}"
    (q, q_next), (loc, _) = pair.both("scroll", name, scroll_filter=flt, limit=limit,
                                      order_by=ob, with_payload=True)
    assert q_next is None, ctx
    full, _ = pair.local.scroll(name, scroll_filter=flt, limit=100_000, order_by=ob,
                                with_payload=True)
    q_vals, l_vals = [r.order_value for r in q], [r.order_value for r in loc]
    assert q_vals == l_vals, f"{ctx}\n quiver={q_vals}\n local ={l_vals}"
    last = l_vals[-1] if l_vals else None
    # 2 and 2.0 tie, and the order of ties is arbitrary: compare the (value, type) multisets,
    # leaving out the tie group at the cut-off (which of its members make the page varies).
    def typed(vals: list[Any]) -> Counter:
        return Counter((v, type(v).__name__) for v in vals if v != last)
    assert AVOID["order_value_int_for_integral_float"] or typed(q_vals) == typed(l_vals), (
        f"{ctx}: order_value types differ: quiver-only={typed(q_vals) - typed(l_vals)} "
        f"local-only={typed(l_vals) - typed(q_vals)}")
    allowed = {(r.order_value, r.id) for r in full}
    q_pairs = [(r.order_value, r.id) for r in q]
    assert len(set(q_pairs)) == len(q_pairs), f"{ctx}: duplicate entries"
    assert {p for p in q_pairs if p[0] != last} == {
        (r.order_value, r.id) for r in loc if r.order_value != last}, ctx
    assert set(q_pairs) <= allowed, f"{ctx}: {set(q_pairs) - allowed}"
    payloads = {r.id: r.payload for r in full}
    for r in q:
        assert r.payload == payloads[r.id], f"{ctx}: payload of {r.id!r}"


@pytest.mark.parametrize("direction", ["asc", "desc"])
@pytest.mark.parametrize("key", ORDER_KEYS)
def test_scroll_order_by(pair: Pair, key: str, direction: str) -> None:
    """order_by on ints, floats, arrays, datetimes, mixed types, nested keys; start_from."""
    ds = pair.dataset("euclid")
    pick = RngPick(random.Random(f"order-{key}-{direction}"))
    for i in range(3):
        flt = gen_filter(pick, ds.pools, ds.spec) if i == 2 else None
        start: Any = None
        if i == 1:
            start = (pick.choice(ds.pools.dts).isoformat() if key in ("dt", "dts")
                     else float(pick.integer(-5, 5)))
        ob = models.OrderBy(key=key, direction=direction, start_from=start)
        check_order_by(pair, ds.name, ob, flt, pick.choice([15, 1000]), key)


@pytest.mark.parametrize("spec_id", list(SPEC_BY_ID))
def test_retrieve(pair: Pair, spec_id: str) -> None:
    ds = pair.dataset(spec_id)
    pick = RngPick(random.Random(f"retrieve-{spec_id}"))
    for _ in range(4):
        ids = [pick.choice(ds.pools.ids) for _ in range(pick.integer(1, 12))]
        ids += [31337, "11111111-2222-4333-8444-555555555555"]  # missing
        ids = [spell_uuid(pick.rng, i) if isinstance(i, str) and pick.chance(0.3) else i
               for i in ids]
        pick.rng.shuffle(ids)
        wp, wv = gen_payload_selector(pick), gen_vector_selector(pick, ds.spec)
        q, loc = pair.both("retrieve", ds.name, ids=ids, with_payload=wp, with_vectors=wv)
        ctx = f"{spec_id} retrieve ids={ids} wp={wp!r} wv={wv!r}"
        key = lambda r: (isinstance(r.id, str), r.id)  # noqa: E731 - order is unspecified
        assert_records_equal(sorted(q, key=key), sorted(loc, key=key), ctx)


# ------------------------------------------------------------------------------- writes


def full_state(client: QdrantClient, name: str) -> list[Any]:
    recs, nxt = client.scroll(name, limit=100_000, with_payload=True, with_vectors=True)
    assert nxt is None
    return recs


def gen_small_payload(pick: RngPick) -> dict[str, Any]:
    src = gen_payload(pick.rng)
    keys = list(src) + ["fresh"]
    out = {}
    for _ in range(pick.integer(1, 3)):
        k = pick.choice(keys)
        out[k] = src.get(k, pick.integer(0, 9))
    if pick.chance(0.2):
        out[pick.choice(keys)] = None  # null in set_payload
    return out


def gen_selector(pick: RngPick, live: list[Any], pools: Pools, spec: Spec) -> Any:
    if pick.chance(0.3):
        return models.FilterSelector(filter=gen_filter(pick, pools, spec))
    ids = [pick.choice(live) for _ in range(pick.integer(1, 6))] if live else []
    if not AVOID["missing_ids_in_point_updates"] and pick.chance(0.3):
        ids.append(999_999_999)
    return models.PointIdsList(points=ids)


WRITE_KINDS = ["upsert", "upsert", "upsert", "delete_ids", "delete_filter", "set_payload",
               "set_payload", "set_payload_key", "set_payload_key", "overwrite_payload",
               "delete_payload", "delete_payload", "clear_payload", "update_vectors",
               "delete_vectors"]
SET_KEYS = ["n", "n.z", "fresh", "fresh.deep", "i", "meta.b", "objs[]", "objs[0]"]
SET_KEYS_DIVERGENT = ["objs[]", "objs[0]", "objs[1]", "objs[].sub[]"]
DELETE_KEYS = ["i", "objs[].k", "tags", "nope", "n", "objs[].sub[].q", "meta.b", "objs[]",
               "meta.b.c", "meta.a", "objs[].sub[]", "nums[]"]
DELETE_KEYS_DIVERGENT = ["objs[0]", "nums[1]", "n.x", "n.z.w"]


def gen_write(pick: RngPick, spec: Spec, live: list[Any], pools: Pools,
              next_ids: Iterator[Any]) -> tuple[str, dict[str, Any]]:
    kind = pick.choice(WRITE_KINDS)
    if not spec.named and kind == "delete_vectors":
        kind = "upsert"
    if not live and kind not in ("upsert", "delete_filter"):
        kind = "upsert"
    if kind == "upsert":
        structs = []
        for _ in range(pick.integer(1, 8)):
            pid = pick.choice(live) if live and pick.chance(0.4) else next(next_ids)
            structs.append(as_struct(pick.rng, gen_point(pick.rng, spec, pid)))
        if pick.chance(0.2):
            structs[-1].payload = None  # no payload at all
        if pick.chance(0.3):  # the same id twice in one request: the last one wins
            dup = gen_point(pick.rng, spec, structs[0].id)
            structs.append(models.PointStruct(id=dup.id, vector=dup.vector, payload=dup.payload))
        return "upsert", {"points": structs}
    if kind == "delete_ids":
        ids = [pick.choice(live) for _ in range(pick.integer(1, 4))] + [123_456_789]
        return "delete", {"points_selector": models.PointIdsList(points=ids)}
    if kind == "delete_filter":
        return "delete", {"points_selector": models.FilterSelector(
            filter=gen_filter(pick, pools, spec))}
    sel = gen_selector(pick, live, pools, spec)
    if kind == "set_payload":
        return "set_payload", {"payload": gen_small_payload(pick), "points": sel}
    if kind == "set_payload_key":
        pool = ([k for k in SET_KEYS if "[" not in k] if AVOID["set_payload_array_paths"]
                else SET_KEYS + SET_KEYS_DIVERGENT)
        return "set_payload", {"payload": gen_small_payload(pick), "points": sel,
                               "key": pick.choice(pool)}
    if kind == "overwrite_payload":
        return "overwrite_payload", {"payload": gen_small_payload(pick), "points": sel}
    if kind == "delete_payload":
        pool = DELETE_KEYS + ([] if AVOID["delete_payload_array_paths"] else DELETE_KEYS_DIVERGENT)
        keys = [pick.choice(pool) for _ in range(pick.integer(1, 3))]
        return "delete_payload", {"keys": keys, "points": sel}
    if kind == "clear_payload":
        return "clear_payload", {"points_selector": sel}
    targets = sorted({pick.choice(live) for _ in range(pick.integer(1, 4))}, key=str)
    if AVOID["update_vectors_multi_point"]:
        targets = targets[:1]
    if kind == "update_vectors":
        pvs = []
        for pid in targets:
            if spec.named:
                names = [n for n, _, _ in spec.vectors if pick.chance(0.6)] or [spec.vectors[0][0]]
                vec: Any = {n: gen_vector(pick.rng, d) for n, d, _ in spec.vectors if n in names}
            else:
                vec = gen_vector(pick.rng, spec.vectors[0][1])
            pvs.append(models.PointVectors(id=pid, vector=vec))
        return "update_vectors", {"points": pvs}
    names = [n for n, _, _ in spec.vectors if pick.chance(0.5)] or [spec.vectors[-1][0]]
    return "delete_vectors", {"vectors": names, "points": sel}


@pytest.mark.parametrize("seed", range(2 * SCALE), ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("spec_id", ["cosine", "manhattan", "named_cos_euclid", "named_dot_manh"])
def test_write_sequence(pair: Pair, collection_name: str, spec_id: str, seed: int) -> None:
    """A random sequence of writes applied to both; the whole state compared after each."""
    spec = SPEC_BY_ID[spec_id]
    pick = RngPick(random.Random(f"writes-{spec_id}-{seed}"))
    name = collection_name
    pair.create(name, spec, small_segments=seed % 2 == 1)
    fresh = iter(gen_ids(pick.rng, 2000))
    first = [gen_point(pick.rng, spec, next(fresh)) for _ in range(120)]
    pools = Pools()
    pools.absorb(first)
    pair.both("upsert", name, points=[as_struct(pick.rng, p) for p in first], wait=True)
    history: list[str] = []
    try:
        live = [r.id for r in full_state(pair.local, name)]
        for step in range(40):
            method, kw = gen_write(pick, spec, live, pools, fresh)
            history.append(f"{method}({kw!r})")
            if method == "upsert":
                pools.absorb([PointData(s.id, s.vector, s.payload or {}) for s in kw["points"]])
            q, loc = pair.both(method, name, wait=True, **kw)
            state_q, state_l = full_state(pair.remote, name), full_state(pair.local, name)
            assert_records_equal(state_q, state_l, f"after step {step}: {history[-1]}")
            live = [r.id for r in state_l]
            if step % 4 == 3:  # filters and search over the changed data
                flt = gen_filter(pick, pools, spec)
                check_filter(pair, Dataset(spec, name, first, pools), flt, f"step {step}")
                using = pick.choice([n for n, _, _ in spec.vectors])
                ds = Dataset(spec, name, first, pools)
                case = gen_query_case(pick, ds, using)
                check_query(pair, ds, case, f"step {step}")
                ob = models.OrderBy(key=pick.choice(ORDER_KEYS),
                                    direction=pick.choice(["asc", "desc"]))
                check_order_by(pair, name, ob, None, pick.choice([10, 1000]), f"step {step}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- writes so far:\n" + "\n".join(history[-5:])) from None
    finally:
        pair.remote.delete_collection(name)
        pair.local.delete_collection(name)


# ------------------------------------------------------------------------------- sanity


def test_generators_are_deterministic() -> None:
    a = [gen_payload(random.Random(5)) for _ in range(3)]
    b = [gen_payload(random.Random(5)) for _ in range(3)]
    assert a == b
    pools = Pools(ids=[1, 2])
    fa = gen_filter(RngPick(random.Random(9)), pools, SPECS[4])
    fb = gen_filter(RngPick(random.Random(9)), pools, SPECS[4])
    assert fa == fb


def test_datetime_formats_parse_in_local_mode() -> None:
    t = datetime(2023, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    for fmt in DT_FORMATS:
        s = t.strftime(fmt.replace("+02:00", "%z").replace("-05:30", "%z"))
        assert parse_core_datetime(s) is not None, s
    assert math.isfinite(DT_BASE.timestamp())


# ------------------------------------------------------------------------------- errors


ERROR_QUERIES = {
    "wrong-dim": dict(query=[0.5] * 7, using="img"),
    "unknown-vector-name": dict(query=[0.5] * 6, using="nope"),
    "named-without-using": dict(query=[0.5] * 6),
    "missing-point-id": dict(query=987_654_321, using="img"),
}


@pytest.mark.parametrize("kw", list(ERROR_QUERIES.values()), ids=list(ERROR_QUERIES))
def test_bad_queries_fail_on_both(pair: Pair, kw: dict[str, Any]) -> None:
    ds = pair.dataset("named_cos_euclid")
    q, loc = pair.both("query_points", ds.name, **kw)
    assert isinstance(q, BaseException) and isinstance(loc, BaseException)


def test_query_by_id_without_that_vector_fails_on_both(pair: Pair) -> None:
    ds = pair.dataset("named_cos_euclid")
    pid = next(p.id for p in ds.points if "txt" not in p.vector)
    q, loc = pair.both("query_points", ds.name, query=pid, using="txt")
    assert isinstance(q, BaseException) and isinstance(loc, BaseException)


POINT_UPDATES_WITH_MISSING_ID = {
    "set_payload": dict(payload={"z": 1}, points=[1, 424242]),
    "overwrite_payload": dict(payload={"z": 1}, points=[424242]),
    "delete_payload": dict(keys=["k"], points=[424242]),
    "clear_payload": dict(points_selector=[424242]),
    "update_vectors": dict(points=[models.PointVectors(id=424242, vector={"img": [1.0] * 6})]),
    "delete_vectors": dict(vectors=["txt"], points=[424242]),
}


@pytest.mark.parametrize("method", list(POINT_UPDATES_WITH_MISSING_ID))
def test_point_updates_naming_a_missing_id_fail_on_both(pair: Pair, collection_name: str,
                                                        method: str) -> None:
    """Both refuse; what was applied before the refusal differs (AVOID), so no state check."""
    spec = SPEC_BY_ID["named_cos_euclid"]
    pair.create(collection_name, spec)
    try:
        pair.both("upsert", collection_name, points=[models.PointStruct(
            id=1, vector={"img": [1.0] * 6, "txt": [1.0] * 4}, payload={"k": 1})], wait=True)
        q, loc = pair.both(method, collection_name, wait=True,
                           **POINT_UPDATES_WITH_MISSING_ID[method])
        assert isinstance(q, BaseException) and isinstance(loc, BaseException)
        assert "404" in str(q), q
    finally:
        pair.remote.delete_collection(collection_name)
        pair.local.delete_collection(collection_name)
