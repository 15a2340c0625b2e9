"""Recovery maps the archive instead of extracting it (snapshots.scan, engine.segment_store):
the archive is hard-linked into the collection's blobs/ (copied only across filesystems), its
segments have no row files of their own, and the collection behaves like any other through
restarts, payload edits, deletes, vacuum and new snapshots. Plus the scan's own checks."""

from __future__ import annotations

import ast
import errno
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from api.parse.writes import apply_body
from engine.catalog import Catalog
from engine.plan import RetrieveRequest
from engine.query import SearchSpec, retrieve, search_batch
from snapshots.archive import SnapshotFormatError
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery
from snapshots.scan import ChecksumMismatch, scan

DIM = 8


def _catalog(root: Path) -> Catalog:
    cat = Catalog(str(root / "storage"))
    cat.load()
    return cat


def _fill(cat: Catalog, name: str, n: int = 3000, distance: str = "Euclid") -> None:
    coll = cat.create(name, {"vectors": {"size": DIM, "distance": distance},
                             "optimizers_config": {"vacuum_min_vector_number": 100}})
    rng = np.random.default_rng(7)
    for s in range(0, n, 500):
        apply_body(coll, "upsert", {"batch": {"ids": list(range(s, s + 500)),
                               "vectors": rng.standard_normal((500, DIM)).astype(np.float32),
                               "payloads": [{"i": i, "tag": f"t{i % 3}"}
                                            for i in range(s, s + 500)]}})


def _answers(cat: Catalog, name: str) -> list[list[tuple]]:
    q = np.random.default_rng(3).standard_normal((4, DIM)).astype(np.float32)
    specs = [SearchSpec(v, "", None, 10, 0, None, True, True) for v in q]
    return [[(h["id"], round(h["score"], 4), h["payload"]) for h in hits]
            for hits in search_batch(cat.get(name), specs)]


def _snapshot(cat: Catalog, root: Path, name: str) -> tuple[SnapshotManager, str, str]:
    mgr = SnapshotManager(cat, str(root / "snaps"), 1)
    info = mgr.create(name)
    return mgr, mgr.path(name, info.name), info.checksum


def _blobs(cat: Catalog, name: str) -> list[Path]:
    d = Path(cat.get(name).path) / "blobs"
    return sorted(d.iterdir()) if d.exists() else []


@pytest.fixture
def sealed_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.collection.SEGMENT_MAX_BYTES", 32 * 1024)


def test_archive_is_linked_not_extracted(tmp_path: Path, sealed_often: None) -> None:
    cat = _catalog(tmp_path)
    _fill(cat, "src")
    before = _answers(cat, "src")
    _, path, checksum = _snapshot(cat, tmp_path, "src")
    Recovery(cat, str(tmp_path / "snaps")).recover_file("copy", path, checksum)
    assert _answers(cat, "copy") == before
    [blob] = _blobs(cat, "copy")
    assert os.stat(blob).st_ino == os.stat(path).st_ino  # the same blocks: no second copy
    segs = Path(cat.get("copy").path) / "segments"
    row_files = [p for p in segs.rglob("*") if p.name == "ids.bin" or p.name.startswith("vec-")]
    assert row_files == []  # rows are read from the archive; nothing was rewritten
    state = json.loads((Path(cat.get("copy").path) / "state.json").read_text())
    mapped = [str(m["id"]) for m in state["segments"] if m.get("blob")]
    assert len(mapped) >= 2
    written = [p for p in segs.rglob("*") if p.parent.name in mapped]
    assert written == []  # masks and payloads too, until they change
    # the snapshot may be deleted: the collection keeps its own link
    os.unlink(path)
    cat.close()
    cat = _catalog(tmp_path)
    assert _answers(cat, "copy") == before
    cat.close()


