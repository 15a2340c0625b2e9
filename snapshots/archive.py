"""Quiver's collection snapshot archive: a plain, uncompressed tar.

    manifest.json                          first: format version, Quiver version, collection
                                           config, payload indexes, aliases, WAL sequence number,
                                           segments, and every other member's size + sha256
    segments/<i>/ids.npy                   (kind, hi, lo) id records
    segments/<i>/vectors-<hexname>.npy     vectors in storage dtype (float32/float16/uint8)
    segments/<i>/present-<hexname>.npy     which rows have that vector
    segments/<i>/deleted.npy               deleted-row mask
    segments/<i>/versions.npy              per-row operation sequence numbers
    segments/<i>/sparse-<hexname>-<part>.npy  (1.1) a sparse vector's rows as CSR: `ends`
                                           (each row's end offset, int64), `indices` (uint32),
                                           `values` (float32); rows sorted by index
    segments/<i>/multi-<hexname>-<part>.npy   a multivector's rows: `ends` (each row's end
                                           offset, int64) and `tokens` ((t, dim) float32);
                                           only collections with multivectors have them
    segments/<i>/payloads.json             payload per row
    segments/<i>/hnsw-<hexname>-<part>.npy HNSW graph over the segment's leading rows (levels,
                                           offsets, neighbors, entry): recovery rebuilds the
                                           index from these and the vectors, never re-running
                                           construction; bounds-checked before faiss sees them

Format versions: 1.0 (dense vectors only), 1.1 (adds the sparse members). Readers accept
both: a 1.0 archive recovers with every sparse vector absent. Multivector members came
later without a version bump: an archive without multivectors is byte-for-byte what 1.1
wrote, and one with them needs a config (multivector_config) that older readers refuse.

Writing hashes every member in memory before its bytes go out, so the manifest can come
first, and hashes the whole archive as it streams (the `.checksum` sidecar): no file is
ever re-read. Reading (snapshots.scan) trusts nothing and extracts nothing: members must be
exactly the manifest's, in any order after it, regular files, no duplicates, sizes and
hashes as declared, arrays as configured; recovered segments then map the archive itself.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import re
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from engine import QUIVER_VERSION, jsonio
from engine.errors import BadRequest
from engine.npy import npy_parts, parts_sha256
from engine.segment import FrozenSegment

FORMAT = "quiver-collection-snapshot"
FORMAT_VERSION = (1, 1)
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20
MAX_MEMBERS = 100_000
MEMBER_RE = re.compile(r"^segments/(\d{1,9})/(ids|deleted|versions|payloads|vectors-[0-9a-f]*|"
                        r"present-[0-9a-f]*|hnsw-[0-9a-f]*-(?:levels|offsets|neighbors|entry)|"
                        r"sparse-[0-9a-f]*-(?:ends|indices|values)|"
                        r"multi-[0-9a-f]*-(?:ends|tokens))"
                        r"\.(npy|json)$")
CHUNK = 8 << 20


class SnapshotFormatError(BadRequest):
    """The archive is not a valid Quiver snapshot (400, nothing is touched)."""


@dataclass
class Member:
    name: str
    parts: list[bytes | memoryview]
    digest: str | None = None  # precomputed sha256 (sealed segments' vectors)

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts)

    def sha256(self) -> str:
        return self.digest or parts_sha256(self.parts)


def segment_members(index: int, fz: FrozenSegment) -> list[Member]:
    """Device → host sync of one frozen segment, as archive members."""
    base = f"segments/{index}/"
    out = [Member(base + "ids.npy", npy_parts(fz.id_recs)),
           Member(base + "deleted.npy", npy_parts(fz.deleted)),
           Member(base + "versions.npy", npy_parts(fz.versions))]
    for name in fz.matrices:
        hx = name.encode().hex()
        out.append(Member(base + f"vectors-{hx}.npy", npy_parts(fz.host_rows(name)),
                          fz.digests.get(name)))
        out.append(Member(base + f"present-{hx}.npy", npy_parts(fz.present[name])))
    for name, csr in fz.sparse.items():
        hx = name.encode().hex()
        out.append(Member(base + f"sparse-{hx}-ends.npy", npy_parts(csr.indptr[1:])))
        out.append(Member(base + f"sparse-{hx}-indices.npy", npy_parts(csr.indices)))
        out.append(Member(base + f"sparse-{hx}-values.npy", npy_parts(csr.values)))
        out.append(Member(base + f"present-{hx}.npy", npy_parts(fz.present[name])))
    for name, mb in fz.multi.items():
        hx = name.encode().hex()
        out.append(Member(base + f"multi-{hx}-ends.npy", npy_parts(mb.offsets[1:])))
        out.append(Member(base + f"multi-{hx}-tokens.npy", npy_parts(mb.tokens)))
        out.append(Member(base + f"present-{hx}.npy", npy_parts(fz.present[name])))
    out.append(Member(base + "payloads.json", [jsonio.dumps(fz.payloads)]))
    for name, hnsw in fz.ann.items():  # the graph only: its vectors are the segment's own
        hx = name.encode().hex()
        for key, arr in hnsw.graph().items():
            out.append(Member(base + f"hnsw-{hx}-{key}.npy", npy_parts(arr)))
    return out


class _Reader(io.RawIOBase):
    """A file object over a list of buffers (what tarfile.addfile reads from)."""

    def __init__(self, parts: list[bytes | memoryview]) -> None:
        self.parts = [memoryview(p).cast("B") for p in parts if len(p)]
        self.i = 0
        self.off = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while self.i < len(self.parts):
            part = self.parts[self.i]
            if self.off < len(part):
                n = min(len(b), len(part) - self.off)
                b[:n] = part[self.off : self.off + n]
                self.off += n
                return n
            self.i += 1
            self.off = 0
        return 0


class BackgroundHash:
    """sha256 computed on a second thread (hashlib releases the GIL), so hashing overlaps the
    reads and writes around it instead of adding to them. At most 8 chunks queue up."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._q: queue.Queue[Any] = queue.Queue(maxsize=8)
        self._t = threading.Thread(target=self._run, name="quiver-hash", daemon=True)
        self._t.start()

    def _run(self) -> None:
        while (chunk := self._q.get()) is not None:
            self._h.update(chunk)

    def update(self, data: bytes) -> None:
        self._q.put(data)

    def hexdigest(self) -> str:
        if self._t.is_alive():
            self._q.put(None)
            self._t.join()
        return self._h.hexdigest()


