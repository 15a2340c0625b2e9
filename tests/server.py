"""Run the real `quiver serve` in a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuiverServer:
    def __init__(self, storage: Path, port: int | None = None, env: dict[str, str] | None = None,
                 config_path: str | None = None) -> None:
        self.storage = storage
        self.port = port or free_port()
        self.env = env or {}
        self.config_path = config_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = storage.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> QuiverServer:
        cmd = [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--storage-path", str(self.storage)]
        if self.config_path:
            cmd += ["--config-path", self.config_path]
        env = {**os.environ, "QUIVER__GPU__ENABLED": "false", **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def restart(self, kill: bool = False) -> QuiverServer:
        self.kill9() if kill else self.stop()
        return self.start()
