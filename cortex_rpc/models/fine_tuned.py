"""The fine-tuned model folder, owned here: its files, its marker, its base, assembly, loading.

Assembled aside and renamed into place only when complete.

Layout of ``$CORTEX_HOME/mlx_models/NAME/``::

    adapters.safetensors      the trained adapter (or full-layer) weights
    adapter_config.json       mlx_lm's adapter config (fine_tune_type, num_layers, lora_parameters)
    fine-tuned.marker         JSON: base model, config, dataset, losses, versions
    config.json, tokenizer*   copies of the base's, so the folder
                              describes itself and its tokenizer can be loaded alone

There is no ``model.safetensors``: the folder is an adapter, not a full model. It loads with
``mlx_lm.load(BASE, adapter_path=NAME_DIR)`` (BASE from the marker), or ``load_fine_tuned``.
No mlx import at module level: the server imports this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..config.training_config import TrainingConfig
from ..errors import CortexError
from ..paths import CortexHome, validate_model_name, write_atomic
from .base_identity import check_base, identify_base, resolve_base
from .quantization import quantize_base

MARKER = "fine-tuned.marker"
ADAPTERS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Base files copied so the folder is self-describing (config, tokenizer, chat template).
BASE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
)


def read_marker(directory: Path) -> dict[str, Any] | None:
    """Return the marker of a model folder, None if it is no fine-tune ({} if unreadable)."""
    path = directory / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return marker if isinstance(marker, dict) else {}


def marker_base_path(marker: dict[str, Any]) -> Path | None:
    """Return the base model folder a marker names (``{path, name}``, or a bare path)."""
    base = marker.get("baseModel")
    if isinstance(base, dict):
        base = base.get("path")
    return Path(base) if isinstance(base, str) and base else None


def fine_tuned_dir(name: str, models_dir: Path | None = None, field: str = "name") -> Path:
    """Return the folder of the fine-tuned model ``name``; refuse anything else."""
    validate_model_name(name, field)
    path = (models_dir or CortexHome.default().models) / name
    if not path.is_dir():
        raise CortexError("model-not-found", f"No fine-tuned model named {name!r} in {path.parent}")
    if not (path / MARKER).is_file():
        raise CortexError(
            "not-fine-tuned",
            f"{name!r} is not a fine-tuned model (no {MARKER}); cortex-rpc never "
            "deletes or rewrites base models.",
        )
    return path


def record_evaluation(model_dir: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` to the marker's ``evaluations`` (never half a file)."""
    path = model_dir / MARKER
    marker = json.loads(path.read_text(encoding="utf-8"))
    marker.setdefault("evaluations", []).append(entry)
    write_atomic(path, marker)


def base_and_adapter(
    model_path: str | Path, adapter: str | Path | None
) -> tuple[str, str | None, int | None]:
    """Return (base dir, adapter dir, quantization bits) for a base or fine-tuned model.

    ``model_path`` may itself be a fine-tuned folder (its marker names the base); an
    ``adapter`` trained on other weights is refused (``adapter-mismatch``), one trained on
    the same weights in another folder (a newer snapshot of the same repo) is accepted.
    """
    model_path = Path(model_path)
    if adapter is None and read_marker(model_path) is not None:
        adapter = model_path
    if adapter is None:
        if not (model_path / "config.json").exists():
            raise CortexError("model-not-found", f"{model_path} is not a model folder")
        return str(model_path.resolve()), None, None
    base, adapter_dir, marker = resolve_fine_tuned(adapter)
    if read_marker(model_path) is not None:
        model_path = base
    if model_path.resolve() != base.resolve():
        model_path = check_base(marker, model_path, adapter_dir.name)
    return str(model_path.resolve()), str(adapter_dir.resolve()), marker.get("quantizationBits")


