"""The Docker images and the compose file, checked without a Docker engine.

The Dockerfiles, .dockerignore and docker-compose.yml are parsed and held against the project
itself: pyproject's packages and extras, api.settings' keys, api.cli's parser. Then the real
server is started the way each image starts it (its ENTRYPOINT, its ENV) with only the volume
paths and the port redirected, and the image's HEALTHCHECK command is run against it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import posixpath
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from server import free_port

from api.cli import _parser
from api.settings import Settings, as_dict, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "gpu": DOCKER / "Dockerfile.gpu"}
COMPOSE = DOCKER / "docker-compose.yml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
ENV_PREFIX = "QUIVER__"



def _load_requirements_script() -> Any:
    spec = importlib.util.spec_from_file_location("docker_requirements",
                                                  DOCKER / "requirements.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


requirements = _load_requirements_script().requirements

# --------------------------------------------------------------------------- Dockerfile model


@dataclass
class Instruction:
    cmd: str  # upper-case keyword
    args: str  # the rest of the logical line
    stage: int  # 0-based index of the FROM it belongs to (-1: before the first FROM)
    workdir: str  # WORKDIR in force


def _split_flags(args: str) -> tuple[dict[str, str], str]:
    """Leading `--name=value` flags (COPY, HEALTHCHECK) and the remainder."""
    flags: dict[str, str] = {}
    rest = args.strip()
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        name, _, value = token[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    return flags, rest


def _argv(args: str) -> list[str]:
    """Exec (JSON) form as a list; shell form as `/bin/sh -c ...`, which Docker would run."""
    text = args.strip()
    if text.startswith("["):
        argv = json.loads(text)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), text
        return argv
    return ["/bin/sh", "-c", text]


@dataclass
class Dockerfile:
    path: Path
    instructions: list[Instruction] = field(default_factory=list)

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        """Docker's line rules: comment lines vanish (even inside a continuation), a trailing
        backslash joins the next line, the first word is the instruction."""
        logical: list[str] = []
        buf = ""
        for raw in path.read_text(encoding="utf-8").splitlines():
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.endswith("\\"):
                buf += raw.rstrip()[:-1]
                continue
            logical.append((buf + raw).strip())
            buf = ""
        assert not buf, f"{path}: dangling line continuation"
        out = cls(path)
        stage, workdir = -1, "/"
        for line in logical:
            cmd, _, args = line.partition(" ")
            cmd = cmd.upper()
            if cmd == "FROM":
                stage, workdir = stage + 1, "/"
            elif cmd == "WORKDIR":
                workdir = posixpath.join(workdir, args.strip())
            out.instructions.append(Instruction(cmd, args.strip(), stage, workdir))
        return out

    @property
    def final_stage(self) -> int:
        return max(i.stage for i in self.instructions)

    def final(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd and i.stage == self.final_stage]

    def last(self, cmd: str) -> Instruction:
        found = self.final(cmd)
        assert found, f"{self.path.name}: no {cmd} in the final stage"
        return found[-1]

    @property
    def env(self) -> dict[str, str]:
        """ENV of the final stage (`K=V ...` form, or the legacy `K V`)."""
        env: dict[str, str] = {}
        for ins in self.final("ENV"):
            tokens = shlex.split(ins.args)
            if "=" not in tokens[0]:
                env[tokens[0]] = ins.args.split(None, 1)[1]
                continue
            for token in tokens:
                key, sep, value = token.partition("=")
                assert sep, f"{self.path.name}: bad ENV token {token!r}"
                env[key] = value
        return env

    @property
    def quiver_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if k.startswith(ENV_PREFIX)}

    @property
    def command(self) -> list[str]:
        """What the container runs: ENTRYPOINT + CMD (both exec form)."""
        argv = _argv(self.last("ENTRYPOINT").args)
        cmds = self.final("CMD")
        return argv + (_argv(cmds[-1].args) if cmds else [])

    @property
    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        flags, rest = _split_flags(self.last("HEALTHCHECK").args)
        keyword, _, probe = rest.partition(" ")
        assert keyword.upper() == "CMD", rest
        return flags, _argv(probe)

    def context_copies(self) -> list[tuple[list[str], str, Instruction]]:
        """(sources, absolute destination, instruction) of every COPY/ADD from the context."""
        out = []
        for ins in self.instructions:
            if ins.cmd not in ("COPY", "ADD"):
                continue
            flags, rest = _split_flags(ins.args)
            if "from" in flags:
                continue
            parts = _argv(rest) if rest.startswith("[") else shlex.split(rest)
            *srcs, dest = parts
            out.append(([s.strip("/").removeprefix("./") for s in srcs],
                        posixpath.join(ins.workdir, dest), ins))
        return out

    def repo_path(self, container_path: str) -> Path:
        """The repository file that the final stage's COPYs place at `container_path`."""
        for srcs, dest, ins in reversed(self.context_copies()):
            if ins.stage != self.final_stage:
                continue
            for src in srcs:
                # a file copied to a directory keeps its name; a directory's contents land in dest
                target = posixpath.join(dest, posixpath.basename(src)) \
                    if dest.endswith("/") and (ROOT / src).is_file() else dest.rstrip("/")
                if container_path == target or container_path.startswith(target + "/"):
                    return ROOT / src / posixpath.relpath(container_path, target)
        raise AssertionError(f"{self.path.name}: nothing is copied to {container_path}")


