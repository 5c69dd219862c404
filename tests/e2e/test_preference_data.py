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
