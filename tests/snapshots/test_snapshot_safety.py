"""Hostile snapshots and hostile requests never touch the live collection or escape staging.

Every hostile archive is derived by hand (tests/hostile_archives.py) from a VALID snapshot
downloaded from the server, of a collection (`source`) with the same vector config as the
victim but different points: had any of them been accepted, the victim's points would change.
Each is sent three ways: multipart upload, `file://` recovery from inside the snapshots dir,
and recovery from an http URL. After each request the victim is compared point by point,
and the storage and snapshot trees are checked for staging debris and escaped files.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hostile_archives as H
import httpx
import numpy as np
import pytest
import web_stub
from openapi_contract import install_httpx_hook
from server import QuiverServer, free_port

ESCAPE = "quiver-escape-sentinel"
VICTIM = "victim"
VEC = {"size": 3, "distance": "Cosine"}
TRANSPORTS = ["upload", "file", "http"]
ID_DTYPE = np.dtype([("kind", "u1"), ("hi", "<u8"), ("lo", "<u8")])  # engine.ids.ID_DTYPE


# ---- harness -------------------------------------------------------------------------------


@dataclass
class Lab:
    srv: QuiverServer
    base: Path
    storage: Path
    snaps: Path
    c: httpx.Client
    web: ThreadingHTTPServer
    source: bytes  # a valid snapshot of `source` (same vector config as the victim)
    source_points: list[dict[str, Any]]
    dim4: bytes  # a valid snapshot of a collection with size-4 vectors
    victim_points: list[dict[str, Any]]
    victim_config: dict[str, Any]
    good_name: str  # a snapshot of the victim, kept in the victim's snapshot dir
    good_sha: str
    pre_existing_escapes: set[Path] = field(default_factory=set)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web.server_address[1]}"

    @property
    def incoming(self) -> Path:
        return self.snaps / "incoming"

    def ctx(self) -> H.Ctx:
        # staging members dir is <storage>/.tmp-<hex>/members: three levels up is `base`
        return H.Ctx(escape_abs=str(self.base / ESCAPE), escape_rel=f"../../../{ESCAPE}",
                     free_bytes=shutil.disk_usage(self.storage).free)

    def escape_candidates(self) -> list[Path]:
        return [self.base / ESCAPE, self.storage / ESCAPE, self.snaps / ESCAPE,
                *(p / ESCAPE for p in list(self.base.parents)[:3]), Path("/") / ESCAPE,
                Path("/tmp") / ESCAPE]


def _points(c: httpx.Client, name: str) -> list[dict[str, Any]]:
    r = c.post(f"/collections/{name}/points/scroll",
               json={"limit": 1000, "with_payload": True, "with_vector": True})
    assert r.status_code == 200, r.text
    return r.json()["result"]["points"]


def _config(c: httpx.Client, name: str) -> dict[str, Any]:
    r = c.get(f"/collections/{name}")
    assert r.status_code == 200, r.text
    res = r.json()["result"]
    return {"config": res["config"], "points_count": res["points_count"]}


def _make(c: httpx.Client, name: str, vectors: dict[str, Any], ids: range, tag: str) -> None:
    r = c.put(f"/collections/{name}", json={"vectors": vectors})
    assert r.status_code == 200, r.text
    dim = vectors["size"]
    rng = np.random.default_rng(len(tag))
    pts = [{"id": i, "vector": rng.standard_normal(dim).round(3).tolist(),
            "payload": {"tag": tag, "i": i, "nested": {"a": [i, str(i)]}}} for i in ids]
    r = c.put(f"/collections/{name}/points?wait=true", json={"points": pts})
    assert r.status_code == 200, r.text


def _snapshot(c: httpx.Client, name: str) -> tuple[str, bytes]:
    r = c.post(f"/collections/{name}/snapshots")
    assert r.status_code == 200, r.text
    snap = r.json()["result"]["name"]
    r = c.get(f"/collections/{name}/snapshots/{snap}")
    assert r.status_code == 200
    return snap, r.content


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("snapsafety")
    storage, snaps = base / "storage", base / "snaps"
    srv = QuiverServer(storage, env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(snaps)}).start()
    web = web_stub.start()
    c = httpx.Client(base_url=srv.url, timeout=60)
    install_httpx_hook(c)
    try:
        _make(c, "source", VEC, range(100, 108), "source")
        _make(c, VICTIM, VEC, range(1, 6), "victim")
        _make(c, "dim4", {"size": 4, "distance": "Cosine"}, range(1, 4), "dim4")
        _, source = _snapshot(c, "source")
        _, dim4 = _snapshot(c, "dim4")
        good_name, good = _snapshot(c, VICTIM)
        (snaps / "incoming").mkdir()
        lab = Lab(srv, base, storage, snaps, c, web, source, _points(c, "source"), dim4,
                  _points(c, VICTIM), _config(c, VICTIM), good_name,
                  hashlib.sha256(good).hexdigest())
        lab.pre_existing_escapes = {p for p in lab.escape_candidates() if os.path.lexists(p)}
        yield lab
    finally:
        c.close()
        web.shutdown()
        srv.stop()


def send(lab: Lab, transport: str, data: bytes, tag: str, collection: str = VICTIM,
         body: dict[str, Any] | None = None, params: dict[str, str] | None = None
         ) -> httpx.Response:
    """Offer `data` as a snapshot of `collection` by upload, file:// or http recovery."""
    body = body or {}
    if transport == "upload":
        return lab.c.post(f"/collections/{collection}/snapshots/upload", params=params,
                          files={"snapshot": (f"{tag}.snapshot", data,
                                              "application/octet-stream")})
    if transport == "file":
        path = lab.incoming / f"{tag}.snapshot"
        path.write_bytes(data)
        location = path.as_uri()
    else:
        lab.web.routes[f"/{tag}.snapshot"] = (200, {}, data)  # type: ignore[attr-defined]
        location = f"{lab.web_url}/{tag}.snapshot"
    return lab.c.put(f"/collections/{collection}/snapshots/recover",
                     json={"location": location, **body}, params=params)


