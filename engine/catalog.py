"""The catalog: collection name → Collection, aliases, and the storage directory layout.

    <storage>/collections/<name>/   one directory per collection (config, state, wal, segments)
    <storage>/aliases.json          alias → collection name
    <storage>/.trash-*              collections being deleted (removed at start-up)

Creation builds the collection in a temp directory and renames it into place; deletion
renames it away first. Either way a crash leaves the catalog as before or as after.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections.abc import Container
from typing import Any

from engine import flush as flushing
from engine import indexing, jsonio
from engine.collection import Collection
from engine.durable import fsync_dir, write_atomic
from engine.errors import AlreadyExists, BadRequest, NotFound, StorageError

log = logging.getLogger("quiver.catalog")

_FORBIDDEN = set('<>:"/\\|?*\0')
MAX_NAME = 255


def validate_name(name: Any, what: str = "collection") -> str:
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{what} name must be a non-empty string")
    if len(name.encode()) > MAX_NAME:
        raise BadRequest(f"{what} name is too long (max {MAX_NAME} bytes)")
    bad = _FORBIDDEN.intersection(name)
    if bad or name in (".", "..") or name.startswith(".") or any(ord(c) < 32 for c in name):
        raise BadRequest(f"{what} name {name!r} is invalid: it must not start with '.', or "
                         "contain any of < > : \" / \\ | ? * or control characters")
    return name


def not_found(name: str) -> NotFound:
    return NotFound(f"Collection `{name}` doesn't exist!")


class Catalog:
    def __init__(self, storage_path: str, wal_fsync: bool = True,
                 flush_wal_bytes: int = 32 << 20, flush_idle_s: float = 5.0) -> None:
        self.root = os.path.abspath(storage_path)
        self.coll_root = os.path.join(self.root, "collections")
        if not os.path.isdir(self.coll_root):
            os.makedirs(self.coll_root, exist_ok=True)
            # the new directories' entries must survive a power cut too
            for d in (self.coll_root, self.root, os.path.dirname(self.root)):
                try:
                    fsync_dir(d)
                except OSError:
                    pass
        self.wal_fsync = wal_fsync
        self.flush_wal_bytes = flush_wal_bytes
        self.flush_idle_s = flush_idle_s
        self.lock = threading.RLock()
        self.collections: dict[str, Collection] = {}
        self.aliases: dict[str, str] = {}
        self.broken: dict[str, str] = {}  # collections that failed to load, with the reason
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._indexer: threading.Thread | None = None

    # ---- start-up --------------------------------------------------------------------------

    def load(self) -> None:
        for name in os.listdir(self.root):
            path = os.path.join(self.root, name)
            if name.startswith(".swap-"):
                self._finish_swap(name, path)
            elif name.startswith((".trash-", ".tmp-")):
                shutil.rmtree(path, ignore_errors=True)
        for name in sorted(os.listdir(self.coll_root)):
            path = os.path.join(self.coll_root, name)
            if name.startswith(".") or not os.path.exists(os.path.join(path, "config.json")):
                shutil.rmtree(path, ignore_errors=True)
                continue
            try:
                self.collections[name] = Collection.load(name, path, self.wal_fsync)
            except Exception as exc:  # noqa: BLE001 - one broken collection must not stop the rest
                log.exception("collection %s failed to load; serving the others", name)
                self.broken[name] = f"{type(exc).__name__}: {exc}"
                continue
            log.info("loaded collection %s (%d points)", name,
                     self.collections[name].points_count())
        alias_file = os.path.join(self.root, "aliases.json")
        if os.path.exists(alias_file):
            try:
                with open(alias_file, "rb") as f:
                    self.aliases = {a: c for a, c in jsonio.loads(f.read()).items()
                                    if c in self.collections or c in self.broken}
            except (OSError, ValueError, AttributeError):
                log.exception("aliases.json is unreadable; starting without aliases")

    def _finish_swap(self, entry: str, path: str) -> None:
        """A replaced collection parked by `install`: if the new one made it into place the
        swap completed (drop the old); if not, a crash hit between the two renames, so the
        old collection goes back."""
        try:
            name = bytes.fromhex(entry.split("-")[1]).decode()
        except (IndexError, ValueError):
            shutil.rmtree(path, ignore_errors=True)
            return
        final = os.path.join(self.coll_root, name)
        if os.path.exists(final):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.rename(path, final)
            fsync_dir(self.coll_root)
            log.warning("restored collection %s after an interrupted snapshot recovery", name)

    def start_flusher(self) -> None:
        self._flusher = threading.Thread(target=self._flush_loop, name="quiver-flusher",
                                         daemon=True)
        self._flusher.start()
        self._indexer = threading.Thread(target=self._index_loop, name="quiver-indexer",
                                         daemon=True)
        self._indexer.start()

    def _index_loop(self) -> None:
        """The optimizer: builds HNSW indexes one at a time, off every request's path, at a
        lower CPU priority; sealed segments are hashed first (snapshots then hash less)."""
        indexing.lower_priority()
        while not self._stop.is_set():
            built = False
            for coll in list(self.collections.values()):
                if self._stop.is_set():
                    return
                try:
                    built = (coll.digest_sealed() or coll.build_pending_index()
                             or coll.quantize_pending() or built)
                except Exception:  # noqa: BLE001 - searches stay exact meanwhile
                    log.exception("building an index for %s failed", coll.name)
            if not built:
                self._stop.wait(0.2)

    def _flush_loop(self) -> None:
        while not self._stop.wait(0.5):
            for coll in list(self.collections.values()):
                try:
                    if coll.vacuum():
                        coll.flush()
                    elif flushing.needs_flush(coll, self.flush_wal_bytes, self.flush_idle_s):
                        coll.flush()
                except Exception:  # noqa: BLE001 - keep flushing others; the WAL is intact
                    log.exception("background flush of %s failed", coll.name)

    def close(self) -> None:
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=30)
        if self._indexer is not None:
            self._indexer.join(timeout=10)  # a build still running is discarded (daemon thread)
        for coll in list(self.collections.values()):
            coll.close()

    # ---- collections -------------------------------------------------------------------------

    def resolve(self, name: str) -> str:
        if name in self.collections:
            return name
        target = self.aliases.get(name)
        if target is not None and target in self.collections:
            return target
        broken = self.broken.get(name) or self.broken.get(target or "")
        if broken:
            raise StorageError(f"collection `{target or name}` failed to load: {broken}")
        raise not_found(name)

    def get(self, name: str) -> Collection:
        try:
            return self.collections[name]
        except KeyError:
            return self.collections[self.resolve(name)]

    def exists(self, name: str) -> bool:
        try:
            self.resolve(name)
            return True
        except NotFound:
            return False

    def create(self, name: str, body: dict[str, Any]) -> Collection:
        validate_name(name)
        with self.lock:
            if name in self.collections or name in self.aliases or name in self.broken:
                raise AlreadyExists(f"Collection `{name}` already exists!")
            tmp = os.path.join(self.root, f".tmp-{uuid.uuid4().hex}")
            final = os.path.join(self.coll_root, name)
            renamed = False
            try:
                coll = Collection.create(name, tmp, body, self.wal_fsync)
                coll.close(flush=False)
                os.rename(tmp, final)
                renamed = True
                fsync_dir(self.coll_root)
                coll = Collection.load(name, final, self.wal_fsync)
            except BaseException:
                if renamed:  # not durable or not loadable: take it back, a retry starts clean
                    try:
                        os.rename(final, tmp)
                    except OSError:
                        shutil.rmtree(final, ignore_errors=True)
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self.collections[name] = coll
            return coll

    def delete(self, name: str) -> bool:
        with self.lock:
            try:
                real = self.resolve(name)
            except NotFound:
                return False
            if real != name and name in self.aliases:
                return False  # deleting by alias is not allowed in Qdrant: it is a no-op
            coll = self.collections.pop(real)
            coll.close(flush=False)
            trash = os.path.join(self.root, f".trash-{uuid.uuid4().hex}")
            os.rename(coll.path, trash)
            fsync_dir(self.coll_root)
            stale = [a for a, c in self.aliases.items() if c == real]
            if stale:
                for a in stale:
                    del self.aliases[a]
                self._save_aliases()
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def staging_dir(self) -> str:
        """A fresh directory on the storage filesystem (removed at start-up if left behind)."""
        path = os.path.join(self.root, f".tmp-{uuid.uuid4().hex}")
        os.makedirs(path)
        return path

    def install(self, name: str, staged: str, replace: bool,
                built: Collection | None = None) -> Collection:
        """Swap a fully built collection directory in under the catalog lock (`built`: the
        live collection already open on it, saving a reload). On any failure the previous
        collection (if any) is put back and keeps serving."""
        validate_name(name)
        trash: str | None = None
        with self.lock:
            old = self.collections.get(name)
            if old is None and (name in self.aliases or name in self.broken):
                raise AlreadyExists(f"Collection `{name}` already exists!")
            if old is not None and not replace:
                raise AlreadyExists(f"Collection `{name}` already exists!")
            final = os.path.join(self.coll_root, name)
            if old is not None:
                with old.flush_lock, old.write_lock:  # no write may slip in during the swap
                    old.close(flush=False)
                trash = os.path.join(self.root,
                                     f".swap-{name.encode().hex()}-{uuid.uuid4().hex}")
                os.rename(old.path, trash)
                fsync_dir(self.root)
            try:
                os.rename(staged, final)
                fsync_dir(self.coll_root)
                if built is not None:
                    built.relocate(final)
                    coll = built
                else:
                    coll = Collection.load(name, final, self.wal_fsync)
            except BaseException:
                if built is not None:
                    built.close(flush=False)
                if os.path.exists(final) and not os.path.exists(staged):
                    os.rename(final, staged)
                if trash is not None:
                    os.rename(trash, final)
                    fsync_dir(self.coll_root)
                    self.collections[name] = Collection.load(name, final, self.wal_fsync)
                raise
            self.collections[name] = coll
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
        return coll

    def names(self) -> list[str]:
        return list(self.collections)

    # ---- aliases -------------------------------------------------------------------------------

    def _save_aliases(self) -> None:
        write_atomic(os.path.join(self.root, "aliases.json"), jsonio.dumps(self.aliases))

    def update_aliases(self, actions: Any) -> None:
        with self.lock:
            self.aliases = applied_aliases(self.collections, self.aliases, actions)
            self._save_aliases()

    def list_aliases(self, collection: str | None = None) -> list[dict[str, str]]:
        return [{"alias_name": a, "collection_name": c} for a, c in self.aliases.items()
                if collection is None or c == collection]


def applied_aliases(collections: Container[str], old: dict[str, str], actions: Any
                    ) -> dict[str, str]:
    """The alias table (alias → collection) after Qdrant's alias `actions`, all or nothing:
    an error raises and `old` is unchanged. An alias may not take a collection's name;
    re-pointing an existing alias is allowed, as in Qdrant. (The cluster's aliases apply
    the same rules: api/cluster/aliases.py.)"""
    if not isinstance(actions, list):
        raise BadRequest("`actions` must be a list")
    new = dict(old)
    for action in actions:
        if not isinstance(action, dict) or len(action) != 1:
            raise BadRequest(f"invalid alias action: {action!r}")
        (kind, body), = action.items()
        if not isinstance(body, dict):
            raise BadRequest(f"invalid alias action: {action!r}")
        if kind == "create_alias":
            coll = body.get("collection_name")
            alias = validate_name(body.get("alias_name"), "alias")
            if coll not in collections:
                raise not_found(str(coll))
            if alias in collections:
                raise AlreadyExists(f"Alias `{alias}` clashes with a collection name")
            new[alias] = str(coll)  # a key of `collections`
        elif kind == "delete_alias":
            gone = body.get("alias_name")
            if gone not in new:
                raise NotFound(f"Alias {gone} does not exists!")
            del new[gone]
        elif kind == "rename_alias":
            was, to = body.get("old_alias_name"), body.get("new_alias_name")
            if was not in new:
                raise NotFound(f"Alias {was} does not exists!")
            target = validate_name(to, "alias")
            if target in collections:
                raise AlreadyExists(f"Alias `{target}` clashes with a collection name")
            new[target] = new.pop(was)
        else:
            raise BadRequest(f"unknown alias action {kind!r}")
    return new
