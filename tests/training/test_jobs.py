"""TrainingJobs end to end with real worker processes on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from cortex_rpc.config.training_config import TrainingConfig
from cortex_rpc.errors import CortexError
from cortex_rpc.paths import CortexHome
from cortex_rpc.training.contract import WorkerOptions
from cortex_rpc.training.jobs import TrainingJobs

pytestmark = pytest.mark.slow


class Events:
    """Collects on_event payloads and lets a test wait for one."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.cond = threading.Condition()

    def __call__(self, payload: dict) -> None:
        with self.cond:
            self.items.append(payload)
            self.cond.notify_all()

    def of(self, job_id: str, event: str | None = None) -> list[dict]:
        with self.cond:
            return [e for e in self.items if e["jobId"] == job_id and event in (None, e["event"])]

    def wait_for(self, predicate, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for item in self.items:
                    if predicate(item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("event not seen")
                self.cond.wait(left)


def _config(iterations: int, **changes) -> TrainingConfig:
    base = {"iterations": iterations, "batch_size": 4, "num_layers": 2, "max_seq_length": 256}
    return TrainingConfig(**{**base, **changes})


def test_two_jobs_queue_then_complete_with_output(
    tiny_model: Path, chat_data: Path, cortex_home: Path, file_digests
):
    """A second start queues; both complete; events are monotonic; the output is complete."""
    before = file_digests(tiny_model)
    events = Events()
    jobs = TrainingJobs(CortexHome(cortex_home), events)
    first = jobs.start(
        tiny_model,
        chat_data,
        "tiny-a",
        _config(20),
        {"examples": 20},
        WorkerOptions(steps_per_report=2, steps_per_checkpoint=10),
    )
    second = jobs.start(tiny_model, chat_data, "tiny-b", _config(6), {"examples": 20})
    assert first["state"] == "running"
    assert second["state"] == "queued"
    with pytest.raises(CortexError) as exc:
        jobs.start(tiny_model, chat_data, "tiny-a", _config(6))
    assert exc.value.code == "model-exists"

    a = jobs.wait(first["jobId"], timeout=120)
    b = jobs.wait(second["jobId"], timeout=120)
    assert a["state"] == "completed" and b["state"] == "completed"
    assert a["iteration"] == 20 and a["outputPath"] == first["outputPath"]

    progress = events.of(first["jobId"], "progress")
    iterations = [e["iteration"] for e in progress]
    assert iterations == sorted(iterations) and iterations[-1] == 20
    assert all(e["state"] == "running" and e["totalIterations"] == 20 for e in progress)
    assert {"trainLoss", "epoch", "tokensPerSecond", "etaSeconds", "peakMemoryBytes"} <= set(
        progress[-1]
    )
    done = events.of(first["jobId"], "done")[0]
    assert done["state"] == "completed" and done["adapterBytes"] > 0
    # The second job only started once the first had finished.
    b_running = events.items.index(events.of(second["jobId"], "running")[0])
    assert b_running > events.items.index(done)

    out = Path(a["outputPath"])
    assert out.parent == cortex_home / "mlx_models"
    for name in (
        "adapters.safetensors",
        "adapter_config.json",
        "fine-tuned.marker",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert (out / name).is_file(), name
    marker = json.loads((out / "fine-tuned.marker").read_text())
    assert marker["baseModel"]["path"] == str(tiny_model.resolve())
    assert marker["dataset"] == {"examples": 20}
    assert marker["finalLosses"]["trainLoss"] == pytest.approx(a["trainLoss"])
    assert file_digests(tiny_model) == before
    assert not list((cortex_home / "mlx_models").glob(".*"))  # no temp dirs left behind


def test_cancel_then_resume_reaches_total(tiny_model: Path, chat_data: Path, cortex_home: Path):
    """SIGTERM checkpoints and stops within 5 s; resume continues to the planned total."""
    events = Events()
    jobs = TrainingJobs(CortexHome(cortex_home), events)
    started = jobs.start(
        tiny_model,
        chat_data,
        "tiny-cancel",
        _config(400, grad_checkpoint=True),
        {},
        WorkerOptions(steps_per_report=5, steps_per_checkpoint=1000),
    )
    job_id = started["jobId"]
    events.wait_for(lambda e: e["jobId"] == job_id and e.get("iteration", 0) >= 10)
    tic = time.monotonic()
    jobs.cancel(job_id)
    job = jobs.wait(job_id, timeout=20)
    assert time.monotonic() - tic < 5
    assert job["state"] == "cancelled" and job["resumable"]
    stopped_at = json.loads(
        (cortex_home / "jobs" / job_id / "checkpoints" / "latest.json").read_text()
    )["iteration"]
    assert 10 <= stopped_at < 400

    jobs.resume(job_id)
    job = jobs.wait(job_id, timeout=120)
    assert job["state"] == "completed" and job["iteration"] == 400
    resumed_progress = [
        e["iteration"] for e in events.of(job_id, "progress") if e["iteration"] > stopped_at
    ]
    assert resumed_progress and resumed_progress[-1] == 400
    assert (Path(job["outputPath"]) / "adapters.safetensors").exists()


def test_killed_worker_fails_and_keeps_a_loadable_checkpoint(
    tiny_model: Path, chat_data: Path, cortex_home: Path
):
    """kill -9 of the worker: the job is failed (server unaffected), the checkpoint loads."""
    from mlx_lm.utils import load

    events = Events()
    jobs = TrainingJobs(CortexHome(cortex_home), events)
    job_id = jobs.start(
        tiny_model,
        chat_data,
        "tiny-killed",
        _config(2000),
        {},
        WorkerOptions(steps_per_report=10, steps_per_checkpoint=10),
    )["jobId"]
    events.wait_for(lambda e: e["jobId"] == job_id and e["event"] == "checkpoint")
    pid = json.loads((cortex_home / "jobs" / job_id / "status.json").read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    job = jobs.wait(job_id, timeout=30)
    assert job["state"] == "failed" and "signal 9" in job["message"] and job["resumable"]
    assert not (cortex_home / "mlx_models" / "tiny-killed").exists()
    ckpt_root = cortex_home / "jobs" / job_id / "checkpoints"
    ckpt = ckpt_root / json.loads((ckpt_root / "latest.json").read_text())["path"]
    model, _ = load(str(tiny_model), adapter_path=str(ckpt))
    assert model is not None


def test_restarted_manager_reports_vanished_worker_interrupted(
    tiny_model: Path, chat_data: Path, cortex_home: Path
):
    """A job whose status says running but whose worker is gone shows as interrupted."""
    jobs = TrainingJobs(CortexHome(cortex_home))
    job_dir = cortex_home / "jobs" / "20240101-000000-abcdef"
    job_dir.mkdir(parents=True)
    (job_dir / "spec.json").write_text(
        json.dumps(
            {
                "model": str(tiny_model),
                "dataDir": str(chat_data),
                "config": _config(4).to_wire(),
                "outputName": "tiny-old",
            }
        )
    )
    (job_dir / "status.json").write_text(
        json.dumps(
            {
                "jobId": job_dir.name,
                "state": "running",
                "outputName": "tiny-old",
                "pid": 2**22 + 12345,
                "pidCreateTime": 1.0,
                "iteration": 2,
                "totalIterations": 4,
                "createdAt": "2024-01-01T00:00:00Z",
            }
        )
    )
    restarted = TrainingJobs(CortexHome(cortex_home))
    [job] = restarted.list_jobs()
    assert job["state"] == "interrupted" and job["resumable"]
    assert set(job) >= {
        "jobId",
        "state",
        "outputName",
        "outputPath",
        "model",
        "iteration",
        "totalIterations",
        "trainLoss",
        "valLoss",
        "createdAt",
        "updatedAt",
        "message",
        "resumable",
    }
    assert jobs.list_jobs()[0]["state"] == "interrupted"


def test_server_side_modules_do_not_import_mlx():
    """The server imports jobs/output/generate; none of them may pull in mlx."""
    import subprocess
    import sys

    code = (
        "import sys, cortex_rpc.training.jobs, cortex_rpc.models.fine_tuned, "
        "cortex_rpc.generation.runner, cortex_rpc.training.distributed; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'transformers')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_existing_model_name_is_refused(tiny_model: Path, chat_data: Path, cortex_home: Path):
    (cortex_home / "mlx_models" / "taken").mkdir(parents=True)
    with pytest.raises(CortexError) as exc:
        TrainingJobs(CortexHome(cortex_home)).start(tiny_model, chat_data, "taken", _config(2))
    assert exc.value.code == "model-exists"
