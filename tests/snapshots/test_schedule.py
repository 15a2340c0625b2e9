"""snapshots.schedule under a fake clock: snapshots created on time, verified, recorded in the
ledger, pruned by the policy (never a user's, never the newest good one), surviving restarts
(next run from the ledger, missed slots run once), failures reported in the metrics. Plus the
`snapshots.schedule` settings: bad entries refused naming the key."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from api.parse.writes import apply_body
from api.settings import SettingsError, as_dict, validate
from engine import tasks
from engine.catalog import Catalog
from engine.errors import StorageFull
from snapshots import schedule as schedule_mod
from snapshots.manager import SnapshotManager
from snapshots.scan import scan
from snapshots.schedule import (
    FULL,
    LEDGER_DIR,
    Schedule,
    Scheduler,
    check_cron,
    parse_duration,
    to_keep,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()  # a Monday
HOUR = 3600.0
DAY = 86400.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def catalog(tmp_path: Path):
    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    for name in ("a", "b"):
        coll = cat.create(name, {"vectors": {"size": 4, "distance": "Dot"}})
        rng = np.random.default_rng(len(name))
        apply_body(coll, "upsert", {"batch": {
            "ids": list(range(50)), "vectors": rng.standard_normal((50, 4)).astype(np.float32),
            "payloads": [{"i": i} for i in range(50)]}})
    yield cat
    cat.close()


@pytest.fixture
def manager(catalog: Catalog, tmp_path: Path) -> SnapshotManager:
    return SnapshotManager(catalog, str(tmp_path / "snaps"), 1)


def _config(**entry: Any) -> dict[str, Any]:
    """As api/app.py hands it over: validated settings, as a dict."""
    return as_dict(validate({"snapshots": {"schedule": [entry]}}))["snapshots"]


def _ledger(manager: SnapshotManager, name: str = "default") -> dict[str, dict[str, float]]:
    path = os.path.join(manager.root, LEDGER_DIR, f"{name}.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)["folders"]


def _names(manager: SnapshotManager, collection: str) -> set[str]:
    return {s.name for s in manager.list(collection)}


def _metrics(scheduler: Scheduler) -> dict[str, float]:
    out: list[str] = []
    scheduler.render_metrics(out)
    values = {}
    for line in out:
        if not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def _metric(scheduler: Scheduler, name: str, collection: str, schedule: str = "default"
            ) -> float:
    key = (f'quiver_snapshot_schedule_{name}{{schedule="{schedule}",'
           f'collection="{collection}"}}')
    return _metrics(scheduler)[key]


# --------------------------------------------------------------------------- config values


def test_durations_and_cron() -> None:
    assert parse_duration("90s") == 90 and parse_duration("15m") == 15 * 60
    assert parse_duration("1h30m") == 5400 and parse_duration("2d") == 2 * DAY
    assert parse_duration(1) == 1 and parse_duration("0.5") == 0.5
    for bad in ("", "0s", "-1h", "6 hours", "h", True, None, 0, float("inf")):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert check_cron(" 0 3 * * * ") == "0 3 * * *"
    for bad in ("0 3 * *", "61 * * * *", "", 5):
        with pytest.raises(ValueError):
            check_cron(bad)


@pytest.mark.parametrize(("entry", "key"), [
    ({"collections": ["a"], "interval": "1h", "keep_lst": 3}, "snapshots.schedule[0].keep_lst"),
    ({"collections": ["a"]}, "snapshots.schedule[0]: give exactly one of interval, cron"),
    ({"collections": ["a"], "interval": "1h", "cron": "0 3 * * *"},
     "snapshots.schedule[0]: give exactly one"),
    ({"collections": ["a"], "interval": "soon"}, "snapshots.schedule[0].interval"),
    ({"collections": ["a"], "cron": "0 25 * * *"}, "snapshots.schedule[0].cron"),
    ({"interval": "1h"}, "snapshots.schedule[0].collections: required"),
    ({"full": True, "collections": ["a"], "interval": "1h"}, "snapshots.schedule[0].collections"),
    ({"collections": ["a/b"], "interval": "1h"}, "snapshots.schedule[0].collections"),
    ({"collections": ["a"], "interval": "1h", "keep_last": 0},
     "snapshots.schedule[0].keep_last"),
    ({"collections": ["a"], "interval": "1h", "target": "s3"},
     "snapshots.schedule[0].target: s3 cannot be honoured"),
    ({"collections": ["a"], "interval": "1h", "target": "gcs"}, "snapshots.schedule[0].target"),
    ({"collections": ["a"], "interval": "1h", "name": "no spaces"},
     "snapshots.schedule[0].name"),
])
def test_bad_schedules_are_refused_naming_the_key(entry: dict[str, Any], key: str) -> None:
    with pytest.raises(SettingsError) as err:
        validate({"snapshots": {"schedule": [entry]}})
    assert str(err.value).startswith(key), str(err.value)


def test_schedule_settings() -> None:
    with pytest.raises(SettingsError, match=r"^snapshots.schedule\[1\].name: duplicate"):
        validate({"snapshots": {"schedule": [{"collections": "*", "interval": "1h"},
                                             {"full": True, "cron": "0 3 * * *"}]}})
    with pytest.raises(SettingsError, match=r"^snapshots.schedule: expected a list"):
        validate({"snapshots": {"schedule": {"collections": "*"}}})
    settings = validate({
        "storage": {"snapshots_config": {"snapshots_storage": "s3"}},
        "snapshots": {"schedule": [
            {"name": "hourly", "collections": "*", "interval": "1h", "keep_last": 3},
            {"name": "nightly", "full": True, "cron": "0 3 * * *", "keep_daily": 7,
             "keep_weekly": 4, "target": "s3", "retry_after": "5m"}]}})
    hourly, nightly = settings.snapshots.schedule
    assert hourly.collections == ["*"] and hourly.interval == HOUR and hourly.keep_last == 3
    assert nightly.full and nightly.cron == "0 3 * * *" and nightly.retry_after == 300
    parsed = [Schedule.from_config(s) for s in as_dict(settings)["snapshots"]["schedule"]]
    assert parsed[0].collections == ("*",) and parsed[0].retry_delay == 600
    assert parsed[1].next_after(T0) == datetime(2026, 3, 3, 3, 0, tzinfo=UTC).timestamp()
    assert validate({}).snapshots.schedule == []


# --------------------------------------------------------------------------- retention


def _expected_keep(taken: dict[str, float], last: int, daily: int, weekly: int) -> set[str]:
    """The policy spelled another way: group by calendar bucket, take each group's newest."""
    def newest_per(key: Any, count: int) -> set[str]:
        groups: dict[Any, str] = {}
        for name, t in taken.items():
            k = key(datetime.fromtimestamp(t, UTC))
            if k not in groups or (taken[groups[k]], groups[k]) < (t, name):
                groups[k] = name
        return {groups[k] for k in sorted(groups, reverse=True)[:count]}
    by_age = sorted(taken, key=lambda n: (taken[n], n), reverse=True)
    return (set(by_age[:max(last, 1)]) | newest_per(lambda d: d.date(), daily)
            | newest_per(lambda d: d.isocalendar()[:2], weekly))


