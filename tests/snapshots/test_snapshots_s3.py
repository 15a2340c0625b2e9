"""The S3 snapshot backend against a real S3-compatible HTTP server (moto, on loopback)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
from moto_s3 import MotoS3, moto_s3, s3_env
from qdrant_client import QdrantClient, models
from server import QuiverServer

BUCKET = "quiver-snapshots"


@pytest.fixture(scope="module")
def s3_url(tmp_path_factory: pytest.TempPathFactory):
    with moto_s3(tmp_path_factory.mktemp("moto")) as s3:
        yield s3.url


def _s3(url: str):
    return MotoS3(url, None).client()  # type: ignore[arg-type]


@pytest.fixture
def srv(tmp_path: Path, s3_url: str):
    _s3(s3_url).create_bucket(Bucket=BUCKET)
    env = {"QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps"), **s3_env(s3_url, BUCKET)}
    s = QuiverServer(tmp_path / "storage", env=env).start()
    yield s
    s.stop()
    bucket = boto3.resource("s3", endpoint_url=s3_url, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test").Bucket(BUCKET)
    bucket.objects.all().delete()
    bucket.delete()


def _keys(s3_url: str) -> list[str]:
    return sorted(o["Key"] for o in _s3(s3_url).list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_s3_collection_and_full_snapshots(srv: QuiverServer, s3_url: str) -> None:
    client = QdrantClient(url=srv.url, timeout=60)
    client.create_collection("docs", vectors_config=models.VectorParams(size=8, distance="Dot"))
    rng = np.random.default_rng(3)
    client.upsert("docs", [models.PointStruct(id=i, vector=rng.random(8).tolist(),
                                              payload={"i": i}) for i in range(500)])
    q = rng.random(8).tolist()
    before = [(p.id, p.score) for p in client.query_points("docs", query=q, limit=5).points]

    snap = client.create_snapshot("docs")
    assert _keys(s3_url) == [f"docs/{snap.name}"]
    listed = client.list_snapshots("docs")
    assert [(s.name, s.size, s.checksum) for s in listed] == [(snap.name, snap.size, snap.checksum)]
    r = httpx.get(f"{srv.url}/collections/docs/snapshots/{snap.name}")
    assert r.status_code == 200 and int(r.headers["content-length"]) == snap.size
    assert hashlib.sha256(r.content).hexdigest() == snap.checksum

    # recover through the server's own download endpoint (streams from S3)
    client.recover_snapshot("copy", f"{srv.url}/collections/docs/snapshots/{snap.name}",
                            checksum=snap.checksum)
    assert [(p.id, p.score) for p in client.query_points("copy", query=q, limit=5).points] \
        == before
    # an upload is recovered and kept in the bucket
    r = httpx.post(f"{srv.url}/collections/up/snapshots/upload",
                   files={"snapshot": ("up.snapshot", r.content)}, timeout=60)
    assert r.status_code == 200, r.text
    assert "up/up.snapshot" in _keys(s3_url)
    assert client.count("up").count == 500

    full = client.create_full_snapshot()
    assert full.name in _keys(s3_url)
    assert [s.name for s in client.list_full_snapshots()] == [full.name]
    data = httpx.get(f"{srv.url}/snapshots/{full.name}").content
    assert hashlib.sha256(data).hexdigest() == full.checksum

    assert client.delete_snapshot("docs", snap.name)
    assert client.delete_full_snapshot(full.name)
    assert _keys(s3_url) == ["up/up.snapshot"]
    r = httpx.get(f"{srv.url}/collections/docs/snapshots/{snap.name}")
    assert r.status_code == 404
