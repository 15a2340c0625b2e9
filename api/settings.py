"""Settings: embedded defaults → YAML file → QUIVER__SECTION__KEY environment variables."""

from __future__ import annotations

import copy
import os
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "log_level": "INFO",
    "service": {
        "host": "0.0.0.0",
        "http_port": 6333,
        "max_request_size_mb": 32,
        "max_snapshot_upload_mb": 0,
        "api_key": None,
        "read_only_api_key": None,
        "enable_tls": False,
        "verify_https_client_certificate": False,
        "enable_cors": True,
        "access_log": True,
    },
    "tls": {"cert": "./tls/cert.pem", "key": "./tls/key.pem", "ca_cert": "./tls/cacert.pem"},
    "storage": {
        "storage_path": "./storage",
        "snapshots_path": "./snapshots",
        "temp_path": None,
        "enable_snapshot_url_recovery": True,
        "snapshot_url_allowed_hosts": None,
        "snapshot_url_max_bytes": None,
        "snapshot_url_idle_timeout_s": 60,
        "snapshots_config": {
            "snapshots_storage": "local",
            "s3_config": {"bucket": None, "region": None, "access_key": None,
                          "secret_key": None, "endpoint_url": None},
        },
        "wal": {"fsync": True},
        "flush": {"wal_bytes_mb": 32, "idle_seconds": 5},
    },
    "gpu": {"enabled": "auto", "device_id": 0, "memory_limit": None},
}

ENV_PREFIX = "QUIVER__"
# Secrets are taken verbatim from the environment: a key like 0x1F, 007 or "yes" must not
# become 31, 7 or True.
VERBATIM = frozenset({"api_key", "read_only_api_key", "access_key", "secret_key"})


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
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    settings = copy.deepcopy(DEFAULTS)
    if config_path:
        with open(config_path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{config_path}: top level must be a mapping")
        settings = _merge(settings, data)
    env = os.environ if env is None else env
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        if not path:
            continue
        node = settings
        for p in path[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key}: {p} is not a section")
        node[path[-1]] = value if path[-1] in VERBATIM else _coerce(value)
    if overrides:
        settings = _merge(settings, overrides)
    return settings


def mib_to_bytes(value: Any, key: str) -> int:
    """A size setting in MiB (fractions allowed) as bytes; null or 0 means no limit (0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a non-negative number of MiB, got {value!r}")
    return int(value * (1 << 20))


def max_snapshot_upload_bytes(settings: dict[str, Any]) -> int:
    """`service.max_snapshot_upload_mb` in bytes; 0: no cap but the free space."""
    return mib_to_bytes((settings.get("service") or {}).get("max_snapshot_upload_mb"),
                        "service.max_snapshot_upload_mb")
