"""Service endpoints: version info, health probes, telemetry."""

from __future__ import annotations

import os
import subprocess
import time
from functools import lru_cache
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from api.errors import JSONResponse
from api.http import QDRANT_API_VERSION, QUIVER_VERSION, direct, endpoint
from api.routes.tasks import telemetry_tasks
from engine import ann, indexing, ivf, quantization
from gpu.device import default_device


@lru_cache(maxsize=1)
def commit_hash() -> str:
    """The git commit Quiver runs from, or 40 zeros (clients only check the length)."""
    env = os.environ.get("QUIVER_COMMIT", "")
    if len(env) == 40:
        return env
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=2, cwd=os.path.dirname(os.path.abspath(__file__)))
        h = out.stdout.strip()
        if out.returncode == 0 and len(h) == 40:
            return h
    except (OSError, subprocess.SubprocessError):
        pass
    return "0" * 40


@direct
async def root(request: Request) -> Response:
    return JSONResponse({"title": "quiver - vector search engine", "version": QDRANT_API_VERSION,
                         "commit": commit_hash()})


# the probes' answers never change: built once (the front copies headers, never edits them)
_HEALTHZ = PlainTextResponse("healthz check passed")
_READYZ = PlainTextResponse("all shards are ready")


@direct
async def healthz(request: Request) -> Response:
    return _HEALTHZ


@direct
async def readyz(request: Request) -> Response:
    return _READYZ


def telemetry(request: Request, body: Any) -> dict[str, Any]:
    catalog = request.app.state.catalog
    started = request.app.state.started_at
    collections = []
    for name in catalog.names():
        coll = catalog.collections.get(name)
        if coll is None:
            continue
        collections.append({"id": name, "points": coll.points_count(),
                            "segments": len(coll.segments), **coll.device_info(),
                            # bytes of quantized codes per vector name (engine/quantization.py)
                            "quantized_bytes": indexing.quantized_bytes(coll),
                            # device vs host bytes of rows and codes (quantized floats: host)
                            **indexing.memory_bytes(coll)})
    return {
        "id": str(request.app.state.node_id),
        "app": {"name": "quiver", "version": QUIVER_VERSION,
                "startup": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))},
        "collections": {"number_of_collections": len(collections)},
        # Quiver's own section: the Qdrant API version served and where each collection lives.
        "quiver": {"qdrant_api_version": QDRANT_API_VERSION, "commit": commit_hash(),
                   "uptime_s": time.time() - started, "device": default_device().name,
                   "index_builds": ann.builds(),
                   "quantizer_trainings": quantization.trainings(),
                   "ivf_trainings": ivf.trainings(),  # counted before the index is adopted
                   "collections": collections,
                   "tasks": telemetry_tasks()},
    }


routes = [
    Route("/", root, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/livez", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/telemetry", endpoint(telemetry, read_body=False), methods=["GET"]),
]
