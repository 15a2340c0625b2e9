"""Collection configuration: validated, and echoed back exactly as the user gave it.

Qdrant's clients compare `config.params.vectors` with `==` against what they sent, and
`VectorParams` forbids unknown keys, so the echo is the user's own dict (validated), never
a re-serialised model with added defaults.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from engine.distance import Distance, get_distance
from engine.errors import BadInput, BadRequest
from engine.quantization import DISABLED, QuantConfig
from engine.quantization import parse_config as parse_quantization
from engine.strict import parse_config as parse_strict_mode

MAX_DIM = 65536
VECTOR_PARAM_KEYS = {
    "size", "distance", "hnsw_config", "quantization_config", "on_disk", "datatype",
    "multivector_config",
}
DATATYPES = {"float32", "float16", "uint8"}
SPARSE_PARAM_KEYS = {"index", "modifier"}
SPARSE_MODIFIERS = {"none", "idf"}

DEFAULT_HNSW = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000,
                "max_indexing_threads": 0, "on_disk": False}
DEFAULT_OPTIMIZER = {"deleted_threshold": 0.2, "vacuum_min_vector_number": 1000,
                     "default_segment_number": 0, "max_segment_size": None,
                     "memmap_threshold": None, "indexing_threshold": 10000,
                     "flush_interval_sec": 5, "max_optimization_threads": None}
DEFAULT_WAL = {"wal_capacity_mb": 32, "wal_segments_ahead": 0}
DEFAULT_PARAMS = {"shard_number": 1, "replication_factor": 1, "write_consistency_factor": 1,
                  "on_disk_payload": True}

U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
I32_MAX = (1 << 31) - 1
# faiss' HNSW: m = 1 divides by log(1) and crashes the process; m and efConstruction are C ints.
# Beyond 1024 links per node the graph alone needs 8 KB a vector: Quiver's own bound.
MAX_HNSW_M = 1024


def _uint(minimum: int = 0, maximum: int = U64_MAX, *, not_one: bool = False) -> Any:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r}"
        if not minimum <= value <= maximum:
            return f"value {value} is invalid. Must be in {minimum}..{maximum}"
        if not_one and value == 1:
            return "value 1 is not supported (0 turns the graph off; use 2 or more)"
        return None
    return check


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be a boolean, got {value!r}"


def _fraction(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        return f"must be a number in 0..1, got {value!r}"
    return None


def _threads(value: Any) -> str | None:
    return None if value == "auto" else _uint()(value)


def _anything(value: Any) -> str | None:
    return None


# The typed fields of Qdrant's *ConfigDiff objects (OpenAPI minimums); other keys are kept as
# given. A value that Quiver later reads as a number must be one: `"abc"` used to be accepted
# and then failed every search (500) and the background index builds.
SECTION_FIELDS: dict[str, dict[str, Any]] = {
    "hnsw_config": {
        "m": _uint(0, MAX_HNSW_M, not_one=True), "ef_construct": _uint(4, I32_MAX),
        "full_scan_threshold": _uint(10), "max_indexing_threads": _uint(),
        "on_disk": _bool, "payload_m": _uint(0, MAX_HNSW_M, not_one=True),
        "inline_storage": _bool, "memory": _anything,
    },
    "optimizers_config": {
        "deleted_threshold": _fraction, "vacuum_min_vector_number": _uint(100),
        "default_segment_number": _uint(), "max_segment_size": _uint(1),
        "memmap_threshold": _uint(), "indexing_threshold": _uint(),
        "flush_interval_sec": _uint(), "max_optimization_threads": _threads,
        "prevent_unoptimized": _bool,
    },
    "wal_config": {
        "wal_capacity_mb": _uint(1), "wal_segments_ahead": _uint(), "wal_retain_closed": _uint(),
    },
    "sparse_index": {
        "full_scan_threshold": _uint(), "on_disk": _bool, "memory": _anything,
        "datatype": _anything,  # checked in _check_sparse (only float32 is implemented)
    },
    "params": {
        "shard_number": _uint(1, U32_MAX), "replication_factor": _uint(1, U32_MAX),
        "write_consistency_factor": _uint(1, U32_MAX), "on_disk_payload": _bool,
        "read_fan_out_factor": _uint(0, U32_MAX), "read_fan_out_delay_ms": _uint(),
    },
}


def _check_section(section: str, given: Any, strict: bool) -> dict[str, Any]:
    """The non-null entries of a config diff, checked. strict (a request): a bad value is a
    400. Not strict (stored state, snapshot archives): a bad value is dropped, so the default
    applies and nothing downstream ever reads it."""
    if not isinstance(given, dict):
        if strict:
            raise BadRequest(f"`{section}` must be an object")
        return {}
    fields = SECTION_FIELDS[section]
    out = {}
    for key, value in given.items():
        if value is None:
            continue  # a diff's null: unchanged
        check = fields.get(key)
        problem = check(value) if check is not None else None
        if problem is not None:
            if strict:
                raise BadRequest(f"`{section}.{key}` {problem}")
            continue
        out[key] = value
    return out


@dataclass(frozen=True)
class VectorSpec:
    name: str
    size: int
    distance: Distance
    datatype: str = "float32"
    multivector: bool = False  # multivector_config {comparator: max_sim} (engine/multivector.py)


@dataclass
class CollectionConfig:
    vectors_echo: Any  # exactly as given: dict (single) or dict of dicts (named)
    named: bool
    vectors: dict[str, VectorSpec]
    params: dict[str, Any] = field(default_factory=dict)  # shard_number, ... (no vectors)
    hnsw_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_HNSW))
    optimizer_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_OPTIMIZER))
    wal_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_WAL))
    sparse_vectors: dict[str, Any] = field(default_factory=dict)
    quantization_config: Any = None
    # multivector names (MaxSim): kept out of `vectors`, which hold plain dense rows only
    multivectors: dict[str, VectorSpec] = field(default_factory=dict)
    strict_mode_config: Any = None
    metadata: dict[str, Any] | None = None
    # dense vector name → its effective quantization (its own config, else the collection's)
    quantization: dict[str, QuantConfig] = field(default_factory=dict)

    def is_sparse(self, name: str | None) -> bool:
        return bool(name) and name in self.sparse_vectors

    def sparse_idf(self, name: str) -> bool:
        """Whether searches by this sparse vector weigh query terms by IDF."""
        return (self.sparse_vectors.get(name) or {}).get("modifier") == "idf"

    def is_multi(self, name: str | None) -> bool:
        return (name or "") in self.multivectors

    def search_name(self, name: str | None) -> str:
        """A dense, multi or sparse vector's name as searches use it (400 when none)."""
        if self.is_sparse(name) or self.is_multi(name):
            return name or ""
        return self.vector(name).name

    def dense_names(self) -> list[str]:
        """Dense and multivector names, in the order the user gave them."""
        return [*self.vectors, *self.multivectors]

    def vector(self, name: str | None) -> VectorSpec:
        name = name or ""
        spec = self.vectors.get(name)
        if spec is None:
            if name == "" and self.named and len(self.vectors) == 0:
                raise BadInput("Collection has no dense vectors")
            raise BadInput(f"Not existing vector name error: {name}")
        return spec

    def to_json(self) -> dict[str, Any]:
        """CollectionConfig as Qdrant's GET /collections/{c} shows it."""
        params: dict[str, Any] = {"vectors": copy.deepcopy(self.vectors_echo)}
        params.update(self.params)
        if self.sparse_vectors:
            params["sparse_vectors"] = copy.deepcopy(self.sparse_vectors)
        out: dict[str, Any] = {
            "params": params,
            "hnsw_config": dict(self.hnsw_config),
            "optimizer_config": dict(self.optimizer_config),
            "wal_config": dict(self.wal_config),
        }
        if self.quantization_config is not None:
            out["quantization_config"] = self.quantization_config
        if self.strict_mode_config is not None:
            out["strict_mode_config"] = self.strict_mode_config
        if self.metadata is not None:
            out["metadata"] = self.metadata
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "vectors": self.vectors_echo,
            "params": self.params,
            "hnsw_config": self.hnsw_config,
            "optimizers_config": self.optimizer_config,
            "wal_config": self.wal_config,
            "sparse_vectors": self.sparse_vectors,
            "quantization_config": self.quantization_config,
            "strict_mode_config": self.strict_mode_config,
            "metadata": self.metadata,
        }


