"""Continual learning: a new version of a fine-tuned model, trained on new data plus a replay.

``startTraining {…, continueFrom: NAME, replayFraction}`` starts from NAME's adapter weights
(same LoRA layout: type, rank, alpha, layers, keys, quantization) and mixes a seeded sample of
NAME's own training split (the ``dataset.trainPath`` its marker records, kept in its job
folder) into the new training set, so that the old task is rehearsed while the new one is
learned. ``replayFraction`` is the share of replayed records in the mixed training set:
0.3 with 70 new records adds 30 old ones (at most all of them). No mlx here.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from ..errors import InvalidParams
from ..models.fine_tuned import ADAPTER_CONFIG, ADAPTERS, resolve_fine_tuned

DEFAULT_REPLAY_FRACTION = 0.3
# Config fields that fix the adapter's shape: the new version must keep them.
LAYOUT_FIELDS = (
    "fineTuneType",
    "loraRank",
    "loraAlpha",
    "loraDropout",
    "numLayers",
    "quantizationBits",
)


def continuation(previous: str | Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return what continuing ``previous`` needs: its base, layout overrides and worker options.

    ``{base, adapterDir, marker, overrides, options}``; ``overrides`` is ``config`` with the
    layout fields forced to the previous model's (a conflicting value is an InvalidParams).
    """
    base, adapter_dir, marker = resolve_fine_tuned(previous)
    old_config = dict(marker.get("config") or {})
    adapter_cfg = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    # The layers the adapter really has (numLayers may have been clamped to the model's).
    old_config["numLayers"] = adapter_cfg.get("num_layers", old_config.get("numLayers"))
    old_config["quantizationBits"] = marker.get("quantizationBits")
    layout = {key: old_config.get(key) for key in LAYOUT_FIELDS if key in old_config}
    for key, value in (config or {}).items():
        if key in layout and value != layout[key]:
            raise InvalidParams(
                f"config.{key} must stay {layout[key]!r} to continue {adapter_dir.name} "
                f"(its adapter has that layout)",
                field=f"config.{key}",
            )
    # WorkerOptions fields the new job needs (its adapter's start and layout).
    options: dict[str, Any] = {"init_adapters": str(adapter_dir / ADAPTERS)}
    keys = (adapter_cfg.get("lora_parameters") or {}).get("keys")
    if keys:
        options["lora_keys"] = tuple(keys)
    return {
        "base": base,
        "adapterDir": adapter_dir,
        "marker": marker,
        "overrides": {**(config or {}), **layout},
        "options": options,
    }


def _records(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _shape(line: str) -> str:
    record = json.loads(line)
    return "text" if "text" in record and "messages" not in record else "chat"


def mix_replay(
    train_path: Path, old_marker: dict[str, Any], fraction: float, seed: int = 0
) -> dict[str, Any]:
    """Append a replay sample of the old training split to ``train_path``; return what was done.

    Returns ``{fraction, examples, source, warning?}``. Without the old split (its job folder
    was deleted) or with records of another shape (chat vs text), training goes on without
    replay and ``warning`` says why.
    """
    info: dict[str, Any] = {"fraction": fraction, "examples": 0, "source": None}
    if fraction <= 0:
        return info
    old_path = (old_marker.get("dataset") or {}).get("trainPath")
    info["source"] = old_path
    if not old_path or not Path(old_path).is_file():
        info["warning"] = (
            f"The earlier training data ({old_path or 'not recorded'}) is gone; training "
            "without replay, so the old task may be forgotten."
        )
        return info
    new = _records(train_path)
    old = _records(Path(old_path))
    if new and old and _shape(new[0]) != _shape(old[0]):
        info["warning"] = (
            "The earlier data is plain text and the new data chat (or the reverse); mlx_lm "
            "cannot mix them, so training goes on without replay."
        )
        return info
    wanted = round(len(new) * fraction / max(1e-9, 1 - fraction))
    sample = random.Random(seed).sample(old, min(len(old), max(1, wanted)))
    with open(train_path, "a", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in sample)
    info["examples"] = len(sample)
    return info
