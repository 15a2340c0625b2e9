"""Sparse vectors: the query type, CSR rows per segment, posting lists and IDF.

A segment keeps each sparse vector's rows as an append-only CSR (`SparseStore`): row i's
entries are `indices/values[ends[i-1]:ends[i]]`, sorted by index (Qdrant returns them so).
Rows below the segment's row count never change, like dense rows; a point without the vector
has an empty row and `present` False (the segment's mask, shared with dense vectors).

Search goes through an inverted index (`PostingIndex`: term → rows, values) built over a
segment's leading rows; rows appended after it are scored straight from the CSR until the
tail grows past a bound and the index is rebuilt (engine/sparse_search.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import ValidationError

U32_MAX = (1 << 32) - 1
# rebuild a segment's posting lists once this many rows (or an eighth of those indexed,
# whichever is more) sit past them: the tail is scanned entry by entry on every search
TAIL_ROWS = 1024
# A term present in at least 1/DENSE_SHARE of a segment's rows (and the segment has at least
# DENSE_MIN_ROWS rows) also gets a dense column: scoring it is one contiguous multiply-add
# instead of a scatter over most rows. Memory: 4 bytes a row, at most twice that term's postings.
DENSE_SHARE = 4
DENSE_MIN_ROWS = 4096


@dataclass(frozen=True, slots=True)
class SparseVector:
    """A sparse vector: unique uint32 term ids and their float32 weights (same length)."""

    indices: np.ndarray
    values: np.ndarray


def sparse_vector(indices: object, values: object, name: str = "") -> SparseVector:
    """A checked sparse vector, entries sorted by index (as Qdrant stores and returns them).
    `indices` and `values` are JSON lists (or arrays); any problem is a 400."""
    return checked_batch([indices], [values], name).row(0)


def checked_batch(indices: list[object], values: list[object], name: str = "") -> SparseBatch:
    """Many points' sparse vectors (JSON lists) → one CSR batch, checked as Qdrant checks them
    (u32 indices, unique per vector, as many values as indices, finite values) and each row
    sorted by index: a few numpy passes over all entries, no numpy call per point."""
    where = f" {name!r}" if name else ""
    for what, column in (("indices", indices), ("values", values)):
        if not all(isinstance(raw, list | np.ndarray) for raw in column):
            raise ValidationError(f"sparse vector{where}: `{what}` must be a list of numbers")
    lengths = np.fromiter(map(len, indices), np.int64, len(indices))  # type: ignore[arg-type]
    if not np.array_equal(lengths, np.fromiter(map(len, values), np.int64,  # type: ignore[arg-type]
                                               len(values))):
        raise ValidationError(f"sparse vector{where}: indices and values must be the same "
                              "length")
    flat_i = [i for raw in indices for i in raw]  # type: ignore[attr-defined]
    flat_v = [v for raw in values for v in raw]  # type: ignore[attr-defined]
    if any(type(i) is bool for i in flat_i) or not all(
            type(v) in (int, float) for v in flat_v):  # "1" or true would convert silently
        if not all(isinstance(v, np.floating | np.integer) for v in flat_v):  # arrays given
            raise ValidationError(f"sparse vector{where}: indices and values must be numbers")
    try:
        idx = np.asarray(flat_i)
        vals = np.asarray(flat_v, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise ValidationError(f"sparse vector{where}: values must be numbers "
                              "(NaN and infinity are refused)") from None
    if idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() > U32_MAX):
        raise ValidationError(f"sparse vector{where}: indices must be integers in "
                              f"0..{U32_MAX} (u32)")
    with np.errstate(over="ignore"):  # beyond float32: refused just below
        vals32 = vals.astype(np.float32)
    if not np.isfinite(vals32).all():
        raise ValidationError(f"sparse vector{where}: values must be finite (no NaN or "
                              "infinity)")
    idx = idx.astype(np.uint32).reshape(-1)
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    order = np.lexsort((idx, rows))
    idx, rows = idx[order], rows[order]
    if len(idx) > 1 and ((idx[1:] == idx[:-1]) & (rows[1:] == rows[:-1])).any():
        raise ValidationError(f"sparse vector{where}: indices must be unique")
    indptr = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return SparseBatch(indptr, idx, vals32[order])


@dataclass(frozen=True)
class SparseBatch:
    """Sparse vectors of some points as one CSR: row j is `indices/values[indptr[j]:
    indptr[j+1]]` (sorted by index, checked)."""

    indptr: np.ndarray  # (r + 1,) int64
    indices: np.ndarray  # (nnz,) uint32
    values: np.ndarray  # (nnz,) float32

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def of(cls, vectors: list[SparseVector]) -> SparseBatch:
        lengths = np.fromiter((len(v.indices) for v in vectors), np.int64, len(vectors))
        indptr = np.zeros(len(vectors) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        if vectors:
            indices = np.concatenate([v.indices for v in vectors]).astype(np.uint32, copy=False)
            values = np.concatenate([v.values for v in vectors]).astype(np.float32, copy=False)
        else:
            indices, values = np.empty(0, np.uint32), np.empty(0, np.float32)
        return cls(indptr, indices, values)

    def take(self, rows: np.ndarray) -> SparseBatch:
        """Rows `rows` of this batch, in that order (vectorised: no loop per row)."""
        starts, lengths = self.indptr[:-1][rows], np.diff(self.indptr)[rows]
        return SparseBatch(*gather(starts, lengths, self.indices, self.values))

    def row(self, j: int) -> SparseVector:
        a, b = int(self.indptr[j]), int(self.indptr[j + 1])
        return SparseVector(self.indices[a:b], self.values[a:b])


def gather(starts: np.ndarray, lengths: np.ndarray, indices: np.ndarray, values: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The CSR (indptr, indices, values) of the rows at `starts` with `lengths`."""
    indptr = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    total = int(indptr[-1])
    entry = np.repeat(starts - indptr[:-1], lengths) + np.arange(total, dtype=np.int64)
    return indptr, indices[entry], values[entry]


