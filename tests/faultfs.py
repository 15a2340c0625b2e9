"""A fault-injecting, crash-simulating file layer for in-process storage tests.

`FaultFS(root).install(monkeypatch)` replaces the module globals `os` and `open` of the
storage modules (`engine.durable`, `engine.wal`, `engine.segment_store`, `engine.collection`,
`engine.flush`, `engine.catalog`) with proxies. Every mutating call they make on a path under `root` —
`os.open` for writing, `os.write`/`os.pwrite`, `os.fsync`/`os.fdatasync` (files and
directories), `os.ftruncate`, `os.replace`/`os.rename`, `os.unlink`/`os.remove`,
`os.mkdir`/`os.makedirs`, `open(..., "w"/"a"/"x"/"+")` and the returned file's
`write`/`truncate` — is one numbered operation that can

- fail: `fail(op, path_contains=..., nth=..., times=..., errno_=...)` raises `OSError` for
  the matching calls (EIO, ENOSPC, ...);
- cut the power: `crash_at = N` raises `PowerCut` (a BaseException, so no `except Exception`
  swallows it) at the N-th operation, and every operation after it; nothing after the cut is
  recorded as durable.

**Durability model** (what a power cut keeps), as SQLite's crash VFS, RocksDB's
FaultInjectionTestFS and LazyFS: each file's content is durable as of its last `fsync`
(before that: its content when the layer was installed, or empty for a file created since),
and each directory's entries (name → file) are durable as of the directory's last `fsync`
(creates, renames and unlinks since then are lost). Files are tracked by identity (inode, with
a fresh identity for every file created through the layer, so inode reuse cannot alias), so
a renamed file keeps its synced content. `image(dest, mode)` writes the state a power cut
leaves into a fresh directory:

- `strict`: exactly the durable state;
- `torn`: as strict, but a file whose unsynced change only appended keeps a random prefix of
  the appended bytes (a torn write);
- `zeros`: as torn, but the kept unsynced bytes read back as zeros (ext4 data=writeback);
- `eager`: as torn, and each directory independently shows either its durable or its
  current entries (namespace changes that reached the disk early).

**Limits.** Only the modules listed above are intercepted; numpy's own file reads
(`np.fromfile`, `np.memmap`, `np.load`) are reads and pass through. `shutil.rmtree` runs on
the real `os`, so no fault or cut is injected inside it, but its effect is still modelled: a
removed entry stays in the crash image until its directory is fsynced. Files created under
`root` by anything else are reported in `unmodelled` (tests assert it stays empty). The
snapshot subsystem (tarfile, its own temp files) is not intercepted. A write is modelled
whole or (torn/zeros modes) as a prefix of the unsynced tail, not as arbitrary sectors.
"""

from __future__ import annotations

import builtins
import errno
import os as _os
import random
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MODULES = ("engine.durable", "engine.wal", "engine.segment_store", "engine.collection",
           "engine.flush", "engine.catalog")
_WRITE_FLAGS = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_TRUNC | _os.O_APPEND


class PowerCut(BaseException):
    """The simulated power went out at this operation."""


@dataclass
class Rule:
    op: str | None
    path_contains: str | None
    nth: int | None  # fail only the nth matching call (1-based); None: every matching call
    times: int | None  # stop after failing this many times; None: forever
    err: int
    seen: int = 0
    fired: int = 0

    def check(self, op: str, path: str) -> bool:
        if self.op is not None and self.op != op:
            return False
        if self.path_contains is not None and self.path_contains not in path:
            return False
        self.seen += 1
        if self.nth is not None and self.seen != self.nth:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True