def test_retention_policy() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        times = T0 + np.sort(rng.uniform(0, 60 * DAY, int(rng.integers(1, 40))))
        taken = {f"s{i}": float(t) for i, t in enumerate(times)}
        last, daily, weekly = (int(x) for x in rng.integers(0, 6, 3))
        sched = Schedule("x", ("a",), False, HOUR, None, last or None, daily or None,
                         weekly or None)
        keep = to_keep(taken, sched)
        if not (last or daily or weekly):
            assert keep == set(taken)  # no policy: keep everything
        else:
            assert keep == _expected_keep(taken, last, daily, weekly)
        assert max(taken, key=lambda n: taken[n]) in keep  # the newest, always


# --------------------------------------------------------------------------- runs


def test_interval_schedule_creates_verifies_prunes(manager: SnapshotManager, catalog: Catalog
                                                    ) -> None:
    clock = Clock()
    sched = Scheduler(manager, catalog, _config(collections=["a"], interval="1h", keep_last=2),
                      clock=clock)
    user = manager.create("a").name  # a user's snapshot: never pruned
    assert sched.tick() == 1  # nothing taken yet: an interval schedule runs at once
    first = set(_ledger(manager)["a"])
    assert len(first) == 1 and _names(manager, "a") == first | {user}
    for name in first:
        scan(manager.path("a", name), manager.list("a")[0].checksum)  # a good archive
    clock.t += HOUR - 1
    assert sched.tick() == 0
    assert _metric(sched, "next_run_timestamp_seconds", "a") == T0 + HOUR
    taken = [T0]
    for _ in range(4):
        clock.t = taken[-1] + HOUR
        assert sched.tick() == 1
        taken.append(clock.t)
        ledger = _ledger(manager)["a"]
        assert sorted(ledger.values()) == taken[-2:]  # keep_last: 2
        assert _names(manager, "a") == set(ledger) | {user}
        for info in manager.list("a"):
            scan(manager.path("a", info.name), info.checksum)
    assert _metric(sched, "last_success_timestamp_seconds", "a") == taken[-1]
    assert _metric(sched, "last_success_age_seconds", "a") == 0
    assert _metric(sched, "failures_total", "a") == 0
    assert _metric(sched, "last_failure_timestamp_seconds", "a") == 0
    clock.t += 600
    assert _metric(sched, "last_success_age_seconds", "a") == 600
    # snapshots deleted by hand are forgotten, not an error
    for name in _ledger(manager)["a"]:
        manager.delete("a", name)
    clock.t = taken[-1] + HOUR
    assert sched.tick() == 1
    assert len(_ledger(manager)["a"]) == 1 and user in _names(manager, "a")


