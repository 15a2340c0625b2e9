"""create_app(settings): the composition root."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api import observability
from api.auth import ApiKeyAuth, keys_from_settings
from api.errors import MethodNotAllowed, from_exception
from api.http import BodyLimit, Dispatch
from api.observability import Metrics, RequestContext, install_log_filter, instrument_snapshots
from api.qdrant_paths import not_served, qdrant_operation
from api.routes import (
    cluster,
    collections,
    dashboard,
    facet,
    groups,
    matrix,
    points,
    recommend,
    search,
    service,
    snapshots,
    tasks,
)
from api.settings import Settings, as_dict, max_snapshot_upload_bytes
from engine.catalog import Catalog
from engine.errors import BadRequest, NotFound
from gpu.config import GpuConfig
from gpu.device import default_device
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery
from snapshots.schedule import Scheduler
from snapshots.storage import make_storage

log = logging.getLogger("quiver")


def build_catalog(settings: Settings) -> Catalog:
    default_device().configure(GpuConfig.from_settings(settings.gpu))  # + memory budget
    st = settings.storage
    return Catalog(
        st.storage_path,
        wal_fsync=st.wal.fsync,
        flush_wal_bytes=st.flush.wal_bytes_mb << 20,
        flush_idle_s=float(st.flush.idle_seconds),
    )


class QuiverApp(FastAPI):
    """FastAPI whose HTTP requests enter through Quiver's pure ASGI front (`front`, composed
    by create_app): request context, auth, body limit, then direct dispatch, which hands
    what it does not serve itself to FastAPI's own stack (error pages, 404/405 handlers)."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is not None and scope["type"] == "http":
            scope["app"] = self  # what Starlette.__call__ sets; handlers read app.state
            await self.front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own middleware stack and router (no user middleware is added)."""
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, catalog: Catalog | None = None,
               owns_catalog: bool | None = None, serve_grpc: bool = False) -> QuiverApp:
    """`owns_catalog`: start its flusher and close it with the app (default: when created here).
    `serve_grpc`: also serve gRPC on `service.grpc_port` while the app runs (`quiver serve`)."""
    if owns_catalog is None:
        owns_catalog = catalog is None
    if catalog is None:
        catalog = build_catalog(settings)
        catalog.load()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owns_catalog:
            catalog.start_flusher()
        grpc_server = None
        try:
            if serve_grpc and settings.service.grpc_port:
                # imported only when served: qdrant-client's modules take ~1.5 s to import
                from api.rpc import server as rpc  # noqa: PLC0415
                grpc_server = await rpc.start(app, all_routes(), settings)
            app.state.scheduler.start()
            yield
        finally:
            front = getattr(app, "front", None)
            if isinstance(front, RequestContext):
                front.access_log.flush()
            # off the event loop: a scheduled snapshot in progress is cancelled and joined
            await asyncio.to_thread(app.state.scheduler.stop)
            if grpc_server is not None:
                await rpc.stop(app, grpc_server)
            if app.state.cluster is not None:  # its watcher stops before Ray shuts down
                app.state.cluster.close()
            if owns_catalog:
                catalog.close()

    app = QuiverApp(title="Quiver", version="0.1.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.catalog = catalog
    app.state.settings = settings
    app.state.started_at = time.time()
    app.state.node_id = _node_id(catalog.root)
    app.state.cluster = None
    if settings.cluster.enabled:  # Ray is imported in cluster mode only (api/cluster)
        from api.cluster.collection_snapshots import drop_scratch  # noqa: PLC0415
        from api.cluster.router import ClusterRouter  # noqa: PLC0415
        drop_scratch(catalog)
        app.state.cluster = ClusterRouter(app, settings, all_routes())
    st = settings.storage
    app.state.snapshots = SnapshotManager(
        catalog, st.snapshots_path, app.state.node_id, st.temp_path,
        make_storage(st.snapshots_path, as_dict(st.snapshots_config)))
    app.state.max_snapshot_upload = max_snapshot_upload_bytes(settings)
    app.state.metrics = Metrics()
    instrument_snapshots(app.state.snapshots, app.state.metrics)
    app.state.metrics.add_source(tasks.render_metrics)
    app.state.scheduler = Scheduler(app.state.snapshots, catalog,
                                    as_dict(settings).get("snapshots") or {})
    app.state.metrics.add_source(app.state.scheduler.render_metrics)
    app.state.recovery = Recovery(
        catalog, st.snapshots_path, st.enable_snapshot_url_recovery,
        float(st.snapshot_url_idle_timeout_s), st.snapshot_url_allowed_hosts,
        st.snapshot_url_max_bytes)
    app.router.routes.extend(all_routes())

    async def not_found(request: Request, exc: Exception) -> Response:
        if (template := qdrant_operation(request.method, request.url.path)) is not None:
            return from_exception(BadRequest(not_served(request.method, template)))
        return from_exception(NotFound(f"no such endpoint {request.method} {request.url.path}"))

    async def not_allowed(request: Request, exc: Exception) -> Response:
        if (template := qdrant_operation(request.method, request.url.path)) is not None:
            return from_exception(BadRequest(not_served(request.method, template)))
        return from_exception(MethodNotAllowed(f"{request.method} {request.url.path}"))

    app.add_exception_handler(404, not_found)
    app.add_exception_handler(405, not_allowed)
    # The front, outermost first (pure ASGI layers, composed here rather than with
    # add_middleware, which would put them inside FastAPI's own three layers): the request
    # context (path normalisation as Qdrant, request id, access log, metrics: refusals are
    # counted and carry the id), API keys (before the body: a refused request is never read),
    # the body limit, then direct dispatch (api/http.py Dispatch)
    front: ASGIApp = Dispatch(app.router.routes, app.stack)
    front = BodyLimit(front, max_bytes=int(settings.service.max_request_size_mb * (1 << 20)),
                      exempt=("/snapshots/upload",))
    api_key, read_only_key = keys_from_settings(settings.service)
    if api_key or read_only_key:
        front = ApiKeyAuth(front, api_key=api_key, read_only_api_key=read_only_key)
        log.info("API keys required (read-only key %s)", "set" if read_only_key else "unset")
    app.front = RequestContext(front, metrics=app.state.metrics, router_app=app,
                               access=settings.service.access_log)
    install_log_filter()
    return app


def all_routes() -> list[Route]:
    """Every route, in matching order: `GET /points/{id}` after the fixed sub-paths."""
    return (service.routes + observability.routes + tasks.routes + dashboard.routes
            + cluster.routes + collections.routes
            + snapshots.routes + search.routes + recommend.routes + groups.routes
            + matrix.routes + facet.routes + points.routes + points.tail_routes)


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