class FaultFS:
    def __init__(self, root: str | _os.PathLike[str], real_sync: bool = False) -> None:
        self.root = _os.path.realpath(root)
        self.real_sync = real_sync  # the model decides what is durable: skip the slow syscall
        self.ops = 0
        self.crash_at: int | None = None
        self.crashed = False
        self.rules: list[Rule] = []
        self.trace: list[tuple[int, str, str]] = []
        self.unmodelled: list[str] = []
        self._next = 0
        self.lid_of_ino: dict[int, int] = {}
        self.is_dir: dict[int, bool] = {}
        self.data: dict[int, bytes] = {}  # durable content per file id
        self.dirs: dict[int, dict[str, int]] = {}  # durable entries per directory id
        self.root_lid = self._baseline()
        self.os = _OsProxy(self)

    # ---- set-up ------------------------------------------------------------------------------

    def install(self, monkeypatch: Any) -> FaultFS:
        import importlib  # noqa: PLC0415

        for name in MODULES:
            mod = importlib.import_module(name)
            monkeypatch.setattr(mod, "os", self.os, raising=True)
            monkeypatch.setattr(mod, "open", self.open, raising=False)
        return self

    def fail(self, op: str | None = None, path_contains: str | None = None,
             nth: int | None = None, times: int | None = 1, errno_: int = errno.EIO) -> Rule:
        rule = Rule(op, path_contains, nth, times, errno_)
        self.rules.append(rule)
        return rule

    def clear_faults(self) -> None:
        self.rules.clear()

    def _new_lid(self, ino: int, is_dir: bool) -> int:
        self._next += 1
        self.lid_of_ino[ino] = self._next
        self.is_dir[self._next] = is_dir
        return self._next

    def _baseline(self) -> int:
        """Everything present at install time is durable."""
        def walk(path: str) -> int:
            st = _os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                lid = self._new_lid(st.st_ino, True)
                self.dirs[lid] = {e: walk(_os.path.join(path, e)) for e in _os.listdir(path)}
                return lid
            lid = self._new_lid(st.st_ino, False)
            with builtins.open(path, "rb") as f:
                self.data[lid] = f.read()
            return lid
        return walk(self.root)

    # ---- bookkeeping -------------------------------------------------------------------------

    def under(self, path: Any) -> bool:
        try:
            p = _os.path.realpath(_os.fspath(path))
        except (TypeError, ValueError):
            return False
        return p == self.root or p.startswith(self.root + _os.sep)

    def op(self, name: str, path: str) -> None:
        """Count one mutating operation; cut the power or raise an injected error."""
        self.ops += 1
        self.trace.append((self.ops, name, path))
        if self.crashed or (self.crash_at is not None and self.ops >= self.crash_at):
            self.crashed = True
            raise PowerCut(f"power cut at operation {self.ops} ({name} {path})")
        for rule in self.rules:
            if rule.check(name, path):
                raise OSError(rule.err, f"{_os.strerror(rule.err)} (injected on {name})", path)

    def lid(self, ino: int, is_dir: bool, path: str) -> int:
        lid = self.lid_of_ino.get(ino)
        if lid is None:
            self.unmodelled.append(path)
            lid = self._new_lid(ino, is_dir)
            if is_dir:
                self.dirs[lid] = {}
            else:
                with builtins.open(path, "rb") as f:
                    self.data[lid] = f.read()
        return lid

    def created(self, path: str, is_dir: bool) -> None:
        st = _os.lstat(path)
        lid = self._new_lid(st.st_ino, is_dir)
        if is_dir:
            self.dirs[lid] = {}
        else:
            self.data[lid] = b""

    def synced(self, fd: int) -> None:
        if self.crashed:
            return
        st = _os.fstat(fd)
        path = _os.readlink(f"/proc/self/fd/{fd}")
        if stat.S_ISDIR(st.st_mode):
            lid = self.lid(st.st_ino, True, path)
            entries = {}
            for e in _os.listdir(path):
                cst = _os.lstat(_os.path.join(path, e))
                entries[e] = self.lid(cst.st_ino, stat.S_ISDIR(cst.st_mode),
                                      _os.path.join(path, e))
            self.dirs[lid] = entries
        else:
            lid = self.lid(st.st_ino, False, path)
            with builtins.open(f"/proc/self/fd/{fd}", "rb") as f:  # works for O_WRONLY fds
                self.data[lid] = f.read()

    # ---- the crash image ---------------------------------------------------------------------

    def current(self) -> tuple[dict[int, bytes], dict[int, dict[str, int]]]:
        """What the page cache holds now (a kill -9 would keep this)."""
        files: dict[int, bytes] = {}
        dirs: dict[int, dict[str, int]] = {}

        def walk(path: str) -> int | None:
            st = _os.lstat(path)
            lid = self.lid_of_ino.get(st.st_ino)
            if lid is None:
                return None
            if stat.S_ISDIR(st.st_mode):
                entries = {}
                for e in _os.listdir(path):
                    c = walk(_os.path.join(path, e))
                    if c is not None:
                        entries[e] = c
                dirs[lid] = entries
            else:
                with builtins.open(path, "rb") as f:
                    files[lid] = f.read()
            return lid
        walk(self.root)
        return files, dirs

    def image(self, dest: str | _os.PathLike[str], mode: str = "strict", seed: int = 0) -> str:
        """Write what survives a power cut now into `dest` (a new directory)."""
        rng = random.Random(seed)
        now_files, now_dirs = self.current() if mode != "strict" else ({}, {})

        def content(lid: int) -> bytes:
            durable = self.data.get(lid, b"")
            if mode == "strict":
                return durable
            cur = now_files.get(lid)
            if cur is None or len(cur) <= len(durable) or not cur.startswith(durable):
                return durable
            keep = rng.randint(0, len(cur) - len(durable))
            extra = cur[len(durable):len(durable) + keep]
            return durable + (b"\0" * keep if mode == "zeros" else extra)

        def entries(lid: int) -> dict[str, int]:
            durable = self.dirs.get(lid, {})
            if mode == "eager" and lid in now_dirs and rng.random() < 0.5:
                return now_dirs[lid]
            return durable

        def build(lid: int, path: str, depth: int = 0) -> None:
            _os.makedirs(path, exist_ok=depth == 0)
            for name, child in entries(lid).items():
                target = _os.path.join(path, name)
                if self.is_dir.get(child):
                    build(child, target, depth + 1)
                else:
                    with builtins.open(target, "wb") as f:
                        f.write(content(child))
        dest = _os.fspath(dest)
        build(self.root_lid, dest)
        return dest

    # ---- open() ------------------------------------------------------------------------------

    def open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        writing = any(c in mode for c in "wax+")
        if not writing or isinstance(file, int) or not self.under(file):
            return builtins.open(file, mode, *args, **kwargs)
        path = _os.fspath(file)
        existed = _os.path.exists(path)
        self.op("open", path)
        f = builtins.open(path, mode, *args, **kwargs)
        if not existed:
            self.created(path, False)
        return _File(f, self, path)


