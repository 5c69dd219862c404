"""Benchmark dataset validation and live diagnostics.

1. Full validation of a generated 100,000-line (~37 MB) JSONL file of realistic chat records
   (20 % with tool calls) with 1 % defects, with ``validate_dataset``, against two baselines
   in the same run: ``json.loads`` + fastjsonschema per line (the fastest plain check; target
   >= 1.0x) and ``json.loads`` + ``jsonschema`` (a prebuilt Draft 2020-12 validator,
   ``is_valid``; target >= 4x). Each is timed ``--repeat`` times, interleaved, best kept.
2. Time from a one-line ``textDocument/didChange`` to the ``publishDiagnostics`` for that
   version, p50 and p95 over 200 edits, through the real stdio server
   (``sys.executable -m cortex_rpc``). Edits are spaced past the debounce, as a person types
   one change and pauses. Target: p95 under 50 ms.
3. Peak memory (VmHWM) and time of a child process validating a generated 1,000,000-line file
   (``--million-lines``), against the peak of the same child validating its first 200 lines
   (interpreter and imports) and the time of ``json.loads`` + fastjsonschema over the same
   file. Target: under 500 MB.
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

from cortex_rpc.datasets import parallel, validate_dataset  # noqa: E402
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
    kind = (i // 100) % 5  # the generator puts defects on lines 99, 199, ...: vary the kind
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


CHILD = """
import sys, time
from cortex_rpc.datasets import formats, parallel, validate_dataset
formats.FAST_PATH = sys.argv[2] == "fast"
start = time.perf_counter()
result = validate_dataset(sys.argv[1])
seconds = time.perf_counter() - start
def peak(pid):
    line = next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
workers = sum(peak(w.process.pid) for w in parallel._idle)
print(peak("self"), seconds, result.examples, result.total, workers)
"""


def child_validation(path: Path, mode: str = "fast") -> tuple[int, float, int]:
    """Return (VmHWM bytes, seconds, VmHWM of its part workers) of a fresh process
    validating ``path`` (Linux)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), float(out[1]), int(out[4])


def memory_figures(folder: Path, lines: int, full: bool) -> None:
    """Print peak memory and time validating ``lines`` generated lines, with baselines."""
    if not sys.platform.startswith("linux"):
        print("peak memory: skipped (reads VmHWM from /proc, Linux only)")
        return
    big, small = folder / "million.jsonl", folder / "head.jsonl"
    generate(big, lines)
    with big.open() as handle:
        small.write_text("".join(next(handle) for _ in range(min(lines, 200))))
    base_peak, _, _ = child_validation(small)
    peak, seconds, workers = child_validation(big)
    compiled = baseline(big, "fastjsonschema")
    megabytes = big.stat().st_size / 1e6
    print(
        f"validating {lines:,} lines ({megabytes:.0f} MB) in a child process: peak "
        f"{peak / 1e6:.0f} MB, its part workers' peaks {workers / 1e6:.0f} MB, together "
        f"{(peak + workers) / 1e6:.0f} MB (target < 500 MB; the child after imports: "
        f"{base_peak / 1e6:.0f} MB, so {(peak - base_peak) / lines:.0f} bytes per record), "
        f"{seconds:.2f} s (json.loads + fastjsonschema: {compiled:.2f} s, "
        f"{compiled / seconds:.2f}x)"
    )
    if full:
        peak, seconds, _ = child_validation(big, "full")
        print(
            f"  the same with the fast path off (every record with positions): peak "
            f"{peak / 1e6:.0f} MB, {seconds:.2f} s"
        )


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


