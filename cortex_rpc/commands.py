"""Commands printed for the user to copy, spelled so they work as shown.

After ``make demo`` the virtual environment is usually not activated (and an editor starts
``cortex-rpc`` by its full path): a bare ``python`` or ``mlx_lm.generate`` would then be
another program, or none at all.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path


def program(name: str) -> str:
    """Return how to run this installation's ``name``: the bare name when PATH finds it, else
    its absolute path (quoted for the shell)."""
    here = Path(sys.executable).parent
    found = shutil.which(name)
    if found and Path(found).parent.resolve() == here.resolve():
        return name
    return shlex.quote(str(here / name))


def python() -> str:
    """Return the interpreter that has cortex-rpc and mlx_lm installed."""
    return program(Path(sys.executable).name)
