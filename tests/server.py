"""The real `quiver serve` in a subprocess, for end-to-end tests (shared with bench/)."""

from bench.server import Server as QuiverServer
from bench.server import free_port

__all__ = ["QuiverServer", "free_port"]