def _parse_vector_params(name: str, raw: Any) -> VectorSpec:
    if not isinstance(raw, dict):
        raise BadRequest(f"vector params for {name!r} must be an object")
    unknown = set(raw) - VECTOR_PARAM_KEYS
    if unknown:
        raise BadRequest(f"unknown field(s) in vector params: {', '.join(sorted(unknown))}")
    size = raw.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_DIM:
        raise BadRequest(f"vector size must be an integer in 1..{MAX_DIM}, got {size!r}")
    dist = get_distance(raw.get("distance"))
    datatype = raw.get("datatype") or "float32"
    if datatype not in DATATYPES:
        raise BadRequest(f"unknown datatype {datatype!r}")
    if datatype == "uint8" and dist.normalise:
        # Cosine stores unit vectors, whose components would all truncate to 0 or 1 as bytes
        raise BadRequest("datatype uint8 supports Dot, Euclid and Manhattan distances, not "
                         "Cosine: normalise the vectors and use Dot, or store float16")
    multi = _check_multivector(name, raw, dist.name, datatype)
    return VectorSpec(name, size, dist, datatype, multi)


def _check_multivector(name: str, raw: dict[str, Any], distance: str, datatype: str) -> bool:
    """Whether the vector is a multivector; combinations Quiver does not implement are a 400
    here, at create, never accepted and then failing."""
    mv = raw.get("multivector_config")
    if mv is None:
        return False
    if not isinstance(mv, dict) or set(mv) != {"comparator"}:
        raise BadRequest("`multivector_config` must be {\"comparator\": \"max_sim\"}")
    if mv["comparator"] != "max_sim":
        raise BadRequest(f"unknown multivector comparator {mv['comparator']!r}, expected max_sim")
    if datatype != "float32":
        raise BadRequest(f"multivector {name!r}: datatype {datatype} is not supported by Quiver "
                         "for multivectors (tokens are stored as float32)")
    if distance == "Manhattan":
        raise BadRequest(f"multivector {name!r}: Manhattan distance is not supported by Quiver "
                         "for multivectors (use Cosine, Dot or Euclid)")
    hnsw = raw.get("hnsw_config")
    if isinstance(hnsw, dict) and hnsw.get("m", 0) != 0:
        raise BadRequest(f"multivector {name!r}: an HNSW index over multivectors is not "
                         "supported by Quiver (they are searched exactly): use hnsw_config "
                         "{\"m\": 0} or leave it out")
    if raw.get("quantization_config") is not None:
        raise BadRequest(f"multivector {name!r}: quantization of multivectors is not "
                         "supported by Quiver")
    return True


