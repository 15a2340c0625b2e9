"""`quiver snapshot create|list|download|upload|recover|delete`: snapshot work against a
running server over REST.

Results go to stdout (`--json` for scripts), progress bars and messages to stderr. Downloads
land in `<out>.part`, beside `<out>.part.meta`: which snapshot those bytes are of (collection or
full, name, ETag or Last-Modified, size, SHA-256). A later run, or the next try after a cut,
resumes from the part's size with `Range: bytes=N-` and `If-Range: <validator>`, so a replaced
archive is fetched afresh; a part without a matching meta is discarded. The download is checked
against the snapshot's SHA-256 and only then renamed to `<out>`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import httpx

OK, SERVER_ERROR, USAGE, UNREACHABLE, CHECKSUM_MISMATCH, NOT_FOUND = 0, 1, 2, 3, 4, 5
CHUNK = 1 << 20
PRIORITIES = ("replica", "snapshot", "no_sync")

EXIT_CODES = """exit codes:
  0  done
  1  the server answered with an error (its message is printed), or not as Qdrant does
  2  usage or configuration error, or a local file that cannot be read or written
  3  cannot connect to the server, or it timed out
  4  checksum mismatch (the download is removed, never renamed into place)
  5  not found (collection or snapshot)
"""


class CliError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _fail(code: int, message: str) -> NoReturn:
    raise CliError(code, message)


# ---- arguments ------------------------------------------------------------------------------

def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=os.environ.get("QUIVER_URL", "http://localhost:6333"),
                   help="server URL (env QUIVER_URL; default http://localhost:6333)")
    p.add_argument("--api-key", default=os.environ.get("QUIVER_API_KEY"),
                   help="API key or JWT, sent as the api-key header (env QUIVER_API_KEY)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds to wait for the server at each step (default 900: a "
                   "waited-for create or recover answers only when done)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _target(p: argparse.ArgumentParser, full: bool = True) -> None:
    if not full:
        p.add_argument("--collection", "-c", required=True, help="collection name")
        return
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--collection", "-c", help="a collection's snapshots")
    g.add_argument("--full", action="store_true", help="full-storage snapshots")


def _no_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-wait", action="store_true",
                   help="answer at once (202) and leave the work to the server's task")


def add_parser(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("snapshot", help="create, list, download, upload, recover or delete "
                       "snapshots on a running server", epilog=EXIT_CODES, formatter_class=fmt,
                       description="Snapshot work against a running Quiver (or Qdrant) server "
                       "over REST.")
    acts = p.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    common = [_common()]

    a = acts.add_parser("create", parents=common, epilog=EXIT_CODES, formatter_class=fmt,
                        help="create a snapshot (prints its name)")
    _target(a)
    _no_wait(a)

    a = acts.add_parser("list", parents=common, epilog=EXIT_CODES, formatter_class=fmt,
                        help="list snapshots: name, size, creation time, checksum")
    _target(a)

    a = acts.add_parser("download", parents=common, epilog=EXIT_CODES, formatter_class=fmt,
                        help="download a snapshot (resumable, checksum-verified)")
    a.add_argument("name", help="snapshot name")
    _target(a)
    a.add_argument("--output", "-o", help="file or directory (default: NAME in the current "
                   "directory); the download goes to <file>.part until verified")
    a.add_argument("--retries", type=int, default=5,
                   help="resume this many times after a cut connection (default 5)")
    a.add_argument("--checksum", help="expected SHA-256 (default: the server's)")
    a.add_argument("--force", action="store_true", help="overwrite an existing output file")

    a = acts.add_parser("upload", parents=common, epilog=EXIT_CODES, formatter_class=fmt,
                        help="upload a snapshot file and recover the collection from it")
    a.add_argument("path", help="snapshot file")
    _target(a, full=False)
    a.add_argument("--priority", choices=PRIORITIES)
    a.add_argument("--checksum", help="SHA-256 the server must find, or 'auto' to hash the "
                   "file first")
    _no_wait(a)

    a = acts.add_parser("recover", parents=common, epilog=EXIT_CODES, formatter_class=fmt,
                        help="recover a collection from a snapshot URL or server-side file")
    a.add_argument("location", help="http(s):// URL, file:// URI or absolute path on the "
                   "server's machine")
    _target(a, full=False)
    a.add_argument("--priority", choices=PRIORITIES)
    a.add_argument("--checksum", help="expected SHA-256 of the snapshot")
    a.add_argument("--source-api-key", help="API key for the server the URL points to")
    _no_wait(a)

    a = acts.add_parser("delete", parents=common, epilog=EXIT_CODES, formatter_class=fmt,
                        help="delete a snapshot")
    a.add_argument("name", help="snapshot name")
    _target(a)
    _no_wait(a)


# ---- talking to the server ------------------------------------------------------------------

def _error_message(r: httpx.Response) -> str:
    """Qdrant's envelope `{"status": {"error": msg}}`, else the plain-text body."""
    try:
        body = r.json()
        msg = body["status"]["error"]
    except (ValueError, KeyError, TypeError):
        msg = r.text.strip()
    return f"{r.status_code} {msg or r.reason_phrase}"


