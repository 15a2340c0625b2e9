"""A repeated filter is evaluated once per segment state; any change that can alter its
answer (payload writes, deletes, appends, payload indexes) is seen by the next query."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from api.parse.writes import apply_body
from engine import query
from engine.collection import Collection
from engine.filters import parse_filter

FLT = {"must": [{"key": "tag", "match": {"value": "a"}}]}


def ids(coll: Collection) -> set[int]:
    spec = query.SearchSpec(vector=np.ones(4, np.float32), using="", pred=parse_filter(FLT),
                            limit=100, offset=0, score_threshold=None, with_payload=False,
                            with_vector=False, filter_key=repr(FLT))
    return {p["id"] for p in query.search_batch(coll, [spec])[0]}


def test_cached_filter_masks_follow_every_change(tmp_path: Path) -> None:
    coll = Collection.create("c", str(tmp_path / "c"), {"vectors": {"size": 4, "distance": "Dot"}})
    apply_body(coll, "upsert", {"points": [{"id": i, "vector": [1, 1, 1, 1], "payload": {"tag": "ab"[i % 2]}}
                            for i in range(10)]})
    assert ids(coll) == {0, 2, 4, 6, 8}
    assert ids(coll) == {0, 2, 4, 6, 8}  # served from the cache
    assert coll.segments[-1].filter_cache
    apply_body(coll, "set_payload", {"payload": {"tag": "a"}, "points": [1]})
    assert ids(coll) == {0, 1, 2, 4, 6, 8}
    apply_body(coll, "delete", {"points": [0]})
    assert ids(coll) == {1, 2, 4, 6, 8}
    apply_body(coll, "upsert", {"points": [{"id": 20, "vector": [1, 1, 1, 1], "payload": {"tag": "a"}}]})
    assert ids(coll) == {1, 2, 4, 6, 8, 20}
    coll.create_index("tag", "keyword")
    assert ids(coll) == {1, 2, 4, 6, 8, 20}
    coll.close()
