"""Device: one configured array backend (cupy on a CUDA device, or numpy) and its memory budget.

Built from a gpu.config.GpuConfig. `default_device()` is the process default: the one the
server configures at start (api.app) and the engine places new segments on unless it is
given another. `HOST` is a Device that never uses a GPU (a collection that fell back to the
CPU). After a device failure (`disable`) a Device hands out numpy from then on; arrays it
placed before stay valid until their owners move them to host memory.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpu.budget import DeviceBudget
from gpu.config import GpuConfig

log = logging.getLogger("quiver.gpu")


class DeviceFailure(RuntimeError):
    """A CUDA error (out of memory, driver, cuBLAS, kernel) surfaced at the gpu/ boundary."""


def is_device_error(exc: BaseException) -> bool:
    """CuPy's error types (cupy.cuda.*, cupy_backends.*), and anything marked as device
    failure; programming errors (ValueError, TypeError) are not swallowed."""
    if isinstance(exc, DeviceFailure):
        return True
    mod = type(exc).__module__ or ""
    return mod.startswith(("cupy", "cupy_backends"))


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


class Device:
    """Where new arrays go. Not probed until first asked (or `configure`d)."""

    def __init__(self, config: GpuConfig | None = None) -> None:
        self.config = config or GpuConfig()
        self.budget = DeviceBudget()
        self._lock = threading.Lock()
        self._cupy: Any = None
        self._probed = False
        self._reason = "not probed"

    def configure(self, config: GpuConfig | None = None) -> str:
        """Pick the backend from `config` (default: this device's own) and size the memory
        budget. Returns a human description of the backend."""
        config = config or self.config
        with self._lock:
            self.config = config
            if config.enabled == "false":
                self._cupy, self._reason = None, "cpu (gpu.enabled=false)"
            else:
                self._cupy, self._reason = _probe(config.device_id)
                if self._cupy is None and config.enabled == "true":
                    log.warning("gpu.enabled=true but %s; falling back to CPU", self._reason)
            self._probed = True
            log.info("array backend: %s", self._reason)
            reason = self._reason
        mem = self.memory()
        limit = self.budget.configure(config.memory_limit, mem[1] if mem else None)
        if mem:
            log.info("device memory budget: %s of %d bytes", limit, mem[1])
        return reason

    def _ensure(self) -> None:
        if not self._probed:
            self.configure()

    @property
    def available(self) -> bool:
        """A usable CUDA device backs this Device."""
        self._ensure()
        return self._cupy is not None

    @property
    def name(self) -> str:
        """`cuda:<id> (<model>)`, or `cpu (<why>)`."""
        self._ensure()
        return self._reason

    def array_module(self, prefer_device: bool = True) -> Any:
        """The array module new arrays should use: cupy while the device is usable."""
        self._ensure()
        return self._cupy if (prefer_device and self._cupy is not None) else np

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Run the block on this device (the current device is per thread: requests run on
        pool threads) and turn a device error inside it into DeviceFailure."""
        cp = self._cupy
        try:
            if cp is None:
                yield
            else:
                with cp.cuda.Device(self.config.device_id):
                    yield
        except Exception as exc:
            if is_device_error(exc) and not isinstance(exc, DeviceFailure):
                raise DeviceFailure(f"{what}: {type(exc).__name__}: {exc}") from exc
            raise

    def memory(self) -> tuple[int, int] | None:
        """(free, total) bytes of the device, or None on CPU."""
        self._ensure()
        cp = self._cupy
        if cp is None:
            return None
        with cp.cuda.Device(self.config.device_id):
            free, total = cp.cuda.runtime.memGetInfo()
        return int(free), int(total)

    def disable(self, reason: str) -> None:
        """After a device failure: log once, hand out numpy from now on."""
        with self._lock:
            if self._cupy is not None:
                log.error("GPU disabled after failure, falling back to CPU: %s", reason)
            self._cupy, self._probed = None, True
            self._reason = f"cpu (device failed: {reason})"


HOST = Device(GpuConfig(enabled="false"))
_default = Device()


def default_device() -> Device:
    """The process default device (configured once at start by api.app.build_catalog)."""
    return _default


def placement(where: Any) -> Device:
    """A Device from what callers pass today: a Device, the numpy module (host memory), or
    any other array module (cupy: the process default device)."""
    if isinstance(where, Device):
        return where
    if where is None:
        return _default
    return HOST if where is np else _default
