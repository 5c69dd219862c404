"""Commands printed for the user to copy, spelled so they work as shown.

After ``make demo`` the virtual environment is usually not activated: a bare
``cortex-finetune`` or ``python`` would then be another program, or none at all.
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


def cortex_finetune() -> str:
    """Return the ``cortex-finetune`` command of this installation (``python -m`` without one)."""
    if (Path(sys.executable).parent / "cortex-finetune").exists():
        return program("cortex-finetune")
    return f"{program(Path(sys.executable).name)} -m cortex_client.cli"


def python() -> str:
    """Return the interpreter that has cortex-rpc and mlx_lm installed."""
    return program(Path(sys.executable).name)
