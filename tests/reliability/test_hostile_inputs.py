"""Hostile datasets and weights: diagnostics or clear errors, bounded memory, no network."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MB = 1024 * 1024

# The child's own peak: VmHWM is per address space. (ru_maxrss is not: Linux carries the
# parent's peak across fork/vfork + exec, so it would report pytest's memory.)
PEAK = textwrap.dedent(
    """
    def peak_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    """
)

MEASURE = PEAK + textwrap.dedent(
    """
    import json, sys
    from cortex_rpc.datasets import validate_dataset
    result = validate_dataset(sys.argv[1])
    print(json.dumps({"ok": result.ok, "examples": result.examples,
                      "codes": sorted({d.code for d in result.diagnostics}),
                      "peakMB": peak_mb()}))
    """
)


def json_from_child(script: str, path: Path, timeout: float = 300) -> dict:
    """Run ``script`` on ``path`` in a fresh process (its peak memory is this file's alone)."""
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def validate_in_child(path: Path) -> dict:
    return json_from_child(MEASURE, path)


def test_baseline_memory(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n' * 10)
    peak = validate_in_child(path)["peakMB"]
    print(f"\nbaseline: peak {peak:.0f} MB")
    assert peak < 100


def _long_line(megabytes: int):
    def make(path: Path) -> None:
        with path.open("w") as handle:
            handle.write('{"prompt": "')
            for _ in range(megabytes):
                handle.write("a" * MB)
            handle.write('", "response": "b"}\n')

    return make


# CORTEX_RELIABILITY_FULL=1 adds the full sizes (a 500 MB line, a million lines):
# about a minute and 3 GB, so not part of the default run.
FULL = os.environ.get("CORTEX_RELIABILITY_FULL") == "1"
full_only = pytest.mark.skipif(not FULL, reason="set CORTEX_RELIABILITY_FULL=1")


@pytest.mark.parametrize(
    ("name", "make", "codes", "bound_mb"),
    [
        ("single 50 MB line", _long_line(50), {"long-example"}, 400),
        pytest.param(
            "single 500 MB line", _long_line(500), {"long-example"}, 3500, marks=full_only
        ),
        (
            "200,000 tiny lines",
            lambda p: p.write_text('{"prompt": "a", "response": "b"}\n' * 200_000),
            {"duplicate"},
            500,
        ),
        pytest.param(
            "1,000,000 tiny lines",
            lambda p: p.write_text('{"prompt": "a", "response": "b"}\n' * 1_000_000),
            {"duplicate"},
            2500,
            marks=full_only,
        ),
        (
            "deeply nested JSON",
            lambda p: p.write_text(
                '{"prompt": ' + "[" * 200_000 + "]" * 200_000 + ', "response": "b"}\n'
            ),
            {"json-syntax"},
            100,
        ),
        (
            "invalid UTF-8",
            lambda p: p.write_bytes(b'{"prompt": "\xff\xfe", "response": "b"}\n' * 1000),
            {"utf8-invalid"},
            100,
        ),
    ],
)
def test_hostile_jsonl_is_diagnosed_within_a_memory_bound(tmp_path, name, make, codes, bound_mb):
    path = tmp_path / "hostile.jsonl"
    make(path)
    result = validate_in_child(path)
    print(f"\n{name}: peak {result['peakMB']:.0f} MB (bound {bound_mb} MB)")
    assert codes <= set(result["codes"]), result
    assert result["peakMB"] < bound_mb, f"{name}: peak {result['peakMB']:.0f} MB"


def test_csv_bomb(tmp_path):
    path = tmp_path / "bomb.csv"
    path.write_text('prompt,response\n"' + "a," * (5 * MB) + "\n")
    result = validate_in_child(path)
    print(f"\nCSV bomb: peak {result['peakMB']:.0f} MB (bound 200 MB)")
    assert not result["ok"] and result["peakMB"] < 200, result


def test_trust_remote_code_is_never_enabled():
    root = Path(__file__).resolve().parents[2] / "cortex_rpc"
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"trust_remote_code\s*[=:]\s*True", text), path
        assert "--trust-remote-code" not in text, path


REMOTE_CODE = """
import pathlib
pathlib.Path(__file__).with_name("REMOTE-CODE-RAN").write_text("imported")
class EvilConfig: pass
class EvilModel: pass
class EvilTokenizer: pass
"""


def test_code_shipped_with_a_model_is_never_run(tiny_model, sample_dataset_path, cortex_home):
    from .test_stdio_faults import RawServer

    (tiny_model / "evil.py").write_text(REMOTE_CODE)
    for name, auto_map in (
        (
            "config.json",
            {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"},
        ),
        ("tokenizer_config.json", {"AutoTokenizer": ["evil.EvilTokenizer", None]}),
    ):
        config = json.loads((tiny_model / name).read_text())
        (tiny_model / name).write_text(json.dumps({**config, "auto_map": auto_map}))
    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(cortex_home), HF_HUB_OFFLINE="1"))
    try:
        server.initialize()
        assert "result" in server.request("cortex/inspectModel", {"path": str(tiny_model)})
        assert "result" in server.request(
            "cortex/analyzeDataset", {"path": str(sample_dataset_path), "model": str(tiny_model)}
        )
        # Generation loads the model and its tokenizer the way transformers would.
        reply = server.request(
            "cortex/generate", {"model": str(tiny_model), "prompt": "Hi", "maxTokens": 2}
        )
        assert "result" in reply or reply["error"]["code"] == -32000, reply
        started = server.request(
            "cortex/startTraining",
            {
                "model": str(tiny_model),
                "dataset": str(sample_dataset_path),
                "outputName": "safe",
                "config": {"iterations": 2, "batchSize": 2, "maxSeqLength": 64},
            },
        )["result"]
        while True:
            message = server.read(timeout=120)
            params = message.get("params") or {}
            if (
                message.get("method") == "cortex/trainingProgress"
                and params.get("jobId") == started["jobId"]
                and params.get("state") in ("completed", "failed")
            ):
                break
        assert params["state"] == "completed", params
    finally:
        server.close()
    assert not (tiny_model / "REMOTE-CODE-RAN").exists(), "code shipped with the model ran"


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


