"""Scheduled snapshots with retention (the `snapshots.schedule` config section)."""

from __future__ import annotations

from typing import Any


class Scheduler:
    def __init__(self, manager: Any, catalog: Any, config: dict[str, Any]) -> None:
        self.manager = manager
        self.catalog = catalog
        self.config = config

    def start(self) -> None:
        """Start the schedule thread (a no-op without schedules)."""

    def stop(self) -> None:
        """Stop it, waiting for a snapshot in progress to end."""

    def render_metrics(self, out: list[str]) -> None:
        """Append last success/failure time and age per schedule to a /metrics exposition."""
