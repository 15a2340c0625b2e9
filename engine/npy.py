"""The .npy format: arrays as .npy bytes without copying, and their sha256 (snapshot
members); .npy headers and .npz files read without numpy's header parser.

Sealed segments never change, so the sha256 of their vectors member is computed once in the
background (Collection.digest_sealed) and a snapshot only hashes what is still growing.

numpy reads an .npy header with `ast.literal_eval`, and CPython 3.11's AST constructor is
not safe when threads parse at the same time (python/cpython#106905: "SystemError: AST
constructor recursion depth mismatch"). A recovery's hashing threads read the vectors'
headers while its request thread reads the other members' (snapshots/scan.py), and the
background threads load graphs and masks while requests run: one such recovery answered 500
in a CI run. The header numpy writes is one fixed dict literal (keys sorted: descr,
fortran_order, shape; padded with spaces, ended by a newline), so `read_header` reads exactly
that, with a regular expression, and refuses anything else (a hostile archive's member
included) with ValueError."""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np


def npy_parts(a: np.ndarray) -> list[bytes | memoryview]:
    """An .npy file as [header, data] without copying the data."""
    a = np.ascontiguousarray(a)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(a))
    data = a.data.cast("B") if a.size else b""  # (an empty array can't be cast)
    return [buf.getvalue(), data]


def parts_sha256(parts: list[bytes | memoryview]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def npy_sha256(a: np.ndarray) -> str:
    return parts_sha256(npy_parts(a))


MAGIC = b"\x93NUMPY"
MAX_HEADER = 1 << 16  # numpy's own default limit for a header it will parse
# reads of this size ran as fast as np.load (a 128 MiB graph: 71 vs 70 ms; 16 MiB: 106 ms)
_PIECE = 4 << 20
_HEADER = re.compile(
    r"\{'descr': ('[^'\\]{1,64}'|\[[^\]]{1,4096}\]), 'fortran_order': (True|False), "
    r"'shape': \(((?:\d{1,19}, )*\d{1,19},?)?\), \} *\n")
# a record's fields, as numpy writes a structured dtype's descr (engine/ids.py ID_DTYPE):
# named scalar fields only (no padding, nesting or sub-arrays, which Quiver never writes)
_FIELD = re.compile(r"\('([A-Za-z_][A-Za-z0-9_]{0,63})', '([^'\\]{1,64})'\)")


@dataclass(frozen=True)
class NpyHeader:
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


def read_header(f: BinaryIO) -> NpyHeader:
    """The header of the .npy stream `f` (read from its current position, which is left at
    the array's first byte). ValueError: not a plain array header numpy would write."""
    prefix = f.read(8)
    if len(prefix) != 8 or prefix[:6] != MAGIC:
        raise ValueError("not an .npy array (bad magic)")
    major = prefix[6]
    if major == 1:
        raw = f.read(2)
        size = struct.unpack("<H", raw)[0] if len(raw) == 2 else -1
    elif major in (2, 3):
        raw = f.read(4)
        size = struct.unpack("<I", raw)[0] if len(raw) == 4 else -1
    else:
        raise ValueError(f"unsupported .npy version {major}.{prefix[7]}")
    if not 0 < size <= MAX_HEADER:
        raise ValueError(f".npy header of {size} bytes")
    body = f.read(size)
    if len(body) != size:
        raise ValueError("truncated .npy header")
    try:
        text = body.decode("utf-8" if major == 3 else "latin-1")
    except UnicodeDecodeError:
        raise ValueError("undecodable .npy header") from None
    m = _HEADER.fullmatch(text)
    if m is None:
        raise ValueError("not a plain .npy array header")
    dtype = _dtype(m.group(1))
    shape = tuple(int(d) for d in m.group(3).split(",") if d.strip()) if m.group(3) else ()
    return NpyHeader(shape, m.group(2) == "True", dtype)


def _dtype(descr: str) -> np.dtype:
    """The dtype of a header's descr: a quoted type string or a list of named fields."""
    if descr.startswith("["):
        fields = [(f.group(1), f.group(2)) for f in _FIELD.finditer(descr)]
        if not fields or descr != "[" + ", ".join(f"('{n}', '{t}')" for n, t in fields) + "]":
            raise ValueError(f"unsupported .npy record dtype {descr[:80]!r}")
        spec: object = fields
    else:
        spec = descr[1:-1]
    try:
        dtype = np.dtype(spec)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ValueError(f"unknown .npy dtype {descr[:80]!r}") from None
    if dtype.hasobject:
        raise ValueError("object arrays are not read")
    return dtype


def read_array(f: BinaryIO, limit: int | None = None) -> np.ndarray:
    """The whole .npy array at `f`'s position, into a new writable array (ValueError if its
    header claims more than `limit` bytes: nothing that large is allocated)."""
    head = read_header(f)
    if limit is not None and head.nbytes > limit:
        raise ValueError(f".npy array of {head.nbytes} bytes in {limit}")
    out = np.empty(head.count, head.dtype)
    view = out.view(np.uint8).data  # a writable memoryview of its bytes
    got = 0
    while got < head.nbytes:
        # in pieces: a zip member's readinto reads into a temporary bytes of the size asked
        n = f.readinto(view[got : got + _PIECE])  # type: ignore[attr-defined]
        if not n:
            raise ValueError("truncated .npy array")
        got += n
    return out.reshape(head.shape, order="F" if head.fortran else "C")


def load_npz(path: str, what: str = ".npz file") -> dict[str, np.ndarray]:
    """Every array of the .npz file at `path` (as `np.load(path)` gives them, without its
    header parser). ValueError: damaged or not an .npz of plain arrays ("unreadable <what>")."""
    try:
        with zipfile.ZipFile(path) as z:
            out = {}
            for info in z.infolist():
                with z.open(info) as f:
                    out[info.filename.removesuffix(".npy")] = read_array(
                        f, info.file_size)  # type: ignore[arg-type]
            return out
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"unreadable {what} ({exc})") from None
