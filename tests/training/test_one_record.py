"""A one-record dataset trains (validation skipped, said in a warning) instead of crashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.datasets.prepare import prepare_dataset
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.jobs import TrainingJobs

from .test_jobs import Events

pytestmark = pytest.mark.slow


def test_one_record_trains_without_validation(tiny_model: Path, cortex_home: Path, tmp_path: Path):
    source = tmp_path / "one.jsonl"
    source.write_text('{"prompt": "What is Python?", "response": "A programming language."}\n')
    prepared = prepare_dataset(source, tmp_path / "data")
    assert (prepared.train_examples, prepared.valid_examples) == (1, 0)
    events = Events()
    jobs = TrainingJobs(CortexHome(cortex_home), events)
    config = TrainingConfig(iterations=2, batch_size=4, num_layers=2, max_seq_length=128)
    job = jobs.start(tiny_model, tmp_path / "data", "tiny-one", config)
    status = jobs.wait(job["jobId"], timeout=120)
    assert status["state"] == "completed", status
    warnings = [e.get("message", "") for e in events.of(job["jobId"], "warning")]
    assert any("validation loss is skipped" in w for w in warnings), warnings
