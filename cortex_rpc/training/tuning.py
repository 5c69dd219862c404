"""``cortex/tuneHyperparameters`` as a plain function: successive halving within a time budget.

The search, honestly small:

1. Candidates: the Balanced preset's config plus ``trials - 1`` others drawn (seeded) from a
   grid of learning rates (Balanced's x 0.3, 1, 3, 10) and LoRA ranks (4, 8, 16; alpha scaled
   to keep Balanced's alpha / rank). Every other field is Balanced's.
2. Calibration: Balanced trains a few iterations first; its worker start-up time and seconds
   per iteration give the plan.
3. Successive halving: every candidate trains ``r0`` iterations, the better half (by
   validation loss) ``2 r0``, then ``4 r0``, … until one is left. ``r0`` is the largest that fits
   the remaining budget (fewer candidates when even two iterations would not fit). A trial that
   would end past the budget is skipped.
4. Each trial is a real worker run (``TrainingJobs`` in a private folder, no model saved) on
   the same prepared data, at most ``MAX_TRAIN`` training and ``MAX_VALID`` validation records,
   scored on the validation loss the worker measures at its last step.

Rounds after the first are re-planned from the measured trial times (a least-squares fit of
start-up + seconds per iteration), so later rounds use what the calibration left over. The best
config is the trial with the lowest validation loss (a trial is a complete run: config and
iteration count); ``bestConfig.iterations`` is that trial's. The
server calls this in a request thread and streams each finished trial as a progress payload.
No mlx here.
"""

from __future__ import annotations

import math
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config.training_config import TrainingConfig
from ..errors import CortexError, InvalidParams
from ..models.inspect import read_marker
from ..models.registry import resolve_model
from ..paths import cortex_home
from .jobs import TrainingJobs

LR_FACTORS = (0.3, 1.0, 3.0, 10.0)
RANKS = (4, 8, 16)
CALIBRATION_ITERATIONS = 4
MIN_ITERATIONS = 2
MAX_TRAIN = 2000
MAX_VALID = 200


def candidate_configs(balanced: TrainingConfig, trials: int, seed: int = 0) -> list[dict]:
    """Return ``trials`` distinct {learningRate, loraRank, loraAlpha}, Balanced's first."""
    ratio = balanced.lora_alpha / balanced.lora_rank

    def point(lr: float, rank: int) -> dict:
        return {"learningRate": float(f"{lr:.3g}"), "loraRank": rank, "loraAlpha": rank * ratio}

    first = point(balanced.learning_rate, balanced.lora_rank)
    grid = [point(balanced.learning_rate * f, r) for f in LR_FACTORS for r in RANKS]
    grid = [g for g in grid if g != first]
    random.Random(seed).shuffle(grid)
    return [first, *grid[: max(1, trials) - 1]]


