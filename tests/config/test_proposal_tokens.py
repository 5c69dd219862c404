"""The proposal counts the model's tokens: what the worker trains sets maxSeqLength and the estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_rpc.config.proposal import propose_for_model
from cortex_rpc.config.smart import MachineProfile
from cortex_rpc.datasets.training_view import load_renderer
from cortex_rpc.errors import CortexError
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.jobs import TrainingJobs
from cortex_rpc.training.service import start_training

MACHINE = MachineProfile("cpu", 16 * 10**9)


def chats(count: int, long_answer: int | None = None) -> list[dict]:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": "answer " * (3 + i % 5)},
            ]
        }
        for i in range(count)
    ]
    if long_answer is not None:
        rows[5]["messages"][1]["content"] = "long " * long_answer
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def propose(model: Path, data: Path, **kwargs) -> dict:
    return propose_for_model(str(model), dataset=str(data), machine=MACHINE, **kwargs).to_wire()


def test_sequence_length_covers_every_example_in_model_tokens(tiny_model, tmp_path):
    data = write(tmp_path / "d.jsonl", chats(40))
    proposal = propose(tiny_model, data)
    renderer = load_renderer(str(tiny_model))
    longest = max(renderer.view(r).token_count for r in chats(40))
    assert proposal["config"]["maxSeqLength"] == 128 >= longest
    notes = "\n".join(proposal["explanations"])
    assert (
        f"maxSeqLength 128: tiny-model default 512; dataset 128 (covers every example; the "
        f"longest is {longest} tokens" in notes
    )
    assert "chars" not in notes
    assert "Loss on every assistant turn (trainOn: all)" in notes
    view = proposal["trainingView"]
    assert view["records"] == 40 and view["cut"] == 0 and view["tokens"]["max"] == longest
    assert proposal["dataset"]["tokensFrom"] == "tokenizer"
    assert "model's chat template" in proposal["estimate"]["basis"]
    assert proposal["estimate"]["trainedTokens"] < proposal["estimate"]["tokens"]


def test_a_few_outliers_are_cut_and_the_loss_is_stated(tiny_model, tmp_path):
    data = write(tmp_path / "d.jsonl", chats(300, long_answer=600))
    proposal = propose(tiny_model, data)
    view = proposal["trainingView"]
    assert proposal["config"]["maxSeqLength"] == 128
    assert view["cut"] == 1 and view["lostTrainedTokens"] > 500
    stated = (
        "dataset 128 (covers 99.6% of examples; 1 example(s) would be cut, losing "
        f"{view['lostTrainedTokens']:,} trained tokens; the longest has"
    )
    line = next(e for e in proposal["explanations"] if e.startswith("maxSeqLength 128:"))
    assert stated in line
    # The memory estimate pads to the longest kept batch, not to the model's context.
    assert proposal["estimate"]["peakMemoryBytes"] > 0


def test_one_outlier_in_a_small_dataset_is_kept_whole(tiny_model, tmp_path):
    data = write(tmp_path / "d.jsonl", chats(30, long_answer=60))
    proposal = propose(tiny_model, data)
    assert proposal["config"]["maxSeqLength"] == 256
    assert proposal["trainingView"]["cut"] == 0


def test_overrides_set_train_on_and_a_cutting_length(tiny_model, tmp_path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "first answer"},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": "second answer " * (1 + i % 3)},
            ]
        }
        for i in range(12)
    ]
    data = write(tmp_path / "d.jsonl", rows)
    every = propose(tiny_model, data)
    last = propose(tiny_model, data, overrides={"trainOn": "last", "maxSeqLength": 16})
    assert last["config"]["trainOn"] == "last"
    notes = "\n".join(last["explanations"])
    assert "Loss on the last assistant turn only (trainOn: last" in notes
    line = next(e for e in last["explanations"] if e.startswith("maxSeqLength 16:"))
    assert "your override 16 (covers" in line and "would be cut, losing" in line
    assert last["trainingView"]["cut"] == 12
    assert (
        last["trainingView"]["trainedTokens"]["total"]
        < every["trainingView"]["trainedTokens"]["total"]
    )


def test_without_a_tokenizer_lengths_are_estimated_from_characters(tiny_model, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tiny_model / name).unlink()
    data = write(tmp_path / "d.jsonl", chats(40))
    proposal = propose(tiny_model, data)
    notes = "\n".join(proposal["explanations"])
    assert "estimated from characters" in notes and "tokenizer is unavailable" in notes
    assert "trainingView" not in proposal
    assert proposal["dataset"]["tokensFrom"] == "characters"
    assert "characters per token" in proposal["estimate"]["basis"]


@pytest.fixture
def no_system_model(tiny_model: Path) -> Path:
    """The tiny model with a template that refuses the system role, as Gemma 2's does."""
    config_path = tiny_model / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
    ) + config["chat_template"]
    config_path.write_text(json.dumps(config))
    return tiny_model


