"""Faults during training over real stdio: killed worker, killed server, a dataset edited."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal

import psutil
import pytest

from .test_stdio_faults import RawServer

pytestmark = pytest.mark.slow


def _start(server: RawServer, model, dataset, name: str, iterations: int) -> str:
    reply = server.request(
        "cortex/startTraining",
        {
            "model": str(model),
            "dataset": str(dataset),
            "outputName": name,
            "config": {"iterations": iterations, "batchSize": 2, "maxSeqLength": 128},
            "options": {"stepsPerCheckpoint": 5},
        },
    )
    return reply["result"]["jobId"]


def _until(server: RawServer, job_id: str, predicate) -> dict:
    while True:
        message = server.read()
        if (
            message.get("method") == "cortex/trainingProgress"
            and message["params"]["jobId"] == job_id
            and predicate(message["params"])
        ):
            return message["params"]


def _worker_pid(home, job_id: str) -> int:
    return json.loads((home / "jobs" / job_id / "status.json").read_text())["pid"]


def test_worker_killed_then_resumed(cortex_home, tiny_model, sample_dataset_path):
    import mlx.core as mx

    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(cortex_home)))
    try:
        server.initialize()
        job_id = _start(server, tiny_model, sample_dataset_path, "survivor", 2000)
        _until(server, job_id, lambda p: p.get("event") == "checkpoint")
        # Then a random further step: before, during or after the next checkpoint's write.
        extra = random.Random().randint(0, 6)
        for _ in range(extra):
            _until(server, job_id, lambda p: p.get("event") in ("progress", "checkpoint"))
        print(f"\nkilled the worker {extra} reports after the first checkpoint")
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
        root = cortex_home / "jobs" / job_id / "checkpoints"
        checkpoint = root / json.loads((root / "latest.json").read_text())["path"]
        for tensors in ("adapters.safetensors", "optimizer.safetensors"):
            assert mx.load(str(checkpoint / tensors)), tensors  # complete and loadable
        assert json.loads((checkpoint / "state.json").read_text())["iteration"] > 0
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


@pytest.mark.parametrize("how", ["server-kill-9", "detach-then-eof"])
def test_a_job_that_finishes_after_its_server_is_gone_is_completed_not_interrupted(
    cortex_home, tiny_model, sample_dataset_path, how
):
    # The worker runs in its own session and outlives a server killed with SIGKILL, or one
    # told to let it finish (cortex/detach). It saves the model; the next server must not call
    # that job interrupted and offer to resume it.
    env = dict(os.environ, CORTEX_HOME=str(cortex_home))
    server = RawServer(env=env)
    try:
        server.initialize()
        job_id = _start(server, tiny_model, sample_dataset_path, "outlived", 300)
        _until(server, job_id, lambda p: p.get("event") == "progress")
        worker = psutil.Process(_worker_pid(cortex_home, job_id))
        if how == "server-kill-9":
            server.process.kill()
            server.process.wait(10)
        else:  # the detached server stays until its jobs end, then exits
            server.send({"jsonrpc": "2.0", "method": "cortex/detach", "params": {}})
            server.process.stdin.close()  # the editor is gone: both pipes close
            server.process.stdout.close()
            server.process.wait(120)
    finally:
        server.close()
    worker.wait(120)  # it trains on without anyone listening
    again = RawServer(env=env)
    try:
        again.initialize()
        job = next(
            j
            for j in again.request("cortex/listJobs", {})["result"]["jobs"]
            if j["jobId"] == job_id
        )
        assert job["state"] == "completed" and not job["resumable"], job
        assert job["outputPath"] == str(cortex_home / "mlx_models" / "outlived"), job
        models = again.request("cortex/listModels", {})["result"]["models"]
        assert any(m["name"] == "outlived" for m in models)
        reply = again.request("cortex/resumeTraining", {"jobId": job_id})
        assert reply["error"]["data"]["code"] == "job-not-resumable", reply
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


def test_wait_and_listings_never_see_a_finishing_job_half_recorded(
    cortex_home, tiny_model, sample_dataset_path
):
    """Between the worker's exit and the 'done' notification the job is still the manager's:
    wait() does not return early and no reader calls it interrupted meanwhile."""
    import threading
    import time

    from cortex_rpc.paths import CortexHome
    from cortex_rpc.training.jobs import TrainingJobs
    from cortex_rpc.training.service import start_training

    jobs = TrainingJobs(CortexHome(cortex_home))
    events: list[dict] = []
    seen: list[str] = []

    def slow_client(event: dict) -> None:
        if event.get("event") == "done":
            time.sleep(0.5)  # a slow client: the window a reader could fall into
        events.append(event)

    jobs.on_event = slow_client
    started = start_training(
        jobs,
        model=str(tiny_model),
        dataset=str(sample_dataset_path),
        output_name="finishing",
        preset="quick",
        config={"iterations": 8, "batchSize": 4},
    )
    stop = threading.Event()

    def reader() -> None:  # listJobs from another request thread, as fast as it can
        while not stop.is_set():
            seen.extend(j["state"] for j in jobs.list_jobs())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        job = jobs.wait(started["jobId"], 120)
    finally:
        stop.set()
        thread.join(10)
    assert job["state"] == "completed", job
    assert any(e.get("event") == "done" for e in events), "wait() returned before 'done'"
    assert "interrupted" not in seen
