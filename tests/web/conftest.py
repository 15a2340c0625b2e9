"""Headless Chromium for the dashboard tests: Debian's own browser (/usr/bin/chromium), driven by
Playwright's Python API. Playwright's browser download is never used: where Debian's chromium is
missing (`make test` installs it when apt-get works), the browser tests are skipped, saying so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("QUIVER_CHROMIUM", "/usr/bin/chromium")
# The machine's closed network refuses Chromium's own background connections; these flags
# keep it from trying (and from logging the refusals).
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1280, "height": 860}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "dashboard"

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} not found: the dashboard's browser tests need Debian's chromium "
                "package (`apt-get install chromium`; `make test` installs it where apt-get "
                "works)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the playwright package (a dev dependency) is missing")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@dataclass
class Tab:
    """One page in its own browser context (its own sessionStorage and cookies), with every
    console error, uncaught exception and failed request it saw."""

    context: Any
    page: Any
    errors: list[str] = field(default_factory=list)

    def ready(self, name: str, timeout: float = 15_000) -> None:
        """Wait until the single-page app has rendered page `name`."""
        self.page.wait_for_selector(f'main[data-ready="{name}"] #page-{name}[aria-busy="false"]',
                                    timeout=timeout)


@pytest.fixture
def open_tab(browser: Any) -> Iterator[Callable[..., Tab]]:
    """open_tab(**context_options) → a Tab; closed after the test."""
    tabs: list[Tab] = []

    def make(**options: Any) -> Tab:
        context = browser.new_context(viewport=VIEWPORT, **options)
        page = context.new_page()
        tab = Tab(context, page)
        page.on("console", lambda m: tab.errors.append(f"console: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: tab.errors.append(f"exception: {e}"))
        page.on("requestfailed", lambda r: tab.errors.append(
            f"request failed: {r.method} {r.url} {r.failure}"))
        page.set_default_timeout(15_000)
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        tab.context.close()


@pytest.fixture
def shoot(tmp_path: Path) -> Callable[..., Path]:
    """Save a screenshot under the test's temp dir; with QUIVER_UPDATE_SCREENSHOTS=1 also as
    docs/dashboard/NAME.png (the pictures the README shows)."""

    def take(tab: Tab, name: str, docs: bool = True) -> Path:
        path = tmp_path / f"{name}.png"
        tab.page.screenshot(path=str(path), full_page=True)
        if docs and os.environ.get("QUIVER_UPDATE_SCREENSHOTS") == "1":
            DOCS.mkdir(parents=True, exist_ok=True)
            (DOCS / f"{name}.png").write_bytes(path.read_bytes())
        return path

    return take
