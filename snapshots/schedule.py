"""Scheduled snapshots with retention (the `snapshots.schedule` config section).

Each schedule names collections (a list, or "*" for every collection at run time) or
`full: true` (a full-storage snapshot), and when to run: `interval` (90s, 15m, 6h, 1d, 1h30m)
or `cron` (5 fields, UTC, parsed by croniter). One thread runs every due snapshot, one after
another: a collection is never snapshotted twice at once, whatever the schedules.

A run: create the snapshot (SnapshotManager, the same path as the API), verify it (local:
the whole-file sha256 plus the archive's structure, see snapshots.scan; object storage:
the uploaded object read back and hashed), record it in the schedule's ledger, then prune.
A snapshot that fails verification is deleted (it is no backup) and the run counts as failed.

A collection named through an alias is snapshotted, recorded and reported (metrics) under the
collection the alias points to at each run (a collection that does not exist: under the name
as configured, and the run fails).

The ledger, <snapshots_path>/.schedules/<schedule>.json, lists the verified snapshots the
schedule made ({folder: {snapshot name: time taken}}, folder "" for full snapshots) and their
sha256 ("checksums", same shape). It is what makes schedules survive restarts and what keeps
user-made snapshots safe:
- the next run is the last ledger snapshot still listed by the storage + `interval`, or the
  next cron time after it; runs missed while the server was down run once, not once per slot;
  with no snapshot yet, an interval schedule runs at once, a cron schedule at its next slot;
- pruning only ever deletes snapshots in the ledger (never one a user made), only after a new
  snapshot was verified, and always keeps that newest good one. A listed snapshot whose sha256
  is not the one recorded (a user uploaded another under the same name) is no longer the
  schedule's: dropped from the ledger, never deleted. So is one the ledger has no sha256 for
  (written before checksums were recorded) once the policy would prune it: it cannot be told
  from an upload, so it is left for the operator (logged). Kept: the `keep_last` newest,
  the newest of each of the `keep_daily` most recent UTC days that have one, the newest of each
  of the `keep_weekly` most recent ISO weeks; with no keep_* key nothing is pruned.
- a failed run is retried after `retry_after` (default 10m; at most the interval). A new
  snapshot the ledger cannot be saved for is deleted (nobody would ever prune it) and the run
  counts as failed. Interrupted ledger writes (`.tmp-*`) are removed at start-up.

Each run is a task (engine.tasks: snapshot_create / snapshot_create_full, cancellable);
`stop()` cancels the one in progress (a cancelled creation leaves nothing behind) and waits
for the thread a bounded time.

Metrics (api /metrics; label collection="*full*" for full snapshots, a name no collection can
have): last success / failure timestamps, the age of the last good snapshot (since the
schedule started when there is none yet), failures, prune failures and the next run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import tarfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from engine import jsonio, tasks
from engine.durable import fsync_dir, write_atomic
from snapshots.scan import Verifier, read_headers, scan
from snapshots.storage import SnapshotInfo

log = logging.getLogger("quiver.snapshots.schedule")

FULL = "*full*"  # the metrics' collection label for full-storage snapshots
LEDGER_DIR = ".schedules"  # under the snapshots root; dot names are never collections
ALL = "*"
DEFAULT_RETRY_AFTER = 600.0
MAX_WAIT = 1.0  # the thread looks at the clock at least this often

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LEDGER_TMP = re.compile(r"\.tmp-[0-9a-f]{32}-.*\.json")  # engine.durable's temp files


class VerificationFailed(Exception):
    """The new snapshot does not read back as written."""


# --------------------------------------------------------------------------- config values


def parse_duration(value: Any) -> float:
    """Seconds from 90, "90s", "15m", "6h", "1d", "2w" or "1h30m"; ValueError otherwise."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(f"(?:{_DURATION.pattern})+", text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"expected a positive duration like 90s, 15m, 6h, 1d or 1h30m, "
                         f"got {value!r}")
    return seconds


def check_cron(value: Any) -> str:
    """A cron expression croniter accepts (5 fields, or 6 with seconds; @daily...)."""
    if not isinstance(value, str) or not value.strip() or not croniter.is_valid(value.strip()):
        raise ValueError(f"expected a cron expression like '0 3 * * *', got {value!r}")
    return value.strip()