# ids are file names: a bare "gpu" id would read as the gpu marker and be skipped without CUDA
@pytest.fixture(params=sorted(DOCKERFILES.values()), ids=lambda p: p.name, scope="module")
def image(request: pytest.FixtureRequest) -> Dockerfile:
    return Dockerfile.parse(request.param)


# --------------------------------------------------------------------------- shared checks


def _top_level_packages() -> set[str]:
    return {p.split(".")[0] for p in PYPROJECT["tool"]["setuptools"]["packages"]}


def _setting(settings: Settings, key: str) -> Any:
    node: Any = settings
    for part in key[len(ENV_PREFIX):].lower().split("__"):
        node = getattr(node, part)
    return node


def _assert_env_is_settings(env: dict[str, str], where: str) -> Settings:
    """Every QUIVER__ variable names a real settings key and lands there, typed as YAML."""
    for key in env:
        node: Any = as_dict(Settings())
        for part in key[len(ENV_PREFIX):].lower().split("__"):
            assert isinstance(node, dict) and part in node, \
                f"{where}: {key} is not a settings key ({part!r} unknown)"
            node = node[part]
        assert not isinstance(node, dict), f"{where}: {key} names a whole section"
    settings = load_settings(str(ROOT / "config" / "config.yaml"), env=env)
    for key, value in env.items():
        assert _setting(settings, key) == yaml.safe_load(value), f"{where}: {key}"
    return settings


# --------------------------------------------------------------------------- Dockerfiles


def _user(image: Dockerfile) -> tuple[str, str]:
    """(uid, name) of the final USER, which must be numeric (Kubernetes' runAsNonRoot can
    only verify a numeric uid) and created by a `useradd --uid` in the final stage."""
    uid = image.last("USER").args.split(":")[0]
    assert uid.isdigit(), f"{image.path.name}: USER {uid} is not numeric"
    for ins in image.final("RUN"):
        for step in ins.args.split("&&"):
            argv = shlex.split(step)
            if argv and argv[0] == "useradd" and argv[argv.index("--uid") + 1] == uid:
                return uid, argv[-1]
    raise AssertionError(f"{image.path.name}: no useradd --uid {uid} in the final stage")


def test_runs_as_a_non_root_user(image: Dockerfile) -> None:
    uid, _ = _user(image)
    assert int(uid) != 0
    # the USER is the last word: no RUN after it, nothing switches back to root
    after = image.instructions.index(image.last("USER"))
    assert not [i for i in image.instructions[after + 1:] if i.cmd in ("RUN", "USER")]


