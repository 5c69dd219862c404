"""The worker trains the training views: its token counts are the preview's, turn for turn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.datasets.training_view import TemplateRenderer, ViewOptions, load_renderer
from cortex_rpc.errors import CortexError
from cortex_rpc.training import worker
from cortex_rpc.training.contract import WorkerEvent, WorkerOptions
from cortex_rpc.workers import EventWriter

from .conftest import write_spec


def conversation(i: int, *, first_weight: int | None = None) -> dict:
    """A three-answer chat; the first answer has ``first_weight`` when given."""
    first = {"role": "assistant", "content": f"First answer {i}, quite short."}
    if first_weight is not None:
        first["weight"] = first_weight
    return {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": f"Question {i}?"},
            first,
            {"role": "user", "content": "And then?"},
            {"role": "assistant", "content": f"Second answer {i} " + "more " * (i % 3)},
            {"role": "user", "content": "Last one?"},
            {"role": "assistant", "content": f"Third answer {i}."},
        ]
    }


def write_data(directory: Path, train: list[dict], valid: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, records in (("train", train), ("valid", valid)):
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return directory


def train(model: Path, data: Path, job_dir: Path, config: TrainingConfig) -> list[dict]:
    """Run the worker in-process; return its events."""
    write_spec(job_dir, model, data, config, None, WorkerOptions(steps_per_report=1))
    events: list[dict] = []

    class Capture(EventWriter):
        def emit(self, event: WorkerEvent) -> None:
            events.append(event.to_wire())

    worker.run_job(job_dir, Capture(None), worker.StopFlag())
    return events


def trained_tokens(events: list[dict]) -> int:
    return [e for e in events if e["event"] == "progress"][-1]["trainedTokens"]


def preview_tokens(model: Path, records: list[dict], config: TrainingConfig) -> int:
    renderer = load_renderer(str(model))
    return sum(v.trained_count for v in renderer.views(records, ViewOptions.from_config(config)))


CONFIG = TrainingConfig(iterations=2, batch_size=4, num_layers=2, max_seq_length=256)


def test_worker_trained_tokens_equal_the_preview(tiny_model: Path, tmp_path: Path) -> None:
    """One epoch over 8 multi-turn chats (2 batches of 4, none dropped): the worker's final
    trainedTokens is the sum of the views' trained counts, and adapter_config says how."""
    records = [conversation(i) for i in range(8)]
    data = write_data(tmp_path / "data", records, [conversation(9)])
    events = train(tiny_model, data, tmp_path / "job", CONFIG)
    assert trained_tokens(events) == preview_tokens(tiny_model, records, CONFIG) > 0
    written = json.loads((tmp_path / "job" / "final" / "adapter_config.json").read_text())
    assert (written["train_on"], written["train_template_text"]) == ("all", False)
    assert not [e for e in events if e["event"] == "warning"]


def test_train_on_all_trains_every_answer_but_weight_zero_ones(
    tiny_model: Path, tmp_path: Path
) -> None:
    """trainOn all trains both weighted answers (not the weight-0 one); trainOn last, the last
    answer only: the worker's counts are the previews' and differ."""
    records = [conversation(i, first_weight=0) for i in range(8)]
    data = write_data(tmp_path / "data", records, [])
    last = TrainingConfig.from_wire({**CONFIG.to_wire(), "trainOn": "last"})
    counts = {}
    for config in (CONFIG, last):
        events = train(tiny_model, data, tmp_path / f"job-{config.train_on}", config)
        counts[config.train_on] = trained_tokens(events)
        assert counts[config.train_on] == preview_tokens(tiny_model, records, config)
    weighted = [conversation(i, first_weight=1) for i in range(8)]
    assert counts["last"] < counts["all"] < preview_tokens(tiny_model, weighted, CONFIG)


def test_cut_and_untrained_records_are_warned_about(tiny_model: Path, tmp_path: Path) -> None:
    """maxSeqLength cutting answers off, and a record whose only answer has weight 0: one
    warning each, with the counts of the views."""
    untrained = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Skip me", "weight": 0},
        ]
    }
    records = [conversation(i) for i in range(7)] + [untrained]
    data = write_data(tmp_path / "data", records, [])
    config = TrainingConfig.from_wire({**CONFIG.to_wire(), "maxSeqLength": 40})
    views = load_renderer(str(tiny_model)).views(records, ViewOptions.from_config(config))
    cut = [v for v in views if v.kept < v.token_count]
    assert cut and all(v.token_count > 40 for v in cut)
    events = train(tiny_model, data, tmp_path / "job", config)
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    lost = sum(v.lost_to_truncation for v in views)
    assert any(f"{len(cut)} training record(s)" in w and f"{lost} trained" in w for w in warnings)
    untrained_count = sum(1 for v in views if v.trained_count == 0)
    assert any(f"{untrained_count} training record(s) train 0 tokens" in w for w in warnings)
    assert trained_tokens(events) == sum(v.trained_count for v in views)


def test_a_batch_without_trained_tokens_has_no_loss_and_no_gradient(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Every answer weight 0: the steps train nothing, and the adapter stays finite."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    record = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Skip me", "weight": 0},
        ]
    }
    data = write_data(tmp_path / "data", [record] * 4, [])
    events = train(tiny_model, data, tmp_path / "job", CONFIG)
    assert trained_tokens(events) == 0
    assert [e["trainLoss"] for e in events if e["event"] == "progress"] == [0.0, 0.0]
    weights = mx.load(str(tmp_path / "job" / "final" / "adapters.safetensors"))
    assert all(mx.isfinite(w).all().item() for _, w in tree_flatten(weights))


def test_a_record_that_cannot_be_rendered_is_refused_with_its_line(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Without a chat template chat records cannot be trained: the split's file and 1-based
    line are named, with the view's message."""
    config_path = tiny_model / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    del tokenizer_config["chat_template"]
    config_path.write_text(json.dumps(tokenizer_config))
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    renderer = TemplateRenderer(load_tokenizer(tiny_model))
    path = tmp_path / "train.jsonl"
    path.write_text('\n{"messages": [{"role": "user", "content": "Hi"}]}\n')
    with pytest.raises(CortexError) as error:
        worker.load_split(path, renderer, ViewOptions())
    assert error.value.code == "dataset-invalid"
    assert f"{path}, line 2: The model has no chat template" in error.value.message
