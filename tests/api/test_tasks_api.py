"""GET /tasks, GET /tasks/{id}, DELETE /tasks/{id} (Quiver's own endpoints), the task headers
of snapshot answers, the tasks in /telemetry and /metrics, and who may see and cancel them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import grpc
import httpx
import pytest
from server import QuiverServer
from starlette.applications import Starlette

from api.auth import Access, Need, need_of
from api.errors import status_of
from api.routes import tasks as task_routes
from api.rpc.status import code_of
from engine import tasks
from engine.tasks import Cancelled, TaskRegistry


@pytest.fixture
def client(server: QuiverServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def make_collection(client: httpx.Client, name: str) -> None:
    client.delete(f"/collections/{name}")
    r = client.put(f"/collections/{name}", json={"vectors": {"size": 4, "distance": "Dot"}})
    assert r.status_code == 200, r.text
    r = client.put(f"/collections/{name}/points?wait=true", json={"points": [
        {"id": i, "vector": [float(i), 1.0, 0.0, 2.0]} for i in range(50)]})
    assert r.status_code == 200, r.text


def wait_over(client: httpx.Client, task_id: str) -> dict[str, Any]:
    for _ in range(1000):
        doc = client.get(f"/tasks/{task_id}").json()["result"]
        if doc["outcome"] != "running":
            return doc
        time.sleep(0.01)
    pytest.fail("task did not end")


def test_snapshot_answers_name_their_task(client: httpx.Client, collection_name: str) -> None:
    make_collection(client, collection_name)
    r = client.post(f"/collections/{collection_name}/snapshots?wait=false")
    assert r.status_code == 202
    body = r.json()
    assert set(body) == {"status", "time"} and body["status"] == "accepted"  # Qdrant's answer
    task_id = r.headers["x-quiver-task"]
    assert r.headers["location"] == f"/tasks/{task_id}"
    doc = wait_over(client, task_id)
    assert (doc["kind"], doc["collection"], doc["outcome"], doc["unit"]) == \
        ("snapshot_create", collection_name, "ok", "bytes")
    assert doc["bytes_done"] == doc["bytes_total"] > 0 and doc["progress"] == 1.0
    size = client.get(f"/collections/{collection_name}/snapshots").json()["result"][0]["size"]
    assert doc["bytes_total"] == size

    r = client.post("/snapshots")  # wait=true: the result, and the task in the headers
    assert r.status_code == 200 and r.json()["result"]["name"]
    full = client.get(r.headers["location"]).json()["result"]
    assert (full["kind"], full["outcome"], full["collection"]) == \
        ("snapshot_create_full", "ok", None)
    assert full["bytes_done"] == full["bytes_total"] == r.json()["result"]["size"]

    listed = client.get("/tasks").json()["result"]
    ids = [t["id"] for t in listed]
    assert task_id in ids and full["id"] in ids
    only = client.get("/tasks", params={"kind": "snapshot_create",
                                        "collection": collection_name}).json()["result"]
    assert [t["id"] for t in only] == [task_id]
    assert client.get("/tasks", params={"running": "true"}).status_code == 200
    assert client.get("/tasks", params={"running": "maybe"}).status_code == 400


def test_failed_task_says_why(client: httpx.Client, collection_name: str,
                              server: QuiverServer) -> None:
    make_collection(client, collection_name)
    location = f"file://{server.tmp / 'snaps' / 'missing.snapshot'}"
    r = client.put(f"/collections/{collection_name}/snapshots/recover?wait=false",
                   json={"location": location})
    assert r.status_code == 202
    doc = wait_over(client, r.headers["x-quiver-task"])
    assert doc["kind"] == "snapshot_recover" and doc["outcome"] == "failed"
    assert "does not exist" in doc["error"]
    r = client.put(f"/collections/{collection_name}/snapshots/recover",
                   json={"location": location})  # wait=true answers the error itself
    assert r.status_code == 400 and "does not exist" in r.json()["status"]["error"]


def test_unknown_and_finished_tasks(client: httpx.Client, collection_name: str) -> None:
    for method in ("GET", "DELETE"):
        r = client.request(method, "/tasks/no-such-task")
        assert r.status_code == 404 and "not found" in r.json()["status"]["error"]
    make_collection(client, collection_name)
    r = client.post(f"/collections/{collection_name}/snapshots")
    task_id = r.headers["x-quiver-task"]
    r = client.delete(f"/tasks/{task_id}")
    assert r.status_code == 409 and "already over" in r.json()["status"]["error"]
    r = client.delete(f"/tasks/{task_id}?timeout=nope")
    assert r.status_code == 400


def test_telemetry_and_metrics(client: httpx.Client, collection_name: str) -> None:
    make_collection(client, collection_name)
    task_id = client.post(f"/collections/{collection_name}/snapshots").headers["x-quiver-task"]
    tele = client.get("/telemetry").json()["result"]["quiver"]["tasks"]
    assert task_id in [t["id"] for t in tele]
    metrics = client.get("/metrics").text
    assert "# TYPE quiver_tasks_running gauge" in metrics
    assert 'quiver_tasks_running{kind="snapshot_recover"} 0' in metrics
    line = [ln for ln in metrics.splitlines()
            if ln.startswith('quiver_tasks_finished_total{kind="snapshot_create",outcome="ok"}')]
    assert line and int(line[0].split()[-1]) >= 1


def test_access_classes() -> None:
    """GET /tasks is a global read, DELETE /tasks/{id} needs manage: a read-only key may
    look, not cancel; a JWT scoped to collections sees no tasks (not even its own)."""
    assert need_of("GET", "/tasks") == (Need.GLOBAL_READ, None)
    assert need_of("GET", "/tasks/abc") == (Need.GLOBAL_READ, None)
    assert need_of("DELETE", "/tasks/abc") == (Need.MANAGE, None)
    read_only, scoped = Access("r"), Access(None, {"c": "rw"})
    assert read_only.refusal(Need.GLOBAL_READ, None) is None
    assert read_only.refusal(Need.MANAGE, None) is not None
    assert scoped.refusal(Need.GLOBAL_READ, None) is not None
    assert scoped.refusal(Need.MANAGE, None) is not None


def test_upload_and_url_recoveries_are_tasks(client: httpx.Client, collection_name: str,
                                             server: QuiverServer) -> None:
    make_collection(client, collection_name)
    name = client.post(f"/collections/{collection_name}/snapshots").json()["result"]["name"]
    data = client.get(f"/collections/{collection_name}/snapshots/{name}").content
    r = client.post(f"/collections/{collection_name}_up/snapshots/upload?wait=false",
                    files={"snapshot": (name, data)})
    assert r.status_code == 202 and set(r.json()) == {"status", "time"}
    doc = wait_over(client, r.headers["x-quiver-task"])
    assert (doc["kind"], doc["source"], doc["outcome"], doc["collection"]) == \
        ("snapshot_recover", "upload", "ok", f"{collection_name}_up")
    assert doc["bytes_done"] == doc["bytes_total"] == len(data)

    url = f"{server.url}/collections/{collection_name}/snapshots/{name}"
    r = client.put(f"/collections/{collection_name}_url/snapshots/recover",
                   json={"location": url})
    assert r.status_code == 200, r.text
    parent = client.get(r.headers["location"]).json()["result"]
    assert (parent["source"], parent["outcome"]) == ("url", "ok")
    children = [t for t in client.get("/tasks", params={"kind": "url_download"}).json()["result"]
                if t["parent"] == parent["id"]]
    assert len(children) == 1
    assert children[0]["outcome"] == "ok" and children[0]["bytes_done"] == len(data)
    for suffix in ("_up", "_url"):
        count = client.post(f"/collections/{collection_name}{suffix}/points/count", json={})
        assert count.json()["result"]["count"] == 50


# ---- in process: the DELETE wait, the answers, telemetry ----------------------------------


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> TaskRegistry:
    reg = TaskRegistry()
    monkeypatch.setattr(tasks, "registry", reg)
    return reg


def in_process(requests: Any) -> Any:
    """Run `requests(client)` against the task routes in this process, with a worker pool of
    ONE thread (the routes' sync handlers run there)."""

    async def main() -> Any:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1
        transport = httpx.ASGITransport(app=Starlette(routes=task_routes.routes))
        async with httpx.AsyncClient(transport=transport, base_url="http://quiver") as c:
            return await requests(c)

    return asyncio.run(main())


def test_cancel_waits_hold_no_worker_thread(registry: TaskRegistry) -> None:
    """Fifty DELETE ?wait=true on a task that has not stopped yet: a route that needs the
    (one-thread) pool still answers at once, and every waiter gets the final state."""
    task = registry.start("snapshot_create", "c", cancellable=True)

    async def requests(c: httpx.AsyncClient) -> tuple[httpx.Response, list[httpx.Response]]:
        waits = [asyncio.create_task(c.delete(f"/tasks/{task.id}?wait=true&timeout=60"))
                 for _ in range(50)]
        await asyncio.sleep(0.2)
        seen = await asyncio.wait_for(c.get(f"/tasks/{task.id}"), 5)
        assert not any(w.done() for w in waits)
        registry.finish(task, Cancelled("stopped at its next report"))  # the work noticed
        return seen, await asyncio.wait_for(asyncio.gather(*waits), 5)

    seen, answers = in_process(requests)
    assert seen.status_code == 200 and seen.json()["result"]["cancel_requested"]
    for r in answers:
        assert r.status_code == 200, r.text
        doc = r.json()["result"]
        assert (doc["outcome"], doc["cancel"]) == ("cancelled", "done")


def test_cancel_answer_says_what_became_of_it(registry: TaskRegistry) -> None:
    slow = registry.start("snapshot_create", "c", cancellable=True)
    late = registry.start("snapshot_recover", "c", cancellable=True)
    build = registry.start("index_build", "c", unit="rows")
    parent = registry.start("snapshot_create_full", cancellable=True)
    child = registry.start("snapshot_create", "c", cancellable=True, parent=parent)
    child.irreversible("publishing")

    async def requests(c: httpx.AsyncClient) -> dict[str, httpx.Response]:
        out = {"asked": await c.delete(f"/tasks/{slow.id}"),
               "timed_out": await c.delete(f"/tasks/{slow.id}?wait=true&timeout=0.2")}
        waiting = asyncio.create_task(c.delete(f"/tasks/{late.id}?wait=true"))
        await asyncio.sleep(0.1)
        registry.finish(late)  # it had no progress report left: it ends "ok" all the same
        out["too_late"] = await asyncio.wait_for(waiting, 5)
        for name, task in (("over", late), ("build", build), ("parent", parent),
                           ("child", child)):
            out[name] = await c.delete(f"/tasks/{task.id}")
        out["bad_timeout"] = await c.delete(f"/tasks/{slow.id}?wait=true&timeout=301")
        return out

    r = in_process(requests)
    for name in ("asked", "timed_out"):
        doc = r[name].json()["result"]
        assert r[name].status_code == 200
        assert (doc["outcome"], doc["cancel"], doc["cancel_requested"]) == \
            ("running", "requested", True)
    doc = r["too_late"].json()["result"]
    assert (doc["outcome"], doc["cancel"]) == ("ok", "too_late")
    expected = {"over": "already over", "build": "no cancellation point",
                "parent": "a task it started is past its point of no return",
                "child": "past its point of no return (phase: publishing)"}
    for name, words in expected.items():
        assert r[name].status_code == 409 and words in r[name].json()["status"]["error"]
    assert r["bad_timeout"].status_code == 400
    assert slow.outcome == "running"  # a refused request asks nothing


def test_cancelled_answers_409_over_rest_and_cancelled_over_grpc() -> None:
    exc = Cancelled("task t (snapshot_create) was cancelled")
    assert status_of(exc) == 409 and exc.message.startswith("Cancelled: ")
    assert code_of(exc) == grpc.StatusCode.CANCELLED


def test_telemetry_lists_running_and_newest_finished(registry: TaskRegistry) -> None:
    running = registry.start("snapshot_recover", "c", cancellable=True)
    done = []
    for _ in range(task_routes.TELEMETRY_FINISHED + 7):
        with registry.run("index_build", unit="rows") as t:
            done.append(t.id)
    listed = [doc["id"] for doc in task_routes.telemetry_tasks()]
    assert listed == [running.id] + done[-task_routes.TELEMETRY_FINISHED:]