class Api:
    def __init__(self, args: argparse.Namespace) -> None:
        url = args.url.rstrip("/")
        if not re.match(r"https?://[^/]", url):
            _fail(USAGE, f"--url must be an http:// or https:// URL, got {args.url!r}")
        if args.timeout <= 0:
            _fail(USAGE, "--timeout must be positive")
        self.url = url
        headers = {"api-key": args.api_key} if args.api_key else {}
        self.http = httpx.Client(base_url=url, headers=headers,
                                 timeout=httpx.Timeout(args.timeout, connect=min(args.timeout,
                                                                                 10.0)))

    def unreachable(self, exc: httpx.TransportError) -> CliError:
        if isinstance(exc, httpx.TimeoutException):
            return CliError(UNREACHABLE, f"timed out talking to {self.url}")
        return CliError(UNREACHABLE, f"cannot connect to {self.url}: {exc}")

    def bad_answer(self, exc: httpx.HTTPError) -> CliError:
        """An answer httpx could not read (say a body that does not decode): the server's
        side, like an error status."""
        return CliError(SERVER_ERROR, f"bad answer from {self.url}: "
                        f"{str(exc) or type(exc).__name__}")

    @staticmethod
    def check(r: httpx.Response) -> None:
        if r.status_code >= 400:
            r.read()
            _fail(NOT_FOUND if r.status_code == 404 else SERVER_ERROR, _error_message(r))

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
        except httpx.HTTPError as exc:
            raise self.bad_answer(exc) from exc
        self.check(r)
        return r


def _result(r: httpx.Response) -> Any:
    """The `result` of Qdrant's JSON envelope; anything else (an HTML page from a proxy, a
    truncated body) is the server's error, never a traceback."""
    try:
        return r.json()["result"]
    except (ValueError, KeyError, TypeError):
        _fail(SERVER_ERROR, f"unexpected answer from {r.request.url}: {r.status_code} "
              f"{r.headers.get('content-type') or 'without a content type'}, not Qdrant's "
              "JSON")


def _base(args: argparse.Namespace) -> str:
    if getattr(args, "full", False):
        return "/snapshots"
    return f"/collections/{quote(args.collection, safe='')}/snapshots"


def _wait_param(args: argparse.Namespace) -> dict[str, str]:
    return {"wait": "false" if args.no_wait else "true"}


def _bar(args: argparse.Namespace, total: int | None, desc: str, initial: int = 0) -> Any:
    from tqdm import tqdm  # noqa: PLC0415 - only transfers need it

    # disable=None: no bar when stderr is not a terminal (cron, CI logs)
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr, leave=False,
                disable=True if args.no_progress else None)


def _out(args: argparse.Namespace, result: Any, text: str) -> None:
    print(json.dumps(result) if args.json else text)


def _accepted(args: argparse.Namespace, r: httpx.Response, what: str) -> bool:
    """A --no-wait answer (202): say so, with the task to follow."""
    if r.status_code != 202:
        return False
    task = r.headers.get("x-quiver-task")
    _out(args, {"status": "accepted", "task": task},
         f"{what} accepted" + (f" (task {task})" if task else ""))
    return True


# ---- actions --------------------------------------------------------------------------------

