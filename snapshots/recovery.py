"""Collection recovery: from a file inside the snapshots dir, an http(s) URL, or an upload.

Everything is validated before the live collection is touched: the checksum, every archive
member (snapshots.archive.unpack), and every array against the archive's config. The new
collection is then built in a staging directory on the storage filesystem and swapped in
under the catalog lock (Catalog.install); on any failure the old collection keeps serving
and the staging directory is removed (or, after a crash, wiped at start-up).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
import traceback
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
import numpy as np

from engine import ann, jsonio
from engine.catalog import Catalog, validate_name
from engine.collection import INDEX_TYPES, Collection
from engine.config import from_state
from engine.errors import (
    AlreadyExists,
    BadInput,
    BadRequest,
    EngineError,
    Forbidden,
    Unprocessable,
)
from engine.ids import ID_DTYPE
from engine.segment import STORAGE_DTYPES
from engine.segment_store import GRAPH_KEYS
from snapshots.archive import CHUNK, HashingReader, SnapshotFormatError, load_npy, unpack

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


def _check_sum(expected: str, actual: str) -> None:
    if actual != expected:
        raise ChecksumMismatch(f"Checksum mismatch: expected {expected}, actual {actual}")


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
                        with open(dest, "wb") as f:
                            for chunk in r.iter_bytes(CHUNK):
                                got += len(chunk)
                                if got > limit:
                                    raise self._too_big(location, limit)
                                f.write(chunk)
                        return
                raise BadInput(f"Failed to download tar from {location}: more than "
                               f"{MAX_REDIRECTS} redirects")
        except httpx.HTTPError as exc:
            raise BadInput(f"Failed to download tar from {location}: {exc}") from None

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

    def recover_location(self, collection: str, body: dict[str, Any]) -> bool:
        validate_name(collection)
        location = body.get("location")
        if not isinstance(location, str) or not location:
            raise BadRequest("Format error in JSON body: `location` must be a URL string")
        check_priority(body.get("priority"))
        checksum = check_checksum(body.get("checksum"))
        scheme = urlparse(location).scheme.lower()
        if scheme == "file":
            return self.recover_file(collection, self.local_path(location), checksum)
        if scheme in ("http", "https"):
            staging = self.catalog.staging_dir()
            try:
                path = os.path.join(staging, "download.snapshot")
                self.download(location, path, body.get("api_key"))
                return self.recover_file(collection, path, checksum)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        if not scheme:
            raise BadRequest("Format error in JSON body: relative URL without a base")
        raise BadRequest(f"URL {location} with scheme {scheme} is not supported")

    def recover_file(self, collection: str, path: str, checksum: str | None) -> bool:
        validate_name(collection)
        staging = self.catalog.staging_dir()
        unpacked = segments = None
        try:
            members_dir = os.path.join(staging, "members")
            os.mkdir(members_dir)
            free = shutil.disk_usage(staging).free
            with open(path, "rb") as f:
                if checksum is None:
                    unpacked = unpack(f, members_dir, max_total_bytes=free)
                else:  # verified in the same pass; a mismatch wins over any format error
                    reader = HashingReader(f)
                    try:
                        unpacked = unpack(io.BufferedReader(reader, CHUNK), members_dir,
                                          max_total_bytes=free)
                    except BaseException:
                        _check_sum(checksum, reader.finish())
                        raise
                    _check_sum(checksum, reader.finish())
            manifest = unpacked.manifest
            seq = manifest.get("seq")
            if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < (1 << 63):
                raise SnapshotFormatError(f"Invalid snapshot: bad sequence number {seq!r}")
            config_state, schema = self._target_config(collection, manifest)
            segments = self._segments(unpacked, config_state)
            _check_unique_ids(segments)
            built_path = os.path.join(staging, "collection")
            built = Collection.build(collection, built_path, config_state, schema, segments,
                                     seq, self.catalog.wal_fsync)
            segments = None  # drop the memory maps before the staging files go
            try:
                self.catalog.install(collection, built_path, replace=True, built=built)
            except BaseException:
                built.close(flush=False)
                raise
        except BaseException as exc:
            # the traceback's finished frames hold the memory-mapped members; clearing them
            # frees their disk space now, not at the next garbage collection
            traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            # on failure too: mapped members would keep their disk space until collected
            unpacked = segments = None  # noqa: F841
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
        if snap_cfg.vectors != live.config.vectors:
            raise BadInput("Snapshot is not compatible with existing collection: Collection "
                           f"vectors: {jsonio.dumps(live.config.vectors_echo).decode()} Snapshot "
                           f"Vectors: {jsonio.dumps(snap_cfg.vectors_echo).decode()}")
        return live.config.to_state(), dict(live.payload_schema)

    def _segments(self, unpacked: Any, config_state: dict[str, Any]
                  ) -> list[tuple[dict[str, Any], bool]]:
        cfg = from_state(config_state)
        out = []
        segs = unpacked.manifest.get("segments")
        if not isinstance(segs, list):
            raise SnapshotFormatError("Invalid snapshot: bad segment list")
        indexes = [s.get("index") if isinstance(s, dict) else None for s in segs]
        if indexes != list(range(len(segs))):
            raise SnapshotFormatError("Invalid snapshot: segments must be numbered 0..n-1")
        for seg in segs:
            if not isinstance(seg.get("n"), int) or not 0 <= seg["n"] < (1 << 32):
                raise SnapshotFormatError("Invalid snapshot: bad segment entry")
            i, n = seg["index"], seg["n"]
            base = f"segments/{i}/"

            def member(name: str, base: str = base) -> str:
                path = unpacked.files.get(base + name)
                if path is None:
                    raise SnapshotFormatError(f"Invalid snapshot: missing {base + name}")
                return path

            ids = load_npy(member("ids.npy"))
            deleted = load_npy(member("deleted.npy"))
            versions = load_npy(member("versions.npy"))
            _expect(ids, ID_DTYPE, (n,), "ids")
            if n and ids["kind"].max() > 1:
                raise SnapshotFormatError("Invalid snapshot: unknown point id kind")
            _expect(deleted, np.dtype(bool), (n,), "deleted")
            _expect(versions, np.dtype(np.uint64), (n,), "versions")
            vectors, present = {}, {}
            for name, spec in cfg.vectors.items():
                hx = name.encode().hex()
                arr = load_npy(member(f"vectors-{hx}.npy"), mmap=True)
                _expect(arr, np.dtype(STORAGE_DTYPES[spec.datatype]), (n, spec.size),
                        f"vectors {name!r}")
                if arr.dtype.kind == "f" and not _all_finite(arr):
                    raise SnapshotFormatError(f"Invalid snapshot: vectors {name!r} hold NaN or "
                                              "infinite values")
                vectors[name] = arr
                present[name] = load_npy(member(f"present-{hx}.npy"))
                _expect(present[name], np.dtype(bool), (n,), f"present {name!r}")
            ann_indexes = self._graphs(unpacked, base, cfg, vectors)
            with open(member("payloads.json"), "rb") as f:
                try:
                    payloads = jsonio.loads(f.read())
                except jsonio.JSONDecodeError:
                    raise SnapshotFormatError("Invalid snapshot: payloads are not JSON") from None
            if not isinstance(payloads, list) or len(payloads) != n \
                    or not all(isinstance(p, dict) for p in payloads):
                raise SnapshotFormatError("Invalid snapshot: payloads do not match the segment")
            out.append(({"id_recs": ids, "vectors": vectors, "present": present,
                         "deleted": deleted, "versions": versions, "payloads": payloads,
                         "ann": ann_indexes}, bool(seg.get("sealed"))))
        return out

    @staticmethod
    def _graphs(unpacked: Any, base: str, cfg: Any, vectors: dict[str, np.ndarray]
                ) -> dict[str, Any]:
        """HNSW indexes the archive carries, rebuilt from their graphs (no construction)."""
        out: dict[str, Any] = {}
        m = int(cfg.hnsw_config.get("m") or 0)
        ef = int(cfg.hnsw_config.get("ef_construct") or 100)
        for name, spec in cfg.vectors.items():
            hx = name.encode().hex()
            paths = {key: unpacked.files.get(f"{base}hnsw-{hx}-{key}.npy") for key in GRAPH_KEYS}
            if not any(paths.values()):
                continue
            if not all(paths.values()):
                raise SnapshotFormatError(f"Invalid snapshot: incomplete HNSW graph for {name!r}")
            if not ann.available():
                continue  # faiss missing here: searches stay exact, nothing is lost
            graph = {key: load_npy(path) for key, path in paths.items()}
            try:
                out[name] = ann.HnswIndex.from_graph(vectors[name], graph, spec.distance.metric,
                                                     m, ef)
            except (ann.GraphError, ValueError, TypeError) as exc:
                raise SnapshotFormatError(f"Invalid snapshot: HNSW graph for {name!r}: {exc}"
                                          ) from None
        return out


class ChecksumMismatch(BadInput):
    prefix = ""


def _all_finite(arr: np.ndarray) -> bool:
    step = max(1, (64 << 20) // max(1, arr.shape[1] * arr.itemsize))
    return all(np.isfinite(arr[s : s + step]).all() for s in range(0, len(arr), step))


def _check_unique_ids(segments: list[tuple[dict[str, Any], bool]]) -> None:
    """Live point ids must be unique across the whole snapshot."""
    live = [data["id_recs"][~data["deleted"]] for data, _ in segments]
    if not live:
        return
    recs = np.concatenate(live)
    if len(recs) < 2:
        return
    if not recs["kind"].any():  # integer ids only: sort the plain uint64s (structured sorts
        keys = np.sort(recs["lo"])  # compare field by field, ~25x slower)
    else:  # byte-wise order of the whole record is fine for an equality check
        keys = np.sort(np.ascontiguousarray(recs).view(f"V{recs.dtype.itemsize}"))
    if (keys[1:] == keys[:-1]).any():
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
    """`--storage-snapshot`: validate the outer archive, recover every collection it maps,
    then its aliases. Returns the restored collection names."""
    catalog = recovery.catalog
    staging = catalog.staging_dir()
    try:
        config: dict[str, Any] | None = None
        files: dict[str, str] = {}
        try:
            with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
                for i, info in enumerate(tar):
                    if i > 100_000:
                        raise SnapshotFormatError("Invalid full snapshot: too many members")
                    if not info.isreg() or info.issparse():
                        raise SnapshotFormatError(f"Invalid full snapshot: {info.name!r} is not "
                                                  "a regular file")
                    src = tar.extractfile(info)
                    assert src is not None
                    if config is None:
                        if info.name != "config.json" or info.size > (16 << 20):
                            raise SnapshotFormatError("Invalid full snapshot: config.json must "
                                                      "come first")
                        config = _full_config(src.read())
                        continue
                    wanted = set(config["collections_mapping"].values())
                    if info.name not in wanted or info.name in files:
                        raise SnapshotFormatError(
                            f"Invalid full snapshot: unexpected member {info.name!r}")
                    dest = os.path.join(staging, f"c{len(files):06d}.snapshot")
                    with open(dest, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                    files[info.name] = dest
        except (tarfile.TarError, EOFError) as exc:
            raise SnapshotFormatError(f"Invalid full snapshot: damaged archive ({exc})") from None
        if config is None:
            raise SnapshotFormatError("Invalid full snapshot: empty archive")
        mapping = config["collections_mapping"]
        missing = set(mapping.values()) - set(files)
        if missing:
            raise SnapshotFormatError(f"Invalid full snapshot: missing {sorted(missing)[:5]}")
        clashes = [c for c in mapping if c in catalog.collections]
        if clashes and not force:
            raise AlreadyExists(f"Collection {clashes[0]} already exists. Use --force-snapshot "
                                "to overwrite it.")
        for coll, member in sorted(mapping.items()):
            recovery.recover_file(coll, files[member], None)
        actions = [{"create_alias": {"collection_name": c, "alias_name": a}}
                   for a, c in config["collections_aliases"].items() if c in catalog.collections]
        if actions:
            catalog.update_aliases(actions)
        return sorted(mapping)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
    recovery.recover_file(name, path, None)
    return name
