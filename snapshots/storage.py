"""Where finished snapshot archives live: local disk or S3-compatible object storage.

Archives are always written to a local temp file first (hashing as they go); `publish` then
renames it into place (local) or uploads it with a multipart upload of bounded memory (S3).
Keys are `<folder>/<name>`, the folder being the collection name, or empty for full-storage
snapshots.

Downloads are resumable on both backends: a local file is served by Starlette's FileResponse
(Range, 206, 416, If-Range); an object is read with a ranged GetObject (`Download.read`), the
single range picked by `requested_range` with the same rules.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any, Protocol

from engine import tasks
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
    """Either a local file to send, or a reader of byte ranges `[start, end)` of an object of
    known size, with the validators a client resumes with (If-Range)."""

    path: str | None = None
    size: int = 0
    name: str = ""
    read: Callable[[int, int], BodyChunks] | None = None
    etag: str | None = None
    last_modified: str | None = None  # an HTTP-date

    @property
    def chunks(self) -> BodyChunks | None:
        """The whole object."""
        return None if self.read is None else self.read(0, self.size)

    def headers(self, span: tuple[int, int] | None) -> dict[str, str]:
        """Response headers for the whole object (span None) or the range `[start, end)`."""
        start, end = span or (0, self.size)
        out = {"content-length": str(end - start), "accept-ranges": "bytes",
               "content-disposition": f'attachment; filename="{self.name}"'}
        if span is not None:
            out["content-range"] = f"bytes {start}-{end - 1}/{self.size}"
        if self.etag:
            out["etag"] = self.etag
        if self.last_modified:
            out["last-modified"] = self.last_modified
        return out


class RangeNotSatisfiable(Exception):
    """416: the range starts at or past the end (the answer carries `bytes */size`)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable (size {size})")
        self.size = size


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range `[start, end)` of a `Range: bytes=a-b | a- | -n` header (RFC 9110
    14.1.2), clamped to the object. None: send it whole — no header, or one a server may
    ignore (malformed, another unit, several ranges, last < first)."""
    if not header:
        return None
    m = _RANGE.fullmatch(header)
    if m is None or not (m[1] or m[2]):
        return None
    if m[1]:
        start = int(m[1])
        if m[2] and int(m[2]) < start:
            return None
        end = min(int(m[2]) + 1, size) if m[2] else size
    else:  # a suffix: the last n bytes
        if int(m[2]) == 0:
            raise RangeNotSatisfiable(size)
        start, end = max(size - int(m[2]), 0), size
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, end


def requested_range(dl: Download, header: str | None,
                    if_range: str | None) -> tuple[int, int] | None:
    """The range to send: the header's, unless an If-Range names another version of the
    object (a weak or different ETag, another Last-Modified), in which case the whole."""
    if if_range is not None:
        v = if_range.strip()
        if v.startswith("W/") or v not in (dl.etag, dl.last_modified):
            return None
    return parse_range(header, dl.size)


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
        # a task (engine.tasks): boto3 reports each part sent; a cancelled task's next
        # report raises, and the multipart upload is aborted
        with tasks.registry.run("s3_upload", folder or None, total=os.path.getsize(tmp),
                                cancellable=True) as task:
            self.client.upload_file(tmp, self.bucket, self._key(folder, name),
                                    ExtraArgs={"Metadata": {"sha256": checksum}},
                                    Config=self.transfer, Callback=task.advance)
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
        """The object's size and validators now; its bytes through `read(start, end)`, a
        ranged GetObject pinned to this version (IfMatch on the ETag)."""
        check_snapshot_name(name)
        head = self._head(folder, name)
        if head is None:
            raise snapshot_not_found(name)
        key, etag = self._key(folder, name), head.get("ETag")
        modified = head.get("LastModified")

        def read(start: int, end: int) -> BodyChunks:
            if end <= start:
                return BodyChunks(None)
            from botocore.exceptions import ClientError  # noqa: PLC0415
            extra = {"IfMatch": etag} if etag else {}
            try:
                obj = self.client.get_object(Bucket=self.bucket, Key=key,
                                             Range=f"bytes={start}-{end - 1}", **extra)
            except ClientError as exc:  # deleted or replaced since the HEAD
                if exc.response.get("Error", {}).get("Code") in (
                        "404", "NoSuchKey", "NotFound", "412", "PreconditionFailed"):
                    raise snapshot_not_found(name) from exc
                raise
            return BodyChunks(obj["Body"])

        return Download(size=int(head.get("ContentLength", 0)), name=name, read=read, etag=etag,
                        last_modified=formatdate(modified.timestamp(), usegmt=True)
                        if modified else None)

    def fetch(self, folder: str, name: str, dest: str) -> str:
        check_snapshot_name(name)
        head = self._head(folder, name)
        if head is None:
            raise snapshot_not_found(name)
        with tasks.registry.run("s3_download", folder or None,
                                total=int(head.get("ContentLength", 0)) or None,
                                cancellable=True) as task:
            self.client.download_file(self.bucket, self._key(folder, name), dest,
                                      Config=self.transfer, Callback=task.advance)
        return dest

    def delete(self, folder: str, name: str) -> bool:
        check_snapshot_name(name)
        if self._head(folder, name) is None:
            raise snapshot_not_found(name)
        self.client.delete_object(Bucket=self.bucket, Key=self._key(folder, name))
        return True


class BodyChunks:
    """An S3 body's chunks, as an iterator whose `close()` always closes the body: called
    before the first chunk (a client that hung up at once), half-way or twice, it hands the
    connection back at once rather than at garbage collection (a generator's close() skips
    its `finally` when it never started). Reading to the end or failing closes it too; the
    download route closes it on every path (api.routes.snapshots)."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self._chunks: Iterator[bytes] | None = None if body is None else body.iter_chunks(CHUNK)

    def __iter__(self) -> BodyChunks:
        return self

    def __next__(self) -> bytes:
        if self._chunks is None:
            raise StopIteration
        try:
            return next(self._chunks)
        except BaseException:  # the end, or a failed read: nothing more will be read
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._body is None

    def close(self) -> None:
        body, self._body, self._chunks = self._body, None, None
        if body is not None:
            body.close()


def make_storage(root: str, snapshots_config: dict[str, Any] | None) -> SnapshotStorage:
    cfg = snapshots_config or {}
    kind = (cfg.get("snapshots_storage") or "local").lower()
    if kind == "local":
        return LocalStorage(root)
    if kind == "s3":
        return S3Storage(cfg.get("s3_config") or {})
    raise BadRequest(f"unknown storage.snapshots_config.snapshots_storage {kind!r}")
