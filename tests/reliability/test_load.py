"""One server under a steady editor load: 1,000 interleaved requests over 20 edited documents.

Every answer must be right (hover sees the latest edit of the right document, validation
counts the right examples), the p95 latency is reported, and the server's memory after the
run stays within 20 % of what it was before it (no leak per request or per edit).
"""

from __future__ import annotations

import json
import os
import queue
import random
import statistics
import threading
import time

import psutil
import pytest

from cortex_rpc.lsp.framing import frame

from .test_stdio_faults import RawServer

pytestmark = pytest.mark.slow

DOCUMENTS = 20
LINES = 60
BROKEN_LINE = 30  # never edited: each document keeps exactly this one problem
REQUESTS = 1000
WARMUP = 200
IN_FLIGHT = 8


def record(doc: int, line: int, edit: int) -> tuple[str, int]:
    """A unique valid record and its character count (prompt + response)."""
    prompt, response = f"doc {doc} line {line} edit {edit} " + "p" * (edit % 7), "r" * (line + 1)
    return json.dumps({"prompt": prompt, "response": response}), len(prompt) + len(response)


class Reader(threading.Thread):
    """Reads every message the server sends, stamping when it arrived."""

    def __init__(self, server: RawServer) -> None:
        super().__init__(daemon=True)
        self.server, self.replies, self.notes = server, queue.Queue(), []

    def run(self) -> None:
        try:
            while True:
                message = self.server.read()
                if "method" in message:
                    self.notes.append(message)
                else:
                    self.replies.put((time.perf_counter(), message))
        except (AssertionError, ValueError, OSError):
            return


def run_load(
    server: RawServer,
    reader: Reader,
    docs: dict,
    count: int,
    rng: random.Random,
    first_id: int,
    paths: list[str],
) -> list[float]:
    """Send ``count`` requests, each after an edit of a random document; check every answer."""
    pending: dict[int, tuple[float, str, object]] = {}
    latencies: list[float] = []

    def handle(arrived: float, reply: dict) -> None:
        sent, kind, expected = pending.pop(reply["id"])
        latencies.append(arrived - sent)
        assert "result" in reply, (kind, reply)
        result = reply["result"]
        if kind == "hover":
            assert f"{expected:,} characters" in result["contents"]["value"], (expected, result)
        elif kind == "validate":
            assert result["examples"] == expected and result["ok"], result
        elif kind == "systemInfo":
            assert "backend" in result
        elif kind == "listJobs":
            assert result["jobs"] == []
        elif kind == "codeAction":
            assert result is None or isinstance(result, list)

    for number in range(count):
        uri = rng.choice(list(docs))
        doc = docs[uri]
        line = rng.choice([n for n in range(LINES) if n != BROKEN_LINE])
        doc["edits"] += 1
        doc["version"] += 1
        text, chars = record(doc["index"], line, doc["edits"])
        old = doc["lines"][line]
        doc["lines"][line], doc["chars"][line] = text, chars
        server.send(
            {
                "jsonrpc": "2.0",
                "method": "textDocument/didChange",
                "params": {
                    "textDocument": {"uri": uri, "version": doc["version"]},
                    "contentChanges": [
                        {
                            "range": {
                                "start": {"line": line, "character": 0},
                                "end": {"line": line, "character": len(old)},
                            },
                            "text": text,
                        }
                    ],
                },
            }
        )
        msg_id = first_id + number
        kind = ("hover", "validate", "systemInfo", "listJobs", "codeAction")[number % 5]
        if kind == "hover":
            look = rng.choice([n for n in range(LINES) if n != BROKEN_LINE])
            method, expected = "textDocument/hover", doc["chars"][look]
            params = {"textDocument": {"uri": uri}, "position": {"line": look, "character": 2}}
        elif kind == "validate":
            path = rng.choice(paths)
            method = "cortex/validateDataset"
            params, expected = {"path": path}, int(os.path.basename(path).split("-")[0])
        elif kind == "systemInfo":
            method, params, expected = "cortex/systemInfo", {}, None
        elif kind == "listJobs":
            method, params, expected = "cortex/listJobs", {}, None
        else:
            method, expected = "textDocument/codeAction", None
            params = {
                "textDocument": {"uri": uri},
                "range": {
                    "start": {"line": BROKEN_LINE, "character": 0},
                    "end": {"line": BROKEN_LINE, "character": 5},
                },
                "context": {"diagnostics": []},
            }
        pending[msg_id] = (time.perf_counter(), kind, expected)
        server.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        while not reader.replies.empty():
            handle(*reader.replies.get_nowait())
        while len(pending) >= IN_FLIGHT:
            handle(*reader.replies.get(timeout=30))
    while pending:
        handle(*reader.replies.get(timeout=30))
    return latencies


