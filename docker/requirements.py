"""Print the runtime requirements of pyproject.toml plus the named extras, one per line.

The images install these in their own layer before copying the code, so a code change does
not reinstall CuPy or faiss. Used as `python requirements.py pyproject.toml gpu,s3`.

faiss-cpu and faiss-gpu-cu12 both install the `faiss` module; when an extra brings faiss-gpu
the base faiss-cpu requirement is dropped, so the GPU build is the one that is imported.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def _name(req: str) -> str:
    """The normalised distribution name of a requirement string (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if match is None:
        raise ValueError(f"unparsable requirement: {req!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: Path, extras: str) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    wanted = [e.strip() for e in extras.split(",") if e.strip()]
    unknown = [e for e in wanted if e not in optional]
    if unknown:
        raise ValueError(f"unknown extras {unknown}; pyproject declares {sorted(optional)}")
    extra_reqs = [r for e in wanted for r in optional[e]]
    base = list(project.get("dependencies", []))
    if any(_name(r).startswith("faiss-gpu") for r in extra_reqs):
        base = [r for r in base if _name(r) != "faiss-cpu"]
    out: list[str] = []
    for req in base + extra_reqs:
        if req not in out:
            out.append(req)
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: requirements.py PYPROJECT [EXTRA,EXTRA...]", file=sys.stderr)
        return 2
    try:
        reqs = requirements(Path(argv[1]), argv[2] if len(argv) == 3 else "")
    except (OSError, KeyError, ValueError) as exc:
        print(f"requirements.py: {exc}", file=sys.stderr)
        return 1
    print("\n".join(reqs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
