"""Token counting with a model's own tokenizer, loaded lazily from local files only."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

from ..errors import CortexError


@cache
def load_tokenizer(model_path: str | Path) -> Callable[[str], int]:
    """Return a function counting tokens with ``model_path``'s tokenizer.json (offline)."""
    path = Path(model_path).expanduser()
    tokenizer_file = path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise CortexError(
            "tokenizer-not-found",
            f"No tokenizer.json in {path}; token counts need the model's own tokenizer",
            path=str(path),
        )
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def model_context_length(model_path: str | Path) -> int | None:
    """Return the model's context length from config.json, if it says."""
    try:
        config = json.loads((Path(model_path).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(config.get(key), int):
            return config[key]
    return None