def test_volumes_hold_storage_and_snapshots(image: Dockerfile) -> None:
    volumes = _argv(image.last("VOLUME").args)
    env = image.quiver_env
    storage = env["QUIVER__STORAGE__STORAGE_PATH"]
    snaps = env["QUIVER__STORAGE__SNAPSHOTS_PATH"]
    assert sorted(volumes) == sorted([storage, snaps])
    assert all(v.startswith("/qdrant/") for v in volumes)
    # snapshot scratch space defaults to <snapshots_path>/.tmp: inside the volume
    assert "QUIVER__STORAGE__TEMP_PATH" not in env
    # the image user owns them (a named volume starts with the image's ownership)
    uid, name = _user(image)
    runs = " ".join(i.args for i in image.final("RUN"))
    assert re.search(rf"chown -R ({name}|{uid})(:\w+)? /qdrant\b", runs)


def test_exposes_the_qdrant_port(image: Dockerfile) -> None:
    assert {"6333", "6334"} <= set(image.last("EXPOSE").args.split())  # REST, gRPC
    assert Settings().service.http_port == 6333
    assert Settings().service.grpc_port == 6334
    assert "QUIVER__SERVICE__GRPC_PORT" not in image.quiver_env
    assert "QUIVER__SERVICE__HTTP_PORT" not in image.quiver_env


def test_healthcheck_probes_readyz(image: Dockerfile) -> None:
    flags, argv = image.healthcheck
    assert argv[:2] == ["python", "-c"], argv
    assert "/readyz" in argv[2] and "QUIVER__SERVICE__HTTP_PORT" in argv[2]
    assert {"interval", "timeout", "start-period", "retries"} <= set(flags)


def test_every_package_is_copied(image: Dockerfile) -> None:
    copied = {src for srcs, _, _ in image.context_copies() for src in srcs}
    needed = _top_level_packages() | {"pyproject.toml", PYPROJECT["project"]["readme"],
                                      "config", "docker/requirements.py"}
    assert needed <= copied, f"{image.path.name} does not copy {sorted(needed - copied)}"
    for src in copied:
        assert (ROOT / src).exists(), f"{image.path.name}: COPY {src}: not in the repository"


def test_entrypoint_is_quiver_serve_with_the_shipped_config(image: Dockerfile) -> None:
    argv = image.command
    assert PYPROJECT["project"]["scripts"][argv[0]] == "api.cli:main"
    args = _parser().parse_args(argv[1:])
    assert args.command == "serve"
    assert args.config_path and args.config_path.startswith("/")
    config = image.repo_path(args.config_path)
    assert config == ROOT / "config" / "config.yaml" and config.is_file()
    # the image's ENV wins over the file for the paths (env > YAML)
    settings = load_settings(str(config), env=image.quiver_env)
    assert settings.storage.storage_path == "/qdrant/storage"
    assert settings.storage.snapshots_path == "/qdrant/snapshots"


def test_env_names_real_settings(image: Dockerfile) -> None:
    settings = _assert_env_is_settings(image.quiver_env, image.path.name)
    expected_gpu = {"cpu": False, "gpu": "auto"}[
        "gpu" if image.path.name.endswith(".gpu") else "cpu"]
    assert settings.gpu.enabled == expected_gpu


def test_installed_extras(image: Dockerfile) -> None:
    arg = next(i.args for i in image.final("ARG") if i.args.startswith("EXTRAS="))
    reqs = [r.split(">")[0].split("[")[0] for r in
            requirements(ROOT / "pyproject.toml", arg.partition("=")[2])]
    assert "boto3" in reqs  # snapshots_storage: s3 works out of the box
    if image.path.name.endswith(".gpu"):
        assert {"cupy-cuda12x", "faiss-gpu-cu12"} <= set(reqs)
        assert "faiss-cpu" not in reqs  # both install the `faiss` module
    else:
        assert "faiss-cpu" in reqs and not any(r.startswith("cupy") for r in reqs)


