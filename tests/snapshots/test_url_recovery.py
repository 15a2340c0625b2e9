"""Recovery from http(s) URLs: redirects followed by hand and re-checked, an optional host
allow-list, the api-key sent to the original host only, and a size cap — each through the
real server, with the collection untouched whenever a download is refused."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import web_stub
from server import QuiverServer


@pytest.fixture
def web() -> Iterator[ThreadingHTTPServer]:
    with web_stub.serving() as srv:
        yield srv


def _start(tmp: Path, **env: str) -> QuiverServer:
    return QuiverServer(tmp / "storage", env={"QUIVER__STORAGE__SNAPSHOTS_PATH": str(tmp / "s"),
                                              **env}).start()


def _archive(c: httpx.Client) -> bytes:
    assert c.put("/collections/src", json={"vectors": {"size": 3, "distance": "Dot"}}
                 ).status_code == 200
    pts = [{"id": i, "vector": [i, 1.0, 2.0]} for i in range(20)]
    assert c.put("/collections/src/points?wait=true", json={"points": pts}).status_code == 200
    name = c.post("/collections/src/snapshots").json()["result"]["name"]
    return c.get(f"/collections/src/snapshots/{name}").content


def _recover(c: httpx.Client, name: str, url: str, **extra: Any) -> httpx.Response:
    return c.put(f"/collections/{name}/snapshots/recover", json={"location": url, **extra})


def test_redirects_are_followed_rechecked_and_keys_stay_home(tmp_path: Path, web) -> None:
    port = web.server_address[1]
    srv = _start(tmp_path, QUIVER__STORAGE__SNAPSHOT_URL_ALLOWED_HOSTS="[127.0.0.1, localhost]")
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            web.routes["/snap"] = (200, {}, _archive(c))
            web.routes["/hop"] = (302, {"Location": "/snap"}, b"")
            web.routes["/away"] = (302, {"Location": f"http://localhost:{port}/snap"}, b"")
            web.routes["/loop"] = (302, {"Location": "/loop"}, b"")
            web.routes["/file"] = (302, {"Location": "file:///etc/passwd"}, b"")
            base = f"http://127.0.0.1:{port}"
            r = _recover(c, "a", f"{base}/hop", api_key="secret")
            assert r.status_code == 200, r.text
            assert c.post("/collections/a/points/count", json={}).json()["result"]["count"] == 20
            web.seen.clear()
            assert _recover(c, "b", f"{base}/away", api_key="secret").status_code == 200
            assert web.seen == [("/away", "secret"), ("/snap", None)]  # not sent cross-host
            r = _recover(c, "c", f"{base}/loop")
            assert r.status_code == 400 and "redirects" in r.json()["status"]["error"]
            r = _recover(c, "d", f"{base}/file")
            assert r.status_code == 400 and "http(s)" in r.json()["status"]["error"]
            for name in ("c", "d"):
                assert c.get(f"/collections/{name}").status_code == 404
    finally:
        srv.stop()


def test_allow_list_and_size_cap_refuse_before_anything_changes(tmp_path: Path, web) -> None:
    port = web.server_address[1]
    srv = _start(tmp_path, QUIVER__STORAGE__SNAPSHOT_URL_ALLOWED_HOSTS="[localhost]",
                 QUIVER__STORAGE__SNAPSHOT_URL_MAX_BYTES="4096")
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            archive = _archive(c)
            assert len(archive) > 4096
            web.routes["/snap"] = (200, {}, archive)
            web.routes["/sneaky"] = (302, {"Location": f"http://127.0.0.1:{port}/snap"}, b"")
            r = _recover(c, "src", f"http://127.0.0.1:{port}/snap")
            assert r.status_code == 403 and "not allowed" in r.json()["status"]["error"]
            r = _recover(c, "src", f"http://localhost:{port}/sneaky")  # redirect off the list
            assert r.status_code == 403, r.text
            r = _recover(c, "src", f"http://localhost:{port}/snap")
            assert r.status_code == 400 and "larger than 4096" in r.json()["status"]["error"]
            assert c.post("/collections/src/points/count", json={}).json()["result"]["count"] == 20
    finally:
        srv.stop()


def test_a_download_that_fills_the_disk_is_507(tmp_path: Path, web: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC while writing the download is the disk's fault (507), not a server error."""
    import errno  # noqa: PLC0415

    from engine.catalog import Catalog  # noqa: PLC0415
    from engine.errors import StorageFull  # noqa: PLC0415
    from snapshots.recovery import Recovery  # noqa: PLC0415

    web.routes["/big.snapshot"] = (200, {}, b"x" * 4096)

    class Full:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    cat = Catalog(str(tmp_path / "storage"))
    cat.load()
    monkeypatch.setattr("snapshots.recovery.open", Full, raising=False)
    url = f"http://127.0.0.1:{web.server_address[1]}/big.snapshot"
    with pytest.raises(StorageFull):
        Recovery(cat, str(tmp_path / "s")).download(url, str(tmp_path / "d.snapshot"), None)
    cat.close()