def halving_plan(candidates: int, budget: float, overhead: float, per_iteration: float
                 ) -> tuple[int, int]:
    """Return (candidates kept, r0) so that successive halving fits ``budget`` seconds."""
    n = candidates
    while True:
        rounds = max(1, math.ceil(math.log2(n)) + 1) if n > 1 else 1
        runs = sum(math.ceil(n / 2**k) for k in range(rounds))
        iteration_units = sum(math.ceil(n / 2**k) * 2**k for k in range(rounds))
        r0 = int((budget - overhead * runs) / max(per_iteration * iteration_units, 1e-9))
        if r0 >= MIN_ITERATIONS or n <= 2:
            return n, max(MIN_ITERATIONS, r0)
        n = max(2, n // 2)


def fit_timing(rows: list[dict]) -> tuple[float, float]:
    """Return (start-up seconds, seconds per iteration) fitted to finished trials' wall times."""
    points = [(r["iterations"], r["seconds"]) for r in rows if r.get("state") == "completed"]
    xs = {x for x, _ in points}
    if len(xs) < 2:
        x, y = points[-1]
        startup = min(r["startupSeconds"] for r in rows)
        return startup, max(1e-4, (y - startup) / x)
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    slope = max(1e-4, slope)
    return max(0.0, my - slope * mx), slope


def _subset(source: Path, target: Path, limit: int) -> int:
    lines = [x for x in source.read_text(encoding="utf-8").splitlines() if x.strip()][:limit]
    target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


class TrialRunner:
    """Runs one config for N iterations as a worker job and times it (start-up vs training)."""

    def __init__(self, work_dir: Path, model_dir: Path, data_dir: Path, python: str | None = None
                 ) -> None:
        self.model_dir, self.data_dir = model_dir, data_dir
        self.events: dict[str, dict[str, Any]] = {}
        self.jobs = TrainingJobs(work_dir, on_event=self._on_event, python=python)
        self.count = 0

    def _on_event(self, payload: dict) -> None:
        seen = self.events.setdefault(payload["jobId"], {})
        seen.setdefault(payload["event"] + "At", time.monotonic())
        if payload["event"] in ("done", "error", "cancelled"):
            seen["final"] = payload

    def run(self, config: TrainingConfig, cancel: threading.Event | None = None) -> dict:
        """Train ``config`` (its ``iterations``); return {valLoss, trainLoss, seconds, ...}."""
        self.count += 1
        launched = time.monotonic()
        job = self.jobs.start(
            self.model_dir, self.data_dir, f"trial-{self.count:03d}", config,
            options={
                "outputName": None,  # a trial saves no model
                "stepsPerEval": config.iterations,
                "stepsPerCheckpoint": config.iterations,
                "stepsPerReport": max(1, config.iterations // 5),
            },
        )
        job_id = job["jobId"]
        while True:
            try:
                state = self.jobs.wait(job_id, timeout=0.2)
                break
            except TimeoutError:
                if cancel is not None and cancel.is_set():
                    self.jobs.cancel(job_id)
        seen = self.events.get(job_id, {})
        final = seen.get("final") or {}
        ended = time.monotonic()
        started = seen.get("startedAt", launched)
        return {
            "state": state["state"],
            "valLoss": final.get("valLoss"),
            "trainLoss": final.get("trainLoss"),
            "iterations": config.iterations,
            "seconds": round(ended - launched, 3),
            "startupSeconds": round(started - launched, 3),
            "message": None if state["state"] == "completed" else state.get("message"),
        }


def tune_hyperparameters(
    model: str,
    dataset: str,
    budget_seconds: float,
    *,
    trials: int = 8,
    seed: int = 0,
    model_dirs: Iterable[str] = (),
    on_progress: Callable[[dict], None] | None = None,
    cancel: threading.Event | None = None,
    python: str | None = None,
) -> dict[str, Any]:
    """Search learning rate, rank and iterations for ``model`` on ``dataset`` within the budget.

    Returns ``{tuningId, bestConfig, best, trials, balancedValLoss, budgetSeconds,
    usedSeconds, timing, cancelled}``; ``trials`` is the evidence table (one row per run).
    """
    from ..config.proposal import propose_for_model
    from ..datasets import prepare_dataset

    began = time.monotonic()
    model_dir = resolve_model(model, model_dirs)
    if read_marker(model_dir) is not None:
        raise InvalidParams(f"{model_dir.name} is a fine-tuned adapter; tune on its base",
                            field="model")
    if not Path(dataset).is_file():
        raise CortexError("dataset-not-found", f"Dataset {dataset} does not exist or is not a file",
                          path=str(dataset))
    balanced = propose_for_model(str(model_dir), dataset=dataset, preset="balanced",
                                 model_dirs=model_dirs).config
    tuning_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    work = cortex_home() / "tuning" / tuning_id
    rows: list[dict[str, Any]] = []
    notify = on_progress or (lambda payload: None)

    def used() -> float:
        return round(time.monotonic() - began, 3)

    def emit(event: str, **extra: Any) -> None:
        notify({"tuningId": tuning_id, "event": event, "budgetSeconds": budget_seconds,
                "usedSeconds": used(), "trialsDone": len(rows), **extra})

    try:
        prepared = prepare_dataset(dataset, work / "prepared", seed=balanced.seed)
        data_dir = work / "data"
        data_dir.mkdir()
        examples = _subset(Path(prepared.train_path), data_dir / "train.jsonl", MAX_TRAIN)
        _subset(Path(prepared.valid_path), data_dir / "valid.jsonl", MAX_VALID)
        if prepared.valid_examples == 0:
            raise CortexError("dataset-too-small", "The dataset has no validation split to score "
                              "trials on; add more examples.")
        batch = min(balanced.batch_size, examples)
        runner = TrialRunner(work / "runs", model_dir, data_dir, python)
        candidates = candidate_configs(balanced, trials, seed)

        def config_for(point: dict, iterations: int) -> TrainingConfig:
            return replace(
                balanced, learning_rate=point["learningRate"], lora_rank=point["loraRank"],
                lora_alpha=point["loraAlpha"], iterations=iterations, batch_size=batch,
                epochs=round(iterations * batch / max(examples, 1), 4),
            )

        def run(point: dict, iterations: int, round_no: int) -> dict:
            result = runner.run(config_for(point, iterations), cancel)
            row = {"index": len(rows) + 1, "round": round_no,
                   "config": {**point, "iterations": iterations}, **result}
            rows.append(row)
            emit("trial", trial=row)
            return row

        # Calibration: Balanced, a few iterations (a row of the table like any other).
        calib = run(candidates[0], CALIBRATION_ITERATIONS, 0)
        if calib["state"] != "completed":
            raise CortexError("tuning-failed", f"The calibration run failed: {calib['message']}")
        per_iteration = max(1e-4, (calib["seconds"] - calib["startupSeconds"])
                            / CALIBRATION_ITERATIONS)
        overhead = calib["startupSeconds"]
        kept, r0 = halving_plan(len(candidates), budget_seconds - used(), overhead, per_iteration)
        survivors = candidates[:kept]
        emit("plan", candidates=kept, firstRoundIterations=r0)
        round_no, iterations = 1, r0
        while survivors and not (cancel is not None and cancel.is_set()):
            if round_no > 1:
                # Re-plan with the times measured so far: the rounds left share what remains.
                overhead, per_iteration = fit_timing(rows)
                _, fitted = halving_plan(len(survivors), budget_seconds - used(), overhead,
                                         per_iteration)
                iterations = max(iterations, fitted)
            results = []
            for point in survivors:
                expected = overhead + per_iteration * iterations
                if used() + expected > budget_seconds * 1.05 or (cancel and cancel.is_set()):
                    break  # would end past the budget
                row = run(point, iterations, round_no)
                if row["valLoss"] is not None:
                    results.append((row["valLoss"], point, row))
            if not results:
                break
            if len(survivors) == 1:
                break
            results.sort(key=lambda item: item[0])
            survivors = [point for _, point, _ in results[: max(1, len(survivors) // 2)]]
            round_no, iterations = round_no + 1, iterations * 2
        overhead, per_iteration = fit_timing(rows)
        # Every trial is a complete run (config + iterations): the best is the lowest of all.
        best_row = min((r for r in rows if r["valLoss"] is not None),
                       key=lambda r: r["valLoss"])
        best_point = {k: best_row["config"][k] for k in ("learningRate", "loraRank", "loraAlpha")}
        balanced_rows = [r for r in rows if r["config"]["learningRate"] == candidates[0][
            "learningRate"] and r["config"]["loraRank"] == candidates[0]["loraRank"]
            and r["valLoss"] is not None]
        balanced_row = max(balanced_rows, key=lambda r: (r["iterations"], r["index"]))
        result = {
            "tuningId": tuning_id,
            "bestConfig": config_for(best_point, best_row["iterations"]).to_wire(),
            "best": best_row,
            "trials": rows,
            "balancedValLoss": balanced_row["valLoss"],
            "balancedIterations": balanced_row["iterations"],
            "budgetSeconds": budget_seconds,
            "usedSeconds": used(),
            # Fitted to every trial's wall time: what one run of N iterations costs here.
            "timing": {"startupSeconds": round(overhead, 3),
                       "secondsPerIteration": round(per_iteration, 6)},
            "cancelled": bool(cancel is not None and cancel.is_set()),
        }
        emit("done", best=best_row)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def tuning_work_done(payload: dict[str, Any]) -> tuple[str, int]:
    """Return the ``$/progress`` line and percentage (of the time budget) for a payload."""
    percentage = min(100, int(100 * payload["usedSeconds"] / max(payload["budgetSeconds"], 1e-9)))
    trial = payload.get("trial")
    if trial is None:
        return f"Planned {payload.get('candidates')} candidates", percentage
    config = trial["config"]
    loss = "failed" if trial["valLoss"] is None else f"val loss {trial['valLoss']:.3f}"
    return (f"Trial {trial['index']} (round {trial['round']}): lr {config['learningRate']:g}, "
            f"rank {config['loraRank']}, {trial['iterations']} it · {loss}", percentage)