async def test_a_whole_session_opens_no_network_connection(
    tmp_path, tiny_model, sample_dataset_path, cortex_home
):
    from cortex_client import CortexClient

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SOCKET_AUDIT)
    log = tmp_path / "net.log"
    env = dict(
        os.environ,
        PYTHONPATH=f"{hooks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        CORTEX_NET_LOG=str(log),
        HF_HUB_OFFLINE="1",
        CORTEX_HOME=str(cortex_home),
    )
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(proxy, None)
    async with CortexClient(env=env) as client:
        await client.inspect_model(str(tiny_model))
        await client.validate_dataset(str(sample_dataset_path))
        await client.analyze_dataset(str(sample_dataset_path), model=str(tiny_model))
        await client.propose_config(str(tiny_model), str(sample_dataset_path))
        queue = client.subscribe("cortex/trainingProgress")
        job = await client.start_training(
            str(tiny_model),
            str(sample_dataset_path),
            "offline",
            preset="quick",
            config={"iterations": 3},
        )
        last = {}
        async for note in client.training_progress(job["jobId"], queue):
            last = note
        assert last["state"] == "completed", last
        await client.generate("offline", "What is Python?", max_tokens=4)
    assert not log.exists() or log.read_text() == "", log.read_text()
    # The hook does see connections: a deliberate one to a public address is recorded.
    probe = (
        "import socket\ns = socket.socket(); s.settimeout(0.2)\n"
        "try:\n    s.connect(('192.0.2.1', 9))\nexcept OSError:\n    pass\n"
    )
    subprocess.run([sys.executable, "-c", probe], env=env, timeout=30)
    assert "192.0.2.1" in log.read_text()


