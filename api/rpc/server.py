"""The gRPC server on `service.grpc_port`: Qdrant's four services over one Bridge, started and
stopped with the app (same event loop, catalog, API keys and TLS as REST)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from qdrant_client.grpc import (
    collections_service_pb2_grpc,
    points_service_pb2_grpc,
    qdrant_pb2_grpc,
    snapshots_service_pb2_grpc,
)

from api.rpc.collections_service import CollectionsService
from api.rpc.dispatch import Bridge
from api.rpc.points_service import PointsService
from api.rpc.qdrant_service import QdrantService
from api.rpc.snapshots_service import SnapshotsService
from api.settings import Settings

log = logging.getLogger("quiver.grpc")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """Qdrant's `service.enable_tls` and `tls:` section, as for REST (files checked at
    start-up by api.cli.tls_options)."""
    svc, tls = settings.service, settings.tls
    if not svc.enable_tls:
        return None
    with open(tls.key, "rb") as f:
        key = f.read()
    with open(tls.cert, "rb") as f:
        cert = f.read()
    ca = None
    if svc.verify_https_client_certificate:
        with open(tls.ca_cert, "rb") as f:
            ca = f.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                       require_client_auth=ca is not None)


class _Undecodable:
    """A request whose bytes are not the RPC's message."""

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(deserialize: Any) -> Any:
    def run(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except DecodeError as exc:
            return _Undecodable(str(exc))
    return run


def _guarded(behavior: Any) -> Any:
    async def run(request: Any, context: Any) -> Any:
        if isinstance(request, _Undecodable):
            # tonic's answer (Qdrant): INTERNAL "failed to decode Protobuf message: ..."
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"failed to decode Protobuf message: {request.error}")
        return await behavior(request, context)
    return run


def _decoding(handler: Any) -> Any:
    """A unary handler that answers a message that does not decode with Qdrant's status and
    text instead of grpcio's bare UNKNOWN; other handlers unchanged."""
    if handler is None or handler.unary_unary is None:
        return handler
    return handler._replace(request_deserializer=_lenient(handler.request_deserializer),
                            unary_unary=_guarded(handler.unary_unary))


class _DecodeErrors(grpc.GenericRpcHandler):
    """A generic handler whose unary methods go through _decoding."""

    def __init__(self, inner: grpc.GenericRpcHandler) -> None:
        self.inner = inner
        self.cache: dict[str, Any] = {}

    def service(self, details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        handler = self.cache.get(method)
        if handler is None:
            handler = _decoding(self.inner.service(details))
            if handler is not None:
                self.cache[method] = handler
        return handler


class _Registry:
    """What the generated add_*Servicer_to_server functions see as the server: their handlers
    are wrapped by _decoding on the way in."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.server.add_generic_rpc_handlers(tuple(_DecodeErrors(h) for h in handlers))

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.server.add_registered_method_handlers(
            service, {name: _decoding(h) for name, h in handlers.items()})


@dataclass
class Built:
    server: grpc.aio.Server
    port: int  # the bound port (port 0 picks a free one, for tests)
    bridge: Bridge
    health: health.aio.HealthServicer


SERVICES = ("qdrant.Qdrant", "qdrant.Collections", "qdrant.Points", "qdrant.Snapshots")


def build_server(app: Any, routes: list[Any], settings: Settings) -> Built:
    """The server with every service registered and its port bound (not yet started)."""
    limit = int(settings.service.max_request_size_mb * (1 << 20))
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),
    ])
    bridge = Bridge(app, routes)
    registry = _Registry(server)
    qdrant_pb2_grpc.add_QdrantServicer_to_server(QdrantService(bridge), registry)
    collections_service_pb2_grpc.add_CollectionsServicer_to_server(
        CollectionsService(bridge), registry)
    points_service_pb2_grpc.add_PointsServicer_to_server(PointsService(bridge), registry)
    snapshots_service_pb2_grpc.add_SnapshotsServicer_to_server(SnapshotsService(bridge),
                                                               registry)
    # the standard health service, open without a key as in Qdrant (probes carry none);
    # SERVING for the server ("") and each Qdrant service while the server runs
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, registry)
    port = settings.service.grpc_port or 0
    address = _address(settings.service.host, port)
    creds = _credentials(settings)
    bound = server.add_secure_port(address, creds) if creds is not None \
        else server.add_insecure_port(address)
    return Built(server, bound, bridge, checker)


async def start(app: Any, routes: list[Any], settings: Settings) -> grpc.aio.Server:
    built = build_server(app, routes, settings)
    server, port = built.server, built.port
    await server.start()
    for name in SERVICES:
        await built.health.set(name, health_pb2.HealthCheckResponse.SERVING)
    app.state.grpc_port = port
    app.state.grpc_bridge = built.bridge
    app.state.grpc_health = built.health
    log.info("gRPC listening on %s (%s)", _address(settings.service.host, port),
             "TLS" if settings.service.enable_tls else "plaintext")
    return server


async def stop(app: Any, server: grpc.aio.Server, grace: float = 5.0,
               drain: float = 30.0) -> None:
    """Stop taking calls, give running ones `grace` seconds, then wait (up to `drain`) for
    handlers still running in worker threads, so the catalog is not closed under them."""
    await app.state.grpc_health.enter_graceful_shutdown()  # probes see NOT_SERVING
    await server.stop(grace=grace)
    await app.state.grpc_bridge.drain(drain)
