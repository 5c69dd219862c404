"""Token counting with a model's own tokenizer, loaded lazily from local files only."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

from ..errors import CortexError
from ..paths import user_path


@cache
def load_tokenizer(model_path: str | Path) -> Callable[[str], int]:
    """Return a function counting tokens with ``model_path``'s tokenizer.json (offline)."""
    path = user_path(model_path)
    tokenizer_file = path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CortexError(
            "tokenizer-not-found",
            f"No tokenizer.json in {path}; token counts need the model's own tokenizer",
            path=str(path),
        )
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception as error:  # noqa: BLE001 - tokenizers raises a bare Exception
        raise CortexError(
            "tokenizer-invalid",
            f"{tokenizer_file} cannot be read as a tokenizer: {error}",
            path=str(tokenizer_file),
        ) from error
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def model_context_length(model_path: str | Path) -> int | None:
    """Return the model's context length from config.json, if it says."""
    try:
        config = json.loads((user_path(model_path) / "config.json").read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(config, dict):  # config.json is untrusted: any JSON at all
        return None
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
