"""Reading a collection archive in place: validate, hash, and locate every member.

Recovery never extracts an archive. The archive file itself becomes part of the recovered
collection (hard-linked into its `blobs/` directory, see snapshots.recovery), and segments
map their vectors and ids straight from it. So reading is two passes over the file and no
writes:

1. the tar headers, seeking over the data: members must be exactly the manifest's (which
   comes first), regular files, no duplicates, sizes as declared and inside the file;
2. every member's sha256 (and the whole file's when a `checksum` is given), on a few
   threads with `pread`, vectors checked for NaN/inf in the same read.

tarfile only parses headers here; its extraction machinery is never used and nothing is
written, so hostile member names, links and devices have nowhere to go.
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import jsonio
from engine.errors import BadInput
from engine.npy import read_header
from engine.tasks import Cancelled
from snapshots.archive import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MAX_MEMBERS,
    MEMBER_RE,
    SnapshotFormatError,
)

HASH_THREADS = max(2, min(4, os.cpu_count() or 2))
PIECE = 64 << 20  # bytes hashed between two progress reports
Progress = Callable[[int], None]
_VECTORS = re.compile(r"^segments/\d+/vectors-[0-9a-f]*\.npy$")


class ChecksumMismatch(BadInput):
    prefix = ""


@dataclass(frozen=True)
class Extent:
    offset: int  # of the member's data within the archive file
    size: int


@dataclass(frozen=True)
class NpyLayout:
    dtype: np.dtype
    shape: tuple[int, ...]
    data_offset: int  # where the array's bytes start within the archive file


class Scanned:
    """A verified archive: its manifest and where each member's bytes lie in the file."""

    def __init__(self, path: str, manifest: dict[str, Any], members: dict[str, Extent],
                 finite: dict[str, bool]) -> None:
        self.path = path
        self.manifest = manifest
        self.members = members
        self.finite = finite  # vectors members checked during hashing (absent: not checked)
        self.sha256 = {m["name"]: m["sha256"] for m in manifest["members"]}
        self.members_hashed = False  # whether the Verifier checks `sha256` (else a checksum)

    def has(self, name: str) -> bool:
        return name in self.members

    def read(self, name: str) -> bytes:
        ext = self._extent(name)
        with open(self.path, "rb") as f:
            f.seek(ext.offset)
            return f.read(ext.size)

    def npy(self, name: str) -> NpyLayout:
        """Parse a member's .npy header: plain C-order arrays of a fixed dtype only."""
        ext = self._extent(name)
        with open(self.path, "rb") as f:
            f.seek(ext.offset)
            head = io.BytesIO(f.read(min(ext.size, 64 << 10)))
        try:
            header = read_header(head)  # not numpy's parser: see engine/npy.py
        except ValueError as exc:
            raise SnapshotFormatError(f"Invalid snapshot: unreadable array {name!r} ({exc})"
                                      ) from None
        start = ext.offset + head.tell()
        if header.fortran or header.nbytes != ext.offset + ext.size - start:
            raise SnapshotFormatError(f"Invalid snapshot: unreadable array {name!r}")
        return NpyLayout(header.dtype, header.shape, start)

    def array(self, name: str, mmap: bool = False) -> np.ndarray:
        """A member's array: read into memory, or mapped read-only from the archive."""
        lay = self.npy(name)
        count = int(np.prod(lay.shape, dtype=np.int64)) if lay.shape else 1
        if mmap and count:
            return np.memmap(self.path, lay.dtype, "r", offset=lay.data_offset, shape=lay.shape)
        with open(self.path, "rb") as f:
            f.seek(lay.data_offset)
            return np.fromfile(f, lay.dtype, count).reshape(lay.shape)

    def _extent(self, name: str) -> Extent:
        ext = self.members.get(name)
        if ext is None:
            raise SnapshotFormatError(f"Invalid snapshot: missing {name}")
        return ext


