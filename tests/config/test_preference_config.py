"""Smart configuration for preference training: method, presets, the dataset's kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_rpc.config.proposal import propose_for_model
from cortex_rpc.config.smart import PREFERENCE_LEARNING_RATES, MachineProfile
from cortex_rpc.errors import InvalidParams
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.jobs import TrainingJobs
from cortex_rpc.training.service import start_training

MACHINE = MachineProfile("cpu", 16 * 10**9)


def pairs(path: Path, count: int = 40) -> Path:
    rows = [
        {"prompt": f"What is {i}+1?", "chosen": f"{i + 1}.", "rejected": f"{i + 2}."}
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def chats(path: Path, count: int = 40) -> Path:
    rows = [{"prompt": f"question {i}", "response": "answer"} for i in range(count)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def propose(model: Path, data: Path, **kwargs) -> dict:
    return propose_for_model(str(model), dataset=str(data), machine=MACHINE, **kwargs).to_wire()


def test_preference_data_proposes_dpo_with_its_learning_rate_and_epochs(tiny_model, tmp_path):
    proposal = propose(tiny_model, pairs(tmp_path / "p.jsonl"))
    config = proposal["config"]
    assert proposal["dataset"]["kind"] == "preference"
    assert config["method"] == "dpo"
    assert config["beta"] == 0.1
    assert config["learningRate"] == PREFERENCE_LEARNING_RATES["tiny"][0]
    assert config["epochs"] == 3  # under 100 pairs
    notes = "\n".join(proposal["explanations"])
    assert "DPO: learns from each pair" in notes
    assert "epochs 3: tiny-model default 5; dataset 3 (40 preference pairs" in notes
    assert "about a tenth of SFT's" in notes
    assert "x2: both answers of a pair" in proposal["estimate"]["basis"]


def test_sft_proposal_for_the_same_model_is_ten_times_the_dpo_rate(tiny_model, tmp_path):
    sft = propose(tiny_model, chats(tmp_path / "c.jsonl"))
    dpo = propose(tiny_model, pairs(tmp_path / "p.jsonl"))
    assert sft["dataset"]["kind"] == "sft"
    assert sft["config"]["method"] == "sft"
    assert sft["config"]["learningRate"] == pytest.approx(10 * dpo["config"]["learningRate"])


def test_method_param_and_overrides_method_and_which_wins(tiny_model, tmp_path):
    data = pairs(tmp_path / "p.jsonl")
    assert propose(tiny_model, data, method="orpo")["config"]["method"] == "orpo"
    both = propose(tiny_model, data, method="orpo", overrides={"method": "dpo"})
    assert both["config"]["method"] == "dpo"
    sft = propose(tiny_model, data, method="sft")
    assert sft["config"]["method"] == "sft"
    assert any("rejected answers are not used" in n for n in sft["explanations"])
    orpo = propose(tiny_model, data, method="orpo", preset="quick")
    assert orpo["config"]["epochs"] == 1
    assert any(n.startswith("ORPO:") for n in orpo["explanations"])


def test_full_fine_tuning_gets_the_full_preference_rate(tiny_model, tmp_path):
    proposal = propose(tiny_model, pairs(tmp_path / "p.jsonl"), overrides={"fineTuneType": "full"})
    assert proposal["config"]["learningRate"] == PREFERENCE_LEARNING_RATES["tiny"][1]


def test_dpo_on_sft_data_is_refused_naming_the_field(tiny_model, tmp_path):
    data = chats(tmp_path / "c.jsonl")
    with pytest.raises(InvalidParams) as caught:
        propose(tiny_model, data, method="dpo")
    assert caught.value.data["code"] == "method-needs-preference-data"
    assert caught.value.data["field"] == "method"
    with pytest.raises(InvalidParams) as caught:
        propose(tiny_model, data, overrides={"method": "orpo"})
    assert caught.value.data["field"] == "overrides.method"


def test_invalid_method_and_beta_are_invalid_params(tiny_model, tmp_path):
    data = pairs(tmp_path / "p.jsonl")
    with pytest.raises(InvalidParams) as caught:
        propose(tiny_model, data, overrides={"beta": 0})
    assert caught.value.data["field"] == "overrides.beta"
    with pytest.raises(InvalidParams) as caught:
        propose(tiny_model, data, method="ppo")
    assert caught.value.data["field"] == "method"


def test_start_training_prepares_pairs_for_dpo(tiny_model, tmp_path, cortex_home):
    jobs = TrainingJobs(CortexHome(cortex_home))
    started = start_training(
        jobs,
        model=str(tiny_model),
        dataset=str(pairs(tmp_path / "p.jsonl")),
        output_name="pref",
        method="dpo",
        submit=False,
    )
    assert started["config"]["method"] == "dpo"
    job_dir = jobs.home.jobs / started["jobId"]
    train = next(job_dir.rglob("train.jsonl"))
    first = json.loads(train.read_text().splitlines()[0])
    assert set(first) == {"prompt", "chosen", "rejected"}
    assert first["chosen"][0]["role"] == "assistant"


def test_sequence_length_covers_the_longer_answer_of_each_pair(tiny_model, tmp_path):
    from cortex_rpc.datasets.training_view import load_renderer

    rows = [
        {"prompt": f"What is {i}+1?", "chosen": f"{i + 1}.", "rejected": "no " * 60}
        for i in range(40)
    ]
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    renderer = load_renderer(str(tiny_model))
    rejected = renderer.view(
        {
            "messages": [
                {"role": "user", "content": "What is 0+1?"},
                {"role": "assistant", "content": "no " * 60},
            ]
        }
    ).token_count
    dpo = propose(tiny_model, data)
    assert dpo["dataset"]["maxTokens"] == rejected > 128
    assert dpo["config"]["maxSeqLength"] >= rejected
    # SFT on the same pairs trains the chosen answers only: the short side sets the length.
    sft = propose(tiny_model, data, method="sft")
    assert sft["dataset"]["maxTokens"] < rejected
    assert sft["config"]["maxSeqLength"] == 128