# -- weights --------------------------------------------------------------------------------


def _safetensors(path: Path, header: bytes, data: bytes = b"", length: int | None = None) -> None:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)


LYING_HEADERS = {
    "offsets past the end": (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 4),
    "overlapping ranges": (
        b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}',
        b"\0" * 12,
    ),
    "negative shape": (b'{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', b"\0" * 8),
    "absurd shape": (
        b'{"a":{"dtype":"F32","shape":[1000000000,1000000000],"data_offsets":[0,8]}}',
        b"\0" * 8,
    ),
    "non-UTF-8 JSON": (b'\xff\xfe{"a": 1}', b""),
    "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, b""),
}


def test_lying_weights_are_clear_errors_over_rpc_and_start_no_job(
    tmp_path, tiny_model, sample_dataset_path, cortex_home
):
    from .test_stdio_faults import RawServer

    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(cortex_home)))
    try:
        server.initialize()
        for why, (header, data) in LYING_HEADERS.items():
            _safetensors(tiny_model / "model.safetensors", header, data)
            for method, params in (
                ("cortex/inspectModel", {"path": str(tiny_model)}),
                (
                    "cortex/startTraining",
                    {
                        "model": str(tiny_model),
                        "dataset": str(sample_dataset_path),
                        "outputName": "liar",
                    },
                ),
            ):
                reply = server.request(method, params)
                assert reply["error"]["code"] == -32000, (why, reply)
                assert reply["error"]["data"]["code"] == "invalid-safetensors", (why, reply)
                assert (
                    "model.safetensors is not a valid safetensors file" in reply["error"]["message"]
                ), (why, reply)
        # A pickle next to nothing else is refused, never unpickled.
        (tiny_model / "model.safetensors").unlink()
        (tiny_model / "pytorch_model.bin").write_bytes(b"\x80\x04cos\nsystem\n.")
        reply = server.request("cortex/inspectModel", {"path": str(tiny_model)})
        assert reply["error"]["data"]["code"] == "not-safetensors", reply
        assert "backend" in server.request("cortex/systemInfo", {})["result"]
    finally:
        server.close()
    assert not (cortex_home / "jobs").exists() or not any((cortex_home / "jobs").iterdir())


HEADER_MEMORY = PEAK + textwrap.dedent(
    """
    import json, sys
    from cortex_rpc.errors import CortexError
    from cortex_rpc.models.safetensors_header import read_safetensors_header
    try:
        header = read_safetensors_header(sys.argv[1])
        outcome = f"ok {len(header.tensors)}"
    except CortexError as error:
        outcome = error.message
    print(json.dumps({"outcome": outcome, "peakMB": peak_mb()}))
    """
)


def _header_in_child(path: Path) -> dict:
    return json_from_child(HEADER_MEMORY, path, timeout=120)


def test_a_100_mb_header_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge-header.safetensors"
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", 100 * MB))
        handle.write(b"{" + b" " * (100 * MB - 2) + b"}")
    result = _header_in_child(path)
    print(f"\n100 MB header: refused, peak {result['peakMB']:.0f} MB")
    assert "limit" in result["outcome"], result
    assert result["peakMB"] < 100, result  # the baseline interpreter; nothing was read


def test_the_largest_allowed_header_stays_within_a_memory_bound(tmp_path):
    # 16 MiB of header, as many empty tensors as fit: the most a header may make us hold.
    entries, size = [], 2
    while size < 16 * MB - 200:
        entry = f'"t{len(entries)}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
        entries.append(entry)
        size += len(entry) + 1
    path = tmp_path / "max-header.safetensors"
    _safetensors(path, ("{" + ",".join(entries) + "}").encode())
    result = _header_in_child(path)
    assert result["outcome"] == f"ok {len(entries)}", result
    print(f"\n{len(entries)} tensors in a 16 MiB header: peak {result['peakMB']:.0f} MB")
    assert result["peakMB"] < 600, result
