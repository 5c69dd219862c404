"""Where cortex-rpc keeps its files, and which model names are safe to create there.

Everything that writes under ``$CORTEX_HOME`` gets its paths from here, so that a name
coming from a client can never point outside it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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


def cortex_home() -> Path:
    """Return ``$CORTEX_HOME`` (default ``~/.cortex``), the root of everything cortex-rpc writes."""
    return Path(os.environ.get("CORTEX_HOME") or Path.home() / ".cortex").expanduser()


def fine_tuned_models_dir() -> Path:
    """Return the directory fine-tuned models are saved in (``$CORTEX_HOME/mlx_models``)."""
    return cortex_home() / "mlx_models"


def jobs_dir() -> Path:
    """Return the directory that holds one folder of state per training job."""
    return cortex_home() / "jobs"


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
    """Return a safe default name for a fine-tune of ``base_name`` (``BASE-custom``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", base_name).strip(".-_") or "model"
    return f"{cleaned[: MAX_NAME_LENGTH - 7]}-custom"
