"""Loss history across resumes, the base-vs-fine-tuned evaluation, and the loss curve."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

from cortex_rpc.paths import CortexHome
from cortex_rpc.training.history import LossHistory, evaluation_summary, loss_curve_svg


def test_truncate_drops_steps_a_resume_replays(tmp_path):
    history = LossHistory(tmp_path / "history.jsonl")
    history.truncate(-1)
    for it in range(1, 6):
        history.append(iteration=it, trainLoss=1.0 / it)
    history.truncate(3)
    history.append(iteration=4, trainLoss=0.2)
    assert [e["iteration"] for e in history.entries()] == [1, 2, 3, 4]


def test_evaluation_uses_iteration_zero_as_the_base():
    entries = [
        {"iteration": 0, "valLoss": 2.5},
        {"iteration": 5, "trainLoss": 1.0},
        {"iteration": 10, "valLoss": 1.1},
    ]
    summary = evaluation_summary(entries)
    assert summary["baseValLoss"] == 2.5 and summary["valLoss"] == 1.1
    assert summary["basePerplexity"] == math.exp(2.5)
    assert evaluation_summary([{"iteration": 3, "trainLoss": 1.0}]) is None


def test_curve_is_valid_svg_with_both_series():
    entries = [{"iteration": 0, "valLoss": 2.0}] + [
        {"iteration": i, "trainLoss": 2.0 / i} for i in range(1, 20)
    ]
    root = ET.fromstring(loss_curve_svg(entries, "demo"))
    assert root.tag.endswith("svg")
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2


def test_finished_job_writes_evaluation_and_curve(tiny_model, chat_data, cortex_home):
    from cortex_rpc.config.training_config import TrainingConfig
    from cortex_rpc.training.jobs import TrainingJobs

    jobs = TrainingJobs(CortexHome(cortex_home))
    config = TrainingConfig(
        iterations=10, batch_size=4, num_layers=2, max_seq_length=128, learning_rate=1e-2
    )
    job = jobs.start(tiny_model, chat_data, "evaluated", config)
    assert jobs.wait(job["jobId"], 120)["state"] == "completed"
    out = cortex_home / "mlx_models" / "evaluated"
    marker = json.loads((out / "fine-tuned.marker").read_text())
    evaluation = marker["evaluation"]
    assert evaluation["baseValLoss"] > evaluation["valLoss"] > 0
    assert evaluation["perplexity"] == math.exp(evaluation["valLoss"])
    ET.fromstring((out / "loss-curve.svg").read_text())
