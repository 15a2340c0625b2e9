"""Where finished snapshot archives live: local disk or S3-compatible object storage.

Archives are always written to a local temp file first (hashing as they go); `publish` then
renames it into place (local) or uploads it with a multipart upload of bounded memory (S3).
Keys are `<folder>/<name>`, the folder being the collection name, or empty for full-storage
snapshots.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from engine.durable import atomic_writer, fsync_dir
from engine.errors import BadRequest, NotFound

SUFFIX = ".snapshot"
CHUNK = 8 << 20


@dataclass
class SnapshotInfo:
    name: str
    creation_time: str | None
    size: int
    checksum: str | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "creation_time": self.creation_time,
                               "size": self.size}
        if self.checksum:
            out["checksum"] = self.checksum
        return out


def snapshot_not_found(name: str) -> NotFound:
    return NotFound(f"Snapshot {name} not found")


def check_snapshot_name(name: str) -> str:
    """A plain file name, else 404 (as Qdrant)."""
    if (not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name
            or "\0" in name or os.path.basename(name) != name):
        raise snapshot_not_found(name)
    return name


@dataclass
class Download:
    """Either a local file to send, or a stream of chunks with a known size."""

    path: str | None = None
    chunks: Iterator[bytes] | None = None
    size: int = 0
    name: str = ""


class SnapshotStorage(Protocol):
    def exists(self, folder: str, name: str) -> bool: ...
    def publish(self, tmp: str, folder: str, name: str, checksum: str) -> SnapshotInfo: ...
    def list(self, folder: str) -> list[SnapshotInfo]: ...
    def download(self, folder: str, name: str) -> Download: ...
    def fetch(self, folder: str, name: str, dest: str) -> str: ...
    def delete(self, folder: str, name: str) -> bool: ...


class LocalStorage:
    """<root>/<folder>/<name>.snapshot with a `.checksum` sidecar."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def _dir(self, folder: str) -> str:
        return os.path.join(self.root, folder) if folder else self.root

    def exists(self, folder: str, name: str) -> bool:
        return os.path.exists(os.path.join(self._dir(folder), name))

    def publish(self, tmp: str, folder: str, name: str, checksum: str) -> SnapshotInfo:
        directory = self._dir(folder)
        os.makedirs(directory, exist_ok=True)
        final = os.path.join(directory, name)
        # sidecar first: an archive is never listed without its checksum; a sidecar whose
        # archive never arrived (crash or full disk in between) is removed by `clean`
        with atomic_writer(final + ".checksum") as f:
            f.write(checksum.encode())
        os.replace(tmp, final)
        fsync_dir(directory)
        return self._describe(directory, name)

    def clean(self) -> None:
        """At start-up: remove orphan `.checksum` sidecars and interrupted atomic writes
        (`.tmp-*`) in the snapshot folders; never anything else."""
        if not os.path.isdir(self.root):
            return
        folders = [self.root] + [e.path for e in os.scandir(self.root)
                                 if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
        for folder in folders:
            for e in os.scandir(folder):
                if not e.is_file(follow_symlinks=False):
                    continue
                orphan = (e.name.endswith(SUFFIX + ".checksum")
                          and not os.path.exists(e.path[: -len(".checksum")]))
                if orphan or (e.name.startswith(".tmp-") and SUFFIX in e.name):
                    try:
                        os.unlink(e.path)
                    except OSError:
                        pass

    def _describe(self, directory: str, name: str) -> SnapshotInfo:
        path = os.path.join(directory, name)
        st = os.stat(path)
        try:
            with open(path + ".checksum") as f:
                checksum: str | None = f.read()
        except OSError:
            checksum = None
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(st.st_mtime))
        return SnapshotInfo(name, created, st.st_size, checksum)

    def list(self, folder: str) -> list[SnapshotInfo]:
        directory = self._dir(folder)
        if not os.path.isdir(directory):
            return []
        return [self._describe(directory, e.name)
                for e in sorted(os.scandir(directory), key=lambda e: e.name)
                if e.name.endswith(SUFFIX) and not e.name.startswith(".")
                and e.is_file(follow_symlinks=False)]

    def path(self, folder: str, name: str) -> str:
        """The archive's path, confined to its folder (symlinks out of it are 404)."""
        check_snapshot_name(name)
        directory = os.path.realpath(self._dir(folder))
        path = os.path.realpath(os.path.join(directory, name))
        if os.path.dirname(path) != directory or not os.path.isfile(path):
            raise snapshot_not_found(name)
        return path

    def download(self, folder: str, name: str) -> Download:
        path = self.path(folder, name)
        return Download(path=path, size=os.path.getsize(path), name=name)

    def fetch(self, folder: str, name: str, dest: str) -> str:
        return self.path(folder, name)  # used in place, never copied

    def delete(self, folder: str, name: str) -> bool:
        path = self.path(folder, name)
        os.unlink(path)
        try:
            os.unlink(path + ".checksum")
        except OSError:
            pass
        fsync_dir(os.path.dirname(path))
        return True


