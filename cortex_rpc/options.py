"""``initializationOptions``: one fully defaulted model; a bad option is a warning, never a crash."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class InitializationOptions:
    """Settings a client may pass in ``initialize`` (camelCase on the wire)."""

    model_dirs: list[str] = field(default_factory=list)
    cortex_home: str | None = None
    diagnostics_debounce_ms: int = 150
    default_model: str | None = None
    # Live diagnostics and hovers show what this model trains (a directory or model name).
    model: str | None = None
    max_seq_length: int | None = None  # the cut for those checks; training's default if None


def parse_initialization_options(raw: Any) -> tuple[InitializationOptions, list[str]]:
    """Return the options with defaults for anything missing or invalid, and the warnings."""
    options = InitializationOptions()
    warnings: list[str] = []
    if raw is None:
        return options, warnings
    if not isinstance(raw, dict):
        return options, ["initializationOptions must be an object; using defaults"]
    known = {
        "modelDirs",
        "cortexHome",
        "diagnosticsDebounceMs",
        "defaultModel",
        "model",
        "maxSeqLength",
    }
    for key in raw:
        if key not in known:
            warnings.append(
                f"Unknown initialization option {key!r} ignored (known: {', '.join(sorted(known))})"
            )
    model_dirs = raw.get("modelDirs")
    if model_dirs is not None:
        if isinstance(model_dirs, list) and all(isinstance(d, str) for d in model_dirs):
            options.model_dirs = [os.path.expanduser(d) for d in model_dirs]
        else:
            warnings.append("modelDirs must be a list of paths; ignored")
    home = raw.get("cortexHome")
    if home is not None:
        if isinstance(home, str) and home.strip():
            options.cortex_home = os.path.expanduser(home)
        else:
            warnings.append("cortexHome must be a path; using $CORTEX_HOME or ~/.cortex")
    debounce = raw.get("diagnosticsDebounceMs")
    if debounce is not None:
        if isinstance(debounce, int) and not isinstance(debounce, bool) and 0 <= debounce <= 5000:
            options.diagnostics_debounce_ms = debounce
        else:
            warnings.append("diagnosticsDebounceMs must be an integer 0-5000; using 150")
    default_model = raw.get("defaultModel")
    if isinstance(default_model, str) and default_model:
        options.default_model = default_model
    elif default_model is not None:
        warnings.append("defaultModel must be a string; ignored")
    warnings += apply_training_options(options, raw)
    return options, warnings


def apply_training_options(options: InitializationOptions, raw: dict[str, Any]) -> list[str]:
    """Set ``model`` and ``maxSeqLength`` from ``raw`` (also workspace settings); the warnings."""
    warnings = []
    if "model" in raw:
        model = raw["model"]
        if model is None or (isinstance(model, str) and model):
            options.model = model
        else:
            warnings.append("model must be a model directory or name, or null; ignored")
    if "maxSeqLength" in raw:
        length = raw["maxSeqLength"]
        if length is None or (
            isinstance(length, int) and not isinstance(length, bool) and 16 <= length <= 1_048_576
        ):
            options.max_seq_length = length
        else:
            warnings.append("maxSeqLength must be an integer >= 16, or null; ignored")
    return warnings
