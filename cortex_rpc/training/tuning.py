"""``cortex/tuneHyperparameters`` as a plain function: successive halving within a time budget.

The search, honestly small:

1. Candidates: the Balanced preset's config plus ``trials - 1`` others from a grid of
   log-spaced learning rates (Balanced's x 0.3, 1, 3, 10, 30) and LoRA ranks (4, 8, 16, 32;
   alpha scaled to keep Balanced's alpha / rank: under Adam the LoRA scale acts as one more
   learning-rate factor, which the learning-rate axis already spans). The draw is seeded and
   stratified: every learning rate and every rank is tried before any repeats. Every other
   field is Balanced's.
2. Calibration: Balanced trains ``CALIBRATION_ITERATIONS`` iterations first; the progress
   reports give seconds per iteration and the rest of the run the per-trial overhead (worker
   start-up, evaluations, checkpoint). Its checkpoint is where Balanced's first-round trial
   continues from.
3. Successive halving with continuation, keeping the best third (``ETA``): every candidate
   trains to ``r0`` iterations, the best third (by validation loss) continues from its own
   checkpoint (adapters, Adam state and the data schedule: the worker's resume) to ``3 r0``,
   then ``9 r0``, ... until one is left. Nothing is retrained, so a promotion costs only the
   added iterations. ``r0`` is the largest that fits the remaining budget (fewer candidates
   when even two iterations would not fit); rounds after the first are re-planned from the
   measured trial times (a least-squares fit of overhead + seconds per added iteration), and
   the last survivor is continued once more with what is left. A trial that would end past
   the budget is skipped.
4. Each trial is a real worker run (``TrainingJobs`` in a private folder, no model saved) on
   the same prepared data, at most ``MAX_TRAIN`` training and the same ``MAX_VALID``
   validation records for every trial, scored on the validation loss the worker measures at
   its last step.

Trials train at a constant learning rate (``lrSchedule: constant``, whatever Balanced
proposes), so a continued trial is the same run as a fresh
one of its total length: a row's ``iterations`` is the total its config trained, and the best
config is the row with the lowest validation loss, ``bestConfig.iterations`` that total. The
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
from ..models.fine_tuned import read_marker
from ..models.registry import resolve_model
from ..paths import CortexHome
from .contract import WorkerOptions
from .jobs import TrainerSlot, TrainingJobs

LR_FACTORS = (0.3, 1.0, 3.0, 10.0, 30.0)
RANKS = (4, 8, 16, 32)
CALIBRATION_ITERATIONS = 12
# Keep the best third each round: every promotion is a new worker (start-up, evaluations),
# so fewer, larger rounds waste less of the budget than halving (Hyperband's default).
ETA = 3
MIN_ITERATIONS = 2
MAX_TRAIN = 2000
MAX_VALID = 200


def candidate_configs(balanced: TrainingConfig, trials: int, seed: int = 0) -> list[dict]:
    """Return up to ``trials`` distinct {learningRate, loraRank, loraAlpha}, Balanced's first.

    The others are stratified over the grid: learning-rate factors and ranks are dealt from
    seeded shuffles, so each value appears once before any appears twice.
    """
    ratio = balanced.lora_alpha / balanced.lora_rank

    def point(lr: float, rank: int) -> dict:
        return {"learningRate": float(f"{lr:.3g}"), "loraRank": rank, "loraAlpha": rank * ratio}

    first = point(balanced.learning_rate, balanced.lora_rank)
    rng = random.Random(seed)
    left = [point(balanced.learning_rate * f, r) for f in LR_FACTORS for r in RANKS]
    left = [g for g in left if g != first]
    chosen: list[dict] = []
    factors: list[float] = []
    ranks: list[int] = []
    while left and len(chosen) < max(1, trials) - 1:
        if not factors:
            factors = rng.sample(LR_FACTORS, len(LR_FACTORS))
        if not ranks:
            ranks = rng.sample(RANKS, len(RANKS))
        wanted = point(balanced.learning_rate * factors.pop(), ranks.pop())
        if wanted not in left:  # taken: another point with that learning rate, else any
            same_lr = [g for g in left if g["learningRate"] == wanted["learningRate"]]
            wanted = rng.choice(same_lr or left)
        left.remove(wanted)
        chosen.append(wanted)
    return [first, *chosen]


def round_sizes(candidates: int, eta: int = 2) -> list[int]:
    """Return how many candidates each round trains: n, n // eta, ..., 1."""
    sizes = [max(1, candidates)]
    while sizes[-1] > 1:
        sizes.append(max(1, sizes[-1] // eta))
    return sizes


def first_round_iterations(
    candidates: int,
    budget: float,
    overhead: float,
    per_iteration: float,
    *,
    eta: int = 2,
    continued: bool = False,
    done: int = 0,
) -> int:
    """Return the largest r0 for which successive halving of ``candidates`` fits ``budget``.

    Round k trains ``round_sizes(candidates, eta)[k]`` candidates to ``r0 * eta**k``
    iterations, each run costing ``overhead`` plus ``per_iteration`` per iteration it trains.
    Restarted (``continued`` false), a run trains its whole count; continued, only what it
    adds to the previous round's, and the first round adds ``r0 - done`` (the candidates have
    trained ``done`` already). May be below ``done`` when the budget is too small.
    """
    sizes = round_sizes(candidates, eta)
    if continued:
        units = sizes[0] + sum(
            size * eta ** (k - 1) * (eta - 1) for k, size in enumerate(sizes) if k
        )
        left = budget - overhead * sum(sizes) + per_iteration * sizes[0] * done
    else:
        units = sum(size * eta**k for k, size in enumerate(sizes))
        left = budget - overhead * sum(sizes)
    return math.floor(left / max(per_iteration * units, 1e-9))


def halving_plan(
    candidates: int,
    budget: float,
    overhead: float,
    per_iteration: float,
    *,
    eta: int = 2,
    continued: bool = False,
) -> tuple[int, int]:
    """Return (candidates kept, r0) so that successive halving fits ``budget`` seconds.

    Candidates are dropped (halved, Balanced stays first) while even ``MIN_ITERATIONS`` per
    run would not fit; see ``first_round_iterations`` for the cost model.
    """
    n = candidates
    while True:
        r0 = first_round_iterations(
            n, budget, overhead, per_iteration, eta=eta, continued=continued
        )
        if r0 >= MIN_ITERATIONS or n <= 2:
            return n, max(MIN_ITERATIONS, r0)
        n = max(2, n // 2)


def fit_timing(rows: list[dict]) -> tuple[float, float]:
    """Return (overhead seconds, seconds per iteration) fitted to finished trials' wall times.

    A row's cost is its overhead plus the iterations it added (``iterations`` minus the
    ``startIteration`` it continued from).
    """
    points = [
        (r["iterations"] - r.get("startIteration", 0), r["seconds"])
        for r in rows
        if r.get("state") == "completed"
    ]
    xs = {x for x, _ in points}
    if len(xs) < 2:
        x, y = points[-1]
        startup = min(r["startupSeconds"] for r in rows)
        return startup, max(1e-4, (y - startup) / max(x, 1))
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


def subset_data(prepared_dir: Path, data_dir: Path) -> tuple[int, int]:
    """Copy the first ``MAX_TRAIN`` / ``MAX_VALID`` prepared records; return both counts.

    Every trial (and the benchmark's Balanced run) reads this one folder, so every score is on
    the same validation records.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    train = _subset(prepared_dir / "train.jsonl", data_dir / "train.jsonl", MAX_TRAIN)
    valid = _subset(prepared_dir / "valid.jsonl", data_dir / "valid.jsonl", MAX_VALID)
    return train, valid


class TrialRunner:
    """Runs one config to N iterations as a worker job and times it (start-up vs training).

    With ``resume_from`` (a checkpoint of an earlier trial of the same config) the job
    continues from there: the worker restores adapters, Adam state and the batch schedule.
    Every run leaves a checkpoint of its last step (``checkpoint`` in the result) so that it
    can be continued in turn; ``discard`` removes one that is no longer needed.
    """

    def __init__(
        self,
        work_dir: Path,
        model_dir: Path,
        data_dir: Path,
        python: str | None = None,
        slot: TrainerSlot | None = None,
    ) -> None:
        self.model_dir, self.data_dir = model_dir, data_dir
        self.events: dict[str, dict[str, Any]] = {}
        # A private job folder (trials save no model), but the server's training slot: a
        # trial waits for a user's job, and a user's job for the trial in progress.
        self.jobs = TrainingJobs(
            CortexHome(work_dir), on_event=self._on_event, python=python, slot=slot
        )

    def _on_event(self, payload: dict) -> None:
        seen = self.events.setdefault(payload["jobId"], {"reports": []})
        now = time.monotonic()
        seen.setdefault(payload["event"] + "At", now)
        if payload["event"] == "progress" and payload.get("iteration") is not None:
            seen["reports"].append((payload["iteration"], now))
        elif payload["event"] == "checkpoint":
            seen["checkpoint"] = payload.get("checkpointPath")
        elif payload["event"] in ("done", "error", "cancelled"):
            seen["final"] = payload

    def run(
        self,
        config: TrainingConfig,
        cancel: threading.Event | None = None,
        *,
        resume_from: str | None = None,
        start_iteration: int = 0,
        steps_per_report: int | None = None,
    ) -> dict:
        """Train ``config`` to its ``iterations``; return {valLoss, trainLoss, seconds, ...}."""
        added = config.iterations - start_iteration
        launched = time.monotonic()
        options = WorkerOptions(
            steps_per_eval=config.iterations,  # at the first step (fresh runs) and the last
            steps_per_checkpoint=config.iterations,  # none on the way...
            checkpoint_at_end=True,  # ...one at the end, to continue from
            steps_per_report=steps_per_report or max(1, added // 5),
            resume_from=resume_from,
        )
        # No output name: a trial saves no model.
        job = self.jobs.start(self.model_dir, self.data_dir, None, config, options=options)
        job_id = job["jobId"]
        state = self.jobs.wait(job_id, cancel=cancel)
        seen = self.events.get(job_id, {})
        final = seen.get("final") or {}
        ended = time.monotonic()
        started = seen.get("startedAt", launched)
        completed = state["state"] == "completed"
        return {
            "state": state["state"],
            "valLoss": final.get("valLoss"),
            "trainLoss": final.get("trainLoss"),
            "iterations": config.iterations,
            "startIteration": start_iteration,
            "seconds": round(ended - launched, 3),
            "startupSeconds": round(started - launched, 3),
            "stepSeconds": step_seconds(seen.get("reports", [])),
            "checkpoint": seen.get("checkpoint") if completed else None,
            "message": None if completed else state.get("message"),
        }

    @staticmethod
    def discard(checkpoint: str | None) -> None:
        """Delete a trial's checkpoints (a candidate that was dropped or has moved on)."""
        if checkpoint:
            shutil.rmtree(Path(checkpoint).parent, ignore_errors=True)


def step_seconds(reports: list[tuple[int, float]]) -> float | None:
    """Return seconds per training step from (iteration, time) progress reports.

    The first report carries the compilation and the first evaluation, the last one the final
    evaluation; the steps between the first and the second-to-last are pure training.
    """
    if len(reports) < 3:
        return None
    (i0, t0), (i1, t1) = reports[0], reports[-2]
    return (t1 - t0) / (i1 - i0) if i1 > i0 else None


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
    home: CortexHome | None = None,
    slot: TrainerSlot | None = None,
) -> dict[str, Any]:
    """Search learning rate, rank and iterations for ``model`` on ``dataset`` within the budget.

    Returns ``{tuningId, bestConfig, best, trials, balancedValLoss, balancedIterations,
    budgetSeconds, usedSeconds, timing, cancelled}``; ``trials`` is the evidence table (one row
    per run; a continued run's ``iterations`` is the total, ``startIteration`` where it
    continued from and ``continuedFrom`` that row's index).
    """
    from ..config.proposal import propose_for_model
    from ..datasets import load, prepare_dataset

    began = time.monotonic()
    home = home or CortexHome.default()
    model_dir = resolve_model(model, model_dirs, home)
    if read_marker(model_dir) is not None:
        raise InvalidParams(
            f"{model_dir.name} is a fine-tuned adapter; tune on its base", field="model"
        )
    loaded = load(dataset).check()
    balanced = propose_for_model(
        str(model_dir), dataset=loaded, preset="balanced", model_dirs=model_dirs
    ).config
    tuning_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    work = home.tuning / tuning_id
    rows: list[dict[str, Any]] = []
    notify = on_progress or (lambda payload: None)

    def used() -> float:
        return round(time.monotonic() - began, 3)

    def cancelled() -> bool:
        return cancel is not None and cancel.is_set()

    def emit(event: str, **extra: Any) -> None:
        notify(
            {
                "tuningId": tuning_id,
                "event": event,
                "budgetSeconds": budget_seconds,
                "usedSeconds": used(),
                "trialsDone": len(rows),
                **extra,
            }
        )

    try:
        prepared = prepare_dataset(loaded, work / "prepared", seed=balanced.seed)
        if prepared.valid_examples == 0:
            raise CortexError(
                "dataset-too-small",
                "The dataset has no validation split to score trials on; add more examples.",
            )
        data_dir = work / "data"
        examples, _ = subset_data(work / "prepared", data_dir)
        batch = min(balanced.batch_size, examples)
        runner = TrialRunner(work / "runs", model_dir, data_dir, python, slot)
        candidates = candidate_configs(balanced, trials, seed)

        def config_for(point: dict, iterations: int) -> TrainingConfig:
            return replace(
                balanced,
                learning_rate=point["learningRate"],
                lora_rank=point["loraRank"],
                lora_alpha=point["loraAlpha"],
                iterations=iterations,
                batch_size=batch,
                epochs=round(iterations * batch / max(examples, 1), 4),
                # A constant rate: a continued trial must train as one longer run, and a
                # warmup or decay depends on the run's total length.
                lr_schedule="constant",
                warmup_steps=0,
                warmup_ratio=0.0,
                early_stopping=None,
            )

        # Per candidate: the row of its latest run and that run's checkpoint.
        latest: dict[int, tuple[dict, str]] = {}
        last_step: dict[int, float | None] = {}  # row index -> its measured seconds per step

        def continues_from(which: int, iterations: int) -> tuple[dict | None, str | None]:
            """Return the row and checkpoint a run of ``iterations`` continues, if any."""
            before, checkpoint = latest.get(which, (None, None))
            if before is None or before["iterations"] >= iterations:
                return None, None  # fresh (or a calibration longer than the round)
            return before, checkpoint

        def run(which: int, iterations: int, round_no: int, **options: Any) -> dict:
            point = candidates[which]
            before, checkpoint = continues_from(which, iterations)
            start = before["iterations"] if before is not None else 0
            result = runner.run(
                config_for(point, iterations),
                cancel,
                resume_from=checkpoint,
                start_iteration=start,
                **options,
            )
            new_checkpoint = result.pop("checkpoint")
            step = result.pop("stepSeconds")
            row = {
                "index": len(rows) + 1,
                "round": round_no,
                "config": {**point, "iterations": iterations},
                "continuedFrom": before["index"] if before is not None else None,
                **result,
            }
            rows.append(row)
            if new_checkpoint is not None:
                if which in latest:
                    runner.discard(latest[which][1])
                latest[which] = (row, new_checkpoint)
            last_step[row["index"]] = step
            emit("trial", trial=row)
            return {**row, "stepSeconds": step}

        # Calibration: Balanced, a few iterations (a row of the table like any other; Balanced's
        # first-round trial continues from it).
        calib = run(0, CALIBRATION_ITERATIONS, 0, steps_per_report=1)
        if calib["state"] != "completed":
            raise CortexError("tuning-failed", f"The calibration run failed: {calib['message']}")
        per_iteration = calib["stepSeconds"] or (
            (calib["seconds"] - calib["startupSeconds"]) / CALIBRATION_ITERATIONS
        )
        per_iteration = max(1e-4, per_iteration)
        overhead = max(
            calib["startupSeconds"], calib["seconds"] - per_iteration * CALIBRATION_ITERATIONS
        )
        kept, target = halving_plan(
            len(candidates),
            budget_seconds - used(),
            overhead,
            per_iteration,
            eta=ETA,
            continued=True,
        )
        survivors = list(range(kept))
        emit(
            "plan",
            candidates=kept,
            firstRoundIterations=target,
            rounds=len(round_sizes(kept, ETA)),
            overheadSeconds=round(overhead, 3),
            secondsPerIteration=round(per_iteration, 6),
        )
        round_no, done = 1, 0
        while survivors and not cancelled():
            if round_no > 1:
                # Re-plan with the times measured so far: the rounds left share what remains.
                overhead, per_iteration = fit_timing(rows)
                target = first_round_iterations(
                    len(survivors),
                    budget_seconds - used(),
                    overhead,
                    per_iteration,
                    eta=ETA,
                    continued=True,
                    done=done,
                )
                if target < done + MIN_ITERATIONS:
                    break  # no budget left for another round: the last one decides
            results = []
            for which in survivors:
                before, _ = continues_from(which, target)
                start = before["iterations"] if before is not None else 0
                expected = overhead + per_iteration * (target - start)
                if used() + expected > budget_seconds * 1.05 or cancelled():
                    break  # would end past the budget
                row = run(which, target, round_no)
                if row["valLoss"] is not None:
                    results.append((row["valLoss"], which))
            if not results or len(survivors) == 1:
                break
            results.sort()
            survivors = [which for _, which in results[: max(1, len(survivors) // ETA)]]
            for which in set(latest) - set(survivors):
                runner.discard(latest.pop(which)[1])
            round_no, done = round_no + 1, target
        if len(survivors) == 1 and survivors[0] in latest and not cancelled():
            # The last survivor gets what the plan left (a busy machine early on makes the fit
            # pessimistic): continue it at the speed its last run measured.
            last, _ = latest[survivors[0]]
            step = last_step.get(last["index"]) or fit_timing(rows)[1]
            more = int((budget_seconds - used() - fit_timing(rows)[0]) / step)
            if more >= max(MIN_ITERATIONS, last["iterations"] // 10):
                run(survivors[0], last["iterations"] + more, last["round"])
        overhead, per_iteration = fit_timing(rows)
        # Every row is a complete run (config + total iterations): the best is the lowest.
        best_row = min((r for r in rows if r["valLoss"] is not None), key=lambda r: r["valLoss"])
        best_point = {k: best_row["config"][k] for k in ("learningRate", "loraRank", "loraAlpha")}
        balanced_rows = [
            r
            for r in rows
            if r["config"]["learningRate"] == candidates[0]["learningRate"]
            and r["config"]["loraRank"] == candidates[0]["loraRank"]
            and r["valLoss"] is not None
        ]
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
            "timing": {
                "startupSeconds": round(overhead, 3),
                "secondsPerIteration": round(per_iteration, 6),
            },
            "cancelled": cancelled(),
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
    continued = f" (from {trial['startIteration']})" if trial.get("startIteration") else ""
    return (
        f"Trial {trial['index']} (round {trial['round']}): lr {config['learningRate']:g}, "
        f"rank {config['loraRank']}, {trial['iterations']} it{continued} · {loss}",
        percentage,
    )