def _check_sparse(name: str, raw: Any, strict: bool) -> dict[str, Any]:
    """One SparseVectorParams: `modifier` none/idf, `index` {full_scan_threshold, on_disk,
    memory, datatype}. Sparse weights are stored as float32: another datatype is refused at
    create time (a 400 naming it), never accepted and then ignored."""
    params = _object(raw, f"sparse_vectors.{name}", strict)
    if params is None:
        return {}
    unknown = set(params) - SPARSE_PARAM_KEYS
    if unknown and strict:
        raise BadRequest(f"unknown field(s) in sparse vector params: {', '.join(sorted(unknown))}")
    modifier = params.get("modifier")
    if modifier is not None and modifier not in SPARSE_MODIFIERS:
        if strict:
            raise BadRequest(f"`sparse_vectors.{name}.modifier` must be none or idf, "
                             f"got {modifier!r}")
        params = {k: v for k, v in params.items() if k != "modifier"}
    index = params.get("index")
    if index is not None:
        _check_section("sparse_index", index, strict)
        datatype = index.get("datatype") if isinstance(index, dict) else None
        if datatype not in (None, "float32") and strict:
            raise BadRequest(f"sparse vector datatype {datatype!r} is not supported by Quiver "
                             f"(sparse_vectors.{name}.index.datatype): use float32")
    return params


