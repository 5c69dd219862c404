"""Deleting and fusing fine-tuned models, without ever touching a base model.

Both work through a hidden temporary directory and one rename, so ``listModels`` never
shows a half-deleted or half-written model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import CortexError
from ..paths import CortexHome, validate_model_name
from .fine_tuned import fine_tuned_dir


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
    """Write a standalone model (base + adapter fused) to ``models_dir/output_name``.

    The ``mlx`` target of ``export_model`` without its verification: mlx_lm's fuse in the
    export worker (a QLoRA adapter fused into the base quantized as it was trained).
    """
    from .export import export_model

    source = fine_tuned_dir(name, models_dir)
    validate_model_name(output_name, "outputName")
    home = CortexHome(source.parent.parent)
    try:
        result = export_model(
            home, str(source.resolve()), "mlx", name=output_name, verify=False, python=python
        )
    except CortexError as error:
        if error.code != "target-exists":
            raise
        raise CortexError(
            "model-exists",
            f"A model named {output_name!r} already exists at {error.data.get('path')}",
            path=error.data.get("path"),
        ) from None
    return {
        "name": output_name,
        "path": result.path,
        "baseModel": result.base_model,
        "sizeBytes": result.size_bytes,
    }
