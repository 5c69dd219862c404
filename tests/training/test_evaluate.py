"""cortex/evaluate as functions: held-out loss of base and fine-tuned model, kept in the marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_rpc.errors import CortexError
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.evaluate import evaluate_model, write_eval_records
from cortex_rpc.training.jobs import TrainingJobs
from cortex_rpc.training.service import start_training

pytestmark = pytest.mark.slow


@pytest.fixture
def trained(tiny_model: Path, sample_dataset_path: Path, cortex_home: Path) -> dict:
    jobs = TrainingJobs(CortexHome(cortex_home))
    events: list[dict] = []
    jobs.on_event = events.append
    started = start_training(
        jobs,
        model=str(tiny_model),
        dataset=str(sample_dataset_path),
        output_name="ev-ft",
        preset="quick",
        config={"iterations": 8, "batchSize": 4},
    )
    assert jobs.wait(started["jobId"], 120)["state"] == "completed"
    return next(e for e in events if e.get("event") == "done")


def test_evaluate_matches_training_evaluation_and_is_recorded(
    trained, sample_dataset_path, cortex_home
):
    result = evaluate_model("ev-ft", sample_dataset_path)
    # Same valid split, same base loss as the worker's evaluation before the first update.
    # (Its last evaluation, like ours, measures the model after the last update.)
    assert result["examples"] >= 1
    assert result["baseLoss"] == pytest.approx(trained["evaluation"]["baseValLoss"], rel=1e-3)
    assert result["perplexity"] == pytest.approx(2.718281828 ** result["loss"], rel=1e-6)
    assert result["loss"] < result["baseLoss"]
    marker = json.loads((cortex_home / "mlx_models/ev-ft/fine-tuned.marker").read_text())
    assert marker["evaluations"][-1]["loss"] == result["loss"]
    assert marker["evaluations"][-1]["datasetSha256"] == marker["dataset"]["sha256"]

    whole = evaluate_model("ev-ft", sample_dataset_path, split="all", max_examples=5)
    assert whole["examples"] == 5
    marker = json.loads((cortex_home / "mlx_models/ev-ft/fine-tuned.marker").read_text())
    assert len(marker["evaluations"]) == 2


def test_eval_records_splits(sample_dataset_path, tmp_path):
    valid, info = write_eval_records(sample_dataset_path, tmp_path / "a", "valid")
    every, _ = write_eval_records(sample_dataset_path, tmp_path / "b", "all")
    n_valid = len(valid.read_text().splitlines())
    assert n_valid == info["validExamples"]
    assert len(every.read_text().splitlines()) == info["trainExamples"] + n_valid


def test_evaluate_refuses_a_base_model(tiny_model, sample_dataset_path):
    with pytest.raises(CortexError) as error:
        evaluate_model(str(tiny_model), sample_dataset_path)
    assert error.value.code == "model-not-found"
