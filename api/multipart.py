"""Streaming multipart upload: the file part goes straight to a file we name, chunk by chunk,
hashed as it arrives. Nothing is spooled to the system temp dir or held in memory.

A body over `max_bytes` stops the upload (413); a full disk stops it too (507). Either way,
and on any other failure, the partial file is removed before the error is raised."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from api.errors import PayloadTooLarge
from engine.durable import io_error
from engine.errors import BadRequest, EngineError


@dataclass
class UploadedFile:
    path: str
    filename: str
    size: int
    sha256: str


@dataclass
class _State:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytes = b""
    header_value: bytes = b""
    name: bytes | None = None
    filename: str = ""
    file: Any = None
    hasher: Any = None
    size: int = 0
    found: UploadedFile | None = None
    files_seen: int = 0


async def receive_file(request: Request, field_name: str, dest: str,
                       max_bytes: int | None = None,
                       limit_name: str = "service.max_snapshot_upload_mb") -> UploadedFile:
    """Stream the multipart field `field_name` into `dest` (fsynced). Other fields are ignored;
    a second file part, or no such field, is a 400. More than `max_bytes` of request body is
    a 413 (reading stops there); running out of disk space is a 507. On any failure `dest` is
    removed."""
    ctype, opts = parse_options_header(request.headers.get("content-type", ""))
    boundary = opts.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise BadRequest("expected a multipart/form-data body with a boundary")
    st = _State()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        st.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        st.header_value += data[start:end]

    def on_header_end() -> None:
        st.headers[st.header_field.lower()] = st.header_value
        st.header_field, st.header_value = b"", b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(st.headers.get(b"content-disposition", b""))
        st.name = disp.get(b"name")
        if st.name == field_name.encode() and b"filename" in disp:
            st.files_seen += 1
            if st.files_seen > 1:
                raise BadRequest(f"more than one `{field_name}` file in the upload")
            st.filename = disp[b"filename"].decode("utf-8", "replace")
            st.file = open(dest, "wb")  # noqa: SIM115 - closed in on_part_end / finally
            st.hasher = hashlib.sha256()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if st.file is not None:
            chunk = data[start:end]
            st.file.write(chunk)
            st.hasher.update(chunk)
            st.size += len(chunk)

    def on_part_end() -> None:
        if st.file is not None:
            st.file.flush()
            os.fsync(st.file.fileno())
            st.file.close()
            st.found = UploadedFile(dest, st.filename, st.size, st.hasher.hexdigest())
            st.file = None
        st.headers = {}

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    seen = 0
    try:
        try:
            async for chunk in request.stream():
                seen += len(chunk)
                if max_bytes is not None and seen > max_bytes:
                    raise upload_too_large(max_bytes, limit_name)
                parser.write(chunk)
            parser.finalize()
        except EngineError:
            raise
        except OSError as exc:  # writing or syncing the file: ENOSPC/EDQUOT → 507
            raise io_error(exc, "writing the uploaded file") from None
        except Exception as exc:  # noqa: BLE001 - any parser failure is a malformed body
            raise BadRequest(f"malformed multipart body: {exc}") from None
        finally:
            if st.file is not None:
                st.file.close()
        if st.found is None:
            raise BadRequest(f"multipart field `{field_name}` (a file) is required")
    except BaseException:  # the client went away, the upload was refused, ...: no debris
        _remove(dest)
        raise
    return st.found


def upload_too_large(max_bytes: int, limit_name: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"the upload exceeds the limit of {max_bytes} bytes ({limit_name})")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
