"""Small durable-file helpers: temp file → fsync → rename → directory fsync."""

from __future__ import annotations

import errno
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from engine.errors import StorageError, StorageFull


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def io_error(exc: OSError, what: str) -> Exception:
    """Translate an OSError into the engine's error kinds (507 for a full disk)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(what)
    return StorageError(f"{what}: {exc}")


# temp files being written now: a sweep of leftovers (segment_store.prune_generations, run
# by the flusher) must not take the one the indexer is writing next to it (it did: the
# rename failed and the index was rebuilt after a restart)
_writing: set[str] = set()  # their names (unique: a uuid each)
_writing_lock = threading.Lock()


def being_written(name: str) -> bool:
    """Whether the temp file called `name` is one an atomic write of this process has open
    (else a leftover of an interrupted one). Registered before the file exists, so a sweep
    that lists the file and then asks gets the true answer."""
    with _writing_lock:
        return name in _writing


@contextmanager
def atomic_writer(path: str) -> Iterator[BinaryIO]:
    """Write `path` atomically: readers see the old file or the complete new one."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}"[:255])
    with _writing_lock:
        _writing.add(os.path.basename(tmp))
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(directory)
    except OSError as exc:
        _silent_unlink(tmp)
        raise io_error(exc, f"writing {os.path.basename(path)}") from exc
    except BaseException:
        _silent_unlink(tmp)
        raise
    finally:
        with _writing_lock:
            _writing.discard(os.path.basename(tmp))


def write_atomic(path: str, data: bytes) -> None:
    with atomic_writer(path) as f:
        f.write(data)


def _silent_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def append_durable(path: str, data: bytes | memoryview, fsync: bool = True) -> None:
    """Append bytes to a file and fsync it (used for append-only segment files)."""
    try:
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
    except OSError as exc:
        raise io_error(exc, f"appending {os.path.basename(path)}") from exc
