"""Where cortex-rpc keeps its files, and which model names are safe to create there.

Everything that writes under ``$CORTEX_HOME`` gets its paths from here, so that a name
coming from a client can never point outside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CortexError, InvalidParams

MAX_NAME_LENGTH = 96
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Names Windows cannot create and names that collide with our own folders.
_RESERVED_NAMES = {
    "con",
    "prn",
    "aux",
    "nul",
    "com1",
    "com2",
    "com3",
    "com4",
    "lpt1",
    "lpt2",
    "lpt3",
    "jobs",
    "tmp",
    "models",
    "mlx_models",
    "cache",
}


def user_path(path: str | os.PathLike[str]) -> Path:
    """Return a path a client gave, with a leading ``~`` or ``~user`` expanded.

    pathlib raises RuntimeError for ``~user`` when no such user exists; that is the client's
    mistake (a file error), not a server fault.
    """
    try:
        return Path(path).expanduser()
    except RuntimeError as error:
        user = str(path).split("/", 1)[0][:100]
        raise CortexError(
            "file-error",
            f"Cannot open {str(path)[:300]!r}: there is no user {user!r} whose home "
            "folder it could be in",
            path=str(path)[:1000],
        ) from error


def existing_file(path: str | os.PathLike[str], code: str = "dataset-not-found") -> Path:
    """Return the user's file path with ``~`` expanded, or raise ``code`` if it is no file.

    The one check every method that reads a user's file makes, so that ``~/data.jsonl`` means
    the same thing to validateDataset, startTraining, evaluate and the tuner.
    """
    resolved = user_path(path)
    if not resolved.is_file():
        what = "Dataset" if code == "dataset-not-found" else "File"
        raise CortexError(
            code, f"{what} {resolved} does not exist or is not a file", path=str(resolved)
        )
    return resolved


@dataclass(frozen=True)
class CortexHome:
    """The root of everything cortex-rpc writes, and the folders under it.

    Passed explicitly (the server builds one from ``initializationOptions.cortexHome``), so
    no code reads ``$CORTEX_HOME`` behind a caller's back and no setting mutates the process
    environment.
    """

    root: Path

    @classmethod
    def default(cls) -> CortexHome:
        """Return ``$CORTEX_HOME``, else ``~/.cortex``."""
        return cls(Path(os.environ.get("CORTEX_HOME") or Path.home() / ".cortex").expanduser())

    @classmethod
    def at(cls, root: str | os.PathLike[str] | None) -> CortexHome:
        """Return the home at ``root`` (``~`` expanded), or the default one for None."""
        return cls.default() if root is None else cls(user_path(root))

    @property
    def models(self) -> Path:
        """Fine-tuned models (``mlx_models/NAME``)."""
        return self.root / "mlx_models"

    @property
    def base_models(self) -> Path:
        """Base models the user keeps for cortex (``models/NAME``)."""
        return self.root / "models"

    @property
    def jobs(self) -> Path:
        """One folder of state per training job."""
        return self.root / "jobs"

    @property
    def tuning(self) -> Path:
        """Scratch folders of hyperparameter searches."""
        return self.root / "tuning"

    @property
    def exports(self) -> Path:
        """Exported models for other tools (``exports/NAME``: hf, gguf, ollama)."""
        return self.root / "exports"

    @property
    def tools(self) -> Path:
        """Tools cortex runs but does not ship (``tools/llama.cpp``: its GGUF converter)."""
        return self.root / "tools"

    @property
    def datasets(self) -> Path:
        """Datasets cortex writes for the user (the sample, created datasets)."""
        return self.root / "datasets"


def cortex_home() -> Path:
    """Return the default home's root (for clients; the server passes a CortexHome)."""
    return CortexHome.default().root


def write_atomic(path: Path, data: str | bytes | dict[str, Any] | list[Any]) -> None:
    """Replace ``path`` with ``data`` (JSON for a dict or list) so a reader never sees half.

    A temp file beside the target (unique per process and thread) is renamed over it; on any
    failure the temp file is removed and the old content stays.
    """
    if isinstance(data, (dict, list)):
        data = json.dumps(data, indent=2)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def validate_model_name(name: object, field: str = "outputName") -> str:
    """Return ``name`` if it is safe as a single directory name, else raise InvalidParams.

    Safe means: letters, digits, ``.``, ``_`` and ``-`` only, not starting with a dot or a dash,
    no path separators, no ``..``, not reserved, at most MAX_NAME_LENGTH characters.
    """
    if not isinstance(name, str) or not name:
        raise InvalidParams(f"{field} must be a non-empty string", field=field)
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidParams(
            f"{field} is {len(name)} characters long; use at most {MAX_NAME_LENGTH}", field=field
        )
    if "\x00" in name or "/" in name or "\\" in name or ".." in name:
        raise InvalidParams(
            f"{field} {name!r} must be a plain name, not a path (no '/', '\\', '..' or NUL)",
            field=field,
        )
    if not _NAME_PATTERN.match(name):
        raise InvalidParams(
            f"{field} {name!r} may use only letters, digits, '.', '_' and '-', "
            "and must start with a letter or digit",
            field=field,
        )
    if name.lower().split(".")[0] in _RESERVED_NAMES:
        raise InvalidParams(f"{field} {name!r} is a reserved name; choose another", field=field)
    return name


def suggest_model_name(base_name: str) -> str:
    """Return a safe default name for a fine-tune of ``base_name`` (``BASE-custom``).

    A hub repo id or LM Studio name keeps only its model part: ``ORG/NAME`` gives ``NAME-custom``.
    """
    base_name = base_name.rstrip("/").rsplit("/", 1)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", base_name).strip(".-_") or "model"
    return f"{cleaned[: MAX_NAME_LENGTH - 7]}-custom"
