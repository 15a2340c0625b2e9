"""Quantization as Qdrant defines it: the config (validated → typed), and the quantizers.

A quantizer is trained once per (collection, vector) on a sample of its rows, then encodes
rows into compact codes and scores queries against them (gpu/quantized.py, numpy or cupy):

- scalar int8: one offset and scale for every component (`quantile` trims outliers first),
  codes are uint8; 4x smaller than float32.
- binary: `one_bit` (x > 0, Qdrant's sign bit: 32x), `two_bits` (a thermometer code: two
  thresholds per dimension around its mean, 16x) and `one_and_half_bits` (two bits on even
  dimensions, one on odd ones: ~21x); codes are packed bits scored by XOR + popcount, or, with
  `query_encoding` scalar8bits/scalar4bits, the float query against the codes' levels.
- product: `compression` xN → M sub-quantizers of up to 256 centroids (faiss k-means, numpy
  otherwise), one byte per sub-vector; scored by per-query distance tables.

A quantizer serialises to plain numpy arrays (`arrays` / `from_arrays`): stored next to the
collection and carried in snapshots, so recovery encodes with it and never trains again
(`trainings()` counts the training runs, as engine.ann.builds() counts index builds).
"""

from __future__ import annotations

import io
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.durable import write_atomic
from engine.errors import BadRequest
from engine.npy import load_npz
from gpu import quantized as qk
from gpu.xp import to_host, xp_of

try:
    import faiss
except ImportError:  # pragma: no cover - the bare GPU image: numpy k-means
    faiss = None

KINDS = ("scalar", "product", "binary")
COMPRESSION = {"x4": 4, "x8": 8, "x16": 16, "x32": 32, "x64": 64}
ENCODINGS = ("one_bit", "two_bits", "one_and_half_bits")
QUERY_ENCODINGS = ("default", "binary", "scalar4bits", "scalar8bits")
MEMORY = ("cold", "cached", "pinned")
_COMMON_KEYS = {"always_ram", "memory"}
_KEYS = {"scalar": {"type", "quantile"} | _COMMON_KEYS,
         "product": {"compression"} | _COMMON_KEYS,
         "binary": {"encoding", "query_encoding"} | _COMMON_KEYS}
DISABLED = "Disabled"
SAMPLE_ROWS = 1 << 16  # training sample: enough for 256 centroids x 256 points
ENCODE_CHUNK = 1 << 15  # rows encoded per step: bounds the float temporaries of encode()
TRAIN_MIN_ROWS = 256  # a vector is trained once the collection holds this many rows
PQ_POINTS_PER_CENTROID = 39  # fewer centroids (down from 256) for small training sets
TWO_BIT_Z = 0.4307  # thresholds at mean ± z·std: three equally likely levels for normal data
_train_count = 0
_count_lock = threading.Lock()


def trainings() -> int:
    """How many quantizers were trained in this process (tests prove recovery trains none)."""
    return _train_count


# ---- config ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantConfig:
    kind: str  # "scalar" | "product" | "binary"
    quantile: float | None = None  # scalar: the central fraction of values kept in range
    compression: int = 0  # product: x4 → 4
    encoding: str = "one_bit"  # binary
    query_encoding: str = "default"  # binary
    always_ram: bool | None = None  # accepted; Quiver holds codes in memory always

    def train_key(self) -> tuple[str, float | None, int, str]:
        """What training depends on: a config differing only elsewhere keeps the codebook."""
        return self.kind, self.quantile, self.compression, self.encoding


def parse_config(raw: Any, where: str = "quantization_config", strict: bool = True
                 ) -> QuantConfig | None:
    """A QuantizationConfig (or null) → typed. strict (a request): anything wrong is a 400
    naming it. Not strict (stored state): a bad config is dropped (no quantization)."""
    try:
        return _parse(raw, where)
    except BadRequest:
        if strict:
            raise
        return None


