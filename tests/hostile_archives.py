"""Hand-built hostile variants of a valid Quiver collection snapshot (a plain tar).

Every builder takes the bytes of a VALID snapshot (downloaded from a server) and returns
modified bytes. Archives are serialised here block by block (``TarInfo.tobuf`` + data +
padding) rather than through ``TarFile.addfile``, so that headers tarfile would never write on
its own (GNU sparse, a GNU long name that disagrees with the header's name field, members
whose data does not match the header) can be produced too.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import random
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

BLOCK = 512
MANIFEST = "manifest.json"
ENC, ERRORS = "utf-8", "surrogateescape"


@dataclass
class Entry:
    info: tarfile.TarInfo
    data: bytes = b""
    prefix: bytes = b""  # raw blocks written before this member's header (GNU/PAX tricks)
    fmt: int = tarfile.GNU_FORMAT
    header: bytes | None = None  # a hand-made header block used instead of info.tobuf()
    pad: bool = True


@dataclass
class Layout:
    """Where things are in a serialised archive (offsets into its bytes)."""

    header: dict[str, int] = field(default_factory=dict)
    data: dict[str, int] = field(default_factory=dict)
    size: dict[str, int] = field(default_factory=dict)


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def parse(archive: bytes) -> list[Entry]:
    """The members of a valid snapshot, in order, with their data."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for info in tar.getmembers():
            f = tar.extractfile(info)
            data = f.read() if f is not None else b""
            out.append(Entry(copy.copy(info), data))
    return out


def layout(archive: bytes) -> Layout:
    lay = Layout()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for info in tar.getmembers():
            lay.header[info.name] = info.offset
            lay.data[info.name] = info.offset_data
            lay.size[info.name] = info.size
    return lay


def serialise(entries: list[Entry], end: bool = True) -> bytes:
    out = io.BytesIO()
    for e in entries:
        out.write(e.prefix)
        out.write(e.header if e.header is not None else e.info.tobuf(e.fmt, ENC, ERRORS))
        out.write(_padded(e.data) if e.pad else e.data)
    if end:
        out.write(b"\0" * (2 * BLOCK))
    return out.getvalue()


def manifest_of(entries: list[Entry]) -> dict[str, Any]:
    assert entries[0].info.name == MANIFEST
    return orjson.loads(entries[0].data)


def set_manifest(entries: list[Entry], manifest: Any, raw: bytes | None = None) -> list[Entry]:
    data = raw if raw is not None else orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
    first = copy.copy(entries[0])
    first.info = copy.copy(first.info)
    first.info.size = len(data)
    first.data = data
    return [first] + entries[1:]


def find(entries: list[Entry], suffix: str) -> int:
    for i, e in enumerate(entries):
        if e.info.name.endswith(suffix):
            return i
    raise KeyError(suffix)


def regular(name: str, data: bytes, fmt: int = tarfile.GNU_FORMAT) -> Entry:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 1_700_000_000
    return Entry(info, data, fmt=fmt)


def replace_data(entries: list[Entry], suffix: str, data: bytes,
                 update_manifest: bool = True) -> list[Entry]:
    """Swap a member's content; with update_manifest the manifest's size/sha256 follow, so the
    archive is internally consistent and only the content itself is hostile."""
    entries = list(entries)
    i = find(entries, suffix)
    name = entries[i].info.name
    entries[i] = regular(name, data)
    if update_manifest:
        m = manifest_of(entries)
        for mem in m["members"]:
            if mem["name"] == name:
                mem["size"] = len(data)
                mem["sha256"] = hashlib.sha256(data).hexdigest()
        entries = set_manifest(entries, m)
    return entries


def _special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = 0
    info.mode = 0o644
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3  # /dev/null
    return info


def _checksummed(header: bytearray) -> bytes:
    header[148:156] = b" " * 8
    header[148:155] = b"%06o\0" % sum(header)
    return bytes(header)


def _octal12(n: int) -> bytes:
    return b"%011o\0" % n


