"""An unusable CORTEX_HOME, a full disk, cancellation of slow work, and eight clients at once."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from cortex_client import CortexClient, CortexRpcError

from .test_stdio_faults import RawServer

pytestmark = pytest.mark.slow


def test_cortex_home_that_is_a_file_is_a_clear_error_before_training(
    tmp_path, tiny_model, sample_dataset_path
):
    home = tmp_path / "home-is-a-file"
    home.write_text("not a folder")
    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(home)))
    try:
        server.initialize()
        reply = server.request(
            "cortex/startTraining",
            {"model": str(tiny_model), "dataset": str(sample_dataset_path), "outputName": "x"},
        )
        assert reply["error"]["code"] == -32000, reply
        assert str(home) in reply["error"]["message"]
        assert home.read_text() == "not a folder"
    finally:
        server.close()


def _tmpfs(mount: Path, options: str):
    """Mount a tmpfs at ``mount`` for the test (skip where mounting needs privileges we lack)."""
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): " + done.stderr.decode()[-200:])
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 400 KB tmpfs: enough for a job's data, not for its checkpoints and output."""
    yield from _tmpfs(tmp_path / "tiny-disk", "size=400k")


@pytest.fixture
def read_only_home(tmp_path):
    """A read-only tmpfs: chmod alone would not stop root, which the tests may run as."""
    yield from _tmpfs(tmp_path / "read-only", "ro,size=64k")


def test_read_only_cortex_home_is_a_clear_error_before_training(
    read_only_home, tiny_model, sample_dataset_path
):
    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(read_only_home)))
    try:
        server.initialize()
        reply = server.request(
            "cortex/startTraining",
            {"model": str(tiny_model), "dataset": str(sample_dataset_path), "outputName": "ro"},
        )
        assert reply["error"]["code"] == -32000, reply
        assert reply["error"]["data"]["code"] == "file-error", reply
        assert "read-only" in reply["error"]["message"].lower(), reply
        # Reading still works: the listings are empty, not errors.
        assert server.request("cortex/listJobs", {})["result"]["jobs"] == []
        assert server.request("cortex/listModels", {})["result"]["models"] is not None
    finally:
        server.close()
    assert list(read_only_home.iterdir()) == []


def test_full_disk_fails_the_job_and_leaves_no_partial_model(
    tiny_disk, tiny_model, sample_dataset_path
):
    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(tiny_disk)))
    try:
        server.initialize()
        reply = server.request(
            "cortex/startTraining",
            {
                "model": str(tiny_model),
                "dataset": str(sample_dataset_path),
                "outputName": "big",
                "config": {"iterations": 20, "maxSeqLength": 128},
                "options": {"stepsPerCheckpoint": 2},
            },
        )
        if "error" in reply:  # detected before training: fine, as long as it is clear
            assert reply["error"]["data"]["code"] in ("file-error",), reply
            return
        job_id = reply["result"]["jobId"]
        while True:
            message = server.read()
            params = message.get("params") or {}
            if (
                message.get("method") == "cortex/trainingProgress"
                and params.get("jobId") == job_id
                and params["state"] in ("completed", "failed")
            ):
                break
        assert params["state"] == "failed", params
        assert "disk holding CORTEX_HOME is full" in params["message"], params
        models = tiny_disk / "mlx_models"
        assert not models.exists() or list(models.iterdir()) == []
    finally:
        server.close()


def test_cancel_request_stops_a_slow_validation(tmp_path, cortex_home):
    big = tmp_path / "big.jsonl"
    big.write_text('{"prompt": "a", "response": "b"}\n' * 400_000)
    server = RawServer()
    try:
        server.initialize()
        server.send(
            {
                "jsonrpc": "2.0",
                "id": 77,
                "method": "cortex/validateDataset",
                "params": {"path": str(big)},
            }
        )
        server.send({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 77}})
        reply = server.response(77)
        assert "error" in reply and reply["error"]["code"] in (-32800, -32000), reply
        alive = server.request("cortex/systemInfo", {})
        assert "backend" in alive["result"]
    finally:
        server.close()


async def test_eight_clients_share_one_home_while_one_trains(
    cortex_home, tiny_model, sample_dataset_path
):
    env = dict(os.environ, CORTEX_HOME=str(cortex_home))

    async def trainer() -> dict:
        async with CortexClient(env=env) as client:
            queue = client.subscribe("cortex/trainingProgress")
            job = await client.start_training(
                str(tiny_model),
                str(sample_dataset_path),
                "shared-home",
                preset="quick",
                config={"iterations": 30},
            )
            return [n async for n in client.training_progress(job["jobId"], queue)][-1]

    async def worker(number: int) -> None:
        async with CortexClient(env=env) as client:
            for round_ in range(4):
                report = await client.validate_dataset(str(sample_dataset_path))
                assert report["ok"] and report["examples"] == 24
                proposal = await client.propose_config(str(tiny_model), str(sample_dataset_path))
                assert proposal["config"]["iterations"] > 0
                jobs = await client.list_jobs()
                assert all(j["state"] for j in jobs)
                models = await client.list_models()
                assert all("name" in m for m in models)
                with pytest.raises(CortexRpcError):
                    await client.inspect_model(f"/nonexistent/{uuid.uuid4()}")
                created = await client.create_dataset(
                    str(cortex_home / f"client-{number}-{round_}.jsonl"),
                    [{"prompt": f"q{number}", "response": f"a{round_}"}] * 5,
                )
                assert created["examples"] == 5

    results = await asyncio.gather(trainer(), *(worker(n) for n in range(7)))
    assert results[0]["state"] == "completed", results[0]
    status_files = list((cortex_home / "jobs").glob("*/status.json"))
    assert len(status_files) == 1
    assert json.loads(status_files[0].read_text())["state"] == "completed"
    marker = cortex_home / "mlx_models" / "shared-home" / "fine-tuned.marker"
    assert json.loads(marker.read_text())["name"] == "shared-home"
    assert [p.name for p in (cortex_home / "mlx_models").iterdir()] == ["shared-home"]
    assert Path(cortex_home / "client-6-3.jsonl").read_text().count("\n") == 5