def _parse(raw: Any, where: str) -> QuantConfig | None:
    if raw is None:
        return None
    if raw == DISABLED:
        raise BadRequest(f"`{where}`: \"Disabled\" is only valid in a collection update")
    if not isinstance(raw, dict) or len(raw) != 1:
        raise BadRequest(f"`{where}` must be an object with one of the keys scalar, product, "
                         f"binary")
    (kind, body), = raw.items()
    if kind == "turbo":
        raise BadRequest(f"`{where}.turbo`: turbo quantization is not supported by Quiver "
                         f"(use scalar, product or binary)")
    if kind not in KINDS:
        raise BadRequest(f"`{where}`: unknown quantization {kind!r} (expected scalar, product "
                         f"or binary)")
    if body is None and kind == "binary":
        body = {}
    if not isinstance(body, dict):
        raise BadRequest(f"`{where}.{kind}` must be an object")
    unknown = sorted(set(body) - _KEYS[kind])
    if unknown:
        raise BadRequest(f"`{where}.{kind}`: unknown field(s) {', '.join(unknown)}")
    always_ram = body.get("always_ram")
    if always_ram is not None and not isinstance(always_ram, bool):
        raise BadRequest(f"`{where}.{kind}.always_ram` must be a boolean")
    memory = body.get("memory")
    if memory is not None and memory not in MEMORY:
        raise BadRequest(f"`{where}.{kind}.memory` must be one of {', '.join(MEMORY)}, "
                         f"got {memory!r}")
    if kind == "scalar":
        if body.get("type") != "int8":
            raise BadRequest(f"`{where}.scalar.type` must be int8, got {body.get('type')!r}")
        q = body.get("quantile")
        if q is not None and (isinstance(q, bool) or not isinstance(q, int | float)
                              or not 0.5 <= q <= 1.0):
            raise BadRequest(f"`{where}.scalar.quantile` must be a number in [0.5, 1.0], "
                             f"got {q!r}")
        return QuantConfig("scalar", quantile=None if q is None else float(q),
                           always_ram=always_ram)
    if kind == "product":
        comp = body.get("compression")
        if comp not in COMPRESSION:
            raise BadRequest(f"`{where}.product.compression` must be one of "
                             f"{', '.join(COMPRESSION)}, got {comp!r}")
        return QuantConfig("product", compression=COMPRESSION[comp], always_ram=always_ram)
    enc = body.get("encoding") or "one_bit"
    if enc not in ENCODINGS:
        raise BadRequest(f"`{where}.binary.encoding` must be one of {', '.join(ENCODINGS)}, "
                         f"got {enc!r}")
    qenc = body.get("query_encoding") or "default"
    if qenc not in QUERY_ENCODINGS:
        raise BadRequest(f"`{where}.binary.query_encoding` must be one of "
                         f"{', '.join(QUERY_ENCODINGS)}, got {qenc!r}")
    return QuantConfig("binary", encoding=enc, query_encoding=qenc, always_ram=always_ram)


@dataclass(frozen=True)
class QuantSearch:
    """A search's `params.quantization`: rescore None means Qdrant's default (rescore)."""

    ignore: bool = False
    rescore: bool | None = None
    oversampling: float = 1.0

    @property
    def key(self) -> tuple[bool, bool, float]:
        return self.ignore, self.rescore is not False, self.oversampling


# ---- quantizers ---------------------------------------------------------------------------


