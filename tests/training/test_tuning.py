"""Hyperparameter search: candidates, the halving plan, and a real search within a budget."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.training import tuning
from cortex_rpc.training.tuning import (
    CALIBRATION_ITERATIONS,
    ETA,
    LR_FACTORS,
    RANKS,
    TrialRunner,
    candidate_configs,
    first_round_iterations,
    fit_timing,
    halving_plan,
    round_sizes,
    step_seconds,
    subset_data,
    tune_hyperparameters,
)


def test_candidates_start_with_balanced_and_are_distinct():
    balanced = TrainingConfig(learning_rate=1e-4, lora_rank=8, lora_alpha=16)
    points = candidate_configs(balanced, 8, seed=1)
    assert points[0] == {"learningRate": 1e-4, "loraRank": 8, "loraAlpha": 16}
    assert len({(p["learningRate"], p["loraRank"]) for p in points}) == 8
    assert all(p["loraAlpha"] / p["loraRank"] == 2 for p in points)
    assert candidate_configs(balanced, 8, seed=1) == points


def test_halving_plan_fits_the_budget_or_drops_candidates():
    n, r0 = halving_plan(8, budget=100, overhead=1.0, per_iteration=0.1)
    # 8+4+2+1 runs; 8*1 + 4*2 + 2*4 + 1*8 = 32 iteration units of r0.
    assert n == 8 and 15 * 1.0 + 32 * r0 * 0.1 <= 100 < 15 * 1.0 + 32 * (r0 + 1) * 0.1
    n, r0 = halving_plan(8, budget=10, overhead=1.0, per_iteration=0.1)
    assert n < 8 and r0 >= 2


def test_fit_timing_separates_start_up_from_iterations():
    rows = [
        {"state": "completed", "iterations": n, "seconds": 1.0 + 0.01 * n, "startupSeconds": 0.5}
        for n in (4, 26, 52)
    ]
    startup, per_iteration = fit_timing(rows)
    assert startup == pytest.approx(1.0) and per_iteration == pytest.approx(0.01)


@pytest.mark.slow
def test_search_returns_the_evidence_table(tiny_model, sample_dataset_path, cortex_home):
    payloads: list[dict] = []
    result = tune_hyperparameters(
        str(tiny_model), str(sample_dataset_path), 12, trials=2, on_progress=payloads.append
    )
    rows = result["trials"]
    assert rows[0]["round"] == 0 and rows[0]["iterations"] == CALIBRATION_ITERATIONS
    failed = [r for r in rows if r["state"] != "completed" or r["valLoss"] is None]
    assert not failed, [(r["state"], r["message"], r["iterations"]) for r in failed]
    assert result["best"]["valLoss"] == min(r["valLoss"] for r in rows)
    assert result["timing"]["secondsPerIteration"] > 0
    assert result["bestConfig"]["iterations"] == result["best"]["iterations"]
    assert result["balancedValLoss"] is not None
    assert [p["event"] for p in payloads if p["event"] != "trial"] == ["plan", "done"]
    assert sum(p["event"] == "trial" for p in payloads) == len(rows)
    assert not (cortex_home / "tuning" / result["tuningId"]).exists()
    assert not (cortex_home / "mlx_models").exists()


def test_candidates_cover_every_learning_rate_and_rank_before_repeating():
    balanced = TrainingConfig(learning_rate=1e-4, lora_rank=8, lora_alpha=16)
    for seed in range(5):
        points = candidate_configs(balanced, 8, seed=seed)
        assert {round(p["learningRate"] / 1e-4, 2) for p in points} == set(LR_FACTORS)
        assert {p["loraRank"] for p in points} == set(RANKS)
    everything = candidate_configs(balanced, 64)
    assert len(everything) == len(LR_FACTORS) * len(RANKS)  # the whole grid, once
    assert len({(p["learningRate"], p["loraRank"]) for p in everything}) == len(everything)


def test_round_sizes_keep_one_in_eta():
    assert round_sizes(8) == [8, 4, 2, 1]
    assert round_sizes(5) == [5, 2, 1]
    assert round_sizes(8, 3) == [8, 2, 1]
    assert round_sizes(1, 3) == [1]


def _schedule_cost(
    n: int, r0: int, eta: int, overhead: float, per_iteration: float, continued: bool, done: int = 0
) -> float:
    cost, previous = 0.0, done
    for k, size in enumerate(round_sizes(n, eta)):
        target = r0 * eta**k
        cost += size * (overhead + per_iteration * (target - previous if continued else target))
        previous = target
    return cost


@pytest.mark.parametrize(("n", "eta"), [(8, 2), (8, 3), (5, 3), (20, 3), (2, 2)])
def test_continued_schedule_fits_the_budget_and_trains_more(n, eta):
    budget, overhead, per_iteration = 120.0, 1.5, 0.015
    r0 = first_round_iterations(n, budget, overhead, per_iteration, eta=eta, continued=True)
    assert _schedule_cost(n, r0, eta, overhead, per_iteration, True) <= budget
    assert _schedule_cost(n, r0 + 1, eta, overhead, per_iteration, True) > budget
    restarted = first_round_iterations(n, budget, overhead, per_iteration, eta=eta)
    assert _schedule_cost(n, restarted, eta, overhead, per_iteration, False) <= budget
    assert r0 > restarted  # promotions pay only for the iterations they add


def test_replanning_counts_what_survivors_already_trained():
    # One survivor at 300 iterations, 10 s left: 1 s of overhead, then 900 more iterations.
    assert first_round_iterations(1, 10, 1.0, 0.01, eta=ETA, continued=True, done=300) == 1200
    # Three survivors at 300: rounds [3, 1] to r and 3r.
    r = first_round_iterations(3, 30, 1.0, 0.01, eta=3, continued=True, done=300)
    assert _schedule_cost(3, r, 3, 1.0, 0.01, True, done=300) <= 30
    assert _schedule_cost(3, r + 1, 3, 1.0, 0.01, True, done=300) > 30


def test_step_seconds_skips_the_first_and_last_report():
    reports = [(1, 10.0), (2, 10.1), (3, 10.2), (5, 10.4), (6, 12.0)]  # last has an evaluation
    assert step_seconds(reports) == pytest.approx(0.1)
    assert step_seconds(reports[:2]) is None


def test_fit_timing_counts_only_the_iterations_a_run_added():
    rows = [
        {
            "state": "completed",
            "iterations": start + n,
            "startIteration": start,
            "seconds": 2.0 + 0.01 * n,
            "startupSeconds": 0.5,
        }
        for start, n in ((0, 12), (12, 300), (300, 600), (900, 1800))
    ]
    overhead, per_iteration = fit_timing(rows)
    assert overhead == pytest.approx(2.0) and per_iteration == pytest.approx(0.01)


class _FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    strftime = staticmethod(time.strftime)


class _FakeRunner:
    """Stands in for worker runs: loss falls with iterations, best near 3x Balanced's rate."""

    OVERHEAD, PER_ITERATION = 1.0, 0.01

    def __init__(self, clock: _FakeClock, balanced_lr: float, slow_runs: range = range(0)) -> None:
        self.clock, self.balanced_lr = clock, balanced_lr
        self.slow_runs = slow_runs  # these runs (0-based) take twice as long: a busy machine
        self.runs: list[dict] = []
        self.checkpoints: dict[str, tuple[tuple, int]] = {}
        self.discarded: list[str] = []

    def __call__(
        self, work_dir, model_dir, data_dir, python=None, slot=None
    ):  # as the class is called
        return self

    def run(
        self, config, cancel=None, *, resume_from=None, start_iteration=0, steps_per_report=None
    ):
        key = (config.learning_rate, config.lora_rank)
        if resume_from is not None:  # a continuation resumes its own config's last step
            assert self.checkpoints[resume_from] == (key, start_iteration)
        added = config.iterations - start_iteration
        seconds = (self.OVERHEAD + self.PER_ITERATION * added) * (
            2 if len(self.runs) in self.slow_runs else 1
        )
        self.clock.now += seconds
        checkpoint = f"/ckpt/{len(self.runs)}/checkpoints/step-{config.iterations}"
        self.checkpoints[checkpoint] = (key, config.iterations)
        self.runs.append({"key": key, "from": resume_from, "checkpoint": checkpoint})
        loss = (
            math.log10(config.learning_rate / (3 * self.balanced_lr)) ** 2
            + 4 / config.lora_rank
            + 50 / config.iterations
        )
        return {
            "state": "completed",
            "valLoss": loss,
            "trainLoss": loss,
            "iterations": config.iterations,
            "startIteration": start_iteration,
            "seconds": seconds,
            "startupSeconds": 0.5,
            "stepSeconds": self.PER_ITERATION,
            "checkpoint": checkpoint,
            "message": None,
        }

    def discard(self, checkpoint):
        self.discarded.append(checkpoint)


