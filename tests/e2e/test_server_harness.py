"""The test and bench harness's server (bench/server.py): a port picked for it that another
process takes before the server binds it (Ray's processes do, in cluster mode) is replaced,
not a failed test; a port the caller chose is not."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from server import QuiverServer

from bench.server import PortTaken


def test_a_picked_port_taken_meanwhile_is_replaced(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        srv = QuiverServer(tmp_path / "storage")
        srv.port = taken  # as if another process bound it between free_port() and the start
        srv.log_path = tmp_path / f"server-{taken}.log"
        srv.start()
        try:
            assert srv.port != taken
            assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200
            assert "address already in use" in (tmp_path / f"server-{taken}.log").read_text(
                errors="replace").lower()
        finally:
            srv.stop()


def test_a_chosen_port_that_is_taken_fails_the_start(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        srv = QuiverServer(tmp_path / "storage", port=held.getsockname()[1])
        with pytest.raises(PortTaken, match="exited early"):
            srv.start()
