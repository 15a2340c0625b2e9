"""Settings: one typed, validated object, built once at start-up.

Sources, later wins: the dataclass defaults below (the one place defaults live; the
documented copy is config/config.yaml) → a YAML file → QUIVER__SECTION__KEY environment
variables (QUIVER__A__B__C nests; values are YAML scalars, secrets verbatim) → CLI overrides.
A bad value fails start-up with an error naming its key; an unknown key is only warned about
(Qdrant's config files carry many keys Quiver does not use).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from engine import ivf
from engine.catalog import validate_name
from engine.errors import BadRequest
from snapshots.schedule import ALL, check_cron, check_schedule_name, parse_duration

log = logging.getLogger("quiver.settings")

ENV_PREFIX = "QUIVER__"
# Secrets are taken verbatim from the environment: a key like 0x1F, 007 or "yes" must not
# become 31, 7 or True.
VERBATIM = frozenset({"api_key", "read_only_api_key", "access_key", "secret_key"})


class SettingsError(ValueError):
    """A setting that cannot be used; the message starts with its dotted key."""


def _check(*, minimum: float | None = None, above: float | None = None,
           maximum: float | None = None, choices: tuple[str, ...] | None = None,
           parse: Callable[[Any, str], Any] | None = None) -> dict[str, Any]:
    """Field metadata read by the validator (bounds, allowed values, or a custom parser)."""
    return {"minimum": minimum, "above": above, "maximum": maximum, "choices": choices,
            "parse": parse}


def _show(value: Any) -> str:
    """A value as the error shows it: YAML's null/true/false, repr otherwise."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _gpu_enabled(value: Any, key: str) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("auto", "true", "false"):
        return "auto" if value.lower() == "auto" else value.lower() == "true"
    raise SettingsError(f"{key}: expected one of auto, true, false, got {_show(value)}")


def _memory_limit(value: Any, key: str) -> float | None:
    # gpu.budget's reading: a float in (0, 1] is a fraction of the device, a number > 1 bytes
    if value is None or (_is_number(value) and math.isfinite(value) and (
            value > 1 or (isinstance(value, float) and value > 0))):
        return typing.cast(float | None, value)
    raise SettingsError(f"{key}: expected bytes (a number > 1) or a fraction in (0, 1], "
                        f"got {_show(value)}")


# --------------------------------------------------------------------------- the sections


@dataclass(frozen=True)
class ServiceSettings:
    host: str = "0.0.0.0"
    http_port: int = field(default=6333, metadata=_check(minimum=0, maximum=65535))
    # Qdrant's gRPC port; null or 0 disables the gRPC server
    grpc_port: int | None = field(default=6334, metadata=_check(minimum=0, maximum=65535))
    max_request_size_mb: float = field(default=32, metadata=_check(above=0))
    max_snapshot_upload_mb: float | None = field(default=0, metadata=_check(minimum=0))
    api_key: str | None = None
    read_only_api_key: str | None = None
    # Qdrant's JWT RBAC: tokens signed (HS256) with api_key carry their own access rights
    jwt_rbac: bool = False
    enable_tls: bool = False
    verify_https_client_certificate: bool = False
    enable_cors: bool = True
    access_log: bool = True


@dataclass(frozen=True)
class TlsSettings:
    cert: str = "./tls/cert.pem"
    key: str = "./tls/key.pem"
    ca_cert: str = "./tls/cacert.pem"


@dataclass(frozen=True)
class S3Settings:
    bucket: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    endpoint_url: str | None = None


@dataclass(frozen=True)
class SnapshotsConfig:
    snapshots_storage: str = field(default="local", metadata=_check(choices=("local", "s3")))
    s3_config: S3Settings = field(default_factory=S3Settings)


@dataclass(frozen=True)
class WalSettings:
    fsync: bool = True


@dataclass(frozen=True)
class FlushSettings:
    wal_bytes_mb: int = field(default=32, metadata=_check(minimum=0))
    idle_seconds: float = field(default=5, metadata=_check(minimum=0))