class Quantizer:
    """Trained parameters of one kind of quantization; codes are host numpy arrays until
    `place`d (gpu/quantized.py scores them wherever they live)."""

    kind = ""
    config: QuantConfig
    dim: int
    metric: str

    def encode(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def row_norms(self, codes: np.ndarray) -> np.ndarray | None:
        """Per-row squared norms of the decoded rows, where scoring needs them."""
        return None

    def scan(self, codes: Any, norms: Any, queries: np.ndarray, k: int,
             mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def code_bytes(self) -> int:
        """Bytes of codes per vector."""
        raise NotImplementedError  # pragma: no cover

    def host_index(self, codes: np.ndarray) -> tuple[Any, np.ndarray] | None:
        """A faiss index owning a copy of host `codes` and a numpy view of that copy (which
        then replaces `codes`), where faiss scans this kind; None: numpy scans them."""
        return None

    def scan_index(self, index: Any, queries: np.ndarray, k: int, mask: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray] | None:
        """`scan` through the faiss index of all the codes; None where it does not apply."""
        return None


class ScalarQuantizer(Quantizer):
    kind = "scalar"

    def __init__(self, config: QuantConfig, dim: int, metric: str, lo: float, hi: float) -> None:
        self.config, self.dim, self.metric = config, dim, metric
        self.offset = float(lo)
        self.scale = float(hi - lo) / 255.0 if hi > lo else 1.0

    @classmethod
    def train(cls, config: QuantConfig, sample: np.ndarray, metric: str) -> ScalarQuantizer:
        vals = sample.ravel()
        vals = vals[np.isfinite(vals)]
        if len(vals) == 0:
            return cls(config, sample.shape[1], metric, 0.0, 1.0)
        q = config.quantile
        if q is None or q >= 1.0:
            lo, hi = float(vals.min()), float(vals.max())
        else:
            lo, hi = (float(v) for v in np.quantile(vals, [(1 - q) / 2, (1 + q) / 2]))
        return cls(config, sample.shape[1], metric, lo, hi)

    def encode(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(x.shape, np.uint8)
        for s in range(0, len(x), ENCODE_CHUNK):  # bounded float temporaries
            sub = x[s : s + ENCODE_CHUNK].astype(np.float32, copy=False)
            c = np.rint((sub - self.offset) / self.scale)
            out[s : s + len(sub)] = np.clip(c, 0, 255)
        return out

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)

    def row_norms(self, codes: np.ndarray) -> np.ndarray | None:
        if self.metric != "l2":
            return None
        out = np.empty(len(codes), np.float32)
        for s in range(0, len(codes), 1 << 16):  # bounded temporaries
            x = self.decode(codes[s : s + (1 << 16)])
            out[s : s + len(x)] = np.einsum("ij,ij->i", x, x)
        return out

    def scan(self, codes: Any, norms: Any, queries: np.ndarray, k: int,
             mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return qk.int8_topk(codes, queries, k, self.metric, self.scale, self.offset, mask, norms)

    def host_index(self, codes: np.ndarray) -> tuple[Any, np.ndarray] | None:
        return qk.faiss_int8(codes, self.scale, self.offset, self.metric)

    def scan_index(self, index: Any, queries: np.ndarray, k: int, mask: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray] | None:
        return qk.faiss_int8_topk(index, queries, k, self.metric, self.scale, mask)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"range": np.array([self.offset, self.offset + 255.0 * self.scale], np.float64)}

    def code_bytes(self) -> int:
        return self.dim + (4 if self.metric == "l2" else 0)


class BinaryQuantizer(Quantizer):
    """Bits per dimension from thresholds: one_bit x > 0; two_bits x > mean - z·std and
    x > mean + z·std (a thermometer code: Hamming distance = the difference of levels);
    one_and_half_bits: both thresholds on even dimensions, the mean on odd ones."""

    kind = "binary"

    def __init__(self, config: QuantConfig, dim: int, metric: str,
                 thresholds: np.ndarray) -> None:
        self.config, self.dim, self.metric = config, dim, metric
        self.thresholds = np.asarray(thresholds, np.float32)  # (bits,) one per code bit
        self.dims = self._bit_dims(config.encoding, dim)  # (bits,) the dimension of each bit
        self.bits = len(self.dims)

    @staticmethod
    def _bit_dims(encoding: str, dim: int) -> np.ndarray:
        d = np.arange(dim)
        if encoding == "one_bit":
            return d
        if encoding == "two_bits":
            return np.concatenate([d, d])
        return np.concatenate([d, d[::2]])

    @classmethod
    def train(cls, config: QuantConfig, sample: np.ndarray, metric: str) -> BinaryQuantizer:
        dim = sample.shape[1]
        if config.encoding == "one_bit":
            return cls(config, dim, metric, np.zeros(dim, np.float32))
        mean = sample.mean(axis=0) if len(sample) else np.zeros(dim)
        std = sample.std(axis=0) if len(sample) else np.ones(dim)
        if config.encoding == "two_bits":
            t = np.concatenate([mean - TWO_BIT_Z * std, mean + TWO_BIT_Z * std])
        else:
            low = np.where(np.arange(dim) % 2 == 0, mean - TWO_BIT_Z * std, mean)
            t = np.concatenate([low, (mean + TWO_BIT_Z * std)[::2]])
        return cls(config, dim, metric, t)

    def encode(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), (self.bits + 7) // 8), np.uint8)
        for s in range(0, len(x), ENCODE_CHUNK):  # bounded float and bit temporaries
            sub = x[s : s + ENCODE_CHUNK].astype(np.float32, copy=False)
            out[s : s + len(sub)] = np.packbits(sub[:, self.dims] > self.thresholds[None, :],
                                                axis=1)
        return out

    def _levels(self, codes: Any) -> Any:
        """(c, d) float32 levels of packed codes: each bit counts ±1/2 on its dimension (one
        bit: ±1), so levels are centred like the query's standardised values."""
        xp = xp_of(codes)
        bits = xp.unpackbits(codes, axis=1)[:, : self.bits].astype(xp.float32)
        signed = 2.0 * bits - 1.0
        if self.config.encoding == "one_bit":
            return signed
        dims = xp.asarray(self.dims)
        out = xp.zeros((len(codes), self.dim), xp.float32)
        out[:, dims[: self.dim]] += 0.5 * signed[:, : self.dim]  # each bit half a level
        out[:, dims[self.dim :]] += 0.5 * signed[:, self.dim :]
        return out

    def _centre_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and std the thresholds were placed with (one_bit: 0 and 1)."""
        d = self.dim
        if self.config.encoding == "one_bit":
            return np.zeros(d, np.float32), np.ones(d, np.float32)
        low, high = self.thresholds[:d].copy(), np.empty(d, np.float32)
        if self.config.encoding == "two_bits":
            high[:] = self.thresholds[d:]
        else:  # odd dimensions: one threshold at the mean; their std is unknown (1)
            high[:] = low + 2 * TWO_BIT_Z
            high[::2] = self.thresholds[d:]
            centre = np.where(np.arange(d) % 2 == 0, (low + high) / 2, low)
            return centre, np.where(np.arange(d) % 2 == 0, (high - low) / (2 * TWO_BIT_Z), 1)
        return (low + high) / 2, np.maximum((high - low) / (2 * TWO_BIT_Z), 1e-12)

    def scan(self, codes: Any, norms: Any, queries: np.ndarray, k: int,
             mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self.config.query_encoding in ("scalar4bits", "scalar8bits"):
            levels = 15 if self.config.query_encoding == "scalar4bits" else 255
            return qk.levels_topk(codes, self._query_levels(queries, levels), self._levels,
                                  self.dim, k, self.metric, mask)
        return qk.binary_topk(codes, self.encode(queries), self.bits, k, self.metric, mask)

    def host_index(self, codes: np.ndarray) -> tuple[Any, np.ndarray] | None:
        return qk.faiss_binary(codes)

    def scan_index(self, index: Any, queries: np.ndarray, k: int, mask: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray] | None:
        if self.config.query_encoding in ("scalar4bits", "scalar8bits"):
            return None  # float queries against the codes' levels: numpy
        return qk.faiss_binary_topk(index, self.encode(queries), self.bits, k, self.metric,
                                    mask)

    def _query_levels(self, queries: np.ndarray, levels: int) -> np.ndarray:
        """The query standardised around the thresholds, then quantized to `levels` steps
        (Qdrant's asymmetric query encodings)."""
        centre, scale = self._centre_scale()
        q = (queries.astype(np.float32) - centre[None, :]) / np.maximum(scale, 1e-12)[None, :]
        lo, hi = q.min(axis=1, keepdims=True), q.max(axis=1, keepdims=True)
        step = np.maximum(hi - lo, 1e-12) / levels
        return (np.rint((q - lo) / step) * step + lo).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"thresholds": self.thresholds}

    def code_bytes(self) -> int:
        return (self.bits + 7) // 8


class ProductQuantizer(Quantizer):
    kind = "product"

    def __init__(self, config: QuantConfig, dim: int, metric: str,
                 centroids: np.ndarray) -> None:
        self.config, self.dim, self.metric = config, dim, metric
        self.centroids = np.ascontiguousarray(centroids, np.float32)  # (M, K, dsub)
        self.m, self.k, self.dsub = self.centroids.shape
        self._placed: dict[Any, Any] = {}

    @staticmethod
    def subquantizers(dim: int, compression: int) -> int:
        """M: the most sub-vectors (1 byte each) within 4·dim/compression bytes, dividing dim."""
        target = max(1, (4 * dim) // compression)
        return max(m for m in range(1, min(target, dim) + 1) if dim % m == 0)

    @classmethod
    def train(cls, config: QuantConfig, sample: np.ndarray, metric: str) -> ProductQuantizer:
        n, dim = sample.shape
        m = cls.subquantizers(dim, config.compression)
        nbits = max(1, min(8, int(math.log2(max(n // PQ_POINTS_PER_CENTROID, 2)))))
        x = np.ascontiguousarray(sample, np.float32)
        if faiss is not None and n >= (1 << nbits):
            pq = faiss.ProductQuantizer(dim, m, nbits)
            pq.verbose = False
            pq.cp.niter = 10  # Lloyd rounds per sub-space: codes are rescored anyway
            pq.train(x)
            cent = faiss.vector_to_array(pq.centroids).reshape(m, 1 << nbits, dim // m)
        else:
            cent = np.stack([_kmeans(x[:, j * (dim // m) : (j + 1) * (dim // m)], 1 << nbits)
                             for j in range(m)])
        return cls(config, dim, metric, cent)

    def encode(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), self.m), np.uint8)
        cn = (self.centroids * self.centroids).sum(axis=2)  # (M, K)
        for s in range(0, len(x), ENCODE_CHUNK):
            sub = x[s : s + ENCODE_CHUNK].astype(np.float32, copy=False)
            sub = sub.reshape(-1, self.m, self.dsub)
            d2 = cn[None] - 2.0 * np.einsum("nmd,mkd->nmk", sub, self.centroids)
            out[s : s + len(sub)] = d2.argmin(axis=2)
        return out

    def scan(self, codes: Any, norms: Any, queries: np.ndarray, k: int,
             mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        xp = xp_of(codes)
        cent = self._placed.get(xp)
        if cent is None:
            cent = self._placed[xp] = xp.asarray(self.centroids)
        return qk.pq_topk(codes, queries, cent, k, self.metric, mask)

    def host_index(self, codes: np.ndarray) -> tuple[Any, np.ndarray] | None:
        return qk.faiss_pq(codes, self.centroids, self.metric)

    def scan_index(self, index: Any, queries: np.ndarray, k: int, mask: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray] | None:
        if mask is not None:
            return None  # IndexPQ takes no IDSelector: numpy scans the codes it holds
        return qk.faiss_pq_topk(index, queries, k, self.metric)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids}

    def code_bytes(self) -> int:
        return self.m


def _kmeans(x: np.ndarray, k: int, iters: int = 12) -> np.ndarray:
    """Plain Lloyd's k-means (the fallback without faiss), deterministic seeding."""
    rng = np.random.default_rng(0)
    k = min(k, len(x))
    cent = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        d2 = (cent * cent).sum(axis=1)[None, :] - 2.0 * x @ cent.T
        assign = d2.argmin(axis=1)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(cent)
        np.add.at(sums, assign, x)
        nonempty = counts > 0
        cent[nonempty] = sums[nonempty] / counts[nonempty, None]
    return cent


ARRAY_KEYS = {"scalar": "range", "binary": "thresholds", "product": "centroids"}  # archives
_CLASSES: dict[str, type[Any]] = {"scalar": ScalarQuantizer, "binary": BinaryQuantizer,
                                  "product": ProductQuantizer}


def train(config: QuantConfig, rows: np.ndarray, metric: str) -> Quantizer:
    """Train a quantizer on (a deterministic sample of) `rows` (host, any float dtype)."""
    global _train_count
    n = len(rows)
    if n > SAMPLE_ROWS:
        pick = np.sort(np.random.default_rng(0).choice(n, SAMPLE_ROWS, replace=False))
        sample = np.asarray(rows[pick], np.float32)
    else:
        sample = np.asarray(rows, np.float32)
    q = _CLASSES[config.kind].train(config, sample, metric)
    with _count_lock:
        _train_count += 1
    return q


def same_codebook(a: Quantizer, b: Quantizer) -> bool:
    """Whether codes made by `a` are codes of `b` (same training, same arrays)."""
    if a is b:
        return True
    if a.config.train_key() != b.config.train_key() or a.dim != b.dim or a.metric != b.metric:
        return False
    x, y = a.arrays(), b.arrays()
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def rewrap(quantizer: Quantizer, config: QuantConfig) -> Quantizer:
    """The same trained quantizer under a config that differs only in what training ignores
    (query_encoding, always_ram)."""
    return from_arrays(config, quantizer.dim, quantizer.metric, quantizer.arrays())


def from_arrays(config: QuantConfig, dim: int, metric: str,
                arrays: dict[str, np.ndarray]) -> Quantizer:
    """A stored quantizer back (ValueError when its arrays do not fit the config)."""
    if config.kind == "scalar":
        r = np.asarray(arrays["range"], np.float64)
        if r.shape != (2,) or not np.isfinite(r).all():
            raise ValueError("bad scalar quantizer range")
        return ScalarQuantizer(config, dim, metric, float(r[0]), float(r[1]))
    if config.kind == "binary":
        t = np.asarray(arrays["thresholds"], np.float32)
        want = len(BinaryQuantizer._bit_dims(config.encoding, dim))
        if t.shape != (want,) or not np.isfinite(t).all():
            raise ValueError("bad binary quantizer thresholds")
        return BinaryQuantizer(config, dim, metric, t)
    c = np.asarray(arrays["centroids"], np.float32)
    if (c.ndim != 3 or c.shape[0] * c.shape[2] != dim or not 1 <= c.shape[1] <= 256
            or not np.isfinite(c).all()):
        raise ValueError("bad product quantizer centroids")
    return ProductQuantizer(config, dim, metric, c)


# ---- a segment's codes ---------------------------------------------------------------------


@dataclass(frozen=True)
class QuantizedRows:
    """Codes of a segment's leading `rows` rows of one vector (immutable: swapped whole)."""

    quantizer: Quantizer
    codes: Any  # (rows, code bytes) uint8, host or device
    norms: Any  # (rows,) float32 squared norms of decoded rows, or None
    rows: int
    on_device: bool = False  # the codes were placed with a device's array module
    # host codes: the faiss index that owns them (`codes` is a view of its bytes), or None
    index: Any = field(default=None, compare=False, repr=False)

    def scan(self, queries: np.ndarray, k: int, n: int, mask: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k over rows [0, min(rows, n)); `mask` covers those rows."""
        m = min(self.rows, n)
        if self.index is not None and m == self.rows:
            hit = self.quantizer.scan_index(self.index, queries, k, mask)
            if hit is not None:
                return hit
        norms = None if self.norms is None else self.norms[:m]
        return self.quantizer.scan(self.codes[:m], norms, queries, k, mask)

    def nbytes(self) -> int:
        return int(self.codes.nbytes) + (0 if self.norms is None else int(self.norms.nbytes))

    def host_codes(self) -> np.ndarray:
        return to_host(self.codes)

    def placed(self, xp: Any) -> QuantizedRows:
        """The same codes where `xp` keeps arrays (numpy: host memory)."""
        if xp is np and not self.on_device:
            return self
        norms = None if self.norms is None else to_host(self.norms)
        return _rows(self.quantizer, self.host_codes(), norms, self.rows, xp)


def _rows(quantizer: Quantizer, codes: np.ndarray, norms: np.ndarray | None, rows: int,
          xp: Any) -> QuantizedRows:
    """Host codes (and norms) as QuantizedRows where `xp` keeps arrays; on the host, held by
    a faiss index where faiss scans that kind (gpu/quantized.py)."""
    if xp is not np:
        return QuantizedRows(quantizer, xp.asarray(codes),
                             None if norms is None else xp.asarray(norms), rows, True)
    made = quantizer.host_index(codes)
    if made is None:
        return QuantizedRows(quantizer, codes, norms, rows)
    index, view = made
    return QuantizedRows(quantizer, view, norms, rows, False, index)


def encode_rows(quantizer: Quantizer, rows: np.ndarray, xp: Any = np,
                base: QuantizedRows | None = None) -> QuantizedRows:
    """Codes for host rows [0, len(rows)); with `base` (same quantizer), only the rows it
    lacks are encoded. `xp`: where the codes go (numpy or cupy)."""
    start = 0
    old_codes = old_norms = None
    if base is not None and base.quantizer is quantizer and base.rows <= len(rows):
        start = base.rows
        old_codes = base.host_codes()
        old_norms = None if base.norms is None else to_host(base.norms)
    new = quantizer.encode(np.asarray(rows[start:]))
    new_norms = quantizer.row_norms(new)
    codes = new if old_codes is None else np.concatenate([old_codes, new])
    norms = new_norms
    if new_norms is not None and old_norms is not None:
        norms = np.concatenate([old_norms, new_norms])
    return _rows(quantizer, codes, norms, len(rows), xp)


def from_codes(quantizer: Quantizer, codes: np.ndarray, xp: Any = np) -> QuantizedRows:
    """Stored codes (a snapshot's) back, checked against the quantizer."""
    width = quantizer.code_bytes() - (4 if isinstance(quantizer, ScalarQuantizer)
                                      and quantizer.metric == "l2" else 0)
    if codes.ndim != 2 or codes.dtype != np.uint8 or codes.shape[1] != width:
        raise ValueError("quantized codes do not fit their quantizer")
    if isinstance(quantizer, ProductQuantizer) and len(codes) and int(codes.max()) >= quantizer.k:
        raise ValueError("product codes out of range")
    return _rows(quantizer, codes, quantizer.row_norms(codes), len(codes), xp)


# ---- storage: one small .npz per quantized vector in the collection directory ---------------


def store_path(coll_path: str, name: str) -> str:
    return os.path.join(coll_path, f"quantizer-{name.encode().hex()}.npz")


def save(coll_path: str, name: str, quantizer: Quantizer) -> None:
    buf = io.BytesIO()
    np.savez(buf, key=np.array(repr(quantizer.config.train_key())),
             **quantizer.arrays())  # type: ignore[arg-type]  # numpy's stub: allow_pickle
    write_atomic(store_path(coll_path, name), buf.getvalue())


def load(coll_path: str, name: str, config: QuantConfig, dim: int, metric: str
         ) -> Quantizer | None:
    """The stored quantizer of a vector, if it is one for this config; None otherwise."""
    path = store_path(coll_path, name)
    if not os.path.exists(path):
        return None
    try:
        arrays = load_npz(path)
        if str(arrays.pop("key")) != repr(config.train_key()):
            return None
        return from_arrays(config, dim, metric, arrays)
    except (OSError, ValueError, KeyError):
        return None
