"""The dashboard (/dashboard) in a real browser: Debian's headless Chromium driven by Playwright,
against a real `quiver serve`. Every page loads without a console error under the page's own
Content-Security-Policy; what the pages show is compared with what the REST API answers;
snapshots are created, uploaded (the progress bar must advance) and deleted through the UI;
a server with an API key makes the page ask for it and keep it in sessionStorage only; axe-core
finds no serious or critical accessibility violation. Screenshots go to the test's temp dir
(QUIVER_UPDATE_SCREENSHOTS=1: also docs/dashboard/).
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from server import QuiverServer

PAGES = ["collections", "points", "search", "snapshots", "tasks", "health"]
DIM = 16
CITIES = ["Paris", "Berlin", "Lisbon", "Oslo"]
KEY = "dashboard-test-key"
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"  # axe-core, MPL-2.0
Tab = Any  # conftest.Tab: a page, its context and the errors it saw


def seed(rest: httpx.Client, name: str, n: int, dim: int = DIM, seed_: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed_)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    r = rest.put(f"/collections/{name}", json={"vectors": {"size": dim, "distance": "Cosine"}})
    assert r.status_code == 200, r.text
    r = rest.put(f"/collections/{name}/index?wait=true",
                 json={"field_name": "city", "field_schema": "keyword"})
    assert r.status_code == 200, r.text
    for start in range(0, n, 1000):
        points = [{"id": i, "vector": vectors[i].tolist(),
                   "payload": {"city": CITIES[i % len(CITIES)], "n": i}}
                  for i in range(start, min(n, start + 1000))]
        r = rest.put(f"/collections/{name}/points?wait=true", json={"points": points})
        assert r.status_code == 200, r.text
    return vectors


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, QuiverServer]]:
    """A plain server and one with an API key, started side by side (a start is mostly
    imports: the two overlap)."""
    made = {}
    for name, env in (("plain", {}), ("keyed", {"QUIVER__SERVICE__API_KEY": KEY})):
        base = tmp_path_factory.mktemp(f"dash-{name}")
        made[name] = QuiverServer(base / "storage", env={
            **env, "QUIVER__STORAGE__SNAPSHOTS_PATH": str(base / "snaps")})
    with ThreadPoolExecutor(2) as pool:
        started = [pool.submit(s.start) for s in made.values()]
    try:
        for f in started:
            f.result()
        yield made
    finally:
        for s in made.values():
            s.stop()


@pytest.fixture(scope="module")
def srv(servers: dict[str, QuiverServer]) -> QuiverServer:
    return servers["plain"]


@pytest.fixture(scope="module")
def keyed(servers: dict[str, QuiverServer]) -> QuiverServer:
    return servers["keyed"]


@pytest.fixture(scope="module")
def rest(srv: QuiverServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def coll(rest: httpx.Client) -> tuple[str, np.ndarray]:
    """One collection the read-only tests share: 300 points, a keyword index on `city`."""
    return "dash_points", seed(rest, "dash_points", 300)


def goto(tab: Tab, srv: QuiverServer, page: str, query: str = "") -> None:
    tab.page.goto(f"{srv.url}/dashboard#/{page}{query}")
    tab.ready(page)


def route_to(tab: Tab, page: str, query: str = "") -> None:
    """Navigate inside the app (a hash change, no reload)."""
    tab.page.evaluate("h => { location.hash = h }", f"#/{page}{query}")
    tab.ready(page)


def no_errors(tab: Tab) -> None:
    assert tab.errors == [], "\n".join(tab.errors)


def cells(tab: Tab, selector: str) -> list[str]:
    return tab.page.locator(selector).all_inner_texts()


# --------------------------------------------------------------------------- serving


def raw_get(srv: QuiverServer, path: str) -> tuple[int, dict[str, str], bytes]:
    """A request whose path is sent as written (httpx would resolve the dot segments)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_static_files_types_and_no_traversal(srv: QuiverServer, rest: httpx.Client) -> None:
    index = Path(__file__).resolve().parents[2] / "api" / "static" / "dashboard" / "index.html"
    for path in ("/dashboard", "/dashboard/", "/dashboard/index.html"):
        r = rest.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.content == index.read_bytes()
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    for path, ctype in (("/dashboard/app.js", "text/javascript; charset=utf-8"),
                        ("/dashboard/style.css", "text/css; charset=utf-8"),
                        ("/dashboard/favicon.svg", "image/svg+xml")):
        r = rest.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"] == ctype
    assert rest.head("/dashboard/app.js").status_code == 200
    # nothing outside the static folder, however the path is spelled
    secret = (Path(__file__).resolve().parents[2] / "api" / "auth.py").read_bytes()[:200]
    for path in ("/dashboard/../auth.py", "/dashboard/%2e%2e/auth.py", "/dashboard/..%2fauth.py",
                 "/dashboard/%2e%2e%2f%2e%2e%2fapi%2fauth.py", "/dashboard/..%5cauth.py",
                 "/dashboard/../../api/auth.py", "/dashboard//etc/passwd",
                 "/dashboard/%2fetc%2fpasswd", "/dashboard/.hidden", "/dashboard/nope.js",
                 "/dashboard/index.html%00.js", "/dashboard/../routes/dashboard.py"):
        status, headers, body = raw_get(srv, path)
        assert status in (400, 404), (path, status)
        assert secret not in body and b"root:" not in body, path
    assert rest.get("/dashboard/app.js/x").status_code == 404


