"""engine/npy.py: .npy headers and .npz files read as numpy reads them, without `ast`
(CPython 3.11's AST constructor fails when threads parse at once: a recovery answered 500)."""

from __future__ import annotations

import ast
import io
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from engine import npy
from engine.ids import ID_DTYPE

ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.array([1.5], np.float64),
    np.zeros((0, 7), np.float32),
    np.array(3, np.int64),  # 0-d
    np.ones((2, 3, 4), np.uint8),
    np.array([True, False, True]),
    np.arange(10, dtype=">u8"),
    np.array("a train key: ('scalar', 'int8', 0.99)"),
    np.array([b"\x00\x01sha", b"x"]),
    np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
    np.arange(6, dtype=np.float16).reshape(1, 1, 6),
    np.zeros(5, ID_DTYPE),  # the id records in every segment and archive
    np.zeros(2, [("a", "<f4"), ("b", "<u8")]),
]


def _npy(arr: np.ndarray, version: tuple[int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    if version is None:
        np.save(buf, arr, allow_pickle=False)
    else:
        np.lib.format.write_array(buf, arr, version=version, allow_pickle=False)
    return buf.getvalue()


@pytest.fixture
def no_ast(monkeypatch: pytest.MonkeyPatch) -> None:
    """ast.literal_eval, which numpy's header reader calls, fails the test."""
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("ast used")
    monkeypatch.setattr(ast, "literal_eval", refuse)


@pytest.mark.parametrize("version", [None, (1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("i", range(len(ARRAYS)))
def test_headers_and_arrays_read_as_numpy_reads_them(i: int, version: tuple[int, int] | None
                                                      ) -> None:
    arr = ARRAYS[i]
    raw = _npy(arr, version)
    want = np.load(io.BytesIO(raw), allow_pickle=False)  # numpy's own reading, before no_ast
    f = io.BytesIO(raw)
    head = npy.read_header(f)
    assert head.shape == arr.shape and head.dtype == arr.dtype
    assert head.fortran == (arr.flags.f_contiguous and not arr.flags.c_contiguous)
    assert f.tell() + head.nbytes == len(raw)  # left at the first byte of the data
    got = npy.read_array(io.BytesIO(raw))
    assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    assert got.flags.writeable


def test_npz_files_load_as_np_load_gives_them(tmp_path: Path, no_ast: None) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, **{f"a{i}": a for i, a in enumerate(ARRAYS)}, **{"present-6162": ARRAYS[5]})
    got = npy.load_npz(str(path))
    assert sorted(got) == sorted([f"a{i}" for i in range(len(ARRAYS))] + ["present-6162"])
    for i, a in enumerate(ARRAYS):
        assert got[f"a{i}"].dtype == a.dtype and np.array_equal(got[f"a{i}"], a)
    got["a0"][0, 0] = 7  # writable, as np.load's arrays are


def _header(text: str, version: int = 1) -> bytes:
    body = text.encode("latin-1")
    size = struct.pack("<H", len(body)) if version == 1 else struct.pack("<I", len(body))
    return b"\x93NUMPY" + bytes([version, 0]) + size + body


@pytest.mark.parametrize("raw", [
    b"",
    b"\x93NUMPX\x01\x00",
    b"\x93NUMPY\x09\x00\x10\x00",  # version 9
    _header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n")[:-5],  # truncated
    _header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), 'x': 1, }\n"),
    _header("{'descr': '|O', 'fortran_order': False, 'shape': (3,), }\n"),  # objects
    _header("{'descr': 'not a dtype', 'fortran_order': False, 'shape': (3,), }\n"),
    _header("{'descr': [('a', [('b', '<f4')])], 'fortran_order': False, 'shape': (3,), }\n"),
    _header("{'descr': [('', '|V3'), ('a', '<f4')], 'fortran_order': False, 'shape': (3,), }\n"),
    _header("{'descr': [('a', '<f4', (2,))], 'fortran_order': False, 'shape': (3,), }\n"),
    _header("{'descr': [('a', '<f4'),('b', '<f4')], 'fortran_order': False, 'shape': (3,), }\n"),
    _header("{'descr': [('a', '|O')], 'fortran_order': False, 'shape': (3,), }\n"),
    _header("{'descr': '<f4', 'fortran_order': 0, 'shape': (3,), }\n"),
    _header("{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }\n"),
    _header("{'descr': '<f4', 'fortran_order': False, 'shape': (__import__('os'),), }\n"),
    _header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"),  # no newline
    _header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", version=2)[:14],
])
def test_anything_else_is_refused_with_value_error(raw: bytes, no_ast: None) -> None:
    with pytest.raises(ValueError):
        npy.read_header(io.BytesIO(raw))


def test_a_header_claiming_more_than_its_file_allocates_nothing(tmp_path: Path) -> None:
    raw = _header("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }\n")
    with pytest.raises(ValueError, match="bytes in"):
        npy.read_array(io.BytesIO(raw + b"\0" * 64), limit=64)
    path = tmp_path / "bad.npz"
    path.write_bytes(b"PK not a zip")
    with pytest.raises(ValueError, match="unreadable"):
        npy.load_npz(str(path))


def test_threads_read_headers_at_once(no_ast: None) -> None:
    """The recovery's case: hashing threads and the request thread parse headers together."""
    raws = [_npy(a) for a in ARRAYS]
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(300):
                for raw in raws:
                    npy.read_header(io.BytesIO(raw))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
