"""On-disk form of a segment, written from a frozen view.

    segments/<id>/ids.bin                  raw (kind, hi, lo) records, append-only
    segments/<id>/vec-<hexname>.bin        raw vector rows in storage dtype, append-only
    segments/<id>/sparse-<hexname>.ends    a sparse vector's rows (CSR, engine/sparse.py): each
    segments/<id>/sparse-<hexname>.idx     row's end offset (int64), then indices (uint32)
    segments/<id>/sparse-<hexname>.val     and values (float32), all append-only
    segments/<id>/multi-<hexname>.ends     a multivector's rows (engine/multivector.py): each
    segments/<id>/multi-<hexname>.tok      row's end offset (int64), then its token vectors
                                           (float32, row-major (t, dim)), both append-only
    segments/<id>/masks.<gen>.npz          deleted, versions, present-<hexname>
    segments/<id>/payloads.<gen>.json      list of payload dicts
    segments/<id>/hnsw-<hexname>.npz       HNSW graph over the leading rows (engine/ann.py),
                                           written by the background indexer; ignored on load
                                           if it covers more rows than were committed
    segments/<id>/ivf-<hexname>.npz        a FAISS IVF/CAGRA index (engine/ivf.py), serialised
                                           CPU form + the fingerprint of the rows it covers
    segments/<id>/quant-<hexname>.npz      quantized codes of the leading rows, their
                                           quantizer's arrays and the rows' fingerprint
                                           (engine/quantization.py); re-encoded if they
                                           no longer fit on load
    blobs/<uuid>.snapshot                  a recovered snapshot archive (hard-linked, never
                                           copied): segments whose state.json entry has a
                                           `blob` map their ids and vectors from it at the
                                           recorded offsets and have no ids/vec files; their
                                           masks and payloads too while `gen` / `payload_gen`
                                           are null (until they first change); it is deleted
                                           once no committed segment refers to it

Appends go past the row count the collection's state.json records, and the state file is
the commit point: rows beyond it (from a crashed flush) are truncated away on load.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

import numpy as np

from engine import jsonio
from engine.durable import append_durable, atomic_writer, being_written, fsync_dir, io_error
from engine.ids import ID_DTYPE
from engine.multivector import MultiBatch, empty_batch
from engine.npy import load_npz
from engine.segment import STORAGE_DTYPES, FrozenSegment
from engine.sparse import SparseBatch

SPARSE_PARTS = (("ends", np.int64), ("idx", np.uint32), ("val", np.float32))


def vec_file(name: str) -> str:
    return f"vec-{name.encode().hex()}.bin"


def sparse_file(name: str, part: str) -> str:
    return f"sparse-{name.encode().hex()}.{part}"


def multi_file(name: str, part: str) -> str:
    return f"multi-{name.encode().hex()}.{part}"


def _raw(a: np.ndarray) -> memoryview | bytes:
    """The array's bytes without a copy (written straight from the array's buffer)."""
    a = np.ascontiguousarray(a)
    return a.data.cast("B") if a.size else b""


def _truncate_to(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) != size:
        with open(path, "r+b") as f:
            f.truncate(size)
            os.fsync(f.fileno())


def write_segment(seg_dir: str, frozen: FrozenSegment, flushed_n: int, gen: int,
                  payload_gen: int | None) -> None:
    """Persist rows [flushed_n, n) and the current masks; payloads if `payload_gen` given."""
    try:
        os.makedirs(seg_dir, exist_ok=True)
        n = frozen.n
        if n > flushed_n:  # new rows (never for sealed segments, whose files are complete)
            ids_path = os.path.join(seg_dir, "ids.bin")
            _truncate_to(ids_path, flushed_n * ID_DTYPE.itemsize)
            append_durable(ids_path, _raw(frozen.id_recs[flushed_n:n]))
            for name in frozen.matrices:
                path = os.path.join(seg_dir, vec_file(name))
                host = frozen.host_rows(name, flushed_n)
                _truncate_to(path, flushed_n * host.dtype.itemsize * host.shape[1])
                append_durable(path, _raw(host))
            for name, csr in frozen.sparse.items():
                base = int(csr.indptr[flushed_n])
                parts = {"ends": csr.indptr[flushed_n + 1 : n + 1], "idx": csr.indices[base:],
                         "val": csr.values[base:]}
                for part, dt in SPARSE_PARTS:
                    path = os.path.join(seg_dir, sparse_file(name, part))
                    keep = flushed_n if part == "ends" else base
                    _truncate_to(path, keep * np.dtype(dt).itemsize)
                    append_durable(path, _raw(parts[part].astype(dt, copy=False)))
            for name, mb in frozen.multi.items():
                base = int(mb.offsets[flushed_n])
                dim = mb.tokens.shape[1]
                path = os.path.join(seg_dir, multi_file(name, "ends"))
                _truncate_to(path, flushed_n * 8)
                append_durable(path, _raw(mb.offsets[flushed_n + 1 : n + 1]))
                path = os.path.join(seg_dir, multi_file(name, "tok"))
                _truncate_to(path, base * dim * 4)
                append_durable(path, _raw(mb.tokens[base:]))
        masks: dict[str, np.ndarray] = {"deleted": frozen.deleted, "versions": frozen.versions}
        for name, p in frozen.present.items():
            masks[f"present-{name.encode().hex()}"] = p
        with atomic_writer(os.path.join(seg_dir, f"masks.{gen}.npz")) as f:
            buf = io.BytesIO()
            # numpy's stub lets **kwds fill `allow_pickle: bool`; these keys never do
            np.savez(buf, **masks)  # type: ignore[arg-type]
            f.write(buf.getvalue())
        if payload_gen is not None:
            with atomic_writer(os.path.join(seg_dir, f"payloads.{payload_gen}.json")) as f:
                f.write(jsonio.dumps(frozen.payloads))
        fsync_dir(seg_dir)
    except OSError as exc:
        raise io_error(exc, "flushing segment") from exc


def _read_sparse(seg_dir: str, name: str, n: int, blob: dict[str, Any] | None,
                 blob_path: str) -> SparseBatch:
    """A sparse vector's committed rows; none stored (a segment written before the vector
    had rows, or a 1.0 archive): every row empty."""
    indptr = np.zeros(n + 1, np.int64)
    empty = SparseBatch(indptr, np.empty(0, np.uint32), np.empty(0, np.float32))
    if not n:
        return empty
    if blob is not None:
        where = (blob.get("sparse") or {}).get(name.encode().hex())
        if where is None:
            return empty
        indptr[1:] = np.fromfile(blob_path, np.int64, n, offset=where["ends"])
        nnz = int(indptr[-1])
        return SparseBatch(indptr, np.fromfile(blob_path, np.uint32, nnz, offset=where["idx"]),
                           np.fromfile(blob_path, np.float32, nnz, offset=where["val"]))
    ends_path = os.path.join(seg_dir, sparse_file(name, "ends"))
    if not os.path.exists(ends_path):
        return empty
    _truncate_to(ends_path, n * 8)
    indptr[1:] = np.fromfile(ends_path, np.int64, n)
    nnz = int(indptr[-1])
    arrays = []
    for part, dt in SPARSE_PARTS[1:]:
        path = os.path.join(seg_dir, sparse_file(name, part))
        _truncate_to(path, nnz * np.dtype(dt).itemsize)
        arrays.append(np.fromfile(path, dt, nnz))
    return SparseBatch(indptr, arrays[0], arrays[1])


def _read_multi(seg_dir: str, name: str, dim: int, n: int, blob: dict[str, Any] | None,
                blob_path: str) -> MultiBatch:
    """A multivector's committed rows; none stored (an archive without it): every row empty."""
    empty = empty_batch(dim, n)
    if not n:
        return empty
    offsets = np.zeros(n + 1, np.int64)
    if blob is not None:
        where = (blob.get("multi") or {}).get(name.encode().hex())
        if where is None:
            return empty
        offsets[1:] = np.fromfile(blob_path, np.int64, n, offset=where["ends"])
        t = int(offsets[-1])
        return MultiBatch(offsets, np.fromfile(blob_path, np.float32, t * dim,
                                               offset=where["tok"]).reshape(t, dim))
    ends_path = os.path.join(seg_dir, multi_file(name, "ends"))
    if not os.path.exists(ends_path):
        return empty
    _truncate_to(ends_path, n * 8)
    offsets[1:] = np.fromfile(ends_path, np.int64, n)
    t = int(offsets[-1])
    tok_path = os.path.join(seg_dir, multi_file(name, "tok"))
    _truncate_to(tok_path, t * dim * 4)
    return MultiBatch(offsets, np.fromfile(tok_path, np.float32, t * dim).reshape(t, dim))