def test_requirements_script() -> None:
    pyproject = ROOT / "pyproject.toml"
    base = PYPROJECT["project"]["dependencies"]
    assert requirements(pyproject, "") == base
    assert requirements(pyproject, "s3") == base + PYPROJECT["project"]["optional-dependencies"]["s3"]
    with pytest.raises(ValueError, match="unknown extras"):
        requirements(pyproject, "nonsense")
    out = subprocess.run([sys.executable, str(DOCKER / "requirements.py"), str(pyproject),
                          "gpu,s3"], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == requirements(pyproject, "gpu,s3")


def test_gpu_image_base_is_cuda_12_runtime() -> None:
    gpu = Dockerfile.parse(DOCKERFILES["gpu"])
    arg = next(i.args for i in gpu.instructions if i.args.startswith("CUDA_IMAGE="))
    assert re.fullmatch(r"CUDA_IMAGE=nvidia/cuda:12\.\d+\.\d+-runtime-ubuntu\d\d\.04", arg)
    assert gpu.last("FROM").args == "${CUDA_IMAGE}"


# --------------------------------------------------------------------------- .dockerignore


def _dockerignore_excludes() -> Any:
    """Docker's .dockerignore rules: patterns in order, the last match wins, `!` re-includes,
    a pattern matching a directory covers everything below it."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex + r"\Z")))

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for negate, rx in rules:
            if any(rx.match(p) for p in prefixes):
                result = not negate
        return result

    return excluded


def test_dockerignore_keeps_what_copy_needs() -> None:
    excluded = _dockerignore_excludes()
    sources = {src for path in DOCKERFILES.values()
               for srcs, _, _ in Dockerfile.parse(path).context_copies() for src in srcs}
    for src in sources:
        path = ROOT / src
        files = [path] if path.is_file() else \
            [f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
        assert files, src
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if rel.startswith("snapshots/") and not rel.endswith(".py"):
                continue  # ./snapshots doubles as the default snapshots_path: data, not code
            if rel.endswith(".so"):
                continue  # this checkout's build of engine/_hnsw_walk.c: the image builds its own
            assert not excluded(rel), f".dockerignore drops {rel}, which COPY {src} needs"
    for junk in (".venv/bin/python", "storage/node_id", "snapshots/c/c-1.snapshot",
                 "api/__pycache__/app.cpython-311.pyc", "tests/e2e/test_docker.py", ".git/HEAD",
                 "engine/_hnsw_walk.cpython-311-x86_64-linux-gnu.so"):
        assert excluded(junk), f".dockerignore lets {junk} into the build context"


# --------------------------------------------------------------------------- compose


def _interpolate(value: Any, environ: dict[str, str]) -> Any:
    """Compose's variable syntax: ${VAR}, ${VAR:-default}, ${VAR-default}; $$ is a literal $."""
    if isinstance(value, dict):
        return {k: _interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, default = m.group(1), m.group(2), m.group(3) or ""
        if op == ":-":
            return environ.get(name) or default
        if op == "-":
            return environ.get(name, default)
        return environ.get(name, "")

    return re.sub(r"\$\$|\$\{(\w+)(?:(:?-)([^}]*))?\}", sub, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _interpolate(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")), {})


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    for k, v in env.items():
        assert isinstance(v, str), f"compose env {k} must be a string (quote it): {v!r}"
    return env


def _volumes(service: dict[str, Any]) -> dict[str, str]:
    """Mount target → named volume."""
    return {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}


def test_compose_gpu_service(compose: dict[str, Any]) -> None:
    svc = compose["services"]["quiver"]
    assert (COMPOSE.parent / svc["build"]["context"]).resolve() == ROOT
    assert svc["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert any(p.endswith(":6333") for p in svc["ports"])
    assert any(p.endswith(":6334") for p in svc["ports"])  # gRPC
    image = Dockerfile.parse(DOCKERFILES["gpu"])
    volumes = _volumes(svc)
    assert sorted(volumes) == sorted(_argv(image.last("VOLUME").args))
    assert set(volumes.values()) <= set(compose["volumes"])
    assert svc["depends_on"]["minio"]["condition"] == "service_healthy"
    assert svc["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_compose_cpu_profile(compose: dict[str, Any]) -> None:
    cpu, gpu = compose["services"]["quiver-cpu"], compose["services"]["quiver"]
    assert cpu["profiles"] == ["cpu"] and "profiles" not in gpu
    assert cpu["build"]["dockerfile"] == "docker/Dockerfile"
    assert "deploy" not in cpu
    host_port = {s: svc["ports"][0].rsplit(":", 1)[0] for s, svc in
                 (("cpu", cpu), ("gpu", gpu))}
    assert host_port["cpu"] != host_port["gpu"]  # both can run side by side
    grpc_host = {s: [p.rsplit(":", 1)[0] for p in svc["ports"] if p.endswith(":6334")]
                 for s, svc in (("cpu", cpu), ("gpu", gpu))}
    assert len(grpc_host["cpu"]) == 1 and grpc_host["cpu"] != grpc_host["gpu"]
    assert not set(_volumes(cpu).values()) & set(_volumes(gpu).values())  # never share storage


@pytest.mark.parametrize("name", ["quiver", "quiver-cpu"])
def test_compose_env_configures_s3_snapshots(compose: dict[str, Any], name: str) -> None:
    services = compose["services"]
    env = _env(services[name])
    settings = _assert_env_is_settings(env, f"compose {name}")
    s3 = as_dict(settings.storage.snapshots_config.s3_config)
    assert settings.storage.snapshots_config.snapshots_storage == "s3"
    assert all(isinstance(s3[k], str) and s3[k] for k in
               ("bucket", "region", "access_key", "secret_key", "endpoint_url"))
    # the store: the minio service, its API port, its root credentials
    minio = services["minio"]
    assert minio["image"].startswith("minio/minio")
    assert minio["command"].split()[:2] == ["server", "/data"]
    assert "healthcheck" in minio
    url = urlsplit(s3["endpoint_url"])
    assert (url.hostname, url.port) == ("minio", 9000)
    assert s3["access_key"] == _env(minio)["MINIO_ROOT_USER"]
    assert s3["secret_key"] == _env(minio)["MINIO_ROOT_PASSWORD"]
    # the one-shot init creates this bucket
    init = services["minio-init"]
    assert init["image"].startswith("minio/mc")
    assert s3["bucket"] in _env(init)["BUCKETS"].split()
    script = " ".join(init["command"])
    assert "mc mb" in script and "http://minio:9000" in script
    assert services[name]["depends_on"]["minio-init"]["condition"] == \
        "service_completed_successfully"


def test_compose_volumes_are_declared(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for target, volume in _volumes(svc).items() if "volumes" in svc else ():
            assert volume in compose["volumes"], f"{name}: {volume} → {target} not declared"


# --------------------------------------------------------------------------- the real server


def _quiver_command() -> list[str]:
    script = Path(sys.executable).with_name("quiver")
    return [str(script)] if script.exists() else [sys.executable, "-m", "api.cli"]


@dataclass
class Running:
    url: str
    env: dict[str, str]
    storage: Path
    snapshots: Path
    workdir: Path
    proc: subprocess.Popen[bytes]


@contextmanager
def _serve_like(image: Dockerfile, tmp_path: Path, extra_env: dict[str, str] | None = None,
                ) -> Iterator[Running]:
    """Start `quiver serve` with the image's ENTRYPOINT and ENV; only the volume paths, the
    port (through its env var, which the HEALTHCHECK reads too) and the host are redirected."""
    port = free_port()
    storage, snapshots, workdir = tmp_path / "storage", tmp_path / "snapshots", tmp_path / "app"
    workdir.mkdir()
    image_env = {k: v for k, v in image.env.items() if k.startswith(("QUIVER", "PYTHON"))}
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(image_env)
    env.update(extra_env or {})
    env.update({"QUIVER__STORAGE__STORAGE_PATH": str(storage),
                "QUIVER__STORAGE__SNAPSHOTS_PATH": str(snapshots),
                "QUIVER__SERVICE__HTTP_PORT": str(port),
                "QUIVER__SERVICE__HOST": "127.0.0.1",
                "PYTHONPATH": str(ROOT)})
    argv = image.command
    args = _parser().parse_args(argv[1:])
    argv = [str(image.repo_path(a)) if a == args.config_path else a for a in argv[1:]]
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(_quiver_command() + argv, cwd=workdir, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"server exited: {log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready: {log_path.read_text()[-3000:]}"
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield Running(url, env, storage, snapshots, workdir, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _healthcheck(image: Dockerfile, env: dict[str, str]) -> int:
    _, argv = image.healthcheck
    argv = [sys.executable if a == "python" else a for a in argv]
    return subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode


def _write_and_snapshot(url: str, name: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.put(f"/collections/{name}", json={"vectors": {"size": 4, "distance": "Cosine"}})
        assert r.status_code == 200, r.text
        r = http.put(f"/collections/{name}/points?wait=true", json={"points": [
            {"id": i, "vector": [1.0, i, 0.5, -1.0], "payload": {"i": i}} for i in range(20)]})
        assert r.status_code == 200, r.text
        r = http.post(f"/collections/{name}/points/query", json={"query": [1, 2, 0.5, -1],
                                                                 "limit": 3})
        assert r.status_code == 200 and len(r.json()["result"]["points"]) == 3, r.text
        r = http.post(f"/collections/{name}/snapshots?wait=true")
        assert r.status_code == 200, r.text
        return r.json()["result"]


def test_image_starts_serves_and_passes_its_healthcheck(image: Dockerfile,
                                                         tmp_path: Path) -> None:
    with _serve_like(image, tmp_path) as srv:
        assert httpx.get(srv.url + "/readyz").status_code == 200
        assert _healthcheck(image, srv.env) == 0
        snap = _write_and_snapshot(srv.url, "docker")
        assert (srv.snapshots / "docker" / snap["name"]).is_file()
        assert (srv.storage / "collections" / "docker").is_dir()
        # everything is written to the volumes: /app is root-owned in the image
        assert list(srv.workdir.iterdir()) == []
        # `docker stop`: a graceful shutdown (uvicorn re-raises the signal once drained)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) in (0, -signal.SIGTERM)
        assert _healthcheck(image, srv.env) != 0  # and the probe notices a dead server


def test_compose_s3_settings_reach_the_bucket(compose: dict[str, Any], tmp_path: Path) -> None:
    """The quiver service's env (S3 endpoint redirected to a local moto server) puts
    snapshots in the bucket that minio-init creates."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto")
    env = _env(compose["services"]["quiver"])
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(tmp_path / "moto.log", "wb") as log:
        moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert moto.poll() is None and time.monotonic() < deadline, "moto did not start"
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        key = "QUIVER__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=env[key + "REGION"],
                          aws_access_key_id=env[key + "ACCESS_KEY"],
                          aws_secret_access_key=env[key + "SECRET_KEY"])
        s3.create_bucket(Bucket=env[key + "BUCKET"])  # what minio-init does
        image = Dockerfile.parse(DOCKERFILES["gpu"])
        with _serve_like(image, tmp_path, {**env, key + "ENDPOINT_URL": endpoint}) as srv:
            snap = _write_and_snapshot(srv.url, "docker_s3")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=env[key + "BUCKET"])["Contents"]]
        assert f"docker_s3/{snap['name']}" in keys
    finally:
        moto.terminate()
        moto.wait(10)