def test_a_thousand_interleaved_requests_over_twenty_edited_documents(tmp_path, cortex_home):
    rng = random.Random(7)
    paths = []
    for examples in (5, 40, 200):
        path = tmp_path / f"{examples}-examples.jsonl"
        path.write_text(
            "".join(
                json.dumps({"prompt": f"q{n}", "response": f"a{n}"}) + "\n" for n in range(examples)
            )
        )
        paths.append(str(path))
    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(cortex_home)))
    reader = Reader(server)
    try:
        server.initialize()
        reader.start()
        docs = {}
        for index in range(DOCUMENTS):
            uri = (tmp_path / f"doc-{index}.jsonl").as_uri()
            lines, chars = [], []
            for line in range(LINES):
                text, count = record(index, line, 0)
                if line == BROKEN_LINE:
                    text, count = json.dumps({"prompt": f"broken {index}"}), 0
                lines.append(text)
                chars.append(count)
            docs[uri] = {"index": index, "lines": lines, "chars": chars, "version": 1, "edits": 0}
            server.send(
                {
                    "jsonrpc": "2.0",
                    "method": "textDocument/didOpen",
                    "params": {
                        "textDocument": {
                            "uri": uri,
                            "languageId": "jsonl",
                            "version": 1,
                            "text": "\n".join(lines) + "\n",
                        }
                    },
                }
            )
        process = psutil.Process(server.process.pid)
        run_load(server, reader, docs, WARMUP, rng, 1_000_000, paths)
        before = process.memory_info().rss
        tic = time.perf_counter()
        latencies = run_load(server, reader, docs, REQUESTS, rng, 2_000_000, paths)
        elapsed = time.perf_counter() - tic
        time.sleep(1)  # let the last debounced diagnostics go out
        after = process.memory_info().rss
        p50 = statistics.median(latencies) * 1000
        p95 = statistics.quantiles(latencies, n=20)[-1] * 1000
        print(
            f"\n{REQUESTS} requests + {REQUESTS} edits over {DOCUMENTS} documents in "
            f"{elapsed:.1f} s: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max "
            f"{max(latencies) * 1000:.0f} ms; RSS {before / 2**20:.0f} MB -> "
            f"{after / 2**20:.0f} MB"
        )
        assert len(latencies) == REQUESTS
        assert after <= before * 1.2, f"RSS grew from {before} to {after}"

        # The server's view of every document is the client's: the last diagnostics of each
        # carry its final version and only the one problem that was never edited away.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            last = {}
            for note in list(reader.notes):
                if note["method"] == "textDocument/publishDiagnostics":
                    last[note["params"]["uri"]] = note["params"]
            if all(last.get(uri, {}).get("version") == doc["version"] for uri, doc in docs.items()):
                break
            time.sleep(0.1)
        for uri, doc in docs.items():
            assert last[uri]["version"] == doc["version"], uri
            lines = {d["range"]["start"]["line"] for d in last[uri]["diagnostics"]}
            assert lines == {BROKEN_LINE}, last[uri]["diagnostics"]
        assert server.process.poll() is None
    finally:
        server.close()


def test_a_request_sees_exactly_the_edits_sent_before_it(tmp_path, cortex_home):
    """LSP forbids reordering didChange with a request: hover must not see a later edit."""
    uri = (tmp_path / "order.jsonl").as_uri()
    server = RawServer(env=dict(os.environ, CORTEX_HOME=str(cortex_home)))
    try:
        server.initialize()
        line = json.dumps({"prompt": "p", "response": "r"})
        server.send(
            {
                "jsonrpc": "2.0",
                "method": "textDocument/didOpen",
                "params": {
                    "textDocument": {"uri": uri, "languageId": "jsonl", "version": 1, "text": line}
                },
            }
        )
        version, length = 1, len(line)
        for number in range(100):
            burst = b""
            for response in ("x" * (number + 2), "y" * (number + 500)):  # seen, then not seen
                version += 1
                text = json.dumps({"prompt": "p", "response": response})
                burst += frame(
                    {
                        "jsonrpc": "2.0",
                        "method": "textDocument/didChange",
                        "params": {
                            "textDocument": {"uri": uri, "version": version},
                            "contentChanges": [
                                {
                                    "range": {
                                        "start": {"line": 0, "character": 0},
                                        "end": {"line": 0, "character": length},
                                    },
                                    "text": text,
                                }
                            ],
                        },
                    }
                )
                length = len(text)
                if response.startswith("x"):
                    burst += frame(
                        {
                            "jsonrpc": "2.0",
                            "id": number,
                            "method": "textDocument/hover",
                            "params": {
                                "textDocument": {"uri": uri},
                                "position": {"line": 0, "character": 1},
                            },
                        }
                    )
            server.send_bytes(burst)  # all in one write: the server has them all at once
            reply = server.response(number)
            assert reply["result"], (number, reply)
            hover = reply["result"]["contents"]["value"]
            assert f"{1 + number + 2:,} characters" in hover, (number, hover)
    finally:
        server.close()


async def test_generator_handler_steps_leave_nothing_behind():
    """Hover and code actions yield a coroutine step; pygls would keep it forever (a leak)."""
    import asyncio
    from concurrent.futures import Future

    from cortex_rpc.server import server

    protocol = server.protocol
    before = len(protocol._request_futures)

    async def step() -> int:
        return 42

    def handler():
        value = yield step, (), {}
        return value + 1

    result: Future = Future()
    protocol._run_generator(None, gen=handler(), result_future=result)
    assert await asyncio.wrap_future(result) == 43
    assert len(protocol._request_futures) == before
