"""Which base model a fine-tune was trained on: its name, its repo and its weights, not a path.

A Hugging Face cache model lives in ``models--ORG--NAME/snapshots/COMMIT/``; when the repo is
updated ``refs/main`` moves to a new snapshot and the old one may be pruned, so a fine-tune
that only remembered the snapshot folder would lose its base although the weights may be the
very same files. The marker therefore records the repo id and one entry per weight file:
its size, a hash of its safetensors header (tensor names, dtypes, shapes, offsets) and, for
a file of the hub cache, the content hash its blob is named by. At use time the base is
looked up again: the recorded folder if its weights still match, else the snapshot of the same
repo whose weights match, else an error saying exactly what changed.

Only blob hashes identify content; a header hash and a size identify the layout. So weights
are matched by header alone only in the recorded folder or within the same repo, never
across unrelated folders (two fine-tunes of one architecture have identical headers).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CortexError
from .hf_cache import blob_hash, find_repo, hf_cache_dir, snapshot_of
from .safetensors_header import read_safetensors_header


@dataclass(frozen=True)
class WeightFile:
    """One weight file as a fine-tune's marker records it."""

    size: int
    header: str  # sha256 of the parsed safetensors header
    blob: str | None = None  # the hub cache's content hash of the file

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"size": self.size, "header": self.header}
        if self.blob:
            wire["blob"] = self.blob
        return wire

    @classmethod
    def from_wire(cls, data: Any) -> WeightFile | None:
        if not isinstance(data, dict):
            return None
        size, header, blob = data.get("size"), data.get("header"), data.get("blob")
        if not isinstance(size, int) or not isinstance(header, str):
            return None
        return cls(size, header, blob if isinstance(blob, str) and blob else None)


@dataclass(frozen=True)
class BaseIdentity:
    """A base model: where it was, what it is called, which repo and weights it is."""

    path: str
    name: str  # the repo id for a hub cache model, the folder name otherwise
    repo_id: str | None = None
    snapshot: str | None = None  # the hub commit of the snapshot folder
    weights: dict[str, WeightFile] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str | None:
        """Return one short hash of the weights (content hashes where known), for display."""
        if not self.weights:
            return None
        canonical = {
            name: w.blob or f"{w.size}:{w.header}" for name, w in sorted(self.weights.items())
        }
        return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:16]

    def to_marker(self) -> dict[str, Any]:
        """Return the marker's ``baseModel`` object."""
        marker: dict[str, Any] = {"path": self.path, "name": self.name}
        if self.repo_id:
            marker.update(repoId=self.repo_id, snapshot=self.snapshot)
        if self.weights:
            marker["fingerprint"] = self.fingerprint
            marker["weights"] = {name: w.to_wire() for name, w in sorted(self.weights.items())}
        return marker

    def describe(self) -> str:
        """Return how messages name this base: ``REPO (snapshot abc123456789)`` or its path."""
        if self.repo_id and self.snapshot:
            return f"{self.repo_id} (snapshot {self.snapshot[:12]})"
        return self.path


def display_name(directory: Path) -> str:
    """Return the name users know a model folder by: the repo id for a hub cache snapshot."""
    cached = snapshot_of(directory)
    return cached[0].repo_id if cached else directory.name


def _header_hash(path: Path) -> str:
    header = read_safetensors_header(path)
    canonical = {
        "tensors": sorted(
            (t.name, t.dtype, list(t.shape), t.begin, t.end) for t in header.tensors.values()
        ),
        "metadata": sorted(header.metadata.items()),
    }
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


def identify_base(directory: Path) -> BaseIdentity:
    """Return the identity of the base model in ``directory`` (reads headers, not tensors).

    Raises CortexError ``model-incomplete`` when its index names shards that are missing.
    """
    from .inspect import weight_files  # inspect imports the marker code that imports this

    cached = snapshot_of(directory)
    weights = {
        file.name: WeightFile(file.stat().st_size, _header_hash(file), blob_hash(file))
        for file in weight_files(directory)
    }
    return BaseIdentity(
        path=str(directory.resolve()),
        name=display_name(directory),
        repo_id=cached[0].repo_id if cached else None,
        snapshot=cached[1] if cached else None,
        weights=weights,
    )


