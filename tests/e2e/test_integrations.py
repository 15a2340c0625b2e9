"""The frameworks users run on Qdrant, unmodified, against Quiver: langchain-qdrant (DENSE,
SPARSE, HYBRID) and llama-index's QdrantVectorStore with hybrid search and custom sparse
functions. Each answer is compared with the same framework over QdrantClient(":memory:").

No model is downloaded: dense embeddings are langchain's DeterministicFakeEmbedding (a normal
sample seeded by the text's sha256) and sparse ones a hashed bag of words, so both sides see
the very same vectors.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import Counter

import pytest
from server import QuiverServer

langchain_qdrant = pytest.importorskip("langchain_qdrant")
fake = pytest.importorskip("langchain_core.embeddings.fake")

from langchain_qdrant import QdrantVectorStore, RetrievalMode  # noqa: E402
from langchain_qdrant.sparse_embeddings import SparseEmbeddings, SparseVector  # noqa: E402
from qdrant_client import QdrantClient  # noqa: E402

DIM = 16
VOCAB = 2048
WORDS = ("vector search engine gpu snapshot qdrant recovery archive hybrid sparse dense "
         "fusion rank payload filter segment index graph shard replica query point batch "
         "python numpy faiss cuda memory disk write read").split()


def _texts(n: int, seed: int = 3) -> list[str]:
    out = []
    for i in range(n):
        h = hashlib.sha256(f"{seed}-{i}".encode()).digest()
        out.append(" ".join(WORDS[b % len(WORDS)] for b in h[: 4 + h[0] % 6]))
    return out


def _bag(text: str) -> tuple[list[int], list[float]]:
    """Term counts, scaled per text by a factor in [1, 1.1) so that two documents with the
    same query terms do not tie (tied points may come back in any order, from Qdrant as from
    Quiver, and the vocabulary here is tiny)."""
    counts = Counter(int(hashlib.md5(w.encode()).hexdigest(), 16) % VOCAB
                     for w in re.findall(r"\w+", text.lower()))
    scale = 1 + int(hashlib.md5(text.encode()).hexdigest(), 16) % 1000 / 10_000
    indices = sorted(counts)
    return indices, [counts[i] * scale for i in indices]


class BagOfWords(SparseEmbeddings):
    def embed_documents(self, texts: list[str]) -> list[SparseVector]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> SparseVector:
        indices, values = _bag(text)
        return SparseVector(indices=indices, values=values)


QUERIES = ["gpu vector search", "snapshot recovery archive", "hybrid sparse dense fusion",
           "python numpy faiss"]


def _langchain_store(mode: RetrievalMode, texts: list[str], **where: str) -> QdrantVectorStore:
    ids = [str(uuid.UUID(int=i + 1)) for i in range(len(texts))]
    return QdrantVectorStore.from_texts(
        texts, embedding=fake.DeterministicFakeEmbedding(size=DIM),
        sparse_embedding=BagOfWords(), retrieval_mode=mode, ids=ids,
        metadatas=[{"i": i, "even": i % 2 == 0} for i in range(len(texts))],
        collection_name=f"lc-{mode.value}-{uuid.uuid4().hex[:8]}", **where)


def _hits(store: QdrantVectorStore, query: str, k: int = 5,
          **kw: object) -> list[tuple[str, float]]:
    return [(doc.metadata["i"], round(score, 4))
            for doc, score in store.similarity_search_with_score(query, k=k, **kw)]


@pytest.mark.parametrize("mode", [RetrievalMode.DENSE, RetrievalMode.SPARSE,
                                  RetrievalMode.HYBRID])
def test_langchain_qdrant_round_trip(server: QuiverServer, mode: RetrievalMode) -> None:
    texts = _texts(60)
    quiver = _langchain_store(mode, texts, url=server.url)
    local = _langchain_store(mode, texts, location=":memory:")
    for q in QUERIES:
        got, want = _hits(quiver, q), _hits(local, q)
        assert [i for i, _ in got] == [i for i, _ in want], (mode, q)
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=2e-3), (mode, q)
    # a metadata filter goes through the same path (inside both prefetches in HYBRID mode)
    from qdrant_client import models  # noqa: PLC0415

    even = models.Filter(must=[models.FieldCondition(key="metadata.even",
                                                     match=models.MatchValue(value=True))])
    got = _hits(quiver, QUERIES[0], filter=even)
    assert got and all(i % 2 == 0 for i, _ in got)
    assert [i for i, _ in got] == [i for i, _ in _hits(local, QUERIES[0], filter=even)]
    # documents come back whole
    doc = quiver.similarity_search(texts[7], k=1)[0]
    assert doc.metadata["i"] == 7 or mode == RetrievalMode.SPARSE
    quiver.client.delete_collection(quiver.collection_name)


def _sparse_fn(texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
    bags = [_bag(t) for t in texts]
    return [b[0] for b in bags], [b[1] for b in bags]


def _llama_store(client: QdrantClient, name: str):  # noqa: ANN202 - llama-index types
    from llama_index.vector_stores.qdrant import QdrantVectorStore as LlamaStore  # noqa: PLC0415

    return LlamaStore(collection_name=name, client=client, enable_hybrid=True,
                      sparse_doc_fn=_sparse_fn, sparse_query_fn=_sparse_fn, batch_size=32)


def test_llama_index_hybrid_with_custom_sparse_functions(server: QuiverServer) -> None:
    pytest.importorskip("llama_index.vector_stores.qdrant")
    from llama_index.core.schema import TextNode  # noqa: PLC0415
    from llama_index.core.vector_stores.types import (  # noqa: PLC0415
        VectorStoreQuery,
        VectorStoreQueryMode,
    )

    dense = fake.DeterministicFakeEmbedding(size=DIM)
    texts = _texts(50, seed=11)
    name = f"li-{uuid.uuid4().hex[:8]}"
    remote = QdrantClient(url=server.url)
    stores = [_llama_store(remote, name), _llama_store(QdrantClient(":memory:"), name)]
    for store in stores:
        nodes = [TextNode(text=t, id_=str(uuid.UUID(int=i + 1)), metadata={"i": i},
                          embedding=dense.embed_query(t)) for i, t in enumerate(texts)]
        store.add(nodes)
    for q in QUERIES:
        for mode in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.SPARSE,
                     VectorStoreQueryMode.HYBRID):
            vq = VectorStoreQuery(query_embedding=dense.embed_query(q), query_str=q,
                                  similarity_top_k=4, sparse_top_k=6, mode=mode)
            got, want = (s.query(vq) for s in stores)
            assert got.ids == want.ids, (q, mode)
            assert got.similarities == pytest.approx(want.similarities, abs=2e-3), (q, mode)
    remote.delete_collection(name)
