"""Whether this machine could have built Quiver's C modules (setup.py): a C compiler and
Python's headers. Where it could, a module missing means the build failed silently (the
extensions are optional), which the tests must report rather than skip."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path


def toolchain() -> bool:
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return headers.is_file() and any(shutil.which(c) for c in ("cc", "gcc"))
