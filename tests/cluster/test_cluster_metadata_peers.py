"""The metadata's peer ids and replica add/remove, without Ray: peer ids are stable across a
restart of the metadata actor, distinct even when two node ids share their first 52 bits."""

from __future__ import annotations

from pathlib import Path

from api.cluster.metadata import ClusterMetadata, metadata_path


def test_peer_ids_are_recorded_and_stable(tmp_path: Path) -> None:
    meta = ClusterMetadata(metadata_path(str(tmp_path)))
    a, b = "ab" * 14, "ab" * 7 + "ff" * 7  # the same first 13 hex digits
    ids = meta.peer_ids([a, b])
    assert ids[a] == int(a[:13], 16) and ids[b] != ids[a]
    again = ClusterMetadata(metadata_path(str(tmp_path)))
    assert again.peer_ids([b, a]) == ids


def test_replicas_added_and_removed(tmp_path: Path) -> None:
    path = metadata_path(str(tmp_path))
    meta = ClusterMetadata(path)
    meta.put_collection("c", {"shards": {"0": [{"replica_id": 1, "state": "Active"}]}})
    meta.add_replica("c", 0, {"replica_id": 2, "state": "Partial"})
    meta.set_state("c", 0, 2, "Active")
    meta.remove_replica("c", 0, 1)
    assert ClusterMetadata(path).get()["collections"]["c"]["shards"]["0"] == [
        {"replica_id": 2, "state": "Active"}]
