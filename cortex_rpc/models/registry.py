"""Find the models a user has: cortex's own folders, extra folders, LM Studio and the HF cache.

A folder in the search list may be a model itself, hold models (``NAME/config.json``), hold
them one level deeper as LM Studio does (``PUBLISHER/MODEL/config.json``), or be a Hugging
Face hub cache (``models--ORG--NAME/``). Hub models are named by their repo id and mean the
snapshot ``refs/main`` points at.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CortexError
from ..paths import CortexHome, user_path
from .base_identity import compare_base, identify_base, recorded_base
from .fine_tuned import MARKER, read_marker
from .hf_cache import cached_repos, find_repo, hf_cache_dir
from .inspect import inspect_model
from .trainability import NotTrainable

__all__ = ["hf_cache_dir", "list_adapters", "list_models", "model_search_dirs", "resolve_model"]


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
    not_trainable: NotTrainable | None = None

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
            "trainable": self.not_trainable is None,
        }
        if self.not_trainable is not None:
            wire["notTrainable"] = self.not_trainable.to_wire()
        if self.kind == "fine-tuned":
            wire["baseModel"] = self.base_model
            wire["adapterBytes"] = self.adapter_bytes
        if self.error:
            wire["error"] = self.error
        return wire


def lmstudio_model_dirs() -> list[Path]:
    """Return LM Studio's model folders that exist (``~/.lmstudio/models``; before 0.3,
    ``~/.cache/lm-studio/models``)."""
    candidates = [
        Path.home() / ".lmstudio" / "models",
        Path.home() / ".cache" / "lm-studio" / "models",
    ]
    return [d for d in candidates if d.is_dir()]


def model_search_dirs(
    extra_dirs: Iterable[str] = (), home: CortexHome | None = None
) -> list[tuple[Path, str]]:
    """Return (directory, source label) pairs searched for models, in priority order."""
    home = home or CortexHome.default()
    dirs = [(home.models, "cortex"), (home.base_models, "cortex")]
    dirs += [(user_path(d), "modelDirs") for d in extra_dirs]
    dirs += [(d, "lmstudio") for d in lmstudio_model_dirs()]
    return dirs


def _looks_like_model(directory: Path) -> bool:
    return (directory / "config.json").is_file() or (directory / MARKER).is_file()


def _hf_snapshots(cache: Path) -> list[tuple[str, Path]]:
    """Return (repo id, current snapshot) for each model repo of a hub cache."""
    found = []
    for repo in cached_repos(cache):
        snapshot = repo.current_snapshot()
        if snapshot is not None and _looks_like_model(snapshot):
            found.append((repo.repo_id, snapshot))
    return found


def _folder_models(directory: Path) -> list[tuple[str, Path]]:
    """Return (name, folder) of the models in a search folder, one or two levels deep.

    Folders starting with '.' are skipped (half-written outputs, LM Studio's own state).
    """
    if _looks_like_model(directory):
        return [(directory.name, directory)]
    found = []
    for child in sorted(directory.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        if _looks_like_model(child):
            found.append((child.name, child))
        elif not child.name.startswith("models--"):
            found += [
                (f"{child.name}/{grandchild.name}", grandchild)
                for grandchild in sorted(child.iterdir())
                if not grandchild.name.startswith(".")
                and grandchild.is_dir()
                and _looks_like_model(grandchild)
            ]
    return found + _hf_snapshots(directory)


def _entry(name: str, directory: Path, source: str) -> ModelEntry:
    try:
        info = inspect_model(directory)
    except CortexError as error:
        kind = "fine-tuned" if (directory / MARKER).is_file() else "base"
        return ModelEntry(
            name,
            str(directory),
            kind,
            None,
            None,
            None,
            None,
            source,
            error=error.message,
            not_trainable=NotTrainable(error.code, error.message),
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
        not_trainable=info.not_trainable,
    )


def list_models(extra_dirs: Iterable[str] = (), home: CortexHome | None = None) -> list[ModelEntry]:
    """Return every local model, fine-tuned ones recognised by their ``fine-tuned.marker``.

    Each is listed once (the first search folder that holds it names it), unreadable ones
    with ``error``, and those mlx_lm cannot fine-tune with ``not_trainable``.
    """
    entries: list[ModelEntry] = []
    seen: set[Path] = set()
    found = [
        (name, folder, source)
        for directory, source in model_search_dirs(extra_dirs, home)
        if directory.is_dir()
        for name, folder in _folder_models(directory)
    ]
    found += [(name, s, "huggingface-cache") for name, s in _hf_snapshots(hf_cache_dir())]
    for name, folder, source in found:
        resolved = folder.resolve()
        if resolved not in seen:
            seen.add(resolved)
            entries.append(_entry(name, folder, source))
    return entries


def resolve_model(
    name_or_path: str, extra_dirs: Iterable[str] = (), home: CortexHome | None = None
) -> Path:
    """Return the directory of a model given by path or by a name from ``list_models``.

    A hub repo id (``ORG/NAME``) means the snapshot its ``refs/main`` points at.
    """
    candidate = user_path(name_or_path)
    if candidate.is_dir():
        return candidate
    if "/" not in name_or_path or name_or_path.count("/") == 1:
        searched = [d for d, _source in model_search_dirs(extra_dirs, home)]
        for directory in searched:
            if (directory / name_or_path).is_dir():
                return directory / name_or_path
        repo = find_repo(name_or_path, [*searched, hf_cache_dir()])
        snapshot = repo.current_snapshot() if repo is not None else None
        if snapshot is not None:
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
    """Return the fine-tuned models trained on the weights of ``base_model``.

    Matched by weights, not folder: after a hub repo update with the same weights its
    adapters are still listed. Fine-tunes of the same repo trained on other weights are
    returned apart, under ``otherWeights``, each with the message saying what changed.
    """
    base = resolve_model(base_model, extra_dirs, home).resolve()
    current = identify_base(base)
    adapters, other_weights = [], []
    for entry in list_models(extra_dirs, home):
        marker = read_marker(Path(entry.path)) if entry.kind == "fine-tuned" else None
        trained = recorded_base(marker) if marker else None
        if trained is None:
            continue
        differences = compare_base(trained, current)
        if differences == []:
            adapters.append(entry.to_wire())
        elif trained.repo_id is not None and trained.repo_id == current.repo_id:
            other_weights.append(
                {
                    "name": entry.name,
                    "path": entry.path,
                    "trainedOn": trained.describe(),
                    "differences": differences or [],
                    "message": entry.error
                    or f"{entry.name} was trained on {trained.describe()}, not on "
                    f"{current.describe()}: {'; '.join(differences or ['weights unknown'])}",
                }
            )
    return {"baseModel": str(base), "adapters": adapters, "otherWeights": other_weights}
