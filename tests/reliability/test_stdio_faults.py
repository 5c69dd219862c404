"""The server over raw stdio survives malformed frames, a vanished editor and hostile names."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cortex_rpc.lsp.framing import frame

pytestmark = pytest.mark.slow


class RawServer:
    """A cortex-rpc process driven with hand-made bytes."""

    def __init__(self, env: dict[str, str] | None = None, command: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "cortex_rpc"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        self.ids = iter(range(1000, 100000))
        self.buffer = bytearray()

    def send_bytes(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, message: dict) -> None:
        self.send_bytes(frame(message))

    def read(self, timeout: float | None = None) -> dict:
        """The next message; TimeoutError if none is complete within ``timeout`` seconds.

        Reads into its own buffer, so a select() on the pipe never misses messages that an
        io.BufferedReader would already have taken off it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                length = int(self.buffer[:end].split(b"Content-Length:")[1].split(b"\r\n")[0])
                if len(self.buffer) >= end + 4 + length:
                    body = bytes(self.buffer[end + 4 : end + 4 + length])
                    del self.buffer[: end + 4 + length]
                    return json.loads(body)
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    raise TimeoutError(f"no message from the server within {timeout} s")
            chunk = os.read(fd, 1 << 16)
            assert chunk, "server closed the stream"
            self.buffer += chunk

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


@pytest.mark.timeout(60)
def test_truncated_body_is_an_error_and_the_reader_resynchronises(server):
    # The body claims 60 bytes but stops after 34: the reader takes the start of the next
    # frame as the rest of it. That frame is lost (its bytes are the garbage), but the reader
    # finds the following Content-Length header and serves that request.
    truncated = b'Content-Length: 60\r\n\r\n{"jsonrpc": "2.0", "id": 5, "meth'
    lost = frame({"jsonrpc": "2.0", "id": 6, "method": "cortex/systemInfo", "params": {}})
    served = frame({"jsonrpc": "2.0", "id": 8, "method": "cortex/systemInfo", "params": {}})
    server.send_bytes(truncated + lost + served)
    errors = []
    while True:
        message = server.read()
        if message.get("id") == 8:
            break
        errors.append(message)
    assert "backend" in message["result"]
    assert errors and all(e["error"]["code"] in (-32700, -32600) for e in errors), errors
    alive(server)


def test_header_without_body_then_eof_ends_the_server(server):
    server.send_bytes(b"Content-Length: 100\r\n\r\n")
    tic = time.monotonic()
    server.process.stdin.close()
    server.process.wait(10)
    assert time.monotonic() - tic < 5


def test_huge_message_is_refused_without_exhausting_memory(server):
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "cortex/validateDataset",
            "params": {"text": "x" * (64 * 1024 * 1024), "format": "txt"},
        }
    ).encode()
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


@pytest.mark.parametrize("how", ["stdin-eof", "sigterm", "sighup"])
def test_editor_killed_during_training_cancels_cleanly_leaving_no_orphans(
    cortex_home, tiny_model, sample_dataset_path, how
):
    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(cortex_home)))
    try:
        server.initialize()
        started = server.request(
            "cortex/startTraining",
            {
                "model": str(tiny_model),
                "dataset": str(sample_dataset_path),
                "outputName": "orphan-check",
                "config": {"iterations": 5000, "batchSize": 2},
            },
        )["result"]
        while True:  # wait for the worker to report progress
            message = server.read()
            if (
                message.get("method") == "cortex/trainingProgress"
                and message["params"].get("event") == "progress"
            ):
                break
        assert _worker_processes(cortex_home)
        tic = time.monotonic()
        if how == "stdin-eof":  # the editor vanished (no shutdown: exit code 1, as LSP says)
            server.process.stdin.close()
        else:  # the editor (or the terminal) stopped the server with a signal
            server.process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGHUP)
        server.process.wait(15)
        elapsed = time.monotonic() - tic
        print(f"{how} -> exit in {elapsed:.2f} s")
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
    [
        "..",
        "../escape",
        "/abs/path",
        "a/b",
        "a\\b",
        "nul\x00name",
        "x" * 300,
        ".hidden",
        "CON",
        "con.txt",
        "",
        ".",
        "-dash",
        "name with space",
        "~root",
        "a\nb",
    ],
    ids=[
        "dotdot",
        "parent",
        "absolute",
        "slash",
        "backslash",
        "nul",
        "long",
        "hidden",
        "reserved",
        "reserved-ext",
        "empty",
        "dot",
        "dash",
        "space",
        "tilde",
        "newline",
    ],
)
def test_hostile_output_names_are_invalid_params_and_write_nothing(
    server, cortex_home, tiny_model, sample_dataset_path, tmp_path, name
):
    outside = tmp_path.parent
    before = _tree_snapshot(outside)
    reply = server.request(
        "cortex/startTraining",
        {
            "model": str(tiny_model),
            "dataset": str(sample_dataset_path),
            "outputName": name,
        },
    )
    assert reply["error"]["code"] == -32602, reply
    created = _tree_snapshot(outside) - before
    assert not [p for p in created if not p.startswith(str(cortex_home))], created
    assert not (cortex_home / "jobs").exists() or not any((cortex_home / "jobs").iterdir())


