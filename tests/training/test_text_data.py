"""Plain-text datasets train too: there is no prompt to mask, so masking is turned off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.datasets import prepare_dataset
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.jobs import TrainingJobs

pytestmark = pytest.mark.slow


def test_text_records_train_to_completion(tiny_model, cortex_home, tmp_path):
    source = tmp_path / "notes.jsonl"
    source.write_text(
        "".join(
            json.dumps({"text": f"Note {i}: cortex-rpc trains adapters."}) + "\n" for i in range(8)
        )
    )
    jobs = TrainingJobs(CortexHome(cortex_home))
    config = TrainingConfig(iterations=4, batch_size=2, num_layers=2, max_seq_length=64)
    job = jobs.start(
        tiny_model,
        None,
        "text-model",
        config,
        prepare=lambda d: prepare_dataset(source, d).to_wire(),
    )
    final = jobs.wait(job["jobId"], 120)
    assert final["state"] == "completed", final["message"]
    # The saved adapter config says what was done: no prompt masking (mlx_lm's default for
    # text), not the chat default.
    adapter_cfg = json.loads((Path(final["outputPath"]) / "adapter_config.json").read_text())
    assert adapter_cfg["mask_prompt"] is False
    assert adapter_cfg["batch_size"] == 2
