"""Training over real stdio: start, stream progress, $/progress, cancel, resume, generate."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pygls.exceptions import JsonRpcException

from .conftest import request, to_plain

TERMINAL = ("completed", "failed", "cancelled", "interrupted")


def collect_progress(client) -> list[dict]:
    """Record every cortex/trainingProgress payload the server sends."""
    events: list[dict] = []

    @client.feature("cortex/trainingProgress")
    def on_progress(params) -> None:
        events.append(to_plain(params))

    return events


async def wait_for_state(events: list[dict], job_id: str, states, timeout: float = 120.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for event in events:
            if event["jobId"] == job_id and event["state"] in states:
                return event
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {states}: {events[-3:]}")


@pytest.mark.filterwarnings("ignore:Unknown progress token")  # pytest-lsp: token is ours
async def test_train_stream_progress_list_and_chat(
    client, tiny_model, sample_dataset_path, cortex_home
):
    events = collect_progress(client)
    started = await request(
        client,
        "cortex/startTraining",
        {
            "model": str(tiny_model),
            "dataset": str(sample_dataset_path),
            "outputName": "tiny-custom",
            "preset": "quick",
            "config": {"iterations": 12, "batchSize": 4},
            "workDoneToken": "train-1",
        },
    )
    assert started["jobId"] and started["config"]["iterations"] == 12
    assert started["outputPath"] == str(cortex_home / "mlx_models" / "tiny-custom")
    assert started["explanations"]
    assert started["estimate"]["basis"].startswith("uncalibrated FLOP model, may be off by 3x")
    assert started["memory"]["neededBytes"] < started["memory"]["budgetBytes"]

    done = await wait_for_state(events, started["jobId"], TERMINAL)
    assert done["state"] == "completed", done
    # The finished job calibrated this machine: the same proposal now says so.
    again = await request(
        client,
        "cortex/proposeConfig",
        {
            "model": str(tiny_model),
            "dataset": str(sample_dataset_path),
            "preset": "quick",
            "overrides": {"iterations": 12, "batchSize": 4},
        },
    )
    assert again["estimate"]["calibratedRuns"] == 1
    assert again["estimate"]["basis"].startswith("calibrated from 1 run(s) on this machine")
    assert done["outputPath"] == started["outputPath"]
    assert done["adapterBytes"] > 0
    progress = [e for e in events if e.get("event") == "progress"]
    assert progress and progress[-1]["iteration"] == 12
    for field in (
        "trainLoss",
        "learningRate",
        "tokensPerSecond",
        "etaSeconds",
        "epoch",
        "totalEpochs",
        "totalIterations",
        "peakMemoryBytes",
    ):
        assert field in progress[-1], field

    reports = client.progress_reports["train-1"]
    assert reports[0].kind == "begin" and reports[-1].kind == "end"
    assert any(r.kind == "report" and "loss" in (r.message or "") for r in reports)

    jobs = (await request(client, "cortex/listJobs", {}))["jobs"]
    assert jobs[0]["jobId"] == started["jobId"] and jobs[0]["state"] == "completed"
    models = (await request(client, "cortex/listModels", {}))["models"]
    assert any(m["name"] == "tiny-custom" and m["kind"] == "fine-tuned" for m in models)
    marker = json.loads((cortex_home / "mlx_models/tiny-custom/fine-tuned.marker").read_text())
    assert marker["dataset"]["sha256"]

    chunks: list[str] = []

    @client.feature("cortex/generateChunk")
    def on_chunk(params) -> None:
        chunks.append(to_plain(params)["text"])

    answer = await request(
        client,
        "cortex/generate",
        {
            "model": "tiny-custom",
            "prompt": "What is Python?",
            "maxTokens": 8,
        },
    )
    assert answer["tokens"] > 0
    assert "".join(chunks) == answer["text"]


async def test_cancel_then_resume_reaches_the_planned_total(
    client, tiny_model, sample_dataset_path
):
    events = collect_progress(client)
    started = await request(
        client,
        "cortex/startTraining",
        {
            "model": str(tiny_model),
            "dataset": str(sample_dataset_path),
            "outputName": "resumed",
            "config": {"iterations": 400, "batchSize": 2},
        },
    )
    job_id = started["jobId"]
    await wait_for_state(events, job_id, ("running",))
    while not any(e.get("event") == "checkpoint" for e in events):
        await asyncio.sleep(0.05)
    await request(client, "cortex/cancelTraining", {"jobId": job_id})
    cancelled = await wait_for_state(events, job_id, TERMINAL, timeout=15)
    assert cancelled["state"] == "cancelled"
    jobs = (await request(client, "cortex/listJobs", {}))["jobs"]
    assert jobs[0]["resumable"] and jobs[0]["iteration"] < 400

    events.clear()
    await request(client, "cortex/resumeTraining", {"jobId": job_id})
    done = await wait_for_state(events, job_id, TERMINAL, timeout=240)
    assert done["state"] == "completed", done
    assert done["iteration"] == 400


@pytest.mark.parametrize(
    ("params", "code", "needle"),
    [
        ({"config": {"learningRate": -1}}, -32602, "config.learningRate"),
        ({"outputName": "../escape"}, -32602, "outputName"),
        ({"dataset": "/nonexistent/data.jsonl"}, -32000, "dataset-not-found"),
        ({"model": "/nonexistent/model"}, -32000, "model-not-found"),
    ],
)
async def test_start_training_errors(
    client, tiny_model, sample_dataset_path, cortex_home, params, code, needle
):
    base = {"model": str(tiny_model), "dataset": str(sample_dataset_path), "outputName": "ok"}
    with pytest.raises(JsonRpcException) as error:
        await request(client, "cortex/startTraining", {**base, **params})
    assert error.value.code == code
    text = f"{error.value.message} {error.value.data}"
    assert needle in text
    assert not (cortex_home / "mlx_models").exists() or not any(
        (cortex_home / "mlx_models").iterdir()
    )
    assert not (cortex_home / "jobs").exists() or not any((cortex_home / "jobs").iterdir())


async def test_existing_model_name_is_refused(client, tiny_model, sample_dataset_path, cortex_home):
    (cortex_home / "mlx_models" / "taken").mkdir(parents=True)
    with pytest.raises(JsonRpcException) as error:
        await request(
            client,
            "cortex/startTraining",
            {
                "model": str(tiny_model),
                "dataset": str(sample_dataset_path),
                "outputName": "taken",
            },
        )
    assert error.value.data["code"] == "model-exists"


@pytest.mark.filterwarnings("ignore:Unknown progress token")  # pytest-lsp: token is ours
async def test_adapter_library_and_comparison(client, tiny_model, sample_dataset_path):
    events = collect_progress(client)
    for name in ("ada-one", "ada-two"):
        started = await request(
            client,
            "cortex/startTraining",
            {
                "model": str(tiny_model),
                "dataset": str(sample_dataset_path),
                "outputName": name,
                "config": {"iterations": 6, "learningRate": 1e-2, "maxSeqLength": 128},
            },
        )
        done = await wait_for_state(events, started["jobId"], TERMINAL)
        assert done["state"] == "completed", done
    listed = await request(client, "cortex/listAdapters", {"baseModel": str(tiny_model)})
    assert sorted(a["name"] for a in listed["adapters"]) == ["ada-one", "ada-two"]

    compared = await request(
        client,
        "cortex/compareAdapters",
        {
            "baseModel": str(tiny_model),
            "adapters": ["ada-one", "ada-two"],
            "prompts": ["What is Python?", "What is Git?"],
            "maxTokens": 6,
            "workDoneToken": "compare-1",
        },
    )
    reports = client.progress_reports["compare-1"]
    assert [r.message for r in reports[1:-1]] == [f"{n}/6 generations" for n in range(1, 7)]
    assert reports[-2].percentage == 100
    assert [row["prompt"] for row in compared["rows"]] == ["What is Python?", "What is Git?"]
    for row in compared["rows"]:
        assert [o["model"] for o in row["outputs"]] == ["base", "ada-one", "ada-two"]
        assert all(o["tokens"] > 0 for o in row["outputs"])

    with pytest.raises(JsonRpcException) as error:
        await request(
            client,
            "cortex/generate",
            {"model": str(sample_dataset_path.parent), "adapter": "ada-one", "prompt": "x"},
        )
    assert error.value.code in (-32000, -32602)


def test_start_training_reads_the_dataset_as_validate_does(tmp_path, cortex_home, tiny_model):
    """``~/data.txt`` holding CSV, with ``format: "csv"``: what validateDataset accepts trains.

    Both were refused before (dataset-not-found for ``~``; dataset-invalid because the
    proposal parsed the file without its format), over a real stdio server whose HOME is
    a temporary folder. Every notification of the job also fits the published schema.
    """
    import os

    import jsonschema

    from cortex_rpc.schemas import load_schema
    from tests.reliability.test_stdio_faults import RawServer

    home = tmp_path / "user-home"
    home.mkdir()
    rows = [f'"What is {n}?","{n} is a number."' for n in range(12)]
    (home / "data.txt").write_text("prompt,response\n" + "\n".join(rows) + "\n")
    server = RawServer(env={**os.environ, "HOME": str(home), "CORTEX_HOME": str(cortex_home)})
    try:
        server.initialize()
        checked = server.request("cortex/validateDataset", {"path": "~/data.txt", "format": "csv"})[
            "result"
        ]
        assert checked["ok"] and checked["examples"] == 12, checked
        reply = server.request(
            "cortex/startTraining",
            {
                "model": str(tiny_model),
                "dataset": "~/data.txt",
                "format": "csv",
                "outputName": "from-home",
                "preset": "quick",
                "config": {"iterations": 4, "batchSize": 2},
            },
        )
        assert "result" in reply, reply
        job_id = reply["result"]["jobId"]
        schema = load_schema("rpc/trainingProgress.notification.schema.json")
        while True:
            message = server.read(timeout=180)
            if message.get("method") != "cortex/trainingProgress":
                continue
            jsonschema.validate(message["params"], schema)
            if message["params"]["state"] in TERMINAL:
                break
        assert message["params"]["jobId"] == job_id
        assert message["params"]["state"] == "completed", message["params"]
        marker = json.loads((cortex_home / "mlx_models/from-home/fine-tuned.marker").read_text())
        assert marker["dataset"]["source"] == str(home / "data.txt")
        assert marker["dataset"]["format"] == "csv"
    finally:
        server.close()


async def test_schedule_early_stopping_and_tensorboard_over_stdio(
    client, tiny_model, sample_dataset_path
):
    """The loop's settings travel over the wire; an early stop is a completion with its reason."""
    events = collect_progress(client)
    started = await request(
        client,
        "cortex/startTraining",
        {
            "model": str(tiny_model),
            "dataset": str(sample_dataset_path),
            "outputName": "tiny-early",
            "preset": "balanced",
            "config": {
                "iterations": 12, "batchSize": 4, "warmupSteps": 2, "optimizer": "adamw",
                # No improvement can be that large: the second evaluation (iteration 4) stops.
                "earlyStopping": {"patience": 1, "minDelta": 50},
            },
            "options": {"stepsPerEval": 2, "stepsPerReport": 1},
        },
    )  # fmt: skip
    assert started["config"]["lrSchedule"] == "cosine"  # Balanced's
    done = await wait_for_state(events, started["jobId"], TERMINAL)
    assert done["state"] == "completed" and done["event"] == "done", done
    assert done["stopReason"] == "early-stopping" and done["iteration"] == 4
    assert "stopped early at iteration 4" in done["message"]
    assert done["keptIteration"] == done["bestIteration"] in (2, 4)
    rates = [e["learningRate"] for e in events if e.get("event") == "progress"]
    assert rates[0] == 0.0 and rates[2] == pytest.approx(started["config"]["learningRate"])
    job = next(
        j
        for j in (await request(client, "cortex/listJobs", {}))["jobs"]
        if j["jobId"] == started["jobId"]
    )
    assert list(Path(job["logDir"]).glob("events.out.tfevents.*"))
    with pytest.raises(JsonRpcException, match="overrides.earlyStopping.patience"):
        await request(
            client,
            "cortex/proposeConfig",
            {"model": str(tiny_model), "overrides": {"earlyStopping": {"patience": 0}}},
        )
