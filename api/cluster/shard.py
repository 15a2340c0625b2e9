"""ShardReplica: one replica of one shard of a cluster collection, as a Ray actor.

It owns an engine Catalog in its own storage directory holding one collection (named as the
cluster collection) and runs each REST call it is sent through that route's own handler,
exactly as api/rpc/dispatch.py's Bridge does for gRPC: the same handlers table, the same
request shape (RpcRequest). Errors come back as data (`relay`), so the front end answers with
the same class, status and message a single node would.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any

from api import errors as api_errors
from engine import errors as engine_errors
from engine.errors import EngineError, ServiceError

if TYPE_CHECKING:
    from snapshots.manager import FrozenCollection

ERROR_MODULES = (engine_errors, api_errors)
# a frozen archive never written (its caller gone) is released after this long: past the
# front end's call timeout for the freezes, the longest it waits before asking for the write
FROZEN_TTL_S = 600.0

log = logging.getLogger("quiver.cluster")


def replica_settings(settings: Any, storage_dir: str) -> Any:
    """The front end's settings for a replica's own single-node engine: its own storage,
    no cluster, no schedules, no gRPC."""
    st = dataclasses.replace(settings.storage, storage_path=storage_dir,
                             snapshots_path=os.path.join(storage_dir, "snapshots"),
                             temp_path=None)
    return dataclasses.replace(
        settings, storage=st, cluster=dataclasses.replace(settings.cluster, enabled=False),
        snapshots=type(settings.snapshots)(),
        service=dataclasses.replace(settings.service, grpc_port=0, api_key=None,
                                    read_only_api_key=None, jwt_rbac=False))


def relay(exc: EngineError) -> dict[str, Any]:
    """An engine error as data: the nearest class the front end also knows, and the message."""
    for cls in type(exc).__mro__:
        if any(getattr(m, cls.__name__, None) is cls for m in ERROR_MODULES):
            return {"error": cls.__name__, "message": exc.message}
    return {"error": "ServiceError", "message": exc.message}


def raise_relayed(out: dict[str, Any]) -> None:
    """Re-raise what `relay` sent, with the very same message."""
    cls: type[EngineError] = ServiceError
    for m in ERROR_MODULES:
        found = getattr(m, out["error"], None)
        if isinstance(found, type) and issubclass(found, EngineError):
            cls = found
            break
    exc = cls.__new__(cls)
    Exception.__init__(exc, out["message"])
    exc.prefix = ""  # the relayed message already carries the replica's prefix
    exc.detail = out["message"]
    raise exc


class ShardReplica:
    """The actor class (runtime wraps it with ray.remote)."""

    def __init__(self, settings: Any, storage_dir: str) -> None:
        from api.app import all_routes, build_catalog, create_app  # noqa: PLC0415
        from api.rpc.dispatch import _handlers  # noqa: PLC0415 - the Bridge's own table

        os.makedirs(storage_dir, exist_ok=True)
        self.settings = replica_settings(settings, storage_dir)
        self.catalog = build_catalog(self.settings)
        self.catalog.load()
        self.catalog.start_flusher()
        self.app = create_app(self.settings, self.catalog, owns_catalog=False)
        self.app.state.cluster = None  # a replica is a single node: no routing here
        self.handlers = _handlers(all_routes())
        self.dropped: set[str] = set()  # tags of archives whose caller gave up (drop_archive)
        self.dropped_lock = threading.Lock()  # guards `dropped` and `frozen`
        # tag → (state freeze_archive froze, the timer releasing it if never written)
        self.frozen: dict[str, tuple[FrozenCollection, threading.Timer]] = {}

    def ping(self) -> bool:
        return True

    def node_id(self) -> str:
        """The Ray node this replica runs on (placement is checked against the metadata)."""
        import ray  # noqa: PLC0415 - only ever called inside a Ray actor

        return str(ray.get_runtime_context().get_node_id())

    def call(self, method: str, template: str, path_params: dict[str, str],
             query: dict[str, str], body: Any) -> dict[str, Any]:
        """Run one REST route's handler; {"result": ...} or a relayed error."""
        from api.rpc.dispatch import RpcRequest, _path  # noqa: PLC0415

        handler = self.handlers.get((method, template))
        if handler is None:
            return {"error": "BadRequest", "message": f"no route {method} {template}"}
        req = RpcRequest(self.app, method, _path(template, path_params), path_params,
                         query, None)
        try:
            return {"result": handler(req, body)}
        except EngineError as exc:
            return relay(exc)

    def last_seq(self, name: str) -> int:
        return self.catalog.get(name).wal.last_seq

    # ---- shard transfer: this replica's archive out, another's in (api/cluster/transfer)

    def snapshot_archive(self, name: str, tag: str | None = None) -> dict[str, Any]:
        """Freeze the collection at one WAL sequence number and write its archive into this
        replica's snapshots temp dir: {path, size, checksum, seq} (`freeze_archive` then
        `write_frozen` in one call). With a `tag` (the caller's name for it),
        `drop_archive(tag)` removes it even when the caller never got its path (its call
        timed out): dropped before or while it is frozen or written, it is removed here."""
        tag = tag or uuid.uuid4().hex
        self.freeze_archive(name, tag)
        return self.write_frozen(tag)

    def freeze_archive(self, name: str, tag: str) -> dict[str, Any]:
        """Freeze the collection at one WAL sequence number for the archive `write_frozen(tag)`
        writes (SnapshotManager.freeze_collection: masks copied, payloads serialized; rows
        below the frozen counts never change), so writes may go on once this returns:
        {seq, size}. The frozen state (and the snapshot gate, which holds background work
        back) is kept until `write_frozen(tag)` or `drop_archive(tag)`, at most FROZEN_TTL_S."""
        mgr = self.app.state.snapshots
        frozen = mgr.freeze_collection(name)
        timer = threading.Timer(FROZEN_TTL_S, self._expire, (tag, frozen))
        timer.daemon = True
        with self.dropped_lock:
            dropped = tag in self.dropped
            self.dropped.discard(tag)
            if not dropped:
                self.frozen[tag] = (frozen, timer)
        if dropped:
            frozen.release()
            raise ServiceError(f"archive {tag} was dropped by its caller")
        timer.start()
        return {"seq": frozen.seq, "size": frozen.prepared.size}

    def write_frozen(self, tag: str) -> dict[str, Any]:
        """Write the archive `freeze_archive(…, tag)` froze into this replica's snapshots temp
        dir: {path, size, checksum, seq}; the frozen state is released however it ends. Dropped
        while written (`drop_archive(tag)`), it is removed here."""
        with self.dropped_lock:
            held = self.frozen.pop(tag, None)
        if held is None:
            raise ServiceError(f"archive {tag} is not frozen here (dropped or expired)")
        frozen, timer = held
        timer.cancel()
        path = self._archive_path(tag)
        part = path + ".part"  # `path` exists only once whole: drop_archive tells them apart
        try:
            _, checksum, size = self.app.state.snapshots.write_frozen(frozen, part)
            os.replace(part, path)
        except BaseException:
            self.remove_file(part)
            raise
        with self.dropped_lock:
            dropped = tag in self.dropped
            self.dropped.discard(tag)
        if dropped:
            self.remove_file(path)
            raise ServiceError(f"archive {tag} was dropped by its caller")
        return {"path": path, "size": size, "checksum": checksum, "seq": frozen.seq}

    def _expire(self, tag: str, frozen: FrozenCollection) -> None:
        """A frozen state nobody wrote (its caller is gone) lets background work go on."""
        with self.dropped_lock:
            held = self.frozen.get(tag)
            if held is None or held[0] is not frozen:
                return
            del self.frozen[tag]
        frozen.release()
        log.warning("frozen archive %s expired unwritten after %.0f s", tag, FROZEN_TTL_S)

    def _archive_path(self, tag: str) -> str:
        return os.path.join(self.app.state.snapshots.tmp, f"{tag}.transfer")

    def drop_archive(self, tag: str) -> None:
        """The archive frozen or written under `tag` is not wanted: a frozen state is released
        and a written archive removed now; one being frozen or written is removed by that call
        when it ends."""
        with self.dropped_lock:
            held = self.frozen.pop(tag, None)
            if held is None and not os.path.exists(self._archive_path(tag)):
                self.dropped.add(tag)  # its call has not ended: it removes what it made
        if held is not None:
            held[1].cancel()
            held[0].release()
        self.remove_file(self._archive_path(tag))

    def read_chunk(self, path: str, offset: int, n: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(n)

    def staging_path(self) -> str:
        """A fresh file name inside the snapshots dir (recovery reads only from there)."""
        return os.path.join(self.app.state.snapshots.tmp, f"{uuid.uuid4().hex}.incoming")

    def write_chunk(self, path: str, offset: int, data: bytes) -> int:
        """Append one chunk (chunks arrive in order); the bytes now held."""
        with open(path, "ab") as f:
            if f.tell() != offset:
                raise ValueError(f"chunk at {offset}, file holds {f.tell()} bytes")
            f.write(data)
            return f.tell()

    def recover_archive(self, name: str, path: str, checksum: str | None,
                        priority: str = "replica") -> dict[str, Any]:
        """Recover the collection from an archive received here, through the snapshot
        recover route itself (with `priority`); the archive is removed afterwards."""
        body = {"location": "file://" + path, "priority": priority, "checksum": checksum}
        try:
            return self.call("PUT", "/collections/{collection_name}/snapshots/recover",
                             {"collection_name": name}, {"wait": "true"}, body)
        finally:
            self.remove_file(path)

    def remove_file(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        with self.dropped_lock:
            held, self.frozen = list(self.frozen.values()), {}
        for frozen, timer in held:  # never to be written: background work goes on
            timer.cancel()
            frozen.release()
        self.catalog.close()
