"""The array-module shim: the only module in Quiver that imports cupy.

`xp` is cupy when a usable CUDA device exists (and config allows it), numpy otherwise.
Every device failure is caught here, logged once, and turns into a numpy fallback, so
callers above `gpu/` never see a CUDA exception type.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

log = logging.getLogger("quiver.gpu")

_lock = threading.Lock()
_state: dict[str, Any] = {"probed": False, "cupy": None, "reason": "not probed", "device_id": 0}


class DeviceFailure(RuntimeError):
    """A CUDA error (out of memory, driver, cuBLAS, kernel) surfaced at the gpu/ boundary."""


def is_device_error(exc: BaseException) -> bool:
    """CuPy's error types (cupy.cuda.*, cupy_backends.*), and anything marked as device
    failure; programming errors (ValueError, TypeError) are not swallowed."""
    if isinstance(exc, DeviceFailure):
        return True
    mod = type(exc).__module__ or ""
    return mod.startswith(("cupy", "cupy_backends"))


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Turn a device error inside the block into DeviceFailure (callers fall back to CPU)."""
    cp = _state["cupy"]
    try:
        if cp is None:
            yield
        else:  # the current device is per thread: requests run on pool threads
            with cp.cuda.Device(_state["device_id"]):
                yield
    except Exception as exc:
        if is_device_error(exc) and not isinstance(exc, DeviceFailure):
            raise DeviceFailure(f"{what}: {type(exc).__name__}: {exc}") from exc
        raise


def _probe(device_id: int) -> tuple[Any, str]:
    try:
        import cupy  # noqa: PLC0415 - optional dependency, imported lazily on purpose

        with cupy.cuda.Device(device_id):
            # A real allocation + kernel: an installed cupy without a driver fails here.
            (cupy.arange(4, dtype=cupy.float32) * 2).sum().item()
        name = cupy.cuda.runtime.getDeviceProperties(device_id)["name"]
        if isinstance(name, bytes):
            name = name.decode()
        return cupy, f"cuda:{device_id} ({name})"
    except Exception as exc:  # noqa: BLE001 - any failure means "no usable device"
        return None, f"cpu (no usable CUDA device: {type(exc).__name__}: {exc})"


def configure(enabled: str | bool = "auto", device_id: int = 0) -> str:
    """Pick the backend. `enabled`: auto | true | false. Returns a human description."""
    mode = str(enabled).lower()
    with _lock:
        _state["device_id"] = device_id
        if mode in ("false", "0", "no", "off"):
            _state.update(probed=True, cupy=None, reason="cpu (gpu.enabled=false)")
        else:
            cp, reason = _probe(device_id)
            if cp is None and mode in ("true", "1", "yes", "on"):
                log.warning("gpu.enabled=true but %s; falling back to CPU", reason)
            _state.update(probed=True, cupy=cp, reason=reason)
        log.info("array backend: %s", _state["reason"])
        return _state["reason"]


def _ensure() -> None:
    if not _state["probed"]:
        configure("auto")


def device_available() -> bool:
    _ensure()
    return _state["cupy"] is not None


def backend_name() -> str:
    _ensure()
    return _state["reason"]


def get_xp(prefer_device: bool = True) -> Any:
    """The array module new device-resident arrays should use."""
    _ensure()
    return _state["cupy"] if (prefer_device and _state["cupy"] is not None) else np


def xp_of(a: Any) -> Any:
    """numpy or cupy, whichever owns `a`."""
    cp = _state["cupy"]
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


def device_memory() -> tuple[int, int] | None:
    """(free, total) bytes of the configured device, or None on CPU."""
    _ensure()
    cp = _state["cupy"]
    if cp is None:
        return None
    with cp.cuda.Device(_state["device_id"]):
        free, total = cp.cuda.runtime.memGetInfo()
    return int(free), int(total)


def disable_device(reason: str) -> None:
    """Called by the `gpu/` boundary after a device failure: log once, use numpy from now on."""
    with _lock:
        if _state["cupy"] is not None:
            log.error("GPU disabled after failure, falling back to CPU: %s", reason)
        _state.update(probed=True, cupy=None, reason=f"cpu (device failed: {reason})")