# --------------------------------------------------------------------------- pages


def test_every_page_loads_without_console_errors(srv: QuiverServer, coll: Any, open_tab: Any,
                                                 shoot: Any) -> None:
    tab = open_tab()
    goto(tab, srv, "collections")
    for page in PAGES:
        route_to(tab, page)
        assert tab.page.locator("h1").first.is_visible()
        current = tab.page.locator('nav a[aria-current="page"]')
        assert current.get_attribute("data-page") == page
        shoot(tab, f"load-{page}", docs=False)
    # a direct load of each page (a bookmark) works too
    for page in PAGES:
        goto(tab, srv, page)
    no_errors(tab)


def test_accessibility_axe(srv: QuiverServer, coll: Any, open_tab: Any) -> None:
    """axe-core (vendored, MPL-2.0) on every page: no serious or critical violation. axe is
    injected as a script, which the page's CSP forbids: this context bypasses it."""
    tab = open_tab(bypass_csp=True)
    goto(tab, srv, "collections", "?c=dash_points")
    tab.page.add_script_tag(path=str(AXE))
    found = {}
    for page in PAGES:
        route_to(tab, page, "?c=dash_points")
        if page == "health":
            tab.page.wait_for_selector("#chart-requests")
        violations = tab.page.evaluate("""async () => {
            const r = await axe.run(document, {resultTypes: ["violations"]});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}));
        }""")
        bad = [v for v in violations if v["impact"] in ("serious", "critical")]
        if bad:
            found[page] = bad
    # with a dialog open as well
    tab.page.click("#key-change")
    tab.page.wait_for_selector("#key-dialog[open]")
    violations = tab.page.evaluate("async () => (await axe.run(document)).violations"
                                   ".map(v => ({id: v.id, impact: v.impact}))")
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    if bad:
        found["key dialog"] = bad
    assert not found, json.dumps(found, indent=1)


def test_collections_page_matches_rest(srv: QuiverServer, rest: httpx.Client, coll: Any,
                                       open_tab: Any, shoot: Any) -> None:
    name, _ = coll
    tab = open_tab()
    goto(tab, srv, "collections")
    info = rest.get(f"/collections/{name}").json()["result"]
    row = tab.page.locator("#collections-table tbody tr", has_text=name)
    texts = row.locator("td").all_inner_texts()
    assert texts[0] == info["status"]
    assert texts[1].replace(",", "") == str(info["points_count"])
    assert texts[2] == str(info["segments_count"])
    telemetry = rest.get("/telemetry").json()["result"]["quiver"]
    where = next(c for c in telemetry["collections"] if c["id"] == name)
    assert texts[5] == where["device"]
    assert texts[6] == str(where["segments_on_device"])
    assert texts[7] == str(where["segments_on_host"])

    row.get_by_role("link", name=name).click()
    tab.ready("collections")
    detail = tab.page.locator("#collection-detail")
    assert detail.locator("h2").inner_text() == f"Collection {name}"
    schema = cells(tab, "#schema-table tbody tr > *")
    entry = info["payload_schema"]["city"]
    assert schema[:3] == ["city", entry["data_type"], str(entry["points"])]
    shown = json.loads(detail.locator("pre.json").inner_text())
    assert shown == info["config"]
    assert detail.get_by_text("Device residency").is_visible()
    assert detail.get_by_text("Index status").is_visible()
    shoot(tab, "collections")
    no_errors(tab)