class _File:
    """A file object whose writes and truncations go through the layer."""

    def __init__(self, f: Any, fs: FaultFS, path: str) -> None:
        self._f, self._fs, self._path = f, fs, path

    def write(self, data: Any) -> int:
        self._fs.op("write", self._path)
        return self._f.write(data)

    def truncate(self, size: int | None = None) -> int:
        self._fs.op("truncate", self._path)
        return self._f.truncate(size)

    def __enter__(self) -> _File:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class _OsProxy:
    """The `os` module as the storage modules see it."""

    def __init__(self, fs: FaultFS) -> None:
        self._fs = fs
        self.path = _os.path

    def __getattr__(self, name: str) -> Any:
        return getattr(_os, name)

    def _fd_path(self, fd: int) -> str:
        try:
            return _os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return ""

    def open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None) -> int:
        if not (flags & _WRITE_FLAGS) or not self._fs.under(path):
            return _os.open(path, flags, mode)
        existed = _os.path.exists(path)
        self._fs.op("os.open", _os.fspath(path))
        fd = _os.open(path, flags, mode)
        if not existed and flags & _os.O_CREAT:
            self._fs.created(_os.fspath(path), False)
        return fd

    def _fd_op(self, name: str, fd: int, call: Callable[[], Any]) -> Any:
        path = self._fd_path(fd)
        if self._fs.under(path):
            self._fs.op(name, path)
        return call()

    def write(self, fd: int, data: Any) -> int:
        return self._fd_op("write", fd, lambda: _os.write(fd, data))

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        return self._fd_op("write", fd, lambda: _os.pwrite(fd, data, offset))

    def ftruncate(self, fd: int, length: int) -> None:
        return self._fd_op("truncate", fd, lambda: _os.ftruncate(fd, length))

    def fsync(self, fd: Any) -> None:
        fd = fd if isinstance(fd, int) else fd.fileno()
        path = self._fd_path(fd)
        if not self._fs.under(path):
            return _os.fsync(fd)
        is_dir = stat.S_ISDIR(_os.fstat(fd).st_mode)
        self._fs.op("fsync_dir" if is_dir else "fsync", path)
        if self._fs.real_sync:
            _os.fsync(fd)
        self._fs.synced(fd)

    fdatasync = fsync

    def _path_op(self, name: str, path: Any, call: Callable[[], Any]) -> Any:
        if self._fs.under(path):
            self._fs.op(name, _os.fspath(path))
        return call()

    def replace(self, src: Any, dst: Any) -> None:
        return self._path_op("rename", dst, lambda: _os.replace(src, dst))

    def rename(self, src: Any, dst: Any) -> None:
        return self._path_op("rename", dst, lambda: _os.rename(src, dst))

    def unlink(self, path: Any) -> None:
        return self._path_op("unlink", path, lambda: _os.unlink(path))

    remove = unlink

    def mkdir(self, path: Any, mode: int = 0o777) -> None:
        self._path_op("mkdir", path, lambda: _os.mkdir(path, mode))
        if self._fs.under(path):
            self._fs.created(_os.fspath(path), True)

    def makedirs(self, path: Any, mode: int = 0o777, exist_ok: bool = False) -> None:
        path = _os.fspath(path)
        if not self._fs.under(path):
            return _os.makedirs(path, mode, exist_ok)
        head, tail = _os.path.split(path)
        if not tail:
            head, tail = _os.path.split(head)
        if head and tail and not _os.path.exists(head):
            self.makedirs(head, mode, exist_ok=True)
        if _os.path.isdir(path):
            if not exist_ok:
                raise FileExistsError(errno.EEXIST, "File exists", path)
            return None
        self.mkdir(path, mode)
        return None