@dataclass(frozen=True)
class StorageSettings:
    storage_path: str = "./storage"
    snapshots_path: str = "./snapshots"
    temp_path: str | None = None
    enable_snapshot_url_recovery: bool = True
    snapshot_url_allowed_hosts: list[str] | None = None
    snapshot_url_max_bytes: int | None = field(default=None, metadata=_check(minimum=0))
    snapshot_url_idle_timeout_s: float = field(default=60, metadata=_check(above=0))
    snapshots_config: SnapshotsConfig = field(default_factory=SnapshotsConfig)
    wal: WalSettings = field(default_factory=WalSettings)
    flush: FlushSettings = field(default_factory=FlushSettings)


@dataclass(frozen=True)
class GpuSettings:
    enabled: bool | Literal["auto"] = field(default="auto", metadata=_check(parse=_gpu_enabled))
    device_id: int = field(default=0, metadata=_check(minimum=0))
    memory_limit: float | None = field(default=None, metadata=_check(parse=_memory_limit))
    # extension (engine/ivf.py): a FAISS index instead of HNSW for indexed segments
    faiss_index: str = field(default="none", metadata=_check(choices=ivf.CHOICES))
    nlist: int = field(default=0, metadata=_check(minimum=0))  # 0: auto, ≈ 4·sqrt(rows)
    nprobe: int = field(default=32, metadata=_check(minimum=1))
    pq_m: int = field(default=0, metadata=_check(minimum=0))  # 0: auto


def _duration(value: Any, key: str) -> float | None:
    try:
        return None if value is None else parse_duration(value)
    except ValueError as exc:
        raise SettingsError(f"{key}: {exc}") from None


def _cron(value: Any, key: str) -> str | None:
    try:
        return None if value is None else check_cron(value)
    except ValueError as exc:
        raise SettingsError(f"{key}: {exc}") from None


def _schedule_name(value: Any, key: str) -> str:
    try:
        return check_schedule_name(value)
    except ValueError as exc:
        raise SettingsError(f"{key}: {exc}") from None


def _schedule_collections(value: Any, key: str) -> list[str] | None:
    """A list of collection names, or "*" (every collection when the schedule runs)."""
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise SettingsError(f"{key}: expected a list of collection names or \"*\", got "
                            f"{_show(value)}")
    for n in names:
        if n != ALL:
            try:
                validate_name(n)
            except BadRequest as exc:
                raise SettingsError(f"{key}: {exc}") from None
    return list(names)


@dataclass(frozen=True)
class ScheduleSettings:
    """One `snapshots.schedule` entry (semantics: snapshots/schedule.py)."""

    name: str = field(default="default", metadata=_check(parse=_schedule_name))
    collections: list[str] | None = field(default=None,
                                          metadata=_check(parse=_schedule_collections))
    full: bool = False  # a full-storage snapshot instead of collections
    interval: float | None = field(default=None, metadata=_check(parse=_duration))  # seconds
    cron: str | None = field(default=None, metadata=_check(parse=_cron))  # UTC
    keep_last: int | None = field(default=None, metadata=_check(minimum=1))
    keep_daily: int | None = field(default=None, metadata=_check(minimum=1))
    keep_weekly: int | None = field(default=None, metadata=_check(minimum=1))
    retry_after: float | None = field(default=None, metadata=_check(parse=_duration))
    target: str | None = field(default=None, metadata=_check(choices=("local", "s3")))


