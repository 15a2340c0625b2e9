"""What a collection is made of: its config, segments, id tracker, WAL and commit bookkeeping.

`Collection` (engine/collection.py) is this state plus its operations. The modules that work
on the state from outside the class — flush/commit (engine/flush.py) and background indexing
(engine/indexing.py) — take a `CollectionState`, so they never import the collection back.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from engine.config import CollectionConfig
from engine.id_tracker import IdTracker
from engine.segment import Segment
from engine.wal import Wal


class CollectionState:
    def __init__(self, name: str, path: str, config: CollectionConfig,
                 payload_schema: dict[str, Any], wal_fsync: bool = True) -> None:
        self.name = name
        self.path = path
        self.config = config
        self.payload_schema = payload_schema
        self.write_lock = threading.RLock()  # every change to what is below
        self.flush_lock = threading.Lock()  # one flush (or vacuum) at a time
        self.segments: list[Segment] = []  # the last one is appendable
        self.seg_by_id: dict[int, Segment] = {}
        self.ids = IdTracker()
        self.next_segment_id = 0
        self.flushed_seq = 0  # WAL records up to here are in the committed segments
        self.gen = 0  # file generation of the last commit
        self.seg_meta: dict[int, dict[str, Any]] = {}  # last committed per-segment metadata
        self.wal = Wal(os.path.join(path, "wal"), fsync=wal_fsync)
        self.last_write = time.monotonic()
        self.created_at = time.time()
        self.closed = False
