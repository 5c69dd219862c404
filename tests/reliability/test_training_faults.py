"""Faults during training over real stdio: killed worker, killed server, a dataset edited."""

from __future__ import annotations

import hashlib
import json
import os
import signal

import psutil
import pytest

from .test_stdio_faults import RawServer

pytestmark = pytest.mark.slow


def _start(server: RawServer, model, dataset, name: str, iterations: int) -> str:
    reply = server.request("cortex/startTraining", {
        "model": str(model), "dataset": str(dataset), "outputName": name,
        "config": {"iterations": iterations, "batchSize": 2, "maxSeqLength": 128},
        "options": {"stepsPerCheckpoint": 5},
    })
    return reply["result"]["jobId"]


def _until(server: RawServer, job_id: str, predicate) -> dict:
    while True:
        message = server.read()
        if message.get("method") == "cortex/trainingProgress" and \
                message["params"]["jobId"] == job_id and predicate(message["params"]):
            return message["params"]


def _worker_pid(home, job_id: str) -> int:
    return json.loads((home / "jobs" / job_id / "status.json").read_text())["pid"]


def test_worker_killed_then_resumed(cortex_home, tiny_model, sample_dataset_path):
    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(cortex_home)))
    try:
        server.initialize()
        job_id = _start(server, tiny_model, sample_dataset_path, "survivor", 2000)
        _until(server, job_id, lambda p: p.get("event") == "checkpoint")
        os.kill(_worker_pid(cortex_home, job_id), signal.SIGKILL)
        failed = _until(server, job_id, lambda p: p["state"] in ("failed", "interrupted"))
        assert "killed by signal 9" in failed["message"]
        assert "backend" in server.request("cortex/systemInfo", {})["result"]
        models = server.request("cortex/listModels", {})["result"]["models"]
        assert not any(m["name"] == "survivor" for m in models)
        models_dir = cortex_home / "mlx_models"
        leftovers = list(models_dir.iterdir()) if models_dir.exists() else []
        assert leftovers == [], "a half-written model (or its temp folder) was left behind"

        # Shorten the run so the resume finishes quickly, then resume from the checkpoint.
        spec_path = cortex_home / "jobs" / job_id / "spec.json"
        spec = json.loads(spec_path.read_text())
        checkpoint = json.loads(
            (cortex_home / "jobs" / job_id / "checkpoints" / "latest.json").read_text())
        assert checkpoint
        spec["config"]["iterations"] = failed["iteration"] + 10
        spec_path.write_text(json.dumps(spec))
        assert server.request("cortex/resumeTraining", {"jobId": job_id})["result"]
        done = _until(server, job_id, lambda p: p["state"] in ("completed", "failed"))
        assert done["state"] == "completed", done
        assert (cortex_home / "mlx_models" / "survivor" / "fine-tuned.marker").exists()
    finally:
        server.close()


def test_server_killed_then_a_new_server_sees_an_interrupted_job(
    cortex_home, tiny_model, sample_dataset_path
):
    env = dict(os.environ, CORTEX_HOME=str(cortex_home))
    server = RawServer(env=env)
    try:
        server.initialize()
        job_id = _start(server, tiny_model, sample_dataset_path, "orphaned", 5000)
        _until(server, job_id, lambda p: p.get("event") == "progress")
        worker = psutil.Process(_worker_pid(cortex_home, job_id))
        server.process.kill()  # kill -9 of the server: the worker is on its own now
        server.process.wait(10)
        worker.kill()  # the machine rebooted, say
        worker.wait(10)
    finally:
        server.close()
    again = RawServer(env=env)
    try:
        again.initialize()
        jobs = again.request("cortex/listJobs", {})["result"]["jobs"]
        job = next(j for j in jobs if j["jobId"] == job_id)
        assert job["state"] == "interrupted" and job["resumable"]
    finally:
        again.close()


def test_editing_the_dataset_during_training_does_not_change_the_job(
    cortex_home, tiny_model, sample_dataset_path, tmp_path
):
    dataset = tmp_path / "mine.jsonl"
    original = sample_dataset_path.read_bytes()
    dataset.write_bytes(original)
    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(cortex_home)))
    try:
        server.initialize()
        job_id = _start(server, tiny_model, dataset, "steady", 40)
        _until(server, job_id, lambda p: p.get("event") == "progress")
        dataset.write_text('{"prompt": "changed", "response": "while training"}\n')
        done = _until(server, job_id, lambda p: p["state"] in ("completed", "failed"))
        assert done["state"] == "completed", done
    finally:
        server.close()
    marker = json.loads((cortex_home / "mlx_models/steady/fine-tuned.marker").read_text())
    assert marker["dataset"]["sha256"] == hashlib.sha256(original).hexdigest()
    prepared = cortex_home / "jobs" / job_id / "data" / "train.jsonl"
    assert "changed" not in prepared.read_text()