def recorded_base(marker: dict[str, Any]) -> BaseIdentity | None:
    """Return the base a marker records (old markers: a path, or ``{path, name}``).

    Old markers hold no weights: the repo and snapshot are read from the path, and the
    weights from the recorded folder while it still exists.
    """
    base = marker.get("baseModel")
    data = base if isinstance(base, dict) else {"path": base}
    path = data.get("path")
    if not isinstance(path, str) or not path:
        return None
    cached = snapshot_of(Path(path))
    repo_id = data.get("repoId") if isinstance(data.get("repoId"), str) else None
    snapshot = data.get("snapshot") if isinstance(data.get("snapshot"), str) else None
    if cached and not repo_id:
        repo_id, snapshot = cached[0].repo_id, cached[1]
    raw = data.get("weights") if isinstance(data.get("weights"), dict) else {}
    weights = {
        name: parsed
        for name, entry in raw.items()
        if (parsed := WeightFile.from_wire(entry)) is not None
    }
    name = data.get("name") if isinstance(data.get("name"), str) else None
    identity = BaseIdentity(path, repo_id or name or Path(path).name, repo_id, snapshot, weights)
    if not weights and Path(path).is_dir():
        with contextlib.suppress(CortexError):
            identity = BaseIdentity(
                path, identity.name, repo_id, snapshot, identify_base(Path(path)).weights
            )
    return identity


def weight_differences(trained: BaseIdentity, current: BaseIdentity) -> list[str]:
    """Return how ``current``'s weight files differ from those trained on ([] when the same)."""
    differences = []
    for name in sorted(set(trained.weights) | set(current.weights)):
        old, new = trained.weights.get(name), current.weights.get(name)
        if new is None:
            differences.append(f"{name} is gone")
        elif old is None:
            differences.append(f"{name} is new")
        elif old.blob and new.blob:
            if old.blob != new.blob:
                differences.append(f"{name} has other contents ({old.blob[:12]} → {new.blob[:12]})")
        elif old.size != new.size:
            differences.append(f"{name} changed size ({old.size:,} → {new.size:,} bytes)")
        elif old.header != new.header:
            differences.append(f"{name} holds other tensors")
    return differences


def compare_base(trained: BaseIdentity, current: BaseIdentity) -> list[str] | None:
    """Return what differs between the base trained on and ``current`` ([] when the same).

    None means the two cannot be compared: another model altogether, or a fine-tune from
    before weights were recorded whose base folder is gone.
    """
    same_place = Path(trained.path) == Path(current.path)
    if not trained.weights:
        return [] if same_place else None
    differences = weight_differences(trained, current)
    if same_place or (trained.repo_id is not None and trained.repo_id == current.repo_id):
        return differences
    same_content = all(w.blob for w in trained.weights.values()) and all(
        w.blob for w in current.weights.values()
    )
    return [] if same_content and not differences else None


def _identify_or_none(directory: Path) -> BaseIdentity | None:
    try:
        return identify_base(directory)
    except CortexError:
        return None