def _merge_section(base: dict[str, Any], given: Any, section: str,
                   strict: bool = True) -> dict[str, Any]:
    if given is None:
        return base
    out = dict(base)
    out.update(_check_section(section, given, strict))
    return out


def _object(value: Any, what: str, strict: bool) -> dict[str, Any] | None:
    """None stays None; an object is returned; anything else is a 400 (strict) or dropped."""
    if value is None or isinstance(value, dict):
        return value
    if strict:
        raise BadRequest(f"`{what}` must be an object")
    return None


def parse_create(body: dict[str, Any], strict: bool = True) -> CollectionConfig:
    """A create request (strict: every known field checked, 400 on a bad one), or stored
    state via from_state (not strict: bad values fall back to the defaults)."""
    if not isinstance(body, dict):
        raise BadRequest("collection config must be a JSON object")
    raw_vectors = body.get("vectors")
    if raw_vectors is None:
        raw_vectors = {}
    if not isinstance(raw_vectors, dict):
        raise BadRequest("`vectors` must be an object")
    if "size" in raw_vectors or "distance" in raw_vectors:
        named = False
        specs = {"": _parse_vector_params("", raw_vectors)}
    else:
        named = True
        specs = {n: _parse_vector_params(n, p) for n, p in raw_vectors.items()}
    given_params = _check_section(
        "params", {k: body.get(k) for k in DEFAULT_PARAMS}, strict)
    params = {**DEFAULT_PARAMS, **given_params}
    sparse = dict(_object(body.get("sparse_vectors"), "sparse_vectors", strict) or {})
    for name, sparse_params in sparse.items():
        sparse[name] = _check_sparse(name, sparse_params, strict)
    multis = {n: spec for n, spec in specs.items() if spec.multivector}
    specs = {n: spec for n, spec in specs.items() if not spec.multivector}
    overlap = set(sparse) & (set(specs) | set(multis))
    if overlap:
        raise BadInput(f"vector name(s) used for both dense and sparse vectors: {sorted(overlap)}")
    metadata = _object(body.get("metadata"), "metadata", strict)
    quantization = _quantization(body.get("quantization_config"), raw_vectors, named, specs,
                                 strict)
    return CollectionConfig(
        vectors_echo=copy.deepcopy(raw_vectors),
        named=named,
        vectors=specs,
        params=params,
        hnsw_config=_merge_section(dict(DEFAULT_HNSW), body.get("hnsw_config"), "hnsw_config",
                                   strict),
        optimizer_config=_merge_section(
            dict(DEFAULT_OPTIMIZER), body.get("optimizers_config"), "optimizers_config", strict
        ),
        wal_config=_merge_section(dict(DEFAULT_WAL), body.get("wal_config"), "wal_config",
                                  strict),
        sparse_vectors=copy.deepcopy(sparse),
        multivectors=multis,
        quantization_config=body.get("quantization_config"),
        strict_mode_config=parse_strict_mode(body.get("strict_mode_config"), strict),
        metadata=metadata,
        quantization=quantization,
    )


def _quantization(top_raw: Any, raw_vectors: dict[str, Any], named: bool,
                  specs: dict[str, VectorSpec], strict: bool) -> dict[str, QuantConfig]:
    """Each dense vector's effective quantization: its own `quantization_config`, else the
    collection's (multivectors are never quantized: refused per vector at create)."""
    top = parse_quantization(top_raw, "quantization_config", strict)
    out = {}
    for name in specs:
        raw = (raw_vectors.get(name) if named else raw_vectors) or {}
        own = parse_quantization(raw.get("quantization_config"),
                                 f"vectors.{name}.quantization_config" if named
                                 else "vectors.quantization_config", strict)
        chosen = own if own is not None else top
        if chosen is not None:
            out[name] = chosen
    return out