def concat(batches: list[SparseBatch]) -> SparseBatch:
    if not batches:
        return SparseBatch(np.zeros(1, np.int64), np.empty(0, np.uint32), np.empty(0, np.float32))
    lengths = np.concatenate([np.diff(b.indptr) for b in batches])
    indptr = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return SparseBatch(indptr, np.concatenate([b.indices for b in batches]),
                       np.concatenate([b.values for b in batches]))


# ---- a segment's rows -------------------------------------------------------------------------


class SparseStore:
    """One sparse vector's rows in a segment: append-only CSR (see the module docstring).

    Readers holding a row count keep reading valid data while rows are appended: growth
    copies into new arrays, and entries are written before the row ends that publish them.
    """

    def __init__(self, capacity: int = 16) -> None:
        self.ends = np.zeros(capacity, np.int64)
        self.indices = np.zeros(max(capacity, 16), np.uint32)
        self.values = np.zeros(max(capacity, 16), np.float32)
        self.nnz = 0
        self.index: PostingIndex | None = None  # over the leading rows; swapped whole

    def grow(self, capacity: int, n: int) -> None:
        if capacity > len(self.ends):
            ends = np.zeros(capacity, np.int64)
            ends[:n] = self.ends[:n]
            self.ends = ends

    def _reserve(self, nnz: int) -> None:
        if nnz > len(self.indices):
            cap = max(nnz, 2 * len(self.indices))
            for attr in ("indices", "values"):
                old = getattr(self, attr)
                new = np.zeros(cap, old.dtype)
                new[: self.nnz] = old[: self.nnz]
                setattr(self, attr, new)

    def append(self, start: int, m: int, pos: np.ndarray, batch: SparseBatch) -> None:
        """Rows [start, start + m): batch row j goes to row start + pos[j] (pos ascending);
        the other rows are empty. Caller has grown `ends` to start + m."""
        lengths = np.zeros(m, np.int64)
        lengths[pos] = np.diff(batch.indptr)
        nnz = self.nnz + len(batch.indices)
        self._reserve(nnz)
        self.indices[self.nnz : nnz] = batch.indices
        self.values[self.nnz : nnz] = batch.values
        self.ends[start : start + m] = self.nnz + np.cumsum(lengths)
        self.nnz = nnz

    def starts(self, rows: np.ndarray) -> np.ndarray:
        ends = self.ends
        return np.where(rows > 0, ends[np.maximum(rows - 1, 0)], 0)

    def rows(self, rows: np.ndarray) -> SparseBatch:
        """Some rows as a batch (host copies), in the order given."""
        rows = np.asarray(rows, np.int64)
        starts = self.starts(rows)
        return SparseBatch(*gather(starts, self.ends[rows] - starts, self.indices, self.values))

    def csr(self, n: int, start: int = 0) -> SparseBatch:
        """Rows [start, n) as a batch whose arrays are views where possible."""
        base = int(self.ends[start - 1]) if start > 0 else 0
        end = int(self.ends[n - 1]) if n > 0 else 0
        indptr = np.empty(n - start + 1, np.int64)
        indptr[0] = 0
        indptr[1:] = self.ends[start:n] - base
        return SparseBatch(indptr, self.indices[base:end], self.values[base:end])

    @classmethod
    def load(cls, batch: SparseBatch, capacity: int) -> SparseStore:
        n = len(batch)
        store = cls(max(capacity, n, 16))
        store._reserve(len(batch.indices))
        store.indices[: len(batch.indices)] = batch.indices
        store.values[: len(batch.values)] = batch.values
        store.ends[:n] = batch.indptr[1:]
        store.nnz = len(batch.indices)
        return store

    def posting_index(self, n: int) -> PostingIndex:
        """Posting lists over (at least most of) rows [0, n): rebuilt when the rows past
        the current index are too many to scan on every search."""
        index = self.index
        if index is None or (n - index.rows > max(TAIL_ROWS, index.rows // 8)
                             and n > index.rows):
            index = PostingIndex.build(self.csr(n))
            self.index = index
        return index


# ---- posting lists ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PostingIndex:
    """An inverted index over rows [0, rows): term `terms[t]` occurs in rows
    `post_rows[offsets[t]:offsets[t+1]]` (ascending) with weights `post_values[...]`."""

    rows: int
    terms: np.ndarray  # (T,) uint32, sorted
    offsets: np.ndarray  # (T + 1,) int64
    post_rows: np.ndarray  # (nnz,) int32 (or int64 past 2^31 rows)
    post_values: np.ndarray  # (nnz,) float32
    # frequent terms: dense_slot[t] >= 0 is their row in `dense` ((D, rows) float32, 0 where
    # absent); -1 for the rest
    dense_slot: np.ndarray | None = None
    dense: np.ndarray | None = None
    min_value: float = 0.0  # the smallest stored weight (> 0: see sparse_search's hits)

    @classmethod
    def build(cls, csr: SparseBatch) -> PostingIndex:
        n = len(csr)
        lengths = np.diff(csr.indptr)
        row_dtype = np.int32 if n < (1 << 31) else np.int64
        entry_rows = np.repeat(np.arange(n, dtype=row_dtype), lengths)
        order = np.argsort(csr.indices, kind="stable")  # stable: rows stay ascending per term
        sorted_terms = csr.indices[order]
        terms, starts = np.unique(sorted_terms, return_index=True)
        offsets = np.empty(len(terms) + 1, np.int64)
        offsets[:-1] = starts
        offsets[-1] = len(sorted_terms)
        post_rows, post_values = entry_rows[order], csr.values[order]
        df = np.diff(offsets)
        frequent = (np.flatnonzero(df * DENSE_SHARE >= n) if n >= DENSE_MIN_ROWS
                    else np.empty(0, np.int64))
        slot = np.full(len(terms), -1, np.int32)
        slot[frequent] = np.arange(len(frequent), dtype=np.int32)
        dense = np.zeros((len(frequent), n), np.float32)
        for j, t in enumerate(frequent.tolist()):  # one scatter per frequent term, once
            a, b = offsets[t], offsets[t + 1]
            dense[j, post_rows[a:b]] = post_values[a:b]
        smallest = float(post_values.min()) if len(post_values) else 0.0
        return cls(n, terms, offsets, post_rows, post_values, slot, dense, smallest)

    def postings(self, query: np.ndarray) -> list[tuple[int, int, int]]:
        """(query position, start, end) of each query term that occurs in the index."""
        return [(q, a, b) for q, a, b, _ in self.postings_and_slots(query)]

    def postings_and_slots(self, query: np.ndarray) -> list[tuple[int, int, int, int]]:
        """(query position, start, end, dense slot or -1) of each query term in the index."""
        at = np.searchsorted(self.terms, query)
        found = at < len(self.terms)
        found[found] = self.terms[at[found]] == query[found]
        qpos = np.flatnonzero(found)
        t = at[qpos]
        slots = (self.dense_slot[t] if self.dense_slot is not None
                 else np.full(len(t), -1, np.int32))
        return list(zip(qpos.tolist(), self.offsets[t].tolist(), self.offsets[t + 1].tolist(),
                        slots.tolist(), strict=True))


# ---- IDF --------------------------------------------------------------------------------------


def idf(df: np.ndarray, n: int) -> np.ndarray:
    """Qdrant's inverse document frequency (BM25's): ln((N - df + 0.5) / (df + 0.5) + 1),
    N = live points having the vector, df = those among them containing the term."""
    df64 = df.astype(np.float64)
    return np.log((n - df64 + 0.5) / (df64 + 0.5) + 1.0)