def test_linked_collection_lives_on(tmp_path: Path, sealed_often: None) -> None:
    """Payload edits, deletes, upserts and a vacuum on archive-backed segments persist across
    restarts; the archive is dropped once no segment needs it."""
    cat = _catalog(tmp_path)
    _fill(cat, "src")
    _, path, _ = _snapshot(cat, tmp_path, "src")
    Recovery(cat, str(tmp_path / "snaps")).recover_file("c", path, None)
    coll = cat.get("c")
    apply_body(coll, "set_payload", {"payload": {"edited": True}, "points": [1, 2]})
    apply_body(coll, "delete", {"points": [3]})
    apply_body(coll, "upsert", {"points": [{"id": 99_999, "vector": [0.5] * DIM, "payload": {"new": 1}}]})
    coll.flush()
    cat.close()
    cat = _catalog(tmp_path)
    coll = cat.get("c")
    got = {p["id"]: p["payload"] for p in retrieve(coll, RetrieveRequest([1, 2, 3, 99_999], True, False))}
    assert got[1]["edited"] is True and got[2]["edited"] is True and got[1]["i"] == 1
    assert 3 not in got and got[99_999] == {"new": 1}
    assert coll.points_count() == 3000
    assert _blobs(cat, "c")
    # replace every point: the archive's segments are all deleted rows, vacuumed away
    rng = np.random.default_rng(11)
    for s in range(0, 3000, 500):
        apply_body(coll, "upsert", {"batch": {"ids": list(range(s, s + 500)),
                               "vectors": rng.standard_normal((500, DIM)).astype(np.float32)}})
    coll.vacuum()
    coll.flush()
    assert _blobs(cat, "c") == []
    cat.close()
    cat = _catalog(tmp_path)
    assert cat.get("c").points_count() == 3001
    cat.close()


def test_snapshot_of_recovered_collection(tmp_path: Path, sealed_often: None) -> None:
    cat = _catalog(tmp_path)
    _fill(cat, "src", distance="Cosine")
    before = _answers(cat, "src")
    rec = Recovery(cat, str(tmp_path / "snaps"))
    _, path, _ = _snapshot(cat, tmp_path, "src")
    rec.recover_file("a", path, None)
    _, path2, checksum2 = _snapshot(cat, tmp_path, "a")
    rec.recover_file("b", path2, checksum2)
    assert _answers(cat, "b") == before
    cat.close()