def _schedules(value: Any, key: str) -> list[ScheduleSettings]:
    """Every entry validated like a section, but an unknown key is refused, not warned about:
    a mistyped keep_* would silently keep every snapshot."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise SettingsError(f"{key}: expected a list of schedules, got {_show(value)}")
    out: list[ScheduleSettings] = []
    for i, raw in enumerate(value):
        where = f"{key}[{i}]"
        unknown: list[str] = []
        entry = typing.cast(ScheduleSettings, _section(ScheduleSettings, raw, where, unknown))
        if unknown:
            known = ", ".join(f.name for f in dataclasses.fields(ScheduleSettings))
            raise SettingsError(f"{unknown[0]}: unknown schedule key (known: {known})")
        if (entry.interval is None) == (entry.cron is None):
            raise SettingsError(f"{where}: give exactly one of interval, cron")
        if entry.full and entry.collections:
            raise SettingsError(f"{where}.collections: not with full: true (a full snapshot "
                                "holds every collection)")
        if not entry.full and not entry.collections:
            raise SettingsError(f"{where}.collections: required (a list of names, or \"*\"), "
                                "unless full: true")
        if any(e.name == entry.name for e in out):
            raise SettingsError(f"{where}.name: duplicate schedule name {entry.name!r} (each "
                                "schedule needs a name of its own)")
        out.append(entry)
    return out


@dataclass(frozen=True)
class SnapshotsSettings:
    schedule: list[ScheduleSettings] = field(default_factory=list,
                                             metadata=_check(parse=_schedules))


@dataclass(frozen=True)
class ClusterSettings:
    """Scale-out on Ray (api/cluster): off by default; Ray is imported only when enabled."""
    enabled: bool = False
    ray_address: str = "local"  # local: a Ray instance in this process; auto or ray://host:port
    namespace: str = "quiver"  # Ray namespace of the metadata and shard replica actors
    num_cpus: int | None = field(default=None, metadata=_check(minimum=1))  # local only
    replica_storage_path: str | None = None  # default <storage_path>/cluster/replicas
    gpu_per_replica: bool | Literal["auto"] = field(default="auto",
                                                    metadata=_check(parse=_gpu_enabled))
    # seconds a replica stays Dead before a new one is started and filled by a transfer
    repair_after_s: float = field(default=30, metadata=_check(minimum=0))
    # a shard transfer's logged writes kept in the front end's memory; the rest go to its disk
    transfer_log_memory_mb: float = field(default=64, metadata=_check(minimum=0))


@dataclass(frozen=True)
class Settings:
    log_level: str = "INFO"
    service: ServiceSettings = field(default_factory=ServiceSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    gpu: GpuSettings = field(default_factory=GpuSettings)
    snapshots: SnapshotsSettings = field(default_factory=SnapshotsSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)


def as_dict(settings: Any) -> dict[str, Any]:
    """A settings object (or section) as the nested dict a YAML file would spell."""
    return dataclasses.asdict(settings)


# --------------------------------------------------------------------------- validation


def _bounds(value: float, key: str, noun: str, meta: dict[str, Any]) -> None:
    """`noun` is "integer" or "number"; the message says which values would do."""
    lo, above, hi = meta.get("minimum"), meta.get("above"), meta.get("maximum")
    a = "an" if noun == "integer" else "a"
    if lo is not None and hi is not None:
        ok, want = lo <= value <= hi, f"{a} {noun} from {lo} to {hi}"
    elif lo is not None:
        ok, want = value >= lo, f"a non-negative {noun}" if lo == 0 else f"{a} {noun} >= {lo}"
    elif above is not None:
        ok, want = value > above, f"a positive {noun}" if above == 0 else f"{a} {noun} > {above}"
    else:
        return
    if not ok:
        raise SettingsError(f"{key}: expected {want}, got {_show(value)}")


def _scalar(tp: Any, value: Any, key: str, meta: dict[str, Any]) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{key}: expected a boolean (true or false), got {_show(value)}")
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SettingsError(f"{key}: expected an integer, got {_show(value)}")
        _bounds(value, key, "integer", meta)
        return value
    if tp is float:
        if not _is_number(value) or not math.isfinite(value):
            raise SettingsError(f"{key}: expected a number, got {_show(value)}")
        _bounds(value, key, "number", meta)
        return value
    if tp is str:
        if _is_number(value):  # YAML read `api_key: 12345` as a number: its text is meant
            value = str(value)
        if not isinstance(value, str):
            raise SettingsError(f"{key}: expected a string, got {_show(value)}")
        choices = meta.get("choices")
        if choices is not None:
            if value.lower() not in choices:
                raise SettingsError(
                    f"{key}: expected one of {', '.join(choices)}, got {_show(value)}")
            return value.lower()
        return value
    if typing.get_origin(tp) is list and typing.get_args(tp) == (str,):
        if not isinstance(value, list) or not all(
                isinstance(v, str) or _is_number(v) for v in value):
            raise SettingsError(f"{key}: expected a list of strings, got {_show(value)}")
        return [str(v) for v in value]
    raise TypeError(f"{key}: unsupported settings type {tp!r}")  # a bug in this module


def _value(tp: Any, value: Any, key: str, meta: dict[str, Any], unknown: list[str]) -> Any:
    if meta.get("parse"):
        return meta["parse"](value, key)
    if dataclasses.is_dataclass(tp):
        return _section(typing.cast(type, tp), value, key, unknown)
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        (tp,) = args
    return _scalar(tp, value, key, meta)


def _section(cls: type, raw: Any, where: str, unknown: list[str]) -> Any:
    """`cls` from a mapping; a missing key or a null section takes the field's default."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SettingsError(f"{where or 'settings'}: expected a mapping, got {_show(raw)}")
    prefix = f"{where}." if where else ""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown.extend(f"{prefix}{k}" for k in raw if k not in fields)
    return cls(**{name: _value(hints[name], raw[name], prefix + name, dict(f.metadata), unknown)
                  for name, f in fields.items() if name in raw})


