"""``cortex/evaluate`` as plain functions: held-out loss and perplexity, base vs fine-tuned.

The dataset is prepared into a temporary folder with ``prepare_dataset`` (seed 0 by default,
the seed training uses unless its config says otherwise), so ``split="valid"`` scores the
same held-out records the model never trained on when it is the file it was trained with.
``split="all"`` scores every record (for a file the model has never seen). The loss itself is
computed by ``python -m cortex_rpc.training.evaluate_worker`` (mlx_lm's ``evaluate`` and
``default_loss``); no mlx in this module, which the server imports.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import CortexError, InvalidParams
from .output import MARKER, resolve_fine_tuned

SPLITS = ("valid", "all")
EVAL_FILE = "eval.jsonl"


def perplexity(loss: float | None) -> float | None:
    """Return exp(loss), capped so an untrained model does not overflow."""
    return None if loss is None else math.exp(min(loss, 50.0))


def write_eval_records(
    dataset: str | Path,
    out_dir: Path,
    split: str = "valid",
    max_examples: int | None = None,
    seed: int = 0,
) -> tuple[Path, dict[str, Any]]:
    """Prepare ``dataset`` and write the records to score to ``out_dir/eval.jsonl``.

    Returns (path, prepared dataset info). ``max_examples`` keeps the first N records of the
    split (its order is already a seeded shuffle).
    """
    from ..datasets import prepare_dataset

    if split not in SPLITS:
        raise InvalidParams(f"split must be one of {', '.join(SPLITS)}", field="split")
    prepared = prepare_dataset(dataset, out_dir / "prepared", seed=seed)
    files = (
        [prepared.valid_path] if split == "valid" else [prepared.train_path, prepared.valid_path]
    )
    lines: list[str] = []
    for name in files:
        lines.extend(x for x in Path(name).read_text(encoding="utf-8").splitlines() if x.strip())
    if max_examples:
        lines = lines[:max_examples]
    if not lines:
        raise CortexError(
            "dataset-too-small",
            f'{dataset} has no {split} records to evaluate; use split "all".',
        )
    path = out_dir / EVAL_FILE
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path, prepared.to_wire()


def run_evaluate_worker(
    spec: dict[str, Any], python: str | None = None, cancel: threading.Event | None = None
) -> dict[str, Any]:
    """Run the evaluation worker on ``spec`` and return its result (raises CortexError)."""
    with tempfile.TemporaryDirectory(prefix="cortex-eval-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        process = subprocess.Popen(
            [python or sys.executable, "-m", "cortex_rpc.training.evaluate_worker", str(spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        while True:
            try:
                out, err = process.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    process.kill()
                    process.communicate()
                    raise CortexError("cancelled", "Evaluation cancelled") from None
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1]) if lines else None
    if process.returncode != 0 or result is None or "error" in result:
        error = (result or {}).get("error") or {}
        raise CortexError(
            error.get("code", "evaluation-failed"),
            error.get("message") or f"The evaluation worker failed: {err.strip()[-2000:]}",
        )
    return result


def record_evaluation(model_dir: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` to the marker's ``evaluations`` (temp file + rename: never half a file)."""
    path = model_dir / MARKER
    marker = json.loads(path.read_text(encoding="utf-8"))
    marker.setdefault("evaluations", []).append(entry)
    tmp = path.with_name(f".{MARKER}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(marker, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def evaluate_model(
    model: str | Path,
    dataset: str | Path,
    *,
    split: str = "valid",
    max_examples: int | None = None,
    python: str | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Return held-out loss and perplexity of fine-tuned ``model`` and of its base on ``dataset``.

    The result is also appended to the model's marker under ``evaluations``.
    """
    base, adapter_dir, marker = resolve_fine_tuned(model)
    if not Path(dataset).is_file():
        raise CortexError(
            "dataset-not-found",
            f"Dataset {dataset} does not exist or is not a file",
            path=str(dataset),
        )
    seed = int((marker.get("config") or {}).get("seed") or 0)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cortex-eval-data-") as tmp:
        eval_path, prepared = write_eval_records(dataset, Path(tmp), split, max_examples, seed)
        config = marker.get("config") or {}
        worker = run_evaluate_worker(
            {
                "base": str(base),
                "adapter": str(adapter_dir),
                "quantizationBits": marker.get("quantizationBits"),
                "data": str(eval_path),
                "maxSeqLength": int(config.get("maxSeqLength") or 2048),
                "batchSize": 1,
            },
            python=python,
            cancel=cancel,
        )
    result = {
        "model": adapter_dir.name,
        "baseModel": str(base),
        "dataset": str(dataset),
        "split": split,
        "examples": worker["examples"],
        "baseLoss": worker["baseLoss"],
        "loss": worker["loss"],
        "basePerplexity": perplexity(worker["baseLoss"]),
        "perplexity": perplexity(worker["loss"]),
        "seconds": round(time.monotonic() - started, 3),
    }
    record_evaluation(
        adapter_dir,
        {
            **{k: v for k, v in result.items() if k not in ("model", "baseModel")},
            "datasetSha256": prepared["sha256"],
            "evaluatedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return result
