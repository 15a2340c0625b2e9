"""The web dashboard at /dashboard: static files shipped in the package (api/static/dashboard),
served by the server itself; nothing is fetched from the internet."""

from __future__ import annotations

from starlette.routing import Route

routes: list[Route] = []
