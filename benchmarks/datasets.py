"""Benchmark dataset validation and live diagnostics.

1. Full validation of a generated 100,000-line (~30 MB) JSONL file of realistic chat records
   with 1 % defects, with ``validate_dataset``, against a baseline of ``json.loads`` +
   ``jsonschema`` (a prebuilt Draft 2020-12 validator, ``is_valid``) per line, in the same
   run; also ``json.loads`` + fastjsonschema per line, to show what the compiled validator
   alone buys. Target: >= 3x the jsonschema baseline.
2. Time from a one-line ``textDocument/didChange`` to the ``publishDiagnostics`` for that
   version, p50 and p95 over 200 edits, through the real stdio server
   (``sys.executable -m cortex_rpc``). Edits are spaced past the debounce, as a person types
   one change and pauses. Target: p95 under 50 ms.
"""

from __future__ import annotations

import os
import sys

# Keep this folder off sys.path (its scripts share names with stdlib modules).
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from cortex_rpc.datasets import validate_dataset  # noqa: E402
from cortex_rpc.lsp.framing import frame  # noqa: E402
from cortex_rpc.schemas import load_schema  # noqa: E402

WORDS = [
    "model",
    "data",
    "train",
    "learn",
    "python",
    "function",
    "value",
    "list",
    "error",
    "memory",
    "token",
    "layer",
    "adapter",
    "batch",
    "epoch",
    "loss",
    "rate",
    "context",
    "answer",
    "question",
    "example",
    "record",
    "format",
]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def good_record(rng: random.Random, i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You are a concise assistant for machine learning."},
            {"role": "user", "content": f"Question {i}: {sentence(rng, 8)}"},
            {"role": "assistant", "content": sentence(rng, 20)},
        ]
    }


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the documentation",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


def tool_record(rng: random.Random, i: int) -> dict:
    """The tool loop: user -> assistant(tool_calls) -> tool -> assistant, with tools."""
    call_id = f"call_{i}"
    arguments = json.dumps({"query": sentence(rng, 3)})
    return {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": f"Question {i}: {sentence(rng, 8)}"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "search_docs", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": sentence(rng, 12)},
            {"role": "assistant", "content": sentence(rng, 20)},
        ],
    }


def defect(rng: random.Random, i: int) -> str:
    record = good_record(rng, i)
    kind = i % 5
    if kind == 0:
        return json.dumps(record)[:-1]  # truncated: json-syntax
    if kind == 1:
        del record["messages"][2]  # no-assistant
    elif kind == 2:
        record["messages"][2]["content"] = " "  # empty-field
    elif kind == 3:
        record["messages"][1]["role"] = "bot"  # unknown-role
    else:
        del record["messages"][1]["content"]  # missing-field
    return json.dumps(record)