def test_points_browser_scroll_filter_and_view(srv: QuiverServer, rest: httpx.Client,
                                               coll: Any, open_tab: Any, shoot: Any) -> None:
    name, vectors = coll
    tab = open_tab()
    goto(tab, srv, "points", f"?c={name}")
    tab.page.wait_for_selector("#points-table")
    ids = cells(tab, "#points-table tbody tr td:first-child")
    first = rest.post(f"/collections/{name}/points/scroll", json={"limit": 20}).json()["result"]
    assert ids == [str(p["id"]) for p in first["points"]]
    # the next page is the REST API's next page
    tab.page.click("#points-next")
    tab.page.wait_for_selector("#points-table caption:has-text('Page 2')")
    second = rest.post(f"/collections/{name}/points/scroll",
                       json={"limit": 20, "offset": first["next_page_offset"]}).json()["result"]
    assert cells(tab, "#points-table tbody tr td:first-child") == \
        [str(p["id"]) for p in second["points"]]

    flt = {"must": [{"key": "city", "match": {"value": "Lisbon"}}]}
    tab.page.fill("#points-filter", json.dumps(flt))
    tab.page.fill("#points-limit", "15")
    tab.page.click("#points-form button[type=submit]")
    tab.page.wait_for_selector("#points-table caption:has-text('Page 1')")
    want = rest.post(f"/collections/{name}/points/scroll",
                     json={"limit": 15, "filter": flt}).json()["result"]["points"]
    assert cells(tab, "#points-table tbody tr td:first-child") == [str(p["id"]) for p in want]
    payloads = [json.loads(t) for t in cells(tab, "#points-table tbody tr td:nth-child(2)")]
    assert payloads == [p["payload"] for p in want]

    pid = want[3]["id"]
    tab.page.get_by_role("button", name=f"View point {pid}", exact=True).click()
    tab.page.wait_for_selector("#point-title")
    pres = tab.page.locator("#point-detail pre.json").all_inner_texts()
    point = rest.get(f"/collections/{name}/points/{pid}").json()["result"]
    assert json.loads(pres[0]) == point["payload"]
    assert json.loads(pres[1]) == point["vector"]
    np.testing.assert_allclose(json.loads(pres[1]), vectors[pid] / np.linalg.norm(vectors[pid]),
                               rtol=1e-5, atol=1e-6)
    shoot(tab, "points")

    tab.page.fill("#points-filter", "{not json")
    tab.page.click("#points-form button[type=submit]")
    assert "not valid JSON" in tab.page.locator("#points-out [role=alert]").inner_text()
    no_errors(tab)


def test_search_console_scores_equal_rest(srv: QuiverServer, rest: httpx.Client, coll: Any,
                                          open_tab: Any, shoot: Any) -> None:
    name, _ = coll
    rng = np.random.default_rng(7)
    query = rng.standard_normal(DIM).astype(np.float32).tolist()
    tab = open_tab()
    goto(tab, srv, "search", f"?c={name}")

    def shown() -> list[tuple[str, float]]:
        ids = cells(tab, "#search-table tbody tr td:nth-child(2)")
        scores = [float(s) for s in
                  tab.page.locator("#search-table td.score").evaluate_all(
                      "tds => tds.map(td => td.dataset.score)")]
        return list(zip(ids, scores, strict=True))

    def rest_query(body: dict[str, Any]) -> list[tuple[str, float]]:
        r = rest.post(f"/collections/{name}/points/query", json=body)
        assert r.status_code == 200, r.text
        return [(str(p["id"]), p["score"]) for p in r.json()["result"]["points"]]

    tab.page.fill("#search-vector", json.dumps(query))
    tab.page.fill("#search-limit", "7")
    tab.page.click("#search-form button[type=submit]")
    tab.page.wait_for_selector("#search-table")
    assert shown() == rest_query({"query": query, "limit": 7})
    assert len(shown()) == 7

    flt = {"must": [{"key": "city", "match": {"value": "Oslo"}}]}
    tab.page.fill("#search-filter", json.dumps(flt))
    tab.page.check("#search-exact")
    tab.page.fill("#search-ef", "64")
    tab.page.click("#search-form button[type=submit]")
    tab.page.wait_for_selector("#search-table caption:has-text('7 results')")
    tab.page.wait_for_function(
        "() => [...document.querySelectorAll('#search-table tbody tr td:nth-child(4)')]"
        ".every(td => td.textContent.includes('Oslo'))")
    assert shown() == rest_query({"query": query, "limit": 7, "filter": flt,
                                  "params": {"exact": True, "hnsw_ef": 64}})
    shoot(tab, "search")

    # by point id: the point itself is left out, as the REST API does
    tab.page.fill("#search-filter", "")
    tab.page.check("#mode-id")
    tab.page.fill("#search-id", "5")
    tab.page.click("#search-form button[type=submit]")
    tab.page.wait_for_function(
        "() => document.querySelector('#search-table caption') && "
        "!document.querySelector('#search-table tbody').textContent.includes('Oslo') || "
        "[...document.querySelectorAll('#search-table tbody tr td:nth-child(4)')]"
        ".some(td => !td.textContent.includes('Oslo'))")
    want = rest_query({"query": 5, "limit": 7, "params": {"exact": True, "hnsw_ef": 64}})
    assert shown() == want
    assert "5" not in [i for i, _ in want]
    no_errors(tab)