def file_sha256(path: Path) -> str:
    """Return the hex sha256 of a file (the dataset's identity in the marker)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_path(name: str, models_dir: Path | None = None) -> Path:
    """Return where model ``name`` will be saved, refusing a name that is taken."""
    validate_model_name(name)
    path = (models_dir or CortexHome.default().models) / name
    if path.exists():
        raise CortexError(
            "model-exists",
            f"A model named {name!r} already exists at {path}; choose another name.",
            path=str(path),
        )
    return path


def assemble_model(
    name: str,
    adapter_dir: Path,
    base_model: Path,
    config: TrainingConfig,
    dataset_info: dict[str, Any],
    quantization_bits: int | None,
    final_losses: dict[str, Any],
    models_dir: Path | None = None,
    evaluation: dict[str, Any] | None = None,
    extra_files: dict[str, str] | None = None,
    marker_extra: dict[str, Any] | None = None,
) -> Path:
    """Build the model folder in a temp dir next to its target and rename it into place.

    ``evaluation`` (base vs fine-tuned validation loss) goes into the marker; ``extra_files``
    (name -> text, e.g. the loss curve) are written next to the adapter; ``marker_extra``
    adds marker fields (``continuedFrom`` of a continued model).

    Raises CortexError("model-exists") rather than overwrite; the temp dir is removed on failure.
    """
    target = output_path(name, models_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        shutil.copy2(adapter_dir / ADAPTERS, tmp / ADAPTERS)
        shutil.copy2(adapter_dir / ADAPTER_CONFIG, tmp / ADAPTER_CONFIG)
        for file_name in BASE_FILES:
            src = base_model / file_name
            if src.is_file():
                # Copies, not hardlinks: editing this folder must never change the base.
                shutil.copy2(src, tmp / file_name)
        marker = {
            "baseModel": identify_base(base_model).to_marker(),
            "name": name,
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "fineTuneType": config.fine_tune_type,
            "config": config.to_wire(),
            "dataset": dataset_info,
            "quantizationBits": quantization_bits,
            "finalLosses": final_losses,
            "evaluation": evaluation,
            "adapterBytes": (tmp / ADAPTERS).stat().st_size,
            "cortexRpc": __version__,
            **(marker_extra or {}),
        }
        for file_name, text in (extra_files or {}).items():
            (tmp / file_name).write_text(text, encoding="utf-8")
        write_atomic(tmp / MARKER, marker)
        os.chmod(tmp, 0o755)
        try:
            # rename fails on an existing non-empty directory: a racing job cannot be clobbered.
            os.rename(tmp, target)
        except OSError as exc:
            raise CortexError(
                "model-exists", f"A model named {name!r} appeared at {target} meanwhile."
            ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_fine_tuned(name_or_path: str | Path) -> tuple[Path, Path, dict[str, Any]]:
    """Return (base model dir, adapter dir, marker) for a fine-tuned model name or folder.

    The base is found by its weights (``base_identity.resolve_base``): a hub cache model
    whose ``refs/main`` moved to a snapshot with the same weights is used from there.
    """
    candidate = Path(name_or_path)
    if not (candidate / MARKER).exists():
        candidate = CortexHome.default().models / str(name_or_path)
    marker = read_marker(candidate)
    if marker is None:
        raise CortexError("model-not-found", f"{name_or_path} is not a fine-tuned model folder")
    return resolve_base(marker, candidate.name), candidate, marker


def load_fine_tuned(name_or_path: str | Path) -> tuple[Any, Any]:
    """Return (model, tokenizer) for a fine-tuned model, as it was trained (QLoRA included).

    A QLoRA adapter was trained against a quantized base, so the base is quantized the same way
    in memory before the adapter is applied.
    """
    base, adapter_dir, marker = resolve_fine_tuned(name_or_path)
    return load_with_adapter(base, adapter_dir, marker.get("quantizationBits"))


def load_with_adapter(
    base: Path, adapter_dir: Path | None, quantization_bits: int | None = None
) -> tuple[Any, Any]:
    """Load ``base`` with mlx_lm, quantize in memory if asked, then apply ``adapter_dir``."""
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load

    # Never run code shipped with a model (auto_map in its config or tokenizer config).
    model, tokenizer, model_config = load(
        str(base),
        tokenizer_config={"trust_remote_code": False},
        return_config=True,
        trust_remote_code=False,
    )
    if quantization_bits and "quantization" not in model_config:
        quantize_base(model, quantization_bits)  # as the worker did before training
    if adapter_dir is not None:
        load_adapters(model, str(adapter_dir))
    model.eval()
    return model, tokenizer
