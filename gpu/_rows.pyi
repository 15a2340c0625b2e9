# Types for the compiled module gpu/_rows.c (built by setup.py where a C compiler is found).
from typing import Any

def dots(matrix: Any, rows: Any, query: Any, out: Any) -> None: ...
