"""A tiny HTTP server for tests that recover snapshots from URLs: `routes` maps a path to
(status, headers, body); `seen` records (path, api-key header) of every request."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.seen.append((self.path, self.headers.get("api-key")))  # type: ignore[attr-defined]
        status, headers, body = self.server.routes.get(  # type: ignore[attr-defined]
            self.path, (404, {}, b"not here"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def start() -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.routes, srv.seen = {}, []  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@contextmanager
def serving() -> Iterator[ThreadingHTTPServer]:
    srv = start()
    try:
        yield srv
    finally:
        srv.shutdown()
