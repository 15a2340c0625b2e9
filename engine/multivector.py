"""Multivectors (late interaction): the query type, validation and token rows per segment.

A point's multivector is a list of token vectors of the configured size (variable length).
A segment keeps each multivector name's tokens as one append-only row-major matrix plus row
ends (`MultiStore`, the same layout as sparse CSR rows): point i's tokens are
`tokens[ends[i-1]:ends[i]]`. Rows below the segment's row count never change; a point without
the vector has an empty range and `present` False.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import ValidationError


@dataclass(frozen=True, slots=True)
class MultiVector:
    """A multivector query: (q, d) float32 token vectors, not yet prepared (Cosine)."""

    tokens: np.ndarray


@dataclass(frozen=True)
class MultiBatch:
    """Multivectors of some points: row j is `tokens[offsets[j]:offsets[j+1]]`."""

    offsets: np.ndarray  # (r + 1,) int64
    tokens: np.ndarray  # (t, d) float32

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, rows: np.ndarray) -> MultiBatch:
        """Rows `rows` of this batch, in that order (vectorised)."""
        rows = np.asarray(rows, np.int64)
        starts, lengths = self.offsets[:-1][rows], np.diff(self.offsets)[rows]
        offsets, entry = _gather(starts, lengths)
        return MultiBatch(offsets, self.tokens[entry])

    def row(self, j: int) -> np.ndarray:
        return self.tokens[int(self.offsets[j]) : int(self.offsets[j + 1])]


def empty_batch(dim: int, rows: int = 0) -> MultiBatch:
    return MultiBatch(np.zeros(rows + 1, np.int64), np.empty((0, dim), np.float32))


def _gather(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets of the gathered rows, token positions to take)."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    entry = np.repeat(starts - offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
    return offsets, entry


def concat(batches: list[MultiBatch], dim: int) -> MultiBatch:
    if not batches:
        return empty_batch(dim)
    lengths = np.concatenate([np.diff(b.offsets) for b in batches])
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return MultiBatch(offsets, np.concatenate([b.tokens for b in batches]).reshape(-1, dim))


def checked_batch(rows: list[Any], dim: int, name: str = "") -> MultiBatch:
    """Many points' multivectors (JSON lists of lists) → one batch, checked as Qdrant checks
    them: at least one token, every token of size `dim`, numbers only, finite. Any problem is
    a 400 (ValidationError)."""
    where = f" '{name}'" if name else ""
    lengths = np.zeros(len(rows), np.int64)
    flat: list[Any] = []
    for j, raw in enumerate(rows):
        if not isinstance(raw, list) or not all(isinstance(t, list) for t in raw):
            raise ValidationError(f"multivector{where} must be a list of vectors (lists of "
                                  "numbers)")
        if not raw:
            raise ValidationError(f"Multivector must not be empty for vector{where}")
        lengths[j] = len(raw)
        flat.extend(raw)
    for t in flat:
        if len(t) != dim:
            if not t:
                raise ValidationError(f"Dense vector must not be empty for vector{where}")
            raise ValidationError(f"Vector dimension error: expected dim: {dim}, got {len(t)}")
    values = [v for t in flat for v in t]
    if not all(type(v) in (int, float) for v in values):  # "1", true and null convert silently
        raise ValidationError(f"multivector{where}: components must be numbers")
    with np.errstate(over="ignore"):
        tokens = np.asarray(values, np.float64).astype(np.float32).reshape(-1, dim)
    if not np.isfinite(tokens).all():
        raise ValidationError("Vector contains NaN or infinite values")
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return MultiBatch(offsets, tokens)


def prepare(batch: MultiBatch, normalise: bool) -> MultiBatch:
    """Tokens as stored (Cosine: each token unit length; zero tokens stay zero)."""
    if not normalise or not len(batch.tokens):
        return batch
    norms = np.sqrt(np.einsum("ij,ij->i", batch.tokens, batch.tokens))[:, None]
    norms[norms == 0] = 1.0
    return MultiBatch(batch.offsets, (batch.tokens / norms).astype(np.float32))


class MultiStore:
    """One multivector's rows in a segment (see the module docstring). Readers holding a row
    count keep reading valid data while rows are appended: growth copies into new arrays, and
    tokens are written before the row ends that publish them."""

    def __init__(self, dim: int, capacity: int = 16) -> None:
        self.dim = dim
        self.ends = np.zeros(capacity, np.int64)
        self.tokens = np.zeros((max(capacity, 16), dim), np.float32)
        self.ntok = 0

    def grow(self, capacity: int, n: int) -> None:
        if capacity > len(self.ends):
            ends = np.zeros(capacity, np.int64)
            ends[:n] = self.ends[:n]
            self.ends = ends

    def _reserve(self, ntok: int) -> None:
        if ntok > len(self.tokens):
            new = np.zeros((max(ntok, 2 * len(self.tokens)), self.dim), np.float32)
            new[: self.ntok] = self.tokens[: self.ntok]
            self.tokens = new

    def append(self, start: int, m: int, pos: np.ndarray, batch: MultiBatch) -> None:
        """Rows [start, start + m): batch row j goes to row start + pos[j] (pos ascending);
        the other rows are empty. Caller has grown `ends` to start + m."""
        lengths = np.zeros(m, np.int64)
        lengths[pos] = np.diff(batch.offsets)
        ntok = self.ntok + len(batch.tokens)
        self._reserve(ntok)
        self.tokens[self.ntok : ntok] = batch.tokens
        self.ends[start : start + m] = self.ntok + np.cumsum(lengths)
        self.ntok = ntok

    def starts(self, rows: np.ndarray) -> np.ndarray:
        return np.where(rows > 0, self.ends[np.maximum(rows - 1, 0)], 0)

    def rows(self, rows: np.ndarray) -> MultiBatch:
        """Some rows as a batch (host copies), in the order given."""
        rows = np.asarray(rows, np.int64)
        starts = self.starts(rows)
        offsets, entry = _gather(starts, self.ends[rows] - starts)
        return MultiBatch(offsets, self.tokens[entry])

    def batch(self, n: int) -> MultiBatch:
        """Rows [0, n) as a batch of views (rows below n never change)."""
        offsets = np.zeros(n + 1, np.int64)
        offsets[1:] = self.ends[:n]
        return MultiBatch(offsets, self.tokens[: int(offsets[-1])])

    @classmethod
    def load(cls, batch: MultiBatch, dim: int, capacity: int) -> MultiStore:
        n = len(batch)
        store = cls(dim, max(capacity, n, 16))
        store._reserve(len(batch.tokens))
        store.tokens[: len(batch.tokens)] = batch.tokens
        store.ends[:n] = batch.offsets[1:]
        store.ntok = len(batch.tokens)
        return store
