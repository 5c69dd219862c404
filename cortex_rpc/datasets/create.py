"""Write datasets: from examples the user typed, or the bundled sample."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import CortexError, InvalidParams
from ..paths import user_path, write_atomic

MIN_EXAMPLES = 5


def _atomic_write(path: Path, data: bytes, overwrite: bool) -> None:
    """Write ``data`` atomically, refusing an existing file unless ``overwrite``."""
    if path.exists() and not overwrite:
        raise CortexError(
            "file-exists", f"{path} already exists; pass overwrite to replace it", path=str(path)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def _warnings(count: int) -> list[str]:
    if count < MIN_EXAMPLES:
        return [
            f"Only {count} example(s); at least {MIN_EXAMPLES} are needed to train and "
            "50-100+ give good results"
        ]
    return []


def create_dataset(
    path: str | Path, examples: list[dict[str, Any]], *, overwrite: bool = False
) -> dict[str, Any]:
    """Write ``examples`` ({prompt, response}) as JSONL at ``path``; return path, count, warnings."""
    for index, example in enumerate(examples):
        for key in ("prompt", "response"):
            value = example.get(key) if isinstance(example, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise InvalidParams(
                    f"examples[{index}].{key} must be non-empty text",
                    field=f"examples[{index}].{key}",
                )
    path = user_path(path)
    lines = "".join(
        json.dumps({"prompt": e["prompt"], "response": e["response"]}, ensure_ascii=False) + "\n"
        for e in examples
    )
    _atomic_write(path, lines.encode("utf-8"), overwrite)
    return {"path": str(path), "examples": len(examples), "warnings": _warnings(len(examples))}


def sample_dataset_bytes() -> bytes:
    return resources.files("cortex_rpc.data").joinpath("sample_dataset.jsonl").read_bytes()


def write_sample_dataset(path: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Copy the bundled sample dataset (24 prompt/response pairs) to ``path``."""
    path = user_path(path)
    data = sample_dataset_bytes()
    _atomic_write(path, data, overwrite)
    count = sum(1 for line in data.splitlines() if line.strip())
    return {"path": str(path), "examples": count, "warnings": _warnings(count)}