def gnu_sparse_header(info: tarfile.TarInfo, data_len: int) -> bytes:
    """A GNU 'S' (old GNU sparse) header whose one sparse chunk covers the whole member: the
    expanded content is exactly `data`, so only the member's type betrays it."""
    h = bytearray(info.tobuf(tarfile.GNU_FORMAT, ENC, ERRORS))
    h[156:157] = tarfile.GNUTYPE_SPARSE
    h[386:398] = _octal12(0)            # sparse[0].offset
    h[398:410] = _octal12(data_len)     # sparse[0].numbytes
    h[482] = 0                          # isextended
    h[483:495] = _octal12(data_len)     # realsize
    return _checksummed(h)


def gnu_longname_block(name: str) -> bytes:
    return tarfile.TarInfo._create_gnu_long_header(name, tarfile.GNUTYPE_LONGNAME, ENC, ERRORS)


# ---- the hostile variants ------------------------------------------------------------------
# Each: (id, builder(valid_bytes, ctx) -> bytes, expected status, fragment of the error).
# ctx carries paths the test wants the archive to aim at (the escape sentinel, free disk).


@dataclass
class Ctx:
    escape_abs: str      # absolute path of the sentinel that must never be created
    escape_rel: str      # the same sentinel as a ../-relative path from the staging dir
    free_bytes: int      # free space on the storage filesystem


Builder = Callable[[bytes, Ctx], bytes]


def _with(entries: list[Entry], i: int, e: Entry) -> list[Entry]:
    entries = list(entries)
    entries[i] = e
    return entries


