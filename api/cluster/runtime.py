"""Ray, joined or started per `cluster.ray_address`; imported lazily (Ray is an extra)."""

from __future__ import annotations

import logging
from typing import Any

from api.settings import ClusterSettings
from engine.errors import ServiceError

log = logging.getLogger("quiver.cluster")


def ray_module() -> Any:
    try:
        import ray  # noqa: PLC0415 - cluster mode only
    except ImportError:  # pragma: no cover - the extra is part of `dev`
        raise ServiceError("cluster.enabled needs Ray: pip install 'quiver[cluster]'") from None
    return ray


def connect(cfg: ClusterSettings) -> Any:
    """ray.init per the settings (idempotent); returns the ray module."""
    ray = ray_module()
    if not ray.is_initialized():
        if cfg.ray_address == "local":
            # address "local": a new instance even when another Ray runs on this machine
            # (without it ray.init joins the one `ray start` last recorded, and refuses
            # num_cpus there)
            ray.init(address="local", namespace=cfg.namespace, num_cpus=cfg.num_cpus,
                     include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=cfg.ray_address, namespace=cfg.namespace, log_to_driver=False)
        log.info("joined Ray at %s (namespace %s)", cfg.ray_address, cfg.namespace)
    return ray


def alive_nodes(ray: Any) -> list[dict[str, Any]]:
    """Ray's live nodes, in a stable order (node id)."""
    return sorted((n for n in ray.nodes() if n.get("Alive")), key=lambda n: n["NodeID"])


def is_actor_gone(exc: BaseException) -> bool:
    """Whether a Ray call failed because its actor (or the actor's node) is gone. A timeout is
    not: a slow replica is alive (see `is_timeout`)."""
    from ray.exceptions import RayActorError  # noqa: PLC0415
    return isinstance(exc, RayActorError)


def is_timeout(exc: BaseException) -> bool:
    """Whether a Ray call only ran past its `timeout` (the actor may still be working)."""
    from ray.exceptions import GetTimeoutError  # noqa: PLC0415
    return isinstance(exc, GetTimeoutError)
