"""Bad input gets Qdrant's status code and error envelope, and the stored data is unchanged."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


@pytest.fixture
def coll(http: httpx.Client, collection_name: str) -> str:
    http.delete(f"/collections/{collection_name}")
    r = http.put(f"/collections/{collection_name}",
                 json={"vectors": {"size": 3, "distance": "Cosine"}})
    assert r.status_code == 200
    r = http.put(f"/collections/{collection_name}/points?wait=true", json={"points": [
        {"id": 1, "vector": [1, 0, 0], "payload": {"k": "a"}},
        {"id": 2, "vector": [0, 1, 0], "payload": {"k": "b"}}]})
    assert r.status_code == 200
    return collection_name


def _state(http: httpx.Client, c: str) -> Any:
    r = http.post(f"/collections/{c}/points/scroll",
                  json={"limit": 100, "with_payload": True, "with_vector": True})
    return r.json()["result"]


def _assert_error(r: httpx.Response, status: int, fragment: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"status", "time"}
    assert fragment in body["status"]["error"], body


BAD_WRITES = [
    ("wrong_dim", "PUT", "points", {"points": [{"id": 3, "vector": [1, 2]}]}, 400,
     "Vector dimension error: expected dim: 3, got 2"),
    ("nan_as_null", "PUT", "points", {"points": [{"id": 3, "vector": [1, None, 2]}]}, 400,
     "NaN"),
    ("unknown_vector_name", "PUT", "points",
     {"points": [{"id": 3, "vector": {"img": [1, 2, 3]}}]}, 400,
     "Not existing vector name error: img"),
    ("invalid_id_negative", "PUT", "points", {"points": [{"id": -1, "vector": [1, 2, 3]}]},
     400, "Invalid point id"),
    ("invalid_id_string", "PUT", "points", {"points": [{"id": "abc", "vector": [1, 2, 3]}]},
     400, "Unable to parse UUID"),
    ("invalid_id_float", "PUT", "points", {"points": [{"id": 1.5, "vector": [1, 2, 3]}]},
     400, "Invalid point id"),
    ("one_bad_point_rejects_batch", "PUT", "points",
     {"points": [{"id": 7, "vector": [1, 2, 3]}, {"id": 8, "vector": [1, 2]}]}, 400,
     "dimension"),
    ("batch_length_mismatch", "PUT", "points",
     {"batch": {"ids": [5, 6], "vectors": [[1, 2, 3]]}}, 400, "must be equal"),
    ("malformed_filter_delete", "POST", "points/delete",
     {"filter": {"must": [{"key": "k", "match": {"nope": 1}}]}}, 400, "unknown match type"),
    ("filter_not_object", "POST", "points/delete", {"filter": [1, 2]}, 400,
     "filter must be an object"),
    ("bad_key_path", "POST", "points/delete",
     {"filter": {"must": [{"key": "a..b", "match": {"value": 1}}]}}, 400, "invalid payload key"),
    ("payload_for_missing_point", "POST", "points/payload",
     {"payload": {"x": 1}, "points": [1, 99]}, 404, "No point with id 99 found"),
    ("payload_not_object", "POST", "points/payload", {"payload": [1], "points": [1]}, 400,
     "`payload` must be an object"),
    ("update_vectors_missing_point", "PUT", "points/vectors",
     {"points": [{"id": 42, "vector": [1, 2, 3]}]}, 404, "No point with id 42"),
    ("broken_json", "PUT", "points", b'{"points": [', 400, "Format error in JSON body"),
]


@pytest.mark.parametrize("case", BAD_WRITES, ids=[c[0] for c in BAD_WRITES])
def test_bad_writes_change_nothing(http: httpx.Client, coll: str, case: tuple) -> None:
    _, method, path, body, status, fragment = case
    before = _state(http, coll)
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = http.request(method, f"/collections/{coll}/{path}?wait=true", **kwargs)
    _assert_error(r, status, fragment)
    assert _state(http, coll) == before


BAD_READS = [
    ("query_wrong_dim", "points/query", {"query": [1, 2]}, 400, "expected dim: 3, got 2"),
    ("query_null_in_vector", "points/query", {"query": [1, None, 2]}, 400, "NaN"),
    ("query_unknown_using", "points/query", {"query": [1, 2, 3], "using": "img"}, 400,
     "Not existing vector name error: img"),
    ("query_malformed_filter", "points/query",
     {"query": [1, 2, 3], "filter": {"must": [{"key": 1, "match": {"value": 1}}]}}, 400,
     "key"),
    ("query_unknown_condition", "points/query",
     {"query": [1, 2, 3], "filter": {"must": [{"foo": 1}]}}, 400, "unknown filter condition"),
    ("query_bad_limit", "points/query", {"query": [1, 2, 3], "limit": 0}, 400, "limit"),
    ("query_missing_point", "points/query", {"query": 12345}, 404, "No point with id 12345"),
    # a batch whose vectors differ in size (was a 500: numpy refused the ragged rows)
    ("query_batch_mixed_dims", "points/query/batch",
     {"searches": [{"query": [1, 2, 3]}, {"query": [1, 2]}]}, 400,
     "Vector dimension error: expected dim: 3, got 2"),
    ("search_batch_mixed_dims", "points/search/batch",
     {"searches": [{"vector": [1, 2, 3], "limit": 1}, {"vector": [1, 2, 3, 4], "limit": 1}]},
     400, "Vector dimension error: expected dim: 3, got 4"),
    ("query_batch_all_wrong_dim", "points/query/batch",
     {"searches": [{"query": [1, 2]}, {"query": [3, 4]}]}, 400, "expected dim: 3, got 2"),
    ("scroll_bad_offset", "points/scroll", {"offset": "zzz"}, 400, "UUID"),
    ("count_bad_range", "points/count",
     {"filter": {"must": [{"key": "k", "range": {"gt": "yesterday"}}]}}, 400, "datetime"),
]


@pytest.mark.parametrize("case", BAD_READS, ids=[c[0] for c in BAD_READS])
def test_bad_reads(http: httpx.Client, coll: str, case: tuple) -> None:
    _, path, body, status, fragment = case
    _assert_error(http.post(f"/collections/{coll}/{path}", json=body), status, fragment)


def test_unknown_collection_everywhere(http: httpx.Client) -> None:
    for method, path, body in [
        ("GET", "/collections/missing", None),
        ("PUT", "/collections/missing/points", {"points": []}),
        ("POST", "/collections/missing/points/query", {"query": [1]}),
        ("POST", "/collections/missing/points/scroll", {}),
        ("POST", "/collections/missing/points/count", {}),
        ("GET", "/collections/missing/points/1", None),
    ]:
        r = http.request(method, path, json=body)
        _assert_error(r, 404, "Collection `missing` doesn't exist!")
    r = http.get("/collections/missing/exists")
    assert r.json()["result"] == {"exists": False}
    assert http.delete("/collections/missing").json()["result"] is False


def test_bad_collection_configs(http: httpx.Client) -> None:
    _assert_error(http.put("/collections/bad1", json={"vectors": {"size": 0,
                                                                  "distance": "Cosine"}}),
                  400, "vector size")
    _assert_error(http.put("/collections/bad2", json={"vectors": {"size": 4,
                                                                  "distance": "Hamming"}}),
                  400, "unknown distance")
    _assert_error(http.put("/collections/bad3", json={"vectors": {"size": 4, "distance": "Dot",
                                                                  "bogus": 1}}),
                  400, "unknown field")
    for bad in ["a:b", ".hidden", "a%3Cb", "x" * 256]:
        _assert_error(http.put(f"/collections/{bad}", json={"vectors": {"size": 4,
                                                                        "distance": "Dot"}}),
                      400, "name")
    # an encoded slash never reaches a collection route: 404 in the envelope, nothing created
    r = http.put("/collections/a%2Fb", json={"vectors": {"size": 4, "distance": "Dot"}})
    assert r.status_code == 404 and "error" in r.json()["status"]
    assert "a" not in [c["name"] for c in http.get("/collections").json()["result"]["collections"]]
    assert http.get("/collections/bad1/exists").json()["result"]["exists"] is False


def test_create_existing_collection_is_409(http: httpx.Client, coll: str) -> None:
    before = _state(http, coll)
    r = http.put(f"/collections/{coll}", json={"vectors": {"size": 8, "distance": "Dot"}})
    _assert_error(r, 409, "already exists")
    assert _state(http, coll) == before


def test_oversized_request_is_413(http: httpx.Client, coll: str) -> None:
    before = _state(http, coll)
    big = b'{"points": [' + b" " * (33 << 20) + b"]}"
    r = http.put(f"/collections/{coll}/points?wait=true", content=big)
    _assert_error(r, 413, "Payload too large")
    assert _state(http, coll) == before


def test_unknown_endpoint_has_envelope(http: httpx.Client) -> None:
    r = httpx.get(str(http.base_url) + "/nope/nope")
    assert r.status_code == 404 and "error" in r.json()["status"]
