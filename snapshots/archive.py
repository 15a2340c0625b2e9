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
    segments/<i>/ivf-<hexname>-<part>.npy  instead of hnsw-*: a FAISS IVF index (extension,
                                           engine/ivf.py) as plain arrays: `meta` (int64 kind,
                                           nlist, rows, pq m, pq nbits), `coarse` centroids,
                                           `pq` centroids (IVF-PQ); recovery checks them and
                                           re-adds the segment's rows, untrained (faiss never
                                           reads archive bytes); CAGRA graphs are not carried
    segments/<i>/quant-<hexname>-<part>.npy  quantized codes of the segment's leading rows
                                           (`codes`, uint8) and their quantizer (`range`,
                                           `thresholds` or `centroids`): recovery never trains

Format versions: 1.0 (dense vectors only), 1.1 (adds the sparse members). Readers accept
both: a 1.0 archive recovers with every sparse vector absent. Multivector members came
later without a version bump: an archive without multivectors is byte-for-byte what 1.1
wrote, and one with them needs a config (multivector_config) that older readers refuse.

The manifest comes first and holds every member's sha256. A local archive file
(write_archive) is written members first, each hashed in memory while its bytes go out, and
the manifest last into the space kept for it (its size does not depend on the digests); the
whole archive's sha256 (the `.checksum` sidecar) follows from memory, ahead of the disk.
A stream (a full snapshot's nested archives, write_prepared) hashes every member before its
first byte and the whole archive as it streams. No file is ever re-read.

Reading (snapshots.scan) trusts nothing and extracts nothing: members must be exactly the
manifest's, in any order after it, regular files, no duplicates, sizes and hashes as
declared, arrays as configured; recovered segments then map the archive itself.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import mmap
import os
import queue
import re
import tarfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from engine import QUIVER_VERSION, jsonio
from engine.errors import BadRequest
from engine.ivf import IvfIndex
from engine.npy import npy_parts, parts_sha256
from engine.segment import FrozenSegment

FORMAT = "quiver-collection-snapshot"
FORMAT_VERSION = (1, 1)
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20
MAX_MEMBERS = 100_000
MEMBER_RE = re.compile(r"^segments/(\d{1,9})/(ids|deleted|versions|payloads|vectors-[0-9a-f]*|"
                        r"present-[0-9a-f]*|hnsw-[0-9a-f]*-(?:levels|offsets|neighbors|entry)|"
                        r"ivf-[0-9a-f]*-(?:meta|coarse|pq)|"
                        r"sparse-[0-9a-f]*-(?:ends|indices|values)|"
                        r"multi-[0-9a-f]*-(?:ends|tokens)|"
                        r"quant-[0-9a-f]*-(?:codes|range|thresholds|centroids))"
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
        if isinstance(hnsw, IvfIndex):  # a FAISS index: its centroids as plain arrays
            for key, arr in hnsw.arrays().items():
                out.append(Member(base + f"ivf-{hx}-{key}.npy", npy_parts(arr)))
            continue
        for key, arr in hnsw.graph().items():
            out.append(Member(base + f"hnsw-{hx}-{key}.npy", npy_parts(arr)))
    for name, rec in fz.quantized.items():  # codes + codebook: recovery never trains
        hx = name.encode().hex()
        out.append(Member(base + f"quant-{hx}-codes.npy",
                          npy_parts(rec.host_codes()[: min(rec.rows, fz.n)])))
        for key, arr in rec.quantizer.arrays().items():
            out.append(Member(base + f"quant-{hx}-{key}.npy", npy_parts(arr)))
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
    """Manifest + members with the exact tar size known, so the archive can be streamed
    somewhere that needs its size up front (a full snapshot's tar). `digests[i]` is member
    i's sha256, None while not yet computed (prepared with hashed=False: write_archive hashes
    them while writing); the manifest entry's size never depends on them (64 hex digits)."""

    entries: list[tuple[tarfile.TarInfo, list[bytes | memoryview]]]
    size: int
    header: dict[str, Any] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    digests: list[str | None] = field(default_factory=list)


def prepare_archive(header: dict[str, Any], members: list[Member],
                    hashed: bool = True) -> PreparedArchive:
    """The archive's layout; with `hashed`, every member hashed first (on every core: hashlib
    releases the GIL), as streaming the manifest first needs."""
    if hashed:
        with ThreadPoolExecutor(max(1, min(len(members), os.cpu_count() or 1))) as pool:
            digests: list[str | None] = list(pool.map(lambda m: m.sha256(), members))
    else:
        digests = [m.digest for m in members]
    now = int(time.time())
    entries = []
    for m in [Member(MANIFEST, [_manifest(header, members, digests)])] + members:
        info = tarfile.TarInfo(m.name)
        info.size, info.mode, info.mtime = m.size, 0o644, now
        entries.append((info, m.parts))
    return PreparedArchive(entries, tar_size([info for info, _ in entries]), header, members,
                           digests)


def _manifest(header: dict[str, Any], members: list[Member],
              digests: list[str | None]) -> bytes:
    """manifest.json; a digest not known yet is a placeholder of the same length."""
    manifest = dict(header)
    manifest.update(format=FORMAT, format_version=f"{FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}",
                    quiver_version=QUIVER_VERSION,
                    members=[{"name": m.name, "size": m.size, "sha256": d or "0" * 64}
                             for m, d in zip(members, digests, strict=True)])
    return jsonio.dumps(manifest, indent=True)


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
    if any(d is None for d in prepared.digests):
        raise ValueError("a streamed archive needs every member hashed first (hashed=True)")
    # Plain "w" (not the "w|" stream mode, whose small buffer re-slices every write) with
    # 8 MiB copies: the archive streams out at memory speed.
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.copybufsize = CHUNK  # type: ignore[attr-defined]  # tarfile's copy size: not in typeshed
        for info, parts in prepared.entries:
            tar.addfile(info, io.BufferedReader(_Reader(parts), buffer_size=CHUNK))


# ---- a local archive file: members first, manifest last, hashes behind the disk ----------

# Member hashing runs beside the writes; on a small machine it must leave a core to searches.
HASH_THREADS = max(1, min(4, (os.cpu_count() or 2) // 2))
WRITEBACK = 64 << 20  # bytes written between two starts of their writeback


def _pieces(info: tarfile.TarInfo, parts: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """One member's bytes as tarfile.addfile writes them: header blocks, data, zero padding."""
    pad = -info.size % tarfile.BLOCKSIZE
    return [info.tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape"), *parts,
            bytes(pad)]


def _write(f: BinaryIO, pieces: list[bytes | memoryview],
           progress: Callable[[int], None] | None) -> None:
    written = 0
    for piece in pieces:
        mv = memoryview(piece).cast("B") if len(piece) else memoryview(b"")
        for off in range(0, len(mv), CHUNK):  # slices of the arrays themselves: no copies
            chunk = mv[off : off + CHUNK]
            f.write(chunk)
            if progress is not None:
                progress(len(chunk))
            written += len(chunk)
            if written >= WRITEBACK:
                _start_writeback(f, written)
                written = 0


def _start_writeback(f: BinaryIO, size: int) -> None:
    """Start the disk on the last `size` bytes now rather than at fsync, and keep them out of
    the page cache (the archive is written, not read). PostgreSQL's pg_flush_data does the
    same: DONTNEED writes dirty pages back without waiting and drops the clean ones."""
    f.flush()
    end = f.tell()
    with contextlib.suppress(OSError, AttributeError):  # fadvise: Linux and most Unixes
        os.posix_fadvise(f.fileno(), end - size, size, os.POSIX_FADV_DONTNEED)


# Direct I/O for a local archive's body: the archive is written once and never read back, so
# it need not pass through the page cache. Buffered, 1.2 GB went in at 0.33-0.39 GB/s into
# pages the machine had not used for a while (this sandbox's VM backs guest memory lazily and
# takes free pages back) and at 1.1-1.6 GB/s into pages just freed; O_DIRECT in 8 MiB
# requests ran at 1.8 GB/s whatever the pages (dd, the same disk). It also leaves the page
# cache to searches. File systems without it (tmpfs) refuse the open: buffered writes then.
DIRECT_ALIGN = 4096
DIRECT_CHUNK = 8 << 20  # a multiple of DIRECT_ALIGN


def _open_direct(f: Any, size: int) -> int | None:
    """A second descriptor on `f`'s file with O_DIRECT, or None where there is none. One
    aligned page is written at offset 0 to prove it (some file systems take the flag and
    refuse the writes): the archive's first page is written again, through `f`, last."""
    flag = getattr(os, "O_DIRECT", 0)
    name = getattr(f, "name", None)
    if not flag or not isinstance(name, str) or size < 4 * DIRECT_ALIGN:
        return None
    try:
        fd = os.open(name, os.O_WRONLY | flag)
    except OSError:  # EINVAL: no direct I/O on this file system
        return None
    page = mmap.mmap(-1, DIRECT_ALIGN)  # zeros, page-aligned
    try:
        os.pwrite(fd, page, 0)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return None
        raise  # ENOSPC, EIO: the write's own failure
    finally:
        page.close()
    return fd


def _write_direct(f: BinaryIO, fd: int, start: int, pieces: list[bytes | memoryview],
                  progress: Callable[[int], None] | None) -> None:
    """Write `pieces` at file offset `start`: the aligned middle through `fd` (O_DIRECT) from
    two page-aligned buffers, one filled while the other goes to the disk; the unaligned
    head and tail (less than a page each) through `f`."""
    total = sum(len(p) for p in pieces)
    lo = min(-(-start // DIRECT_ALIGN) * DIRECT_ALIGN, start + total)  # first aligned offset
    hi = max(lo, (start + total) // DIRECT_ALIGN * DIRECT_ALIGN)  # end of the aligned run
    views = (memoryview(p).cast("B") for p in pieces if len(p))
    pending = memoryview(b"")  # what is left of the current piece

    def take(n: int, into: memoryview | None = None) -> bytes:
        """The body's next n bytes: copied into `into`, else returned."""
        nonlocal pending
        got = 0
        out = bytearray()
        while got < n:
            if not len(pending):
                pending = next(views)
            k = min(n - got, len(pending))
            if into is not None:
                into[got : got + k] = pending[:k]
            else:
                out += pending[:k]
            pending, got = pending[k:], got + k
        return bytes(out)

    head = take(lo - start)
    f.seek(start)
    f.write(head)
    buffers = [mmap.mmap(-1, DIRECT_CHUNK), mmap.mmap(-1, DIRECT_CHUNK)]  # page-aligned
    writer = ThreadPoolExecutor(1, thread_name_prefix="quiver-direct")
    inflight: list[Any] = [None, None]
    try:
        off, i = lo, 0
        while off < hi:
            n = min(DIRECT_CHUNK, hi - off)
            if inflight[i] is not None:
                inflight[i].result()  # this buffer's previous write is done
            buf = memoryview(buffers[i])
            take(n, buf)
            inflight[i] = writer.submit(_pwrite_all, fd, buf[:n], off)
            if progress is not None:
                progress(n)
            off, i = off + n, 1 - i
        for fut in inflight:
            if fut is not None:
                fut.result()
    finally:
        writer.shutdown(wait=True, cancel_futures=True)
        for b in buffers:
            with contextlib.suppress(BufferError):  # a view still held: freed when dropped
                b.close()
    tail = take(start + total - hi)
    f.seek(hi)
    f.write(tail)
    if progress is not None:
        progress(len(head) + len(tail))


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def write_archive(f: BinaryIO, prepared: PreparedArchive,
                  progress: Callable[[int], None] | None = None) -> str:
    """Write `prepared` into the local, seekable file `f` and fsync it; returns the archive's
    sha256. The bytes are exactly write_prepared's, written in another order so that no hash
    sits in front of the disk: the members first, from the arrays themselves, while other
    threads hash them in memory (HASH_THREADS) and then, the manifest known, hash the whole
    archive (one thread: sha256 is sequential), both running ahead of the disk; the manifest
    goes last into the space kept for it at the start (its size does not depend on the
    digests). The members go through O_DIRECT where the file system has it (DIRECT_ALIGN:
    the page cache is bypassed), else buffered. Nothing is ever read back from the file."""
    (minfo, _), rest = prepared.entries[0], prepared.entries[1:]
    body = [p for info, parts in rest for p in _pieces(info, parts)]
    head = len(minfo.tobuf(tarfile.GNU_FORMAT, tarfile.ENCODING, "surrogateescape"))
    head += minfo.size + (-minfo.size % tarfile.BLOCKSIZE)
    body.append(bytes(prepared.size - head - sum(len(p) for p in body)))  # end blocks, padding
    stop = threading.Event()
    pool = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="quiver-hash")
    finisher = ThreadPoolExecutor(1, thread_name_prefix="quiver-hash-archive")

    def finish() -> tuple[list[bytes | memoryview], str]:
        """The manifest's tar entry once every member is hashed, and the archive's sha256."""
        digests = [d if d is not None else pool.submit(m.sha256)
                   for m, d in zip(prepared.members, prepared.digests, strict=True)]
        manifest = _manifest(prepared.header, prepared.members,
                             [d if isinstance(d, str) else d.result() for d in digests])
        if len(manifest) != minfo.size:  # digests are fixed-length: this cannot happen
            raise OSError("snapshot manifest changed size while hashing")
        first = _pieces(minfo, [manifest])
        h = hashlib.sha256()
        for piece in first + body:
            mv = memoryview(piece).cast("B") if len(piece) else memoryview(b"")
            for off in range(0, len(mv), CHUNK):
                if stop.is_set():  # the write failed or was cancelled
                    raise OSError("snapshot writing stopped")
                h.update(mv[off : off + CHUNK])
        return first, h.hexdigest()

    direct = None
    try:
        hashed = finisher.submit(finish)
        direct = _open_direct(f, prepared.size)
        if direct is not None:
            _write_direct(f, direct, head, body, progress)
        else:
            f.seek(head)
            _write(f, body, progress)
        f.flush()
        os.fsync(f.fileno())  # the members reach the disk while the hashes finish
        first, digest = hashed.result()
        f.seek(0)
        _write(f, first, progress)
        f.flush()
        os.fsync(f.fileno())
        return digest
    finally:
        stop.set()
        if direct is not None:
            os.close(direct)
        pool.shutdown(wait=True, cancel_futures=True)
        finisher.shutdown(wait=True, cancel_futures=True)


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
