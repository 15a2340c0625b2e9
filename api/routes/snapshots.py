"""Collection snapshots: create, list, download, delete, recover (location or upload).

Creation and recovery run as tasks (engine.tasks): the answer names the task in two headers,
`Location: /tasks/{id}` and `X-Quiver-Task: {id}` (wait=false's 202 body stays Qdrant's
`{"status": "accepted", "time": ...}`), so a client can follow its progress and cancel it
(GET / DELETE /tasks/{id}, Quiver's own endpoints).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from typing import Any

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from api.errors import JSONResponse, PayloadTooLarge, from_exception, ok, status_of
from api.http import body_dict, endpoint, log
from api.multipart import receive_file, upload_too_large
from api.parse.common import query_flag
from engine import tasks
from engine.catalog import validate_name
from engine.errors import BadRequest, EngineError, StorageFull
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery, check_checksum, check_priority
from snapshots.scan import ChecksumMismatch
from snapshots.storage import BodyChunks, RangeNotSatisfiable, check_snapshot_name, requested_range


def _mgr(request: Request) -> SnapshotManager:
    return request.app.state.snapshots


def _rec(request: Request) -> Recovery:
    return request.app.state.recovery


def _name(request: Request) -> str:
    return request.path_params["collection_name"]


def _wait(request: Request) -> bool:
    return query_flag(request, "wait", True, strict=True)


def _task_headers(task: tasks.Task | None) -> dict[str, str]:
    return {} if task is None else {"location": f"/tasks/{task.id}", "x-quiver-task": task.id}


def _accepted(started: float, task: tasks.Task | None = None) -> JSONResponse:
    return JSONResponse({"status": "accepted", "time": time.perf_counter() - started},
                        status_code=202, headers=_task_headers(task))


def _answer(request: Any, result: Any, started: float, task: tasks.Task) -> Any:
    """wait=true's answer with the task headers over HTTP; the bare result for the gRPC
    bridge (which runs this handler and wraps the result itself)."""
    if not isinstance(request, Request):
        return result
    resp = ok(result, started)
    resp.headers.update(_task_headers(task))
    return resp


def _start_task(kind: str, request: Request, source: str | None = None) -> tasks.Task:
    """Register the task before the work starts, so the answer can name it."""
    collection = request.path_params.get("collection_name")
    return tasks.registry.start(kind, collection, cancellable=True, source=source)


def _background(fn: Any, *args: Any, task: tasks.Task | None = None) -> None:
    def run() -> None:
        try:
            if task is None:
                fn(*args)
            else:
                with tasks.registry.bind(task):
                    fn(*args)
        except tasks.Cancelled:
            log.info("background snapshot task cancelled")
        except EngineError as exc:  # wait=false: Qdrant logs and drops the error
            if status_of(exc) >= 500:
                log.error("background snapshot task failed", exc_info=True)
            else:  # what wait=true would have answered with a 4xx: no traceback
                log.warning("background snapshot task failed: %s", exc.message)
        except Exception:  # noqa: BLE001
            log.exception("background snapshot task failed")
    threading.Thread(target=run, name="quiver-snapshot-task", daemon=True).start()


def _maybe_async(fn: Any, kind: str | None = None, source: str | None = None):
    """wait=true runs the work and answers with its result; wait=false answers 202 at once.
    With a task `kind`, the work runs as that task and the answer names it."""
    def handler(request: Request, body: Any) -> Any:
        started = time.perf_counter()
        if not _wait(request):
            task = _start_task(kind, request, source) if kind else None
            _background(fn, request, body, task=task)
            return _accepted(started, task)
        if kind is None:
            return fn(request, body)
        task = _start_task(kind, request, source)
        with tasks.registry.bind(task):
            result = fn(request, body)
        return _answer(request, result, started, task)
    return handler


def _cluster(request: Any) -> Any:
    """In cluster mode (the router): the cluster's collection snapshots
    (api/cluster/collection_snapshots.py), else None."""
    router = getattr(request.app.state, "cluster", None)
    if router is None:
        return None
    from api.cluster import collection_snapshots  # noqa: PLC0415 - cluster mode only

    return router, collection_snapshots


def create(request: Request, body: Any) -> dict[str, Any]:
    if (cl := _cluster(request)) is not None:
        return cl[1].create(cl[0], _mgr(request), _name(request)).to_json()
    return _mgr(request).create(_name(request)).to_json()


def list_snapshots(request: Request, body: Any) -> list[dict[str, Any]]:
    if (cl := _cluster(request)) is not None:
        return [s.to_json() for s in cl[1].list_snapshots(cl[0], _mgr(request),
                                                          _name(request))]
    return [s.to_json() for s in _mgr(request).list(_name(request))]


def delete(request: Request, body: Any) -> bool:
    if (cl := _cluster(request)) is not None:
        return cl[1].delete(cl[0], _mgr(request), _name(request),
                            request.path_params["snapshot_name"])
    return _mgr(request).delete(_name(request), request.path_params["snapshot_name"])


def recover(request: Request, body: Any) -> bool:
    if (cl := _cluster(request)) is not None:
        return cl[1].recover_location(cl[0], _mgr(request), _rec(request), _name(request),
                                      body_dict(body))
    return _rec(request).recover_location(_name(request), body_dict(body))


class _ClosingStream(StreamingResponse):
    """Streams an object's chunks and closes them on every path (the end, a failed read, a
    client that hung up): Starlette abandons its iterator unclosed on a disconnect, which
    would hold the S3 connection until garbage collection."""

    def __init__(self, chunks: BodyChunks, **kw: Any) -> None:
        super().__init__(iterate_in_threadpool(chunks), **kw)
        self.chunks = chunks

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.chunks.close()  # no thread reads it now: run_sync waits out a cancelled read


def _not_in_cluster(request: Request) -> None:
    """These routes bypass `endpoint()` (and so the cluster router): in cluster mode the
    front end's catalog is empty, so say what is not served rather than 404."""
    if getattr(request.app.state, "cluster", None) is not None:
        raise BadRequest(f"{request.method} {request.url.path}: full snapshots are not "
                         "supported in cluster mode yet (collection and shard snapshots are)")


