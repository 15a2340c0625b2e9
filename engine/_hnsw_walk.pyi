# Types for the compiled module engine/_hnsw_walk.c (built by setup.py where a C compiler is found).
from typing import Any

class Walker:
    def __init__(self, vectors: int, n: int, d: int, neighbors: int, offsets: int,
                 cum: list[int], entry: int, max_level: int, metric: int, owner: Any) -> None: ...
    def search(self, queries: Any, k: int, ef: int, out_d: Any, out_i: Any) -> int: ...
