"""Two ranks on 127.0.0.1 over mlx's ring backend, launched through mlx.launch."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.contract import WorkerOptions
from cortex_rpc.training.distributed import launch_command
from cortex_rpc.training.jobs import TrainingJobs

pytestmark = pytest.mark.slow


def test_launch_command_names_backend_hosts_and_worker(tmp_path: Path):
    argv = launch_command("/py/bin/python", tmp_path, {"hosts": ["127.0.0.1"], "ranksPerHost": 2})
    assert argv[argv.index("--backend") + 1] == "ring"
    assert argv[argv.index("--hosts") + 1] == "127.0.0.1"
    assert argv[argv.index("-n") + 1] == "2"
    assert argv[-4:] == ["--", "-m", "cortex_rpc.training.worker", str(tmp_path)]


def test_two_local_ranks_train_to_completion(tiny_model: Path, chat_data: Path, cortex_home: Path):
    events: list[dict] = []
    jobs = TrainingJobs(CortexHome(cortex_home), events.append)
    config = TrainingConfig(iterations=6, batch_size=4, num_layers=2, max_seq_length=256)
    job_id = jobs.start(
        tiny_model,
        chat_data,
        "tiny-dist",
        config,
        {},
        WorkerOptions(steps_per_report=2, distributed={"hosts": ["127.0.0.1"], "ranksPerHost": 2}),
    )["jobId"]
    job = jobs.wait(job_id, timeout=120)
    log = (cortex_home / "jobs" / job_id / "worker.log").read_text()
    assert job["state"] == "completed", job["message"] + log[-2000:]
    started = [e for e in events if e["event"] == "started"]
    assert len(started) == 1  # rank 0 only
    assert started[0]["ranks"] == 2
    progress = [e["iteration"] for e in events if e["event"] == "progress"]
    assert progress == [2, 4, 6]
    assert (Path(job["outputPath"]) / "adapters.safetensors").exists()
