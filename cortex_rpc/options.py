"""``initializationOptions`` and the editor's ``cortex`` settings: one fully defaulted model.

The same keys are read at ``initialize`` and from ``workspace/didChangeConfiguration``; a bad
value is a warning (the old or default value stays), never a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

DEFAULT_DEBOUNCE_MS = 150


@dataclass
class InitializationOptions:
    """Settings a client may pass in ``initialize`` or as settings (camelCase on the wire)."""

    model_dirs: list[str] = field(default_factory=list)
    cortex_home: str | None = None
    diagnostics_debounce_ms: int = DEFAULT_DEBOUNCE_MS
    default_model: str | None = None
    # Live diagnostics and hovers show what this model trains (a directory or model name).
    model: str | None = None
    max_seq_length: int | None = None  # the cut for those checks; training's default if None
    # Glob patterns of the documents checked live; None: every .jsonl/.json/.csv/.txt.
    dataset_files: list[str] | None = None


# The wire name of each option, in the order they are read.
WIRE_NAMES = {
    "modelDirs": "model_dirs",
    "cortexHome": "cortex_home",
    "diagnosticsDebounceMs": "diagnostics_debounce_ms",
    "defaultModel": "default_model",
    "model": "model",
    "maxSeqLength": "max_seq_length",
    "datasetFiles": "dataset_files",
}
# Read once at start: the job manager and the model servers keep the home they started with.
RESTART_ONLY = frozenset({"cortex_home"})


def parse_initialization_options(raw: Any) -> tuple[InitializationOptions, list[str]]:
    """Return the options with defaults for anything missing or invalid, and the warnings."""
    options = InitializationOptions()
    if raw is None:
        return options, []
    if not isinstance(raw, dict):
        return options, ["initializationOptions must be an object; using defaults"]
    warnings = [
        f"Unknown initialization option {key!r} ignored (known: {', '.join(sorted(WIRE_NAMES))})"
        for key in raw
        if key not in WIRE_NAMES
    ]
    return options, warnings + _apply(options, raw)


def apply_settings(
    options: InitializationOptions, raw: dict[str, Any]
) -> tuple[set[str], list[str]]:
    """Apply the editor's ``cortex`` settings to ``options``: the fields that changed, warnings.

    Only the keys given change (null: back to the default). Keys cortex does not know are
    ignored silently: editors keep their own settings (``serverPath``...) in the same section.
    ``cortexHome`` applies only at the next start.
    """
    before = replace(options)
    warnings = _apply(options, raw)
    changed = {
        f.name for f in fields(options) if getattr(options, f.name) != getattr(before, f.name)
    }
    for name in changed & RESTART_ONLY:
        setattr(options, name, getattr(before, name))
        warnings.append("cortexHome changes apply when the server restarts")
    return changed - RESTART_ONLY, warnings


def _apply(options: InitializationOptions, raw: dict[str, Any]) -> list[str]:
    """Set every option ``raw`` names (null: the default); the warnings for bad values."""
    warnings: list[str] = []
    if "modelDirs" in raw:
        model_dirs = raw["modelDirs"]
        if model_dirs is None:
            options.model_dirs = []
        elif isinstance(model_dirs, list) and all(isinstance(d, str) for d in model_dirs):
            options.model_dirs = [os.path.expanduser(d) for d in model_dirs]
        else:
            warnings.append("modelDirs must be a list of paths; ignored")
    if "cortexHome" in raw:
        home = raw["cortexHome"]
        if home is None:
            options.cortex_home = None
        elif isinstance(home, str) and home.strip():
            options.cortex_home = os.path.expanduser(home)
        else:
            warnings.append("cortexHome must be a path; using $CORTEX_HOME or ~/.cortex")
    if "diagnosticsDebounceMs" in raw:
        debounce = raw["diagnosticsDebounceMs"]
        if debounce is None:
            options.diagnostics_debounce_ms = DEFAULT_DEBOUNCE_MS
        elif isinstance(debounce, int) and not isinstance(debounce, bool) and 0 <= debounce <= 5000:
            options.diagnostics_debounce_ms = debounce
        else:
            warnings.append(
                f"diagnosticsDebounceMs must be an integer 0-5000; "
                f"keeping {options.diagnostics_debounce_ms}"
            )
    if "defaultModel" in raw:
        default_model = raw["defaultModel"]
        if default_model is None or (isinstance(default_model, str) and default_model):
            options.default_model = default_model
        else:
            warnings.append("defaultModel must be a string; ignored")
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
    if "datasetFiles" in raw:
        patterns = raw["datasetFiles"]
        if patterns is None or (
            isinstance(patterns, list) and all(isinstance(p, str) and p for p in patterns)
        ):
            options.dataset_files = patterns
        else:
            warnings.append("datasetFiles must be a list of glob patterns, or null; ignored")
    return warnings
