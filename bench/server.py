"""Start `quiver serve` in a subprocess on a temp storage dir and a free port (for benchmarks)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiver_command() -> list[str]:
    """The venv's `quiver` console script next to this interpreter, else `python -m api.cli`."""
    script = Path(sys.executable).with_name("quiver")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "api.cli"]


def read_status(pid: int) -> dict[str, int]:
    """Memory lines of /proc/<pid>/status in bytes (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if key.startswith(("Vm", "Rss")) and len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0]) * 1024
    return out


class PortTaken(RuntimeError):
    """The server exited because another process had bound its port."""


class Server:
    """A `quiver serve` subprocess. With no `storage`, a temp dir is made and removed on close;
    with one (tests), the storage outlives the process so it can be restarted or killed."""

    def __init__(self, storage: Path | None = None, env: dict[str, str] | None = None,
                 port: int | None = None, config_path: str | None = None,
                 grpc: bool = False) -> None:
        self.owns_tmp = storage is None
        self.tmp = Path(tempfile.mkdtemp(prefix="quiver-bench-")) if storage is None \
            else storage.parent
        self.storage = storage if storage is not None else self.tmp / "storage"
        self.port = port or free_port()
        self.own_port = port is None  # picked here: another may be picked if it is taken
        # gRPC only where asked (it costs ~1.5 s of imports per start); never Qdrant's 6334:
        # servers run side by side. 0 turns it off.
        self.grpc_port = free_port() if grpc else 0
        self.env = env or {}
        self.config_path = config_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.tmp / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Server:
        """Start and wait for /readyz. A port picked by free_port() is free only when picked:
        a process started meanwhile (Ray's, in cluster mode, binds many ephemeral ports
        before the server binds its own) may take it, so a start that fails on a taken
        port picks new ones, twice at most."""
        for attempt in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                if not self.own_port or attempt == 2:
                    raise
                self.port = free_port()
                self.grpc_port = free_port() if self.grpc_port else 0
                self.log_path = self.tmp / f"server-{self.port}.log"
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> Server:
        cmd = quiver_command() + ["serve", "--host", "127.0.0.1", "--port", str(self.port),
                                  "--grpc-port", str(self.grpc_port),
                                  "--storage-path", str(self.storage)]
        if self.config_path:
            cmd += ["--config-path", self.config_path]
        env = {**os.environ, "QUIVER__GPU__ENABLED": "false", **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                rc, log_text = self.proc.returncode, self.log()
                kind = PortTaken if "address already in use" in log_text.lower() else RuntimeError
                raise kind(f"server exited early (rc={rc}):\n{log_text}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not become ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def memory(self) -> dict[str, int]:
        return read_status(self.pid)

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill9()

    def restart(self, kill: bool = False) -> Server:
        if kill:
            self.kill9()
        else:
            self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self.owns_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
