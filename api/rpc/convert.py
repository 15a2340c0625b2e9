"""Qdrant's gRPC messages ↔ the JSON-shaped bodies and results of the REST handlers.

The general path uses qdrant-client's own converters (GrpcToRest / RestToGrpc over its
pydantic REST models), so a message means over gRPC exactly what its REST twin means; hot
paths (points in, scored points out) convert directly: ids, payload values and vectors are
read from and written into the messages field by field, without a pydantic model per point,
and the dense vectors of an upsert become one numpy array (`dense_matrix`).

Nothing here decides what a request means: a value the REST parser would refuse is passed
on as the JSON it stands for, so the REST handler refuses it with its own message.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc
from qdrant_client.grpc import json_with_int_pb2, points_pb2, qdrant_common_pb2

__all__ = ["GrpcToRest", "RestToGrpc", "dense_matrix", "fill_payload", "fill_records",
           "fill_vectors", "jsonable", "opt", "payload_json", "point_id", "point_ids",
           "rest_body", "rest_model", "set_point_id", "set_value", "value_json",
           "vector_json", "vectors_json"]

M = TypeVar("M", bound=BaseModel)

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def rest_body(model: BaseModel | None) -> dict[str, Any]:
    """A REST model (as GrpcToRest builds it) → the JSON body its REST route reads.
    GrpcToRest spells absent optional fields as None: they are left out."""
    if model is None:
        return {}
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


def rest_model(cls: type[M], result: Any) -> M:
    """A REST handler's result → its REST model (for RestToGrpc)."""
    return cls.model_validate(result)


