"""create_app(settings): the composition root."""

from __future__ import annotations

import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from api import observability
from api.auth import ApiKeyAuth, keys_from_settings
from api.errors import error
from api.http import BodyLimit, NormalizePath
from api.observability import Metrics, RequestContext, install_log_filter, instrument_snapshots
from api.routes import collections, points, search, service, snapshots
from api.settings import max_snapshot_upload_bytes
from engine.catalog import Catalog
from gpu import xp
from gpu.budget import BUDGET
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery
from snapshots.storage import make_storage

log = logging.getLogger("quiver")


def build_catalog(settings: dict[str, Any]) -> Catalog:
    gpu = settings.get("gpu") or {}
    xp.configure(gpu.get("enabled", "auto"), int(gpu.get("device_id", 0)))
    mem = xp.device_memory()
    limit = BUDGET.configure(gpu.get("memory_limit"), mem[1] if mem else None)
    if mem:
        log.info("device memory budget: %s of %d bytes", limit, mem[1])
    st = settings["storage"]
    flush = st.get("flush") or {}
    return Catalog(
        st["storage_path"],
        wal_fsync=bool((st.get("wal") or {}).get("fsync", True)),
        flush_wal_bytes=int(flush.get("wal_bytes_mb", 32)) << 20,
        flush_idle_s=float(flush.get("idle_seconds", 5)),
    )


def create_app(settings: dict[str, Any], catalog: Catalog | None = None,
               owns_catalog: bool | None = None) -> FastAPI:
    """`owns_catalog`: start its flusher and close it with the app (default: when created here)."""
    if owns_catalog is None:
        owns_catalog = catalog is None
    if catalog is None:
        catalog = build_catalog(settings)
        catalog.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        if owns_catalog:
            catalog.start_flusher()
        try:
            yield
        finally:
            if owns_catalog:
                catalog.close()

    app = FastAPI(title="Quiver", version="0.1.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.catalog = catalog
    app.state.settings = settings
    app.state.started_at = time.time()
    app.state.node_id = _node_id(catalog.root)
    st = settings["storage"]
    app.state.snapshots = SnapshotManager(
        catalog, st["snapshots_path"], app.state.node_id, st.get("temp_path"),
        make_storage(st["snapshots_path"], st.get("snapshots_config")))
    app.state.max_snapshot_upload = max_snapshot_upload_bytes(settings)
    app.state.metrics = Metrics()
    instrument_snapshots(app.state.snapshots, app.state.metrics)
    app.state.recovery = Recovery(
        catalog, st["snapshots_path"], bool(st.get("enable_snapshot_url_recovery", True)),
        float(st.get("snapshot_url_idle_timeout_s") or 60),
        st.get("snapshot_url_allowed_hosts"), st.get("snapshot_url_max_bytes"))
    for r in service.routes + observability.routes + collections.routes + snapshots.routes \
            + search.routes + points.routes + points.tail_routes:
        app.router.routes.append(r)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(f"Not found: no such endpoint {request.method} {request.url.path}", 404)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error(f"Method not allowed: {request.method} {request.url.path}", 405)

    app.add_exception_handler(404, not_found)
    app.add_exception_handler(405, not_allowed)
    max_mb = settings["service"].get("max_request_size_mb") or 32
    app.add_middleware(BodyLimit, max_bytes=int(max_mb * (1 << 20)),
                       exempt=("/snapshots/upload",))
    api_key, read_only_key = keys_from_settings(settings["service"])
    if api_key or read_only_key:  # outside BodyLimit: a refused request is never read at all
        app.add_middleware(ApiKeyAuth, api_key=api_key, read_only_api_key=read_only_key)
        log.info("API keys required (read-only key %s)", "set" if read_only_key else "unset")
    # request id, access log, request metrics: outside auth (refusals are counted and carry
    # the id), inside NormalizePath (route templates match the normalised path)
    app.add_middleware(RequestContext, metrics=app.state.metrics, router_app=app,
                       access=bool(settings["service"].get("access_log", True)))
    install_log_filter()
    app.add_middleware(NormalizePath)  # outermost: auth sees the normalised path, as in Qdrant
    return app


def _node_id(root: str) -> int:
    """A stable per-storage node id (Qdrant's peer id appears in snapshot names)."""
    path = os.path.join(root, "node_id")
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        nid = uuid.uuid4().int & ((1 << 53) - 1)
        from engine.durable import write_atomic  # noqa: PLC0415
        write_atomic(path, str(nid).encode())
        return nid