# --------------------------------------------------------------------------- snapshots


def test_snapshot_create_list_and_delete_with_confirmation(
        srv: QuiverServer, rest: httpx.Client, open_tab: Any, shoot: Any) -> None:
    name = "dash_snap"
    seed(rest, name, 120, seed_=3)
    tab = open_tab()
    goto(tab, srv, "snapshots", f"?c={name}")
    tab.page.wait_for_selector("#snap-none")
    tab.page.click("#snap-create")
    tab.page.wait_for_selector("#snap-create-out .okmsg")
    tab.page.wait_for_selector("#snap-table")
    listed = rest.get(f"/collections/{name}/snapshots").json()["result"]
    assert len(listed) == 1
    snap = listed[0]
    row = tab.page.locator(f'#snap-table tr[data-name="{snap["name"]}"]')
    assert row.locator("td.size").get_attribute("data-bytes") == str(snap["size"])
    assert row.locator("code.checksum").inner_text() == snap["checksum"]
    assert re.fullmatch(r"[0-9a-f]{64}", snap["checksum"])
    # the task that made it ran to the end
    assert tab.page.locator("#snap-create-progress").evaluate("p => p.value") == 1
    shoot(tab, "snapshots")

    # delete: the dialog asks first; "Cancel" keeps the snapshot
    row.get_by_role("button", name=f"Delete {snap['name']}").click()
    dialog = tab.page.locator("#confirm-dialog")
    assert dialog.is_visible()
    assert snap["name"] in dialog.locator("#confirm-text").inner_text()
    shoot(tab, "snapshots-delete-confirm")
    tab.page.click("#confirm-no")
    assert not dialog.is_visible()
    assert len(rest.get(f"/collections/{name}/snapshots").json()["result"]) == 1
    row.get_by_role("button", name=f"Delete {snap['name']}").click()
    tab.page.click("#confirm-yes")
    tab.page.wait_for_selector("#snap-none")
    assert rest.get(f"/collections/{name}/snapshots").json()["result"] == []
    no_errors(tab)