def changed_base_error(
    code: str,
    adapter: str,
    trained: BaseIdentity,
    current: BaseIdentity,
    differences: list[str],
    now: str,
) -> CortexError:
    """Return the error that says which base ``adapter`` needs and how ``current`` differs.

    ``now`` says what ``current`` is, e.g. ``refs/main now points at`` or ``you gave``.
    """
    if differences:
        what = f"its weights differ: {'; '.join(differences[:4])}"
    else:
        what = (
            "this fine-tune was made before cortex-rpc recorded weights, so it cannot tell "
            "whether they are the same"
        )
    gone = "" if Path(trained.path).is_dir() else ", which is no longer on disk"
    if Path(trained.path) == Path(current.path):
        advice = "Restore the weights it was trained on, or train again on these."
    elif not gone:
        advice = f"Use that folder ({trained.path}) as the base, or train again on these weights."
    elif trained.repo_id and trained.snapshot:
        advice = (
            f"Download the revision it was trained on (`hf download {trained.repo_id} "
            f"--revision {trained.snapshot}`) or train again on the current weights."
        )
    else:
        advice = "Use the base it was trained on, or train again on this one."
    return CortexError(
        code,
        f"{adapter} was trained on {trained.describe()}{gone}; {now} {current.describe()}, "
        f"and {what}. {advice}",
        trainedOn={k: v for k, v in trained.to_marker().items() if k != "weights"},
        current={"path": current.path, "name": current.name, "snapshot": current.snapshot},
        differences=differences,
    )


def resolve_base(marker: dict[str, Any], adapter: str) -> Path:
    """Return the folder holding the weights fine-tune ``adapter`` was trained on.

    The recorded folder while its weights match, else the current (or any other) snapshot of
    the same hub repo with the same weights. Raises CortexError ``base-model-changed`` (the
    repo now holds other weights; the message says which files) or ``base-model-missing``.
    """
    trained = recorded_base(marker)
    if trained is None:
        raise CortexError("base-model-missing", f"The marker of {adapter} names no base model.")
    recorded = Path(trained.path)
    if (recorded / "config.json").is_file():
        current = _identify_or_none(recorded)
        if current is not None and compare_base(trained, current) == []:
            return recorded
        if current is not None:
            raise changed_base_error(
                "base-model-changed",
                adapter,
                trained,
                current,
                weight_differences(trained, current),
                "the folder now holds",
            )
    caches = [recorded.parents[2]] if snapshot_of(recorded) else []
    repo = find_repo(trained.repo_id, [*caches, hf_cache_dir()]) if trained.repo_id else None
    if repo is not None:
        head = repo.current_snapshot()
        others = [s for s in reversed(repo.snapshots()) if s != head]
        for snapshot in [head, *others] if head else others:
            current = _identify_or_none(snapshot)
            if current is not None and compare_base(trained, current) == []:
                return snapshot
        current = _identify_or_none(head) if head else None
        if current is not None:
            raise changed_base_error(
                "base-model-changed",
                adapter,
                trained,
                current,
                weight_differences(trained, current) if trained.weights else [],
                "refs/main now points at",
            )
    where = f"{trained.repo_id} is not in the Hugging Face cache" if trained.repo_id else ""
    raise CortexError(
        "base-model-missing",
        f"The base model of {adapter} is no longer at {recorded}"
        + (f" and {where}" if where else "")
        + (
            f". Download it again (`hf download {trained.repo_id} --revision "
            f"{trained.snapshot}`) or restore the folder."
            if trained.repo_id and trained.snapshot
            else ". Restore the base model folder."
        ),
        path=str(recorded),
    )


def check_base(marker: dict[str, Any], directory: Path, adapter: str) -> Path:
    """Return ``directory`` when it holds the weights ``adapter`` was trained on.

    Raises CortexError ``adapter-mismatch``: another model, or the same repo with other
    weights (the message says which snapshot it was trained on and what differs).
    """
    trained = recorded_base(marker)
    current = identify_base(directory)
    differences = compare_base(trained, current) if trained is not None else None
    if differences == []:
        return directory
    if trained is not None and trained.repo_id and trained.repo_id == current.repo_id:
        raise changed_base_error(
            "adapter-mismatch", adapter, trained, current, differences or [], "you gave"
        )
    raise CortexError(
        "adapter-mismatch",
        f"{adapter} was trained on {trained.describe() if trained else 'another model'}, not "
        f"on {current.describe()}; pick one of the adapters cortex/listAdapters shows for "
        "this base.",
    )
