"""Continual learning: a new version starts from the old adapter and rehearses the old data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_rpc.errors import InvalidParams
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.continual import mix_replay
from cortex_rpc.training.evaluate import evaluate_model
from cortex_rpc.training.jobs import TrainingJobs
from cortex_rpc.training.service import start_training

pytestmark = pytest.mark.slow

CAPITALS = [
    ("France", "Paris"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Peru", "Lima"),
    ("Kenya", "Nairobi"),
    ("Chile", "Santiago"),
    ("Greece", "Athens"),
    ("Norway", "Oslo"),
    ("Cuba", "Havana"),
    ("Iran", "Tehran"),
]


def write_new_dataset(path: Path) -> Path:
    """A second task (capitals), unlike the bundled sample (programming questions)."""
    rows = [
        {"prompt": f"What is the capital of {c}?", "response": f"The capital is {k}."}
        for c, k in CAPITALS * 2
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train(jobs: TrainingJobs, events: list, **kwargs) -> dict:
    started = start_training(
        jobs,
        preset="quick",
        config={"iterations": 6, "batchSize": 4, **kwargs.pop("config", {})},
        **kwargs,
    )
    assert jobs.wait(started["jobId"], 120)["state"] == "completed"
    done = next(e for e in events if e.get("event") == "done" and e["jobId"] == started["jobId"])
    return {**started, "done": done}


@pytest.fixture
def setup(tiny_model, sample_dataset_path, cortex_home, tmp_path):
    events: list[dict] = []
    jobs = TrainingJobs(CortexHome(cortex_home), on_event=events.append)
    v1 = train(
        jobs,
        events,
        model=str(tiny_model),
        dataset=str(sample_dataset_path),
        output_name="v1",
        config={"loraRank": 4, "loraAlpha": 8},
    )
    return jobs, events, v1, write_new_dataset(tmp_path / "capitals.jsonl")


def test_continue_starts_from_the_old_adapter_and_replays_old_data(setup, tiny_model, cortex_home):
    jobs, events, v1, new_data = setup
    # What v1 scores on the new task's held-out split is where v2 must start.
    v1_on_new = evaluate_model("v1", new_data)["loss"]
    v2 = train(
        jobs,
        events,
        model="v1",
        dataset=str(new_data),
        output_name="v2",
        continue_from="v1",
        replay_fraction=0.3,
    )
    assert v2["config"]["loraRank"] == 4 and v2["config"]["loraAlpha"] == 8
    replay = v2["continuedFrom"]["replay"]
    assert v2["continuedFrom"]["name"] == "v1"
    assert replay["examples"] == round(21 * 0.3 / 0.7) and "warning" not in replay
    assert v2["done"]["evaluation"]["baseValLoss"] == pytest.approx(v1_on_new, rel=1e-3)

    marker = json.loads((cortex_home / "mlx_models/v2/fine-tuned.marker").read_text())
    assert marker["continuedFrom"]["name"] == "v1"
    assert marker["continuedFrom"]["replay"]["examples"] == replay["examples"]
    assert marker["dataset"]["replay"]["source"].endswith("train.jsonl")
    mixed = Path(marker["dataset"]["trainPath"]).read_text().splitlines()
    assert len(mixed) == marker["dataset"]["trainExamples"] + replay["examples"]
    assert sum("capital" in line for line in mixed) == marker["dataset"]["trainExamples"]
    old_cfg = json.loads((cortex_home / "mlx_models/v1/adapter_config.json").read_text())
    new_cfg = json.loads((cortex_home / "mlx_models/v2/adapter_config.json").read_text())
    assert new_cfg["lora_parameters"] == old_cfg["lora_parameters"]
    assert new_cfg["num_layers"] == old_cfg["num_layers"]


def test_layout_conflicts_and_wrong_base_are_refused(setup, tmp_path):
    jobs, _, _, new_data = setup
    with pytest.raises(InvalidParams) as error:
        start_training(
            jobs,
            model="v1",
            dataset=str(new_data),
            output_name="v3",
            continue_from="v1",
            config={"loraRank": 16},
        )
    assert error.value.data["field"] == "config.loraRank"
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    with pytest.raises(InvalidParams):
        start_training(
            jobs, model=str(other), dataset=str(new_data), output_name="v3", continue_from="v1"
        )


def test_missing_old_data_trains_without_replay(tmp_path):
    train_file = tmp_path / "train.jsonl"
    train_file.write_text('{"text": "a"}\n' * 7)
    info = mix_replay(train_file, {"dataset": {"trainPath": str(tmp_path / "gone.jsonl")}}, 0.3)
    assert info["examples"] == 0 and "without replay" in info["warning"]
    assert len(train_file.read_text().splitlines()) == 7
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps({"text": f"old {i}"}) + "\n" for i in range(10)))
    info = mix_replay(train_file, {"dataset": {"trainPath": str(old)}}, 0.3)
    assert info["examples"] == 3 and len(train_file.read_text().splitlines()) == 10
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    info = mix_replay(chat, {"dataset": {"trainPath": str(old)}}, 0.5)
    assert info["examples"] == 0 and "cannot mix" in info["warning"]