def assert_error(r: httpx.Response, status: int | tuple[int, ...], fragment: str = "") -> str:
    statuses = (status,) if isinstance(status, int) else status
    assert r.status_code in statuses, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"status", "time"}, body
    assert isinstance(body["status"], dict) and set(body["status"]) == {"error"}, body
    assert isinstance(body["time"], float | int)
    msg = body["status"]["error"]
    assert isinstance(msg, str) and fragment in msg, (fragment, msg)
    return msg


def assert_untouched(lab: Lab) -> None:
    """The victim serves exactly what it did; no staging debris; nothing escaped."""
    assert _points(lab.c, VICTIM) == lab.victim_points
    assert _config(lab.c, VICTIM) == lab.victim_config
    debris = [p.name for p in lab.storage.iterdir() if p.name.startswith((".tmp-", ".trash-"))]
    assert not debris, f"staging left behind under the storage dir: {debris}"
    assert not list((lab.snaps / ".tmp").iterdir()), "upload temp files left behind"
    escaped = [p for p in lab.escape_candidates()
               if os.path.lexists(p) and p not in lab.pre_existing_escapes]
    escaped += list(lab.base.rglob(f"*{ESCAPE}*"))
    assert not escaped, f"files escaped staging: {escaped}"
    coll_dirs = sorted(p.name for p in (lab.storage / "collections").iterdir())
    assert all(re.fullmatch(r"[a-z0-9_]+", n) for n in coll_dirs), coll_dirs
    good = lab.snaps / VICTIM / lab.good_name
    assert hashlib.sha256(good.read_bytes()).hexdigest() == lab.good_sha


@pytest.fixture(autouse=True)
def _restore_victim(lab: Lab) -> Iterator[None]:
    """A hostile snapshot wrongly accepted must fail its own test only: put the victim back."""
    yield
    if _points(lab.c, VICTIM) != lab.victim_points:
        good = lab.snaps / VICTIM / lab.good_name
        r = lab.c.put(f"/collections/{VICTIM}/snapshots/recover",
                      json={"location": good.as_uri()})
        assert r.status_code == 200, r.text
        assert _points(lab.c, VICTIM) == lab.victim_points


# ---- control: the harness itself produces archives the server accepts ------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("over_existing", [False, True], ids=["new", "over_existing"])
def test_control_rebuilt_valid_archive_is_accepted(lab: Lab, transport: str,
                                                   over_existing: bool) -> None:
    """Parsed and re-serialised by the same code that builds the hostile variants, the valid
    snapshot recovers: every rejection below is caused by the hostile change alone."""
    name = f"control_{transport}_{int(over_existing)}"
    if over_existing:
        _make(lab.c, name, VEC, range(1, 4), "control")
    r = send(lab, transport, H.rebuilt(lab.source), f"control-{transport}", collection=name)
    assert r.status_code == 200, r.text
    assert r.json()["result"] is True
    assert _points(lab.c, name) == lab.source_points
    assert_untouched(lab)


# ---- hostile archives ---------------------------------------------------------------------------


def _lay(f: Callable[[bytes, H.Layout], int]) -> Callable[[bytes, H.Layout], int]:
    """(valid archive, its layout) -> an offset; only names the lambdas' type."""
    return f


def _npy_garbage(_: bytes) -> bytes:
    return b"\x93NUMPY\x01\x00" + b"\xff" * 40


def _all_ids_equal(original: bytes) -> bytes:
    """The segment's own id records, every row a copy of the first (all rows live)."""
    ids = np.load(io.BytesIO(original), allow_pickle=False).copy()
    ids[:] = ids[0]
    return H.npy(ids)


