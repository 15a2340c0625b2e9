"""Large host→device copies (rehydration after load or snapshot recovery).

A plain `cupy.asarray(host)` copies from pageable memory through one staging buffer. Here a
few threads each read a 64 MiB piece straight from the file (or from host memory) into their
own pinned buffer and issue an async copy on their own stream, so disk/page-cache reads and
PCIe transfers overlap. On numpy the same calls are plain copies.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from gpu.xp import guard, is_device_array, xp_of

PIECE = 64 << 20
THREADS = 4


def _flat_bytes(a: Any) -> Any:
    return a.reshape(-1).view(xp_of(a).uint8)


def fill(dest: Any, src: np.ndarray) -> None:
    """Copy host `src` into the C-contiguous array `dest` (same shape and dtype).

    `src` may be an np.memmap: then pieces are read from its file with pread, never
    touching an intermediate full-size host copy.
    """
    if src.shape != dest.shape or src.dtype != dest.dtype:
        raise ValueError(f"fill: {src.shape}/{src.dtype} into {dest.shape}/{dest.dtype}")
    if not is_device_array(dest):
        np.copyto(dest, src)
        return
    nbytes = int(src.nbytes)
    if nbytes == 0:
        return
    with guard("host-to-device copy"):
        _fill_device(dest, src, nbytes)


def _fill_device(dest: Any, src: np.ndarray, nbytes: int) -> None:
    import cupy  # noqa: PLC0415 - only reached with a device array

    out = _flat_bytes(dest)
    filename = getattr(src, "filename", None)
    fd = os.open(filename, os.O_RDONLY) if filename else -1
    base = int(getattr(src, "offset", 0)) if filename else 0
    host = None if filename else _flat_bytes(np.ascontiguousarray(src))
    pieces = [(a, min(a + PIECE, nbytes)) for a in range(0, nbytes, PIECE)]
    workers = min(THREADS, len(pieces))
    device = dest.device

    def run(worker: int) -> None:
        with device:
            buf = cupy.cuda.alloc_pinned_memory(min(PIECE, nbytes))
            staging = np.frombuffer(buf, np.uint8, min(PIECE, nbytes))
            stream = cupy.cuda.Stream(non_blocking=True)
            for a, b in pieces[worker::workers]:
                view = staging[: b - a]
                if fd >= 0:
                    got = os.preadv(fd, [view.data], base + a)
                    if got != b - a:
                        raise OSError(f"short read from {filename}: {got} of {b - a} bytes")
                else:
                    assert host is not None  # no file: the rows come from memory
                    np.copyto(view, host[a:b])
                out[a:b].set(view, stream=stream)
                stream.synchronize()  # the pinned buffer is reused for the next piece

    try:
        with ThreadPoolExecutor(workers) as pool:
            for f in [pool.submit(run, w) for w in range(workers)]:
                f.result()
    finally:
        if fd >= 0:
            os.close(fd)