def generate(path: Path, lines: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w") as out:
        for i in range(lines):
            if i % 100 == 99:
                line = defect(rng, i)
            elif i % 5 == 0:  # 20 % of the lines call tools
                line = json.dumps(tool_record(rng, i))
            else:
                line = json.dumps(good_record(rng, i))
            out.write(line + "\n")


def baseline(path: Path, validator_kind: str) -> float:
    if validator_kind == "jsonschema":
        from jsonschema import Draft202012Validator

        check = Draft202012Validator(load_schema("dataset/chat.schema.json")).is_valid
    else:
        import fastjsonschema

        compiled = fastjsonschema.compile(load_schema("dataset/chat.schema.json"))

        def check(record: object) -> bool:
            try:
                compiled(record)
                return True
            except fastjsonschema.JsonSchemaException:
                return False

    start = time.perf_counter()
    invalid = 0
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                invalid += not check(json.loads(line))
            except ValueError:
                invalid += 1
    return time.perf_counter() - start


class StdioClient:
    """A minimal LSP client over the server's stdin/stdout."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cortex_rpc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.lock = threading.Condition()
        self.messages: list[tuple[float, dict]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.proc.stdout
        while True:
            length = None
            while True:
                header = stream.readline()
                if not header:
                    return
                if header in (b"\r\n", b"\n"):
                    break
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            body = json.loads(stream.read(length))
            with self.lock:
                self.messages.append((time.perf_counter(), body))
                self.lock.notify_all()

    def send(self, message: dict) -> None:
        self.proc.stdin.write(frame({"jsonrpc": "2.0", **message}))
        self.proc.stdin.flush()

    def wait(self, predicate, timeout: float = 120) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for index, (at, message) in enumerate(self.messages):
                    if predicate(message):
                        del self.messages[: index + 1]
                        return at, message
                if not self.lock.wait(deadline - time.monotonic()):
                    raise TimeoutError("no matching message")

    def close(self) -> None:
        self.send({"id": 99, "method": "shutdown"})
        self.wait(lambda m: m.get("id") == 99)
        self.send({"method": "exit"})
        self.proc.wait(10)


def live_edits(path: Path, edits: int, pause: float) -> dict:
    client = StdioClient()
    client.send(
        {
            "id": 1,
            "method": "initialize",
            "params": {"processId": None, "rootUri": None, "capabilities": {}},
        }
    )
    client.wait(lambda m: m.get("id") == 1)
    client.send({"method": "initialized", "params": {}})
    uri = path.as_uri()
    text = path.read_text()
    start = time.perf_counter()
    client.send(
        {
            "method": "textDocument/didOpen",
            "params": {
                "textDocument": {"uri": uri, "languageId": "jsonl", "version": 1, "text": text}
            },
        }
    )
    client.wait(lambda m: m.get("method") == "textDocument/publishDiagnostics")
    opened = time.perf_counter() - start
    rng = random.Random(1)
    line_count = text.count("\n")
    latencies = []
    for version in range(2, edits + 2):
        line = rng.randrange(line_count)
        record = json.dumps(good_record(rng, line)) if version % 4 else defect(rng, line)
        time.sleep(pause)
        sent = time.perf_counter()
        client.send(
            {
                "method": "textDocument/didChange",
                "params": {
                    "textDocument": {"uri": uri, "version": version},
                    "contentChanges": [
                        {
                            "range": {
                                "start": {"line": line, "character": 0},
                                "end": {"line": line, "character": 10**6},
                            },
                            "text": record,
                        }
                    ],
                },
            }
        )
        at, message = client.wait(
            lambda m, v=version: (
                m.get("method") == "textDocument/publishDiagnostics"
                and m["params"].get("version") == v
            )
        )
        latencies.append((at - sent) * 1000)
        diagnostics = len(message["params"]["diagnostics"])
    client.close()
    latencies.sort()
    return {
        "openSeconds": round(opened, 2),
        "edits": edits,
        "p50Ms": round(statistics.median(latencies), 1),
        "p95Ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
        "maxMs": round(latencies[-1], 1),
        "diagnosticsPublished": diagnostics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--edits", type=int, default=200)
    parser.add_argument(
        "--pause",
        type=float,
        default=0.2,
        help="seconds between edits (default: past the 150 ms debounce)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.jsonl"
        generate(path, args.lines)
        megabytes = path.stat().st_size / 1e6
        print(f"dataset: {args.lines:,} lines, {megabytes:.1f} MB, 1% defects")
        validate_dataset(text='{"prompt": "warm", "response": "up"}\n')  # import + compile
        start = time.perf_counter()
        result = validate_dataset(path)
        ours = time.perf_counter() - start
        base = baseline(path, "jsonschema")
        compiled = baseline(path, "fastjsonschema")
        print(
            f"validate_dataset:            {ours:6.2f} s  {megabytes / ours:6.1f} MB/s  "
            f"({result.total:,} diagnostics, {result.errors:,} errors)"
        )
        print(f"json.loads + jsonschema:     {base:6.2f} s  {megabytes / base:6.1f} MB/s")
        print(f"json.loads + fastjsonschema: {compiled:6.2f} s  {megabytes / compiled:6.1f} MB/s")
        print(f"speed-up vs jsonschema baseline: {base / ours:.1f}x (target >= 3x)")
        live = live_edits(path, args.edits, args.pause)
        print(f"didOpen -> first diagnostics: {live['openSeconds']} s")
        print(
            f"didChange -> publishDiagnostics over {live['edits']} edits: "
            f"p50 {live['p50Ms']} ms, p95 {live['p95Ms']} ms, max {live['maxMs']} ms "
            f"(target p95 < 50 ms; {live['diagnosticsPublished']} diagnostics per publish)"
        )


if __name__ == "__main__":
    main()