def symlink_member(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    i = find(es, "ids.npy")
    return serialise(_with(es, i, Entry(_special(es[i].info.name, tarfile.SYMTYPE,
                                                 ctx.escape_abs))))


def symlink_manifest(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    return serialise([Entry(_special(MANIFEST, tarfile.SYMTYPE, ctx.escape_abs))] + es[1:])


def symlink_extra_then_write_through(valid: bytes, ctx: Ctx) -> bytes:
    """The classic: a symlink `x` -> outside, then a regular file `x/...` written through it."""
    es = parse(valid)
    link = Entry(_special("segments/0", tarfile.SYMTYPE, ctx.escape_abs))
    return serialise([es[0], link] + es[1:])


def hardlink_member(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    i = find(es, "ids.npy")
    return serialise(_with(es, i, Entry(_special(es[i].info.name, tarfile.LNKTYPE, MANIFEST))))


def hardlink_outside(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    i = find(es, "payloads.json")
    return serialise(_with(es, i, Entry(_special(es[i].info.name, tarfile.LNKTYPE,
                                                 ctx.escape_abs))))


def special_member(kind: bytes) -> Builder:
    def build(valid: bytes, ctx: Ctx) -> bytes:
        es = parse(valid)
        i = find(es, "versions.npy")
        return serialise(_with(es, i, Entry(_special(es[i].info.name, kind))))
    return build


def directory_member(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    i = find(es, "deleted.npy")
    return serialise(_with(es, i, Entry(_special(es[i].info.name, tarfile.DIRTYPE))))


def extra_member(name_of: Callable[[Ctx], str]) -> Builder:
    def build(valid: bytes, ctx: Ctx) -> bytes:
        es = parse(valid)
        return serialise(es + [regular(name_of(ctx), b"pwned\n")])
    return build


def extra_member_before_data(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    return serialise([es[0], regular(ctx.escape_rel, b"pwned\n")] + es[1:])


def manifest_declares(name_of: Callable[[Ctx], str]) -> Builder:
    """Manifest and tar both name the member consistently, with a hostile name."""
    def build(valid: bytes, ctx: Ctx) -> bytes:
        es = parse(valid)
        name = name_of(ctx)
        data = b"pwned\n"
        m = manifest_of(es)
        m["members"].append({"name": name, "size": len(data),
                             "sha256": hashlib.sha256(data).hexdigest()})
        return serialise(set_manifest(es, m) + [regular(name, data)])
    return build


def duplicate_member(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    i = find(es, "ids.npy")
    return serialise(es + [es[i]])


def duplicate_member_different_content(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    i = find(es, "payloads.json")
    evil = regular(es[i].info.name, b'[{"k":"evil"}]'.ljust(len(es[i].data)))
    return serialise(es[: i + 1] + [evil] + es[i + 1:])


def duplicate_manifest(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    m = manifest_of(es)
    m["format_version"] = "1.0"
    m["collection"] = "other"
    second = set_manifest(es, m)[0]
    return serialise(es[:1] + [second] + es[1:])


def duplicate_manifest_entry(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    m = manifest_of(es)
    m["members"].append(dict(m["members"][0]))
    return serialise(set_manifest(es, m) + [es[find(es, m["members"][0]["name"])]])


def gnu_longname_traversal(valid: bytes, ctx: Ctx) -> bytes:
    """A member whose name is long enough to need a ././@LongLink block, and escapes."""
    es = parse(valid)
    name = "segments/0/" + "a/" * 60 + "../" * 64 + ctx.escape_rel
    return serialise(es + [regular(name, b"pwned\n")])


def gnu_longname_overrides_header(valid: bytes, ctx: Ctx) -> bytes:
    """The header's own name field says segments/0/ids.npy; a LongLink block before it says
    ../../escape (GNU tar and Python's tarfile believe the LongLink)."""
    es = parse(valid)
    i = find(es, "ids.npy")
    e = copy.copy(es[i])
    e.prefix = gnu_longname_block(ctx.escape_rel)
    return serialise(_with(es, i, e))


def gnu_longname_for_manifest(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    e = copy.copy(es[0])
    e.prefix = gnu_longname_block(ctx.escape_rel)
    return serialise([e] + es[1:])


def _pax_path(valid: bytes, member: str, path: str) -> bytes:
    """Re-point one member's name with a PAX `path` header."""
    es = parse(valid)
    i = find(es, member)
    e = copy.copy(es[i])
    e.info = copy.copy(e.info)
    e.info.pax_headers = {"path": path}
    e.fmt = tarfile.PAX_FORMAT
    return serialise(_with(es, i, e))


def pax_path_override(valid: bytes, ctx: Ctx) -> bytes:
    return _pax_path(valid, "vectors-.npy", ctx.escape_rel)


def pax_path_absolute(valid: bytes, ctx: Ctx) -> bytes:
    return _pax_path(valid, "present-.npy", ctx.escape_abs)


def pax_linkpath_symlink(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    i = find(es, "ids.npy")
    info = _special(es[i].info.name, tarfile.SYMTYPE, "x")
    info.pax_headers = {"linkpath": ctx.escape_abs}
    return serialise(_with(es, i, Entry(info, fmt=tarfile.PAX_FORMAT)))


def pax_size_override(valid: bytes, ctx: Ctx) -> bytes:
    """The PAX size disagrees with the ustar header's (and with the data actually there)."""
    es = parse(valid)
    i = find(es, "ids.npy")
    e = copy.copy(es[i])
    e.info = copy.copy(e.info)
    e.info.pax_headers = {"size": str(len(e.data) + 4096)}
    e.fmt = tarfile.PAX_FORMAT
    return serialise(_with(es, i, e))


def pax_global_path_override(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    i = find(es, "deleted.npy")
    e = copy.copy(es[i])
    e.info = copy.copy(e.info)
    e.info.pax_headers = {"comment": "x"}  # an 'x' header, so the global path applies
    e.fmt = tarfile.PAX_FORMAT
    e.prefix = tarfile.TarInfo.create_pax_global_header({"path": ctx.escape_rel})
    return serialise(_with(es, i, e))


def gnu_sparse_member(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    i = find(es, "ids.npy")
    e = copy.copy(es[i])
    e.header = gnu_sparse_header(e.info, len(e.data))
    return serialise(_with(es, i, e))


def pax_sparse_member(valid: bytes, ctx: Ctx) -> bytes:
    """PAX GNU.sparse 0.1: a map covering the whole member (content unchanged)."""
    es = parse(valid)
    i = find(es, "versions.npy")
    e = copy.copy(es[i])
    e.info = copy.copy(e.info)
    n = len(e.data)
    e.info.pax_headers = {"GNU.sparse.size": str(n), "GNU.sparse.map": f"0,{n}",
                          "GNU.sparse.numblocks": "1"}
    e.fmt = tarfile.PAX_FORMAT
    return serialise(_with(es, i, e))


def missing_member(suffix: str) -> Builder:
    def build(valid: bytes, ctx: Ctx) -> bytes:
        es = parse(valid)
        i = find(es, suffix)
        return serialise(es[:i] + es[i + 1:])
    return build


def manifest_only(valid: bytes, ctx: Ctx) -> bytes:
    return serialise(parse(valid)[:1])


def declared_size(delta: int) -> Builder:
    """The manifest's size for a member is off by `delta` (tar member unchanged)."""
    def build(valid: bytes, ctx: Ctx) -> bytes:
        es = parse(valid)
        m = manifest_of(es)
        for mem in m["members"]:
            if mem["name"].endswith("vectors-.npy"):
                mem["size"] += delta
        return serialise(set_manifest(es, m))
    return build


def member_data_longer(valid: bytes, ctx: Ctx) -> bytes:
    """Tar member one byte longer than the manifest says (header and data agree)."""
    es = parse(valid)
    i = find(es, "payloads.json")
    return serialise(_with(es, i, regular(es[i].info.name, es[i].data + b" ")))


def header_size_lies(valid: bytes, ctx: Ctx) -> bytes:
    """The tar header claims fewer bytes than the data that follows (the rest reads as the
    next 'header')."""
    es = parse(valid)
    i = find(es, "vectors-.npy")
    e = copy.copy(es[i])
    e.info = copy.copy(e.info)
    e.info.size = 10
    e.pad = True
    return serialise(_with(es, i, e))


def sha_mismatch(suffix: str) -> Builder:
    """One byte of a data member flipped inside the tar; headers and manifest untouched."""
    def build(valid: bytes, ctx: Ctx) -> bytes:
        lay = layout(valid)
        name = next(n for n in lay.data if n.endswith(suffix))
        return flip_at(valid, lay.data[name] + lay.size[name] // 2)
    return build


def manifest_sha_wrong(valid: bytes, ctx: Ctx) -> bytes:
    es = parse(valid)
    m = manifest_of(es)
    m["members"][0]["sha256"] = hashlib.sha256(b"something else").hexdigest()
    return serialise(set_manifest(es, m))


def flip_at(archive: bytes, pos: int, mask: int = 0x01) -> bytes:
    b = bytearray(archive)
    b[pos] ^= mask
    return bytes(b)


def flip(where: Callable[[bytes, Layout], int]) -> Builder:
    def build(valid: bytes, ctx: Ctx) -> bytes:
        return flip_at(valid, where(valid, layout(valid)))
    return build


def in_manifest(needle: bytes, skip: int = 0, after: bytes = b"") -> Callable[[bytes, Layout], int]:
    """Position of `needle` (+ skip) in the manifest's data, after the first `after`."""
    def where(valid: bytes, lay: Layout) -> int:
        start, end = lay.data[MANIFEST], lay.data[MANIFEST] + lay.size[MANIFEST]
        if after:
            start = valid.index(after, start, end)
        pos = valid.index(needle, start, end)
        return pos + skip
    return where


def truncate(where: Callable[[bytes, Layout], int]) -> Builder:
    def build(valid: bytes, ctx: Ctx) -> bytes:
        return valid[: where(valid, layout(valid))]
    return build


def data_end(lay: Layout) -> int:
    return max(lay.data[n] + lay.size[n] for n in lay.data)


def last_member(lay: Layout) -> str:
    return max(lay.data, key=lambda n: lay.data[n])


def not_tar_text(valid: bytes, ctx: Ctx) -> bytes:
    return b"this is not a tar archive, just some text\n" * 300


def random_bytes(valid: bytes, ctx: Ctx) -> bytes:
    return random.Random(1234).randbytes(len(valid))


def gzipped(valid: bytes, ctx: Ctx) -> bytes:
    return gzip.compress(valid)


def zipped(valid: bytes, ctx: Ctx) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for e in parse(valid):
            z.writestr(e.info.name, e.data)
    return buf.getvalue()


def json_file(valid: bytes, ctx: Ctx) -> bytes:
    return parse(valid)[0].data


def empty(valid: bytes, ctx: Ctx) -> bytes:
    return b""


def zeros(n: int) -> Builder:
    return lambda valid, ctx: b"\0" * n


def manifest_moved(to: int) -> Builder:
    def build(valid: bytes, ctx: Ctx) -> bytes:
        es = parse(valid)
        first, rest = es[0], es[1:]
        rest.insert(to if to >= 0 else len(rest), first)
        return serialise(rest)
    return build


def manifest_edit(edit: Callable[[dict[str, Any], Ctx], Any]) -> Builder:
    def build(valid: bytes, ctx: Ctx) -> bytes:
        es = parse(valid)
        m = manifest_of(es)
        out = edit(m, ctx)
        return serialise(set_manifest(es, m if out is None else out))
    return build


def manifest_raw(raw_of: Callable[[bytes], bytes]) -> Builder:
    def build(valid: bytes, ctx: Ctx) -> bytes:
        es = parse(valid)
        return serialise(set_manifest(es, None, raw=raw_of(es[0].data)))
    return build


def manifest_declared_huge(valid: bytes, ctx: Ctx) -> bytes:
    """The manifest's tar header declares 65 MiB (over the 64 MiB cap); the data is short."""
    es = parse(valid)
    e = copy.copy(es[0])
    e.info = copy.copy(e.info)
    e.info.size = 65 << 20
    return serialise([e] + es[1:])


def many_members(n: int) -> Builder:
    def build(valid: bytes, ctx: Ctx) -> bytes:
        es = parse(valid)
        m = manifest_of(es)
        zero = hashlib.sha256(b"").hexdigest()
        m["members"] = [{"name": f"segments/{i}/ids.npy", "size": 0, "sha256": zero}
                        for i in range(n)]
        return serialise(set_manifest(es, m, raw=orjson.dumps(m)))
    return build


def bomb_single(valid: bytes, ctx: Ctx) -> bytes:
    """One member declared at 1 PiB, in the manifest and in its (GNU base-256) tar header;
    the stream ends long before: it must be refused from the manifest alone."""
    es = parse(valid)
    m = manifest_of(es)
    huge = 1 << 50
    i = find(es, "vectors-.npy")
    for mem in m["members"]:
        if mem["name"] == es[i].info.name:
            mem["size"] = huge
    es = set_manifest(es, m)
    e = copy.copy(es[i])
    e.info = copy.copy(e.info)
    e.info.size = huge
    e.pad = False
    return serialise(es[:i] + [e], end=False)


def bomb_sum(valid: bytes, ctx: Ctx) -> bytes:
    """Every member under the free space, their sum over it (tar headers honest)."""
    es = parse(valid)
    m = manifest_of(es)
    each = ctx.free_bytes * 6 // 10
    for mem in m["members"][:2]:
        mem["size"] = each
    return serialise(set_manifest(es, m))


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def member_content(suffix: str, content: Callable[[bytes], bytes]) -> Builder:
    """A consistent archive (sizes and hashes updated) whose member content is hostile."""
    def build(valid: bytes, ctx: Ctx) -> bytes:
        es = parse(valid)
        return serialise(replace_data(es, suffix, content(es[find(es, suffix)].data)))
    return build


def rebuilt(valid: bytes, ctx: Ctx | None = None) -> bytes:
    """The valid archive parsed and serialised again, unmodified (the control)."""
    return serialise(parse(valid))
