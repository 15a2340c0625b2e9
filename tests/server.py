"""The real `quiver serve` in a subprocess, for end-to-end tests (shared with bench/)."""

from __future__ import annotations

import ssl
from functools import partial
from typing import Any
from unittest import mock

import httpx

from bench.server import Server as QuiverServer
from bench.server import free_port

__all__ = ["QuiverServer", "TlsServer", "free_port"]


class TlsServer(QuiverServer):
    """A server on HTTPS (service.enable_tls), polled with the test's trust store."""

    def __init__(self, *args: Any, context: ssl.SSLContext, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.context = context

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> TlsServer:
        # Server.start polls /readyz through httpx.get: hand it our trust store (and client cert)
        with mock.patch.object(httpx, "get", partial(httpx.get, verify=self.context)):
            super().start(timeout)
        return self
