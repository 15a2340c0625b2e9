"""Quiver's own task endpoints (extensions, not in Qdrant's API): GET /tasks, GET /tasks/{id},
DELETE /tasks/{id} (cancel), and the tasks' Prometheus gauges."""

from __future__ import annotations

from starlette.routing import Route


def render_metrics(out: list[str]) -> None:
    """Append the tasks' gauges to a /metrics exposition."""


routes: list[Route] = []
