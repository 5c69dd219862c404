"""Hyperparameter search: candidates, the halving plan, and a real search within a budget."""

from __future__ import annotations

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.training.tuning import (
    candidate_configs,
    fit_timing,
    halving_plan,
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
    rows = [{"state": "completed", "iterations": n, "seconds": 1.0 + 0.01 * n,
             "startupSeconds": 0.5} for n in (4, 26, 52)]
    startup, per_iteration = fit_timing(rows)
    assert startup == pytest.approx(1.0) and per_iteration == pytest.approx(0.01)


@pytest.mark.slow
def test_search_returns_the_evidence_table(tiny_model, sample_dataset_path, cortex_home):
    payloads: list[dict] = []
    result = tune_hyperparameters(str(tiny_model), str(sample_dataset_path), 12, trials=2,
                                  on_progress=payloads.append)
    rows = result["trials"]
    assert rows[0]["round"] == 0 and rows[0]["iterations"] == 4  # calibration
    assert all(r["state"] == "completed" and r["valLoss"] is not None for r in rows)
    assert result["best"]["valLoss"] == min(r["valLoss"] for r in rows)
    assert result["timing"]["secondsPerIteration"] > 0
    assert result["bestConfig"]["iterations"] == result["best"]["iterations"]
    assert result["balancedValLoss"] is not None
    assert [p["event"] for p in payloads if p["event"] != "trial"] == ["plan", "done"]
    assert sum(p["event"] == "trial" for p in payloads) == len(rows)
    assert not (cortex_home / "tuning" / result["tuningId"]).exists()
    assert not (cortex_home / "mlx_models").exists()
