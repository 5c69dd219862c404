"""Find the models a user has: cortex's own folders, extra folders, and the Hugging Face cache."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CortexError
from ..paths import CortexHome, user_path
from .fine_tuned import MARKER
from .inspect import inspect_model


@dataclass(frozen=True)
class ModelEntry:
    """One row of ``cortex/listModels``."""

    name: str
    path: str
    kind: str
    parameters: int | None
    category: str | None
    size_bytes: int | None
    quantization_bits: int | None
    source: str
    base_model: str | None = None
    adapter_bytes: int | None = None
    error: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "name": self.name,
            "path": self.path,
            "kind": self.kind,
            "parameters": self.parameters,
            "category": self.category,
            "sizeBytes": self.size_bytes,
            "quantizationBits": self.quantization_bits,
            "source": self.source,
        }
        if self.kind == "fine-tuned":
            wire["baseModel"] = self.base_model
            wire["adapterBytes"] = self.adapter_bytes
        if self.error:
            wire["error"] = self.error
        return wire


def hf_cache_dir() -> Path:
    """Return the Hugging Face hub cache ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def model_search_dirs(
    extra_dirs: Iterable[str] = (), home: CortexHome | None = None
) -> list[tuple[Path, str]]:
    """Return (directory, source label) pairs searched for models, in priority order."""
    home = home or CortexHome.default()
    dirs = [(home.models, "cortex"), (home.base_models, "cortex")]
    dirs += [(user_path(d), "modelDirs") for d in extra_dirs]
    return dirs


def _looks_like_model(directory: Path) -> bool:
    return (directory / "config.json").is_file() or (directory / MARKER).is_file()


def _hf_snapshots(cache: Path) -> list[tuple[str, Path]]:
    found = []
    if not cache.is_dir():
        return found
    for repo in sorted(cache.glob("models--*")):
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        revisions = sorted(
            (p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime
        )
        if revisions and _looks_like_model(revisions[-1]):
            name = repo.name[len("models--") :].replace("--", "/")
            found.append((name, revisions[-1]))
    return found


def _entry(name: str, directory: Path, source: str) -> ModelEntry:
    try:
        info = inspect_model(directory)
    except CortexError as error:
        kind = "fine-tuned" if (directory / MARKER).is_file() else "base"
        return ModelEntry(
            name, str(directory), kind, None, None, None, None, source, error=error.message
        )
    return ModelEntry(
        name=name,
        path=str(directory),
        kind="fine-tuned" if info.fine_tuned else "base",
        parameters=info.parameters,
        category=info.category,
        size_bytes=info.size_bytes,
        quantization_bits=info.quantization_bits,
        source=source,
        base_model=info.base_model,
        adapter_bytes=info.adapter_bytes,
    )


def list_models(extra_dirs: Iterable[str] = (), home: CortexHome | None = None) -> list[ModelEntry]:
    """Return every local model, fine-tuned ones recognised by their ``fine-tuned.marker``.

    Directories whose names start with '.' are skipped: that is where half-written
    outputs live until they are renamed into place.
    """
    entries: list[ModelEntry] = []
    seen: set[Path] = set()
    for directory, source in model_search_dirs(extra_dirs, home):
        if not directory.is_dir():
            continue
        candidates = [directory] if _looks_like_model(directory) else sorted(directory.iterdir())
        for candidate in candidates:
            if candidate.name.startswith(".") or not candidate.is_dir():
                continue
            resolved = candidate.resolve()
            if resolved in seen or not _looks_like_model(candidate):
                continue
            seen.add(resolved)
            entries.append(_entry(candidate.name, candidate, source))
    for name, snapshot in _hf_snapshots(hf_cache_dir()):
        if snapshot.resolve() not in seen:
            seen.add(snapshot.resolve())
            entries.append(_entry(name, snapshot, "huggingface-cache"))
    return entries


def resolve_model(
    name_or_path: str, extra_dirs: Iterable[str] = (), home: CortexHome | None = None
) -> Path:
    """Return the directory of a model given by path or by a name from ``list_models``."""
    candidate = user_path(name_or_path)
    if candidate.is_dir():
        return candidate
    if "/" not in name_or_path or name_or_path.count("/") == 1:
        for directory, _source in model_search_dirs(extra_dirs, home):
            if (directory / name_or_path).is_dir():
                return directory / name_or_path
        for name, snapshot in _hf_snapshots(hf_cache_dir()):
            if name == name_or_path:
                return snapshot
    raise CortexError(
        "model-not-found",
        f"No model named or at {name_or_path!r}. Use a model directory path or a name "
        "from cortex/listModels.",
        model=name_or_path,
    )


def list_adapters(
    base_model: str, extra_dirs: Iterable[str] = (), home: CortexHome | None = None
) -> dict[str, Any]:
    """Return the fine-tuned models (adapters) trained on ``base_model``."""
    base = resolve_model(base_model, extra_dirs, home).resolve()
    adapters = [
        entry.to_wire()
        for entry in list_models(extra_dirs, home)
        if entry.kind == "fine-tuned" and entry.base_model and Path(entry.base_model) == base
    ]
    return {"baseModel": str(base), "adapters": adapters}
