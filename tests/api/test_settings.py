"""api.settings: one typed object, defaults in one place, validated at start-up.

config/config.yaml is the documented copy of every key with its default: it must equal the
dataclass defaults key by key. Bad values fail with an error naming the key (also as
`quiver serve`'s exit status and message); unknown keys only warn.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.settings import (
    Settings,
    SettingsError,
    as_dict,
    load_settings,
    max_snapshot_upload_bytes,
    mib_to_bytes,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "config.yaml"


def _flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _field_keys(cls: type, prefix: str = "") -> set[str]:
    """Every leaf field of the settings dataclasses, as a dotted key."""
    keys: set[str] = set()
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
            else f.default
        if dataclasses.is_dataclass(default):
            keys |= _field_keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.add(f"{prefix}{f.name}")
    return keys


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- the documented copy


def test_config_yaml_documents_every_key_with_its_default() -> None:
    documented = _flatten(yaml.safe_load(CONFIG.read_text()))
    defaults = _flatten(as_dict(Settings()))
    assert set(documented) == set(defaults), (
        f"only in config.yaml: {sorted(set(documented) - set(defaults))}; "
        f"undocumented: {sorted(set(defaults) - set(documented))}")
    for key, value in defaults.items():
        assert documented[key] == value, f"{key}: config.yaml says {documented[key]!r}, " \
                                         f"the default is {value!r}"
        assert type(documented[key]) is type(value), key
    assert _field_keys(Settings) == set(documented)  # every dataclass field is documented


def test_loading_the_shipped_config_gives_the_defaults() -> None:
    assert load_settings(str(CONFIG), env={}) == Settings()
    assert load_settings(env={}) == Settings()


def test_a_null_or_empty_section_keeps_its_defaults(tmp_path: Path) -> None:
    s = load_settings(_yaml(tmp_path, "storage:\n  wal:\n  flush: null\ngpu:\n"), env={})
    assert s.storage.wal.fsync is True and s.storage.flush.wal_bytes_mb == 32
    assert s.gpu == Settings().gpu


# --------------------------------------------------------------------------- precedence


def test_precedence_defaults_yaml_env_overrides(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "service:\n  http_port: 7000\n  host: 127.0.0.1\n"
                           "storage:\n  storage_path: /from/yaml\n")
    env = {"QUIVER__SERVICE__HTTP_PORT": "7001"}
    assert load_settings(path, env={}).service.http_port == 7000  # YAML over the default
    s = load_settings(path, env=env)
    assert (s.service.http_port, s.service.host) == (7001, "127.0.0.1")  # env over YAML
    assert s.storage.storage_path == "/from/yaml"
    s = load_settings(path, env=env, overrides={"service": {"http_port": 7002}})
    assert s.service.http_port == 7002  # CLI over env
    assert s.storage.storage_path == "/from/yaml" and s.service.host == "127.0.0.1"


def test_env_values_are_yaml_scalars_and_nest() -> None:
    s = load_settings(env={
        "QUIVER__STORAGE__WAL__FSYNC": "false",
        "QUIVER__STORAGE__FLUSH__IDLE_SECONDS": "1.5",
        "QUIVER__STORAGE__TEMP_PATH": "null",
        "QUIVER__STORAGE__SNAPSHOT_URL_ALLOWED_HOSTS": "[127.0.0.1, 'localhost:8080']",
        "QUIVER__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE": "s3",
        "QUIVER__storage__snapshots_config__s3_config__bucket": "b",  # names are case-blind
        "QUIVER__GPU__ENABLED": "false",
        "QUIVER__GPU__DEVICE_ID": "1",
        "QUIVER__LOG_LEVEL": "debug",
        "OTHER__SERVICE__HTTP_PORT": "abc",  # not ours: ignored
    })
    assert s.storage.wal.fsync is False and s.storage.flush.idle_seconds == 1.5
    assert s.storage.temp_path is None
    assert s.storage.snapshot_url_allowed_hosts == ["127.0.0.1", "localhost:8080"]
    assert s.storage.snapshots_config.snapshots_storage == "s3"
    assert s.storage.snapshots_config.s3_config.bucket == "b"
    assert (s.gpu.enabled, s.gpu.device_id, s.log_level) == (False, 1, "debug")


def test_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUIVER__SERVICE__HTTP_PORT", "7003")
    assert load_settings().service.http_port == 7003


def test_env_cannot_nest_under_a_value() -> None:
    with pytest.raises(SettingsError, match="QUIVER__SERVICE__HTTP_PORT__X: http_port is not"):
        load_settings(env={"QUIVER__SERVICE__HTTP_PORT__X": "1"})


def test_secrets_from_env_are_verbatim() -> None:
    s = load_settings(env={
        "QUIVER__SERVICE__API_KEY": "0x1F",
        "QUIVER__SERVICE__READ_ONLY_API_KEY": "yes",
        "QUIVER__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__ACCESS_KEY": "007",
        "QUIVER__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__SECRET_KEY": "null",
        "QUIVER__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__REGION": "007",  # not a secret: YAML
        "QUIVER__SERVICE__ENABLE_TLS": "true",
    })
    s3 = s.storage.snapshots_config.s3_config
    assert (s.service.api_key, s.service.read_only_api_key) == ("0x1F", "yes")
    assert (s3.access_key, s3.secret_key) == ("007", "null")
    assert s3.region == "7" and s.service.enable_tls is True


def test_a_number_in_yaml_is_its_text_for_a_string_key(tmp_path: Path) -> None:
    s = load_settings(_yaml(tmp_path, "service:\n  api_key: 12345\n"), env={})
    assert s.service.api_key == "12345"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("var,value,message", [
    ("SERVICE__HTTP_PORT", "abc", "service.http_port: expected an integer, got 'abc'"),
    ("SERVICE__HTTP_PORT", "1.5", "service.http_port: expected an integer, got 1.5"),
    ("SERVICE__HTTP_PORT", "70000",
     "service.http_port: expected an integer from 0 to 65535, got 70000"),
    ("SERVICE__ENABLE_TLS", "maybe",
     "service.enable_tls: expected a boolean (true or false), got 'maybe'"),
    ("SERVICE__ACCESS_LOG", "null", "service.access_log: expected a boolean (true or false), "
                                    "got null"),
    ("SERVICE__MAX_REQUEST_SIZE_MB", "-1",
     "service.max_request_size_mb: expected a positive number, got -1"),
    ("SERVICE__MAX_REQUEST_SIZE_MB", "0",
     "service.max_request_size_mb: expected a positive number, got 0"),
    ("SERVICE__MAX_SNAPSHOT_UPLOAD_MB", "-0.5",
     "service.max_snapshot_upload_mb: expected a non-negative number, got -0.5"),
    ("SERVICE__MAX_SNAPSHOT_UPLOAD_MB", "true",
     "service.max_snapshot_upload_mb: expected a number, got true"),
    ("SERVICE__MAX_SNAPSHOT_UPLOAD_MB", ".inf",
     "service.max_snapshot_upload_mb: expected a number, got inf"),
    ("STORAGE__FLUSH__WAL_BYTES_MB", "-1",
     "storage.flush.wal_bytes_mb: expected a non-negative integer, got -1"),
    ("STORAGE__FLUSH__IDLE_SECONDS", "soon",
     "storage.flush.idle_seconds: expected a number, got 'soon'"),
    ("STORAGE__SNAPSHOT_URL_MAX_BYTES", "-1",
     "storage.snapshot_url_max_bytes: expected a non-negative integer, got -1"),
    ("STORAGE__SNAPSHOT_URL_IDLE_TIMEOUT_S", "0",
     "storage.snapshot_url_idle_timeout_s: expected a positive number, got 0"),
    ("STORAGE__SNAPSHOT_URL_ALLOWED_HOSTS", "localhost",
     "storage.snapshot_url_allowed_hosts: expected a list of strings, got 'localhost'"),
    ("STORAGE__STORAGE_PATH", "[a, b]",
     "storage.storage_path: expected a string, got ['a', 'b']"),
    ("STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE", "ftp",
     "storage.snapshots_config.snapshots_storage: expected one of local, s3, got 'ftp'"),
    ("STORAGE__WAL", "5", "storage.wal: expected a mapping, got 5"),
    ("GPU__ENABLED", "sometimes",
     "gpu.enabled: expected one of auto, true, false, got 'sometimes'"),
    ("GPU__DEVICE_ID", "-1", "gpu.device_id: expected a non-negative integer, got -1"),
    ("GPU__MEMORY_LIMIT", "0",
     "gpu.memory_limit: expected bytes (a number > 1) or a fraction in (0, 1], got 0"),
    ("GPU__MEMORY_LIMIT", "1",
     "gpu.memory_limit: expected bytes (a number > 1) or a fraction in (0, 1], got 1"),
])
def test_a_bad_value_names_its_key(var: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env={"QUIVER__" + var: value})
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)  # what `quiver serve` reports


def test_a_bad_value_in_the_file_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^service: expected a mapping, got 8080$"):
        load_settings(_yaml(tmp_path, "service: 8080\n"), env={})
    with pytest.raises(SettingsError, match="top level must be a mapping"):
        load_settings(_yaml(tmp_path, "- a\n"), env={})
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(_yaml(tmp_path, "service: [\n"), env={})


@pytest.mark.parametrize("value,expected", [
    ("auto", "auto"), ("AUTO", "auto"), ("true", True), ("'false'", False), ("off", False)])
def test_gpu_enabled_is_auto_true_or_false(value: str, expected: object) -> None:
    assert load_settings(env={"QUIVER__GPU__ENABLED": value}).gpu.enabled == expected


@pytest.mark.parametrize("value,expected", [("0.5", 0.5), ("1.0", 1.0), ("2", 2),
                                            ("1.0e+9", 1e9)])
def test_gpu_memory_limit_is_bytes_or_a_fraction(value: str, expected: float) -> None:
    assert load_settings(env={"QUIVER__GPU__MEMORY_LIMIT": value}).gpu.memory_limit == expected
    with pytest.raises(SettingsError, match="gpu.memory_limit"):
        load_settings(env={"QUIVER__GPU__MEMORY_LIMIT": "1e9"})  # a YAML string, no number


def test_snapshots_storage_is_case_blind() -> None:
    env = {"QUIVER__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE": "S3"}
    assert load_settings(env=env).storage.snapshots_config.snapshots_storage == "s3"


def test_unknown_keys_warn_and_are_ignored(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    path = _yaml(tmp_path, "cluster:\n  p2p:\n    port: 6335\nservice:\n  max_workers: 0\n"
                           "storage:\n  performance:\n    max_search_threads: 0\n")
    with caplog.at_level(logging.WARNING, logger="quiver.settings"):
        s = load_settings(path, env={"QUIVER__TELEMETRY_DISABLED": "true"})
    assert s == Settings()
    [record] = [r for r in caplog.records if r.name == "quiver.settings"]
    assert record.levelno == logging.WARNING
    for key in ("cluster.p2p", "service.max_workers", "storage.performance", "telemetry_disabled"):
        assert key in record.getMessage()
    assert "max_search_threads" not in record.getMessage()  # the unknown section is named once


def test_known_keys_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="quiver.settings"):
        load_settings(str(CONFIG), env={"QUIVER__SERVICE__HTTP_PORT": "7000"})
    assert not [r for r in caplog.records if r.name == "quiver.settings"]


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().service.http_port = 1  # type: ignore[misc]


# --------------------------------------------------------------------------- sizes in MiB


def test_mib_to_bytes_and_the_upload_cap() -> None:
    assert mib_to_bytes(None, "k") == 0 and mib_to_bytes(0, "k") == 0
    assert mib_to_bytes(1.5, "k") == 3 << 19 and mib_to_bytes(2, "k") == 2 << 20
    for bad in (-1, True, "1"):
        with pytest.raises(ValueError, match="k must be a non-negative number of MiB"):
            mib_to_bytes(bad, "k")
    assert max_snapshot_upload_bytes(load_settings(env={})) == 0
    env = {"QUIVER__SERVICE__MAX_SNAPSHOT_UPLOAD_MB": "null"}
    assert max_snapshot_upload_bytes(load_settings(env=env)) == 0  # null: no cap, as 0
    env = {"QUIVER__SERVICE__MAX_SNAPSHOT_UPLOAD_MB": "0.25"}
    assert max_snapshot_upload_bytes(load_settings(env=env)) == 1 << 18


# --------------------------------------------------------------------------- quiver serve


def _serve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QUIVER__")}
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--storage-path", str(tmp_path / "st"),
         *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_serve_exits_non_zero_naming_the_bad_key(tmp_path: Path) -> None:
    r = _serve(tmp_path, {"QUIVER__SERVICE__HTTP_PORT": "abc"})
    assert r.returncode == 2, r.stderr
    assert "quiver: cannot load configuration: service.http_port: expected an integer, " \
           "got 'abc'" in r.stderr
    assert not (tmp_path / "st").exists()  # refused before anything was opened
    r = _serve(tmp_path, {}, "--config-path", _yaml(tmp_path, "gpu:\n  enabled: sometimes\n"))
    assert r.returncode == 2
    assert "gpu.enabled: expected one of auto, true, false, got 'sometimes'" in r.stderr


def test_app_state_holds_the_typed_settings(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from api.app import create_app  # noqa: PLC0415

    settings = load_settings(env={"QUIVER__SERVICE__MAX_SNAPSHOT_UPLOAD_MB": "1"}, overrides={
        "storage": {"storage_path": str(tmp_path / "st"),
                    "snapshots_path": str(tmp_path / "snaps")}})
    with TestClient(create_app(settings)) as c:
        assert c.app.state.settings is settings  # type: ignore[attr-defined]
        assert c.app.state.max_snapshot_upload == 1 << 20  # type: ignore[attr-defined]
        assert c.get("/healthz").status_code == 200