def test_restart_takes_the_next_run_from_the_ledger(manager: SnapshotManager,
                                                    catalog: Catalog) -> None:
    clock = Clock()
    config = _config(collections=["a", "b"], interval="6h")
    assert Scheduler(manager, catalog, config, clock=clock).tick() == 2
    clock.t += 5 * HOUR  # restarted before the next slot: nothing runs
    again = Scheduler(manager, catalog, config, clock=clock)
    assert again.tick() == 0
    assert _metric(again, "last_success_timestamp_seconds", "b") == T0
    assert _metric(again, "last_success_age_seconds", "b") == 5 * HOUR
    clock.t = T0 + 3 * DAY  # down for days: twelve slots missed, each collection runs once
    again = Scheduler(manager, catalog, config, clock=clock)
    assert again.tick() == 2
    assert again.tick() == 0
    assert {c: len(v) for c, v in _ledger(manager).items()} == {"a": 2, "b": 2}
    assert _metric(again, "next_run_timestamp_seconds", "a") == clock.t + 6 * HOUR


def test_cron_schedule_and_full_snapshots(manager: SnapshotManager, catalog: Catalog) -> None:
    clock = Clock()
    sched = Scheduler(manager, catalog, _config(full=True, cron="0 3 * * *", keep_last=1),
                      clock=clock)
    assert sched.tick() == 0  # a cron schedule waits for its slot
    slot = datetime(2026, 3, 3, 3, 0, tzinfo=UTC).timestamp()
    assert _metric(sched, "next_run_timestamp_seconds", FULL) == slot
    clock.t = slot + 5
    assert sched.tick() == 1
    [first] = manager.list_full()
    clock.t = slot + 5 * DAY  # missed four nights: one run
    sched = Scheduler(manager, catalog, sched.config, clock=clock)
    assert sched.tick() == 1 and sched.tick() == 0
    [second] = manager.list_full()  # keep_last: 1 pruned the first
    assert second.name != first.name and set(_ledger(manager)[""]) == {second.name}
    assert _metric(sched, "next_run_timestamp_seconds", FULL) == slot + 6 * DAY