class Verifier:
    """Hashes an archive on a few threads while the caller already uses it (recovery builds
    the new collection in staging meanwhile; nothing is installed before `wait`). A format
    error raised inside the `with` block is replaced by the corruption that explains it (a
    `checksum` mismatch first, then a member's sha256), which is the more useful answer.
    `progress(n)` hears of every piece hashed (from the hashing threads; it may raise
    Cancelled, which `wait` then raises)."""

    def __init__(self, path: str, checksum: str | None = None, base: int = 0,
                 length: int | None = None, progress: Progress | None = None) -> None:
        self.checksum = checksum
        self._progress = progress
        fd = os.open(path, os.O_RDONLY)
        try:
            if length is None:
                length = os.fstat(fd).st_size - base
            # start the kernel's readahead over the whole archive now: the disk streams it
            # in order while the threads below hash what has arrived
            os.posix_fadvise(fd, base, length, os.POSIX_FADV_WILLNEED)
            self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if base + length else None
        finally:
            os.close(fd)
        self._pool = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="quiver-scan")
        self._whole = (self._pool.submit(_read_range, self._mm, base, length, True, False,
                                         progress) if checksum else None)
        self._jobs: dict[str, Any] = {}
        self._scanned: Scanned | None = None

    def check_members(self, scanned: Scanned) -> None:
        """Hash every member against the manifest, unless a `checksum` covers every byte
        already (then member hashes add nothing: only the vectors are read, for NaN)."""
        self._scanned = scanned
        scanned.members_hashed = self.checksum is None
        for name, ext in sorted(scanned.members.items(), key=lambda m: -m[1].size):
            vectors = bool(_VECTORS.match(name))
            if self.checksum is None or vectors:
                # progress: the bytes hashed (the whole file's, else each member's)
                self._jobs[name] = self._pool.submit(
                    _read_range, self._mm, ext.offset, ext.size, self.checksum is None,
                    vectors, self._progress if self.checksum is None else None)

    def wait(self) -> None:
        """Raise if the archive or any member is corrupt; record the vectors' finiteness."""
        if self._whole is not None:
            actual = self._whole.result()[0]
            if actual != self.checksum:
                raise ChecksumMismatch(f"Checksum mismatch: expected {self.checksum}, "
                                       f"actual {actual}")
        if self._scanned is None:
            return
        for name, job in self._jobs.items():
            digest, finite = job.result()
            if digest is not None and digest != self._scanned.sha256[name]:
                raise SnapshotFormatError(f"Invalid snapshot: member {name!r} is corrupt "
                                          "(sha256 mismatch)")
            if finite is not None:
                self._scanned.finite[name] = finite

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if isinstance(exc, Exception) \
                    and not isinstance(exc, ChecksumMismatch | Cancelled) \
                    and (self.checksum is not None or isinstance(exc, SnapshotFormatError)):
                self.wait()  # raises the corruption behind `exc`, if there is one
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            if self._mm is not None:
                self._mm.close()


def scan(path: str, checksum: str | None = None) -> Scanned:
    """Validate the archive at `path` completely (headers, checksum, every member)."""
    with Verifier(path, checksum) as verifier:
        scanned = read_headers(path)
        verifier.check_members(scanned)
        verifier.wait()
    return scanned


def read_headers(path: str, base: int = 0, length: int | None = None) -> Scanned:
    """The archive's structure and manifest (nothing hashed yet: see Verifier). `base` and
    `length` select an archive nested in another file (a full snapshot's member)."""
    if length is None:
        length = os.path.getsize(path) - base
    manifest, members = _headers(path, base, length)
    return Scanned(path, manifest, members, {})


class _Window(io.RawIOBase):
    """Read-only, seekable view of bytes [base, base + length) of an open file."""

    def __init__(self, f: Any, base: int, length: int) -> None:
        self._fd = f.fileno()
        self._base, self._length, self._pos = base, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        start = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, start + offset)
        return self._pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._length - self._pos)
        if n <= 0:
            return 0
        got = os.preadv(self._fd, [memoryview(b).cast("B")[:n]], self._base + self._pos)
        self._pos += got
        return got


def _headers(path: str, base: int, size: int) -> tuple[dict[str, Any], dict[str, Extent]]:
    manifest: dict[str, Any] | None = None
    expected: dict[str, dict[str, Any]] = {}
    members: dict[str, Extent] = {}
    try:
        with open(path, "rb") as f:
            try:
                tar = tarfile.open(fileobj=_Window(f, base, size), mode="r:")
            except tarfile.TarError as exc:
                raise SnapshotFormatError(f"Invalid snapshot: not a tar archive ({exc})"
                                          ) from None
            for info in _capped(tar):
                if info.offset_data + info.size > size:
                    raise SnapshotFormatError("Invalid snapshot: truncated archive")
                if manifest is None:
                    if info.name != MANIFEST or not info.isreg() \
                            or info.size > MAX_MANIFEST_BYTES:
                        raise SnapshotFormatError("Invalid snapshot: manifest.json must come "
                                                  "first")
                    src = tar.extractfile(info)
                    assert src is not None
                    manifest = _check_manifest(src.read())
                    expected = {m["name"]: m for m in manifest["members"]}
                    total = sum(m["size"] for m in expected.values())
                    if total > size:  # a size bomb, or a truncated archive
                        raise SnapshotFormatError(f"Invalid snapshot: the manifest declares "
                                                  f"{total} bytes of members, the archive "
                                                  f"holds {size}")
                    continue
                want = expected.get(info.name)
                if want is None or info.name in members:
                    raise SnapshotFormatError(f"Invalid snapshot: unexpected member "
                                              f"{info.name!r}")
                if not info.isreg() or info.issparse() or info.size != want["size"]:
                    raise SnapshotFormatError(f"Invalid snapshot: member {info.name!r} is not "
                                              "a regular file of the declared size")
                members[info.name] = Extent(base + info.offset_data, info.size)
    except (tarfile.TarError, EOFError) as exc:
        raise SnapshotFormatError(f"Invalid snapshot: damaged archive ({exc})") from None
    if manifest is None:
        raise SnapshotFormatError("Invalid snapshot: empty archive")
    missing = set(expected) - set(members)
    if missing:
        raise SnapshotFormatError(f"Invalid snapshot: missing members {sorted(missing)[:5]}")
    return manifest, members


