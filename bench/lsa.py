"""A real embedding set made offline: LSA (TF-IDF + truncated SVD) over the docstrings of the
Python standard library and the project's installed packages.

Nothing is downloaded: the text is whatever ships inside this interpreter and its virtual
environment. Every `.py` file under the stdlib and site-packages directories is parsed with
`ast` (never imported, so no module code runs); module, class and function docstrings are
split into paragraphs, whitespace-normalised, de-duplicated, and paragraphs of fewer than
MIN_WORDS words are dropped; longer ones are cut into passages of at most MAX_WORDS words.

The passage list depends on what is installed, so its size and a sha256 of it are reported
with every result. Passages are cached in bench/.cache/ (gzip, one per line) and so are the
embeddings (npz keyed by corpus hash, sizes, dimension and seed): a rerun costs nothing.

Index passages and query passages are disjoint (a seeded permutation); TF-IDF and SVD are
fitted on the index passages only and the queries are transformed, like unseen text.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import os
import sysconfig
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
MIN_WORDS = 8
MAX_WORDS = 100
MAX_FILE_BYTES = 2_000_000
CORPUS_VERSION = 1
SEED = 20240602
QUERY_POOL = 1000


def source_roots() -> list[str]:
    paths = sysconfig.get_paths()
    roots = []
    for key in ("stdlib", "purelib", "platlib"):
        p = paths.get(key)
        if p and os.path.isdir(p) and p not in roots:
            roots.append(p)
    return roots


def _py_files(roots: list[str]) -> list[str]:
    out = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            # site-packages lives inside the stdlib tree on some layouts: walk it once
            dirnames[:] = [d for d in dirnames
                           if os.path.join(dirpath, d) not in roots]
            out.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
    return out


def _passages_of_file(path: str) -> list[str]:
    try:
        if os.path.getsize(path) > MAX_FILE_BYTES:
            return []
        with open(path, "rb") as f:
            src = f.read()
        tree = ast.parse(src)
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node)
            if not doc:
                continue
            for para in doc.split("\n\n"):
                words = para.split()
                for s in range(0, len(words), MAX_WORDS):
                    chunk = words[s : s + MAX_WORDS]
                    if len(chunk) >= MIN_WORDS:
                        out.append(" ".join(chunk))
    return out


def _parse_chunk(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        out.extend(_passages_of_file(p))
    return out


def extract_passages(progress: Callable[[str], None] | None = None, workers: int | None = None
                     ) -> tuple[list[str], dict[str, Any]]:
    """All unique docstring passages, in a deterministic order, plus how they were made."""
    t0 = time.monotonic()
    roots = source_roots()
    files = _py_files(roots)
    workers = workers or os.cpu_count() or 1
    chunks = [files[i : i + 200] for i in range(0, len(files), 200)]
    seen: set[str] = set()
    passages: list[str] = []
    raw = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, part in enumerate(pool.map(_parse_chunk, chunks)):
            raw += len(part)
            for p in part:
                if p not in seen:
                    seen.add(p)
                    passages.append(p)
            if progress and i % 20 == 19:
                progress(f"parsed {min((i + 1) * 200, len(files))}/{len(files)} files, "
                         f"{len(passages)} unique passages")
    info = {"roots": roots, "files": len(files), "raw_passages": raw,
            "unique_passages": len(passages), "extract_s": round(time.monotonic() - t0, 1),
            "min_words": MIN_WORDS, "max_words": MAX_WORDS}
    return passages, info


def corpus_hash(passages: list[str]) -> str:
    h = hashlib.sha256()
    for p in passages:
        h.update(p.encode("utf-8", "replace"))
        h.update(b"\n")
    return h.hexdigest()


def load_passages(progress: Callable[[str], None] | None = None
                  ) -> tuple[list[str], dict[str, Any]]:
    """The passage list, from the cache when it was built for the same interpreter roots."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    roots = source_roots()
    key = hashlib.sha256(f"v{CORPUS_VERSION}|{'|'.join(roots)}".encode()).hexdigest()[:12]
    path = CACHE_DIR / f"docstrings-{key}.txt.gz"
    meta_path = CACHE_DIR / f"docstrings-{key}.meta.npy"
    if path.exists() and meta_path.exists():
        with gzip.open(path, "rt", encoding="utf-8") as f:
            passages = f.read().split("\n")
        info = dict(np.load(meta_path, allow_pickle=True).item())
        info["cached"] = True
        return passages, info
    passages, info = extract_passages(progress)
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=3) as f:
        f.write("\n".join(passages))  # passages are whitespace-normalised: no newlines inside
    os.replace(tmp, path)
    np.save(meta_path, np.array(info, dtype=object), allow_pickle=True)
    info["cached"] = False
    return passages, info


