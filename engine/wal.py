"""Write-ahead log: append-only, length-prefixed, CRC-checked records with sequence numbers.

Record layout (little endian):  u32 body_len | u32 crc32(seq ‖ body) | u64 seq | body
body = u32 header_len | header (JSON) | raw array bytes (described in the header).

The log is a directory of files named by the first sequence number they hold. A flush
rotates to a new file; once the flushed state is durable, older files are deleted. On
replay a torn or corrupt tail (short read, bad CRC) ends the log: it is truncated away and
start-up continues.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from engine import jsonio
from engine.durable import fsync_dir, io_error
from engine.errors import StorageError

log = logging.getLogger("quiver.wal")

_HEAD = struct.Struct("<IIQ")
_U32 = struct.Struct("<I")
MAX_RECORD = 1 << 31


def encode(op: dict[str, Any]) -> bytes:
    """op → body. Arrays live under op["arrays"] (name → ndarray); the rest is JSON."""
    arrays: dict[str, np.ndarray] = op.get("arrays") or {}
    header = {k: v for k, v in op.items() if k != "arrays"}
    header["__arrays__"] = [
        [name, a.dtype.str, list(a.shape)] for name, a in arrays.items()
    ]
    h = jsonio.dumps(header, non_str_keys=True)
    parts = [_U32.pack(len(h)), h]
    parts.extend(np.ascontiguousarray(a).tobytes() for a in arrays.values())
    return b"".join(parts)


def decode(body: bytes) -> dict[str, Any]:
    (hlen,) = _U32.unpack_from(body, 0)
    header = jsonio.loads(body[4 : 4 + hlen])
    off = 4 + hlen
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, shape in header.pop("__arrays__"):
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        arrays[name] = np.frombuffer(body, dtype=dt, count=count, offset=off).reshape(shape)
        off += count * dt.itemsize
    header["arrays"] = arrays
    return header


class Wal:
    def __init__(self, directory: str, fsync: bool = True) -> None:
        self.dir = directory
        self.fsync = fsync
        os.makedirs(directory, exist_ok=True)
        self.lock = threading.Lock()
        self.last_seq = 0
        self._fd: int | None = None
        self._file_start: int | None = None
        self.bytes_since_rotate = 0
        self.fenced: str | None = None  # why appends are refused (see append)

    # ---- files ---------------------------------------------------------------------------

    def files(self) -> list[tuple[int, str]]:
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(".wal"):
                try:
                    out.append((int(name[:-4]), os.path.join(self.dir, name)))
                except ValueError:
                    continue
        return sorted(out)

    def _open_new(self, first_seq: int) -> None:
        """Switch appends to a new file, only once it is open and its directory entry is
        durable; on failure the current file stays in use (and a file made here goes)."""
        path = os.path.join(self.dir, f"{first_seq:020d}.wal")
        existed = os.path.exists(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise io_error(exc, "creating a write-ahead log file") from exc
        try:
            fsync_dir(self.dir)
        except OSError as exc:
            os.close(fd)
            if not existed:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            raise io_error(exc, "creating a write-ahead log file") from exc
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._file_start = first_seq
        self.bytes_since_rotate = 0

    # ---- replay ----------------------------------------------------------------------------

    def replay(self, after_seq: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (seq, op) for every intact record with seq > after_seq, in order."""
        files = self.files()
        self.last_seq = after_seq
        for i, (_, path) in enumerate(files):
            good_end = 0
            with open(path, "rb") as f:
                data = f.read()
            off = 0
            while off + _HEAD.size <= len(data):
                blen, crc, seq = _HEAD.unpack_from(data, off)
                end = off + _HEAD.size + blen
                if blen > MAX_RECORD or end > len(data):
                    break
                body = data[off + _HEAD.size : end]
                if zlib.crc32(body, zlib.crc32(data[off + 8 : off + 16])) != crc:
                    break
                off = good_end = end
                if seq > after_seq:
                    self.last_seq = max(self.last_seq, seq)
                    yield seq, decode(body)
            if good_end < len(data):
                if i != len(files) - 1:
                    log.error("WAL file %s is corrupt at offset %d (not at the tail)", path,
                              good_end)
                else:
                    log.warning("WAL %s: ignoring torn tail (%d bytes)", path,
                                len(data) - good_end)
                with open(path, "r+b") as f:
                    f.truncate(good_end)
                    os.fsync(f.fileno())
                # Records after a corrupt spot cannot be trusted to be contiguous.
                for _, later in files[i + 1 :]:
                    os.unlink(later)
                break

    def open_for_append(self) -> None:
        files = self.files()
        if files:
            path = files[-1][1]
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            self._file_start = files[-1][0]
            self.bytes_since_rotate = sum(os.path.getsize(p) for _, p in files)
        else:
            self._open_new(self.last_seq + 1)

    # ---- append ------------------------------------------------------------------------------

    def append(self, op: dict[str, Any]) -> int:
        """Append one record durably; returns its sequence number. Raises on I/O failure and
        leaves no partial record behind: the record is truncated away (and the truncation
        synced). If even that fails, the record's fate is unknown, so the log is fenced:
        every later append fails until the collection is reopened (which replays what is
        intact), and no sequence number is ever reused."""
        body = encode(op)
        with self.lock:
            if self.fenced is not None:
                raise StorageError(f"the write-ahead log is unusable after an I/O error "
                                   f"({self.fenced}); restart to recover")
            seq = self.last_seq + 1
            seq_b = struct.pack("<Q", seq)
            rec = _HEAD.pack(len(body), zlib.crc32(body, zlib.crc32(seq_b)), seq) + body
            if self._fd is None:
                raise StorageError("the write-ahead log is closed")
            pos = None
            try:
                pos = os.lseek(self._fd, 0, os.SEEK_END)
                written = os.write(self._fd, rec)
                while written < len(rec):
                    written += os.write(self._fd, rec[written:])
                if self.fsync:
                    os.fsync(self._fd)
            except OSError as exc:
                if pos is not None:
                    try:
                        os.ftruncate(self._fd, pos)
                        if self.fsync:
                            os.fsync(self._fd)
                    except OSError as again:
                        self.fenced = f"{exc}; then {again}"
                        log.error("WAL %s: a failed append could not be undone (%s); no "
                                  "further writes until restart", self.dir, self.fenced)
                raise io_error(exc, "appending to the write-ahead log") from exc
            self.last_seq = seq
            self.bytes_since_rotate += len(rec)
            return seq

    def rotate(self) -> int:
        """Start a new file for records after the current last seq; returns that seq."""
        with self.lock:
            self._open_new(self.last_seq + 1)
            return self.last_seq

    def drop_before(self, seq: int) -> None:
        """Delete files all of whose records are <= seq (i.e. files older than the current one
        whose successor starts at or before seq + 1)."""
        files = self.files()
        for (_start, path), nxt in zip(files, files[1:], strict=False):
            if nxt[0] <= seq + 1:
                try:
                    os.unlink(path)
                except OSError as exc:  # harmless: replay skips records <= the flushed seq
                    log.warning("WAL: could not remove %s (%s); retried after the next flush",
                                path, exc)
        self.bytes_since_rotate = sum(os.path.getsize(p) for _, p in self.files())

    def close(self) -> None:
        with self.lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