def check_schedule_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"expected 1-64 letters, digits, '_' or '-', got {value!r}")
    return value


@dataclass(frozen=True)
class Schedule:
    name: str
    collections: tuple[str, ...]  # ("*",): every collection; empty when `full`
    full: bool
    interval: float | None
    cron: str | None
    keep_last: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    retry_after: float = DEFAULT_RETRY_AFTER

    @classmethod
    def from_config(cls, raw: dict[str, Any]) -> Schedule:
        """From a `snapshots.schedule` entry (validated by api.settings; durations may still
        be spelled as text)."""
        interval = raw.get("interval")
        cron = raw.get("cron")
        if (interval is None) == (cron is None):
            raise ValueError(f"schedule {raw.get('name')!r}: give one of interval, cron")
        collections = raw.get("collections") or ()
        if isinstance(collections, str):
            collections = (collections,)
        retry = raw.get("retry_after")
        return cls(name=check_schedule_name(raw.get("name") or "default"),
                   collections=tuple(collections), full=bool(raw.get("full")),
                   interval=None if interval is None else parse_duration(interval),
                   cron=None if cron is None else check_cron(cron),
                   keep_last=raw.get("keep_last"), keep_daily=raw.get("keep_daily"),
                   keep_weekly=raw.get("keep_weekly"),
                   retry_after=DEFAULT_RETRY_AFTER if retry is None else parse_duration(retry))

    def next_after(self, t: float) -> float:
        """The first run time after a snapshot taken at `t`."""
        if self.interval is not None:
            return t + self.interval
        assert self.cron is not None
        return float(croniter(self.cron, datetime.fromtimestamp(t, UTC)).get_next(float))

    @property
    def retry_delay(self) -> float:
        if self.interval is not None:
            return min(self.retry_after, self.interval)
        return self.retry_after

    @property
    def prunes(self) -> bool:
        return any(k for k in (self.keep_last, self.keep_daily, self.keep_weekly))

    def describe(self) -> str:
        what = "full storage" if self.full else ", ".join(self.collections)
        when = f"every {self.interval:g}s" if self.interval is not None else f"cron {self.cron!r}"
        return f"{self.name} ({what}, {when})"


# --------------------------------------------------------------------------- retention


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def _week(t: float) -> str:
    year, week, _ = datetime.fromtimestamp(t, UTC).isocalendar()
    return f"{year}-W{week:02d}"


def to_keep(taken: dict[str, float], schedule: Schedule) -> set[str]:
    """The snapshots (name → time taken) the policy keeps: always the newest, then keep_last
    newest, the newest per day of the keep_daily latest days, per week of keep_weekly weeks.
    No keep_* key: all of them."""
    if not schedule.prunes:
        return set(taken)
    newest_first = sorted(taken, key=lambda n: (taken[n], n), reverse=True)
    keep = set(newest_first[:1])
    keep.update(newest_first[: schedule.keep_last or 0])
    buckets: tuple[tuple[Callable[[float], str], int | None], ...] = (
        (_day, schedule.keep_daily), (_week, schedule.keep_weekly))
    for bucket, count in buckets:
        seen: set[str] = set()
        for name in newest_first:
            if not count or len(seen) >= count:
                break
            b = bucket(taken[name])
            if b not in seen:
                seen.add(b)
                keep.add(name)
    return keep


# --------------------------------------------------------------------------- ledger


