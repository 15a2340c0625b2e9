"""A local archive is written members first and its manifest last (archive.write_archive),
hashing behind the writes: the file must be byte for byte the tar that streaming writes
(manifest first, tarfile's framing), its sha256 the sidecar's, and it must recover."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from api.parse.writes import apply_body
from engine import jsonio, tasks
from engine.catalog import Catalog
from engine.errors import StorageFull
from snapshots import archive
from snapshots.archive import MANIFEST, prepare_archive, write_archive, write_prepared
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery


def _collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Catalog, int]:
    monkeypatch.setattr("engine.collection.SEGMENT_MAX_BYTES", 64 * 1024)  # several segments
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    # a long vector name: its members need GNU long-name header blocks
    name = "v" * 90
    coll = cat.create("c", {"vectors": {"": {"size": 24, "distance": "Cosine"},
                                        name: {"size": 7, "distance": "Dot"}},
                            "sparse_vectors": {"s": {}}})
    rng = np.random.default_rng(3)
    n = 0
    for size in (400, 1, 333, 0, 1200):  # sealed, growing and empty-ish segments
        if not size:
            continue
        ids = list(range(n, n + size))
        apply_body(coll, "upsert", {"batch": {
            "ids": ids, "vectors": {"": rng.standard_normal((size, 24)).tolist(),
                                    name: rng.standard_normal((size, 7)).tolist(),
                                    "s": [{"indices": [i % 11, 20 + i % 3], "values": [1.0, -i]}
                                          for i in ids]},
            "payloads": [{"i": i, "t": "x" * (i % 5)} for i in ids]}})
        n += size
    while coll.digest_sealed():  # some members come with a precomputed digest
        pass
    return cat, n


def _both_layouts(cat: Catalog, tmp_path: Path) -> tuple[Path, bytes, str, int]:
    """Collection c's archive written by write_archive (members first, hashes behind) and
    streamed (every member hashed first), from one frozen state: (path of the first, the
    streamed bytes, write_archive's digest, the bytes its progress reported)."""
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    _, lazy = mgr._prepare_collection("c", hashed=False)
    _, eager = mgr._prepare_collection("c", hashed=True)
    assert any(d is None for d in lazy.digests) and any(d for d in lazy.digests)
    # same created_at second and mtime for both layouts
    lazy.header = eager.header
    for (a, _), (b, _) in zip(lazy.entries, eager.entries, strict=True):
        a.mtime = b.mtime
    streamed = io.BytesIO()
    write_prepared(streamed, eager)
    seen: list[int] = []
    path = tmp_path / "a.snapshot"
    with open(path, "wb") as f:
        digest = write_archive(f, lazy, seen.append)
    assert lazy.size == len(streamed.getvalue())
    return path, streamed.getvalue(), digest, sum(seen)


def test_member_first_file_is_the_streamed_tar(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cat, _ = _collection(tmp_path, monkeypatch)
    path, streamed, digest, reported = _both_layouts(cat, tmp_path)
    data = path.read_bytes()
    assert data == streamed
    assert len(data) == reported
    assert digest == hashlib.sha256(data).hexdigest()
    with tarfile.open(path) as tar:
        names = tar.getnames()
        manifest = jsonio.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
        assert names[0] == MANIFEST
        for m in manifest["members"]:
            body = tar.extractfile(m["name"]).read()  # type: ignore[union-attr]
            assert hashlib.sha256(body).hexdigest() == m["sha256"]
    cat.close()


def test_streaming_refuses_unhashed_members(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cat, _ = _collection(tmp_path, monkeypatch)
    prepared = prepare_archive({"collection": "c"}, SnapshotManager(
        cat, str(tmp_path / "snaps"), 1)._prepare_collection("c", hashed=False)[1].members,
        hashed=False)
    with pytest.raises(ValueError):
        write_prepared(io.BytesIO(), prepared)
    cat.close()


def test_created_snapshot_recovers_with_its_checksum(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cat, n = _collection(tmp_path, monkeypatch)
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    info = mgr.create("c")
    path = mgr.path("c", info.name)
    assert info.checksum == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    Recovery(cat, str(tmp_path / "snaps")).recover_file("copy", path, info.checksum)
    copy, orig = cat.get("copy"), cat.get("c")
    assert copy.points_count() == orig.points_count() == n
    cat.close()


def test_cancelled_write_leaves_nothing(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cat, _ = _collection(tmp_path, monkeypatch)
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)

    def cancel_midway(n: int) -> None:
        raise tasks.Cancelled("cancelled")

    monkeypatch.setattr(tasks, "advance", cancel_midway)
    with pytest.raises(tasks.Cancelled):
        mgr.create("c")
    assert not list((tmp_path / "snaps").rglob("*.snapshot*"))
    assert not list((tmp_path / "snaps" / ".tmp").iterdir())
    cat.close()


def _direct_supported(path: Path) -> bool:
    probe = path / "direct-probe"
    probe.write_bytes(b"")
    with open(probe, "wb") as f:
        fd = archive._open_direct(f, 1 << 20)
    if fd is not None:
        os.close(fd)
    return fd is not None


@pytest.mark.parametrize("chunk", [4096, 3 * 4096])
def test_direct_io_body_is_the_same_tar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        chunk: int) -> None:
    """The body's aligned middle goes through O_DIRECT in page-aligned buffers (small ones
    here: many requests, both buffers reused), its unaligned head and tail through the file
    object; the file is still byte for byte the streamed tar."""
    if not _direct_supported(tmp_path):
        pytest.skip("no O_DIRECT on this file system")
    cat, _ = _collection(tmp_path, monkeypatch)
    monkeypatch.setattr(archive, "DIRECT_CHUNK", chunk)
    writes: list[tuple[int, int]] = []
    real = archive._pwrite_all

    def pwrite(fd: int, data: memoryview, offset: int) -> None:
        assert offset % archive.DIRECT_ALIGN == 0 and len(data) % archive.DIRECT_ALIGN == 0
        writes.append((offset, len(data)))
        real(fd, data, offset)

    monkeypatch.setattr(archive, "_pwrite_all", pwrite)
    path, streamed, digest, reported = _both_layouts(cat, tmp_path)
    data = path.read_bytes()
    assert data == streamed and digest == hashlib.sha256(data).hexdigest()
    assert len(data) == reported
    assert len(writes) > 4  # several requests
    with tarfile.open(path) as tar:
        body_start = tar.getmembers()[1].offset  # the manifest's entry comes before
    # all of the body but less than a page at either end went direct
    assert body_start <= writes[0][0] < body_start + archive.DIRECT_ALIGN
    assert len(data) - archive.DIRECT_ALIGN < writes[-1][0] + writes[-1][1] <= len(data)
    offsets = [o for o, _ in writes]
    assert offsets == sorted(offsets) and all(  # contiguous, no gap, no overlap
        a + n == b for (a, n), (b, _) in zip(writes, writes[1:], strict=False))
    cat.close()


def test_without_direct_io_the_buffered_path_writes_it(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cat, n = _collection(tmp_path, monkeypatch)
    monkeypatch.setattr(archive, "_open_direct", lambda f, size: None)  # tmpfs, other systems

    def never(*args: object) -> None:
        raise AssertionError("no direct write expected")

    monkeypatch.setattr(archive, "_pwrite_all", never)
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    info = mgr.create("c")
    path = mgr.path("c", info.name)
    assert info.checksum == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    Recovery(cat, str(tmp_path / "snaps")).recover_file("copy", path, info.checksum)
    assert cat.get("copy").points_count() == n
    cat.close()


def test_a_file_system_refusing_direct_writes_gets_buffered_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Some file systems take O_DIRECT at open and refuse the writes (EINVAL): the probe
    write finds out, and the archive is written buffered, whole and verified."""
    if not _direct_supported(tmp_path):
        pytest.skip("no O_DIRECT on this file system")
    cat, n = _collection(tmp_path, monkeypatch)
    real = os.pwrite
    refused: list[int] = []

    def pwrite(fd: int, data: object, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(archive.os, "pwrite", pwrite)
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    info = mgr.create("c")
    assert refused == [0]  # the probe, and nothing after it
    path = mgr.path("c", info.name)
    assert info.checksum == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    Recovery(cat, str(tmp_path / "snaps")).recover_file("copy", path, info.checksum)
    assert cat.get("copy").points_count() == n
    cat.close()


def test_a_full_disk_during_direct_writes_leaves_nothing(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC from a direct write is the disk's 507, and no archive or temp file stays."""
    if not _direct_supported(tmp_path):
        pytest.skip("no O_DIRECT on this file system")
    cat, _ = _collection(tmp_path, monkeypatch)
    monkeypatch.setattr(archive, "DIRECT_CHUNK", 4096)
    calls: list[int] = []

    def full(fd: int, data: memoryview, offset: int) -> None:
        calls.append(offset)
        if len(calls) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        os.pwrite(fd, data, offset)

    monkeypatch.setattr(archive, "_pwrite_all", full)
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    with pytest.raises(StorageFull):
        mgr.create("c")
    assert len(calls) >= 3
    assert not list((tmp_path / "snaps").rglob("*.snapshot*"))
    assert not list((tmp_path / "snaps" / ".tmp").iterdir())
    assert mgr.list("c") == []
    cat.close()
