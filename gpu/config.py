"""GpuConfig: the typed `gpu:` settings (enabled, device_id, memory_limit, and the FAISS
index extension: faiss_index, nlist, nprobe, pq_m; see engine/ivf.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Enabled = Literal["auto", "true", "false"]

_FALSE = ("false", "0", "no", "off")
_TRUE = ("true", "1", "yes", "on")


def parse_enabled(value: Any) -> Enabled:
    """`gpu.enabled` as one of auto | true | false (bools and yes/no/on/off/1/0 accepted;
    anything else means auto, as it always has)."""
    mode = str(value).lower()
    if mode in _FALSE:
        return "false"
    if mode in _TRUE:
        return "true"
    return "auto"


def resolve_memory_limit(limit: Any, total_bytes: int | None) -> int | None:
    """`gpu.memory_limit` in bytes: None → 90% of the device, a float in (0, 1] → that
    fraction of it (None without a device), a number > 1 → bytes; anything else raises."""
    if limit is None:
        return int(total_bytes * 0.9) if total_bytes else None
    if isinstance(limit, float) and 0 < limit <= 1:
        return int(total_bytes * limit) if total_bytes else None
    if isinstance(limit, int | float) and limit > 1:
        return int(limit)
    raise ValueError(f"gpu.memory_limit must be bytes or a fraction in (0, 1], got {limit!r}")


@dataclass(frozen=True)
class GpuConfig:
    """enabled: auto (use a usable CUDA device if any) | true (same, but warn without one) |
    false (numpy only). device_id: the CUDA device. memory_limit: what segments may hold on the
    device: None (90% of it), bytes, or a fraction (0, 1]."""

    enabled: Enabled = "auto"
    device_id: int = 0
    memory_limit: int | float | None = None
    # FAISS index for segments past indexing_threshold instead of HNSW (engine/ivf.py):
    # none | ivf_flat | ivf_pq | cagra; nlist 0 = auto (≈ 4·sqrt(rows)); pq_m 0 = auto
    faiss_index: str = "none"
    nlist: int = 0
    nprobe: int = 32
    pq_m: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "enabled", parse_enabled(self.enabled))
        object.__setattr__(self, "device_id", int(self.device_id))
        object.__setattr__(self, "faiss_index", str(self.faiss_index or "none").lower())
        resolve_memory_limit(self.memory_limit, None)  # raises early on a bad value

    @classmethod
    def from_settings(cls, gpu: Any) -> GpuConfig:
        """From a `gpu:` settings section: a mapping or an object with these attributes."""
        if gpu is None:
            return cls()
        if isinstance(gpu, GpuConfig):
            return gpu
        get = gpu.get if isinstance(gpu, dict) else lambda k, d: getattr(gpu, k, d)
        return cls(enabled=get("enabled", "auto"), device_id=int(get("device_id", 0) or 0),
                   memory_limit=get("memory_limit", None),
                   faiss_index=get("faiss_index", "none") or "none",
                   nlist=int(get("nlist", 0) or 0), nprobe=int(get("nprobe", 32) or 32),
                   pq_m=int(get("pq_m", 0) or 0))
