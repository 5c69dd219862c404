"""``cortex/evaluate`` as plain functions: held-out loss and perplexity, base vs fine-tuned.

The dataset is prepared into a temporary folder with ``prepare_dataset`` (seed 0 by default,
the seed training uses unless its config says otherwise), so ``split="valid"`` scores the
same held-out records the model never trained on when it is the file it was trained with.
``split="all"`` scores every record (for a file the model has never seen). The loss itself is
computed by ``python -m cortex_rpc.training.evaluate_worker`` (the training worker's loss over
the records' training views); no mlx in this module, which the server imports.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import CortexError, InvalidParams
from ..models.fine_tuned import record_evaluation, resolve_fine_tuned
from ..paths import existing_file
from ..workers import log_tail, start_worker
from .contract import ONE_SHOT_EVENT_TYPES, Error, Result, decode_event
from .jobs import TrainerSlot

SPLITS = ("valid", "all")
PREFERENCE_RESULT = (
    "rewardAccuracy",
    "margin",
    "chosenReward",
    "rejectedReward",
    "preferenceAccuracy",
    "basePreferenceAccuracy",
    "beta",
    "pairsLeftOut",
)
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
    spec: dict[str, Any],
    python: str | None = None,
    cancel: threading.Event | None = None,
    slot: TrainerSlot | None = None,
) -> dict[str, Any]:
    """Run the evaluation worker on ``spec`` and return its result (raises CortexError).

    It waits for the server's training slot first: an evaluation computes as much as a
    training step does, and one job trains at a time.
    """
    with contextlib.ExitStack() as stack:
        if slot is not None:
            stack.enter_context(slot.hold("evaluation", cancel))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cortex-eval-")))
        (tmp / "spec.json").write_text(json.dumps(spec))
        worker = start_worker(
            "cortex_rpc.training.evaluate_worker",
            [str(tmp / "spec.json")],
            log_path=tmp / "worker.log",
            python=python,
        )
        stack.callback(worker.close)
        worker.kill_on(cancel, "eval-cancel")
        final = None
        for data in worker.events():
            event = decode_event(data, ONE_SHOT_EVENT_TYPES)
            if event is not None and event.final:
                final = event
        returncode = worker.wait()
        if cancel is not None and cancel.is_set():
            raise CortexError("cancelled", "Evaluation cancelled")
        if isinstance(final, Error):
            raise CortexError(final.code, final.message)
        if not isinstance(final, Result) or returncode != 0:
            tail = log_tail(tmp / "worker.log")
            raise CortexError(
                "evaluation-failed", f"The evaluation worker failed (exit {returncode}): {tail}"
            )
        return final.value


def evaluate_model(
    model: str | Path,
    dataset: str | Path,
    *,
    split: str = "valid",
    max_examples: int | None = None,
    python: str | None = None,
    cancel: threading.Event | None = None,
    slot: TrainerSlot | None = None,
) -> dict[str, Any]:
    """Return held-out loss and perplexity of fine-tuned ``model`` and of its base on ``dataset``.

    The result is also appended to the model's marker under ``evaluations``.
    """
    base, adapter_dir, marker = resolve_fine_tuned(model)
    dataset = existing_file(dataset)
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
                "trainOn": config.get("trainOn") or "all",
                "trainTemplateText": bool(config.get("trainTemplateText", False)),
                "batchSize": 1,
                "method": config.get("method") or "sft",
                "beta": config.get("beta"),
                "dpoLoss": config.get("dpoLoss"),
            },
            python=python,
            cancel=cancel,
            slot=slot,
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
        # Preference data (pairs): the fine-tune's rewards against its base.
        **{k: worker[k] for k in PREFERENCE_RESULT if k in worker},
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