def test_copy_across_filesystems(tmp_path: Path, sealed_often: None,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cat = _catalog(tmp_path)
    _fill(cat, "src")
    before = _answers(cat, "src")
    _, path, _ = _snapshot(cat, tmp_path, "src")

    def no_link(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr("snapshots.recovery.os.link", no_link)
    Recovery(cat, str(tmp_path / "snaps")).recover_file("copy", path, None)
    [blob] = _blobs(cat, "copy")
    assert os.stat(blob).st_ino != os.stat(path).st_ino
    assert blob.read_bytes() == Path(path).read_bytes()
    assert _answers(cat, "copy") == before
    cat.close()


def test_failed_recovery_keeps_old_collection_and_leaves_no_link(
        tmp_path: Path, sealed_often: None) -> None:
    cat = _catalog(tmp_path)
    _fill(cat, "src")
    before = _answers(cat, "src")
    _, path, checksum = _snapshot(cat, tmp_path, "src")
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a vectors member
    bad = tmp_path / "snaps" / "bad.snapshot"
    bad.write_bytes(bytes(data))
    rec = Recovery(cat, str(tmp_path / "snaps"))
    with pytest.raises(SnapshotFormatError, match="corrupt"):
        rec.recover_file("src", str(bad), None)
    with pytest.raises(ChecksumMismatch):
        rec.recover_file("src", str(bad), checksum)
    assert _answers(cat, "src") == before
    assert os.stat(bad).st_nlink == 1  # the staged link went with the staging directory
    assert [p for p in Path(cat.root).iterdir() if p.name.startswith(".tmp-")] == []
    cat.close()


def test_recovery_and_restart_parse_no_header_with_ast(tmp_path: Path, sealed_often: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy's .npy header reader runs ast.literal_eval, which CPython 3.11 breaks when
    threads parse at once (a recovery's hashing threads with its request thread: a 500 in
    CI); recovery, its hashing and a restart's loading read headers with engine/npy.py."""
    cat = _catalog(tmp_path)
    _fill(cat, "src")
    apply_body(cat.get("src"), "delete", {"points": [1, 2, 3]})
    before = _answers(cat, "src")
    _, path, _ = _snapshot(cat, tmp_path, "src")

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("ast used")
    monkeypatch.setattr(ast, "literal_eval", refuse)
    Recovery(cat, str(tmp_path / "snaps")).recover_file("copy", path, None)  # member hashes
    assert _answers(cat, "copy") == before
    apply_body(cat.get("copy"), "delete", {"points": [4]})  # masks written as an .npz
    cat.close()
    cat = _catalog(tmp_path)
    assert len(_answers(cat, "copy")[0]) == 10 and _answers(cat, "src") == before
    cat.close()


def test_nan_vectors_found_while_hashing(tmp_path: Path) -> None:
    """A NaN in an archive whose hashes are consistent (a forged manifest) is still refused:
    the scan checks float vectors in the same pass that hashes them."""
    cat = _catalog(tmp_path)
    _fill(cat, "src", n=500)
    cat.get("src").segments[-1].vectors[""][5, 3] = np.nan  # bypassing the API's check
    _, path, _ = _snapshot(cat, tmp_path, "src")
    scanned = scan(path)
    assert False in scanned.finite.values()
    with pytest.raises(SnapshotFormatError, match="NaN"):
        Recovery(cat, str(tmp_path / "snaps")).recover_file("copy", path, None)
    cat.close()


def test_scan_locates_members_exactly(tmp_path: Path) -> None:
    cat = _catalog(tmp_path)
    _fill(cat, "src", n=500)
    _, path, checksum = _snapshot(cat, tmp_path, "src")
    scanned = scan(path, checksum)
    with tarfile.open(path) as tar:
        for info in tar:
            if info.name == "manifest.json":
                continue
            assert scanned.read(info.name) == tar.extractfile(info).read()
    ids = scanned.array("segments/0/ids.npy")
    assert len(ids) == 500
    vec = scanned.array("segments/0/vectors-.npy", mmap=True)
    assert isinstance(vec, np.memmap) and vec.shape == (500, DIM)
    with pytest.raises(ChecksumMismatch):
        scan(path, "0" * 64)
    cat.close()


def test_checksum_stands_in_for_member_hashes(tmp_path: Path) -> None:
    """With a matching `checksum` every byte is proven, so member hashes are not recomputed;
    the manifest's (here wrong) member hashes are then never reused for later snapshots."""
    import hashlib  # noqa: PLC0415

    import hostile_archives as H  # noqa: PLC0415

    cat = _catalog(tmp_path)
    _fill(cat, "src", n=1500)
    before = _answers(cat, "src")
    _, path, _ = _snapshot(cat, tmp_path, "src")
    entries = H.parse(Path(path).read_bytes())
    manifest = H.manifest_of(entries)
    for mem in manifest["members"]:
        if "/vectors-" in mem["name"]:
            mem["sha256"] = "0" * 64  # a lying producer
    forged = H.serialise(H.set_manifest(entries, manifest))
    bad = tmp_path / "snaps" / "forged.snapshot"
    bad.write_bytes(forged)
    rec = Recovery(cat, str(tmp_path / "snaps"))
    with pytest.raises(SnapshotFormatError, match="sha256 mismatch"):
        rec.recover_file("a", str(bad), None)
    rec.recover_file("a", str(bad), hashlib.sha256(forged).hexdigest())
    assert _answers(cat, "a") == before
    _, path2, _ = _snapshot(cat, tmp_path, "a")
    rec.recover_file("b", path2, None)  # its manifest carries the real hashes
    assert _answers(cat, "b") == before
    cat.close()


@pytest.mark.parametrize("link", [True, False])
def test_full_snapshot_restores_in_place(tmp_path: Path, sealed_often: None, link: bool,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`--storage-snapshot`: each collection maps its rows from inside the full archive (one
    shared link, nothing extracted); across filesystems only its own nested archive is
    copied."""
    from snapshots.recovery import restore_full  # noqa: PLC0415

    cat = _catalog(tmp_path)
    _fill(cat, "a")
    _fill(cat, "b", n=1000, distance="Dot")
    cat.update_aliases([{"create_alias": {"collection_name": "b", "alias_name": "bee"}}])
    before = {name: _answers(cat, name) for name in ("a", "b")}
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    full = mgr.store.path("", mgr.create_full().name)
    cat.close()
    if not link:
        def no_link(src: str, dst: str) -> None:
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr("snapshots.recovery.os.link", no_link)
    fresh = Catalog(str(tmp_path / "restored"))
    fresh.load()
    assert restore_full(Recovery(fresh, str(tmp_path / "snaps")), full, False) == ["a", "b"]
    for name in ("a", "b"):
        assert _answers(fresh, name) == before[name]
        [blob] = _blobs(fresh, name)
        if link:
            assert os.stat(blob).st_ino == os.stat(full).st_ino
        else:
            assert os.path.getsize(blob) < os.path.getsize(full)  # its own archive only
    assert fresh.resolve("bee") == "b"
    fresh.close()
    fresh = Catalog(str(tmp_path / "restored"))  # and after a restart
    fresh.load()
    assert _answers(fresh, "a") == before["a"]
    fresh.close()


def _full_archive(tmp_path: Path) -> tuple[Path, list[tarfile.TarInfo], dict[str, bytes]]:
    cat = _catalog(tmp_path)
    _fill(cat, "a", n=600)
    mgr = SnapshotManager(cat, str(tmp_path / "snaps"), 1)
    full = Path(mgr.store.path("", mgr.create_full().name))
    cat.close()
    with tarfile.open(full) as tar:
        infos = tar.getmembers()
        data = {i.name: tar.extractfile(i).read() for i in infos}
    return full, infos, data


def _write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


@pytest.mark.parametrize("case", ["symlink", "unexpected", "config_second", "truncated",
                                  "corrupt_nested", "hardlink"])
def test_hostile_full_snapshot_is_refused(tmp_path: Path, case: str) -> None:
    from snapshots.recovery import restore_full  # noqa: PLC0415

    full, infos, data = _full_archive(tmp_path)
    config, nested = infos[0], infos[1]
    bad = tmp_path / "bad.snapshot"
    if case == "symlink":
        link = tarfile.TarInfo(nested.name)
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        _write_tar(bad, [(config, data[config.name]), (link, None)])
    elif case == "hardlink":
        link = tarfile.TarInfo(nested.name)
        link.type, link.linkname = tarfile.LNKTYPE, "config.json"
        _write_tar(bad, [(config, data[config.name]), (link, None)])
    elif case == "unexpected":
        extra = tarfile.TarInfo("other.snapshot")
        extra.size = 3
        _write_tar(bad, [(config, data[config.name]), (extra, b"abc"),
                         (nested, data[nested.name])])
    elif case == "config_second":
        _write_tar(bad, [(nested, data[nested.name]), (config, data[config.name])])
    elif case == "truncated":
        bad.write_bytes(full.read_bytes()[: nested.offset_data + nested.size // 2])
    else:
        raw = bytearray(full.read_bytes())
        raw[nested.offset_data + nested.size // 2] ^= 0x55  # inside the nested vectors
        bad.write_bytes(bytes(raw))
    fresh = Catalog(str(tmp_path / "restored"))
    fresh.load()
    with pytest.raises(SnapshotFormatError):
        restore_full(Recovery(fresh, str(tmp_path / "snaps")), str(bad), False)
    assert fresh.names() == []
    assert [p for p in Path(fresh.root).iterdir() if p.name.startswith(".tmp-")] == []
    fresh.close()


EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("checksum", [None, EMPTY_SHA256, "0" * 64])
def test_empty_archive_is_refused(tmp_path: Path, checksum: str | None) -> None:
    cat = _catalog(tmp_path)
    (tmp_path / "snaps").mkdir()
    empty = tmp_path / "snaps" / "empty.snapshot"
    empty.write_bytes(b"")
    with pytest.raises((SnapshotFormatError, ChecksumMismatch)):
        Recovery(cat, str(tmp_path / "snaps")).recover_file("e", str(empty), checksum)
    assert cat.names() == []
    cat.close()
