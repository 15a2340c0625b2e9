"""How much CPU other processes used while something was being measured.

On a small shared machine a concurrent test run can halve the CPU a benchmark gets, so each
measured section records the CPU time the whole machine spent busy (/proc/stat) minus what
this process and its descendants (the Quiver server) spent. /proc is read only at the two
ends of a section, never during it.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> int:
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest* are in user
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals[:8]) - idle


def read_stat(path: str) -> tuple[str, list[str]] | None:
    """A /proc/<pid>[/task/<tid>]/stat file → (comm, the fields after it); None if gone."""
    try:
        with open(path) as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.find("(") + 1 : raw.rfind(")")], raw[raw.rfind(")") + 2 :].split()


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid → (ppid, utime+stime ticks, comm) for every visible process."""
    out: dict[int, tuple[int, int, str]] = {}
    for name in os.listdir("/proc"):
        stat = read_stat(f"/proc/{name}/stat") if name.isdigit() else None
        if stat is not None:
            comm, rest = stat
            out[int(name)] = (int(rest[1]), int(rest[11]) + int(rest[12]), comm)
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return ""


@dataclass
class Snapshot:
    wall: float
    busy: int
    procs: dict[int, tuple[int, int, str]] = field(default_factory=dict)


def snapshot() -> Snapshot:
    return Snapshot(time.monotonic(), _busy_ticks(), _procs())


def _ours(procs: dict[int, tuple[int, int, str]], root: int) -> set[int]:
    mine = {root}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _, _) in procs.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    return mine


def foreign_load(a: Snapshot, b: Snapshot, root: int | None = None) -> dict[str, Any]:
    """CPU used between a and b by processes other than `root` (default: this one) and its
    descendants, in cores (1.0 = one CPU fully busy), with the top consumers."""
    root = os.getpid() if root is None else root
    wall = max(b.wall - a.wall, 1e-9)
    mine = _ours(b.procs, root) | _ours(a.procs, root)
    ours_ticks = 0
    others: list[tuple[int, int]] = []
    for pid, (_, ticks, _) in b.procs.items():
        before = a.procs.get(pid)
        d = ticks - (before[1] if before else 0)
        if pid in mine:
            ours_ticks += d
        elif d > 0:
            others.append((d, pid))
    foreign = max(0, (b.busy - a.busy) - ours_ticks) / TICK / wall
    others.sort(reverse=True)
    top = [{"pid": pid, "comm": b.procs[pid][2], "cmd": _cmdline(pid),
            "cores": round(d / TICK / wall, 3)} for d, pid in others[:3]]
    return {"foreign_cores": round(foreign, 3), "ours_cores": round(ours_ticks / TICK / wall, 3),
            "wall_s": round(wall, 3), "top_foreign": top}


class LoadLog:
    """Collects foreign_load for named measured sections."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, Any]] = {}

    @contextmanager
    def measure(self, name: str):  # type: ignore[no-untyped-def]
        a = snapshot()
        try:
            yield
        finally:
            self.sections[name] = foreign_load(a, snapshot())

    def worst(self) -> tuple[str, dict[str, Any]] | None:
        if not self.sections:
            return None
        return max(self.sections.items(), key=lambda kv: kv[1]["foreign_cores"])


def proc_cpu_s(pid: int | None = None) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid or os.getpid()}/stat") as f:
        raw = f.read()
    rest = raw[raw.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / TICK


def wait_quiet(max_wait_s: float, threshold: float = 0.15, window_s: float = 3.0,
               report: Any = None) -> dict[str, Any]:
    """Wait (at most max_wait_s) until other processes use < threshold cores for one window."""
    t0 = time.monotonic()
    last: dict[str, Any] = {}
    while True:
        a = snapshot()
        time.sleep(window_s)
        last = foreign_load(a, snapshot())
        waited = time.monotonic() - t0
        if last["foreign_cores"] < threshold:
            return {"quiet": True, "waited_s": round(waited, 1), "last": last}
        if waited >= max_wait_s:
            return {"quiet": False, "waited_s": round(waited, 1), "last": last}
        if report is not None and int(waited / window_s) % 5 == 1:
            top = last["top_foreign"][0] if last["top_foreign"] else {}
            report(f"machine busy: {last['foreign_cores']:.2f} cores used by others "
                   f"(top: {top.get('cmd', '?')[:60]}); waiting ({waited:.0f}s of "
                   f"{max_wait_s:.0f}s)")