def test_promoted_trials_continue_from_their_checkpoints(
    tiny_model, sample_dataset_path, monkeypatch
):
    from cortex_rpc.config.proposal import propose_for_model

    balanced = propose_for_model(
        str(tiny_model), dataset=str(sample_dataset_path), preset="balanced"
    ).config
    clock = _FakeClock()
    fake = _FakeRunner(clock, balanced.learning_rate)
    monkeypatch.setattr(tuning, "time", clock)
    monkeypatch.setattr(tuning, "TrialRunner", fake)
    result = tune_hyperparameters(str(tiny_model), str(sample_dataset_path), 60, trials=8)
    rows = result["trials"]
    assert [r["round"] for r in rows] == [0] + [1] * 8 + [2] * 2 + [3]  # sizes 8, 2, 1
    assert result["usedSeconds"] <= 60 * 1.05  # the schedule fits the budget
    by_index = {r["index"]: r for r in rows}
    for row, run in zip(rows, fake.runs, strict=True):
        if row["round"] <= 1 and row["index"] != 2:
            assert row["continuedFrom"] is None and row["startIteration"] == 0
            continue
        # Balanced's first-round run continues the calibration; later rounds their round.
        before = by_index[row["continuedFrom"]]
        assert before["config"]["learningRate"] == row["config"]["learningRate"]
        assert before["config"]["loraRank"] == row["config"]["loraRank"]
        assert row["startIteration"] == before["iterations"] < row["iterations"]
        assert run["from"] == fake.runs[before["index"] - 1]["checkpoint"]
    best = result["best"]
    assert best is rows[-1] or best == rows[-1]  # the survivor, after the most iterations

    def quality(point: dict) -> float:  # the fake loss without its iterations term
        return (
            math.log10(point["learningRate"] / (3 * balanced.learning_rate)) ** 2
            + 4 / point["loraRank"]
        )

    winner = min(candidate_configs(balanced, 8), key=quality)
    assert (best["config"]["learningRate"], best["config"]["loraRank"]) == (
        winner["learningRate"],
        winner["loraRank"],
    )
    assert result["bestConfig"]["iterations"] == best["iterations"]
    chain, row = 0, best  # the winner's total is what its runs added, end to end
    while row is not None:
        chain += row["iterations"] - row["startIteration"]
        row = by_index.get(row["continuedFrom"])
    assert chain == best["iterations"]
    # Dropped candidates' checkpoints are deleted; only the winner's last one is kept.
    kept = set(fake.checkpoints) - set(fake.discarded)
    assert kept == {fake.runs[-1]["checkpoint"]}


