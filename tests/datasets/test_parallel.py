"""Checking a file in parallel parts gives exactly the diagnostics of one pass over it."""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cortex_rpc.datasets import parallel, validate_dataset
from cortex_rpc.datasets.validate import _file_lines, result_from, stream_jsonl
from cortex_rpc.errors import CortexError


@pytest.fixture(autouse=True)
def _part_tasks_end_with_their_test(monkeypatch):
    """A cancelled check leaves its running part tasks to finish in the background, where
    they would return their workers into the next test's pool: each test waits for its own."""
    executor = ThreadPoolExecutor(thread_name_prefix="cortex-parts-test")
    monkeypatch.setattr(parallel, "_waits", executor)
    yield
    executor.shutdown(wait=True)


def _one_pass(path: Path):
    return result_from("jsonl", *stream_jsonl(_file_lines(path)), limit=None)


def _in_parts(path: Path, workers: int = 4):
    """The file checked in parts, read from the file and from its text (an editor's)."""
    from_file = result_from(
        "jsonl", *parallel.stream_file(path, workers=workers, part_bytes=64), limit=None
    )
    text = path.read_text(encoding="utf-8")
    from_text = result_from(
        "jsonl", *parallel.stream_text(text, workers=workers, part_bytes=64), limit=None
    )
    assert from_text == result_from("jsonl", *stream_jsonl(text.split("\n")), limit=None)
    return from_file


def _chat(i: int) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"Question {i % 37}"},
                {"role": "assistant", "content": f"Answer {i % 37}"},
            ]
        }
    )


def test_duplicates_shapes_and_line_endings_across_parts(tmp_path):
    rng = random.Random(0)
    lines = [_chat(i) for i in range(400)]  # every 37th record repeats one in another part
    for i in rng.sample(range(400), 40):
        lines[i] = rng.choice(
            [
                lines[i].replace("Answer", "ANSWER "),  # near-duplicate
                lines[i] + "\r",
                "",
                '{"prompt": "p", "completion": "c"}',  # mixed shapes
                '{"messages": [}',
                "   ",
            ]
        )
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bounds = parallel.part_bounds(path, 4)
    assert len(bounds) == 4 and [b[2] for b in bounds][0] == 0
    one_pass = _one_pass(path)
    codes = {d.code for d in one_pass.diagnostics}
    assert {"duplicate", "near-duplicate", "crlf", "blank-line", "mixed-shapes"} <= codes
    assert _in_parts(path) == one_pass
    assert _in_parts(path, workers=2) == one_pass


def test_a_file_that_starts_with_blank_lines_and_ends_without_newline(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n" * 30 + "\n".join(_chat(i) for i in range(60)), encoding="utf-8")
    assert _in_parts(path) == _one_pass(path)


def test_invalid_utf8_in_a_later_part_reads_the_file_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel, "PART_BYTES", 64)
    path = tmp_path / "data.jsonl"
    body = "\n".join(_chat(i) for i in range(200)).encode()
    path.write_bytes(body + b'\n{"prompt": "caf\xe9", "completion": "x"}\n')
    parallel_result = validate_dataset(path)
    found = [(d.code, d.start_line) for d in parallel_result.diagnostics]
    assert ("utf8-invalid", 200) in found and ("mixed-shapes", 200) in found
    monkeypatch.setenv("CORTEX_VALIDATION_WORKERS", "1")
    assert validate_dataset(path) == parallel_result


def test_cancel_stops_the_parts(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(_chat(i) for i in range(3000)), encoding="utf-8")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CortexError) as raised:
        parallel.stream_file(path, cancel=cancel, workers=3, part_bytes=64)
    assert raised.value.code == "cancelled"


def test_a_worker_that_dies_leaves_one_pass(tmp_path, monkeypatch):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(_chat(i) for i in range(300)), encoding="utf-8")
    expected = _one_pass(path)
    killed: list[int] = []
    original = parallel._PartWorker.check

    def killed_first(self, task):
        self.process.kill()  # as if the system killed it for memory, with the task on its way
        self.process.wait()
        killed.append(self.process.pid)
        return original(self, task)

    monkeypatch.setattr(parallel._PartWorker, "check", killed_first)
    assert _in_parts(path, workers=3) == expected
    assert killed


def test_an_editor_session_starts_the_part_workers_ahead(monkeypatch, tmp_path):
    monkeypatch.setenv("CORTEX_VALIDATION_WORKERS", "3")
    monkeypatch.setattr(parallel, "_idle", [])
    parallel.start_workers()
    assert parallel._no_start_pending.wait(timeout=60)
    started = list(parallel._idle)
    assert len(started) == 2 and all(w.process.poll() is None for w in started)
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(_chat(i) for i in range(300)), encoding="utf-8")
    assert _in_parts(path, workers=3) == _one_pass(path)
    assert {id(w) for w in parallel._idle} == {id(w) for w in started}  # used, not restarted
    for worker in started:
        worker.kill()
