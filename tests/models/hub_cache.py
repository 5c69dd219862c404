"""Build Hugging Face hub cache layouts in a temp dir, as ``hf download`` leaves them.

``models--ORG--NAME/blobs/HASH`` holds each file once, named by its content hash (sha256 for
weights, as for LFS files; git's blob sha1 for the rest); ``snapshots/COMMIT/FILE`` are
relative symlinks into ``blobs``; ``refs/main`` names the commit of the main branch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from cortex_rpc.models.hf_cache import repo_folder_name


def content_hash(name: str, data: bytes) -> str:
    """Return the blob name the hub cache gives a file: sha256 for weights, git sha1 else."""
    if name.endswith(".safetensors"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_snapshot(
    cache: Path,
    repo_id: str,
    commit: str,
    files: dict[str, bytes],
    *,
    main: bool = True,
) -> Path:
    """Add snapshot ``commit`` of ``repo_id`` with ``files``; point refs/main at it if ``main``."""
    root = cache / repo_folder_name(repo_id)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir(exist_ok=True)
    for name, data in files.items():
        blob = root / "blobs" / content_hash(name, data)
        if not blob.exists():
            blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    if main:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(commit)
    return snapshot


def model_files(directory: Path) -> dict[str, bytes]:
    """Return every file of a model folder by name (what a snapshot of it would hold)."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def other_weights(data: bytes) -> bytes:
    """Return a safetensors file with the same header and size but other tensor values."""
    header_end = 8 + int.from_bytes(data[:8], "little")
    changed = bytearray(data)
    changed[header_end] ^= 0x01  # one bit of the first tensor
    return bytes(changed)


def prune(snapshot: Path) -> None:
    """Remove a snapshot and the blobs no other snapshot uses (as ``hf cache delete`` does)."""
    root = snapshot.parents[1]
    shutil.rmtree(snapshot)
    used = {p.resolve() for p in root.glob("snapshots/*/*")}
    for blob in (root / "blobs").iterdir():
        if blob.resolve() not in used:
            blob.unlink()


COMMIT_A = "a5339a4131f135d0fdc6a5c8b5d5f1f1b5e4a1a0"
COMMIT_B = "b7d1c0ffee0e3c5d6f2a9b8c7d6e5f4a3b2c1d0e"