class Ledger:
    """The verified snapshots one schedule made: {folder: {name: time taken}} plus each one's
    sha256, on local disk next to the snapshots (written atomically). Lost or unreadable, the
    schedule starts over and the snapshots it made before are treated as a user's: never
    pruned. A ledger without "checksums" (older) still loads: its sha256s are unknown."""

    def __init__(self, root: str, schedule: str) -> None:
        self.path = os.path.join(root, LEDGER_DIR, f"{schedule}.json")
        self.folders: dict[str, dict[str, float]] = {}
        self.checksums: dict[str, dict[str, str]] = {}

    def load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                data = jsonio.loads(f.read())
            self.folders = {str(folder): {str(n): float(t) for n, t in names.items()}
                            for folder, names in data["folders"].items()}
            self.checksums = {str(folder): {str(n): str(c) for n, c in names.items()
                                            if str(n) in self.folders.get(str(folder), {})}
                              for folder, names in (data.get("checksums") or {}).items()}
        except FileNotFoundError:
            self.folders, self.checksums = {}, {}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("snapshot schedule ledger %s is unreadable (%s): starting over; the "
                        "snapshots it listed are kept, never pruned", self.path, exc)
            self.folders, self.checksums = {}, {}

    def save(self) -> None:
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            os.makedirs(directory, exist_ok=True)
            fsync_dir(os.path.dirname(directory))  # the new directory's entry, durably
        folders = {k: v for k, v in self.folders.items() if v}
        checksums = {k: {n: c for n, c in self.checksums.get(k, {}).items() if n in v}
                     for k, v in folders.items()}
        write_atomic(self.path, jsonio.dumps({"folders": folders, "checksums": checksums},
                                             indent=True))

    def add(self, folder: str, name: str, taken: float, checksum: str) -> None:
        self.folders.setdefault(folder, {})[name] = taken
        self.checksums.setdefault(folder, {})[name] = checksum

    def forget(self, folder: str, name: str) -> None:
        self.folders.get(folder, {}).pop(name, None)
        self.checksums.get(folder, {}).pop(name, None)

    def checksum(self, folder: str, name: str) -> str | None:
        return self.checksums.get(folder, {}).get(name)

    def latest(self, folder: str) -> float | None:
        times = self.folders.get(folder)
        return max(times.values()) if times else None


