"""Deleting and fusing fine-tuned models: base models are never touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.errors import CortexError, InvalidParams
from cortex_rpc.models.manage import delete_model, fuse_model
from cortex_rpc.models.registry import list_models
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.jobs import TrainingJobs

pytestmark = pytest.mark.slow


@pytest.fixture
def fine_tuned(tiny_model: Path, chat_data: Path, cortex_home: Path) -> Path:
    jobs = TrainingJobs(CortexHome(cortex_home))
    config = TrainingConfig(iterations=4, batch_size=4, num_layers=2, max_seq_length=128)
    job = jobs.start(tiny_model, chat_data, "tiny-ft", config)
    assert jobs.wait(job["jobId"], 120)["state"] == "completed"
    return cortex_home / "mlx_models" / "tiny-ft"


def test_delete_removes_only_the_fine_tuned_model(fine_tuned, tiny_model, file_digests):
    before = file_digests(tiny_model)
    result = delete_model("tiny-ft")
    assert result["freedBytes"] > 0
    assert not fine_tuned.exists()
    assert [p.name for p in fine_tuned.parent.iterdir()] == []
    assert file_digests(tiny_model) == before
    assert all(m.name != "tiny-ft" for m in list_models())


def test_delete_refuses_base_models_paths_and_unknown_names(cortex_home, tiny_model):
    base_copy = cortex_home / "mlx_models" / "base"
    base_copy.mkdir(parents=True)
    (base_copy / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CortexError) as error:
        delete_model("base")
    assert error.value.code == "not-fine-tuned"
    assert (base_copy / "config.json").exists()
    with pytest.raises(CortexError) as error:
        delete_model("missing")
    assert error.value.code == "model-not-found"
    with pytest.raises(InvalidParams):
        delete_model("../base")


def test_fuse_writes_a_standalone_model(fine_tuned, tiny_model, file_digests, cortex_home):
    before = file_digests(tiny_model)
    result = fuse_model("tiny-ft", "tiny-fused")
    fused = Path(result["path"])
    assert fused == cortex_home / "mlx_models" / "tiny-fused"
    assert list(fused.glob("*.safetensors")) and (fused / "config.json").exists()
    assert not (fused / "fine-tuned.marker").exists()
    assert file_digests(tiny_model) == before
    with pytest.raises(CortexError) as error:
        fuse_model("tiny-ft", "tiny-fused")
    assert error.value.code == "model-exists"
    entry = next(m for m in list_models() if m.name == "tiny-fused")
    assert entry.kind == "base"


def test_list_models_shows_the_fine_tune_with_its_base_and_adapter_size(fine_tuned, tiny_model):
    from cortex_rpc.models.inspect import inspect_model

    entry = next(m for m in list_models() if m.name == "tiny-ft")
    assert entry.kind == "fine-tuned"
    assert entry.base_model == str(tiny_model.resolve())
    assert entry.adapter_bytes > 0
    inspection = inspect_model(fine_tuned).to_wire()
    assert inspection["fineTuned"] and inspection["parameters"] > 0
