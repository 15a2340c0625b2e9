"""engine.tasks, in process: the registry's lifecycle (progress, outcomes, cancellation, the
point of no return, parent and child tasks), and snapshot creation and recovery reporting
to it and cleaning up when cancelled."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.parse.writes import apply_body
from engine import tasks
from engine.catalog import Catalog
from engine.retrieve import get_point
from engine.tasks import Cancelled, TaskRegistry
from snapshots.manager import SnapshotManager
from snapshots.recovery import Recovery

DIM = 64


def files_under(root: Path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs)


# ---- the registry ---------------------------------------------------------------------------


def test_progress_outcome_and_json() -> None:
    reg = TaskRegistry()
    with reg.run("snapshot_create", "c", total=100, cancellable=True) as task:
        assert tasks.current() is task
        task.set_phase("writing")
        seen = []
        for _ in range(4):
            tasks.advance(20)  # through the thread's current task
            seen.append(task.to_json()["bytes_done"])
        doc = task.to_json()
        assert doc["outcome"] == "running" and doc["phase"] == "writing"
        assert doc["progress"] == pytest.approx(0.8) and doc["eta_s"] is not None
        assert doc["rate_per_s"] > 0
    assert tasks.current() is None
    assert seen == sorted(seen)
    doc = task.to_json()
    # headers and padding nobody counted: a finished task reached its total
    assert (doc["outcome"], doc["bytes_done"], doc["bytes_total"], doc["progress"]) == \
        ("ok", 100, 100, 1.0)
    assert doc["finished_at"] >= doc["started_at"] and doc["eta_s"] is None
    for key in ("id", "kind", "collection", "phase", "unit", "started_at", "elapsed_s",
                "error", "cancellable"):
        assert key in doc
    rows = reg.start("index_build", "c", total=10, unit="rows")
    assert {"rows_done", "rows_total"} <= set(rows.to_json())
    assert reg.outcomes[("snapshot_create", "ok")] == 1


def test_failure_says_why() -> None:
    reg = TaskRegistry()
    with pytest.raises(OSError), reg.run("s3_upload") as task:
        raise OSError("bucket is gone")
    assert task.outcome == "failed" and "bucket is gone" in (task.error or "")


def test_cancel_stops_at_next_report() -> None:
    reg = TaskRegistry()
    with pytest.raises(Cancelled), reg.run("snapshot_create", cancellable=True) as task:
        task.advance(1)
        assert task.cancel()
        task.advance(1)
        pytest.fail("advance should have raised")
    assert task.outcome == "cancelled" and task.to_json()["cancel_requested"]
    assert not task.cancel()  # over


def test_not_cancellable_and_point_of_no_return() -> None:
    reg = TaskRegistry()
    with reg.run("index_build", unit="rows") as build:
        assert not build.cancel()
        build.advance(5)
    with reg.run("snapshot_recover", cancellable=True) as rec:
        rec.irreversible("installing")
        assert not rec.cancel() and rec.phase == "installing"
    assert rec.outcome == "ok"
    with pytest.raises(Cancelled), reg.run("snapshot_recover", cancellable=True) as rec2:
        rec2.cancel()
        rec2.irreversible("installing")  # a cancellation asked for before it wins
    assert rec2.outcome == "cancelled"


def test_pre_registered_task_is_claimed_or_never_starts() -> None:
    reg = TaskRegistry()
    pre = reg.start("snapshot_create", "alias", cancellable=True)
    with reg.bind(pre), reg.run("snapshot_create", "real", cancellable=True) as task:
        assert task is pre and task.collection == "real"
    assert pre.outcome == "ok" and len(reg.list()) == 1
    late = reg.start("snapshot_create", "c", cancellable=True)
    assert late.cancel()
    started = []
    with pytest.raises(Cancelled), reg.bind(late), reg.run("snapshot_create", cancellable=True):
        started.append(1)
    assert not started and late.outcome == "cancelled"
    early = reg.start("snapshot_recover", "c", cancellable=True)
    with pytest.raises(ValueError), reg.bind(early):
        raise ValueError("collection c does not exist")  # before any `run` claimed it
    assert early.outcome == "failed" and "does not exist" in (early.error or "")


def test_child_stops_with_its_parent() -> None:
    reg = TaskRegistry()
    with pytest.raises(Cancelled), reg.run("snapshot_recover", cancellable=True) as parent:
        with reg.run("url_download", cancellable=True) as child:
            assert child.parent is parent and child.to_json()["parent"] == parent.id
            child.advance(10)
            parent.cancel()
            child.advance(10)
    assert (parent.outcome, child.outcome) == ("cancelled", "cancelled")


def test_point_of_no_return_holds_against_the_parent() -> None:
    """Past its point of no return a task's checkpoints never raise, and cancelling it, its
    parent (while it runs) or a task it starts is refused."""
    reg = TaskRegistry()
    with reg.run("snapshot_create_full", cancellable=True) as parent:
        with reg.run("snapshot_create", cancellable=True) as child:
            child.advance(1)
            child.irreversible("publishing")
            assert parent.try_cancel() is not None and not parent.cancel()
            assert not child.cancel()
            with reg.run("s3_upload", cancellable=True) as grandchild:
                assert not grandchild.cancel()
            child.advance(1)  # no raise: nothing was asked for
            child.checkpoint()
            assert not parent.cancel_requested and not child.cancel_requested
        assert child.outcome == "ok"
        assert parent.cancel()  # the child is over: the parent's own work may stop again
        with pytest.raises(Cancelled):
            parent.checkpoint()
    # the flag of a parent set before the child's point of no return wins there
    with pytest.raises(Cancelled), reg.run("snapshot_create_full", cancellable=True) as p2:
        with reg.run("snapshot_create", cancellable=True) as c2:
            assert p2.cancel()
            c2.irreversible("publishing")
    assert (p2.outcome, c2.outcome) == ("cancelled", "cancelled")


def test_point_of_no_return_races_cancel() -> None:
    """A parent's cancel against a child's point of no return, from two threads: either the
    cancel is refused and the child runs to "ok" without a raise, or it is accepted and the
    child's irreversible() raises; never accepted with the child past its point."""
    for _ in range(300):
        reg = TaskRegistry()
        accepted: list[bool] = []
        past: list[bool] = []
        with reg.run("snapshot_create_full", cancellable=True) as parent:
            child = reg.start("snapshot_create", cancellable=True, parent=parent)
            go = threading.Barrier(2)

            def cancel_parent(p: tasks.Task, go: threading.Barrier,
                              accepted: list[bool]) -> None:
                go.wait()
                accepted.append(p.cancel())

            t = threading.Thread(target=cancel_parent, args=(parent, go, accepted))
            t.start()
            try:
                with reg.run("snapshot_create", cancellable=True, task=child):
                    go.wait()
                    child.irreversible("publishing")
                    past.append(True)
                    t.join()  # the cancel answered while the child is past its point
                    for _ in range(3):
                        child.advance(1)
            except Cancelled:
                pass
            t.join()
        if past:  # the point of no return won: refused, and the work ran to its end
            assert not accepted[0] and child.outcome == "ok"
        else:  # the cancel won: the point of no return raised, nothing was committed
            assert accepted[0] and child.outcome == "cancelled"