def _download(locate: Any, clustered: bool = False):
    """Send an archive, resumably: a local file (FileResponse: Range, 206, 416, If-Range) or
    a ranged read from object storage with the same rules (snapshots.storage)."""
    async def run(request: Request) -> Response:
        started = time.perf_counter()
        try:
            if not clustered:  # shard snapshots (api/routes/cluster.py) are served
                _not_in_cluster(request)
            dl = await run_in_threadpool(locate, request)
            if dl.path is not None:
                return FileResponse(dl.path, media_type="application/octet-stream",
                                    filename=os.path.basename(dl.path))
            span = requested_range(dl, request.headers.get("range"),
                                   request.headers.get("if-range"))
            start, end = span or (0, dl.size)
            chunks = await run_in_threadpool(dl.read, start, end)
        except RangeNotSatisfiable as exc:
            return Response(status_code=416, headers={"content-range": f"bytes */{exc.size}"})
        except EngineError as exc:
            return from_exception(exc, started)
        return _ClosingStream(chunks, status_code=206 if span else 200,
                              media_type="application/octet-stream", headers=dl.headers(span))
    return run


def _locate(request: Request) -> Any:
    if (cl := _cluster(request)) is not None:
        return cl[1].download(cl[0], _mgr(request), _name(request),
                              request.path_params["snapshot_name"])
    return _mgr(request).download(_name(request), request.path_params["snapshot_name"])


download = _download(_locate, clustered=True)
download_full = _download(lambda r: _mgr(r).download_full(r.path_params["snapshot_name"]))


def create_full(request: Request, body: Any) -> dict[str, Any]:
    return _mgr(request).create_full().to_json()


def list_full(request: Request, body: Any) -> list[dict[str, Any]]:
    return [s.to_json() for s in _mgr(request).list_full()]


def delete_full(request: Request, body: Any) -> bool:
    return _mgr(request).delete_full(request.path_params["snapshot_name"])


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise BadRequest(f"invalid Content-Length: {raw!r}")
    return int(raw)


