"""Request parsing: request bodies and query parameters → typed engine requests and operations.

common: what every route parses (its collection, flags, limits, selectors); reads: query,
search, scroll, count and retrieve bodies → engine.plan requests; writes: point-write bodies →
engine.operations; vectors: dense vectors given as JSON lists → float32 arrays.
"""
