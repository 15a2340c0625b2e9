"""A moto S3 server on loopback, and the settings that point Quiver's snapshot storage at it
(shared by the S3 snapshot, Range and schedule tests)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
from server import free_port

REGION = "us-east-1"
KEY = "test"


@dataclass
class MotoS3:
    url: str
    proc: subprocess.Popen[bytes]

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=KEY, aws_secret_access_key=KEY)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@contextmanager
def moto_s3(log_dir: Path, bucket: str | None = None) -> Iterator[MotoS3]:
    """Start moto's server (and create `bucket`); stopped on exit."""
    port = free_port()
    with open(log_dir / "moto.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=log, stderr=subprocess.STDOUT)
    s3 = MotoS3(f"http://127.0.0.1:{port}", proc)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "moto did not start"
            try:
                httpx.get(s3.url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        if bucket is not None:
            s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        s3.stop()


def s3_settings(url: str, bucket: str) -> dict[str, Any]:
    """`storage.snapshots_config` for the moto server, as a YAML/dict section."""
    return {"snapshots_storage": "s3", "s3_config": {
        "bucket": bucket, "region": REGION, "access_key": KEY, "secret_key": KEY,
        "endpoint_url": url}}


def s3_env(url: str, bucket: str) -> dict[str, str]:
    """The same as QUIVER__ environment variables."""
    prefix = "QUIVER__STORAGE__SNAPSHOTS_CONFIG__"
    cfg = s3_settings(url, bucket)
    env = {prefix + "SNAPSHOTS_STORAGE": cfg["snapshots_storage"]}
    for k, v in cfg["s3_config"].items():
        env[f"{prefix}S3_CONFIG__{k.upper()}"] = v
    return env
