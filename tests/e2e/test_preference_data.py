"""Preference data over real stdio: validation, proposal with method, the method refusals."""

from __future__ import annotations

import json

import pytest
from pygls.exceptions import JsonRpcException

from .conftest import request


def _pairs(path):
    rows = [
        {
            "input": {"messages": [{"role": "user", "content": f"What is {i}+1?"}]},
            "preferred_output": [{"role": "assistant", "content": f"{i + 1}."}],
            "non_preferred_output": [{"role": "assistant", "content": f"{i + 2}."}],
        }
        for i in range(10)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


async def test_preference_data_end_to_end(client, tiny_model, tmp_path, sample_dataset_path):
    data = _pairs(tmp_path / "pairs.jsonl")
    result = await request(client, "cortex/validateDataset", {"path": str(data)})
    assert result["ok"] and result["shape"] == "preference" and result["examples"] == 10

    line = '{"prompt": "Q?", "chosen": "Same.", "rejected": "Same."}\n'
    result = await request(client, "cortex/validateDataset", {"text": line, "format": "jsonl"})
    identical = [d for d in result["diagnostics"] if d["code"] == "preference-identical"]
    assert [d["range"]["start"]["character"] for d in identical] == [line.rindex('"Same."')]

    analysis = await request(client, "cortex/analyzeDataset", {"path": str(data)})
    assert analysis["kind"] == "preference" and analysis["preference"]["pairs"] == 10

    proposal = await request(
        client, "cortex/proposeConfig", {"model": str(tiny_model), "dataset": str(data)}
    )
    assert proposal["dataset"]["kind"] == "preference"
    assert proposal["config"]["method"] == "dpo" and proposal["config"]["beta"] == 0.1
    proposal = await request(
        client,
        "cortex/proposeConfig",
        {
            "model": str(tiny_model),
            "dataset": str(data),
            "method": "orpo",
            "overrides": {"orpoLambda": 0.2},
        },
    )
    assert proposal["config"]["method"] == "orpo" and proposal["config"]["orpoLambda"] == 0.2

    prepared = await request(
        client,
        "cortex/prepareDataset",
        {"path": str(data), "outDir": str(tmp_path / "prep"), "method": "dpo"},
    )
    assert prepared["kind"] == "preference" and prepared["shape"] == "preference"
    record = json.loads((tmp_path / "prep" / "train.jsonl").read_text().splitlines()[0])
    assert set(record) == {"prompt", "chosen", "rejected"}

    with pytest.raises(JsonRpcException) as error:
        await request(
            client,
            "cortex/startTraining",
            {
                "model": str(tiny_model),
                "dataset": str(sample_dataset_path),
                "outputName": "wrong-method",
                "method": "dpo",
            },
        )
    assert error.value.code == -32602
    assert error.value.data["code"] == "method-needs-preference-data"
    assert error.value.data["field"] == "method"
    with pytest.raises(JsonRpcException) as error:
        await request(
            client,
            "cortex/proposeConfig",
            {"model": str(tiny_model), "dataset": str(data), "method": "ppo"},
        )
    assert error.value.code == -32602


async def test_a_dpo_job_streams_its_metrics_and_evaluates_against_the_base(
    client, tiny_model, tmp_path
):
    """The whole preference flow once over stdio: pairs -> DPO job -> metrics -> evaluate."""
    from tests.training.test_preference import WORDS

    from .test_training import collect_progress, wait_for_state

    rows = []
    for i in range(40):  # chosen repeats the prompt's word; rejected says another one
        word, other = WORDS[i % len(WORDS)], WORDS[(i + 3) % len(WORDS)]
        rows.append({"prompt": f"Say {word}", "chosen": word, "rejected": other})
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    events = collect_progress(client)
    started = await request(
        client,
        "cortex/startTraining",
        {
            "model": str(tiny_model),
            "dataset": str(data),
            "outputName": "tiny-dpo",
            "method": "dpo",
            "config": {"iterations": 12, "learningRate": 1e-3, "loraRank": 4},
            "options": {"stepsPerReport": 4, "stepsPerEval": 6},
        },
    )
    assert started["config"]["method"] == "dpo"
    done = await wait_for_state(events, started["jobId"], ("completed", "failed"), timeout=300)
    assert done["state"] == "completed", done
    reports = [e for e in events if e.get("event") == "progress" and "rewardAccuracy" in e]
    assert reports and all(0 <= e["rewardAccuracy"] <= 1 for e in reports)
    assert all("margin" in e and "chosenLogps" in e for e in reports)
    assert any("valRewardAccuracy" in e for e in reports)

    result = await request(client, "cortex/evaluate", {"model": "tiny-dpo", "dataset": str(data)})
    assert 0 <= result["rewardAccuracy"] <= 1 and "margin" in result
    assert 0 <= result["basePreferenceAccuracy"] <= 1 and 0 <= result["preferenceAccuracy"] <= 1
