"""The ``cortex-finetune`` command as the hints print it (see cortex_rpc.commands)."""

from __future__ import annotations

import sys
from pathlib import Path

from cortex_rpc.commands import program, python

__all__ = ["cortex_finetune", "python"]


def cortex_finetune() -> str:
    """Return the ``cortex-finetune`` command of this installation (``python -m`` without one)."""
    if (Path(sys.executable).parent / "cortex-finetune").exists():
        return program("cortex-finetune")
    return f"{python()} -m cortex_client.cli"