def test_delete_fuse_resume_and_cancel_never_reach_outside_cortex_home(
    server, cortex_home, tmp_path
):
    # Bait outside CORTEX_HOME that looks exactly like a fine-tuned model and a job.
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "fine-tuned.marker").write_text("{}")
    (victim / "status.json").write_text(json.dumps({"state": "interrupted", "jobId": "victim"}))
    (cortex_home / "mlx_models").mkdir()
    (cortex_home / "jobs").mkdir()
    before = {p: p.read_bytes() for p in victim.iterdir()}
    for hostile in ("../../victim", str(victim), "..", "victim/../../..", "\x00victim"):
        for method, params in (
            ("cortex/deleteModel", {"name": hostile}),
            ("cortex/fuseModel", {"name": hostile, "outputName": "fused"}),
            ("cortex/fuseModel", {"name": "anything", "outputName": hostile}),
            ("cortex/resumeTraining", {"jobId": hostile}),
            ("cortex/cancelTraining", {"jobId": hostile}),
        ):
            reply = server.request(method, params)
            assert "error" in reply, (method, hostile, reply)
            assert reply["error"]["code"] in (-32602, -32000), reply
            assert reply["error"]["data"]["code"] in (
                "invalid-params",
                "job-not-found",
                "model-not-found",
            ), reply
    assert {p: p.read_bytes() for p in victim.iterdir()} == before
    assert not any((cortex_home / "mlx_models").iterdir())
    alive(server)


def test_the_name_of_an_existing_model_is_refused_and_the_model_untouched(
    server, cortex_home, tiny_model, sample_dataset_path
):
    taken = cortex_home / "mlx_models" / "taken"
    taken.mkdir(parents=True)
    (taken / "adapters.safetensors").write_bytes(b"precious")
    reply = server.request(
        "cortex/startTraining",
        {
            "model": str(tiny_model),
            "dataset": str(sample_dataset_path),
            "outputName": "taken",
        },
    )
    # Documented in docs/protocol.md as an application error, so clients can offer a new name.
    assert reply["error"]["code"] == -32000, reply
    assert reply["error"]["data"]["code"] == "model-exists", reply
    assert [p.name for p in taken.iterdir()] == ["adapters.safetensors"]
    assert (taken / "adapters.safetensors").read_bytes() == b"precious"
    assert not (cortex_home / "jobs").exists() or not any((cortex_home / "jobs").iterdir())


def test_paths_the_os_refuses_are_application_errors(server, tmp_path):
    long_path = "/tmp/" + "z" * 5000 + ".jsonl"
    reply = server.request("cortex/analyzeDataset", {"path": long_path})
    assert reply["error"]["code"] == -32000, reply
    assert reply["error"]["data"]["code"] in ("file-error", "dataset-not-found")
    assert len(reply["error"]["message"]) < 600
    directory = tmp_path / "a-directory.jsonl"
    directory.mkdir()
    reply = server.request(
        "cortex/createDataset",
        {"path": str(directory), "examples": [{"prompt": "a", "response": "b"}], "overwrite": True},
    )
    assert reply["error"]["code"] in (-32000, -32602), reply
    # ~user of a user that does not exist: pathlib raises RuntimeError (was -32603).
    nobody = "~no-such-user-here/data.jsonl"
    for method, params in (
        ("cortex/validateDataset", {"path": nobody}),
        ("cortex/analyzeDataset", {"path": nobody}),
        ("cortex/prepareDataset", {"path": nobody, "outDir": str(tmp_path / "out")}),
        ("cortex/createDataset", {"path": nobody, "examples": [{"prompt": "a", "response": "b"}]}),
        ("cortex/sampleDataset", {"path": nobody}),
        ("cortex/inspectModel", {"path": "~no-such-user-here/model"}),
        ("cortex/proposeConfig", {"model": "~no-such-user-here/model"}),
    ):
        reply = server.request(method, params)
        assert reply["error"]["code"] == -32000, (method, reply)
        assert reply["error"]["data"]["code"] in ("file-error", "model-not-found"), reply
    alive(server)