class HashingWriter(io.RawIOBase):
    """Counts and hashes everything written through it (the archive's sha256, while writing).
    `progress(n)` hears of every write once it is done (a task's progress; it may raise to
    stop the writing: a cancelled task)."""

    def __init__(self, f: BinaryIO, progress: Callable[[int], None] | None = None) -> None:
        self.f = f
        self.size = 0
        self._hash = BackgroundHash()
        self._progress = progress

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, b: Any) -> int:
        data = bytes(b)  # callers may reuse their buffer
        self._hash.update(data)
        n = self.f.write(data)
        self.size += len(data)
        if self._progress is not None:
            self._progress(len(data))
        return n if n is not None else len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        self.hexdigest()
        super().close()


@dataclass
class PreparedArchive:
    """Manifest + members with every hash computed and the exact tar size known, so the
    archive can be streamed somewhere that needs its size up front (a full snapshot's tar)."""

    entries: list[tuple[tarfile.TarInfo, list[bytes | memoryview]]]
    size: int


def prepare_archive(header: dict[str, Any], members: list[Member]) -> PreparedArchive:
    manifest = dict(header)
    # The manifest comes first, so member hashes precede the write: hash members on every core
    # (hashlib releases the GIL; a 1 GB collection is several segments, so several members).
    with ThreadPoolExecutor(max(1, min(len(members), os.cpu_count() or 1))) as pool:
        digests = list(pool.map(lambda m: m.sha256(), members))
    manifest.update(format=FORMAT, format_version=f"{FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}",
                    quiver_version=QUIVER_VERSION,
                    members=[{"name": m.name, "size": m.size, "sha256": d}
                             for m, d in zip(members, digests, strict=True)])
    now = int(time.time())
    entries = []
    for m in [Member(MANIFEST, [jsonio.dumps(manifest, indent=True)])] + members:
        info = tarfile.TarInfo(m.name)
        info.size, info.mode, info.mtime = m.size, 0o644, now
        entries.append((info, m.parts))
    return PreparedArchive(entries, tar_size([info for info, _ in entries]))


