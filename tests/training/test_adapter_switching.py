"""Switching adapters on a warm base gives the same model as loading it fresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.jobs import TrainingJobs

pytestmark = pytest.mark.slow


@pytest.fixture
def adapters(tiny_model: Path, chat_data: Path, cortex_home: Path) -> list[Path]:
    jobs = TrainingJobs(CortexHome(cortex_home))
    outputs = []
    for name, kind, rank, seed in (
        ("ada-lora", "lora", 4, 0),
        ("ada-dora", "dora", 8, 0),
        ("ada-lora-2", "lora", 4, 1),
    ):
        config = TrainingConfig(
            iterations=6,
            batch_size=4,
            num_layers=2,
            max_seq_length=128,
            lora_rank=rank,
            fine_tune_type=kind,
            learning_rate=1e-2,
            seed=seed,
        )
        job = jobs.start(tiny_model, chat_data, name, config)
        assert jobs.wait(job["jobId"], 120)["state"] == "completed"
        outputs.append(cortex_home / "mlx_models" / name)
    return outputs


def _logits(model, tokenizer) -> list[float]:
    import mlx.core as mx

    tokens = mx.array([tokenizer.encode("What is Python?")])
    return model(tokens)[0, -1, :16].tolist()


def test_switching_matches_fresh_loads_without_reloading_the_base(tiny_model, adapters):
    from cortex_rpc.generation.worker import LoadedModel
    from cortex_rpc.models.fine_tuned import load_with_adapter

    lora, dora, lora2 = (str(p) for p in adapters)
    base = str(tiny_model)
    loaded = LoadedModel()
    seen = {}
    # lora -> lora2 keeps the layers (same layout); dora and None change them.
    for adapter in (lora, lora2, dora, None, lora, lora2):
        model, tokenizer = loaded.get(base, adapter, None)
        seen.setdefault(adapter, _logits(model, tokenizer))
        assert _logits(model, tokenizer) == pytest.approx(seen[adapter], abs=1e-5)
    assert loaded.loads == 1
    for adapter in (lora, lora2, dora, None):
        fresh = load_with_adapter(Path(base), Path(adapter) if adapter else None)
        assert _logits(*fresh) == pytest.approx(seen[adapter], abs=1e-5)
    assert seen[lora] != pytest.approx(seen[None], abs=1e-6)
    assert seen[lora] != pytest.approx(seen[lora2], abs=1e-6)