def _capped(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    count = 0
    while (info := tar.next()) is not None:
        count += 1
        if count > MAX_MEMBERS + 1:
            raise SnapshotFormatError("Invalid snapshot: too many members")
        # headers only; keep nothing per member (member-count bombs). `members` is
        # TarFile's undocumented cache, absent from typeshed, hence the ignore
        tar.members = []  # type: ignore[attr-defined]
        yield info


def _check_manifest(raw: bytes) -> dict[str, Any]:
    try:
        manifest = jsonio.loads(raw)
    except jsonio.JSONDecodeError as exc:
        raise SnapshotFormatError(f"Invalid snapshot: manifest.json is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotFormatError("Invalid snapshot: not a Quiver collection snapshot")
    version = str(manifest.get("format_version", ""))
    m = re.match(r"^(\d+)\.(\d+)$", version)
    if not m:
        raise SnapshotFormatError(f"Invalid snapshot: bad format_version {version!r}")
    if int(m.group(1)) > FORMAT_VERSION[0]:
        raise SnapshotFormatError(
            f"Snapshot format version {version} is newer than this Quiver supports "
            f"({FORMAT_VERSION[0]}.x); upgrade Quiver to recover it")
    members = manifest.get("members")
    if not isinstance(members, list) or len(members) > MAX_MEMBERS:
        raise SnapshotFormatError("Invalid snapshot: bad member list")
    seen = set()
    for mem in members:
        if not isinstance(mem, dict) or not isinstance(mem.get("name"), str) \
                or not MEMBER_RE.fullmatch(mem["name"]) or mem["name"] in seen \
                or not isinstance(mem.get("size"), int) or mem["size"] < 0 \
                or not isinstance(mem.get("sha256"), str) \
                or not re.fullmatch(r"[0-9a-f]{64}", mem["sha256"]):
            raise SnapshotFormatError(f"Invalid snapshot: bad member entry {str(mem)[:200]}")
        seen.add(mem["name"])
    return manifest


def _read_range(mm: mmap.mmap | None, offset: int, size: int, hash_: bool = True,
                vectors: bool = False, progress: Progress | None = None
                ) -> tuple[str | None, bool | None]:
    """sha256 of `size` bytes at `offset` of the mapped archive, if `hash_`. For a vectors
    member, also whether its floats are all finite (None when its header cannot be read
    here; the array check then reports it). Each is one call over the whole range, straight
    from the page cache: hashlib and numpy release the GIL for all of it, so these threads
    run in parallel with each other and with the recovery's own Python work, which often
    holds the GIL for long stretches (JSON parsing, the id map)."""
    with memoryview(mm if mm is not None else b"") as whole:  # None: an empty file
        if offset + size > len(whole):
            raise SnapshotFormatError("Invalid snapshot: truncated archive")
        with whole[offset : offset + size] as view:
            digest = _sha256(view, progress) if hash_ else None
            if not vectors:
                return digest, None
            dtype, start = _float_layout(bytes(view[: 64 << 10]))
            if dtype is None or start > size or (size - start) % dtype.itemsize:
                return digest, None
            return digest, all_finite(np.frombuffer(view[start:], dtype))


def _sha256(view: memoryview, progress: Progress | None) -> str:
    """One call over the whole range, or (reporting progress) one per PIECE."""
    if progress is None:
        return hashlib.sha256(view).hexdigest()
    h = hashlib.sha256()
    for start in range(0, len(view), PIECE):
        with view[start : start + PIECE] as piece:
            h.update(piece)
        progress(min(PIECE, len(view) - start))
    return h.hexdigest()


def all_finite(x: np.ndarray) -> bool:
    """No NaN or inf in `x`: its sum is finite unless one is there (or the sum overflowed,
    then look closer, in 64 MiB pieces). One SIMD pass without a temporary, 2-3x cheaper
    than isfinite."""
    flat = x.reshape(-1)
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(flat, dtype=np.float64 if x.dtype == np.float64 else np.float32)
    if np.isfinite(total):
        return True
    step = max(1, (64 << 20) // x.itemsize)
    return all(np.isfinite(flat[s : s + step]).all() for s in range(0, len(flat), step))


def _float_layout(head: bytes) -> tuple[np.dtype | None, int]:
    """(float dtype, data offset) from an .npy header; (None, 0) if not a float array."""
    bio = io.BytesIO(head)
    try:
        dtype = read_header(bio).dtype  # called from the hashing threads: no ast here
    except ValueError:
        return None, 0
    return (dtype, bio.tell()) if dtype.kind == "f" else (None, 0)