def test_wait_for_the_outcome() -> None:
    reg = TaskRegistry()
    task = reg.start("snapshot_create", cancellable=True)
    assert not task.over and not task.wait(0.01)
    threading.Timer(0.05, reg.finish, (task,)).start()
    assert task.wait(5) and task.over and task.outcome == "ok"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def finish_some(reg: TaskRegistry, kind: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        with reg.run(kind) as task:
            ids.append(task.id)
    return ids


def test_finished_tasks_are_kept_per_kind() -> None:
    """A flood of one kind (index builds) never pushes another kind's outcome out."""
    clock = Clock()
    reg = TaskRegistry(keep_per_kind=10, keep_young_s=600, max_finished=1000, clock=clock)
    snaps = finish_some(reg, "snapshot_create", 3)
    clock.now += 601
    builds = finish_some(reg, "index_build", 200)  # young: all kept
    kept = {t.id for t in reg.list()}
    assert set(snaps) <= kept and set(builds) <= kept
    clock.now += 601  # now they are old: the newest 10 builds stay, and every snapshot
    assert {t.id for t in reg.list()} == set(snaps) | set(builds[-10:])
    running = reg.start("index_build")
    finish_some(reg, "index_build", 5)
    assert running in reg.list() and set(snaps) <= {t.id for t in reg.list()}


def test_young_finished_tasks_stay_until_the_hard_cap() -> None:
    clock = Clock()
    reg = TaskRegistry(keep_per_kind=2, keep_young_s=600, max_finished=50, clock=clock)
    snap = finish_some(reg, "snapshot_create", 1)
    clock.now += 1
    builds = finish_some(reg, "index_build", 60)  # all young: the cap drops the oldest
    ids = [t.id for t in reg.list()]
    assert len(ids) == 50 and ids == builds[-50:] and snap[0] not in ids
    assert tasks.KEEP_FINISHED_PER_KIND >= 100 and tasks.KEEP_FINISHED_YOUNG_S >= 600
    assert tasks.MAX_FINISHED >= 5000


# ---- snapshots reporting to tasks ---------------------------------------------------------


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    rng = np.random.default_rng(0)
    for name in ("c", "d"):
        coll = cat.create(name, {"vectors": {"size": DIM, "distance": "Dot"}})
        apply_body(coll, "upsert", {"batch": {
            "ids": list(range(4000)),
            "vectors": rng.standard_normal((4000, DIM)).astype(np.float32)}})
    yield cat
    cat.close()


def cancel_on_first_report(task: tasks.Task) -> list[int]:
    """Make `task` cancel itself when it first reports progress (any thread); returns the
    progress it reported."""
    original = task.advance
    seen: list[int] = []

    def advance(n: int) -> None:
        original(n)
        seen.append(task.done)
        task.cancel()

    task.advance = advance  # type: ignore[method-assign]
    return seen


def run_claimed(kind: str, collection: str | None, work: Any) -> tuple[tasks.Task, list[int]]:
    task = tasks.registry.start(kind, collection, cancellable=True)
    seen = cancel_on_first_report(task)
    with pytest.raises(Cancelled), tasks.registry.bind(task):
        work()
    return task, seen


def test_cancelled_creation_leaves_nothing(catalog: Catalog, tmp_path: Path) -> None:
    mgr = SnapshotManager(catalog, str(tmp_path / "snaps"), 1)
    task, seen = run_claimed("snapshot_create", "c", lambda: mgr.create("c"))
    assert task.outcome == "cancelled" and seen and task.total and seen[0] < task.total
    full, _ = run_claimed("snapshot_create_full", None, mgr.create_full)
    assert full.outcome == "cancelled"
    assert files_under(tmp_path / "snaps") == []
    assert mgr.list("c") == [] and mgr.list_full() == []
    info = mgr.create("c")  # and the next one works
    last = tasks.registry.list()[-1]
    assert (last.kind, last.collection, last.outcome) == ("snapshot_create", "c", "ok")
    assert last.done == last.total == info.size


def test_cancelled_recovery_leaves_collection_as_it_was(catalog: Catalog,
                                                        tmp_path: Path) -> None:
    mgr = SnapshotManager(catalog, str(tmp_path / "snaps"), 1)
    info = mgr.create("d")
    path = mgr.path("d", info.name)
    rec = Recovery(catalog, str(tmp_path / "snaps"))
    before = catalog.get("c").points_count()
    apply_body(catalog.get("c"), "upsert", {"points": [
        {"id": 10**9, "vector": [1.0] * DIM, "payload": {"marker": True}}]})
    for checksum in (None, info.checksum):  # member hashes, or the whole file's
        task, seen = run_claimed("snapshot_recover", "c",
                                 lambda cs=checksum: rec.recover_file("c", path, cs))
        assert task.outcome == "cancelled" and seen
        coll = catalog.get("c")
        assert coll.points_count() == before + 1
        assert get_point(coll, 10**9)["payload"] == {"marker": True}
        assert not [e for e in os.listdir(catalog.root) if e.startswith(".tmp-")]
    assert os.path.exists(path)  # the archive recovered from is untouched


def test_recovery_past_the_swap_refuses_cancel(catalog: Catalog, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = SnapshotManager(catalog, str(tmp_path / "snaps"), 1)
    info = mgr.create("d")
    refused = []
    install = catalog.install

    def installing(*args: Any, **kwargs: Any) -> Any:
        refused.append(not tasks.current().cancel())  # type: ignore[union-attr]
        return install(*args, **kwargs)

    monkeypatch.setattr(catalog, "install", installing)
    rec = Recovery(catalog, str(tmp_path / "snaps"))
    rec.recover_file("copy", mgr.path("d", info.name), info.checksum)
    task = tasks.registry.list()[-1]
    assert refused == [True]
    assert (task.kind, task.source, task.outcome) == ("snapshot_recover", "file", "ok")
    assert task.done == task.total == info.size
    assert catalog.get("copy").points_count() == 4000


def test_progress_is_reported_from_hashing_threads(catalog: Catalog, tmp_path: Path) -> None:
    mgr = SnapshotManager(catalog, str(tmp_path / "snaps"), 1)
    info = mgr.create("d")
    task = tasks.registry.start("snapshot_recover", "copy", cancellable=True)
    reports: list[tuple[str, int]] = []
    original = task.advance

    def advance(n: int) -> None:
        reports.append((threading.current_thread().name, n))
        original(n)

    task.advance = advance  # type: ignore[method-assign]
    with tasks.registry.bind(task):
        Recovery(catalog, str(tmp_path / "snaps")).recover_file(
            "copy", mgr.path("d", info.name), None)
    assert reports and all(name.startswith("quiver-scan") for name, _ in reports)
    assert task.outcome == "ok" and task.done == task.total == info.size
