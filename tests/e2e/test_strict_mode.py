"""strict_mode_config through the real server: validated at PUT/PATCH (an unsupported field
is a 400 naming it, nothing stored), enforced on writes while `enabled`, with Qdrant's
messages; the read-side checks (engine/strict.check_read) on an in-process collection and
through every read route (api/parse/strict.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from server import QuiverServer

VEC = {"size": 2, "distance": "Dot"}


def _pts(ids, **payload) -> dict:
    return {"points": [{"id": i, "vector": [1.0, float(i)], "payload": payload} for i in ids]}


def _create(http, name: str, strict: dict) -> None:
    r = http.put(f"/collections/{name}", json={"vectors": VEC, "strict_mode_config": strict})
    assert r.status_code == 200, r.text


def _count(http, name: str) -> int:
    return http.post(f"/collections/{name}/points/count", json={"exact": True}).json()[
        "result"]["count"]


def _refused(r, *words: str) -> str:
    assert r.status_code == 400, r.text
    msg = r.json()["status"]["error"]
    for w in words:
        assert w in msg, msg
    return msg


@pytest.mark.parametrize("field,value", [
    ("read_rate_limit", 10), ("write_rate_limit", 10),
    ("max_collection_payload_size_bytes", 1000), ("max_resident_memory_percent", 50),
    ("no_such_field", 1), ("max_query_limit", 0), ("enabled", "yes"),
    ("sparse_config", {"s": {"max_length": 0}}),
])
def test_unsupported_or_bad_fields_are_refused(http, collection_name: str, field: str,
                                               value) -> None:
    c = f"/collections/{collection_name}"
    r = http.put(c, json={"vectors": VEC, "strict_mode_config": {"enabled": True, field: value}})
    _refused(r, field)
    assert http.get(f"{c}/exists").json()["result"]["exists"] is False
    _create(http, collection_name, {"enabled": True, "max_query_limit": 7})
    _refused(http.patch(c, json={"strict_mode_config": {field: value}}), field)
    got = http.get(c).json()["result"]["config"]["strict_mode_config"]
    assert got == {"enabled": True, "max_query_limit": 7}


def test_patch_merges_and_survives_restart(fresh_server: QuiverServer) -> None:
    import httpx
    with httpx.Client(base_url=fresh_server.url, timeout=30) as http:
        _create(http, "c", {"enabled": True, "max_query_limit": 150})
        assert http.patch("/collections/c", json={"strict_mode_config": {
            "max_points_count": 100, "max_query_limit": None}}).status_code == 200
    fresh_server.restart()
    with httpx.Client(base_url=fresh_server.url, timeout=30) as http:
        got = http.get("/collections/c").json()["result"]["config"]["strict_mode_config"]
        assert got == {"enabled": True, "max_query_limit": 150, "max_points_count": 100}


def test_upsert_batch_size_and_points_count(http, collection_name: str) -> None:
    c = f"/collections/{collection_name}"
    _create(http, collection_name, {"enabled": True, "upsert_max_batchsize": 3,
                                    "max_points_count": 5})
    msg = _refused(http.put(f"{c}/points?wait=true", json=_pts(range(4))))
    assert msg == ('Bad request: Limit exceeded 4 > 3 for "upsert limit". '
                   'Help: Reduce the "upsert limit" parameter to or below 3.')
    assert _count(http, collection_name) == 0
    batch = {"batch": {"ids": [0, 1, 2, 3], "vectors": [[1, 0]] * 4}}
    _refused(http.put(f"{c}/points?wait=true", json=batch), "upsert limit")
    _refused(http.put(f"{c}/points/vectors?wait=true", json={
        "points": [{"id": i, "vector": [0, 1]} for i in range(4)]}), "update limit")
    for ids in ([0, 1, 2], [3, 4]):  # Qdrant checks the count before the write: 3 < 5
        assert http.put(f"{c}/points?wait=true", json=_pts(ids)).status_code == 200
    r = http.put(f"{c}/points?wait=true", json=_pts([9]))
    assert _refused(r) == "Bad request: Max points count limit of 5 reached!"
    assert _count(http, collection_name) == 5
    # deletes stay allowed, and strict mode off lifts every limit
    assert http.post(f"{c}/points/delete?wait=true", json={"points": [4]}).status_code == 200
    assert http.patch(c, json={"strict_mode_config": {"enabled": False}}).status_code == 200
    assert http.put(f"{c}/points?wait=true", json=_pts(range(10, 20))).status_code == 200


def test_vector_storage_size(http, collection_name: str) -> None:
    c = f"/collections/{collection_name}"
    _create(http, collection_name, {"enabled": True, "max_collection_vector_size_bytes": 32})
    assert http.put(f"{c}/points?wait=true", json=_pts(range(4))).status_code == 200  # 32 B
    r = http.put(f"{c}/points?wait=true", json=_pts([7]))
    assert _refused(r) == "Bad request: Max vector storage size limit of 0.000030517578MB reached!"


def test_unindexed_filtering_update_and_filter_limits(http, collection_name: str) -> None:
    c = f"/collections/{collection_name}"
    _create(http, collection_name, {"enabled": True, "unindexed_filtering_update": False,
                                    "filter_max_conditions": 2, "condition_max_size": 3})
    assert http.put(f"{c}/points?wait=true", json=_pts(range(6), city="B")).status_code == 200
    flt = {"must": [{"key": "city", "match": {"value": "B"}}]}
    msg = _refused(http.post(f"{c}/points/delete?wait=true", json={"filter": flt}))
    assert msg == ('Bad request: Index required but not found for "city" of one of the '
                   'following types: [keyword, uuid]. Help: Create an index for this key or '
                   'use a different filter.')
    _refused(http.post(f"{c}/points/payload?wait=true",
                       json={"payload": {"x": 1}, "filter": flt}), "Index required")
    _refused(http.put(f"{c}/points?wait=true", json={**_pts([1]), "update_filter": flt}),
             "Index required")
    assert _count(http, collection_name) == 6
    assert http.put(f"{c}/index?wait=true", json={"field_name": "city",
                                                  "field_schema": "keyword"}).status_code == 200
    many = {"must": [{"key": "city", "match": {"value": "B"}}] * 3}
    assert _refused(http.post(f"{c}/points/delete?wait=true", json={"filter": many})) == (
        "Bad request: Filter condition limit reached (3 > 2). Help: Reduce the amount of "
        "conditions of your filter.")
    big = {"must": [{"key": "city", "match": {"any": ["a", "b", "c", "d"]}}]}
    assert _refused(http.post(f"{c}/points/delete?wait=true",
                              json={"points": {"filter": big}})) == (
        "Bad request: Condition size limit reached (4 > 3). Help: Reduce the size of your "
        "condition.")
    assert _count(http, collection_name) == 6
    assert http.post(f"{c}/points/delete?wait=true", json={"filter": flt}).status_code == 200
    assert _count(http, collection_name) == 0


def test_payload_index_count_and_sparse_length(http, collection_name: str) -> None:
    c = f"/collections/{collection_name}"
    r = http.put(c, json={"vectors": {}, "sparse_vectors": {"s": {}}, "strict_mode_config": {
        "enabled": True, "max_payload_index_count": 1, "sparse_config": {"s": {"max_length": 2}}}})
    assert r.status_code == 200, r.text
    assert http.put(f"{c}/index?wait=true", json={"field_name": "a",
                                                  "field_schema": "keyword"}).status_code == 200
    r = http.put(f"{c}/index?wait=true", json={"field_name": "b", "field_schema": "keyword"})
    assert _refused(r) == ("Bad request: Collection already has the maximum number of payload "
                           "indices (1). Help: Please delete an existing index before creating "
                           "a new one.")
    assert list(http.get(c).json()["result"]["payload_schema"]) == ["a"]
    long = {"indices": [1, 2, 3], "values": [1.0, 1.0, 1.0]}
    r = http.put(f"{c}/points?wait=true", json={"points": [{"id": 1, "vector": {"s": long}}]})
    assert _refused(r) == ("Bad request: Sparse vector 's' has a limit of 2 indices, but 3 "
                           "were provided!")
    assert _count(http, collection_name) == 0


def test_read_checks(tmp_path: Path) -> None:
    """engine/strict.check_read itself, every limit."""
    from engine.catalog import Catalog
    from engine.errors import BadRequest
    from engine.strict import check_read

    cat = Catalog(str(tmp_path / "storage"))
    cat.create("c", {"vectors": VEC, "strict_mode_config": {
        "enabled": True, "max_query_limit": 10, "unindexed_filtering_retrieve": False,
        "search_allow_exact": False, "search_max_hnsw_ef": 64, "max_timeout": 5,
        "search_max_batchsize": 2, "search_max_oversampling": 2.0}})
    coll = cat.get("c")
    check_read(coll, limit=10, hnsw_ef=64, timeout=5, batch_size=2, oversampling=2.0)
    cases = [({"limit": 11}, 'Limit exceeded 11 > 10 for "limit"'),
             ({"hnsw_ef": 65}, '"hnsw_ef"'), ({"timeout": 6}, '"timeout"'),
             ({"batch_size": 3}, '"search batch size"'), ({"oversampling": 3.0}, "oversampling"),
             ({"exact": True}, "Exact search disabled!. Help: Set exact=false."),
             ({"flt": {"must": [{"key": "n", "range": {"gt": 1}}]}},
              'Index required but not found for "n" of one of the following types: '
              '[float, integer]')]
    for kwargs, words in cases:
        with pytest.raises(BadRequest, match=None) as err:
            check_read(coll, **kwargs)
        assert words in err.value.message
    cat.close()


def test_read_routes_enforce(http, collection_name: str) -> None:
    """Every read route: the limit (or its default), filters on unindexed keys (prefetch
    filters too), exact search, batch size; within the limits the read answers."""
    c = f"/collections/{collection_name}"
    http.delete(c)
    _create(http, collection_name, {"enabled": True, "max_query_limit": 10,
                                    "unindexed_filtering_retrieve": False,
                                    "search_allow_exact": False, "search_max_batchsize": 2})
    assert http.put(f"{c}/points?wait=true", json=_pts(range(1, 6), n=1, k="a")).status_code \
        == 200
    assert http.put(f"{c}/index?wait=true", json={"field_name": "k", "field_schema": "keyword"}
                    ).status_code == 200
    big = {"limit": 11}
    unindexed = {"filter": {"must": [{"key": "n", "match": {"value": 1}}]}}
    indexed = {"filter": {"must": [{"key": "k", "match": {"value": "a"}}]}}
    q = {"query": [1.0, 0.0]}
    cases = [  # (path, a body within the limits, the changes that exceed one)
        ("points/query", q, [big, unindexed, {"params": {"exact": True}},
                             {"prefetch": {"query": [1.0, 0.0], "limit": 11}},
                             {"prefetch": {"query": [1.0, 0.0], **unindexed}}]),
        ("points/search", {"vector": [1.0, 0.0], "limit": 3}, [big, unindexed]),
        ("points/scroll", {}, [big, unindexed]),
        ("points/count", {}, [unindexed]),
        ("points/query/groups", {**q, "group_by": "k"}, [{"limit": 11}, unindexed]),
        ("points/recommend", {"positive": [1], "limit": 3}, [big, unindexed]),
        ("points/search/matrix/pairs", {"sample": 5}, [big, unindexed]),
    ]
    for path, ok, bad in cases:
        r = http.post(f"{c}/{path}", json={**ok, **indexed})
        assert r.status_code == 200, (path, r.text)
        for extra in bad:
            _refused(http.post(f"{c}/{path}", json={**ok, **extra}))
    # a filter nested as a condition counts through: its keys need an index too
    nested = {"filter": {"must": [{"should": [{"key": "k", "match": {"value": "a"}},
                                              {"key": "n", "match": {"value": 1}}]}]}}
    _refused(http.post(f"{c}/points/scroll", json=nested), 'Index required but not found for "n"')
    r = http.post(f"{c}/points/query/batch", json={"searches": [q, q, q]})
    _refused(r, '"search batch size"')
    assert http.post(f"{c}/points/query/batch", json={"searches": [q, q]}).status_code == 200


def test_multivector_length(http, collection_name: str) -> None:
    c = f"/collections/{collection_name}"
    r = http.put(c, json={"vectors": {"m": {"size": 2, "distance": "Dot", "multivector_config": {
        "comparator": "max_sim"}}}, "strict_mode_config": {
        "enabled": True, "multivector_config": {"m": {"max_vectors": 2}}}})
    assert r.status_code == 200, r.text
    ok = {"points": [{"id": 1, "vector": {"m": [[1, 0], [0, 1]]}}]}
    assert http.put(f"{c}/points?wait=true", json=ok).status_code == 200
    three = [[1, 0], [0, 1], [1, 1]]
    for path, body in (("/points", {"points": [{"id": 2, "vector": {"m": three}}]}),
                       ("/points", {"batch": {"ids": [2], "vectors": {"m": [three]}}}),
                       ("/points/vectors", {"points": [{"id": 1, "vector": {"m": three}}]})):
        assert _refused(http.put(f"{c}{path}?wait=true", json=body)) == (
            "Bad request: Multivector 'm' has a limit of 2 vectors, but 3 were provided!")
    assert _count(http, collection_name) == 1
