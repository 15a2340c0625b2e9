"""Collection snapshots: create, list, download, delete, recover (location or upload)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from api.errors import JSONResponse, from_exception, ok
from api.http import body_dict, endpoint, log
from api.multipart import receive_file
from engine.catalog import validate_name
from engine.errors import BadRequest, EngineError
from snapshots.manager import SnapshotManager
from snapshots.recovery import ChecksumMismatch, Recovery, check_checksum, check_priority
from snapshots.storage import check_snapshot_name


def _mgr(request: Request) -> SnapshotManager:
    return request.app.state.snapshots


def _rec(request: Request) -> Recovery:
    return request.app.state.recovery


def _name(request: Request) -> str:
    return request.path_params["collection_name"]


def _wait(request: Request) -> bool:
    v = request.query_params.get("wait")
    if v is None:
        return True
    if v not in ("true", "false"):
        raise BadRequest(f"Deserialize error in query parameters: invalid value {v!r} for wait")
    return v == "true"


def _accepted(started: float) -> JSONResponse:
    return JSONResponse({"status": "accepted", "time": time.perf_counter() - started},
                        status_code=202)


def _background(fn: Any, *args: Any) -> None:
    def run() -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - wait=false: Qdrant logs and drops the error
            log.exception("background snapshot task failed")
    threading.Thread(target=run, name="quiver-snapshot-task", daemon=True).start()


def _maybe_async(fn: Any):
    """wait=true runs the work and answers with its result; wait=false answers 202 at once."""
    def handler(request: Request, body: Any) -> Any:
        if not _wait(request):
            started = time.perf_counter()
            _background(fn, request, body)
            return _accepted(started)
        return fn(request, body)
    return handler


def create(request: Request, body: Any) -> dict[str, Any]:
    return _mgr(request).create(_name(request)).to_json()


def list_snapshots(request: Request, body: Any) -> list[dict[str, Any]]:
    return [s.to_json() for s in _mgr(request).list(_name(request))]


def delete(request: Request, body: Any) -> bool:
    return _mgr(request).delete(_name(request), request.path_params["snapshot_name"])


def recover(request: Request, body: Any) -> bool:
    return _rec(request).recover_location(_name(request), body_dict(body))


def _download(locate: Any):
    """Send an archive: a local file (FileResponse: Content-Length, ranges) or a stream from
    object storage with its Content-Length."""
    async def run(request: Request) -> Response:
        started = time.perf_counter()
        try:
            dl = await run_in_threadpool(locate, request)
        except EngineError as exc:
            return from_exception(exc, started)
        if dl.path is not None:
            return FileResponse(dl.path, media_type="application/octet-stream",
                                filename=os.path.basename(dl.path))
        return StreamingResponse(iterate_in_threadpool(dl.chunks),
                                 media_type="application/octet-stream",
                                 headers={"content-length": str(dl.size),
                                          "content-disposition":
                                          f'attachment; filename="{dl.name}"'})
    return run


download = _download(lambda r: _mgr(r).download(_name(r), r.path_params["snapshot_name"]))
download_full = _download(lambda r: _mgr(r).download_full(r.path_params["snapshot_name"]))


def create_full(request: Request, body: Any) -> dict[str, Any]:
    return _mgr(request).create_full().to_json()


def list_full(request: Request, body: Any) -> list[dict[str, Any]]:
    return [s.to_json() for s in _mgr(request).list_full()]


def delete_full(request: Request, body: Any) -> bool:
    return _mgr(request).delete_full(request.path_params["snapshot_name"])


async def upload(request: Request) -> Response:
    """Multipart field `snapshot`, streamed straight into the snapshots temp dir (never whole
    in memory, never spooled elsewhere), kept in the collection's snapshot directory as Qdrant
    does, then recovered. The checksum is computed while the bytes arrive."""
    started = time.perf_counter()
    tmp = None
    try:
        wait = _wait(request)
        # validated; on a single node every priority replaces the data with the snapshot's
        check_priority(request.query_params.get("priority"))
        checksum = check_checksum(request.query_params.get("checksum"))
        mgr = _mgr(request)
        collection = validate_name(_name(request))
        tmp = os.path.join(mgr.tmp, f"{uuid.uuid4().hex}.upload")
        got = await receive_file(request, "snapshot", tmp)
        fname = os.path.basename(got.filename)
        try:
            check_snapshot_name(fname)
        except EngineError:
            fname = f"{uuid.uuid4()}.snapshot"
        if checksum is not None and got.sha256 != checksum:
            raise ChecksumMismatch(f"Checksum mismatch: expected {checksum}, actual {got.sha256}")
        staged = tmp

        def recover_and_store() -> bool:
            try:
                return _rec(request).recover_file(collection, staged, None)
            finally:  # the upload is kept in the collection's snapshots, as Qdrant does
                mgr.store.publish(staged, collection, fname, got.sha256)

        tmp = None  # from here on the file belongs to recover_and_store
        if not wait:
            _background(recover_and_store)
            return _accepted(started)
        result = await run_in_threadpool(recover_and_store)
        return ok(result, started)
    except EngineError as exc:
        return from_exception(exc, started)
    except Exception:  # noqa: BLE001
        log.exception("snapshot upload failed")
        return from_exception(EngineError("snapshot upload failed"), started)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


S = "/collections/{collection_name}/snapshots"
routes = [
    Route(S, endpoint(_maybe_async(create), read_body=False), methods=["POST"]),
    Route(S, endpoint(list_snapshots, read_body=False), methods=["GET"]),
    Route(S + "/recover", endpoint(_maybe_async(recover)), methods=["PUT"]),
    Route(S + "/upload", upload, methods=["POST"]),
    Route(S + "/{snapshot_name}", download, methods=["GET"]),
    Route(S + "/{snapshot_name}", endpoint(_maybe_async(delete), read_body=False),
          methods=["DELETE"]),
    Route("/snapshots", endpoint(_maybe_async(create_full), read_body=False),
          methods=["POST"]),
    Route("/snapshots", endpoint(list_full, read_body=False), methods=["GET"]),
    Route("/snapshots/{snapshot_name}", download_full, methods=["GET"]),
    Route("/snapshots/{snapshot_name}",
          endpoint(_maybe_async(delete_full), read_body=False), methods=["DELETE"]),
]