def test_all_collections_follows_the_catalog(manager: SnapshotManager, catalog: Catalog) -> None:
    clock = Clock()
    sched = Scheduler(manager, catalog, _config(collections="*", interval="1d"), clock=clock)
    assert sched.tick() == 2
    catalog.create("c", {"vectors": {"size": 4, "distance": "Dot"}})
    clock.t += 60
    assert sched.tick() == 1  # a new collection: backed up at once
    catalog.delete("b")
    assert 'collection="b"' not in "\n".join(_render(sched))
    assert set(_ledger(manager)) == {"a", "b", "c"}


def _render(sched: Scheduler) -> list[str]:
    out: list[str] = []
    sched.tick()
    sched.render_metrics(out)
    return out


def test_daily_and_weekly_buckets_over_weeks(manager: SnapshotManager, catalog: Catalog) -> None:
    clock = Clock()
    sched = Scheduler(manager, catalog, _config(collections=["a"], interval="8h", keep_last=2,
                                                keep_daily=3, keep_weekly=2), clock=clock)
    taken: dict[float, None] = {}
    for _ in range(3 * 21):  # three weeks, three a day
        assert sched.tick() == 1
        taken[clock.t] = None
        clock.t += 8 * HOUR
    ledger = _ledger(manager)["a"]
    history = {f"t{t}": t for t in taken}
    kept_times = {history[n] for n in _expected_keep(history, 2, 3, 2)}
    assert sorted(ledger.values()) == sorted(kept_times)
    assert _names(manager, "a") == set(ledger)


