"""Haystack's Qdrant integration (qdrant-haystack) against the real server: a
QdrantDocumentStore at the server's url, documents with deterministic fake embeddings (no
model downloads), and QdrantEmbeddingRetriever with `group_by` (POST /points/query/groups)
checked against a plain query grouped by hand; plus a plain retrieval round trip.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

with warnings.catch_warnings():  # third-party import-time deprecation noise
    warnings.simplefilter("ignore")
    from haystack import Document
    from haystack_integrations.components.retrievers.qdrant import QdrantEmbeddingRetriever
    from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

DIM, N = 16, 120


def _store(url: str, index: str) -> QdrantDocumentStore:
    return QdrantDocumentStore(url=url, index=index, embedding_dim=DIM, recreate_index=True,
                               similarity="cosine", wait_result_from_api=True)


def _documents() -> list[Document]:
    rng = np.random.default_rng(21)
    return [Document(content=f"document {i}",
                     meta={"source": f"s{int(rng.integers(0, 9))}", "n": i},
                     embedding=rng.standard_normal(DIM).tolist()) for i in range(N)]


def _by_hand(ranked: list[Document], top_k: int, size: int) -> list[str]:
    """The ids a grouped search returns (flattened, groups best first): a plain ranking
    grouped by `meta.source`."""
    groups: dict[str, list[str]] = {}
    for d in ranked:
        members = groups.setdefault(d.meta["source"], [])
        if len(members) < size:
            members.append(d.id)
    return [i for g in list(groups.values())[:top_k] for i in g]


@pytest.mark.parametrize(("top_k", "size"), [(3, 2), (5, 4), (20, 1)])
def test_haystack_grouped_retrieval(server: Any, top_k: int, size: int) -> None:
    store = _store(server.url, f"haystack_groups_{top_k}_{size}")
    docs = _documents()
    assert store.write_documents(docs) == N
    assert store.count_documents() == N
    rng = np.random.default_rng(top_k)
    query = rng.standard_normal(DIM).tolist()

    grouped = QdrantEmbeddingRetriever(document_store=store, top_k=top_k,
                                       group_by="meta.source", group_size=size)
    got = grouped.run(query_embedding=query)["documents"]
    plain = QdrantEmbeddingRetriever(document_store=store, top_k=N)
    ranked = plain.run(query_embedding=query)["documents"]
    assert len(ranked) == N
    assert [d.id for d in got] == _by_hand(ranked, top_k, size)
    by_id = {d.id: d for d in docs}
    for d in got:  # content and meta survive the round trip; scores are the plain ones
        assert d.content == by_id[d.id].content and d.meta == by_id[d.id].meta
        assert d.score == pytest.approx(next(r.score for r in ranked if r.id == d.id),
                                        rel=1e-5)


def test_haystack_grouped_with_filter(server: Any) -> None:
    store = _store(server.url, "haystack_groups_filtered")
    store.write_documents(_documents())
    query = np.random.default_rng(4).standard_normal(DIM).tolist()
    flt = {"field": "meta.n", "operator": ">=", "value": 60}
    got = QdrantEmbeddingRetriever(document_store=store, top_k=4, group_by="meta.source",
                                   group_size=3, filters=flt).run(query_embedding=query)
    ranked = QdrantEmbeddingRetriever(document_store=store, top_k=N, filters=flt).run(
        query_embedding=query)["documents"]
    assert all(d.meta["n"] >= 60 for d in ranked)
    assert [d.id for d in got["documents"]] == _by_hand(ranked, 4, 3)
