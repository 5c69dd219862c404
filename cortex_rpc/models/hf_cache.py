"""The Hugging Face hub cache layout: repos, their current snapshot, blobs, partial downloads.

``hub/models--ORG--NAME/`` holds ``refs/main`` (the commit the repo's main branch was at when
last downloaded), ``snapshots/COMMIT/`` (files as symlinks into ``blobs/``) and ``blobs/``
(files named by their content hash: sha256 for LFS files such as weights, git's sha1 for the
rest). A download in progress or interrupted leaves ``blobs/HASH.incomplete``. Only the file
system is read here; nothing reaches the hub.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

REPO_PREFIX = "models--"
_HASH = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def hf_cache_dir() -> Path:
    """Return the Hugging Face hub cache ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


@dataclass(frozen=True)
class CachedRepo:
    """One model repo in a hub cache (``root`` is its ``models--ORG--NAME`` folder)."""

    repo_id: str
    root: Path

    def snapshot(self, commit: str) -> Path:
        return self.root / "snapshots" / commit

    def snapshots(self) -> list[Path]:
        """Return the snapshot folders, oldest first (by modification time)."""
        folder = self.root / "snapshots"
        if not folder.is_dir():
            return []
        return sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)

    def main_commit(self) -> str | None:
        """Return the commit ``refs/main`` names, or None (downloaded at a pinned revision)."""
        try:
            commit = (self.root / "refs" / "main").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return commit if _HASH.fullmatch(commit) else None

    def current_snapshot(self) -> Path | None:
        """Return the snapshot ``refs/main`` points at, else the newest one (None if none).

        This is the folder ``from_pretrained(REPO)`` would load offline, so it is the one a
        repo id means.
        """
        commit = self.main_commit()
        if commit and self.snapshot(commit).is_dir():
            return self.snapshot(commit)
        snapshots = self.snapshots()
        return snapshots[-1] if snapshots else None

    def incomplete_blobs(self) -> list[Path]:
        """Return the blobs of a download that has not finished (``*.incomplete``)."""
        blobs = self.root / "blobs"
        return sorted(blobs.glob("*.incomplete")) if blobs.is_dir() else []


def repo_folder_name(repo_id: str) -> str:
    """Return the cache folder name of ``repo_id`` (``models--ORG--NAME``)."""
    return REPO_PREFIX + repo_id.replace("/", "--")


def _repo(root: Path) -> CachedRepo:
    return CachedRepo(root.name[len(REPO_PREFIX) :].replace("--", "/"), root)


def cached_repos(cache: Path) -> list[CachedRepo]:
    """Return the model repos in the hub cache ``cache``, by repo id."""
    if not cache.is_dir():
        return []
    return [_repo(root) for root in sorted(cache.glob(REPO_PREFIX + "*")) if root.is_dir()]


def find_repo(repo_id: str, caches: list[Path]) -> CachedRepo | None:
    """Return ``repo_id``'s folder in the first of ``caches`` that holds it."""
    for cache in caches:
        root = cache / repo_folder_name(repo_id)
        if root.is_dir():
            return CachedRepo(repo_id, root)
    return None


def snapshot_of(directory: Path) -> tuple[CachedRepo, str] | None:
    """Return (repo, commit) when ``directory`` is a snapshot folder of a hub cache."""
    snapshots = directory.parent
    root = snapshots.parent
    if snapshots.name != "snapshots" or not root.name.startswith(REPO_PREFIX):
        return None
    return _repo(root), directory.name


def blob_hash(path: Path) -> str | None:
    """Return the content hash a cached file's blob is named by (None for a plain file)."""
    if not path.is_symlink():
        return None
    target = path.resolve()
    if target.parent.name != "blobs" or not _HASH.fullmatch(target.name):
        return None
    return target.name