def clean_temp_files(directory: str) -> None:
    """Remove ledger writes a crash interrupted (engine.durable's `.tmp-<hex>-<name>.json`):
    called before this process writes any ledger, so none of them is in progress."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for e in entries:
        if _LEDGER_TMP.fullmatch(e.name) and e.is_file(follow_symlinks=False):
            try:
                os.unlink(e.path)
            except OSError as exc:
                log.warning("cannot remove interrupted ledger write %s: %s", e.path, exc)


# --------------------------------------------------------------------------- the scheduler


@dataclass
class _State:
    """One (schedule, collection) pair, as the metrics show it."""

    since: float  # when the scheduler first knew of it (the age of a never-made backup)
    last_success: float | None = None  # when the newest good snapshot was taken
    last_failure: float | None = None
    failures: int = 0
    prune_failures: int = 0
    next_run: float | None = None
    last_error: str = ""


class Scheduler:
    """Runs the configured schedules on one background thread. `clock` (epoch seconds) is
    injectable: tests drive `tick()` themselves under a fake clock."""

    def __init__(self, manager: Any, catalog: Any, config: dict[str, Any],
                 clock: Callable[[], float] = time.time) -> None:
        self.manager = manager
        self.catalog = catalog
        self.config = config
        self.clock = clock
        self.schedules = [Schedule.from_config(s) for s in (config.get("schedule") or [])]
        self.root = getattr(manager, "root", "")
        self.ledgers = {s.name: Ledger(self.root, s.name) for s in self.schedules}
        # keyed by (schedule, collection): the real collection, aliases resolved
        self._states: dict[tuple[str, str], _State] = {}
        self._lock = threading.Lock()  # guards _states and _task (read from other threads)
        self._run_lock = threading.Lock()  # one tick at a time: runs never overlap
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: tasks.Task | None = None  # the snapshot creation in progress
        self._loaded = False
        now = clock()
        for s in self.schedules:
            for label in self._configured_labels(s):
                self._states[(s.name, label)] = _State(since=now)

    # ---- thread -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the schedule thread (a no-op without schedules)."""
        if not self.schedules or self._thread is not None:
            return
        self._stop.clear()
        for s in self.schedules:
            log.info("snapshot schedule %s", s.describe())
        self._thread = threading.Thread(target=self._loop, name="quiver-snapshot-schedule",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop it: no new run starts, the snapshot creation in progress is cancelled (it
        leaves nothing behind), and the thread is waited for at most `timeout` seconds (a
        publish past its point of no return, or its verification, may still be finishing)."""
        self._stop.set()
        with self._lock:
            task = self._task
        if task is not None:
            task.cancel()  # False past the point of no return: that run just finishes
        thread = self._thread
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():
            log.warning("the snapshot schedule thread did not stop within %gs; not waiting "
                        "for it any longer", timeout)
        else:
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a bug here must not end the schedules for good
                log.exception("snapshot schedule tick failed")
            self._stop.wait(self._wait_s())

    def _wait_s(self) -> float:
        with self._lock:
            due = [st.next_run for st in self._states.values() if st.next_run is not None]
        if not due:
            return MAX_WAIT
        return min(MAX_WAIT, max(0.01, min(due) - self.clock()))

    # ---- one pass ----------------------------------------------------------------------------

    def tick(self) -> int:
        """Run every snapshot that is due now, one after another; returns how many ran."""
        ran = 0
        with self._run_lock:
            if not self._loaded:
                self._load()
                self._loaded = True
            for s in self.schedules:
                for label in self._labels(s):
                    if self._stop.is_set():
                        return ran
                    st = self._state(s, label)
                    due = self._due(s, st)
                    with self._lock:
                        st.next_run = due
                    if due <= self.clock():
                        self._run(s, label, st)
                        with self._lock:
                            st.next_run = self._due(s, st)
                        ran += 1
        return ran

    def _resolve(self, name: str) -> str:
        """The collection `name` (maybe an alias) is now; itself when there is none."""
        try:
            return str(self.catalog.get(name).name)
        except Exception:  # missing or broken: the run will fail and say why
            return name

    def _configured_labels(self, s: Schedule) -> list[str]:
        if s.full:
            return [FULL]
        return sorted({self._resolve(c) for c in s.collections if c != ALL})

    def _labels(self, s: Schedule) -> list[str]:
        """The collections a schedule covers now, aliases resolved ("*": those that exist);
        the states of collections no longer covered (deleted, an alias re-pointed) are
        dropped."""
        labels = set(self._configured_labels(s))
        if ALL in s.collections:
            labels.update(self.catalog.names())
        with self._lock:
            for key in [k for k in self._states if k[0] == s.name and k[1] not in labels]:
                del self._states[key]
        return sorted(labels)

    def _state(self, s: Schedule, label: str) -> _State:
        with self._lock:
            st = self._states.get((s.name, label))
            if st is None:
                st = self._states[(s.name, label)] = _State(since=self.clock())
                st.last_success = self.ledgers[s.name].latest(_folder(label))
            return st

    def _due(self, s: Schedule, st: _State) -> float:
        if st.last_success is not None:
            due = s.next_after(st.last_success)
        else:  # nothing yet: an interval runs at once, a cron at its next slot
            due = st.since if s.cron is None else s.next_after(st.since)
        if st.last_failure is not None and (st.last_success is None
                                            or st.last_failure > st.last_success):
            due = max(due, st.last_failure + s.retry_delay)
        return due

    def _load(self) -> None:
        """Read the ledgers, forgetting snapshots no longer listed (deleted by hand) or listed
        with another sha256 (replaced by an upload); the storage unreachable, the ledger is
        believed as it is."""
        clean_temp_files(os.path.join(self.root, LEDGER_DIR))
        for s in self.schedules:
            ledger = self.ledgers[s.name]
            ledger.load()
            changed = False
            for folder in list(ledger.folders):
                try:
                    listed = {i.name: i.checksum for i in self._list(folder)}
                except Exception as exc:
                    log.warning("snapshot schedule %s: cannot list %s (%s); using its ledger",
                                s.name, folder or "full snapshots", exc)
                    continue
                changed |= self._reconcile(s, folder, listed, spare="")
            if changed:
                try:
                    ledger.save()
                except Exception as exc:
                    log.warning("snapshot schedule %s: cannot update its ledger (%s)",
                                s.name, exc)
            with self._lock:
                for (name, label), st in self._states.items():
                    if name == s.name:
                        st.last_success = ledger.latest(_folder(label))

    def _reconcile(self, s: Schedule, folder: str, listed: dict[str, str | None],
                   spare: str) -> bool:
        """Forget the ledger's snapshots of `folder` that are gone from the listing or listed
        with another sha256 than recorded (no longer the schedule's); True if any was."""
        ledger = self.ledgers[s.name]
        changed = False
        for name in list(ledger.folders.get(folder, {})):
            if name == spare:  # just published: maybe not listed yet (object storage)
                continue
            recorded = ledger.checksum(folder, name)
            if name not in listed:
                ledger.forget(folder, name)  # deleted by hand: forget it
                changed = True
            elif recorded and listed[name] and listed[name] != recorded:
                log.warning("snapshot schedule %s: %s was replaced by another snapshot of the "
                            "same name; it is no longer the schedule's and is never pruned",
                            s.name, name)
                ledger.forget(folder, name)
                changed = True
        return changed

    # ---- a run ---------------------------------------------------------------------------------

    def _run(self, s: Schedule, label: str, st: _State) -> None:
        taken = self.clock()
        what = "full storage" if label == FULL else label
        ledger = self.ledgers[s.name]
        try:
            folder, info = self._create(label)
            try:
                self._verify(folder, info)
            except Exception:
                self._discard(folder, info.name, "unverified")
                raise
            assert info.checksum  # _verify refuses a snapshot without one
            ledger.add(folder, info.name, taken, info.checksum)
            try:
                ledger.save()
            except Exception:  # unrecorded, it would never be pruned: no half-done run
                ledger.forget(folder, info.name)
                self._discard(folder, info.name, "unrecorded")
                raise
        except Exception as exc:
            if isinstance(exc, tasks.Cancelled) and self._stop.is_set():
                log.info("scheduled snapshot %s of %s cancelled: stopping", s.name, what)
                return
            with self._lock:
                st.last_failure = self.clock()
                st.failures += 1
                st.last_error = str(exc) or type(exc).__name__
            log.error("scheduled snapshot %s of %s failed: %s", s.name, what, st.last_error)
            return
        with self._lock:
            st.last_success = taken
        log.info("scheduled snapshot %s of %s: %s (%d bytes, verified)", s.name, what,
                 info.name, info.size)
        try:
            self._prune(s, folder, info.name)
        except Exception as exc:
            with self._lock:
                st.prune_failures += 1
            log.error("snapshot schedule %s: pruning %s failed: %s", s.name,
                      folder or "full snapshots", exc)

    def _create(self, label: str) -> tuple[str, SnapshotInfo]:
        """Create the snapshot as a registered, cancellable task (the manager's creation
        claims it), so that `stop()` can cancel it."""
        kind = "snapshot_create_full" if label == FULL else "snapshot_create"
        with self._lock:  # atomic with stop(): it either sees this task or we see its flag
            task = tasks.registry.start(kind, None if label == FULL else label,
                                        cancellable=True)
            self._task = task
            if self._stop.is_set():
                task.cancel()
        try:
            with tasks.registry.bind(task):
                if label == FULL:
                    return "", self.manager.create_full()
                folder = self.catalog.get(label).name  # NotFound: a failure like any other
                return folder, self.manager.create(folder)
        finally:
            with self._lock:
                self._task = None

    def _list(self, folder: str) -> list[SnapshotInfo]:
        return list(self.manager.list(folder) if folder else self.manager.list_full())

    def _verify(self, folder: str, info: SnapshotInfo) -> None:
        """Read the published snapshot back: it must be what was written."""
        if not info.checksum:
            raise VerificationFailed(f"snapshot {info.name} has no checksum")
        dl = self.manager.download(folder, info.name) if folder \
            else self.manager.download_full(info.name)
        if dl.path is not None:
            if folder:
                scan(dl.path, info.checksum)  # checksum, structure, finite vectors
            else:
                verify_full(dl.path, info.checksum)
            return
        h = hashlib.sha256()
        size = 0
        for chunk in dl.chunks or ():
            h.update(chunk)
            size += len(chunk)
        if size != info.size or h.hexdigest() != info.checksum:
            raise VerificationFailed(f"snapshot {info.name} reads back as {size} bytes with "
                                     f"sha256 {h.hexdigest()}, expected {info.size} bytes "
                                     f"with {info.checksum}")

    def _delete(self, folder: str, name: str) -> None:
        if folder:
            self.manager.delete(folder, name)
        else:
            self.manager.delete_full(name)

    def _discard(self, folder: str, name: str, why: str) -> None:
        try:
            self._delete(folder, name)
        except Exception as exc:
            log.error("could not delete %s snapshot %s: %s", why, name, exc)

    def _prune(self, s: Schedule, folder: str, newest: str) -> None:
        """Delete this schedule's snapshots the policy no longer keeps (never the newest), each
        only if it is still the one the schedule made (same sha256)."""
        ledger = self.ledgers[s.name]
        listed = {i.name: i.checksum for i in self._list(folder)}
        changed = self._reconcile(s, folder, listed, spare=newest)
        entries = ledger.folders.get(folder, {})
        doomed = sorted(set(entries) - to_keep(entries, s) - {newest})
        try:
            for name in doomed:
                recorded = ledger.checksum(folder, name)
                if recorded is None or listed.get(name) != recorded:
                    log.warning("snapshot schedule %s: not pruning %s, its sha256 cannot be "
                                "confirmed as the one the schedule made (recorded: %s); it "
                                "is no longer the schedule's", s.name, name, recorded or "none")
                else:
                    self._delete(folder, name)
                    log.info("snapshot schedule %s pruned %s", s.name, name)
                ledger.forget(folder, name)
                changed = True
        finally:  # what was pruned before a failure is recorded too
            if changed:
                ledger.save()

    # ---- metrics -------------------------------------------------------------------------------

    def render_metrics(self, out: list[str], label: Callable[[str], str] = str) -> None:
        """Append last success/failure time and age per schedule to a /metrics exposition."""
        if not self.schedules:
            return
        now = self.clock()
        with self._lock:
            rows = sorted((k, _State(**vars(v))) for k, v in self._states.items())
        p = "quiver_snapshot_schedule_"
        series: Iterable[tuple[str, str, str, Callable[[_State], float | None]]] = (
            ("last_success_timestamp_seconds", "gauge",
             "When the newest verified scheduled snapshot was taken (0: none yet)",
             lambda st: st.last_success or 0),
            ("last_failure_timestamp_seconds", "gauge",
             "When the last scheduled snapshot failed (0: never)",
             lambda st: st.last_failure or 0),
            ("last_success_age_seconds", "gauge",
             "Age of the newest verified scheduled snapshot (none yet: since the schedule "
             "started)",
             lambda st: max(0.0, now - (st.last_success if st.last_success is not None
                                        else st.since))),
            ("failures_total", "counter", "Scheduled snapshots that failed",
             lambda st: st.failures),
            ("prune_failures_total", "counter", "Prunings of scheduled snapshots that failed",
             lambda st: st.prune_failures),
            ("next_run_timestamp_seconds", "gauge", "When the next scheduled snapshot is due",
             lambda st: st.next_run),
        )
        for suffix, kind, help_text, value in series:
            out.append(f"# HELP {p}{suffix} {help_text}")
            out.append(f"# TYPE {p}{suffix} {kind}")
            for (schedule, coll), st in rows:
                v = value(st)
                if v is None:
                    continue
                shown_name = coll if coll == FULL else label(coll)
                labels = f'schedule="{_escape(schedule)}",collection="{_escape(shown_name)}"'
                shown = str(v) if isinstance(v, int) else repr(float(v))
                out.append(f"{p}{suffix}{{{labels}}} {shown}")


def _folder(label: str) -> str:
    """The ledger folder of a metrics label: "" for full snapshots."""
    return "" if label == FULL else label


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def verify_full(path: str, checksum: str) -> None:
    """A full-storage snapshot on disk: its sha256, and every collection archive inside it
    well-formed (headers and manifest; the outer checksum covers their bytes)."""
    with Verifier(path, checksum) as verifier:
        size = os.path.getsize(path)
        try:
            with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
                nested = []
                while (info := tar.next()) is not None:
                    tar.members = []  # type: ignore[attr-defined]  # headers only
                    if info.name != "config.json":
                        nested.append((info.offset_data, info.size))
        except (tarfile.TarError, EOFError) as exc:
            raise VerificationFailed(f"full snapshot is not a readable tar ({exc})") from None
        for offset, length in nested:
            if offset + length > size:
                raise VerificationFailed("full snapshot is truncated")
            read_headers(path, offset, length)
        verifier.wait()