def read_segment(seg_dir: str, meta: dict[str, Any], specs: dict[str, Any],
                 sparse_names: tuple[str, ...] = (),
                 multi_specs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read exactly the committed rows of a segment (truncating any uncommitted tail)."""
    n = int(meta["n"])
    blob = meta.get("blob")
    blob_path = ""
    if blob is not None:
        blob_path = os.path.join(os.path.dirname(os.path.dirname(seg_dir)), BLOBS, blob["file"])
        id_recs = np.fromfile(blob_path, ID_DTYPE, n, offset=blob["ids"])
    else:
        ids_path = os.path.join(seg_dir, "ids.bin")
        _truncate_to(ids_path, n * ID_DTYPE.itemsize)
        id_recs = np.fromfile(ids_path, dtype=ID_DTYPE, count=n) if n else np.zeros(0, ID_DTYPE)
    vectors: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        dt = np.dtype(STORAGE_DTYPES[spec.datatype])
        if not n:
            vectors[name] = np.zeros((0, spec.size), dt)
            continue
        if blob is not None:
            path, offset = blob_path, blob["vectors"][name.encode().hex()]
        else:
            path, offset = os.path.join(seg_dir, vec_file(name)), 0
            _truncate_to(path, n * spec.size * dt.itemsize)
        # mapped, not read: a sealed host segment serves it from the page cache, anything
        # else copies it once, straight to its final home
        vectors[name] = np.memmap(path, dtype=dt, mode="r", shape=(n, spec.size), offset=offset)
    if meta["gen"] is None:  # never changed since recovery: the archive's members
        assert blob is not None  # gen None is only ever written for archive-backed segments
        masks = {"deleted": np.fromfile(blob_path, np.bool_, n, offset=blob["deleted"]),
                 "versions": np.fromfile(blob_path, np.uint64, n, offset=blob["versions"])}
        for hx, offset in blob["present"].items():
            masks[f"present-{hx}"] = np.fromfile(blob_path, np.bool_, n, offset=offset)
    else:
        masks = load_npz(os.path.join(seg_dir, f"masks.{meta['gen']}.npz"))
    if meta["payload_gen"] is None:  # never changed since recovery: the archive's member
        assert blob is not None  # as gen: None only for archive-backed segments
        offset, size = blob["payloads"]
        with open(blob_path, "rb") as f:
            f.seek(offset)
            payloads = jsonio.loads(f.read(size))
    else:
        with open(os.path.join(seg_dir, f"payloads.{meta['payload_gen']}.json"), "rb") as f:
            payloads = jsonio.loads(f.read())
    present = {name: masks.get(f"present-{name.encode().hex()}", np.zeros(n, bool))
               for name in [*specs, *sparse_names, *(multi_specs or {})]}
    sparse = {name: _read_sparse(seg_dir, name, n, blob, blob_path) for name in sparse_names}
    multi = {name: (spec, _read_multi(seg_dir, name, spec.size, n, blob, blob_path))
             for name, spec in (multi_specs or {}).items()}
    return {"id_recs": id_recs, "vectors": vectors, "deleted": masks["deleted"],
            "versions": masks["versions"], "present": present, "payloads": payloads,
            "blob": blob, "sparse": sparse, "multi": multi}


BLOBS = "blobs"  # next to segments/: recovered archives segments map their rows from


def prune_blobs(coll_dir: str, metas: Any) -> None:
    """Delete recovered archives no committed segment refers to any more (vacuumed away).
    Open memory maps keep the data readable until their readers finish."""
    blob_dir = os.path.join(coll_dir, BLOBS)
    if not os.path.isdir(blob_dir):
        return
    used = {m["blob"]["file"] for m in metas if m.get("blob")}
    for name in os.listdir(blob_dir):
        if name not in used:
            try:
                os.unlink(os.path.join(blob_dir, name))
            except OSError:
                pass


GRAPH_KEYS = ("levels", "offsets", "neighbors", "entry")


def graph_file(name: str) -> str:
    return f"hnsw-{name.encode().hex()}.npz"


def ids_fingerprint(id_recs: np.ndarray) -> np.ndarray:
    """sha256 of the id records a graph covers: proves, after WAL replay rebuilt rows that
    were never flushed, that the graph still describes the same rows."""
    return np.frombuffer(hashlib.sha256(np.ascontiguousarray(id_recs).tobytes()).digest(),
                         dtype=np.uint8)


def _write_npz(seg_dir: str, file: str, what: str, id_recs: np.ndarray,
               arrays: dict[str, Any]) -> None:
    """Persist `arrays` plus the covered rows' `ids_sha` as one .npz next to its segment,
    atomically: temp file → fsync → rename → directory fsync (engine.durable.atomic_writer),
    then the directory once more. An OSError becomes the engine's error for `what`."""
    try:
        os.makedirs(seg_dir, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, ids_sha=ids_fingerprint(id_recs), **arrays)
        with atomic_writer(os.path.join(seg_dir, file)) as f:
            f.write(buf.getvalue())
        fsync_dir(seg_dir)
    except OSError as exc:
        raise io_error(exc, f"writing {what}") from exc


def write_graph(seg_dir: str, name: str, graph: dict[str, np.ndarray],
                id_recs: np.ndarray) -> None:
    """Persist an index's graph atomically (temp file → rename → directory fsync)."""
    _write_npz(seg_dir, graph_file(name), "an HNSW graph", id_recs,
               {k: graph[k] for k in GRAPH_KEYS})


def read_graph(seg_dir: str, name: str) -> dict[str, np.ndarray] | None:
    path = os.path.join(seg_dir, graph_file(name))
    if not os.path.exists(path):
        return None
    z = load_npz(path)
    return {k: z[k] for k in (*GRAPH_KEYS, "ids_sha")}


def ivf_file(name: str) -> str:
    return f"ivf-{name.encode().hex()}.npz"


def write_ivf(seg_dir: str, name: str, blob: np.ndarray, id_recs: np.ndarray) -> None:
    """Persist a FAISS IVF/CAGRA index (its serialised CPU form, engine/ivf.py) atomically."""
    _write_npz(seg_dir, ivf_file(name), "an IVF index", id_recs, {"blob": blob})


def read_ivf(seg_dir: str, name: str) -> dict[str, np.ndarray] | None:
    """The stored IVF record (blob, ids_sha), or None: none stored. A damaged file raises
    ValueError (the caller rebuilds the index in the background)."""
    path = os.path.join(seg_dir, ivf_file(name))
    if not os.path.exists(path):
        return None
    z = load_npz(path, "IVF file")
    return {k: z[k] for k in ("blob", "ids_sha")}


def codes_file(name: str) -> str:
    return f"quant-{name.encode().hex()}.npz"


def write_codes(seg_dir: str, name: str, codes: np.ndarray, id_recs: np.ndarray,
                train_key: str, quantizer: dict[str, np.ndarray]) -> None:
    """Persist a segment's quantized codes atomically (a restart adopts them, no re-encoding),
    with the quantizer they were made by (`train_key` and its arrays, as `q-<key>`)."""
    _write_npz(seg_dir, codes_file(name), "quantized codes", id_recs,
               {"codes": np.asarray(codes), "key": np.array(train_key),
                **{f"q-{k}": v for k, v in quantizer.items()}})


def read_codes(seg_dir: str, name: str) -> dict[str, np.ndarray] | None:
    """The stored codes record (codes, ids_sha, key, q-<key>...), or None: none stored.
    A damaged file raises ValueError (the caller re-encodes)."""
    path = os.path.join(seg_dir, codes_file(name))
    if not os.path.exists(path):
        return None
    return load_npz(path, "codes file")


def prune_generations(seg_dir: str, gen: int | None, payload_gen: int | None) -> None:
    """Remove mask/payload files of older generations and temp files left by interrupted
    writes (not one being written now: the indexer writes its files next to these)."""
    if not os.path.isdir(seg_dir):
        return  # a recovered segment still entirely in its archive
    keep = {f"masks.{gen}.npz", f"payloads.{payload_gen}.json", "ids.bin"}
    for name in os.listdir(seg_dir):
        if name in keep or name.startswith(("vec-", "hnsw-", "ivf-", "sparse-", "multi-",
                                            "quant-")):
            continue
        if name.startswith(("masks.", "payloads.")) or (
                name.startswith(".tmp-") and not being_written(name)):
            try:
                os.unlink(os.path.join(seg_dir, name))
            except OSError:
                pass