def from_state(state: dict[str, Any]) -> CollectionConfig:
    body = {
        "vectors": state.get("vectors"),
        "sparse_vectors": state.get("sparse_vectors"),
        "hnsw_config": state.get("hnsw_config"),
        "optimizers_config": state.get("optimizers_config"),
        "wal_config": state.get("wal_config"),
        "quantization_config": state.get("quantization_config"),
        "strict_mode_config": state.get("strict_mode_config"),
        "metadata": state.get("metadata"),
        **(state.get("params") or {}),
    }
    return parse_create(body, strict=False)


def apply_update(cfg: CollectionConfig, body: dict[str, Any]) -> CollectionConfig:
    """PATCH /collections/{c}: returns an updated copy; vector sizes/distances are immutable."""
    if not isinstance(body, dict):
        raise BadRequest("update body must be a JSON object")
    state = copy.deepcopy(cfg.to_state())
    if body.get("optimizers_config") is not None:
        state["optimizers_config"] = _merge_section(
            state["optimizers_config"], body["optimizers_config"], "optimizers_config")
    if body.get("hnsw_config") is not None:
        state["hnsw_config"] = _merge_section(state["hnsw_config"], body["hnsw_config"],
                                              "hnsw_config")
    if body.get("params") is not None:
        for k, v in _check_section("params", body["params"], True).items():
            if k in DEFAULT_PARAMS:
                state["params"][k] = v
    if body.get("vectors") is not None:
        vec_updates = _object(body["vectors"], "vectors", True) or {}
        for name, upd in vec_updates.items():
            if name not in cfg.vectors and name not in cfg.multivectors:
                raise BadInput(f"Not existing vector name error: {name}")
            target = state["vectors"] if not cfg.named else state["vectors"][name]
            upd = _object(upd, f"vectors.{name}", True) or {}
            if name in cfg.multivectors:  # same refusals as at create
                _check_multivector(name, {**target, **{k: v for k, v in upd.items()
                                                       if v is not None}}, "", "float32")
            for k, v in upd.items():
                if k == "quantization_config" and v == DISABLED:
                    target.pop(k, None)  # back to the collection's quantization
                elif k == "quantization_config" and v is not None:
                    parse_quantization(v, f"vectors.{name}.quantization_config")
                    target[k] = v
                elif k in ("hnsw_config", "on_disk") and v is not None:
                    target[k] = v
                elif k not in ("hnsw_config", "quantization_config", "on_disk"):
                    raise BadRequest(f"vector param {k!r} cannot be updated")
    if "quantization_config" in body and body["quantization_config"] is not None:
        q = body["quantization_config"]  # "Disabled" turns it off (QuantizationConfigDiff)
        state["quantization_config"] = None if q == DISABLED else q
        if q != DISABLED:
            parse_quantization(q)
    if body.get("strict_mode_config") is not None:
        state["strict_mode_config"] = parse_strict_mode(  # a diff: merged over the current
            body["strict_mode_config"], True, state.get("strict_mode_config"))
    if body.get("metadata") is not None:
        meta = dict(state.get("metadata") or {})
        meta.update(_object(body["metadata"], "metadata", True) or {})
        state["metadata"] = meta
    if body.get("sparse_vectors") is not None:
        sv = dict(state.get("sparse_vectors") or {})
        for name, upd in (_object(body["sparse_vectors"], "sparse_vectors", True) or {}).items():
            if name not in sv:
                raise BadInput(f"Not existing vector name error: {name}")
            upd = _check_sparse(name, upd, True)
            merged = {**(sv[name] or {}), **{k: v for k, v in upd.items() if k != "index"}}
            if isinstance(upd.get("index"), dict):
                merged["index"] = {**(merged.get("index") or {}), **upd["index"]}
            sv[name] = merged
        state["sparse_vectors"] = sv
    return from_state(state)
