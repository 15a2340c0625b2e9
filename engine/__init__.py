"""Quiver's engine: collections, segments, WAL, filters (Qdrant semantics)."""

QUIVER_VERSION = "0.1.0"