@pytest.mark.slow
def test_a_continued_trial_trains_as_one_longer_run(tiny_model, sample_dataset_path, tmp_path):
    from cortex_rpc.config.proposal import propose_for_model
    from cortex_rpc.datasets import prepare_dataset

    balanced = propose_for_model(
        str(tiny_model), dataset=str(sample_dataset_path), preset="balanced"
    ).config
    prepare_dataset(sample_dataset_path, tmp_path / "prepared", seed=balanced.seed)
    subset_data(tmp_path / "prepared", tmp_path / "data")
    runner = TrialRunner(tmp_path / "runs", tiny_model, tmp_path / "data")
    # As the tuner trains trials: at a constant rate (a schedule depends on the run's length).
    config = replace(
        balanced, iterations=12, learning_rate=3e-3, lr_schedule="constant", warmup_ratio=0.0
    )
    first = runner.run(replace(config, iterations=6))
    continued = runner.run(config, resume_from=first["checkpoint"], start_iteration=6)
    fresh = runner.run(config)
    assert Path(first["checkpoint"]).name == "step-0000006"
    assert continued["startIteration"] == 6 and continued["iterations"] == 12
    assert continued["valLoss"] == pytest.approx(fresh["valLoss"], abs=1e-4)
    assert continued["valLoss"] != pytest.approx(first["valLoss"], abs=1e-3)
    runner.discard(first["checkpoint"])
    assert not Path(first["checkpoint"]).parent.exists()


def test_the_survivor_gets_the_budget_a_slow_first_round_left(
    tiny_model, sample_dataset_path, monkeypatch
):
    from cortex_rpc.config.proposal import propose_for_model

    balanced = propose_for_model(
        str(tiny_model), dataset=str(sample_dataset_path), preset="balanced"
    ).config
    clock = _FakeClock()
    fake = _FakeRunner(clock, balanced.learning_rate, slow_runs=range(1, 5))  # half of round 1
    monkeypatch.setattr(tuning, "time", clock)
    monkeypatch.setattr(tuning, "TrialRunner", fake)
    result = tune_hyperparameters(str(tiny_model), str(sample_dataset_path), 60, trials=8)
    rows = result["trials"]
    final, top_up = rows[-2], rows[-1]
    assert top_up["round"] == final["round"] and top_up["continuedFrom"] == final["index"]
    assert top_up["startIteration"] == final["iterations"] < top_up["iterations"]
    assert result["best"]["index"] == top_up["index"]
    assert result["bestConfig"]["iterations"] == top_up["iterations"]
    assert 60 * 0.95 <= result["usedSeconds"] <= 60 * 1.05