def validate(raw: dict[str, Any]) -> Settings:
    """The typed settings from their nested-dict form; unknown keys are logged, not fatal."""
    unknown: list[str] = []
    settings = typing.cast(Settings, _section(Settings, raw, "", unknown))
    _check_consistent(settings)
    if unknown:
        log.warning("ignoring unknown settings keys (not used by Quiver): %s",
                    ", ".join(unknown))
    return settings


def _check_consistent(settings: Settings) -> None:
    """Rules that span keys. JWTs are signed with the API key: without one, Qdrant refuses
    to start rather than run with RBAC silently off."""
    svc = settings.service
    if svc.jwt_rbac and (svc.api_key is None or svc.api_key == ""):
        raise SettingsError("service.jwt_rbac: requires service.api_key (the key that signs "
                            "the tokens)")
    gpu = settings.gpu
    if gpu.faiss_index == "cagra" and (gpu.enabled is False or ivf.faiss_gpus() == 0):
        raise SettingsError("gpu.faiss_index: cagra needs a FAISS build with GPU support "
                            "(faiss.get_num_gpus() > 0) and gpu.enabled not false; use "
                            "ivf_flat or ivf_pq, which also run on the CPU")
    # one snapshot storage per server: a schedule asking for another is refused, not failed
    storage = settings.storage.snapshots_config.snapshots_storage
    for i, entry in enumerate(settings.snapshots.schedule):
        if entry.target is not None and entry.target != storage:
            raise SettingsError(
                f"snapshots.schedule[{i}].target: {entry.target} cannot be honoured, this "
                f"server keeps snapshots in {storage} (storage.snapshots_config."
                "snapshots_storage)")


# --------------------------------------------------------------------------- loading


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _coerce(text: str) -> Any:
    """Env values are YAML scalars: 7000 → int, true → bool, null → None."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_settings(config_path: str | None = None, env: dict[str, str] | None = None,
                  overrides: dict[str, Any] | None = None) -> Settings:
    """Raises SettingsError (a ValueError) naming the bad key, OSError for an unreadable file."""
    settings = as_dict(Settings())
    if config_path:
        with open(config_path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as exc:
                raise SettingsError(f"{config_path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"{config_path}: top level must be a mapping")
        settings = _merge(settings, data)
    for key, value in (os.environ if env is None else env).items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        if not path:
            continue
        node = settings
        for p in path[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise SettingsError(f"{key}: {p} is not a section")
        node[path[-1]] = value if path[-1] in VERBATIM else _coerce(value)
    if overrides:
        settings = _merge(settings, overrides)
    return validate(settings)


def mib_to_bytes(value: Any, key: str) -> int:
    """A size setting in MiB (fractions allowed) as bytes; null or 0 means no limit (0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a non-negative number of MiB, got {value!r}")
    return int(value * (1 << 20))


def max_snapshot_upload_bytes(settings: Settings) -> int:
    """`service.max_snapshot_upload_mb` in bytes; 0: no cap but the free space."""
    return mib_to_bytes(settings.service.max_snapshot_upload_mb,
                        "service.max_snapshot_upload_mb")