def _create(api: Api, args: argparse.Namespace) -> None:
    r = api.request("POST", _base(args), params=_wait_param(args))
    if not _accepted(args, r, "snapshot creation"):
        snap = _result(r)
        if not isinstance(snap, dict) or "name" not in snap:
            _fail(SERVER_ERROR, f"unexpected answer from {r.request.url}: no snapshot in it")
        _out(args, snap, snap["name"])


def _snapshots(api: Api, args: argparse.Namespace) -> list[dict[str, Any]]:
    r = api.request("GET", _base(args))
    snaps = _result(r)
    if not isinstance(snaps, list) or not all(isinstance(s, dict) and "name" in s
                                              for s in snaps):
        _fail(SERVER_ERROR, f"unexpected answer from {r.request.url}: not a snapshot list")
    return snaps


def _list(api: Api, args: argparse.Namespace) -> None:
    snaps = _snapshots(api, args)
    if args.json:
        print(json.dumps(snaps))
        return
    for s in snaps:
        print(f"{s['name']}\t{s['size']}\t{s.get('creation_time') or '-'}\t"
              f"{s.get('checksum') or '-'}")


def _delete(api: Api, args: argparse.Namespace) -> None:
    r = api.request("DELETE", f"{_base(args)}/{quote(args.name, safe='')}",
                    params=_wait_param(args))
    if not _accepted(args, r, "deletion"):
        _out(args, {"deleted": args.name}, f"deleted {args.name}")


