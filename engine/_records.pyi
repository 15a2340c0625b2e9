# Types for the compiled module engine/_records.c (built by setup.py where a C compiler is found).
from typing import Any

def records(ids: list[Any], versions: Any, rows: Any, scores: Any) -> list[list[dict[str, Any]]]: ...
