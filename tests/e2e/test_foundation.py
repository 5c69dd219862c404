"""The foundation methods over real stdio: lifecycle, each method, and the error paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from pygls.exceptions import JsonRpcException

from cortex_rpc.lsp.framing import frame

from .conftest import request


async def test_initialize_advertises_cortex_methods(client):
    result = client.initialize_result
    assert result.server_info.name == "cortex-rpc"
    methods = result.capabilities.experimental["cortex"]["methods"]
    for name in (
        "cortex/systemInfo",
        "cortex/inspectModel",
        "cortex/listModels",
        "cortex/proposeConfig",
        "cortex/analyzeDataset",
        "cortex/datasetReport",
    ):
        assert name in methods


async def test_system_info(client, cortex_home):
    info = await request(client, "cortex/systemInfo", {})
    assert info["backend"] in ("metal", "cuda", "cpu")
    assert info["memory"]["totalBytes"] > 0
    assert info["versions"]["cortexRpc"]
    assert info["versions"]["mlx"]
    assert info["cortexHome"] == str(cortex_home)
    if sys.platform.startswith("linux") and os.path.exists(
        "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"
    ):
        assert info["blas"]["name"] == "OpenBLAS"


async def test_inspect_list_and_propose(client, tiny_model, cortex_home):
    inspected = await request(client, "cortex/inspectModel", {"path": str(tiny_model)})
    assert inspected["parameterSource"] == "safetensors"
    assert inspected["category"] == "tiny"

    models = await request(client, "cortex/listModels", {})
    assert models == {"models": []}

    proposal = await request(
        client,
        "cortex/proposeConfig",
        {
            "model": str(tiny_model),
            "preset": "quick",
            "datasetStats": {"examples": 24, "meanChars": 120, "taskType": "chat"},
        },
    )
    assert proposal["config"]["loraRank"] == 8
    assert proposal["dataset"]["sizeClass"] == "tiny"
    assert any("Quick" in e for e in proposal["explanations"])
    assert proposal["estimate"]["seconds"] > 0


async def test_errors(client, tmp_path):
    with pytest.raises(JsonRpcException) as error:
        await request(client, "cortex/doesNotExist", {})
    assert error.value.code == -32601

    with pytest.raises(JsonRpcException) as error:
        await request(client, "cortex/inspectModel", {"path": 42})
    assert error.value.code == -32602
    assert "path" in error.value.message

    with pytest.raises(JsonRpcException) as error:
        await request(client, "cortex/proposeConfig", {"model": "x", "preset": "turbo"})
    assert error.value.code == -32602 and "preset" in error.value.message

    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text("{}")
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(JsonRpcException) as error:
        await request(client, "cortex/inspectModel", {"path": str(tmp_path / "pickled")})
    assert error.value.code == -32000
    assert error.value.data["code"] == "not-safetensors"


def _read_response(stream) -> dict:
    headers = b""
    while not headers.endswith(b"\r\n\r\n"):
        chunk = stream.read(1)
        assert chunk, "server closed the stream"
        headers += chunk
    length = int(headers.split(b"Content-Length:")[1].split(b"\r\n")[0])
    return json.loads(stream.read(length))


def _raw_server():
    return subprocess.Popen(
        [sys.executable, "-m", "cortex_rpc"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def test_request_without_params_is_answered():
    """vscode-jsonrpc omits ``params`` for parameterless calls; pygls alone never answers."""
    server = _raw_server()
    try:
        server.stdin.write(
            frame(
                {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
            )
        )
        server.stdin.write(frame({"jsonrpc": "2.0", "id": 2, "method": "cortex/systemInfo"}))
        server.stdin.write(frame({"jsonrpc": "2.0", "id": 3, "method": "shutdown"}))
        server.stdin.flush()
        replies = {}
        while len(replies) < 3:
            reply = _read_response(server.stdout)
            replies[reply["id"]] = reply
        assert "backend" in replies[2]["result"]
        server.stdin.write(frame({"jsonrpc": "2.0", "method": "exit"}))
        server.stdin.close()
        assert server.wait(timeout=10) == 0
    finally:
        server.kill()


def test_a_cortex_home_that_cannot_exist_is_a_warning_not_a_failed_initialize(cortex_home):
    """``~user/...`` for a user that does not exist: the default home, and a warning."""
    server = _raw_server()
    try:
        options = {"cortexHome": "~no-such-user-for-cortex/home"}
        params = {"capabilities": {}, "initializationOptions": options}
        server.stdin.write(
            frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})
        )
        server.stdin.write(frame({"jsonrpc": "2.0", "id": 2, "method": "cortex/systemInfo"}))
        server.stdin.flush()
        messages: list[dict] = []
        while not any(m.get("id") == 2 for m in messages):
            messages.append(_read_response(server.stdout))
        replies = {m["id"]: m for m in messages if "id" in m}
        assert "capabilities" in replies[1]["result"], replies[1]
        warnings = [
            m["params"]["message"] for m in messages if m.get("method") == "window/logMessage"
        ]
        assert any("cortexHome" in w and "no user" in w for w in warnings), warnings
        assert replies[2]["result"]["cortexHome"] == str(cortex_home)
    finally:
        server.kill()


def test_initialize_is_fast_and_imports_no_mlx():
    server = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "cortex_rpc"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        started = time.perf_counter()
        server.stdin.write(
            frame(
                {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
            )
        )
        server.stdin.flush()
        reply = _read_response(server.stdout)
        elapsed = time.perf_counter() - started
        assert reply["result"]["serverInfo"]["name"] == "cortex-rpc"
        server.stdin.close()
        imports = server.stderr.read().decode()
        assert "| mlx" not in imports and "mlx_lm" not in imports
        assert elapsed < 10  # generous: CI machines are slow; the benchmark reports the figure
    finally:
        server.kill()


def test_version_and_help():
    version = subprocess.run(
        [sys.executable, "-m", "cortex_rpc", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.startswith("cortex-rpc ")
    helped = subprocess.run(
        [sys.executable, "-m", "cortex_rpc", "--help"], capture_output=True, text=True, check=True
    )
    assert "stdio" in helped.stdout
