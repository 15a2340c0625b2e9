"""`slow` variants run only when asked for: `pytest -m slow` (or QUIVER_SLOW=1).

A plain `pytest` (and `make test`) skips them, saying how to run them.
"""

from __future__ import annotations

import os

import pytest


def require_slow(request: pytest.FixtureRequest) -> None:
    expr = (request.config.getoption("markexpr") or "").replace(" ", "")
    if os.environ.get("QUIVER_SLOW") or ("slow" in expr and "notslow" not in expr):
        return
    pytest.skip("slow variant: run with `pytest -m slow` (or QUIVER_SLOW=1)")
