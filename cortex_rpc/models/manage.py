"""Deleting and fusing fine-tuned models, without ever touching a base model.

Both work through a hidden temporary directory and one rename, so ``listModels`` never
shows a half-deleted or half-written model.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..errors import CortexError
from ..paths import validate_model_name
from ..workers import log_tail, start_worker
from .fine_tuned import fine_tuned_dir, marker_base_path, read_marker

FUSE_TIMEOUT_SECONDS = 3600


def delete_model(name: str, models_dir: Path | None = None) -> dict[str, Any]:
    """Remove a fine-tuned model folder: renamed aside first, then deleted."""
    path = fine_tuned_dir(name, models_dir)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    trash = Path(tempfile.mkdtemp(prefix=f".deleted-{name}.", dir=path.parent))
    path.rename(trash / name)
    shutil.rmtree(trash, ignore_errors=True)
    return {"name": name, "path": str(path), "freedBytes": size}


def fuse_model(
    name: str, output_name: str, models_dir: Path | None = None, python: str | None = None
) -> dict[str, Any]:
    """Write a standalone model (base + adapter fused) with mlx_lm's fuse, in a subprocess.

    mlx is never imported in the server: ``python -m mlx_lm fuse`` runs in a child process.
    """
    source = fine_tuned_dir(name, models_dir)
    validate_model_name(output_name, "outputName")
    target = source.parent / output_name
    if target.exists():
        raise CortexError(
            "model-exists",
            f"A model named {output_name!r} already exists at {target}",
            path=str(target),
        )
    marker = read_marker(source) or {}
    base = marker_base_path(marker) or Path("")
    if not (base / "config.json").is_file():
        raise CortexError(
            "model-not-found", f"The base model of {name!r} is missing: {base}", path=str(base)
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_name}.", dir=source.parent))
    try:
        worker = start_worker(
            "mlx_lm",
            ["fuse", "--model", str(base), "--adapter-path", str(source)]
            + ["--save-path", str(tmp / "m")],
            log_path=tmp / "fuse.log",
            python=python,
            events=False,
        )
        try:
            returncode = worker.wait(FUSE_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            worker.signal(signal.SIGKILL)
            worker.wait()
            raise CortexError(
                "fuse-failed", f"mlx_lm fuse took more than {FUSE_TIMEOUT_SECONDS} s"
            ) from None
        if returncode != 0:
            tail = "\n".join(log_tail(tmp / "fuse.log").splitlines()[-8:])
            raise CortexError("fuse-failed", f"mlx_lm fuse failed: {tail}")
        (tmp / "m").rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    return {"name": output_name, "path": str(target), "baseModel": str(base), "sizeBytes": size}