def test_a_failing_target_is_reported_and_keeps_the_last_good(
        manager: SnapshotManager, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    sched = Scheduler(manager, catalog, _config(collections=["a"], interval="1h", keep_last=1),
                      clock=clock)
    assert sched.tick() == 1
    [good] = _names(manager, "a")

    def full_disk(collection: str) -> Any:
        raise StorageFull("creating snapshot")
    monkeypatch.setattr(manager, "create", full_disk)
    clock.t = T0 + HOUR
    assert sched.tick() == 1
    assert _metric(sched, "failures_total", "a") == 1
    assert _metric(sched, "last_failure_timestamp_seconds", "a") == T0 + HOUR
    assert _metric(sched, "last_success_timestamp_seconds", "a") == T0
    assert _metric(sched, "next_run_timestamp_seconds", "a") == T0 + HOUR + 600  # retry_after
    clock.t += 300
    assert sched.tick() == 0  # not hammering a full disk
    clock.t = T0 + 5 * HOUR
    assert sched.tick() == 1
    assert _metric(sched, "failures_total", "a") == 2
    assert _metric(sched, "last_success_age_seconds", "a") == 5 * HOUR
    assert _names(manager, "a") == {good} and set(_ledger(manager)["a"]) == {good}
    monkeypatch.undo()

    # a snapshot that does not verify is deleted and the good one kept
    def corrupt(path: str, checksum: str | None = None) -> Any:
        raise schedule_mod.VerificationFailed("checksum mismatch")
    monkeypatch.setattr(schedule_mod, "scan", corrupt)
    clock.t += HOUR
    assert sched.tick() == 1
    assert _metric(sched, "failures_total", "a") == 3
    assert _names(manager, "a") == {good} and set(_ledger(manager)["a"]) == {good}
    monkeypatch.undo()

    # a missing collection is a failure too (a backup an operator asked for is not taken)
    catalog.delete("a")
    clock.t += HOUR
    assert sched.tick() == 1
    assert _metric(sched, "failures_total", "a") == 4

    # pruning that fails does not undo the success
    catalog.create("a", {"vectors": {"size": 4, "distance": "Dot"}})
    manager.create("a")
    sched2 = Scheduler(manager, catalog, _config(collections=["a"], interval="1h",
                                                 keep_last=1, name="other"), clock=clock)
    assert sched2.tick() == 1
    monkeypatch.setattr(manager, "delete", lambda c, n: (_ for _ in ()).throw(OSError("EIO")))
    clock.t += HOUR
    assert sched2.tick() == 1
    assert _metric(sched2, "prune_failures_total", "a", "other") == 1
    assert _metric(sched2, "failures_total", "a", "other") == 0
    assert _metric(sched2, "last_success_timestamp_seconds", "a", "other") == clock.t


def test_metrics_exposition(manager: SnapshotManager, catalog: Catalog) -> None:
    clock = Clock()
    sched = Scheduler(manager, catalog, _config(collections=["a"], interval="1h"), clock=clock)
    out: list[str] = []
    sched.render_metrics(out)
    names = [line.split()[2] for line in out if line.startswith("# TYPE")]
    assert names == [f"quiver_snapshot_schedule_{n}" for n in (
        "last_success_timestamp_seconds", "last_failure_timestamp_seconds",
        "last_success_age_seconds", "failures_total", "prune_failures_total",
        "next_run_timestamp_seconds")]
    clock.t += 30  # before the first run: the age counts from the schedule's start
    assert _metric(sched, "last_success_age_seconds", "a") == 30
    empty: list[str] = []
    Scheduler(manager, catalog, {}).render_metrics(empty)
    assert empty == []


def test_thread_runs_and_stops(manager: SnapshotManager, catalog: Catalog) -> None:
    sched = Scheduler(manager, catalog, _config(collections=["a"], interval="1h"))
    sched.start()
    try:
        for _ in range(200):
            if _ledger(manager).get("a"):
                break
            time.sleep(0.05)
    finally:
        sched.stop()
    assert len(_ledger(manager)["a"]) == 1
    assert _metric(sched, "failures_total", "a") == 0
    Scheduler(manager, catalog, {}).start()  # no schedules: no thread, nothing to stop


def test_ledger_is_kept_out_of_collection_listings(manager: SnapshotManager,
                                                   catalog: Catalog) -> None:
    clock = Clock(T0 + timedelta(days=1).total_seconds())
    Scheduler(manager, catalog, _config(full=True, interval="1h"), clock=clock).tick()
    assert [s.name for s in manager.list_full()] == list(_ledger(manager)[""])
    assert LEDGER_DIR not in catalog.names()


# --------------------------------------------------------------------------- aliases


def test_a_schedule_naming_an_alias_is_kept_under_its_collection(
        manager: SnapshotManager, catalog: Catalog) -> None:
    catalog.create("real", {"vectors": {"size": 4, "distance": "Dot"}})
    catalog.update_aliases([{"create_alias": {"collection_name": "real", "alias_name": "prod"}}])
    clock = Clock()
    config = _config(collections=["prod"], interval="1h", keep_last=1)
    sched = Scheduler(manager, catalog, config, clock=clock)
    assert sched.tick() == 1
    [first] = _ledger(manager)["real"]
    assert _metric(sched, "last_success_timestamp_seconds", "real") == T0
    clock.t += HOUR / 2  # restarted within the interval: nothing runs, the metrics remember
    again = Scheduler(manager, catalog, config, clock=clock)
    assert again.tick() == 0
    assert _names(manager, "real") == {first}
    assert _metric(again, "last_success_timestamp_seconds", "real") == T0
    assert _metric(again, "next_run_timestamp_seconds", "real") == T0 + HOUR
    clock.t = T0 + HOUR
    assert again.tick() == 1  # on time, and pruned under the same key
    assert len(_names(manager, "real")) == 1 and first not in _names(manager, "real")
    # the alias re-pointed: the schedule follows it, reporting the collection it now names
    catalog.update_aliases([{"create_alias": {"collection_name": "b", "alias_name": "prod"}}])
    assert again.tick() == 1
    metrics = "\n".join(_render(again))
    assert 'collection="b"' in metrics and 'collection="real"' not in metrics
    assert set(_ledger(manager)) == {"real", "b"}


# --------------------------------------------------------------------------- stopping


def _slow_archive(manager: SnapshotManager, monkeypatch: pytest.MonkeyPatch,
                  cancellable: bool) -> threading.Event:
    """Snapshot creation that takes long: checking for cancellation as it goes, or deaf to
    it for 2 s. Returns the event set once it started."""
    started = threading.Event()

    def write(collection: str, dest: str) -> tuple[str, str, int]:
        with open(dest, "wb") as f:
            f.write(b"partial")
        started.set()
        deadline = time.monotonic() + 30
        if not cancellable:
            time.sleep(2)
        while time.monotonic() < deadline:
            tasks.checkpoint()
            time.sleep(0.01)
        raise AssertionError("never cancelled")
    monkeypatch.setattr(manager, "write_collection_archive", write)
    return started


def _leftovers(manager: SnapshotManager) -> list[str]:
    return os.listdir(manager.tmp) + [s.name for s in manager.list("a")]


def test_stop_cancels_the_snapshot_in_progress(manager: SnapshotManager, catalog: Catalog,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    started = _slow_archive(manager, monkeypatch, cancellable=True)
    sched = Scheduler(manager, catalog, _config(collections=["a"], interval="1h"))
    sched.start()
    assert started.wait(30)
    [task] = [t for t in tasks.registry.list(running_only=True)
              if t.kind == "snapshot_create" and t.collection == "a"]
    began = time.monotonic()
    sched.stop(timeout=20)
    assert time.monotonic() - began < 5 and sched._thread is None
    assert task.outcome == tasks.CANCELLED
    assert _leftovers(manager) == [] and _ledger(manager) == {}
    assert _metric(sched, "failures_total", "a") == 0  # stopping is no failure


def test_stop_waits_a_bounded_time(manager: SnapshotManager, catalog: Catalog,
                                   monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    started = _slow_archive(manager, monkeypatch, cancellable=False)
    sched = Scheduler(manager, catalog, _config(collections=["a"], interval="1h"))
    sched.start()
    assert started.wait(30)
    thread = sched._thread
    assert thread is not None
    began = time.monotonic()
    sched.stop(timeout=0.2)
    assert time.monotonic() - began < 1.5 and thread.is_alive()
    assert "did not stop within 0.2s" in caplog.text
    thread.join(30)  # it ends at its next cancellation point, leaving nothing behind
    assert not thread.is_alive()
    assert _leftovers(manager) == [] and _ledger(manager) == {}


# --------------------------------------------------------------------------- ledger durability


def test_ledger_directory_is_durable_and_stale_writes_removed(
        manager: SnapshotManager, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync_dir = schedule_mod.fsync_dir

    def fsync_dir(path: str) -> None:
        synced.append(os.path.abspath(path))
        real_fsync_dir(path)
    monkeypatch.setattr(schedule_mod, "fsync_dir", fsync_dir)
    Scheduler(manager, catalog, _config(collections=["a"], interval="1h"), clock=Clock()).tick()
    assert manager.root in synced  # the new .schedules entry in the snapshots root
    # a kill -9 during a ledger write leaves engine.durable's temp file: removed at start-up
    ledgers = os.path.join(manager.root, LEDGER_DIR)
    stale = os.path.join(ledgers, f".tmp-{'ab' * 16}-default.json")
    other = os.path.join(ledgers, "notes.txt")
    for path in (stale, other):
        with open(path, "w") as f:
            f.write("{")
    clock = Clock(T0 + HOUR / 2)
    assert Scheduler(manager, catalog, _config(collections=["a"], interval="1h"),
                     clock=clock).tick() == 0
    assert sorted(os.listdir(ledgers)) == ["default.json", "notes.txt"]


def test_a_ledger_that_cannot_be_saved_fails_the_run_and_leaves_nothing(
        manager: SnapshotManager, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    sched = Scheduler(manager, catalog, _config(collections=["a"], interval="1h", keep_last=1),
                      clock=clock)

    def full_disk(path: str, data: bytes) -> None:
        raise StorageFull("writing default.json")
    monkeypatch.setattr(schedule_mod, "write_atomic", full_disk)
    for failures in (1, 2, 3):  # every retry: no snapshot piles up
        assert sched.tick() == 1
        assert _metric(sched, "failures_total", "a") == failures
        assert _names(manager, "a") == set() and _ledger(manager) == {}
        assert sched.ledgers["default"].folders.get("a", {}) == {}
        clock.t += 600
    monkeypatch.undo()
    assert sched.tick() == 1
    assert _names(manager, "a") == set(_ledger(manager)["a"]) and len(_names(manager, "a")) == 1
    assert _metric(sched, "last_success_timestamp_seconds", "a") == clock.t


# --------------------------------------------------------------------------- ownership


def _republish(manager: SnapshotManager, collection: str, name: str, data: bytes) -> None:
    """What an upload under an existing name does: another archive, same name."""
    tmp = os.path.join(manager.tmp, "upload.part")
    with open(tmp, "wb") as f:
        f.write(data)
    manager.store.publish(tmp, collection, name, hashlib.sha256(data).hexdigest())


def test_an_upload_reusing_a_ledger_name_is_never_pruned(manager: SnapshotManager,
                                                         catalog: Catalog) -> None:
    clock = Clock()
    config = _config(collections=["a", "b"], interval="1h", keep_last=1)
    sched = Scheduler(manager, catalog, config, clock=clock)
    assert sched.tick() == 2
    [ours_a] = _names(manager, "a")
    [ours_b] = _names(manager, "b")
    assert json.loads(Path(manager.root, LEDGER_DIR, "default.json").read_text())[
        "checksums"]["a"] == {ours_a: manager.list("a")[0].checksum}
    _republish(manager, "a", ours_a, b"a user's upload")
    clock.t += HOUR
    assert sched.tick() == 2
    assert ours_a in _names(manager, "a")  # the user's: kept, and no longer in the ledger
    assert ours_a not in _ledger(manager)["a"] and len(_ledger(manager)["a"]) == 1
    assert ours_b not in _names(manager, "b")  # the schedule's own: pruned as before
    # replaced while the server was down: forgotten at start-up (its time no longer counts)
    [ours_b] = _names(manager, "b")
    _republish(manager, "b", ours_b, b"another upload")
    clock.t += HOUR / 2
    again = Scheduler(manager, catalog, config, clock=clock)
    assert again.tick() == 1  # b has no snapshot of the schedule's any more: runs at once
    assert ours_b in _names(manager, "b") and ours_b not in _ledger(manager)["b"]
    assert _metric(again, "failures_total", "a") == 0


def test_a_ledger_without_checksums_still_loads_and_never_deletes_unconfirmed(
        manager: SnapshotManager, catalog: Catalog) -> None:
    clock = Clock()
    config = _config(collections=["a"], interval="1h", keep_last=1)
    assert Scheduler(manager, catalog, config, clock=clock).tick() == 1
    [old] = _names(manager, "a")
    path = Path(manager.root, LEDGER_DIR, "default.json")
    path.write_text(json.dumps({"folders": _ledger(manager)}))  # as written before checksums
    clock.t += HOUR / 2
    sched = Scheduler(manager, catalog, config, clock=clock)
    assert sched.tick() == 0  # its snapshot still counts for the next run
    assert _metric(sched, "last_success_timestamp_seconds", "a") == T0
    clock.t = T0 + HOUR
    assert sched.tick() == 1
    # the policy would prune the old one, but its sha256 cannot be confirmed: it is kept
    # and no longer the schedule's
    assert old in _names(manager, "a") and len(_names(manager, "a")) == 2
    assert set(_ledger(manager)["a"]) == _names(manager, "a") - {old}