def _recover(api: Api, args: argparse.Namespace) -> None:
    location = args.location
    if "://" not in location:  # a path on the server's machine
        if not os.path.isabs(location):
            _fail(USAGE, "recover takes a URL, a file:// URI or an absolute path on the "
                  f"server's machine, got {location!r} (to send a local file: upload)")
        location = Path(location).as_uri()  # percent-encoded: '#', '?', '%' stay in the path
    body: dict[str, Any] = {"location": location}
    for key in ("priority", "checksum"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    if args.source_api_key:
        body["api_key"] = args.source_api_key
    r = api.request("PUT", f"{_base(args)}/recover", params=_wait_param(args), json=body)
    if not _accepted(args, r, "recovery"):
        _out(args, {"recovered": args.collection, "location": location},
             f"recovered collection {args.collection} from {location}")


def _sha256(path: str, args: argparse.Namespace, desc: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, _bar(args, os.path.getsize(path), desc) as bar:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            bar.update(len(chunk))
    return h.hexdigest()


def _upload(api: Api, args: argparse.Namespace) -> None:
    path = args.path
    if not os.path.isfile(path):
        _fail(USAGE, f"no such file: {path}")
    params = _wait_param(args)
    if args.priority:
        params["priority"] = args.priority
    if args.checksum:
        params["checksum"] = (_sha256(path, args, "hashing") if args.checksum == "auto"
                              else args.checksum)
    size = os.path.getsize(path)
    # multipart by hand, so the file streams from disk with a known Content-Length (the
    # server refuses an over-sized upload from that header before reading the body)
    boundary = uuid.uuid4().hex
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(path))
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"snapshot\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        with open(path, "rb") as f, _bar(args, size, "uploading") as bar:
            while chunk := f.read(CHUNK):
                bar.update(len(chunk))
                yield chunk
        yield tail

    r = api.request("POST", f"{_base(args)}/upload", params=params, content=body(),
                    headers={"content-type": f"multipart/form-data; boundary={boundary}",
                             "content-length": str(len(head) + size + len(tail))})
    if not _accepted(args, r, "upload"):
        _out(args, {"uploaded": path, "collection": args.collection, "size": size},
             f"uploaded {path} and recovered collection {args.collection}")


# ---- download -------------------------------------------------------------------------------

def _expected_checksum(api: Api, args: argparse.Namespace, base: str) -> tuple[str | None, int]:
    """The snapshot's SHA-256 and size from the list (its `checksum`), else from the local
    storage's `<name>.checksum` sidecar, which the download route also serves."""
    for s in _snapshots(api, args):
        if s["name"] == args.name:
            break
    else:
        _fail(NOT_FOUND, f"404 Snapshot {args.name} not found")
    checksum = args.checksum or s.get("checksum")
    if checksum is None:
        try:
            r = api.http.get(f"{base}/{quote(args.name + '.checksum', safe='')}")
            if r.status_code == 200 and re.fullmatch(r"[0-9a-fA-F]{64}", r.text.strip()):
                checksum = r.text.strip()
        except httpx.HTTPError:  # the sidecar is a best effort
            pass
    return (checksum.lower() if checksum else None), int(s.get("size") or 0)


def _content_range_total(value: str | None) -> int | None:
    m = re.fullmatch(r"bytes (?:(\d+)-(\d+)|\*)/(\d+)", (value or "").strip())
    return int(m[3]) if m else None


def _validator(r: httpx.Response) -> str | None:
    """The archive's version as If-Range takes it: a strong ETag, else Last-Modified."""
    etag = r.headers.get("etag")
    return etag if etag and not etag.startswith("W/") else r.headers.get("last-modified")


class _Incomplete(Exception):
    pass


class _Part:
    """`<out>.part` and `<out>.part.meta`, the identity of the snapshot its bytes are of.

    The meta is written (atomically) before the first byte of an archive, so a part always
    has one; a part without a meta that names this snapshot — another snapshot's, a replaced
    one's (other SHA-256 or size), an older CLI's — is discarded, never resumed."""

    def __init__(self, out: str, identity: dict[str, Any], expected: str | None) -> None:
        self.path, self.meta = out + ".part", out + ".part.meta"
        self.identity, self.expected = identity, expected
        self.validator: str | None = None  # the ETag or Last-Modified the bytes came with

    def size(self) -> int:
        return os.path.getsize(self.path) if os.path.exists(self.path) else 0

    def discard(self) -> None:
        for path in (self.path, self.meta):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def adopt(self, listed_size: int) -> bool:
        """Whether an earlier run's part is of this very snapshot (else it is removed)."""
        try:
            with open(self.meta, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict):
            meta = {}
        size, validator = meta.get("size"), meta.get("validator")
        ok = (bool(meta) and os.path.exists(self.path)
              and all(meta.get(k) == v for k, v in self.identity.items())
              and isinstance(size, int) and self.size() <= size
              and (not listed_size or size == listed_size)
              and (self.expected is None or meta.get("sha256") in (None, self.expected))
              and (validator is None or isinstance(validator, str))
              and self.resumable(validator))
        if not ok:
            self.discard()
            return False
        self.validator = validator
        return True

    def resumable(self, validator: str | None) -> bool:
        """Without a validator, If-Range cannot tell a replaced archive: resume only when a
        checksum will catch spliced bytes."""
        return validator is not None or self.expected is not None

    def start(self, validator: str | None, total: int) -> None:
        """A whole archive begins: empty the part first (never old bytes under a new meta,
        whenever this is interrupted), then record what the archive is."""
        self.validator = validator
        open(self.path, "wb").close()
        meta = {**self.identity, "validator": validator, "size": total, "sha256": self.expected}
        tmp = f"{self.meta}.tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(meta, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.meta)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _fetch(api: Api, args: argparse.Namespace, url: str, part: _Part) -> int:
    """Fill the part with the whole archive, resuming after cut connections (If-Range on the
    part's validator from the very first request). Returns the number of resumed (ranged)
    requests that were answered."""
    attempt = resumed = 0
    while True:
        have = part.size()
        if have and not part.resumable(part.validator):
            part.discard()
            have = 0
        headers = {}
        if have:
            headers["Range"] = f"bytes={have}-"
            if part.validator:
                headers["If-Range"] = part.validator
        try:
            with api.http.stream("GET", url, headers=headers) as r:
                if r.status_code == 416 and have:
                    total = _content_range_total(r.headers.get("content-range"))
                    if total == have:  # a previous run got every byte: verify it
                        return resumed
                    part.discard()  # longer than the archive: not this one, start over
                    continue
                api.check(r)
                if r.status_code == 206:
                    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+)",
                                     r.headers.get("content-range", "").strip())
                    if m is None or int(m[1]) != have:
                        _fail(SERVER_ERROR, "the server answered another range than asked: "
                              f"{r.headers.get('content-range')!r}")
                    seen = _validator(r)
                    if part.validator and seen and seen != part.validator:
                        part.discard()  # If-Range ignored: another archive's bytes
                        continue
                    total = int(m[2])
                    resumed += 1
                else:  # 200: the whole archive (no range asked, or the archive changed)
                    total, have = int(r.headers.get("content-length") or 0), 0
                    part.start(_validator(r), total)
                with open(part.path, "ab") as f, _bar(args, total, args.name, have) as bar:
                    for chunk in r.iter_bytes():  # as they arrive: a cut keeps them
                        f.write(chunk)
                        bar.update(len(chunk))
                if part.size() != total:
                    raise _Incomplete(f"got {part.size()} of {total} bytes")
                return resumed
        except (httpx.TransportError, _Incomplete) as exc:
            if attempt >= args.retries:
                if isinstance(exc, httpx.TransportError):
                    raise api.unreachable(exc) from exc
                _fail(UNREACHABLE, f"download incomplete: {exc}")
            attempt += 1
            print(f"quiver snapshot: connection lost at {part.size()} bytes "
                  f"({str(exc) or type(exc).__name__}); resuming, attempt {attempt} of "
                  f"{args.retries}", file=sys.stderr)
            time.sleep(min(0.2 * 2 ** (attempt - 1), 5.0))


