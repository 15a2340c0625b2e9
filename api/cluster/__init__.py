"""Scale-out on Ray (issue 17): sharded, replicated collections behind the same REST/gRPC API.

Imported only in cluster mode (`cluster.enabled`); a single node never imports Ray.
- runtime: joins or starts Ray (`cluster.ray_address`), wraps the actor classes.
- shard: the ShardReplica actor, one collection's shard in its own engine Catalog, run
  through Quiver's own route handlers.
- metadata: the named detached actor holding collections, shard placement and replica
  states, persisted atomically under `<storage_path>/cluster/`.
- placement: which node gets which replica (spread over nodes, one GPU each when any).
- router: the front end's side: id → shard, write fan-out, read scatter-gather.
- merge: exact merges of per-shard results (top-k, scroll, count, facet, groups, retrieve).
"""