def test_a_refused_system_role_is_an_error_before_any_job(no_system_model, tmp_path, cortex_home):
    rows = chats(6)
    rows[3]["messages"].insert(0, {"role": "system", "content": "Be brief."})
    data = write(tmp_path / "d.jsonl", rows)
    with pytest.raises(CortexError) as error:
        propose(no_system_model, data)
    assert error.value.code == "dataset-invalid"
    assert error.value.data["issue"] == "template-role"
    assert error.value.data["line"] == 3 and error.value.data["errors"] == 1
    assert "line 4" in error.value.message and "System role not supported" in error.value.message
    assert "Merge the system message into the first user message" in error.value.message
    jobs = TrainingJobs(CortexHome(cortex_home))
    with pytest.raises(CortexError) as started:
        start_training(
            jobs, model=str(no_system_model), dataset=str(data), output_name="x", submit=False
        )
    assert started.value.data["issue"] == "template-role"
    assert jobs.list_jobs() == []


def test_template_added_text_is_named_in_the_explanation(tiny_model, tmp_path):
    config_path = tiny_model / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = config["chat_template"].replace(
        "<|assistant|>{{ message['content'] }}",
        "<|assistant|><think></think>{{ message['content'] }}",
    )
    config_path.write_text(json.dumps(config))
    data = write(tmp_path / "d.jsonl", chats(8))
    notes = propose(tiny_model, data)["explanations"]
    assert (
        "The chat template adds '<think></think>' before 8 answer(s); it is not trained "
        "(trainTemplateText: false)" in notes
    )
    trained = propose(tiny_model, data, overrides={"trainTemplateText": True})
    assert any("it is trained (trainTemplateText: true)" in e for e in trained["explanations"])


def test_memory_is_sized_for_the_longest_batch_not_max_seq_length(tiny_model, tmp_path):
    data = write(tmp_path / "d.jsonl", chats(40))
    proposed = propose(tiny_model, data)
    longer = propose(tiny_model, data, overrides={"maxSeqLength": 512})
    assert longer["config"]["maxSeqLength"] == 512
    assert longer["estimate"]["peakMemoryBytes"] == proposed["estimate"]["peakMemoryBytes"]


def test_proposing_again_for_the_same_file_renders_once(tiny_model, tmp_path, monkeypatch):
    """The wizard proposes two or three times and then starts: the file is rendered once."""
    from cortex_rpc.datasets.training_view import TemplateRenderer

    rendered = []
    original = TemplateRenderer.view
    monkeypatch.setattr(
        TemplateRenderer, "view", lambda self, r, o=None: rendered.append(r) or original(self, r, o)
    )
    data = write(tmp_path / "d.jsonl", chats(12))
    first = propose(tiny_model, data)
    assert propose(tiny_model, data)["trainingView"] == first["trainingView"]
    assert len(rendered) == 12
    write(data, chats(13))  # a changed file is rendered again
    assert propose(tiny_model, data)["trainingView"]["records"] == 13
    assert len(rendered) == 25
