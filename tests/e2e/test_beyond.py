"""Evaluation, continual learning and hyperparameter search over real stdio."""

from __future__ import annotations

import json

import pytest

from .conftest import request, to_plain
from .test_training import TERMINAL, collect_progress, wait_for_state


async def train(client, events, **params) -> dict:
    started = await request(
        client,
        "cortex/startTraining",
        {"preset": "quick", "config": {"iterations": 6, "batchSize": 4}, **params},
    )
    done = await wait_for_state(events, started["jobId"], TERMINAL)
    assert done["state"] == "completed", done
    return {**started, "done": done}


async def test_evaluate_then_continue_with_replay(
    client, tiny_model, sample_dataset_path, cortex_home, tmp_path
):
    events = collect_progress(client)
    await train(
        client,
        events,
        model=str(tiny_model),
        dataset=str(sample_dataset_path),
        outputName="beyond-v1",
    )
    result = await request(
        client, "cortex/evaluate", {"model": "beyond-v1", "dataset": str(sample_dataset_path)}
    )
    assert result["model"] == "beyond-v1" and result["examples"] >= 1
    assert result["loss"] < result["baseLoss"]
    assert result["perplexity"] < result["basePerplexity"]
    marker_path = cortex_home / "mlx_models/beyond-v1/fine-tuned.marker"
    assert json.loads(marker_path.read_text())["evaluations"][0]["loss"] == result["loss"]

    new_data = tmp_path / "new.jsonl"
    new_data.write_text(
        "".join(
            json.dumps({"prompt": f"Say {w}", "response": f"{w} {w} {w}"}) + "\n"
            for w in ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "rock", "sea"]
            * 2
        )
    )
    v2 = await train(
        client,
        events,
        model="beyond-v1",
        dataset=str(new_data),
        outputName="beyond-v2",
        continueFrom="beyond-v1",
        replayFraction=0.5,
    )
    assert v2["continuedFrom"]["name"] == "beyond-v1"
    assert v2["continuedFrom"]["replay"]["examples"] == 18
    marker = json.loads((cortex_home / "mlx_models/beyond-v2/fine-tuned.marker").read_text())
    assert marker["continuedFrom"]["replay"]["examples"] == 18


@pytest.mark.filterwarnings("ignore:Unknown progress token")  # pytest-lsp: token is ours
async def test_tune_hyperparameters_streams_trials(client, tiny_model, sample_dataset_path):
    payloads: list[dict] = []

    @client.feature("cortex/tuningProgress")
    def on_progress(params) -> None:
        payloads.append(to_plain(params))

    result = await request(
        client,
        "cortex/tuneHyperparameters",
        {
            "model": str(tiny_model),
            "dataset": str(sample_dataset_path),
            "budgetSeconds": 10,
            "trials": 2,
            "workDoneToken": "tune-1",
        },
    )
    assert result["bestConfig"]["learningRate"] > 0 and result["trials"]
    assert all(set(r) >= {"config", "valLoss", "seconds", "iterations"} for r in result["trials"])
    assert [p["event"] for p in payloads].count("trial") == len(result["trials"])
    reports = client.progress_reports["tune-1"]
    assert reports[0].kind == "begin" and reports[-1].kind == "end"
    assert any("Trial 1" in (r.message or "") for r in reports if r.kind == "report")
