"""The server over raw stdio survives malformed frames, a vanished editor and hostile names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cortex_rpc.framing import frame

pytestmark = pytest.mark.slow


class RawServer:
    """A cortex-rpc process driven with hand-made bytes."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cortex_rpc"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        self.ids = iter(range(1000, 100000))

    def send_bytes(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, message: dict) -> None:
        self.send_bytes(frame(message))

    def read(self) -> dict:
        headers = b""
        while b"\r\n\r\n" not in headers:
            chunk = self.process.stdout.read(1)
            assert chunk, "server closed the stream"
            headers += chunk
        length = int(headers.split(b"Content-Length:")[1].split(b"\r\n")[0])
        return json.loads(self.process.stdout.read(length))

    def response(self, msg_id) -> dict:
        while True:
            message = self.read()
            if message.get("id") == msg_id and "method" not in message:
                return message

    def request(self, method: str, params: dict | None = None) -> dict:
        msg_id = next(self.ids)
        message = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self.response(msg_id)

    def initialize(self) -> None:
        assert "result" in self.request("initialize", {"capabilities": {}})
        self.send({"jsonrpc": "2.0", "method": "initialized", "params": {}})

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def server(cortex_home):
    raw = RawServer()
    raw.initialize()
    yield raw
    raw.close()


def alive(raw: RawServer) -> None:
    reply = raw.request("cortex/systemInfo", {})
    assert "backend" in reply["result"], reply


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"Content-Length: 7\r\n\r\nnot json", -32700),
        (b"Content-Length: abc\r\n\r\n", -32700),
        (b"Content-Type: application/json\r\n\r\n", -32700),
        (frame([{"jsonrpc": "2.0", "id": 1, "method": "cortex/systemInfo"}]), -32600),
        (frame("just a string"), -32600),
        (frame({"jsonrpc": "2.0", "id": 2}), -32600),
    ],
    ids=["not-json", "bad-length", "no-length", "batch", "not-an-object", "no-method"],
)
def test_malformed_frames_get_an_error_and_the_server_keeps_serving(server, payload, code):
    server.send_bytes(payload)
    error = server.read()
    assert error["error"]["code"] == code, error
    alive(server)


def test_huge_message_is_refused_without_exhausting_memory(server):
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "cortex/validateDataset",
                       "params": {"text": "x" * (64 * 1024 * 1024), "format": "txt"}}).encode()
    server.send_bytes(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    reply = server.response(7)
    assert "result" in reply or "error" in reply
    alive(server)
    rss = psutil.Process(server.process.pid).memory_info().rss
    assert rss < 2 * 1024**3, f"server holds {rss / 1e9:.1f} GB after a 64 MB message"


def test_request_after_shutdown_is_invalid_and_exit_ends_the_process(server):
    assert server.request("shutdown")["result"] is None
    assert server.request("cortex/systemInfo", {})["error"]["code"] == -32600
    server.send({"jsonrpc": "2.0", "method": "exit"})
    assert server.process.wait(10) == 0


def _worker_processes(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "cortex_rpc.training.worker" in cmdline and str(home) in cmdline:
            found.append(process)
    return found


def test_editor_killed_during_training_cancels_cleanly_leaving_no_orphans(
    cortex_home, tiny_model, sample_dataset_path
):
    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(cortex_home)))
    try:
        server.initialize()
        started = server.request("cortex/startTraining", {
            "model": str(tiny_model), "dataset": str(sample_dataset_path),
            "outputName": "orphan-check", "config": {"iterations": 5000, "batchSize": 2},
        })["result"]
        while True:  # wait for the worker to report progress
            message = server.read()
            if message.get("method") == "cortex/trainingProgress" and \
                    message["params"].get("event") == "progress":
                break
        assert _worker_processes(cortex_home)
        tic = time.monotonic()
        server.process.stdin.close()  # the editor vanished (no shutdown: exit code 1, as LSP says)
        server.process.wait(15)
        elapsed = time.monotonic() - tic
        print(f"EOF -> exit in {elapsed:.2f} s")
        assert elapsed < 5, elapsed
    finally:
        server.close()
    deadline = time.monotonic() + 10
    while _worker_processes(cortex_home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _worker_processes(cortex_home), "a training worker outlived its server"
    status = json.loads((cortex_home / "jobs" / started["jobId"] / "status.json").read_text())
    assert status["state"] == "cancelled", status
    assert not (cortex_home / "mlx_models" / "orphan-check").exists()
    # A new server sees it as resumable.
    again = RawServer(env=dict(os.environ, CORTEX_HOME=str(cortex_home)))
    try:
        again.initialize()
        jobs = again.request("cortex/listJobs", {})["result"]["jobs"]
        assert jobs[0]["jobId"] == started["jobId"] and jobs[0]["resumable"]
    finally:
        again.close()


def _tree_snapshot(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


@pytest.mark.parametrize(
    "name",
    ["..", "../escape", "/abs/path", "a/b", "a\\b", "nul\x00name", "x" * 300, ".hidden", "CON",
     "", "-dash", "name with space"],
    ids=["dotdot", "parent", "absolute", "slash", "backslash", "nul", "long", "hidden",
         "reserved", "empty", "dash", "space"],
)
def test_hostile_output_names_are_invalid_params_and_write_nothing(
    server, cortex_home, tiny_model, sample_dataset_path, tmp_path, name
):
    outside = tmp_path.parent
    before = _tree_snapshot(outside)
    reply = server.request("cortex/startTraining", {
        "model": str(tiny_model), "dataset": str(sample_dataset_path), "outputName": name,
    })
    assert reply["error"]["code"] == -32602, reply
    created = _tree_snapshot(outside) - before
    assert not [p for p in created if not p.startswith(str(cortex_home))], created
    assert not (cortex_home / "jobs").exists() or not any((cortex_home / "jobs").iterdir())


def test_paths_the_os_refuses_are_application_errors(server, tmp_path):
    long_path = "/tmp/" + "z" * 5000 + ".jsonl"
    reply = server.request("cortex/analyzeDataset", {"path": long_path})
    assert reply["error"]["code"] == -32000, reply
    assert reply["error"]["data"]["code"] in ("file-error", "dataset-not-found")
    assert len(reply["error"]["message"]) < 600
    directory = tmp_path / "a-directory.jsonl"
    directory.mkdir()
    reply = server.request("cortex/createDataset", {
        "path": str(directory), "examples": [{"prompt": "a", "response": "b"}],
        "overwrite": True})
    assert reply["error"]["code"] in (-32000, -32602), reply
    alive(server)
