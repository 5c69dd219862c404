"""prepare_dataset (and mlx_lm loading it), dataset_stats, analysis, create and sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_rpc.datasets import (
    analyze_dataset,
    create_dataset,
    dataset_stats,
    prepare_dataset,
    write_sample_dataset,
)
from cortex_rpc.errors import CortexError, InvalidParams

SHAPED = {
    "prompt-response": lambda i: {"prompt": f"p{i}", "response": f"r{i}"},
    "alpaca": lambda i: {"instruction": f"i{i}", "input": "x", "output": f"o{i}"},
    "sharegpt": lambda i: {
        "conversations": [{"from": "human", "value": f"h{i}"}, {"from": "gpt", "value": f"g{i}"}]
    },
    "text": lambda i: {"text": f"t{i}"},
}


@pytest.mark.parametrize("shape", sorted(SHAPED))
def test_prepare_converts_every_shape(tmp_path, shape):
    source = tmp_path / "data.jsonl"
    source.write_text("".join(json.dumps(SHAPED[shape](i)) + "\n" for i in range(10)))
    before = source.read_bytes()
    prepared = prepare_dataset(source, tmp_path / "out", seed=3)
    assert source.read_bytes() == before
    wire = prepared.to_wire()
    assert wire["trainExamples"] == 9 and wire["validExamples"] == 1
    train = [json.loads(line) for line in Path(wire["trainPath"]).read_text().splitlines()]
    key = "text" if shape == "text" else "messages"
    assert all(set(record) == {key} for record in train)
    again = prepare_dataset(source, tmp_path / "out2", seed=3)
    assert Path(again.train_path).read_text() == Path(wire["trainPath"]).read_text()


def test_prepare_split_edges_and_errors(tmp_path):
    source = tmp_path / "two.jsonl"
    source.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n')
    prepared = prepare_dataset(source, tmp_path / "o", valid_fraction=0.9)
    assert (prepared.train_examples, prepared.valid_examples) == (1, 1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n')
    with pytest.raises(CortexError) as error:
        prepare_dataset(bad, tmp_path / "o2")
    assert error.value.code == "dataset-invalid"
    assert error.value.data["diagnostics"][0]["code"] == "missing-field"
    with pytest.raises(CortexError) as error:
        dataset_stats(bad)
    assert error.value.code == "dataset-invalid"
    with pytest.raises(CortexError) as error:
        dataset_stats(tmp_path / "none.jsonl")
    assert error.value.code == "dataset-not-found"


def test_prepared_dir_loads_in_mlx_lm(tmp_path, tiny_model, sample_dataset_path):
    from mlx_lm.tuner.datasets import load_local_dataset

    from cortex_rpc.training.worker import load_datasets

    prepare_dataset(sample_dataset_path, tmp_path / "data")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    train, valid = load_datasets(tmp_path / "data", tokenizer)
    assert len(train) + len(valid) == 24
    assert len(train[0][0]) > 0  # token ids of the first chat record
    import types

    raw_train, raw_valid, _ = load_local_dataset(
        tmp_path / "data", tokenizer, types.SimpleNamespace(mask_prompt=False)
    )
    assert len(raw_train) == 22 and len(raw_valid) == 2


def test_stats_and_analysis(sample_dataset_path, tiny_model):
    stats = dataset_stats(sample_dataset_path)
    assert (stats.examples, stats.size_class, stats.task_type) == (24, "tiny", "chat")
    assert 50 < stats.mean_chars <= stats.max_chars
    analysis = analyze_dataset(sample_dataset_path, model_path=tiny_model).to_wire()
    assert analysis["tokens"]["max"] > 0 and analysis["tokens"]["overContext"] == 0
    assert set(analysis["chars"]) == {"min", "mean", "p50", "p95", "max"}


def test_create_and_sample(tmp_path):
    path = tmp_path / "d" / "mine.jsonl"
    result = create_dataset(path, [{"prompt": "Hi", "response": "Hello"}])
    assert result == {"path": str(path), "examples": 1, "warnings": result["warnings"]}
    assert result["warnings"]
    with pytest.raises(CortexError) as error:
        create_dataset(path, [{"prompt": "Hi", "response": "Hello"}])
    assert error.value.code == "file-exists"
    examples = [{"prompt": f"p{i}", "response": "r"} for i in range(5)]
    assert create_dataset(path, examples, overwrite=True)["warnings"] == []
    with pytest.raises(InvalidParams) as error:
        create_dataset(tmp_path / "x.jsonl", [{"prompt": "a", "response": ""}])
    assert error.value.data["field"] == "examples[0].response"
    sample = write_sample_dataset(tmp_path / "sample.jsonl")
    assert sample["examples"] == 24 and sample["warnings"] == []
    assert list(tmp_path.glob(".*tmp")) == []
