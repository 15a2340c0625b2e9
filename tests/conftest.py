from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import QuiverServer  # noqa: E402
from validating_http import ValidatingClient  # noqa: E402

os.environ.setdefault("QUIVER__GPU__ENABLED", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from gpu.xp import configure, device_available

    # `slow` tests run only when asked for (`pytest -m slow` or QUIVER_SLOW=1), as tests/slow.py
    expr = (config.getoption("markexpr") or "").replace(" ", "")
    if not (os.environ.get("QUIVER_SLOW") or ("slow" in expr and "notslow" not in expr)):
        later = pytest.mark.skip(reason="slow: run with `pytest -m slow` (or QUIVER_SLOW=1)")
        for item in items:
            if item.get_closest_marker("slow"):
                item.add_marker(later)
    configure("auto")
    if device_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu"):  # not item.keywords: tests/gpu/ is a keyword too
            item.add_marker(skip)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuiverServer]:
    """One shared server for tests that only need a running instance."""
    base = tmp_path_factory.mktemp("shared")
    srv = QuiverServer(base / "storage", grpc=True,
                       env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps")}).start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[QuiverServer]:
    """A private server (tests that restart or kill it)."""
    srv = QuiverServer(tmp_path / "storage",
                       env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps")}).start()
    yield srv
    srv.stop()


@pytest.fixture
def http(server: QuiverServer) -> Iterator[httpx.Client]:
    with ValidatingClient(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture
def collection_name(request: pytest.FixtureRequest) -> str:
    return "c_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:80]


_SUMMARY = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def terminal_summary(request: pytest.FixtureRequest) -> list[str]:
    """Lines a test appends here are printed in pytest's terminal summary (even without -s)."""
    return request.config.stash.setdefault(_SUMMARY, [])


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.section("test reports")
        for line in lines:
            terminalreporter.write_line(line)