def embeddings(n: int, n_queries: int, dim: int, progress: Callable[[str], None] | None = None
               ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(index vectors (n', dim), query vectors (q', dim), info), unit norm, float32.
    n' = min(n, passages - n_queries); the info says what was actually obtained."""
    from sklearn.decomposition import TruncatedSVD  # noqa: PLC0415 - optional dev dependency
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415

    passages, cinfo = load_passages(progress)
    chash = corpus_hash(passages)
    total = len(passages)
    want_q = n_queries
    n_queries = max(n_queries, QUERY_POOL)  # one cached set serves every --queries <= pool
    nq = min(n_queries, total // 10)
    ni = min(n, total - 2 * nq)  # slack: query passages without any term are dropped
    key = f"lsa-v{CORPUS_VERSION}-{chash[:12]}-{ni}-{nq}-{dim}-{SEED}"
    path = CACHE_DIR / f"{key}.npz"
    info: dict[str, Any] = {"corpus": cinfo, "corpus_sha256": chash, "passages_total": total,
                            "n_index": ni, "n_queries": nq, "dim": dim, "seed": SEED,
                            "method": "TfidfVectorizer(sublinear_tf, min_df=2, max_df=0.5, "
                                      "english stop words, max_features=200000) + "
                                      "TruncatedSVD(randomized, n_iter=5), L2-normalised",
                            "cache_file": str(path)}
    if path.exists():
        z = np.load(path)
        info.update(cached=True, **{k: float(z[k]) for k in ("fit_s", "explained_variance")})
        info.update(n_index=int(len(z["x"])), n_queries=int(len(z["q"])),
                    vocabulary=int(z["vocabulary"]),
                    dropped_empty_index_passages=int(z["dropped"]))
        info["n_queries"] = min(want_q, int(len(z["q"])))
        return z["x"], z["q"][:want_q], info
    order = np.random.default_rng(SEED).permutation(total)
    idx_text = [passages[i] for i in order[:ni]]
    q_text = [passages[i] for i in order[ni:]]  # all the rest: empty ones are dropped below
    t0 = time.monotonic()
    if progress:
        progress(f"TF-IDF over {ni} passages")
    vec = TfidfVectorizer(sublinear_tf=True, min_df=2, max_df=0.5, stop_words="english",
                          max_features=200_000, dtype=np.float32)
    a = vec.fit_transform(idx_text)
    b = vec.transform(q_text)
    # passages left with no term (all stop words / rare words) have no direction: drop them
    keep_a = np.flatnonzero(a.getnnz(axis=1) > 0)
    keep_b = np.flatnonzero(b.getnnz(axis=1) > 0)[:nq]
    info["dropped_empty_index_passages"] = int(a.shape[0] - len(keep_a))
    a, b = a[keep_a], b[keep_b]
    info["n_index"], info["n_queries"] = int(a.shape[0]), int(b.shape[0])
    if progress:
        progress(f"TF-IDF matrix {a.shape[0]} x {a.shape[1]} ({a.nnz} non-zeros); "
                 f"SVD to {dim} dims (minutes)")
    svd = TruncatedSVD(n_components=dim, algorithm="randomized", n_iter=5, random_state=SEED)
    x = svd.fit_transform(a).astype(np.float32)
    q = svd.transform(b).astype(np.float32)
    fit_s = time.monotonic() - t0

    def unit(m: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        return m / np.maximum(norms, 1e-12)

    x, q = unit(x), unit(q)
    ev = float(svd.explained_variance_ratio_.sum())
    np.savez(path, x=x, q=q, fit_s=fit_s, explained_variance=ev, vocabulary=a.shape[1],
             dropped=info["dropped_empty_index_passages"])
    info.update(cached=False, fit_s=fit_s, explained_variance=ev, vocabulary=int(a.shape[1]))
    info["n_queries"] = min(want_q, len(q))
    return x, q[:want_q], info


if __name__ == "__main__":  # build the cache ahead of a benchmark run
    import sys

    def _p(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    dim = int(sys.argv[2]) if len(sys.argv) > 2 else 768
    x, q, info = embeddings(n, 1000, dim, _p)
    print(x.shape, q.shape, {k: v for k, v in info.items() if k != "corpus"}, info["corpus"])
