"""Hostile datasets and weights: diagnostics or clear errors, bounded memory, no network."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MB = 1024 * 1024

MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from cortex_rpc.datasets import validate_dataset
    result = validate_dataset(sys.argv[1])
    print(json.dumps({"ok": result.ok, "examples": result.examples,
                      "codes": sorted({d.code for d in result.diagnostics}),
                      "peakMB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


def validate_in_child(path: Path) -> dict:
    """Validate in a fresh process so its peak memory is this file's alone."""
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_baseline_memory(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n' * 10)
    assert validate_in_child(path)["peakMB"] < 300


@pytest.mark.parametrize(
    ("name", "make", "codes", "bound_mb"),
    [
        ("single 50 MB line", lambda p: p.write_text(
            '{"prompt": "' + "a" * (50 * MB) + '", "response": "b"}\n'), {"long-example"}, 450),
        ("200,000 tiny lines", lambda p: p.write_text(
            '{"prompt": "a", "response": "b"}\n' * 200_000), {"duplicate"}, 700),
        ("deeply nested JSON", lambda p: p.write_text(
            '{"prompt": ' + "[" * 200_000 + "]" * 200_000 + ', "response": "b"}\n'),
         {"json-syntax"}, 300),
        ("invalid UTF-8", lambda p: p.write_bytes(
            b'{"prompt": "\xff\xfe", "response": "b"}\n' * 1000), {"utf8-invalid"}, 300),
    ],
)
def test_hostile_jsonl_is_diagnosed_within_a_memory_bound(tmp_path, name, make, codes, bound_mb):
    path = tmp_path / "hostile.jsonl"
    make(path)
    result = validate_in_child(path)
    assert codes <= set(result["codes"]), result
    assert result["peakMB"] < bound_mb, f"{name}: peak {result['peakMB']:.0f} MB"


def test_csv_bomb(tmp_path):
    path = tmp_path / "bomb.csv"
    path.write_text('prompt,response\n"' + "a," * (5 * MB) + "\n")
    result = validate_in_child(path)
    assert not result["ok"] and result["peakMB"] < 400, result


def test_trust_remote_code_is_never_enabled():
    root = Path(__file__).resolve().parents[2] / "cortex_rpc"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"trust_remote_code\s*[=:]\s*True", text), path
        assert "--trust-remote-code" not in text, path


SOCKET_AUDIT = textwrap.dedent(
    """
    import os, socket, sys
    log = os.environ["CORTEX_NET_LOG"]
    def hook(event, args):
        if event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple) and address and address[0] not in (
                    "127.0.0.1", "::1", "localhost"):
                with open(log, "a") as handle:
                    handle.write(f"{os.getpid()} connect {address!r}\\n")
        elif event == "socket.getaddrinfo" and args[0] not in (
                None, "localhost", "127.0.0.1", "::1"):
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()} resolve {args[0]!r}\\n")
    sys.addaudithook(hook)
    """
)


async def test_a_whole_session_opens_no_network_connection(tmp_path, tiny_model,
                                                          sample_dataset_path, cortex_home):
    from cortex_client import CortexClient

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SOCKET_AUDIT)
    log = tmp_path / "net.log"
    env = dict(os.environ, PYTHONPATH=f"{hooks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               CORTEX_NET_LOG=str(log), HF_HUB_OFFLINE="1", CORTEX_HOME=str(cortex_home))
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(proxy, None)
    async with CortexClient(env=env) as client:
        await client.inspect_model(str(tiny_model))
        await client.validate_dataset(str(sample_dataset_path))
        await client.analyze_dataset(str(sample_dataset_path), model=str(tiny_model))
        await client.propose_config(str(tiny_model), str(sample_dataset_path))
        queue = client.subscribe("cortex/trainingProgress")
        job = await client.start_training(str(tiny_model), str(sample_dataset_path), "offline",
                                          preset="quick", config={"iterations": 3})
        last = {}
        async for note in client.training_progress(job["jobId"], queue):
            last = note
        assert last["state"] == "completed", last
        await client.generate("offline", "What is Python?", max_tokens=4)
    assert not log.exists() or log.read_text() == "", log.read_text()
    # The hook does see connections: a deliberate one to a public address is recorded.
    probe = ("import socket\ns = socket.socket(); s.settimeout(0.2)\n"
             "try:\n    s.connect(('192.0.2.1', 9))\nexcept OSError:\n    pass\n")
    subprocess.run([sys.executable, "-c", probe], env=env, timeout=30)
    assert "192.0.2.1" in log.read_text()
