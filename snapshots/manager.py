"""Collection snapshots on local disk: create, list, delete, locate for download.

    <snapshots_path>/<collection>/<name>.snapshot            the archive
    <snapshots_path>/<collection>/<name>.snapshot.checksum   its sha256 (computed while writing)
    <snapshots_path>/.tmp/                                   archives being written (wiped at start)

Creation freezes the collection at one WAL sequence number (the write lock is held only to
record row counts and copy small masks), then writes the archive outside the lock into the
temp dir on the same filesystem, fsyncs, and renames it into place: a listed snapshot is
always complete.

Every creation is a task (engine.tasks: kind snapshot_create or snapshot_create_full):
phase preparing (freeze; a full snapshot also hashes members), writing (bytes_done counts
archive bytes written,
bytes_total the archive's exact size, known once prepared), publishing. Cancelling it
(DELETE /tasks/{id}) stops the writing at its next chunk and removes the partial archive:
nothing is left in the temp dir or the snapshots dir. Local publishing (a rename) is the
point of no return.

Listeners (`add_listener`) hear of every creation as it ends: (kind: collection | full,
outcome: ok | error, seconds, archive bytes (0 on error)); api.observability records them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from engine import jsonio, tasks
from engine.catalog import Catalog, validate_name
from engine.durable import io_error
from engine.errors import BadRequest
from engine.indexing import snapshot_gate
from snapshots.archive import (
    HashingWriter,
    PreparedArchive,
    bundle_size,
    prepare_archive,
    segment_members,
    write_archive,
    write_bundle,
)
from snapshots.storage import (
    SUFFIX,
    Download,
    LocalStorage,
    SnapshotInfo,
    SnapshotStorage,
    check_snapshot_name,
)

FULL_CONFIG = "config.json"

log = logging.getLogger("quiver.snapshots")

# (kind: "collection" | "full", outcome: "ok" | "error", seconds, archive bytes (0 on error))
SnapshotListener = Callable[[str, str, float, int], None]


class FrozenCollection:
    """A collection frozen for its archive (SnapshotManager.freeze_collection): holds
    snapshot_gate until released (write_frozen releases it; so must whoever drops it)."""

    def __init__(self, collection: str, prepared: PreparedArchive,
                 gate: contextlib.ExitStack) -> None:
        self.collection, self.prepared = collection, prepared
        self.seq = int(prepared.header["seq"])
        self._gate: contextlib.ExitStack | None = gate
        self._lock = threading.Lock()

    def release(self) -> None:
        """Let background work go on; idempotent, from any thread."""
        with self._lock:
            gate, self._gate = self._gate, None
        if gate is not None:
            gate.close()


class SnapshotManager:
    def __init__(self, catalog: Catalog, snapshots_path: str, node_id: int,
                 temp_path: str | None = None, store: SnapshotStorage | None = None) -> None:
        self.catalog = catalog
        self.root = os.path.abspath(snapshots_path)
        self.store: SnapshotStorage = store or LocalStorage(self.root)
        self.tmp = os.path.abspath(temp_path) if temp_path else os.path.join(self.root, ".tmp")
        self.node_id = node_id
        self._names_lock = threading.Lock()
        self._reserved: set[str] = set()
        self._listeners: list[SnapshotListener] = []
        os.makedirs(self.root, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)  # debris of creations killed midway
        os.makedirs(self.tmp, exist_ok=True)
        if isinstance(self.store, LocalStorage):
            self.store.clean()

    # ---- listeners -----------------------------------------------------------------------

    def add_listener(self, listener: SnapshotListener) -> None:
        """Call `listener(kind, outcome, seconds, bytes)` after every creation (any thread)."""
        self._listeners.append(listener)

    def _observed(self, kind: str, create: Callable[[], SnapshotInfo]) -> SnapshotInfo:
        started = time.perf_counter()
        try:
            info = create()
        except BaseException:
            self._notify(kind, "error", time.perf_counter() - started, 0)
            raise
        self._notify(kind, "ok", time.perf_counter() - started, int(info.size or 0))
        return info

    def _notify(self, kind: str, outcome: str, seconds: float, size: int) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind, outcome, seconds, size)
            except Exception:  # a listener's bug must not fail (or hide) the creation
                log.exception("snapshot listener %r failed", listener)

    # ---- create --------------------------------------------------------------------------

    def _reserve_name(self, prefix: str, folder: str) -> str:
        """{prefix}-{UTC time}.snapshot, made unique within the same second."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H-%M-%S")
        base = f"{prefix}-{stamp}"
        with self._names_lock:
            k = 0
            while True:
                name = base + (f"-{k}" if k else "") + SUFFIX
                if name not in self._reserved and not self.store.exists(folder, name):
                    self._reserved.add(name)
                    return name
                k += 1

    def _prepare_collection(self, collection: str, hashed: bool = True
                            ) -> tuple[str, PreparedArchive]:
        """Freeze one collection (the write lock is held only to record row counts) and
        prepare its archive: the exact size known; with `hashed`, every member hashed."""
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
        return real, prepare_archive(header, members, hashed)

    def write_collection_archive(self, collection: str, dest: str) -> tuple[str, str, int]:
        """Freeze one collection and write its archive to `dest` (fsynced):
        `write_frozen(freeze_collection(collection), dest)`.
        Returns (collection name, sha256, size). Members are hashed while they are written,
        then the whole archive, from memory and ahead of the disk (archive.write_archive):
        hashing what is not pre-hashed (right after a bulk load) no longer delays the first
        byte. Background index builds, encodings and digests hold back meanwhile
        (engine.indexing.snapshot_gate): they would take the cores the writer and the hashes
        need, and nothing they produce now would be in this archive."""
        return self.write_frozen(self.freeze_collection(collection), dest)

    def freeze_collection(self, collection: str) -> FrozenCollection:
        """The first half of `write_collection_archive`: the collection frozen at one WAL
        sequence number, its archive prepared (unhashed), snapshot_gate held until
        `write_frozen` ends or the result is released. Writes may go on meanwhile: what is
        prepared is copies (masks, payloads as JSON) and rows below the frozen counts, which
        never change."""
        gate = contextlib.ExitStack()
        gate.enter_context(snapshot_gate.writing())
        try:
            tasks.set_phase("preparing")
            real, prepared = self._prepare_collection(collection, hashed=False)
        except BaseException:
            gate.close()
            raise
        return FrozenCollection(real, prepared, gate)

    def write_frozen(self, frozen: FrozenCollection, dest: str) -> tuple[str, str, int]:
        """The second half: `frozen`'s archive written to `dest` (fsynced), then the frozen
        state released (however the write ends). (collection name, sha256, size)."""
        try:
            tasks.begin("writing", frozen.prepared.size)
            with open(dest, "wb") as f:
                checksum = write_archive(f, frozen.prepared, tasks.advance)
        finally:
            frozen.release()
        return frozen.collection, checksum, frozen.prepared.size

    def create(self, collection: str) -> SnapshotInfo:
        return self._observed("collection", lambda: self._create(collection))

    def _create(self, collection: str) -> SnapshotInfo:
        with tasks.registry.run("snapshot_create", collection, cancellable=True) as task:
            real = self.catalog.get(collection).name
            task.collection = real
            validate_name(real)
            name = self._reserve_name(f"{real}-{self.node_id}", real)
            tmp = os.path.join(self.tmp, f"{uuid.uuid4().hex}.part")
            try:
                _, checksum, _ = self.write_collection_archive(real, tmp)
                self._publishing(task)
                return self.store.publish(tmp, real, name, checksum)
            except OSError as exc:
                raise io_error(exc, "creating snapshot") from exc
            finally:
                self._release(name, tmp)

    def _publishing(self, task: tasks.Task) -> None:
        """A local publish is a rename: past it the snapshot exists, so cancelling ends
        here. An upload to object storage stays cancellable (its multipart is aborted)."""
        if isinstance(self.store, LocalStorage):
            task.irreversible("publishing")
        else:
            task.set_phase("uploading")

    def _release(self, name: str, tmp: str) -> None:
        with self._names_lock:
            self._reserved.discard(name)
        if os.path.exists(tmp):
            os.unlink(tmp)

    # ---- full-storage snapshots ------------------------------------------------------------

    def create_full(self) -> SnapshotInfo:
        """Every collection's archive plus the aliases, in one tar: config.json first, then
        `<collection>.snapshot` members."""
        return self._observed("full", self._create_full)

    def _create_full(self) -> SnapshotInfo:
        with tasks.registry.run("snapshot_create_full", cancellable=True) as task:
            name = self._reserve_name("full-snapshot", "")
            tmp = os.path.join(self.tmp, uuid.uuid4().hex) + ".part"
            try:
                with snapshot_gate.writing():  # background work holds back (see above)
                    digest = self._write_full(task, tmp)
                self._publishing(task)
                return self.store.publish(tmp, "", name, digest)
            except OSError as exc:
                raise io_error(exc, "creating full snapshot") from exc
            finally:
                self._release(name, tmp)

    def _write_full(self, task: tasks.Task, tmp: str) -> str:
        """Freeze every collection (one moment for all of them), then stream their archives
        into `tmp` (fsynced); returns its sha256."""
        task.set_phase("preparing")
        prepared = {}
        for coll in sorted(self.catalog.names()):
            prepared[coll] = self._prepare_collection(coll)[1]
            task.checkpoint()
        mapping = {coll: f"{coll}.snapshot" for coll in prepared}
        aliases = {a["alias_name"]: a["collection_name"]
                   for a in self.catalog.list_aliases()
                   if a["collection_name"] in mapping}
        config = jsonio.dumps({"collections_mapping": mapping,
                               "collections_aliases": aliases}, indent=True)
        archives = {member: prepared[coll] for coll, member in mapping.items()}
        tasks.begin("writing", bundle_size((FULL_CONFIG, config), archives))
        with open(tmp, "wb") as f:
            hw = HashingWriter(f, task.advance)
            try:
                write_bundle(hw, (FULL_CONFIG, config), archives)
            finally:
                digest = hw.hexdigest()
            f.flush()
            os.fsync(f.fileno())
        return digest

    def list_full(self) -> list[SnapshotInfo]:
        return self.store.list("")

    def download_full(self, name: str) -> Download:
        return self.store.download("", check_snapshot_name(name))

    def delete_full(self, name: str) -> bool:
        return self.store.delete("", check_snapshot_name(name))

    # ---- list / delete / locate --------------------------------------------------------------

    def list(self, collection: str) -> list[SnapshotInfo]:
        return self.store.list(self.catalog.get(collection).name)

    def download(self, collection: str, name: str) -> Download:
        return self.store.download(self.catalog.get(collection).name, check_snapshot_name(name))

    def path(self, collection: str, name: str) -> str:
        """A local path to the archive (local storage: the file itself)."""
        real = self.catalog.get(collection).name
        if isinstance(self.store, LocalStorage):
            return self.store.path(real, check_snapshot_name(name))
        raise BadRequest("snapshots are kept in object storage: download them instead")

    def delete(self, collection: str, name: str) -> bool:
        return self.store.delete(self.catalog.get(collection).name, check_snapshot_name(name))