def _check_upload_size(request: Request, tmp_dir: str) -> int | None:
    """Refuse, before reading a byte of it, an upload whose declared size is over
    `service.max_snapshot_upload_mb` (413) or over the free space of the snapshots temp dir
    (507). Returns the byte limit to enforce while streaming (None: only the disk's)."""
    limit = request.app.state.max_snapshot_upload or None
    declared = _declared_length(request)
    if declared is None:
        return limit
    if limit is not None and declared > limit:
        raise upload_too_large(limit, "service.max_snapshot_upload_mb")
    free = shutil.disk_usage(tmp_dir).free
    if declared > free:
        raise StorageFull(f"the upload ({declared} bytes) is larger than the free space "
                          f"({free} bytes) of the snapshots volume")
    return limit


def _refused(exc: EngineError, started: float) -> Response:
    """An upload refused before its body was read to the end: answer, and close the
    connection rather than read (and discard) the rest of the body."""
    resp = from_exception(exc, started)
    resp.headers["connection"] = "close"
    return resp


async def upload(request: Request) -> Response:
    """Multipart field `snapshot`, streamed straight into the snapshots temp dir (never whole
    in memory, never spooled elsewhere), kept in the collection's snapshot directory as Qdrant
    does, then recovered. The checksum is computed while the bytes arrive. Size limits:
    `service.max_snapshot_upload_mb` (413) and the free space (507), checked against the
    declared Content-Length up front and again while the body streams in."""
    started = time.perf_counter()
    tmp = None
    try:
        cl = _cluster(request)
        wait = _wait(request)
        # validated; on a single node every priority replaces the data with the snapshot's
        check_priority(request.query_params.get("priority"))
        checksum = check_checksum(request.query_params.get("checksum"))
        mgr = _mgr(request)
        collection = validate_name(_name(request))
        try:
            limit = _check_upload_size(request, mgr.tmp)
        except (PayloadTooLarge, StorageFull) as exc:
            return _refused(exc, started)
        tmp = os.path.join(mgr.tmp, f"{uuid.uuid4().hex}.upload")
        try:
            got = await receive_file(request, "snapshot", tmp, max_bytes=limit)
        except (PayloadTooLarge, StorageFull) as exc:
            return _refused(exc, started)
        fname = os.path.basename(got.filename)
        try:
            check_snapshot_name(fname)
        except EngineError:
            fname = f"{uuid.uuid4()}.snapshot"
        if checksum is not None and got.sha256 != checksum:
            raise ChecksumMismatch(f"Checksum mismatch: expected {checksum}, actual {got.sha256}")
        staged = tmp
        task = _start_task("snapshot_recover", request, "upload")

        def recover_and_store() -> bool:
            keep = True
            try:
                with tasks.registry.bind(task):
                    if cl is not None:
                        return cl[1].recover_file(cl[0], _rec(request), collection, staged,
                                                  None, source="upload")
                    return _rec(request).recover_file(collection, staged, None,
                                                      source="upload")
            except tasks.Cancelled:
                keep = False  # cancelled: as if it never came, nothing is left behind
                raise
            finally:  # the upload is kept in the collection's snapshots, as Qdrant does
                if keep:
                    mgr.store.publish(staged, collection, fname, got.sha256)
                elif os.path.exists(staged):
                    os.unlink(staged)

        tmp = None  # from here on the file belongs to recover_and_store
        if not wait:
            _background(recover_and_store)
            return _accepted(started, task)
        result = await run_in_threadpool(recover_and_store)
        resp = ok(result, started)
        resp.headers.update(_task_headers(task))
        return resp
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
    Route(S, endpoint(_maybe_async(create, "snapshot_create"), read_body=False),
          methods=["POST"]),
    Route(S, endpoint(list_snapshots, read_body=False), methods=["GET"]),
    Route(S + "/recover", endpoint(_maybe_async(recover, "snapshot_recover")),
          methods=["PUT"]),
    Route(S + "/upload", upload, methods=["POST"]),
    Route(S + "/{snapshot_name}", download, methods=["GET"]),
    Route(S + "/{snapshot_name}", endpoint(_maybe_async(delete), read_body=False),
          methods=["DELETE"]),
    Route("/snapshots", endpoint(_maybe_async(create_full, "snapshot_create_full"),
                                 read_body=False), methods=["POST"]),
    Route("/snapshots", endpoint(list_full, read_body=False), methods=["GET"]),
    Route("/snapshots/{snapshot_name}", download_full, methods=["GET"]),
    Route("/snapshots/{snapshot_name}",
          endpoint(_maybe_async(delete_full), read_body=False), methods=["DELETE"]),
]