def _download(api: Api, args: argparse.Namespace) -> None:
    if args.retries < 0:
        _fail(USAGE, "--retries must be 0 or more")
    out = args.output or args.name
    if os.path.isdir(out):
        out = os.path.join(out, args.name)
    if os.path.exists(out) and not args.force:
        _fail(USAGE, f"{out} exists (--force overwrites it)")
    base = _base(args)
    expected, listed_size = _expected_checksum(api, args, base)
    identity = {"snapshot": "full" if getattr(args, "full", False)
                else f"collection/{args.collection}", "name": args.name}
    part = _Part(out, identity, expected)
    if os.path.exists(part.path) and not part.adopt(listed_size):
        print(f"quiver snapshot: {part.path} is not of this snapshot (or cannot be "
              "confirmed to be): starting over", file=sys.stderr)
    resumed = _fetch(api, args, f"{base}/{quote(args.name, safe='')}", part)
    actual = _sha256(part.path, args, "verifying")
    if expected is not None and actual != expected:
        part.discard()  # a rerun starts afresh rather than resuming bad bytes
        _fail(CHECKSUM_MISMATCH, f"checksum mismatch for {args.name}: expected {expected}, "
              f"got {actual}; the download was removed")
    if expected is None:
        print(f"quiver snapshot: the server publishes no checksum for {args.name}: not "
              "verified", file=sys.stderr)
    os.replace(part.path, out)
    part.discard()  # the meta
    size = os.path.getsize(out)
    _out(args, {"name": args.name, "path": out, "size": size, "sha256": actual,
                "verified": expected is not None, "resumed": resumed},
         f"{out}\t{size}\t{actual}")


ACTIONS = {"create": _create, "list": _list, "download": _download, "upload": _upload,
           "recover": _recover, "delete": _delete}


def main(args: argparse.Namespace) -> int:
    try:
        api = Api(args)
        try:
            ACTIONS[args.snapshot_command](api, args)
        finally:
            api.http.close()
    except CliError as exc:
        print(f"quiver snapshot: {exc.message}", file=sys.stderr)
        return exc.code
    except httpx.TransportError as exc:  # one no action turned into a CliError
        what = ("timed out talking to" if isinstance(exc, httpx.TimeoutException)
                else "cannot connect to")
        print(f"quiver snapshot: {what} {args.url}: {exc}", file=sys.stderr)
        return UNREACHABLE
    except httpx.HTTPError as exc:  # an answer httpx could not read: the server's side
        print(f"quiver snapshot: bad answer from {args.url}: {str(exc) or type(exc).__name__}",
              file=sys.stderr)
        return SERVER_ERROR
    except KeyboardInterrupt:
        print("quiver snapshot: interrupted (a download resumes from its .part file)",
              file=sys.stderr)
        return 130
    except OSError as exc:  # the local file side: unreadable input, full disk, ...
        print(f"quiver snapshot: {exc}", file=sys.stderr)
        return USAGE
    return OK