def tar_size(infos: list[tarfile.TarInfo]) -> int:
    """The exact size of the GNU tar tarfile writes for these members: header blocks, data
    padded to 512; then two zero blocks and padding to a whole record (TarFile.close)."""
    size = 0
    for info in infos:
        size += len(info.tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape"))
        size += -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    size += 2 * tarfile.BLOCKSIZE
    return -(-size // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def bundle_size(first: tuple[str, bytes], archives: dict[str, PreparedArchive]) -> int:
    """The exact size of what `write_bundle` writes (a full snapshot's progress total)."""
    infos = []
    for name, size in [(first[0], len(first[1]))] + [(m, p.size) for m, p in archives.items()]:
        info = tarfile.TarInfo(name)
        info.size = size
        infos.append(info)
    return tar_size(infos)


def write_prepared(out: BinaryIO | io.RawIOBase, prepared: PreparedArchive) -> None:
    # Plain "w" (not the "w|" stream mode, whose small buffer re-slices every write) with
    # 8 MiB copies: the archive streams out at memory speed.
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # tarfile's copy size: not in typeshed
        for info, parts in prepared.entries:
            tar.addfile(info, io.BufferedReader(_Reader(parts), buffer_size=CHUNK))


def write_bundle(out: BinaryIO | io.RawIOBase, first: tuple[str, bytes],
                 archives: dict[str, PreparedArchive]) -> None:
    """A tar of one small file (`first`: name, bytes) and then whole prepared archives as
    members (a full snapshot): each streams in through an ArchivePipe, never via a temp file."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # tarfile's copy size: not in typeshed
        name, data = first
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))
        for member, prepared in archives.items():
            info = tarfile.TarInfo(member)
            info.size, info.mtime, info.mode = prepared.size, int(time.time()), 0o644
            pipe = ArchivePipe(prepared)
            try:
                stream = io.BufferedReader(pipe, CHUNK)
                tar.addfile(info, stream)
                if stream.read(1):  # the size was predicted, never trusted
                    raise OSError(f"{member} outgrew its predicted size")
            finally:
                pipe.close()


class ArchivePipe(io.RawIOBase):
    """A prepared archive as a readable stream of exactly `prepared.size` bytes: a thread
    writes the tar into a bounded queue, the reader (an outer tar) pulls from it. Nested
    archives go straight into the outer file, never through a temp copy on disk."""

    def __init__(self, prepared: PreparedArchive) -> None:
        self._q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
        self._buf = b""
        self._done = False
        self._t = threading.Thread(target=self._produce, args=(prepared,), daemon=True,
                                   name="quiver-archive-pipe")
        self._t.start()

    def _produce(self, prepared: PreparedArchive) -> None:
        pipe = self

        class _Sink(io.RawIOBase):
            written = 0

            def writable(self) -> bool:
                return True

            def tell(self) -> int:  # tarfile asks where the archive starts
                return self.written

            def write(self, b: Any) -> int:
                pipe._q.put(bytes(b))
                self.written += len(b)
                return len(b)

        try:
            write_prepared(_Sink(), prepared)
            self._q.put(None)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the reading thread
            self._q.put(exc)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf and not self._done:
            item = self._q.get()
            if item is None:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                self._buf = item
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        while self._t.is_alive():  # unblock a producer stuck on a full queue
            try:
                self._q.get(timeout=0.1)
            except queue.Empty:
                pass
        super().close()