def editor_session(
    text: str,
    uri: str,
    edits: int,
    new_line,
    ready,
    initialization_options: dict | None = None,
    pause: float = 0.2,
    seed: int = 1,
) -> dict:
    """Open ``text`` in the real stdio server and time ``edits`` one-line edits.

    Returns the seconds to the first publishDiagnostics and to the first message that
    ``ready`` accepts (edits start after it), and the edit -> publishDiagnostics latencies.
    ``new_line(rng, line, version)`` gives the text that replaces a line. Edits are spaced
    ``pause`` apart, past the debounce, as a person types one change and pauses.
    """
    client = StdioClient()
    client.send(
        {
            "id": 1,
            "method": "initialize",
            "params": {
                "processId": None,
                "rootUri": None,
                # What an editor announces (the server then starts its part workers)
                "capabilities": {
                    "textDocument": {
                        "synchronization": {"didSave": True},
                        "publishDiagnostics": {"versionSupport": True},
                    }
                },
                "initializationOptions": initialization_options or {},
            },
        }
    )
    client.wait(lambda m: m.get("id") == 1)
    client.send({"method": "initialized", "params": {}})
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
    client.wait(ready, timeout=1800)
    settled = time.perf_counter() - start
    rng = random.Random(seed)
    line_count = text.count("\n")
    latencies = []
    diagnostics = 0
    for version in range(2, edits + 2):
        line = rng.randrange(line_count)
        replacement = new_line(rng, line, version)
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
                            "text": replacement,
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
    figures = {"openSeconds": round(opened, 2), "readySeconds": round(settled, 2)}
    if latencies:
        figures.update(
            edits=edits,
            p50Ms=round(statistics.median(latencies), 1),
            p95Ms=round(latencies[int(0.95 * (len(latencies) - 1))], 1),
            maxMs=round(latencies[-1], 1),
            diagnosticsPublished=diagnostics,
        )
    return figures


def live_edits(path: Path, edits: int, pause: float) -> dict:
    """The editor figures on the generated file: a quarter of the edits write a defect.

    A big document is published once from a streamed pass, then again with its summary once
    the per-line states that edits use are built: the edits start after that.
    """

    def new_line(rng: random.Random, line: int, version: int) -> str:
        return json.dumps(good_record(rng, line)) if version % 4 else defect(rng, line)

    return editor_session(
        path.read_text(),
        path.as_uri(),
        edits,
        new_line,
        lambda m: m.get("method") == "cortex/datasetSummary",
        pause=pause,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--edits", type=int, default=200, help="0: skip the live edits")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.2,
        help="seconds between edits (default: past the 150 ms debounce)",
    )
    parser.add_argument("--repeat", type=int, default=2, help="timings of each (best kept)")
    parser.add_argument(
        "--million-lines",
        type=int,
        default=1_000_000,
        help="lines of the peak-memory run (0: skip it)",
    )
    parser.add_argument(
        "--memory-full",
        action="store_true",
        help="also measure the peak with the fast path off (several GB at 1,000,000 lines)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.jsonl"
        generate(path, args.lines)
        megabytes = path.stat().st_size / 1e6
        print(f"dataset: {args.lines:,} lines, {megabytes:.1f} MB, 1% defects")
        validate_dataset(text='{"prompt": "warm", "response": "up"}\n')  # import + compile
        ours = base = compiled = float("inf")
        cold = None
        for _ in range(args.repeat):  # interleaved, so a busy moment hits each alike
            compiled = min(compiled, baseline(path, "fastjsonschema"))
            start = time.perf_counter()
            result = validate_dataset(path)
            ours = min(ours, time.perf_counter() - start)
            cold = cold or ours
            base = min(base, baseline(path, "jsonschema"))
        print(
            f"validate_dataset:            {ours:6.2f} s  {megabytes / ours:6.1f} MB/s  "
            f"({result.total:,} diagnostics, {result.errors:,} errors; {parallel.worker_count()} "
            f"parallel parts; the first run, which starts the part workers: {cold:.2f} s, "
            f"{compiled / cold:.2f}x)"
        )
        print(f"json.loads + jsonschema:     {base:6.2f} s  {megabytes / base:6.1f} MB/s")
        print(f"json.loads + fastjsonschema: {compiled:6.2f} s  {megabytes / compiled:6.1f} MB/s")
        print(
            f"speed-up: {compiled / ours:.2f}x the fastjsonschema baseline (target >= 1.0x), "
            f"{base / ours:.1f}x the jsonschema baseline (target >= 4x); best of {args.repeat}"
        )
        if args.million_lines:
            memory_figures(Path(folder), args.million_lines, args.memory_full)
        if not args.edits:
            return
        live = live_edits(path, args.edits, args.pause)
        print(
            f"didOpen -> first diagnostics: {live['openSeconds']} s = "
            f"{live['openSeconds'] / compiled:.2f}x the fastjsonschema baseline (target <= 1.5x); "
            f"-> ready for edits (summary published): {live['readySeconds']} s"
        )
        print(
            f"didChange -> publishDiagnostics over {live['edits']} edits: "
            f"p50 {live['p50Ms']} ms, p95 {live['p95Ms']} ms, max {live['maxMs']} ms "
            f"(target p95 < 50 ms; {live['diagnosticsPublished']} diagnostics per publish)"
        )


if __name__ == "__main__":
    main()
