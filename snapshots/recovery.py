"""Collection recovery: from a file inside the snapshots dir, an http(s) URL, or an upload.

The archive is never extracted. It is hard-linked (copied only across filesystems) into the
new collection's `blobs/` directory in a staging directory on the storage filesystem, then
validated in place (snapshots.scan: structure, checksum, every member's sha256, every array
against the archive's config), and the new collection's segments map their ids and vectors
straight from it: recovering a file writes only masks, payloads and metadata, and needs no
second copy of the data on disk. The staged collection is swapped in under the catalog lock
(Catalog.install); on any failure the old collection keeps serving and the staging directory
is removed (or, after a crash, wiped at start-up).

Every recovery is a task (engine.tasks, kind snapshot_recover, `source` file, url, upload or
startup): phase staging, verifying (bytes_done counts archive bytes hashed, bytes_total the
archive's size), installing. A URL's download is a child task (url_download). Cancelling
(DELETE /tasks/{id}) stops it at its next chunk, anywhere before the swap: the staging
directory goes and the existing collection, if any, was never touched. The swap is the point
of no return: from `installing` on, cancellation is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import traceback
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import numpy as np

from engine import ann, ivf, jsonio, quantization, tasks
from engine.catalog import Catalog, validate_name
from engine.collection import INDEX_TYPES, Collection
from engine.config import from_state
from engine.durable import fsync_dir, io_error
from engine.errors import (
    AlreadyExists,
    BadInput,
    BadRequest,
    EngineError,
    Forbidden,
    Unprocessable,
)
from engine.ids import ID_DTYPE
from engine.multivector import MultiBatch, empty_batch
from engine.segment import STORAGE_DTYPES
from engine.segment_store import BLOBS, GRAPH_KEYS
from engine.sparse import SparseBatch
from snapshots.archive import CHUNK, SnapshotFormatError
from snapshots.scan import Scanned, Verifier, all_finite, read_headers

IVF_PARTS = ("meta", "coarse", "pq")  # ivf-<hex>-<part>.npy members (engine/ivf.py arrays())

PRIORITIES = ("replica", "snapshot", "no_sync")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


def check_priority(priority: Any) -> str:
    if priority is None:
        return "snapshot"  # Qdrant's current default
    if priority not in PRIORITIES:
        raise BadRequest(f"unknown variant `{priority}`, expected one of `no_sync`, `snapshot`, "
                         "`replica`")
    return priority


def check_checksum(checksum: Any) -> str | None:
    if checksum is None:
        return None
    if not isinstance(checksum, str) or not _SHA256.match(checksum):
        raise Unprocessable(f"Validation error: [checksum: invalid_sha256_hash: {checksum!r}]")
    return checksum.lower()


MAX_REDIRECTS = 5


class Recovery:
    def __init__(self, catalog: Catalog, snapshots_root: str, url_recovery: bool = True,
                 download_timeout_s: float = 60.0, url_allowed_hosts: list[str] | None = None,
                 url_max_bytes: int | None = None) -> None:
        self.catalog = catalog
        self.root = os.path.realpath(snapshots_root)
        self.url_recovery = url_recovery
        self.download_timeout_s = download_timeout_s  # also the idle (between bytes) timeout
        self.url_allowed_hosts = (None if url_allowed_hosts is None
                                  else {h.lower() for h in url_allowed_hosts})
        self.url_max_bytes = url_max_bytes

    # ---- locations -----------------------------------------------------------------------

    def local_path(self, location: str) -> str:
        url = urlparse(location)
        if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
            raise BadRequest("Invalid snapshot URI, file path must be absolute or on localhost")
        path = unquote(url.path)
        real = os.path.realpath(path)
        # confinement first, so the answer never tells whether a path outside exists
        if os.path.commonpath([real, self.root]) != self.root:
            raise Forbidden(f'Snapshot file path must be inside the snapshots directory "{self.root}"')
        if not os.path.isfile(real):
            raise BadRequest(f'Snapshot file "{path}" does not exist')
        return real

    def download(self, location: str, dest: str, api_key: str | None) -> None:
        """Stream a snapshot from an http(s) URL into `dest`: redirects are followed by hand
        (at most MAX_REDIRECTS) and every hop re-checked (scheme, allow-list); the `api-key`
        header goes to the original host only; the read timeout is an idle timeout; the body
        may not exceed `url_max_bytes` nor the free space."""
        if not self.url_recovery:
            raise Forbidden("Snapshot recovery from remote URLs is disabled in the configuration")
        timeout = httpx.Timeout(self.download_timeout_s, connect=10.0)
        origin = urlparse(location).netloc.lower()
        limit = shutil.disk_usage(os.path.dirname(dest)).free
        if self.url_max_bytes:
            limit = min(limit, self.url_max_bytes)
        url = location
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False) as client:
                for _hop in range(MAX_REDIRECTS + 1):
                    self._check_url(url)
                    same_host = urlparse(url).netloc.lower() == origin
                    headers = {"api-key": api_key} if api_key and same_host else {}
                    with client.stream("GET", url, headers=headers) as r:
                        if r.is_redirect and "location" in r.headers:
                            url = str(r.url.join(r.headers["location"]))
                            continue
                        if r.status_code // 100 != 2:
                            raise BadInput(f"Failed to download tar from {location}: status - "
                                           f"{r.status_code} {r.reason_phrase}")
                        declared = int(r.headers.get("content-length") or 0)
                        if declared > limit:
                            raise self._too_big(location, limit)
                        got = 0
                        with tasks.registry.run("url_download", tasks_collection(),
                                                total=declared or None, cancellable=True
                                                ) as task, open(dest, "wb") as f:
                            for chunk in r.iter_bytes(CHUNK):
                                got += len(chunk)
                                if got > limit:
                                    raise self._too_big(location, limit)
                                f.write(chunk)
                                task.advance(len(chunk))
                        return
                raise BadInput(f"Failed to download tar from {location}: more than "
                               f"{MAX_REDIRECTS} redirects")
        except httpx.HTTPError as exc:
            raise BadInput(f"Failed to download tar from {location}: {exc}") from None
        except OSError as exc:  # writing it: a full disk is 507, not a 500
            raise io_error(exc, "downloading the snapshot") from exc

    def _check_url(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme.lower() not in ("http", "https"):
            raise BadInput(f"Failed to download tar from {url}: only http(s) URLs are followed")
        host = (parsed.hostname or "").lower()
        if self.url_allowed_hosts is not None and host not in self.url_allowed_hosts \
                and parsed.netloc.lower() not in self.url_allowed_hosts:
            raise Forbidden(f"Snapshot recovery from host {host!r} is not allowed "
                            "(storage.snapshot_url_allowed_hosts)")

    def _too_big(self, location: str, limit: int) -> BadInput:
        return BadInput(f"Failed to download tar from {location}: larger than {limit} bytes "
                        "(storage.snapshot_url_max_bytes, or the free space)")

    # ---- recover ---------------------------------------------------------------------------

    def recover_location(self, collection: str, body: dict[str, Any],
                         into: Callable[[str, str | None], bool] | None = None) -> bool:
        """Qdrant's recover body (`location`: file:// inside the snapshots dir, or http(s);
        `priority`, `checksum`, `api_key`) checked, the archive fetched, then recovered by
        `into(path, checksum)` (default: this node's `recover_file`; a cluster re-shards)."""
        validate_name(collection)
        if into is None:
            def into(path: str, checksum: str | None) -> bool:
                return self.recover_file(collection, path, checksum)
        location = body.get("location")
        if not isinstance(location, str) or not location:
            raise BadRequest("Format error in JSON body: `location` must be a URL string")
        check_priority(body.get("priority"))
        checksum = check_checksum(body.get("checksum"))
        scheme = urlparse(location).scheme.lower()
        if scheme == "file":
            return into(self.local_path(location), checksum)
        if scheme in ("http", "https"):
            with _recovery_task(collection, "url") as task:
                task.set_phase("downloading")
                staging = self.catalog.staging_dir()
                try:
                    path = os.path.join(staging, "download.snapshot")
                    self.download(location, path, body.get("api_key"))
                    return into(path, checksum)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        if not scheme:
            raise BadRequest("Format error in JSON body: relative URL without a base")
        raise BadRequest(f"URL {location} with scheme {scheme} is not supported")

    def recover_file(self, collection: str, path: str, checksum: str | None, base: int = 0,
                     length: int | None = None, source: str = "file") -> bool:
        """Recover from the archive at `path` (or nested in it at `base`, `length` bytes)."""
        validate_name(collection)
        with _recovery_task(collection, source) as task:
            return self._recover_file(task, collection, path, checksum, base, length)

    def _recover_file(self, task: tasks.Task, collection: str, path: str,
                      checksum: str | None, base: int, length: int | None) -> bool:
        task.set_phase("staging")
        staging = self.catalog.staging_dir()
        scanned = segments = built = None
        try:
            built_path = os.path.join(staging, "collection")
            blob_name = f"{uuid.uuid4().hex}.snapshot"
            blob = os.path.join(built_path, BLOBS, blob_name)
            os.makedirs(os.path.dirname(blob))
            # first: what is validated is what the collection keeps
            base = adopt_archive(path, blob, base, length)
            size = length if length is not None else os.path.getsize(blob) - base
            task.set_total(size)
            task.set_phase("verifying")
            try:
                # the collection is built in staging while the archive is hashed; it is
                # installed only once every hash matched
                with Verifier(blob, checksum, base, length, progress=task.advance) as verifier:
                    scanned = read_headers(blob, base, length)
                    verifier.check_members(scanned)
                    manifest = scanned.manifest
                    seq = manifest.get("seq")
                    if not isinstance(seq, int) or isinstance(seq, bool) \
                            or not 0 <= seq < (1 << 63):
                        raise SnapshotFormatError(f"Invalid snapshot: bad sequence number "
                                                  f"{seq!r}")
                    config_state, schema = self._target_config(collection, manifest)
                    segments = self._segments(scanned, config_state, blob_name)
                    task.checkpoint()
                    built = Collection.build(collection, built_path, config_state, schema,
                                             segments, seq, self.catalog.wal_fsync)
                    task.checkpoint()
                    _check_unique_ids(built)
                    verifier.wait()
                    _check_finite(scanned, segments)
                segments = None
                # the point of no return: a cancellation asked for until here wins (and
                # nothing was touched); from here on it is refused
                task.irreversible("installing")
                self.catalog.install(collection, built_path, replace=True, built=built)
            except BaseException:
                if built is not None:
                    built.close(flush=False)
                raise
        except BaseException as exc:
            # the traceback's finished frames hold memory maps of the staged archive; clearing
            # them frees its disk space now (when it was copied), not at the next collection
            traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            # this frame outlives the call in the traceback: its maps must not
            scanned = segments = built = None  # noqa: F841
            shutil.rmtree(staging, ignore_errors=True)
        return True

    def _target_config(self, collection: str, manifest: dict[str, Any]
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The snapshot's config for a new collection; for an existing one, its own config,
        provided the vectors match (else 400 and nothing changes)."""
        snap_state = manifest.get("config")
        try:
            snap_cfg = from_state(snap_state if isinstance(snap_state, dict) else {})
        except EngineError as exc:
            raise SnapshotFormatError(f"Invalid snapshot: bad collection config ({exc})") from None
        schema = _check_schema(manifest.get("payload_schema") or {})
        if collection not in self.catalog.collections:
            return snap_state, schema  # type: ignore[return-value]
        live = self.catalog.collections[collection]
        if (snap_cfg.vectors != live.config.vectors
                or snap_cfg.multivectors != live.config.multivectors):
            raise BadInput("Snapshot is not compatible with existing collection: Collection "
                           f"vectors: {jsonio.dumps(live.config.vectors_echo).decode()} Snapshot "
                           f"Vectors: {jsonio.dumps(snap_cfg.vectors_echo).decode()}")
        return live.config.to_state(), dict(live.payload_schema)

    def _segments(self, scanned: Scanned, config_state: dict[str, Any], blob_name: str
                  ) -> list[tuple[dict[str, Any], bool]]:
        """Every archive segment as host arrays: small ones read, vectors mapped from the
        archive. All are sealed (their rows live in the archive and never change); new
        points go to a fresh segment."""
        cfg = from_state(config_state)
        out = []
        segs = scanned.manifest.get("segments")
        if not isinstance(segs, list):
            raise SnapshotFormatError("Invalid snapshot: bad segment list")
        indexes = [s.get("index") if isinstance(s, dict) else None for s in segs]
        if indexes != list(range(len(segs))):
            raise SnapshotFormatError("Invalid snapshot: segments must be numbered 0..n-1")
        for seg in segs:
            tasks.checkpoint()
            if not isinstance(seg.get("n"), int) or not 0 <= seg["n"] < (1 << 32):
                raise SnapshotFormatError("Invalid snapshot: bad segment entry")
            n, base = seg["n"], f"segments/{seg['index']}/"
            ids = scanned.array(base + "ids.npy")
            deleted = scanned.array(base + "deleted.npy")
            versions = scanned.array(base + "versions.npy")
            _expect(ids, ID_DTYPE, (n,), "ids")
            if n and ids["kind"].max() > 1:
                raise SnapshotFormatError("Invalid snapshot: unknown point id kind")
            _expect(deleted, np.dtype(bool), (n,), "deleted")
            _expect(versions, np.dtype(np.uint64), (n,), "versions")
            pay = scanned.members[base + "payloads.json"]
            ref: dict[str, Any] = {"file": blob_name, "payloads": [pay.offset, pay.size],
                                   "vectors": {}, "present": {}}
            for key in ("ids", "deleted", "versions"):
                ref[key] = scanned.npy(f"{base}{key}.npy").data_offset
            vectors, present, digests, members = {}, {}, {}, {}
            for name, spec in cfg.vectors.items():
                hx = name.encode().hex()
                member = members[name] = f"{base}vectors-{hx}.npy"
                arr = scanned.array(member, mmap=True)
                _expect(arr, np.dtype(STORAGE_DTYPES[spec.datatype]), (n, spec.size),
                        f"vectors {name!r}")
                vectors[name] = arr
                ref["vectors"][hx] = scanned.npy(member).data_offset
                if scanned.members_hashed:  # proven below, so later snapshots reuse it
                    digests[name] = scanned.sha256[member]
                present[name] = scanned.array(f"{base}present-{hx}.npy")
                ref["present"][hx] = scanned.npy(f"{base}present-{hx}.npy").data_offset
                _expect(present[name], np.dtype(bool), (n,), f"present {name!r}")
            sparse = {}
            ref["sparse"] = {}
            for name in cfg.sparse_vectors:
                sparse[name], where = _sparse_rows(scanned, base, name, n)
                hx = name.encode().hex()
                if where is not None:
                    ref["sparse"][hx] = where
                present[name] = _optional_present(scanned, base, name, n, ref)
            multi = {}
            ref["multi"] = {}
            for name, mspec in cfg.multivectors.items():
                hx = name.encode().hex()
                mbatch, mwhere = _multi_rows(scanned, base, name, mspec.size, n)
                multi[name] = (mspec, mbatch)
                if mwhere is not None:
                    ref["multi"][hx] = mwhere
                present[name] = _optional_present(scanned, base, name, n, ref)
            ann_indexes = self._graphs(scanned, base, cfg, vectors)
            quantized = self._quantized(scanned, base, cfg, n)
            try:
                payloads = jsonio.loads(scanned.read(base + "payloads.json"))
            except jsonio.JSONDecodeError:
                raise SnapshotFormatError("Invalid snapshot: payloads are not JSON") from None
            if not isinstance(payloads, list) or len(payloads) != n \
                    or not set(map(type, payloads)) <= {dict}:
                raise SnapshotFormatError("Invalid snapshot: payloads do not match the segment")
            if n == 0:
                continue  # an empty appendable segment: the collection gets a fresh one
            out.append(({"id_recs": ids, "vectors": vectors, "present": present,
                         "deleted": deleted, "versions": versions, "payloads": payloads,
                         "ann": ann_indexes, "blob": ref, "digests": digests, "sparse": sparse,
                         "multi": multi, "quantized": quantized,
                         "vector_members": members}, True))
        return out

    @staticmethod
    def _quantized(scanned: Scanned, base: str, cfg: Any, n: int) -> dict[str, Any]:
        """Quantized codes and their quantizer, as the archive carries them (no training)."""
        out: dict[str, Any] = {}
        for name, qcfg in cfg.quantization.items():
            hx = name.encode().hex()
            codes = f"{base}quant-{hx}-codes.npy"
            key = quantization.ARRAY_KEYS[qcfg.kind]
            if not scanned.has(codes) or not scanned.has(f"{base}quant-{hx}-{key}.npy"):
                continue  # quantized after the snapshot, or never: encoded in the background
            spec = cfg.vectors[name]
            try:
                q = quantization.from_arrays(qcfg, spec.size, spec.distance.metric,
                                             {key: scanned.array(f"{base}quant-{hx}-{key}.npy")})
                rec = quantization.from_codes(q, scanned.array(codes))
            except (ValueError, TypeError, KeyError) as exc:
                raise SnapshotFormatError(f"Invalid snapshot: quantization of {name!r}: {exc}"
                                          ) from None
            if rec.rows > n:
                raise SnapshotFormatError(f"Invalid snapshot: quantized codes of {name!r} "
                                          "cover more rows than the segment")
            out[name] = rec
        return out

    @staticmethod
    def _graphs(scanned: Scanned, base: str, cfg: Any, vectors: dict[str, np.ndarray]
                ) -> dict[str, Any]:
        """HNSW indexes the archive carries, rebuilt from their graphs (no construction)."""
        out: dict[str, Any] = {}
        m = int(cfg.hnsw_config.get("m") or 0)
        ef = int(cfg.hnsw_config.get("ef_construct") or 100)
        for name, spec in cfg.vectors.items():
            hx = name.encode().hex()
            parts = {key: f"{base}ivf-{hx}-{key}.npy" for key in IVF_PARTS}
            if any(scanned.has(member) for member in parts.values()):
                # a FAISS IVF index as plain arrays: checked, re-filled, never retrained
                if ann.available():
                    try:
                        arrays = {key: scanned.array(member) for key, member in parts.items()
                                  if scanned.has(member)}
                        out[name] = ivf.IvfIndex.from_arrays(arrays, vectors[name],
                                                             spec.distance.metric,
                                                             ivf.configured())
                    except (ValueError, TypeError) as exc:  # ivf.IvfError included
                        raise SnapshotFormatError(f"Invalid snapshot: IVF index for {name!r}: "
                                                  f"{exc}") from None
                continue
            members = {key: f"{base}hnsw-{hx}-{key}.npy" for key in GRAPH_KEYS}
            have = [scanned.has(member) for member in members.values()]
            if not any(have):
                continue
            if not all(have):
                raise SnapshotFormatError(f"Invalid snapshot: incomplete HNSW graph for {name!r}")
            if not ann.available():
                continue  # faiss missing here: searches stay exact, nothing is lost
            graph = {key: scanned.array(member) for key, member in members.items()}
            try:
                out[name] = ann.HnswIndex.from_graph(vectors[name], graph, spec.distance.metric,
                                                     m, ef)
            except (ann.GraphError, ValueError, TypeError) as exc:
                raise SnapshotFormatError(f"Invalid snapshot: HNSW graph for {name!r}: {exc}"
                                          ) from None
        return out


def tasks_collection() -> str | None:
    """The collection of the task this thread works for (a child task's label)."""
    task = tasks.current()
    return task.collection if task is not None else None


def _recovery_task(collection: str, source: str) -> Any:
    """The recovery's task: the thread's own when a recovery already runs it (a URL's,
    downloaded first, then recovered from the file), else a new one."""
    task = tasks.current()
    if task is not None and task.kind == "snapshot_recover" and task.claimed \
            and task.outcome == tasks.RUNNING:
        return nullcontext(task)
    return tasks.registry.run("snapshot_recover", collection, cancellable=True, source=source)


def adopt_archive(src: str, dest: str, base: int = 0, length: int | None = None) -> int:
    """Make `dest` a durable copy of the archive `src` (or of its `length` bytes at `base`)
    without copying it when possible: a hard link shares its blocks (snapshot files are never
    modified in place; creation and uploads publish new files by rename). Across filesystems,
    a real copy of just those bytes. Returns where the archive starts in `dest`."""
    try:
        os.link(src, dest)
    except OSError:
        try:
            with open(src, "rb") as fin, open(dest, "wb") as fout:
                fin.seek(base)
                left = length if length is not None else os.fstat(fin.fileno()).st_size - base
                while left > 0 and (chunk := fin.read(min(CHUNK, left))):
                    fout.write(chunk)
                    left -= len(chunk)
        except OSError as exc:
            raise io_error(exc, "copying the snapshot into storage") from exc
        base = 0
    try:
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)  # free when `src` is one of our own (already synced) snapshots
        finally:
            os.close(fd)
        fsync_dir(os.path.dirname(dest))
    except OSError as exc:
        raise io_error(exc, "syncing the recovered snapshot") from exc
    return base


def _multi_rows(scanned: Scanned, base: str, name: str, dim: int, n: int
                ) -> tuple[MultiBatch, dict[str, int] | None]:
    """A multivector's rows in an archive segment, checked (row ends ascending, tokens
    (t, dim) float32 and finite), and where its arrays lie in the archive. None stored: every
    row empty."""
    hx = name.encode().hex()
    members = {part: f"{base}multi-{hx}-{part}.npy" for part in ("ends", "tokens")}
    have = [scanned.has(m) for m in members.values()]
    if not any(have):
        return empty_batch(dim, n), None
    if not all(have):
        raise SnapshotFormatError(f"Invalid snapshot: incomplete multivector {name!r}")
    ends = scanned.array(members["ends"])
    _expect(ends, np.dtype(np.int64), (n,), f"multivector {name!r} ends")
    offsets = np.zeros(n + 1, np.int64)
    offsets[1:] = ends
    if (np.diff(offsets) < 0).any():
        raise SnapshotFormatError(f"Invalid snapshot: multivector {name!r} row ends")
    tokens = scanned.array(members["tokens"])
    _expect(tokens, np.dtype(np.float32), (int(offsets[-1]), dim), f"multivector {name!r} tokens")
    if not all_finite(tokens):
        raise SnapshotFormatError(f"Invalid snapshot: multivector {name!r} holds NaN or "
                                  "infinite values")
    where = {"ends": scanned.npy(members["ends"]).data_offset,
             "tok": scanned.npy(members["tokens"]).data_offset}
    return MultiBatch(offsets, tokens), where


def _optional_present(scanned: Scanned, base: str, name: str, n: int,
                      ref: dict[str, Any]) -> np.ndarray:
    """The presence mask of a sparse vector or multivector, recorded in `ref`; an archive
    without it (1.0, or a vector added later) means no point has that vector."""
    hx = name.encode().hex()
    member = f"{base}present-{hx}.npy"
    if not scanned.has(member):
        return np.zeros(n, bool)
    mask = scanned.array(member)
    ref["present"][hx] = scanned.npy(member).data_offset
    _expect(mask, np.dtype(bool), (n,), f"present {name!r}")
    return mask


def _sparse_rows(scanned: Scanned, base: str, name: str, n: int
                 ) -> tuple[SparseBatch, dict[str, int] | None]:
    """A sparse vector's rows in an archive segment, checked (offsets ascending and within
    the entries, indices u32, values finite), and where its arrays lie in the archive. A 1.0
    archive has none: every row empty."""
    hx = name.encode().hex()
    members = {part: f"{base}sparse-{hx}-{part}.npy" for part in ("ends", "indices", "values")}
    have = [scanned.has(m) for m in members.values()]
    indptr = np.zeros(n + 1, np.int64)
    if not any(have):
        return SparseBatch(indptr, np.empty(0, np.uint32), np.empty(0, np.float32)), None
    if not all(have):
        raise SnapshotFormatError(f"Invalid snapshot: incomplete sparse vector {name!r}")
    ends = scanned.array(members["ends"])
    _expect(ends, np.dtype(np.int64), (n,), f"sparse {name!r} ends")
    indptr[1:] = ends
    nnz = int(indptr[-1])
    if (np.diff(indptr) < 0).any():
        raise SnapshotFormatError(f"Invalid snapshot: sparse vector {name!r} row ends")
    indices = scanned.array(members["indices"])
    values = scanned.array(members["values"])
    _expect(indices, np.dtype(np.uint32), (nnz,), f"sparse {name!r} indices")
    _expect(values, np.dtype(np.float32), (nnz,), f"sparse {name!r} values")
    if not all_finite(values):
        raise SnapshotFormatError(f"Invalid snapshot: sparse vector {name!r} holds NaN or "
                                  "infinite values")
    where = {"ends": scanned.npy(members["ends"]).data_offset,
             "idx": scanned.npy(members["indices"]).data_offset,
             "val": scanned.npy(members["values"]).data_offset}
    return SparseBatch(indptr, indices, values), where


def _check_finite(scanned: Scanned, segments: list[tuple[dict[str, Any], bool]]) -> None:
    """Float vectors must be finite: checked while hashing, else here (odd .npy headers)."""
    for data, _ in segments:
        for name, arr in data["vectors"].items():
            member = data["vector_members"][name]
            if arr.dtype.kind != "f":
                continue
            finite = scanned.finite.get(member)
            if not (all_finite(arr) if finite is None else finite):
                raise SnapshotFormatError(f"Invalid snapshot: vectors {name!r} hold NaN or "
                                          "infinite values")


def _check_unique_ids(built: Collection) -> None:
    """Live point ids must be unique across the whole snapshot: the id map built from them
    then has one entry per live row (a repeated id would have replaced an entry)."""
    if len(built.ids) != sum(seg.live_count() for seg in built.segments):
        raise SnapshotFormatError("Invalid snapshot: a point id appears more than once")


def _check_schema(schema: Any) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise SnapshotFormatError("Invalid snapshot: bad payload_schema")
    for field, entry in schema.items():
        if not isinstance(field, str) or not isinstance(entry, dict) \
                or entry.get("type") not in INDEX_TYPES \
                or not isinstance(entry.get("params"), dict | type(None)):
            raise SnapshotFormatError(f"Invalid snapshot: bad payload index {field!r}")
    return schema


def _expect(arr: np.ndarray, dtype: np.dtype, shape: tuple[int, ...], what: str) -> None:
    if arr.dtype != dtype or arr.shape != shape:
        raise SnapshotFormatError(f"Invalid snapshot: {what} has dtype {arr.dtype} and shape "
                                  f"{arr.shape}, expected {dtype} {shape}")


def restore_full(recovery: Recovery, path: str, force: bool) -> list[str]:
    """`--storage-snapshot`: validate the outer archive, recover every collection it maps
    (each straight from its place inside the outer archive: nothing is copied out), then its
    aliases. Returns the restored collection names."""
    catalog = recovery.catalog
    size = os.path.getsize(path)
    config: dict[str, Any] | None = None
    nested: dict[str, tuple[int, int]] = {}  # member → (offset, size) in the outer file
    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            while (info := tar.next()) is not None:
                # headers only (`members`: TarFile's undocumented cache, not in typeshed)
                tar.members = []  # type: ignore[attr-defined]
                if len(nested) >= 100_000:
                    raise SnapshotFormatError("Invalid full snapshot: too many members")
                if not info.isreg() or info.issparse() or info.offset_data + info.size > size:
                    raise SnapshotFormatError(f"Invalid full snapshot: {info.name!r} is not "
                                              "a regular file inside the archive")
                if config is None:
                    if info.name != "config.json" or info.size > (16 << 20):
                        raise SnapshotFormatError("Invalid full snapshot: config.json must "
                                                  "come first")
                    src = tar.extractfile(info)
                    assert src is not None
                    config = _full_config(src.read())
                    continue
                wanted = set(config["collections_mapping"].values())
                if info.name not in wanted or info.name in nested:
                    raise SnapshotFormatError(
                        f"Invalid full snapshot: unexpected member {info.name!r}")
                nested[info.name] = (info.offset_data, info.size)
    except (tarfile.TarError, EOFError) as exc:
        raise SnapshotFormatError(f"Invalid full snapshot: damaged archive ({exc})") from None
    if config is None:
        raise SnapshotFormatError("Invalid full snapshot: empty archive")
    mapping = config["collections_mapping"]
    missing = set(mapping.values()) - set(nested)
    if missing:
        raise SnapshotFormatError(f"Invalid full snapshot: missing {sorted(missing)[:5]}")
    clashes = [c for c in mapping if c in catalog.collections]
    if clashes and not force:
        raise AlreadyExists(f"Collection {clashes[0]} already exists. Use --force-snapshot "
                            "to overwrite it.")
    for coll, member in sorted(mapping.items()):
        offset, length = nested[member]
        recovery.recover_file(coll, path, None, offset, length, source="startup")
    actions = [{"create_alias": {"collection_name": c, "alias_name": a}}
               for a, c in config["collections_aliases"].items() if c in catalog.collections]
    if actions:
        catalog.update_aliases(actions)
    return sorted(mapping)


def _full_config(raw: bytes) -> dict[str, Any]:
    try:
        config = jsonio.loads(raw)
    except jsonio.JSONDecodeError:
        raise SnapshotFormatError("Invalid full snapshot: config.json is not JSON") from None
    mapping = config.get("collections_mapping") if isinstance(config, dict) else None
    aliases = (config.get("collections_aliases") or {}) if isinstance(config, dict) else None
    if not isinstance(mapping, dict) or not isinstance(aliases, dict):
        raise SnapshotFormatError("Invalid full snapshot: bad config.json")
    for coll, member in mapping.items():
        validate_name(coll)
        if member != f"{coll}.snapshot":
            raise SnapshotFormatError(f"Invalid full snapshot: bad member name {member!r}")
    return {"collections_mapping": mapping, "collections_aliases": aliases}


def restore_collection_at_startup(recovery: Recovery, spec: str, force: bool) -> str:
    """`--snapshot PATH:NAME`: split on the last ':'; the target must be absent unless forced."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise BadRequest(f"--snapshot expects PATH:COLLECTION, got {spec!r}")
    validate_name(name)
    if not os.path.isfile(path):
        raise BadRequest(f"snapshot file {path!r} does not exist")
    if name in recovery.catalog.collections and not force:
        raise AlreadyExists(f"Collection {name} already exists. Use --force-snapshot to "
                            "overwrite it.")
    recovery.recover_file(name, path, None, source="startup")
    return name