def jsonable(value: Any) -> Any:
    """What a GrpcToRest converter returns (a model, or lists/dicts/enums holding models) as
    JSON. Payload-like dicts are left to `payload_json`: models drop their None fields."""
    if isinstance(value, BaseModel):
        return rest_body(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def opt(msg: Any, field: str) -> Any:
    """An optional scalar field: its value when set, else None."""
    return getattr(msg, field) if msg.HasField(field) else None


# ---- point ids ---------------------------------------------------------------------------------


def point_id(pid: qdrant_common_pb2.PointId) -> int | str | None:
    """A PointId message → its JSON id (None when neither variant is set: REST refuses it)."""
    kind = pid.WhichOneof("point_id_options")
    return pid.num if kind == "num" else pid.uuid if kind == "uuid" else None


def point_ids(ids: Any) -> list[int | str | None]:
    return [point_id(p) for p in ids]


def set_point_id(out: qdrant_common_pb2.PointId, pid: Any) -> None:
    if isinstance(pid, int):
        out.num = pid
    else:
        out.uuid = str(pid)


# ---- payload values (json_with_int.Value) ------------------------------------------------------


def value_json(v: json_with_int_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "integer_value":
        return v.integer_value
    if kind == "string_value":
        return v.string_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return {k: value_json(x) for k, x in v.struct_value.fields.items()}
    if kind == "list_value":
        return [value_json(x) for x in v.list_value.values]
    return None  # null_value (or unset)


def payload_json(payload: Any) -> dict[str, Any]:
    """A map<string, Value> → a JSON object."""
    return {k: value_json(v) for k, v in payload.items()}


def set_value(out: json_with_int_pb2.Value, x: Any) -> None:
    """Write JSON value `x` into `out` in place (no intermediate messages)."""
    if isinstance(x, str):
        out.string_value = x
    elif isinstance(x, bool):
        out.bool_value = x
    elif isinstance(x, int):
        if I64_MIN <= x <= I64_MAX:
            out.integer_value = x
        else:  # beyond int64: the nearest double, as Qdrant's serde_json → Value does
            out.double_value = float(x)
    elif isinstance(x, float):
        out.double_value = x
    elif x is None:
        out.null_value = json_with_int_pb2.NULL_VALUE
    elif isinstance(x, dict):
        fields = out.struct_value.fields
        if not x:
            out.struct_value.SetInParent()
        for k, v in x.items():
            set_value(fields[k], v)
    elif isinstance(x, list | tuple):
        values = out.list_value.values
        if not x:
            out.list_value.SetInParent()
        for v in x:
            set_value(values.add(), v)
    else:
        out.string_value = str(x)


def fill_payload(out: Any, payload: dict[str, Any]) -> None:
    for k, v in payload.items():
        set_value(out[k], v)


# ---- vectors in --------------------------------------------------------------------------------


def vector_json(v: points_pb2.Vector) -> Any:
    """A Vector (dense, sparse, multi-dense, deprecated forms, documents/images/objects,
    which REST sees as the objects they are) → its REST JSON."""
    kind = v.WhichOneof("vector")
    if kind == "dense":
        return v.dense.data[:]
    if kind is None and not v.HasField("indices") and not v.HasField("vectors_count"):
        return v.data[:]
    return jsonable(GrpcToRest.convert_vector(v))


def vectors_json(v: points_pb2.Vectors) -> Any:
    kind = v.WhichOneof("vectors_options")
    if kind == "vector":
        return vector_json(v.vector)
    if kind == "vectors":
        return {name: vector_json(x) for name, x in v.vectors.vectors.items()}
    return None


def _dense_data(v: points_pb2.Vector) -> Any:
    """The message whose serialisation is `field 1: packed floats` only (DenseVector, or a
    Vector in the deprecated `data` form), or None for any other kind of vector."""
    kind = v.WhichOneof("vector")
    if kind == "dense":
        return v.dense
    if kind is None and not v.HasField("indices") and not v.HasField("vectors_count") \
            and len(v.data):
        return v
    return None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def dense_matrix(vectors: list[points_pb2.Vector]) -> np.ndarray | None:
    """Dense vectors of one size → an (n, dim) float32 array, or None when they are not all
    dense or not all the same size (the caller falls back to the JSON form).

    Each vector's message serialises as `0x0A, varint(4·dim), dim little-endian floats`
    (proto3 packs repeated floats): the joined serialisations are an (n, header + 4·dim) byte
    matrix whose float columns are the array — no Python float per component."""
    msgs = [_dense_data(v) for v in vectors]
    if not msgs or any(m is None for m in msgs):
        return None
    dim = len(msgs[0].data)
    header = b"\x0a" + _varint(4 * dim)
    width = len(header) + 4 * dim
    blob = b"".join([m.SerializeToString() for m in msgs])
    if len(blob) != width * len(msgs):
        return None
    rows = np.frombuffer(blob, np.uint8).reshape(len(msgs), width)
    if not (rows[:, :len(header)] == np.frombuffer(header, np.uint8)).all():
        return None  # unknown fields or another layout: not the form read here
    return rows[:, len(header):].copy().view("<f4").astype(np.float32, copy=False)


# ---- vectors and points out --------------------------------------------------------------------


def _fill_vector(out: Any, v: Any) -> None:
    """One REST output vector (dense list, multivector, {indices, values}) into a
    VectorOutput."""
    if isinstance(v, dict):
        out.sparse.indices.extend(v.get("indices") or ())
        out.sparse.values.extend(v.get("values") or ())
        out.sparse.SetInParent()
    elif v and isinstance(v[0], list):
        for token in v:
            out.multi_dense.vectors.add().data.extend(token)
    else:
        out.dense.data.extend(v)
        out.dense.SetInParent()


def fill_vectors(out: points_pb2.VectorsOutput, vector: Any) -> None:
    """A record's REST `vector` (a bare vector or a map name → vector) into VectorsOutput."""
    if isinstance(vector, list):
        _fill_vector(out.vector, vector)
    elif isinstance(vector, dict) and not (set(vector) == {"indices", "values"}
                                           and isinstance(vector.get("indices"), list)):
        named = out.vectors.vectors
        out.vectors.SetInParent()
        for name, v in vector.items():
            _fill_vector(named[name], v)
    elif isinstance(vector, dict):
        _fill_vector(out.vector, vector)


def _order_value(out: points_pb2.OrderValue, v: Any) -> None:
    if isinstance(v, int) and not isinstance(v, bool) and I64_MIN <= v <= I64_MAX:
        out.int = v
    else:
        out.float = float(v)


def fill_records(out: Any, records: list[dict[str, Any]], scored: bool = True) -> None:
    """REST ScoredPoint (`scored`) or Record dicts → the repeated ScoredPoint /
    RetrievedPoint field `out`."""
    for rec in records:
        p = out.add()
        pid = rec["id"]
        if isinstance(pid, int):
            p.id.num = pid
        else:
            p.id.uuid = pid
        if scored:
            p.score = rec.get("score") or 0.0
            p.version = rec.get("version") or 0
        pl = rec.get("payload")
        if pl:
            fill_payload(p.payload, pl)
        vec = rec.get("vector")
        if vec is not None:
            fill_vectors(p.vectors, vec)
            p.vectors.SetInParent()
        ov = rec.get("order_value")
        if ov is not None:
            _order_value(p.order_value, ov)
