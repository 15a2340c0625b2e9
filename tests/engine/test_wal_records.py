"""engine/wal.py in process: record framing (length, CRC, sequence number), replay after a
restart, torn and corrupt tails cut away, rotation and dropping of flushed files, and a failed
append that leaves nothing behind. Payloads are plain dicts with arrays, as Wal.append takes
them; no collection is involved."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import wal as wal_mod
from engine.errors import StorageError, StorageFull
from engine.wal import Wal

HEAD = struct.calcsize("<IIQ")  # u32 body_len | u32 crc | u64 seq


def op(i: int) -> dict[str, Any]:
    """A record with JSON fields of several kinds and arrays of several dtypes and shapes."""
    rng = np.random.default_rng(i)
    return {"kind": "upsert", "n": i, "tags": ["a", None, 1.5], "nested": {"k": [i, {"x": True}]},
            "arrays": {"vecs": rng.standard_normal((3, 4)).astype(np.float32),
                       "ids": np.arange(i, i + 3, dtype=np.int64),
                       "mask": np.array([True, False, True]),
                       "half": np.ones((2, 2), np.float16) * i,
                       "empty": np.zeros((0, 4), np.float32),
                       "scalar": np.array(7 + i, np.uint32)}}


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert {k: v for k, v in got.items() if k != "arrays"} == \
        {k: v for k, v in want.items() if k != "arrays"}
    assert list(got["arrays"]) == list(want["arrays"])
    for name, a in want["arrays"].items():
        b = got["arrays"][name]
        assert b.dtype == a.dtype and b.shape == a.shape, name
        np.testing.assert_array_equal(b, a)


def fresh(path: Path) -> Wal:
    """A Wal opened as a collection opens it: replay everything, then append after it."""
    w = Wal(str(path), fsync=False)
    list(w.replay(0))
    w.open_for_append()
    return w


def reopen(path: Path, after: int = 0) -> tuple[Wal, list[tuple[int, dict[str, Any]]]]:
    w = Wal(str(path), fsync=False)
    return w, list(w.replay(after))


def record_offsets(path: str) -> list[int]:
    """Start offset of every record in one WAL file (from the length prefixes)."""
    data = Path(path).read_bytes()
    offs, off = [], 0
    while off < len(data):
        offs.append(off)
        (blen,) = struct.unpack_from("<I", data, off)
        off += HEAD + blen
    return offs


def test_encode_decode_round_trip_without_and_with_arrays() -> None:
    plain = {"kind": "delete", "ids": [1, 2, 3]}
    assert wal_mod.decode(wal_mod.encode(plain)) == {**plain, "arrays": {}}
    assert_same(wal_mod.decode(wal_mod.encode(op(3))), op(3))


def test_append_replay_round_trip(tmp_path: Path) -> None:
    w = fresh(tmp_path)
    seqs = [w.append(op(i)) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert w.last_seq == 5
    w.close()

    w2, got = reopen(tmp_path)
    assert [s for s, _ in got] == seqs
    for (_, rec), i in zip(got, range(5), strict=True):
        assert_same(rec, op(i))
    assert w2.last_seq == 5
    # only records after the flushed sequence number are replayed
    assert [s for s, _ in reopen(tmp_path, after=3)[1]] == [4, 5]


def test_sequence_numbers_continue_after_reopen(tmp_path: Path) -> None:
    w = fresh(tmp_path)
    w.append(op(0))
    w.append(op(1))
    w.close()
    w2 = fresh(tmp_path)
    assert w2.append(op(2)) == 3
    w2.close()
    assert [s for s, _ in reopen(tmp_path)[1]] == [1, 2, 3]
    assert len(Wal(str(tmp_path)).files()) == 1  # appends went on in the same file


def test_replay_after_a_flushed_seq_starts_numbering_there(tmp_path: Path) -> None:
    """An empty log replayed after seq 41 (the segments' flushed state) appends from 42."""
    w = Wal(str(tmp_path), fsync=False)
    assert list(w.replay(41)) == []
    w.open_for_append()
    assert w.append(op(0)) == 42
    assert [name for _, name in w.files()] == [str(tmp_path / f"{42:020d}.wal")]


def test_crc_mismatch_ends_the_log_and_is_truncated(tmp_path: Path) -> None:
    w = fresh(tmp_path)
    for i in range(4):
        w.append(op(i))
    w.close()
    (_, path), = w.files()
    offs = record_offsets(path)
    data = bytearray(Path(path).read_bytes())
    data[offs[2] + HEAD + 10] ^= 0xFF  # one corrupted byte inside record 3's body
    Path(path).write_bytes(bytes(data))

    w2, got = reopen(tmp_path)
    assert [s for s, _ in got] == [1, 2]  # record 4 is intact but follows the bad one
    assert os.path.getsize(path) == offs[2]
    assert w2.last_seq == 2
    w2.open_for_append()
    assert w2.append(op(9)) == 3
    w2.close()
    _, again = reopen(tmp_path)
    assert [s for s, _ in again] == [1, 2, 3]
    assert_same(again[2][1], op(9))


def test_crc_covers_the_sequence_number(tmp_path: Path) -> None:
    w = fresh(tmp_path)
    w.append(op(0))
    w.append(op(1))
    w.close()
    (_, path), = w.files()
    offs = record_offsets(path)
    data = bytearray(Path(path).read_bytes())
    struct.pack_into("<Q", data, offs[1] + 8, 99)  # record 2 now claims seq 99
    Path(path).write_bytes(bytes(data))
    assert [s for s, _ in reopen(tmp_path)[1]] == [1]


@pytest.mark.parametrize("cut", [1, HEAD - 1, HEAD + 3])
def test_torn_tail_is_ignored_and_cut_away(tmp_path: Path, cut: int) -> None:
    w = fresh(tmp_path)
    for i in range(3):
        w.append(op(i))
    w.close()
    (_, path), = w.files()
    offs = record_offsets(path)
    with open(path, "r+b") as f:  # the last record was only partly written
        f.truncate(offs[2] + cut)

    w2, got = reopen(tmp_path)
    assert [s for s, _ in got] == [1, 2]
    assert os.path.getsize(path) == offs[2]
    w2.open_for_append()
    assert w2.append(op(5)) == 3
    w2.close()
    assert [s for s, _ in reopen(tmp_path)[1]] == [1, 2, 3]


def test_rotate_and_drop_before(tmp_path: Path) -> None:
    w = fresh(tmp_path)
    w.append(op(0))
    w.append(op(1))
    assert w.rotate() == 2
    assert w.bytes_since_rotate == 0
    w.append(op(2))
    w.append(op(3))
    assert [start for start, _ in w.files()] == [1, 3]

    w.drop_before(1)  # file 1 still holds seq 2, which is not flushed: kept
    assert [start for start, _ in w.files()] == [1, 3]
    w.drop_before(2)
    assert [start for start, _ in w.files()] == [3]
    assert w.bytes_since_rotate == os.path.getsize(w.files()[0][1])
    w.close()

    w2, got = reopen(tmp_path, after=2)
    assert [s for s, _ in got] == [3, 4]
    assert_same(got[0][1], op(2))


def test_corruption_in_an_older_file_drops_every_later_file(tmp_path: Path) -> None:
    w = fresh(tmp_path)
    w.append(op(0))
    w.append(op(1))
    w.rotate()
    w.append(op(2))
    w.close()
    (_, first), (_, second) = w.files()
    offs = record_offsets(first)
    with open(first, "r+b") as f:
        f.truncate(offs[1] + 2)

    w2, got = reopen(tmp_path)
    assert [s for s, _ in got] == [1]
    assert not os.path.exists(second)  # after a hole, later records cannot be trusted
    assert w2.last_seq == 1


def test_failed_append_is_truncated_away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    w = fresh(tmp_path)
    w.append(op(0))
    (_, path), = w.files()
    size = os.path.getsize(path)
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if fd != w._fd:
            return real_write(fd, data)
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(StorageFull):
        w.append(op(1))
    monkeypatch.setattr(os, "write", real_write)
    assert os.path.getsize(path) == size  # no partial record left behind
    assert w.last_seq == 1 and w.fenced is None
    assert w.append(op(2)) == 2  # the failed record never got its number
    w.close()
    _, got = reopen(tmp_path)
    assert [s for s, _ in got] == [1, 2]
    assert_same(got[1][1], op(2))


def test_append_whose_undo_fails_fences_the_log(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    w = fresh(tmp_path)
    w.append(op(0))

    def fail(*_: Any) -> None:
        raise OSError(errno.EIO, "I/O error")

    real_write = os.write
    monkeypatch.setattr(os, "write",
                        lambda fd, data: fail() if fd == w._fd else real_write(fd, data))
    monkeypatch.setattr(os, "ftruncate", fail)
    with pytest.raises(StorageError) as first:
        w.append(op(1))
    assert not isinstance(first.value, StorageFull)
    monkeypatch.undo()
    assert w.fenced is not None
    with pytest.raises(StorageError, match="unusable"):
        w.append(op(2))  # even though the disk works again
    assert w.last_seq == 1
    w.close()
    _, got = reopen(tmp_path)
    assert [s for s, _ in got] == [1]


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    w = fresh(tmp_path)
    w.append(op(0))
    w.close()
    with pytest.raises(StorageError, match="closed"):
        w.append(op(1))
    assert w.last_seq == 1
