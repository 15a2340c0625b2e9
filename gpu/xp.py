"""Array helpers written once for numpy and cupy, and the process default device's shortcuts.

cupy is imported only by gpu/ (gpu.device probes it; the helpers here recognise its arrays by
type). `xp_of(a)` is the module that owns `a`; `to_host`/`to_device` are the one large copy
across. Device errors are NOT hidden from callers: code running device work wraps it in
`guard`, which turns a CUDA exception into `DeviceFailure`, and whoever can fall back catches
that: gpu.matrix.DeviceMatrix moves its rows to host memory on a failed allocation or write;
a failed search raises DeviceFailure to the caller, which moves the collection to the CPU.

`configure`, `device_available`, `backend_name`, `get_xp`, `device_memory` and
`disable_device` act on the process default device (gpu.device.default_device()).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpu.config import GpuConfig
from gpu.device import DeviceFailure, default_device, is_device_error

__all__ = ["DeviceFailure", "backend_name", "configure", "device_available", "device_memory",
           "disable_device", "get_xp", "guard", "is_device_array", "is_device_error",
           "to_device", "to_host", "xp_of"]


def xp_of(a: Any) -> Any:
    """numpy or cupy, whichever owns `a` (by the array's type: a device array stays one
    even after the device was disabled)."""
    if isinstance(a, np.ndarray):  # the common case first: this runs several times a query
        return np
    if type(a).__module__.startswith("cupy"):
        cp = sys.modules.get("cupy")
        if cp is not None and isinstance(a, cp.ndarray):
            return cp
    return np


def is_device_array(a: Any) -> bool:
    return xp_of(a) is not np


def to_device(a: np.ndarray, xp: Any) -> Any:
    """One large host→device copy (no-op for numpy)."""
    if xp is np:
        return np.asarray(a)
    return xp.asarray(a)


def to_host(a: Any) -> np.ndarray:
    """One large device→host copy (no-op for numpy arrays)."""
    if is_device_array(a):
        return a.get()
    return np.asarray(a)


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Device work on the default device; a device error inside becomes DeviceFailure."""
    with default_device().guard(what):
        yield


# ---- the process default device ------------------------------------------------------------


def configure(enabled: str | bool = "auto", device_id: int = 0) -> str:
    """Pick the default device's backend. `enabled`: auto | true | false. Returns a human
    description. (The server passes a whole GpuConfig to default_device().configure.)"""
    dev = default_device()
    return dev.configure(GpuConfig(enabled=enabled, device_id=device_id,  # type: ignore[arg-type]
                                   memory_limit=dev.config.memory_limit))


def device_available() -> bool:
    return default_device().available


def backend_name() -> str:
    return default_device().name


def get_xp(prefer_device: bool = True) -> Any:
    """The array module new device-resident arrays should use."""
    return default_device().array_module(prefer_device)


def device_memory() -> tuple[int, int] | None:
    """(free, total) bytes of the default device, or None on CPU."""
    return default_device().memory()


def disable_device(reason: str) -> None:
    """After a device failure: log once, use numpy from now on."""
    default_device().disable(reason)