def test_upload_and_recover_with_progress(srv: QuiverServer, rest: httpx.Client,
                                          open_tab: Any, shoot: Any, tmp_path: Path) -> None:
    """The upload's progress bar advances (the browser's upload is throttled to 1 MiB/s so
    the bar has time to move), then the recovery task is followed to its end."""
    source = "dash_src"
    seed(rest, source, 3000, dim=64, seed_=11)
    r = rest.post(f"/collections/{source}/snapshots?wait=true")
    assert r.status_code == 200, r.text
    snap = r.json()["result"]
    archive = tmp_path / snap["name"]
    archive.write_bytes(rest.get(f"/collections/{source}/snapshots/{snap['name']}").content)
    assert archive.stat().st_size == snap["size"] > 600_000

    tab = open_tab()
    goto(tab, srv, "snapshots", f"?c={source}")
    cdp = tab.context.new_cdp_session(tab.page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1,
        "uploadThroughput": 1 << 20})
    # every value the bar takes, as the page sets it
    tab.page.evaluate("""() => {
        const bar = document.querySelector('#upload-progress');
        window.__seen = [];
        new MutationObserver(() => window.__seen.push([bar.value, bar.max]))
            .observe(bar, {attributes: true, attributeFilter: ['value', 'max']});
    }""")
    tab.page.set_input_files("#upload-file", str(archive))
    tab.page.fill("#upload-into", "dash_restored")
    tab.page.fill("#upload-checksum", snap["checksum"])
    tab.page.click("#upload-go")
    tab.page.wait_for_function(
        "() => { const b = document.querySelector('#upload-progress');"
        " return b.value > 0 && b.value < b.max; }", timeout=10_000)
    shoot(tab, "snapshots-upload")
    tab.page.wait_for_selector("#upload-done", timeout=30_000)
    seen = tab.page.evaluate("window.__seen")
    partial = sorted({v for v, m in seen if 0 < v < m})
    assert len(partial) >= 3, seen
    values = [v for v, _ in seen if v > 0]
    assert values == sorted(values), "the bar went backwards"
    total = archive.stat().st_size
    final_value, final_max = seen[-1]
    assert final_value == final_max >= total  # the multipart body: the file and its framing
    assert tab.page.locator("#recover-progress").evaluate("p => p.value") == 1
    count = rest.post("/collections/dash_restored/points/count", json={"exact": True})
    assert count.json()["result"]["count"] == 3000
    shoot(tab, "snapshots-recovered")

    # the tasks page shows the recovery
    route_to(tab, "tasks")
    row = tab.page.locator('#tasks-table tr[data-kind="snapshot_recover"]', has_text="dash_restored")
    assert row.count() >= 1
    assert row.first.locator(".pill").inner_text() == "ok"
    no_errors(tab)


def test_tasks_page_shows_a_task(srv: QuiverServer, rest: httpx.Client, coll: Any,
                                 open_tab: Any, shoot: Any) -> None:
    name, _ = coll
    r = rest.post(f"/collections/{name}/snapshots?wait=true")
    assert r.status_code == 200, r.text
    task_id = r.headers["x-quiver-task"]
    task = rest.get(f"/tasks/{task_id}").json()["result"]
    tab = open_tab()
    goto(tab, srv, "tasks")
    row = tab.page.locator(f'#tasks-table tr[data-task="{task_id}"]')
    texts = row.locator("td").all_inner_texts()
    assert texts[:3] == [task_id, task["kind"], name]
    assert texts[9] == task["outcome"] == "ok"
    assert row.locator("progress").evaluate("p => p.value") == 1
    # refreshed every second: a new task appears without a reload
    r = rest.post(f"/collections/{name}/snapshots?wait=true")
    tab.page.wait_for_selector(f'#tasks-table tr[data-task="{r.headers["x-quiver-task"]}"]',
                               timeout=5_000)
    shoot(tab, "tasks")
    no_errors(tab)


def test_health_page_charts_from_metrics(srv: QuiverServer, coll: Any, open_tab: Any,
                                         shoot: Any) -> None:
    tab = open_tab()
    goto(tab, srv, "health")
    for chart in ("requests", "errors", "device", "rss", "tasks"):
        assert tab.page.locator(f"#chart-{chart} svg[role=img]").count() == 1
    # two scrapes make a rate: the dashboard's own requests show up
    tab.page.wait_for_function(
        "() => /\\d/.test(document.querySelector('#chart-requests .now').textContent)",
        timeout=10_000)
    tab.page.wait_for_selector("#chart-requests polyline", timeout=10_000)  # a third scrape
    routes = cells(tab, "#routes-table tbody td:first-child")
    assert "GET /metrics" in routes
    assert "MiB" in tab.page.locator("#chart-rss .now").inner_text()
    assert tab.page.locator("#health-info").get_by_text("all shards are ready").is_visible()
    shoot(tab, "health")
    no_errors(tab)


# --------------------------------------------------------------------------- API keys