class S3Storage:
    """An S3-compatible bucket; the sha256 rides along as object metadata."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        try:
            import boto3  # noqa: PLC0415 - optional dependency (pip install quiver[s3])
            from boto3.s3.transfer import TransferConfig  # noqa: PLC0415
            from botocore.config import Config  # noqa: PLC0415
        except ImportError as exc:
            raise BadRequest("snapshots_storage: s3 needs boto3 (pip install 'quiver[s3]')") \
                from exc
        if not cfg.get("bucket"):
            raise BadRequest("storage.snapshots_config.s3_config.bucket is required")
        self.bucket = cfg["bucket"]
        self.client = boto3.client(
            "s3", region_name=cfg.get("region") or "us-east-1",
            aws_access_key_id=cfg.get("access_key"), aws_secret_access_key=cfg.get("secret_key"),
            endpoint_url=cfg.get("endpoint_url") or None,
            config=Config(retries={"max_attempts": 3}))
        # multipart upload in 16 MiB parts, 4 at a time: memory stays bounded for any size
        self.transfer = TransferConfig(multipart_threshold=16 << 20,
                                       multipart_chunksize=16 << 20, max_concurrency=4)
        self._missing = tuple(getattr(self.client.exceptions, n)
                              for n in ("NoSuchKey",) if hasattr(self.client.exceptions, n))

    @staticmethod
    def _key(folder: str, name: str) -> str:
        return f"{folder}/{name}" if folder else name

    def _head(self, folder: str, name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError  # noqa: PLC0415
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(folder, name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def exists(self, folder: str, name: str) -> bool:
        return self._head(folder, name) is not None

    def _info(self, name: str, head: dict[str, Any]) -> SnapshotInfo:
        modified = head.get("LastModified")
        created = modified.strftime("%Y-%m-%dT%H:%M:%S") if modified else None
        return SnapshotInfo(name, created, int(head.get("ContentLength", 0)),
                            (head.get("Metadata") or {}).get("sha256"))

    def publish(self, tmp: str, folder: str, name: str, checksum: str) -> SnapshotInfo:
        self.client.upload_file(tmp, self.bucket, self._key(folder, name),
                                ExtraArgs={"Metadata": {"sha256": checksum}},
                                Config=self.transfer)
        os.unlink(tmp)
        head = self._head(folder, name)
        assert head is not None
        return self._info(name, head)

    def list(self, folder: str) -> list[SnapshotInfo]:
        prefix = f"{folder}/" if folder else ""
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix):]
                if name.endswith(SUFFIX) and "/" not in name and not name.startswith("."):
                    head = self._head(folder, name)
                    if head is not None:
                        out.append(self._info(name, head))
        return sorted(out, key=lambda s: s.name)

    def download(self, folder: str, name: str) -> Download:
        check_snapshot_name(name)
        if self._head(folder, name) is None:
            raise snapshot_not_found(name)
        obj = self.client.get_object(Bucket=self.bucket, Key=self._key(folder, name))
        return Download(chunks=obj["Body"].iter_chunks(CHUNK), size=int(obj["ContentLength"]),
                        name=name)

    def fetch(self, folder: str, name: str, dest: str) -> str:
        check_snapshot_name(name)
        if self._head(folder, name) is None:
            raise snapshot_not_found(name)
        self.client.download_file(self.bucket, self._key(folder, name), dest,
                                  Config=self.transfer)
        return dest

    def delete(self, folder: str, name: str) -> bool:
        check_snapshot_name(name)
        if self._head(folder, name) is None:
            raise snapshot_not_found(name)
        self.client.delete_object(Bucket=self.bucket, Key=self._key(folder, name))
        return True


def make_storage(root: str, snapshots_config: dict[str, Any] | None) -> SnapshotStorage:
    cfg = snapshots_config or {}
    kind = (cfg.get("snapshots_storage") or "local").lower()
    if kind == "local":
        return LocalStorage(root)
    if kind == "s3":
        return S3Storage(cfg.get("s3_config") or {})
    raise BadRequest(f"unknown storage.snapshots_config.snapshots_storage {kind!r}")
