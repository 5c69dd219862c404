"""Whether mlx_lm can fine-tune a model folder, decided before any job starts.

Two kinds of folders look like models but fail only inside the training job: partial
downloads (weights still in ``blobs/*.incomplete`` of the hub cache, or shards the index
names but the folder lacks) and architectures mlx_lm has no module for (a BERT embedding
model). Both are found from the file system alone: mlx_lm's ``models/`` folder and its
model-type remapping are read from its source, so listing models never imports mlx.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .hf_cache import snapshot_of


@dataclass(frozen=True)
class NotTrainable:
    """Why a model cannot be fine-tuned: an error code of errors.py and a message saying what to do."""

    code: str  # model-incomplete | unsupported-architecture (or an inspection error's code)
    message: str

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class MlxLmModels:
    """The model types the installed mlx_lm can build (``mlx_lm/models/TYPE.py``)."""

    modules: frozenset[str]
    remapping: dict[str, str]
    architecture_remapping: dict[tuple[str, str], str]

    def module_for(self, config: dict[str, Any]) -> str | None:
        """Return the mlx_lm.models module ``config`` loads with, as mlx_lm picks it; None if none."""
        model_type = config.get("model_type")
        if not isinstance(model_type, str) or not model_type:
            return None
        architectures = config.get("architectures") or ()
        if isinstance(architectures, str):
            architectures = (architectures,)
        for architecture in architectures if isinstance(architectures, (list, tuple)) else ():
            remapped = self.architecture_remapping.get((model_type, str(architecture)))
            if remapped is not None:
                model_type = remapped
                break
        else:
            model_type = self.remapping.get(model_type, model_type)
        return model_type if model_type in self.modules else None


def _literal_dict(tree: ast.Module, name: str) -> dict[Any, Any]:
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


@lru_cache(maxsize=1)
def mlx_lm_models() -> MlxLmModels | None:
    """Return what the installed mlx_lm can load, read from its files (None without mlx_lm)."""
    spec = importlib.util.find_spec("mlx_lm")  # a top-level find_spec imports nothing
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    models = package / "models"
    if not models.is_dir():
        return None
    modules = frozenset(p.stem for p in models.glob("*.py") if not p.name.startswith("_"))
    try:
        tree = ast.parse((package / "utils.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        tree = ast.Module(body=[], type_ignores=[])
    return MlxLmModels(
        modules,
        _literal_dict(tree, "MODEL_REMAPPING"),
        _literal_dict(tree, "MODEL_ARCHITECTURE_REMAPPING"),
    )


def architecture_problem(config: dict[str, Any]) -> NotTrainable | None:
    """Return why mlx_lm cannot build the model ``config`` describes, or None if it can."""
    known = mlx_lm_models()
    if known is None:
        return None  # no mlx_lm to ask: the job will say so
    if known.module_for(config) is not None:
        return None
    model_type = config.get("model_type")
    architectures = config.get("architectures")
    named = f" ({', '.join(map(str, architectures))})" if isinstance(architectures, list) else ""
    if not isinstance(model_type, str) or not model_type:
        message = "config.json names no model_type, so mlx_lm cannot build this model"
    else:
        message = (
            f"mlx_lm cannot train model_type {model_type!r}{named}: it has no "
            f"mlx_lm.models.{model_type}. Fine-tuning needs a decoder language model mlx_lm "
            "supports (llama, mistral, qwen2, qwen3, gemma, phi3, ...); an encoder or "
            "embedding model such as BERT cannot be fine-tuned here"
        )
    return NotTrainable("unsupported-architecture", message)


def download_problem(
    directory: Path, weights: list[Path], missing: list[str]
) -> NotTrainable | None:
    """Return why the weights of ``directory`` are incomplete, or None when they are all there.

    ``weights`` are the safetensors files present, ``missing`` the shards its index names
    that are not.
    """
    cached = snapshot_of(directory)
    partial = cached[0].incomplete_blobs() if cached else []
    if not missing and weights and not partial:
        return None
    if cached:
        repo = cached[0].repo_id
        still = f" ({len(partial)} file(s) still partial in blobs/*.incomplete)" if partial else ""
        what = (
            f"shards {', '.join(missing[:5])} are missing"
            if missing
            else "its weights are not there yet"
            if not weights
            else "a download into its cache folder has not finished"
        )
        return NotTrainable(
            "model-incomplete",
            f"The download of {repo} is incomplete: {what}{still}. Finish it with "
            f"`hf download {repo}` (it resumes), then list models again.",
        )
    if missing:
        return NotTrainable(
            "model-incomplete",
            f"{directory.name} is missing shards listed in model.safetensors.index.json: "
            f"{', '.join(missing[:5])}. Copy or download them again.",
        )
    return NotTrainable(
        "model-incomplete",
        f"{directory.name} has config.json but no *.safetensors weights. Copy or download "
        "them, or convert the model (e.g. `mlx_lm.convert`).",
    )
