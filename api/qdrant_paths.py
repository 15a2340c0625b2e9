"""Every operation in Qdrant's REST schema (v1.19), so an operation Quiver does not serve is
told apart from a wrong URL: it answers 400 naming it, never 404 "no such endpoint".

tests/api/test_schema_paths.py keeps this table equal to tests/data/qdrant-openapi-v1.19.json.
"""

from __future__ import annotations

import re
from functools import lru_cache

OPERATIONS: tuple[tuple[str, str], ...] = (
    ("PUT", "/collections/{collection_name}/shards"),
    ("GET", "/collections/{collection_name}/shards"),
    ("POST", "/collections/{collection_name}/shards/delete"),
    ("GET", "/"),
    ("GET", "/telemetry"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/issues"),
    ("DELETE", "/issues"),
    ("GET", "/cluster"),
    ("GET", "/cluster/telemetry"),
    ("POST", "/cluster/recover"),
    ("DELETE", "/cluster/peer/{peer_id}"),
    ("GET", "/quotas"),
    ("PUT", "/quotas"),
    ("GET", "/collections"),
    ("GET", "/collections/{collection_name}"),
    ("PUT", "/collections/{collection_name}"),
    ("PATCH", "/collections/{collection_name}"),
    ("DELETE", "/collections/{collection_name}"),
    ("POST", "/collections/aliases"),
    ("PUT", "/collections/{collection_name}/index"),
    ("GET", "/collections/{collection_name}/exists"),
    ("DELETE", "/collections/{collection_name}/index/{field_name}"),
    ("PUT", "/collections/{collection_name}/vectors/{vector_name}"),
    ("DELETE", "/collections/{collection_name}/vectors/{vector_name}"),
    ("GET", "/collections/{collection_name}/cluster"),
    ("POST", "/collections/{collection_name}/cluster"),
    ("GET", "/collections/{collection_name}/optimizations"),
    ("GET", "/collections/{collection_name}/aliases"),
    ("GET", "/aliases"),
    ("POST", "/collections/{collection_name}/snapshots/upload"),
    ("PUT", "/collections/{collection_name}/snapshots/recover"),
    ("GET", "/collections/{collection_name}/snapshots"),
    ("POST", "/collections/{collection_name}/snapshots"),
    ("DELETE", "/collections/{collection_name}/snapshots/{snapshot_name}"),
    ("GET", "/collections/{collection_name}/snapshots/{snapshot_name}"),
    ("GET", "/snapshots"),
    ("POST", "/snapshots"),
    ("DELETE", "/snapshots/{snapshot_name}"),
    ("GET", "/snapshots/{snapshot_name}"),
    ("GET", "/collections/{collection_name}/shards/{shard_id}/snapshot"),
    ("POST", "/collections/{collection_name}/shards/{shard_id}/snapshots/upload"),
    ("PUT", "/collections/{collection_name}/shards/{shard_id}/snapshots/recover"),
    ("GET", "/collections/{collection_name}/shards/{shard_id}/snapshots"),
    ("POST", "/collections/{collection_name}/shards/{shard_id}/snapshots"),
    ("DELETE", "/collections/{collection_name}/shards/{shard_id}/snapshots/{snapshot_name}"),
    ("GET", "/collections/{collection_name}/shards/{shard_id}/snapshots/{snapshot_name}"),
    ("GET", "/collections/{collection_name}/points/{id}"),
    ("POST", "/collections/{collection_name}/points"),
    ("PUT", "/collections/{collection_name}/points"),
    ("POST", "/collections/{collection_name}/points/delete"),
    ("PUT", "/collections/{collection_name}/points/vectors"),
    ("POST", "/collections/{collection_name}/points/vectors/delete"),
    ("POST", "/collections/{collection_name}/points/payload"),
    ("PUT", "/collections/{collection_name}/points/payload"),
    ("POST", "/collections/{collection_name}/points/payload/delete"),
    ("POST", "/collections/{collection_name}/points/payload/clear"),
    ("POST", "/collections/{collection_name}/points/batch"),
    ("POST", "/collections/{collection_name}/points/scroll"),
    ("POST", "/collections/{collection_name}/points/count"),
    ("POST", "/collections/{collection_name}/facet"),
    ("POST", "/collections/{collection_name}/points/query"),
    ("POST", "/collections/{collection_name}/points/query/batch"),
    ("POST", "/collections/{collection_name}/points/query/groups"),
    ("POST", "/collections/{collection_name}/points/search/matrix/pairs"),
    ("POST", "/collections/{collection_name}/points/search/matrix/offsets"),
)

# Why an operation is not served, by path prefix (the first that matches wins).
REASONS = (
    ("/cluster", "Quiver runs as a single node: distributed mode is disabled"),
    ("/collections/{collection_name}/cluster", "Quiver runs as a single node: distributed "
     "mode is disabled"),
    ("/collections/{collection_name}/shards", "Quiver runs as a single node with one shard per "
     "collection: shard keys and shard snapshots are not supported"),
)


@lru_cache(maxsize=1)
def _patterns() -> list[tuple[str, str, re.Pattern[str]]]:
    out = []
    for method, template in OPERATIONS:
        rx = re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template))
        out.append((method, template, re.compile(rx + "$")))
    return out


def qdrant_operation(method: str, path: str) -> str | None:
    """The schema's template for `method path`, or None if Qdrant has no such operation."""
    for m, template, rx in _patterns():
        if m == method and rx.match(path):
            return template
    return None


def not_served(method: str, template: str) -> str:
    """The 400 message for a Qdrant operation Quiver does not serve."""
    why = next((r for prefix, r in REASONS if template.startswith(prefix)),
               "not implemented by Quiver yet")
    return f"{method} {template}: {why}"
