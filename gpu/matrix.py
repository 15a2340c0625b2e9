"""DeviceMatrix: one vector's rows for one segment, wherever they live (device or host).

The matrix owns the device policy for those rows:

- placement: rows go on its Device while it is usable and the memory budget allows,
  otherwise in host memory; storage is allocated for `capacity` rows and grows by doubling
  (a grown array is a new array: readers holding the old one keep a valid view of its rows);
- the budget: it reserves its device bytes (rows + squared norms) on behalf of its owner (a
  segment, gpu.budget.Resident); the budget may move a cold sealed owner to host memory;
- failures: a device error while allocating, writing, filling, gathering or copying rows
  moves the owner to host memory (all its matrices, so the owner lives in one place) and the
  operation is redone there. A device error while *searching* is raised as DeviceFailure:
  the caller decides what else moves to the CPU (the whole collection, in the engine).

Rows [0, n) are append-only: the caller writes rows beyond its published row count only, so
readers never need a lock. `array` and `norms` are swapped together (one attribute), so a
reader never pairs a host array with device norms.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, NamedTuple

import numpy as np

from gpu import flat, transfer
from gpu.budget import Resident
from gpu.device import Device, DeviceFailure
from gpu.xp import to_device, to_host, xp_of


class _Storage(NamedTuple):
    array: Any  # (capacity, dim) in the storage dtype
    norms: Any  # (capacity,) float32 squared norms (L2 only), else None


class DeviceMatrix:
    def __init__(self, device: Device, dim: int, dtype: Any, l2: bool = False,
                 owner: Resident | None = None) -> None:
        self.device = device
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self.l2 = l2
        # a weak reference: the owner holds its matrices, not the other way round
        self._owner = weakref.ref(owner) if owner is not None else None
        self._xp = device.array_module()  # numpy, or cupy while the rows are on the device
        self.capacity = 0
        self._s = _Storage(np.zeros((0, self.dim), self.dtype),
                           np.zeros(0, np.float32) if l2 else None)
        # a matrix without an owner is its own budget resident
        self.sealed = False
        self.last_used = time.monotonic()

    # ---- where the rows live ------------------------------------------------------------------

    @property
    def array(self) -> Any:
        """All `capacity` rows' storage (host or device array); rows [0, n) are the data."""
        return self._s.array

    @property
    def norms(self) -> Any:
        """Squared L2 norms per row (float32, where the rows live), or None (not L2)."""
        return self._s.norms

    @property
    def on_device(self) -> bool:
        return self._xp is not np

    def host_resident(self, n: int) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Rows [0, n) and their norms, read together (a move to the device between two
        reads would pair host rows with device norms), or None while they are on the device."""
        s = self._s
        if not isinstance(s.array, np.ndarray):
            return None
        return s.array[:n], None if s.norms is None else s.norms[:n]

    @property
    def row_bytes(self) -> int:
        """Stored bytes per row of the vector (norms not counted)."""
        return self.dtype.itemsize * self.dim

    def nbytes(self) -> int:
        """Bytes this matrix holds where its rows live (storage + norms, all capacity)."""
        s = self._s
        return int(s.array.nbytes) + (0 if s.norms is None else int(s.norms.nbytes))

    def _device_bytes(self, cap: int) -> int:
        return cap * (self.row_bytes + (4 if self.l2 else 0))

    def _resident(self) -> Any:
        owner = self._owner() if self._owner is not None else None
        return self if owner is None else owner

    def _fall_back(self) -> None:
        """Device failure or no room: the owner (all its matrices) moves to host memory."""
        self._resident().move_to_host()
        self.move_to_host()  # in case the owner does not hold this matrix (any more)

    def move_to_host(self) -> None:
        """Copy device-resident rows to host memory; from now on this matrix lives there.
        Readers holding the old device arrays keep using them until they finish."""
        if not self.on_device:
            return
        s = self._s
        self._s = _Storage(to_host(s.array), None if s.norms is None else to_host(s.norms))
        self._xp = np
        self.device.budget.release(self)

    def _retry_on_host(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except DeviceFailure:
            if not self.on_device:
                raise
            self._fall_back()
            return fn(*args)

    # ---- growth -------------------------------------------------------------------------------

    def grow(self, need: int, n: int) -> None:
        """Room for `need` rows (capacity doubles), keeping rows [0, n)."""
        if need <= self.capacity:
            return
        cap = max(need, self.capacity * 2, 16)
        self.reserve(cap)
        self._retry_on_host(self._grow_storage, cap, n)

    def reserve(self, cap: int) -> None:
        """Reserve device memory for `cap` rows; over the budget, the owner moves to host."""
        if self.on_device and not self.device.budget.reserve(
                self._resident(), self._device_bytes(cap), holder=self):
            self._fall_back()  # over gpu.memory_limit: these rows live on the host

    def _grow_storage(self, cap: int, n: int) -> None:
        xp, old = self._xp, self._s
        arr = self._alloc((cap, self.dim), self.dtype)
        if n:
            arr[:n] = _like(old.array[:n], xp)
        norms = None
        if self.l2:
            norms = self._alloc((cap,), np.float32)
            if n:
                norms[:n] = _like(old.norms[:n], xp)
        self._s = _Storage(arr, norms)
        self.capacity = cap

    def _alloc(self, shape: tuple[int, ...], dtype: Any) -> Any:
        xp = self._xp
        if xp is np:
            return np.zeros(shape, dtype)
        with self.device.guard("device allocation"):
            return xp.zeros(shape, dtype=dtype)

    # ---- writes -------------------------------------------------------------------------------

    def write(self, rows: np.ndarray, host: np.ndarray) -> None:
        """Store host rows (already in the storage dtype) at row numbers `rows` (ascending)."""
        if len(rows):
            self._retry_on_host(self._write, rows, host)

    def _write(self, rows: np.ndarray, host: np.ndarray) -> None:
        xp, s = self._xp, self._s
        with self.device.guard("writing vectors"):
            block = to_device(host, xp)
            if int(rows[-1]) - int(rows[0]) + 1 == len(rows):
                s.array[int(rows[0]) : int(rows[-1]) + 1] = block  # one copy
            else:
                s.array[xp.asarray(rows)] = block
            if s.norms is not None:
                f32 = host.astype(np.float32, copy=False)
                s.norms[xp.asarray(rows)] = to_device(np.einsum("ij,ij->i", f32, f32), xp)

    def load(self, host: np.ndarray, n: int, keep_mapped: bool = False) -> None:
        """Rows [0, n) from host memory (from disk or a snapshot): one large copy, to the
        device if the rows live there (chunked pinned copies straight from a memory-mapped
        file). `keep_mapped`: a memory-mapped `host` of rows that never change again stays
        mapped when the rows live on the host (the page cache serves it, nothing is copied)."""
        if not n:
            return
        if keep_mapped and not self.on_device and isinstance(host, np.memmap):
            self._s = _Storage(host.view(np.ndarray), self._s.norms)
        else:
            self._retry_on_host(lambda: transfer.fill(self._s.array[:n], host))
        if self.l2:
            self._retry_on_host(self._norms_of, n)

    def _norms_of(self, n: int) -> None:
        s = self._s
        with self.device.guard("squared norms"):
            s.norms[:n] = _sq_norms(s.array[:n])

    def take(self, src: DeviceMatrix, rows: np.ndarray, n: int) -> None:
        """Rows `rows` (ascending, all < n) of `src` as this matrix's rows [0, len(rows)):
        one gather where the source lives (device-side when on the device)."""
        if len(rows):
            self._retry_on_host(self._take, src, rows, n)

    def _take(self, src: DeviceMatrix, rows: np.ndarray, n: int) -> None:
        m, xp, s, theirs = len(rows), self._xp, self._s, src._s
        with self.device.guard("copying vectors"):
            vecs = theirs.array[:n]
            s.array[:m] = _like(vecs[xp_of(vecs).asarray(rows)], xp)
            if s.norms is not None and theirs.norms is not None:
                norms = theirs.norms[:n]
                s.norms[:m] = _like(norms[xp_of(norms).asarray(rows)], xp)
            elif s.norms is not None:
                s.norms[:m] = _sq_norms(s.array[:m])

    def share_host_rows(self, rows: np.ndarray) -> bool:
        """Serve the leading rows from `rows` (same values, e.g. an HNSW index's own copy)
        instead of this matrix's host storage, so they are held once. Only on the host, only
        for the same dtype and width; False when not shared."""
        arr = self._s.array
        if self.on_device or rows.dtype != arr.dtype or rows.shape[1:] != arr.shape[1:]:
            return False
        self._s = _Storage(rows, self._s.norms)
        return True

    # ---- reads --------------------------------------------------------------------------------

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Host float32 copies of some rows (for responses)."""
        return self._retry_on_host(self._gather, rows)

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        arr = self._s.array
        with self.device.guard("reading vectors"):
            sel = arr[xp_of(arr).asarray(rows)] if len(rows) else arr[:0]
            return to_host(sel).astype(np.float32, copy=False)

    def host_rows(self, n: int, start: int = 0) -> np.ndarray:
        """Rows [start, n) in host memory, in the storage dtype: a view when the rows live on
        the host, a copy from the device otherwise."""
        return self._retry_on_host(self._host_rows, n, start)

    def _host_rows(self, n: int, start: int) -> np.ndarray:
        arr = self._s.array
        with self.device.guard("reading vectors"):
            return to_host(arr[start:n])

    def search(self, start: int, n: int, queries: np.ndarray, k: int, metric: Any,
               mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over rows [start, n) (gpu.flat.search: scores, rows counted from
        `start`, host arrays). `mask`: host bools over those rows. A device error raises
        DeviceFailure (the caller decides what moves to the CPU)."""
        s = self._s  # rows and norms from the same place
        norms = None if s.norms is None else s.norms[start:n]
        return flat.search(s.array[start:n], queries, k, metric, mask, norms)


def _like(a: Any, xp: Any) -> Any:
    """`a` as an array of module `xp` (a copy only when it has to cross host/device)."""
    if xp_of(a) is xp:
        return a
    return to_device(to_host(a), xp) if xp is not np else to_host(a)


def _sq_norms(vectors: Any, chunk: int = 1 << 18) -> Any:
    """Squared L2 norms in float32, computed where the vectors live, in bounded chunks."""
    xp = xp_of(vectors)
    out = xp.empty(vectors.shape[0], dtype=xp.float32)
    for s in range(0, vectors.shape[0], chunk):
        x = vectors[s : s + chunk].astype(xp.float32)
        out[s : s + chunk] = (x * x).sum(axis=1)
    return out
