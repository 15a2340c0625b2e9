"""Collection snapshots on local disk: create, list, delete, locate for download.

    <snapshots_path>/<collection>/<name>.snapshot            the archive
    <snapshots_path>/<collection>/<name>.snapshot.checksum   its sha256 (computed while writing)
    <snapshots_path>/.tmp/                                   archives being written (wiped at start)

Creation freezes the collection at one WAL sequence number (the write lock is held only to
record row counts and copy small masks), then writes the archive outside the lock into the
temp dir on the same filesystem, fsyncs, and renames it into place: a listed snapshot is
always complete.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from engine.catalog import Catalog, validate_name
from engine.durable import atomic_writer, fsync_dir, io_error
from engine.errors import NotFound
from snapshots.archive import HashingWriter, segment_members, write_archive

SUFFIX = ".snapshot"
FULL_CONFIG = "config.json"


@dataclass
class SnapshotInfo:
    name: str
    creation_time: str | None
    size: int
    checksum: str | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "creation_time": self.creation_time,
                               "size": self.size}
        if self.checksum:
            out["checksum"] = self.checksum
        return out


def snapshot_not_found(name: str) -> NotFound:
    return NotFound(f"Snapshot {name} not found")


def check_snapshot_name(name: str) -> str:
    """A plain file name inside the snapshots directory, else 404 (as Qdrant)."""
    if (not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name
            or "\0" in name or os.path.basename(name) != name):
        raise snapshot_not_found(name)
    return name


class SnapshotManager:
    def __init__(self, catalog: Catalog, snapshots_path: str, node_id: int,
                 temp_path: str | None = None) -> None:
        self.catalog = catalog
        self.root = os.path.abspath(snapshots_path)
        self.tmp = os.path.abspath(temp_path) if temp_path else os.path.join(self.root, ".tmp")
        self.node_id = node_id
        self._names_lock = threading.Lock()
        self._reserved: set[str] = set()
        os.makedirs(self.root, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)  # debris of creations killed midway
        os.makedirs(self.tmp, exist_ok=True)

    def collection_dir(self, collection: str) -> str:
        return os.path.join(self.root, validate_name(collection))

    # ---- create --------------------------------------------------------------------------

    def _reserve_name(self, prefix: str, directory: str) -> str:
        """{prefix}-{UTC time}.snapshot, made unique within the same second."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S")
        base = f"{prefix}-{stamp}"
        with self._names_lock:
            k = 0
            while True:
                name = base + (f"-{k}" if k else "") + SUFFIX
                if name not in self._reserved and not os.path.exists(os.path.join(directory, name)):
                    self._reserved.add(name)
                    return name
                k += 1

    def write_collection_archive(self, collection: str, dest: str) -> tuple[str, str, int]:
        """Freeze one collection and write its archive to `dest` (fsynced).
        Returns (collection name, sha256, size)."""
        coll = self.catalog.get(collection)
        real = coll.name
        seq, config, schema, frozen = coll.snapshot_view()
        members = []
        segments = []
        for i, fz in enumerate(frozen):
            members.extend(segment_members(i, fz))
            segments.append({"index": i, "n": fz.n, "sealed": fz.sealed})
        header = {"collection": real, "seq": seq, "config": config, "payload_schema": schema,
                  "aliases": [a["alias_name"] for a in self.catalog.list_aliases(real)],
                  "segments": segments,
                  "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")}
        with open(dest, "wb") as f:
            checksum, size = write_archive(f, header, members)
            f.flush()
            os.fsync(f.fileno())
        return real, checksum, size

    def _publish(self, tmp: str, directory: str, name: str, checksum: str) -> SnapshotInfo:
        """Rename a finished archive into place, then its checksum sidecar."""
        final = os.path.join(directory, name)
        os.replace(tmp, final)
        with atomic_writer(final + ".checksum") as f:
            f.write(checksum.encode())
        fsync_dir(directory)
        return self._describe(directory, name)

    def create(self, collection: str) -> SnapshotInfo:
        real = self.catalog.get(collection).name
        directory = self.collection_dir(real)
        os.makedirs(directory, exist_ok=True)
        name = self._reserve_name(f"{real}-{self.node_id}", directory)
        tmp = os.path.join(self.tmp, f"{uuid.uuid4().hex}.part")
        try:
            _, checksum, _ = self.write_collection_archive(real, tmp)
            return self._publish(tmp, directory, name, checksum)
        except OSError as exc:
            raise io_error(exc, "creating snapshot") from exc
        finally:
            self._release(name, tmp)

    def _release(self, name: str, tmp: str) -> None:
        with self._names_lock:
            self._reserved.discard(name)
        if os.path.exists(tmp):
            os.unlink(tmp)

    # ---- full-storage snapshots ------------------------------------------------------------

    def create_full(self) -> SnapshotInfo:
        """Every collection's archive plus the aliases, in one tar: config.json first, then
        `<collection>.snapshot` members."""
        name = self._reserve_name("full-snapshot", self.root)
        work = os.path.join(self.tmp, uuid.uuid4().hex)
        tmp = work + ".part"
        try:
            os.makedirs(work)
            mapping: dict[str, str] = {}
            files = []
            for coll in sorted(self.catalog.names()):
                path = os.path.join(work, f"{coll}.snapshot")
                self.write_collection_archive(coll, path)
                mapping[coll] = f"{coll}.snapshot"
                files.append(path)
            aliases = {a["alias_name"]: a["collection_name"] for a in self.catalog.list_aliases()
                       if a["collection_name"] in mapping}
            config = orjson.dumps({"collections_mapping": mapping, "collections_aliases": aliases},
                                  option=orjson.OPT_INDENT_2)
            with open(tmp, "wb") as f:
                hw = HashingWriter(f)
                try:
                    with tarfile.open(fileobj=hw, mode="w", format=tarfile.GNU_FORMAT) as tar:
                        tar.copybufsize = 8 << 20
                        info = tarfile.TarInfo(FULL_CONFIG)
                        info.size, info.mtime, info.mode = len(config), int(time.time()), 0o644
                        tar.addfile(info, io.BytesIO(config))
                        for path in files:
                            tar.add(path, arcname=os.path.basename(path), recursive=False)
                finally:
                    digest = hw.hexdigest()
                f.flush()
                os.fsync(f.fileno())
            return self._publish(tmp, self.root, name, digest)
        except OSError as exc:
            raise io_error(exc, "creating full snapshot") from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
            self._release(name, tmp)

    def list_full(self) -> list[SnapshotInfo]:
        return [self._describe(self.root, e.name)
                for e in sorted(os.scandir(self.root), key=lambda e: e.name)
                if e.name.endswith(SUFFIX) and not e.name.startswith(".")
                and e.is_file(follow_symlinks=False)]

    def path_full(self, name: str) -> str:
        check_snapshot_name(name)
        root = os.path.realpath(self.root)
        path = os.path.realpath(os.path.join(root, name))
        if os.path.dirname(path) != root or not os.path.isfile(path):
            raise snapshot_not_found(name)
        return path

    def delete_full(self, name: str) -> bool:
        return self._unlink(self.path_full(name))

    # ---- list / delete / locate --------------------------------------------------------------

    def _describe(self, directory: str, name: str) -> SnapshotInfo:
        path = os.path.join(directory, name)
        st = os.stat(path)
        try:
            with open(path + ".checksum") as f:
                checksum: str | None = f.read()
        except OSError:
            checksum = None
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(st.st_mtime))
        return SnapshotInfo(name, created, st.st_size, checksum)

    def list(self, collection: str) -> list[SnapshotInfo]:
        real = self.catalog.get(collection).name
        directory = self.collection_dir(real)
        if not os.path.isdir(directory):
            return []
        out = []
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if entry.name.endswith(SUFFIX) and not entry.name.startswith(".") \
                    and entry.is_file(follow_symlinks=False):
                out.append(self._describe(directory, entry.name))
        return out

    def path(self, collection: str, name: str) -> str:
        """The file to download, confined to the collection's snapshot directory."""
        real = self.catalog.get(collection).name
        check_snapshot_name(name)
        directory = os.path.realpath(self.collection_dir(real))
        path = os.path.realpath(os.path.join(directory, name))
        if os.path.dirname(path) != directory or not os.path.isfile(path):
            raise snapshot_not_found(name)
        return path

    def delete(self, collection: str, name: str) -> bool:
        return self._unlink(self.path(collection, name))

    def _unlink(self, path: str) -> bool:
        os.unlink(path)
        try:
            os.unlink(path + ".checksum")
        except OSError:
            pass
        fsync_dir(os.path.dirname(path))
        return True