def test_api_key_prompt_and_session_storage(keyed: QuiverServer, open_tab: Any,
                                            shoot: Any) -> None:
    with httpx.Client(base_url=keyed.url, timeout=30, headers={"api-key": KEY}) as rest:
        seed(rest, "keyed", 40)
        # the page itself needs no key; the API does
        assert httpx.get(keyed.url + "/dashboard").status_code == 200
        assert httpx.get(keyed.url + "/dashboard/app.js").status_code == 200
        assert httpx.get(keyed.url + "/collections").status_code == 401

        tab = open_tab()
        tab.page.goto(f"{keyed.url}/dashboard#/collections")
        tab.page.wait_for_selector("#key-dialog[open]")
        shoot(tab, "api-key")
        tab.page.fill("#key-input", "wrong-key")
        tab.page.click("#key-form button[type=submit]")
        # refused: asked again, saying so
        tab.page.wait_for_function(
            "() => document.querySelector('#key-dialog').open && "
            "document.querySelector('#key-why').textContent.includes('refused')")
        tab.page.fill("#key-input", KEY)
        tab.page.press("#key-input", "Enter")  # the keyboard works too
        tab.ready("collections")
        assert tab.page.locator("#collections-table").get_by_text("keyed").is_visible()
        storage = tab.page.evaluate("() => ({session: {...sessionStorage}, "
                                    "local: localStorage.length, cookie: document.cookie})")
        assert storage == {"session": {"quiver.apiKey": KEY}, "local": 0, "cookie": ""}
        assert tab.context.cookies() == []
        assert tab.page.locator("#key-label").inner_text() == "API key set (this tab)"

        # snapshots with the key: create, list, delete (fetch and XHR both send it)
        route_to(tab, "snapshots", "?c=keyed")
        tab.page.click("#snap-create")
        tab.page.wait_for_selector("#snap-table")
        assert len(rest.get("/collections/keyed/snapshots").json()["result"]) == 1

        # a reload in the same tab keeps the key; a new tab (context) asks again
        tab.page.reload()
        tab.ready("snapshots")
        assert not tab.page.locator("#key-dialog").is_visible()
        other = open_tab()
        other.page.goto(f"{keyed.url}/dashboard#/health")
        other.page.wait_for_selector("#key-dialog[open]")

        # forgetting the key removes it
        tab.page.click("#key-forget")
        assert tab.page.evaluate("() => sessionStorage.length") == 0
        # the only errors are the browser's own lines for the refused (401) calls
        refused = [e for e in tab.errors if "status of 401" in e]
        assert refused and len(refused) == len(tab.errors), "\n".join(tab.errors)


def test_a_call_refused_with_an_older_key_retries_with_the_new_one(
        keyed: QuiverServer, open_tab: Any) -> None:
    """The collections page's calls run side by side. One refused for a wrong key can come
    back after the right key was entered (CI saw it): it retries with the new key instead of
    asking again, and the page renders."""
    with httpx.Client(base_url=keyed.url, timeout=30, headers={"api-key": KEY}) as rest:
        seed(rest, "stale", 5)
    tab = open_tab()
    held: list[Any] = []

    def hold(route: Any) -> None:  # /telemetry sent with the wrong key answers late
        if route.request.headers.get("api-key") == "wrong-key":
            held.append(route)
        else:
            route.continue_()

    tab.page.route("**/telemetry", hold)
    tab.page.goto(f"{keyed.url}/dashboard#/collections")
    tab.page.wait_for_selector("#key-dialog[open]")
    tab.page.fill("#key-input", "wrong-key")
    tab.page.click("#key-form button[type=submit]")
    tab.page.wait_for_function(  # /collections came back refused: asked again
        "() => document.querySelector('#key-dialog').open && "
        "document.querySelector('#key-why').textContent.includes('refused')")
    for _ in range(100):
        if held:
            break
        tab.page.wait_for_timeout(50)
    assert len(held) == 1
    tab.page.fill("#key-input", KEY)
    tab.page.press("#key-input", "Enter")
    tab.page.wait_for_function("() => !document.querySelector('#key-dialog').open")
    held[0].continue_()  # its 401, for the key it was sent with, arrives now
    tab.ready("collections")
    assert not tab.page.locator("#key-dialog").is_visible()
    assert tab.page.locator("#collections-table").get_by_text("stale").is_visible()
    refused = [e for e in tab.errors if "status of 401" in e]
    assert len(refused) == len(tab.errors), "\n".join(tab.errors)