INVALID = "Invalid snapshot"
HOSTILE: list[tuple[str, H.Builder, str]] = [
    # links, devices and other non-regular members
    ("symlink_member_to_outside", H.symlink_member, INVALID),
    ("symlink_as_manifest", H.symlink_manifest, INVALID),
    ("symlink_dir_then_write_through", H.symlink_extra_then_write_through, INVALID),
    ("hardlink_member_to_manifest", H.hardlink_member, INVALID),
    ("hardlink_member_to_outside", H.hardlink_outside, INVALID),
    ("char_device_member", H.special_member(tarfile.CHRTYPE), INVALID),
    ("block_device_member", H.special_member(tarfile.BLKTYPE), INVALID),
    ("fifo_member", H.special_member(tarfile.FIFOTYPE), INVALID),
    ("directory_member", H.directory_member, INVALID),
    # names
    ("extra_member_dotdot_name", H.extra_member(lambda c: c.escape_rel), INVALID),
    ("extra_member_absolute_name", H.extra_member(lambda c: c.escape_abs), INVALID),
    ("extra_member_dotdot_before_data", H.extra_member_before_data, INVALID),
    ("manifest_declares_dotdot_member", H.manifest_declares(lambda c: c.escape_rel), INVALID),
    ("manifest_declares_absolute_member",
     H.manifest_declares(lambda c: c.escape_abs), INVALID),
    ("manifest_declares_nested_dotdot",
     H.manifest_declares(lambda c: "segments/0/../../../" + ESCAPE + ".npy"), INVALID),
    ("extra_unexpected_member", H.extra_member(lambda c: "segments/0/extra.npy"), INVALID),
    ("extra_member_next_segment", H.extra_member(lambda c: "segments/1/ids.npy"), INVALID),
    ("gnu_longname_traversal", H.gnu_longname_traversal, INVALID),
    ("gnu_longname_overrides_header_name", H.gnu_longname_overrides_header, INVALID),
    ("gnu_longname_renames_manifest", H.gnu_longname_for_manifest, INVALID),
    ("pax_path_override_dotdot", H.pax_path_override, INVALID),
    ("pax_path_override_absolute", H.pax_path_absolute, INVALID),
    ("pax_linkpath_symlink", H.pax_linkpath_symlink, INVALID),
    ("pax_global_path_override", H.pax_global_path_override, INVALID),
    ("pax_size_override", H.pax_size_override, INVALID),
    ("gnu_sparse_member", H.gnu_sparse_member, INVALID),
    ("pax_sparse_member", H.pax_sparse_member, INVALID),
    # duplicates, missing members, order
    ("duplicate_member", H.duplicate_member, INVALID),
    ("duplicate_member_different_content", H.duplicate_member_different_content, INVALID),
    ("duplicate_manifest", H.duplicate_manifest, INVALID),
    ("duplicate_manifest_entry", H.duplicate_manifest_entry, INVALID),
    ("missing_member_payloads", H.missing_member("payloads.json"), INVALID),
    ("missing_member_vectors", H.missing_member("vectors-.npy"), INVALID),
    ("manifest_only", H.manifest_only, INVALID),
    ("manifest_second", H.manifest_moved(1), INVALID),
    ("manifest_last", H.manifest_moved(-1), INVALID),
    # sizes and hashes
    ("declared_size_plus_one", H.declared_size(1), INVALID),
    ("declared_size_minus_one", H.declared_size(-1), INVALID),
    ("member_longer_than_declared", H.member_data_longer, INVALID),
    ("tar_header_size_lies", H.header_size_lies, INVALID),
    ("sha_mismatch_ids", H.sha_mismatch("ids.npy"), "sha256 mismatch"),
    ("sha_mismatch_vectors", H.sha_mismatch("vectors-.npy"), "sha256 mismatch"),
    ("sha_mismatch_payloads", H.sha_mismatch("payloads.json"), "sha256 mismatch"),
    ("sha_mismatch_deleted", H.sha_mismatch("deleted.npy"), "sha256 mismatch"),
    ("manifest_sha_wrong", H.manifest_sha_wrong, "sha256 mismatch"),
    # truncation
    ("truncated_1_byte", H.truncate(_lay(lambda v, lay: 1)), INVALID),
    ("truncated_after_first_header", H.truncate(_lay(lambda v, lay: 512)), INVALID),
    ("truncated_10pct", H.truncate(_lay(lambda v, lay: len(v) // 10)), INVALID),
    ("truncated_50pct", H.truncate(_lay(lambda v, lay: len(v) // 2)), INVALID),
    ("truncated_512_before_data_end", H.truncate(_lay(lambda v, lay: H.data_end(lay) - 512)),
     INVALID),
    ("truncated_1_before_data_end", H.truncate(_lay(lambda v, lay: H.data_end(lay) - 1)),
     INVALID),
    ("truncated_after_last_header",
     H.truncate(_lay(lambda v, lay: lay.data[H.last_member(lay)])), INVALID),
    # flipped bytes
    ("flip_first_header_name", H.flip(_lay(lambda v, lay: 0)), INVALID),
    ("flip_first_header_size", H.flip(_lay(lambda v, lay: 124 + 8)), INVALID),
    ("flip_first_header_checksum", H.flip(_lay(lambda v, lay: 150)), INVALID),
    ("flip_data_header", H.flip(_lay(lambda v, lay: lay.header["segments/0/ids.npy"] + 3)),
     INVALID),
    ("flip_last_header", H.flip(_lay(lambda v, lay: lay.header[H.last_member(lay)] + 130)),
     INVALID),
    ("flip_manifest_brace", H.flip(_lay(lambda v, lay: lay.data["manifest.json"])), INVALID),
    ("flip_manifest_format", H.flip(H.in_manifest(b"quiver-collection")), INVALID),
    ("flip_manifest_version", H.flip(H.in_manifest(b'"format_version": "1.', 20)), INVALID),
    ("flip_manifest_member_sha", H.flip(H.in_manifest(b'"sha256": "', 11)), INVALID),
    ("flip_manifest_member_size", H.flip(H.in_manifest(b'"size": ', 8, after=b'"members"')), INVALID),
    ("flip_manifest_member_name", H.flip(H.in_manifest(b'"name": "segments', 10)), INVALID),
    ("flip_data_ids", H.flip(_lay(lambda v, lay: lay.data["segments/0/ids.npy"] + 200)),
     "sha256 mismatch"),
    ("flip_data_vectors_last_byte",
     H.flip(_lay(lambda v, lay: lay.data["segments/0/vectors-.npy"]
                 + lay.size["segments/0/vectors-.npy"] - 1)), "sha256 mismatch"),
    ("flip_data_payloads", H.flip(_lay(lambda v, lay: lay.data["segments/0/payloads.json"])),
     "sha256 mismatch"),
    # not a snapshot at all
    ("not_tar_text", H.not_tar_text, INVALID),
    ("random_bytes", H.random_bytes, INVALID),
    ("gzip_of_valid", H.gzipped, INVALID),
    ("zip_of_members", H.zipped, INVALID),
    ("bare_manifest_json", H.json_file, INVALID),
    ("empty_file", H.empty, INVALID),
    ("one_zero_block", H.zeros(512), INVALID),
    ("zero_record", H.zeros(10240), INVALID),
    # manifest content
    ("format_version_2_0", H.manifest_edit(lambda m, c: m.update(format_version="2.0")), "2.0"),
    ("format_version_10_3", H.manifest_edit(lambda m, c: m.update(format_version="10.3")),
     "10.3"),
    ("format_version_malformed",
     H.manifest_edit(lambda m, c: m.update(format_version="1.0.0")), INVALID),
    ("format_version_missing", H.manifest_edit(lambda m, c: m.pop("format_version")), INVALID),
    ("format_missing", H.manifest_edit(lambda m, c: m.pop("format")), INVALID),
    ("manifest_is_array", H.manifest_edit(lambda m, c: [m]), INVALID),
    ("manifest_not_json", H.manifest_raw(lambda raw: raw[:-3]), INVALID),
    ("manifest_empty", H.manifest_raw(lambda raw: b""), INVALID),
    ("manifest_deeply_nested", H.manifest_raw(lambda raw: b"[" * 100_000 + b"]" * 100_000),
     INVALID),
    ("manifest_header_declares_65MiB", H.manifest_declared_huge, INVALID),
    ("manifest_declares_200k_members", H.many_members(200_000), INVALID),
    ("members_not_a_list", H.manifest_edit(lambda m, c: m.update(members={"a": 1})), INVALID),
    ("member_negative_size",
     H.manifest_edit(lambda m, c: m["members"][0].update(size=-1)), INVALID),
    ("member_size_float", H.manifest_edit(lambda m, c: m["members"][0].update(size=277.0)),
     INVALID),
    ("member_sha_not_hex",
     H.manifest_edit(lambda m, c: m["members"][0].update(sha256="z" * 64)), INVALID),
    ("member_name_trailing_newline",
     H.manifest_declares(lambda c: "segments/0/ids.npy\n"), INVALID),
    ("segments_not_a_list", H.manifest_edit(lambda m, c: m.update(segments="abc")), INVALID),
    ("segment_index_traversal",
     H.manifest_edit(lambda m, c: m["segments"][0].update(index=f"../../../{ESCAPE}")),
     INVALID),
    ("segment_n_huge", H.manifest_edit(lambda m, c: m["segments"][0].update(n=10**12)),
     INVALID),
    ("segment_n_negative", H.manifest_edit(lambda m, c: m["segments"][0].update(n=-1)),
     INVALID),
    ("config_not_an_object", H.manifest_edit(lambda m, c: m.update(config=[1, 2])), ""),
    ("seq_not_an_integer", H.manifest_edit(lambda m, c: m.update(seq="abc")), ""),
    ("seq_a_list", H.manifest_edit(lambda m, c: m.update(seq=[1])), ""),
    # accepted, these leave a collection whose every later write fails (WAL seq out of range)
    ("seq_uint64_max", H.manifest_edit(lambda m, c: m.update(seq=2**64 - 1)), ""),
    ("seq_negative", H.manifest_edit(lambda m, c: m.update(seq=-5)), ""),
    # accepted, these break the one-live-row-per-id invariant (scroll shows duplicates)
    ("duplicate_live_ids_in_segment", H.member_content("ids.npy", _all_ids_equal), ""),
    ("segment_listed_twice",
     H.manifest_edit(lambda m, c: m["segments"].append(dict(m["segments"][0]))), ""),
    # tar bombs by declared size: refused from the manifest, before a byte is written
    ("bomb_one_member_1PiB", H.bomb_single, "declares"),
    ("bomb_members_sum_over_free_disk", H.bomb_sum, "declares"),
    # consistent archives (sizes and hashes right) with hostile member content
    ("vectors_npy_garbage", H.member_content("vectors-.npy", _npy_garbage), ""),
    ("vectors_npy_pickled_objects",
     H.member_content("vectors-.npy", lambda d: H.npy(np.array([{"a": 1}] * 8, dtype=object))),
     ""),
    ("vectors_npy_wrong_dtype",
     H.member_content("vectors-.npy", lambda d: H.npy(np.zeros((8, 3), np.float64))), INVALID),
    ("vectors_npy_wrong_shape",
     H.member_content("vectors-.npy", lambda d: H.npy(np.zeros((8, 4), np.float32))), INVALID),
    ("ids_npy_pickled_objects",
     H.member_content("ids.npy", lambda d: H.npy(np.array([{"a": 1}] * 8, dtype=object))),
     INVALID),
    ("ids_npy_garbage", H.member_content("ids.npy", _npy_garbage), INVALID),
    ("ids_npy_wrong_length",
     H.member_content("ids.npy", lambda d: H.npy(np.zeros(3, ID_DTYPE))), INVALID),
    ("deleted_npy_wrong_dtype",
     H.member_content("deleted.npy", lambda d: H.npy(np.zeros(8, np.int64))), INVALID),
    ("payloads_not_json", H.member_content("payloads.json", lambda d: b"{not json"), INVALID),
    ("payloads_not_a_list", H.member_content("payloads.json", lambda d: b'{"a": 1}'), INVALID),
    ("payloads_wrong_length", H.member_content("payloads.json", lambda d: b"[{}]"), INVALID),
    ("payloads_not_objects",
     H.member_content("payloads.json", lambda d: b"[1,2,3,4,5,6,7,8]"), INVALID),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case,build,fragment", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_archive_is_rejected_and_victim_untouched(
        lab: Lab, transport: str, case: str, build: H.Builder, fragment: str) -> None:
    data = build(lab.source, lab.ctx())
    assert data != lab.source
    r = send(lab, transport, data, f"hostile-{case}")
    try:
        assert_untouched(lab)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n(response: {r.status_code} {r.text})") from None
    assert_error(r, 400, fragment)


NEW_COLLECTION_MANIFESTS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("payload_schema_not_an_object", lambda m: m.update(payload_schema=[1])),
    ("payload_schema_unknown_type", lambda m: m.update(payload_schema={"k": "nonsense"})),
    ("payload_schema_entry_not_object", lambda m: m.update(payload_schema={"k": 5})),
    ("config_vectors_size_zero", lambda m: m["config"]["vectors"].update(size=0)),
    ("config_vectors_size_huge", lambda m: m["config"]["vectors"].update(size=10**9)),
    ("config_distance_bogus", lambda m: m["config"]["vectors"].update(distance="Bogus")),
    ("config_missing", lambda m: m.pop("config")),
]


@pytest.mark.parametrize("edit", [e[1] for e in NEW_COLLECTION_MANIFESTS],
                         ids=[e[0] for e in NEW_COLLECTION_MANIFESTS])
def test_hostile_manifest_for_new_collection_is_400_and_creates_nothing(
        lab: Lab, edit: Callable[[dict[str, Any]], Any], request: pytest.FixtureRequest) -> None:
    """Recovering into a collection that does not exist takes the snapshot's own config and
    payload schema: those must be validated as strictly as a create-collection request, or
    the collection is created and then fails to load at the next start."""
    name = "new_" + request.node.callspec.id.replace("-", "_")
    data = H.manifest_edit(lambda m, c: edit(m))(lab.source, lab.ctx())
    r = send(lab, "file", data, name, collection=name)
    created = lab.c.get(f"/collections/{name}").status_code != 404
    on_disk = (lab.storage / "collections" / name).exists()
    if created:
        lab.c.delete(f"/collections/{name}")
    assert not created and not on_disk, f"collection created: {r.status_code} {r.text}"
    assert_error(r, 400)
    assert_untouched(lab)


def test_format_version_error_names_the_version(lab: Lab) -> None:
    data = H.manifest_edit(lambda m, c: m.update(format_version="2.0"))(lab.source, lab.ctx())
    msg = assert_error(send(lab, "upload", data, "version-2"), 400, "2.0")
    assert "version" in msg.lower() and "newer" in msg.lower(), msg
    assert_untouched(lab)


def test_hostile_upload_with_wait_false_changes_nothing(lab: Lab) -> None:
    data = H.symlink_member(lab.source, lab.ctx())
    r = lab.c.post(f"/collections/{VICTIM}/snapshots/upload", params={"wait": "false"},
                   files={"snapshot": ("async-hostile.snapshot", data)})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
            p.name.startswith(".tmp-") for p in lab.storage.iterdir()):
        time.sleep(0.05)
    time.sleep(0.2)
    assert_untouched(lab)


# ---- recovery locations -------------------------------------------------------------------------


def _recover(lab: Lab, location: Any, collection: str = VICTIM, **extra: Any) -> httpx.Response:
    return lab.c.put(f"/collections/{collection}/snapshots/recover",
                     json={"location": location, **extra}, timeout=15)


@pytest.fixture(scope="module")
def places(lab: Lab) -> dict[str, Path]:
    """A valid snapshot outside the snapshots dir, and links/fifos/dirs inside it."""
    outside = lab.base / "outside"
    outside.mkdir()
    (outside / "valid.snapshot").write_bytes(lab.source)
    sibling = lab.base / "snaps-evil"  # shares the snapshots dir's name as a prefix
    sibling.mkdir()
    (sibling / "valid.snapshot").write_bytes(lab.source)
    link = lab.incoming / "link-outside.snapshot"
    link.symlink_to(outside / "valid.snapshot")
    link_etc = lab.incoming / "link-etc.snapshot"
    link_etc.symlink_to("/etc/hostname")
    fifo = lab.incoming / "fifo.snapshot"
    os.mkfifo(fifo)
    subdir = lab.incoming / "subdir.snapshot"
    subdir.mkdir()
    return {"outside": outside / "valid.snapshot", "sibling": sibling / "valid.snapshot",
            "link": link, "link_etc": link_etc, "fifo": fifo, "subdir": subdir}


LOCATIONS: list[tuple[str, Callable[[Lab, dict[str, Path]], Any], int, str]] = [
    ("etc_hostname", lambda lab, p: "file:///etc/hostname", 403, "inside the snapshots"),
    ("valid_snapshot_outside", lambda lab, p: p["outside"].as_uri(), 403, "inside the snapshots"),
    ("sibling_dir_sharing_prefix", lambda lab, p: p["sibling"].as_uri(), 403,
     "inside the snapshots"),
    ("dotdot_out_of_snapshots",
     lambda lab, p: f"file://{lab.snaps}/incoming/../../outside/valid.snapshot", 403,
     "inside the snapshots"),
    ("percent_encoded_dotdot",
     lambda lab, p: f"file://{lab.snaps}/incoming/%2E%2E/%2E%2E/outside/valid.snapshot", 403,
     "inside the snapshots"),
    ("symlink_inside_to_outside", lambda lab, p: p["link"].as_uri(), 403,
     "inside the snapshots"),
    ("symlink_inside_to_etc", lambda lab, p: p["link_etc"].as_uri(), 403,
     "inside the snapshots"),
    ("localhost_host_outside", lambda lab, p: "file://localhost" + str(p["outside"]), 403,
     "inside the snapshots"),
    ("fifo_inside", lambda lab, p: p["fifo"].as_uri(), (400, 403), ""),
    ("directory_inside", lambda lab, p: p["subdir"].as_uri(), (400, 403), ""),
    ("snapshots_root_itself", lambda lab, p: lab.snaps.as_uri(), (400, 403), ""),
    ("other_host", lambda lab, p: "file://otherhost/x.snapshot", 400, ""),
    ("other_host_real_path", lambda lab, p: f"file://otherhost{p['outside']}", 400, ""),
    ("file_scheme_relative", lambda lab, p: "file:incoming/x.snapshot", 400, ""),
    ("relative_no_scheme", lambda lab, p: "incoming/link-outside.snapshot", 400, ""),
    ("bare_name", lambda lab, p: "valid.snapshot", 400, ""),
    ("dot_relative", lambda lab, p: "./snaps/incoming/x.snapshot", 400, ""),
    ("absolute_path_no_scheme", lambda lab, p: str(p["outside"]), 400, ""),
    ("scheme_relative_url", lambda lab, p: "//127.0.0.1/x.snapshot", 400, ""),
    ("missing_file_inside", lambda lab, p: f"file://{lab.snaps}/incoming/nope.snapshot", 400,
     "does not exist"),
    ("ftp", lambda lab, p: "ftp://127.0.0.1/x.snapshot", 400, ""),
    ("gopher", lambda lab, p: "gopher://127.0.0.1:70/x", 400, ""),
    ("data_url", lambda lab, p: "data:application/x-tar;base64,AAAA", 400, ""),
    ("windows_path", lambda lab, p: "C:\\snapshots\\x.snapshot", 400, ""),
    ("empty_location", lambda lab, p: "", 400, ""),
    ("location_not_a_string", lambda lab, p: 123, (400, 422), ""),
    ("location_null", lambda lab, p: None, (400, 422), ""),
    ("http_404", lambda lab, p: f"{lab.web_url}/does-not-exist.snapshot", 400, "404"),
    ("http_500", lambda lab, p: f"{lab.web_url}/500", 400, "500"),
    ("http_redirect_to_file", lambda lab, p: f"{lab.web_url}/redirect", 400, ""),
    ("http_connection_refused", lambda lab, p: f"http://127.0.0.1:{free_port()}/x.snapshot",
     400, ""),
]


@pytest.mark.parametrize("case,where,status,fragment", LOCATIONS,
                         ids=[c[0] for c in LOCATIONS])
def test_bad_location_is_refused(lab: Lab, places: dict[str, Path], case: str,
                                 where: Callable[[Lab, dict[str, Path]], Any],
                                 status: int | tuple[int, ...], fragment: str) -> None:
    lab.web.routes["/500"] = (500, {}, lab.source)  # type: ignore[attr-defined]
    lab.web.routes["/redirect"] = (  # type: ignore[attr-defined]
        302, {"Location": places["outside"].as_uri()}, b"")
    assert_error(_recover(lab, where(lab, places)), status, fragment)
    assert_untouched(lab)
    assert places["outside"].read_bytes() == lab.source


@pytest.mark.parametrize("location", ["http", "https"])
def test_url_recovery_disabled_is_forbidden(tmp_path: Path, lab: Lab, location: str) -> None:
    srv = QuiverServer(tmp_path / "storage", env={
        "QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp_path / "snaps"),
        "QUIVER__STORAGE__ENABLE_SNAPSHOT_URL_RECOVERY": "false"}).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            install_httpx_hook(c)
            _make(c, VICTIM, VEC, range(1, 6), "victim")
            before = _points(c, VICTIM)
            lab.web.routes["/ok.snapshot"] = (200, {}, lab.source)  # type: ignore[attr-defined]
            url = f"{lab.web_url}/ok.snapshot".replace("http:", f"{location}:")
            r = c.put(f"/collections/{VICTIM}/snapshots/recover", json={"location": url})
            assert_error(r, 403, "disabled")
            assert _points(c, VICTIM) == before
            assert not [p for p in (tmp_path / "storage").iterdir()
                        if p.name.startswith(".tmp-")]
    finally:
        srv.stop()


# ---- parameters ---------------------------------------------------------------------------------


def _send_param(lab: Lab, transport: str, tag: str, key: str, value: str) -> Any:
    """Send the valid snapshot with one recovery parameter: a query parameter for uploads,
    a JSON body field for recover-from-location."""
    if transport == "upload":
        return send(lab, transport, lab.source, tag, params={key: value})
    return send(lab, transport, lab.source, tag, body={key: value})


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("priority", ["bogus", "SNAPSHOT", ""], ids=["bogus", "upper", "empty"])
def test_invalid_priority_is_400(lab: Lab, transport: str, priority: str) -> None:
    assert_error(_send_param(lab, transport, "prio", "priority", priority), 400, "")
    assert_untouched(lab)


def test_invalid_priority_type_in_body_is_400(lab: Lab) -> None:
    assert_error(send(lab, "file", lab.source, "prio-int", body={"priority": 7}), 400)
    assert_untouched(lab)


MALFORMED_CHECKSUMS = [("short", "ab" * 10), ("63_hex", "a" * 63), ("65_hex", "a" * 65),
                       ("not_hex", "g" * 64), ("hex_with_prefix", "sha256:" + "a" * 64),
                       ("whitespace", " " + "a" * 64)]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("checksum", [c[1] for c in MALFORMED_CHECKSUMS],
                         ids=[c[0] for c in MALFORMED_CHECKSUMS])
def test_malformed_checksum_is_422(lab: Lab, transport: str, checksum: str) -> None:
    assert_error(_send_param(lab, transport, "cks", "checksum", checksum), 422, "")
    assert_untouched(lab)


def test_checksum_of_wrong_type_is_422(lab: Lab) -> None:
    assert_error(send(lab, "file", lab.source, "cks-int", body={"checksum": 12345}), 422)
    assert_untouched(lab)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_checksum_mismatch_is_400_and_names_both(lab: Lab, transport: str) -> None:
    expected = hashlib.sha256(b"some other file").hexdigest()
    actual = hashlib.sha256(lab.source).hexdigest()
    if transport == "upload":
        r = send(lab, transport, lab.source, "mismatch", params={"checksum": expected})
    else:
        r = send(lab, transport, lab.source, "mismatch", body={"checksum": expected})
    assert_error(r, 400, f"Checksum mismatch: expected {expected}, actual {actual}")
    assert_untouched(lab)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_checksum_of_hostile_archive_matches_but_archive_still_rejected(
        lab: Lab, transport: str) -> None:
    """A correct whole-file checksum vouches for transport, not content."""
    data = H.symlink_member(lab.source, lab.ctx())
    cks = hashlib.sha256(data).hexdigest()
    if transport == "upload":
        r = send(lab, transport, data, "cks-hostile", params={"checksum": cks})
    else:
        r = send(lab, transport, data, "cks-hostile", body={"checksum": cks})
    assert_error(r, 400, INVALID)
    assert_untouched(lab)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_incompatible_vector_config_over_existing_is_400(lab: Lab, transport: str) -> None:
    r = send(lab, transport, lab.dim4, "dim4")
    assert_error(r, 400, "not compatible")
    assert_untouched(lab)


# ---- malicious snapshot and collection names ------------------------------------------------------


@pytest.fixture(scope="module")
def name_traps(lab: Lab) -> dict[str, Path]:
    d = lab.snaps / VICTIM
    hidden = d / ".hidden.snapshot"
    hidden.write_bytes(b"hidden")
    target = lab.base / "outside-target.snapshot"
    target.write_bytes(b"precious")
    (d / "link-out.snapshot").symlink_to(target)
    (d / "subdir.snapshot").mkdir()
    return {"hidden": hidden, "target": target}


SNAPSHOT_NAMES = [
    ("dotdot", "%2E%2E"),
    ("dot", "%2E"),
    ("dotdot_slash_encoded", "..%2Fsource%2Fx.snapshot"),
    ("dotdot_to_storage", "%2E%2E%2F%2E%2E%2Fstorage%2Fnode_id"),
    ("absolute_encoded", "%2Fetc%2Fhostname"),
    ("leading_dot_existing", ".hidden.snapshot"),
    ("nul_in_name", "x%00.snapshot"),
    ("nul_after_good_name", "{good}%00"),
    ("nul_only", "%00"),
    ("backslash_dotdot", "..%5C..%5Cstorage%5Cnode_id"),
    ("symlink_to_outside", "link-out.snapshot"),
    ("directory", "subdir.snapshot"),
    ("other_collections_dir", "..%2Fsource"),
]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("raw", [n[1] for n in SNAPSHOT_NAMES], ids=[n[0] for n in SNAPSHOT_NAMES])
def test_malicious_snapshot_name_is_404_and_nothing_deleted(
        lab: Lab, name_traps: dict[str, Path], method: str, raw: str) -> None:
    raw = raw.replace("{good}", lab.good_name)
    r = lab.c.request(method, f"/collections/{VICTIM}/snapshots/{raw}")
    assert_error(r, 404, "")
    assert name_traps["hidden"].read_bytes() == b"hidden"
    assert name_traps["target"].read_bytes() == b"precious"
    assert (lab.snaps / VICTIM / "link-out.snapshot").is_symlink()
    assert (lab.storage / "node_id").exists()
    assert (lab.snaps / VICTIM / (lab.good_name + ".checksum")).exists()
    listed = [s["name"] for s in lab.c.get(f"/collections/{VICTIM}/snapshots").json()["result"]]
    assert lab.good_name in listed
    assert_untouched(lab)


COLLECTION_NAMES = [
    ("dotdot", "%2E%2E"),
    ("dot", "%2E"),
    ("leading_dot", ".hidden"),
    ("dotdot_slash_encoded", "..%2F..%2Fescaped"),
    ("lt", "a%3Cb"),
    ("backslash", "..%5C..%5Cescaped"),
    ("nul", "a%00b"),
    ("newline", "a%0Ab"),
    ("colon", "a:b"),
    ("too_long", "x" * 300),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("raw", [n[1] for n in COLLECTION_NAMES],
                         ids=[n[0] for n in COLLECTION_NAMES])
def test_malicious_collection_name_on_recover_or_upload_is_4xx(
        lab: Lab, transport: str, raw: str) -> None:
    before_storage = sorted(os.listdir(lab.storage))
    before_colls = sorted(os.listdir(lab.storage / "collections"))
    before_snaps = sorted(os.listdir(lab.snaps))
    before_base = sorted(os.listdir(lab.base))
    r = send(lab, transport, lab.source, "valid-for-bad-name", collection=raw)
    assert 400 <= r.status_code < 500, r.text
    assert_error(r, r.status_code)
    assert sorted(os.listdir(lab.storage)) == before_storage
    assert sorted(os.listdir(lab.storage / "collections")) == before_colls
    assert sorted(os.listdir(lab.snaps)) == before_snaps
    assert sorted(os.listdir(lab.base)) == before_base
    assert not (lab.base.parent / "escaped").exists()
    assert_untouched(lab)


UPLOAD_FILENAMES = [
    ("dotdot_prefix", "../../x-traversal.snapshot", "x-traversal.snapshot"),
    ("deep_dotdot", "a/b/../../../../../y-traversal.snapshot", "y-traversal.snapshot"),
    ("absolute", "/tmp/z-absolute.snapshot", "z-absolute.snapshot"),
    ("backslashes", "..\\..\\w-backslash.snapshot", None),
    ("leading_dot", ".hidden-upload.snapshot", None),
    ("only_dotdot", "..", None),
    ("trailing_slash", "../../", None),
]


@pytest.mark.parametrize("filename,stored", [u[1:] for u in UPLOAD_FILENAMES],
                         ids=[u[0] for u in UPLOAD_FILENAMES])
def test_upload_filename_is_confined_to_the_collection_snapshot_dir(
        lab: Lab, filename: str, stored: str | None) -> None:
    coll = "scratch"
    d = lab.snaps / coll
    before = set(os.listdir(d)) if d.exists() else set()
    before_tree = {p for p in lab.base.rglob("*") if d not in p.parents and p != d}
    r = lab.c.post(f"/collections/{coll}/snapshots/upload",
                   files={"snapshot": (filename, lab.source, "application/octet-stream")})
    assert r.status_code == 200, r.text
    assert _points(lab.c, coll) == lab.source_points
    new = set(os.listdir(d)) - before
    if stored is not None:
        assert (d / stored).read_bytes() == lab.source
    else:
        # one archive under a fresh UUID name, plus its checksum sidecar
        archives = {n for n in new if not n.endswith(".checksum")}
        assert len(archives) <= 1 and all(re.fullmatch(r"[0-9a-f-]{36}\.snapshot", n)
                                          for n in archives), new
        assert new - archives <= {n + ".checksum" for n in archives}, new
    after_tree = {p for p in lab.base.rglob("*") if d not in p.parents and p != d}
    escaped = {p for p in after_tree - before_tree
               if lab.storage not in p.parents and p.parent != lab.snaps / ".tmp"}
    assert not escaped, escaped
    tail = filename.replace("\\", "/").rstrip("/").split("/")[-1]
    for p in (Path("/tmp") / tail, lab.base / tail, lab.snaps / tail, lab.base.parent / tail):
        if tail not in ("", "..", "."):
            assert not p.exists() or p in before_tree, p
    assert_untouched(lab)


# ---- malformed multipart ------------------------------------------------------------------------


def test_upload_without_snapshot_field_is_400(lab: Lab) -> None:
    r = lab.c.post(f"/collections/{VICTIM}/snapshots/upload",
                   files={"other": ("x.snapshot", lab.source)})
    assert_error(r, 400, "snapshot")
    assert_untouched(lab)


def test_upload_snapshot_as_text_field_is_400(lab: Lab) -> None:
    r = lab.c.post(f"/collections/{VICTIM}/snapshots/upload", data={"snapshot": "hello"},
                   files={"other": ("x.txt", b"x")})
    assert_error(r, 400, "snapshot")
    assert_untouched(lab)


def test_upload_raw_body_not_multipart_is_400(lab: Lab) -> None:
    r = lab.c.post(f"/collections/{VICTIM}/snapshots/upload", content=lab.source,
                   headers={"content-type": "application/octet-stream"})
    assert_error(r, 400, "")
    assert_untouched(lab)


def test_upload_two_files_is_4xx(lab: Lab) -> None:
    r = lab.c.post(f"/collections/{VICTIM}/snapshots/upload",
                   files=[("snapshot", ("a.snapshot", lab.source)),
                          ("snapshot", ("b.snapshot", lab.source))])
    assert_error(r, (400, 413, 422), "")
    assert_untouched(lab)


def test_upload_malformed_multipart_is_4xx(lab: Lab) -> None:
    body = (b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"snapshot\"; "
            b"filename=\"x.snapshot\"\r\n\r\n" + lab.source[:1000])  # no closing boundary
    r = lab.c.post(f"/collections/{VICTIM}/snapshots/upload", content=body,
                   headers={"content-type": "multipart/form-data; boundary=BOUNDARY"})
    assert_error(r, (400, 422), "")
    assert_untouched(lab)
