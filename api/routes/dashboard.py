"""The web dashboard at /dashboard: static files shipped in the package (api/static/dashboard),
served by the server itself; nothing is fetched from the internet.

The files carry no data, so they are served without an API key (api.auth lists /dashboard as
open); every call the page makes to the API sends the key the operator typed in. A strict
Content-Security-Policy keeps the page to this origin: no CDN, no inline script, no frames.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from api.errors import from_exception
from engine.errors import NotFound

ROOT = (Path(__file__).resolve().parent.parent / "static" / "dashboard").resolve()
INDEX = "index.html"

# Only these kinds of file are served; anything else is "not found" (no guessing from the OS's
# mime table, which differs between machines).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".json": "application/json",
}

HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # revalidate every time (ETag / Last-Modified): an upgraded server serves its own page
    "cache-control": "no-cache",
}


def resolve(name: str) -> Path | None:
    """The file under ROOT that `name` names, or None: no dot segments, hidden files,
    backslashes or NUL, and the resolved path must still lie inside ROOT (symlinks too)."""
    if not name:
        name = INDEX
    parts = name.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") or "\\" in p or "\x00" in p
           for p in parts):
        return None
    path = (ROOT / name).resolve()
    if not path.is_relative_to(ROOT) or not path.is_file():
        return None
    if path.suffix not in CONTENT_TYPES:
        return None
    return path


def _not_found(request: Request) -> Response:
    return from_exception(NotFound(f"no such endpoint {request.method} {request.url.path}"))


async def static_file(request: Request) -> Response:
    path = resolve(request.path_params.get("path", ""))
    if path is None:
        return _not_found(request)
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=HEADERS,
                        stat_result=os.stat(path))


routes: list[Route] = [
    # NormalizePath strips the trailing slash: /dashboard/ arrives here as /dashboard
    Route("/dashboard", static_file, methods=["GET"]),
    Route("/dashboard/{path:path}", static_file, methods=["GET"]),
]
