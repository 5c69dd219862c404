"""Validate a big JSONL file on every core: its parts are checked at once and merged.

Each line is checked on its own and the file-level checks keep fixed-size digests
(``StreamChecks``), so consecutive parts of a file can be checked in separate processes and
their checks merged in order into exactly those of one pass. The first part is checked here
(it decides whether the file streams at all), the others in a pool of worker processes that
lives as long as this one, so a server pays its start once. Each part is read line by line:
memory stays bounded by the longest line per process, as for one pass.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import BinaryIO

from .diagnostics import Diagnostic
from .validate import StreamChecks, _file_lines, _Whole, check_cancel, stream_jsonl

# Below this a part is not worth a process (a pool starts in about 0.2 s).
PART_BYTES = 8 * 1024 * 1024
_COUNT_BLOCK = 8 * 1024 * 1024

_idle: list[_PartWorker] = []
_idle_lock = threading.Lock()
_no_start_pending = threading.Event()  # cleared while ``start_workers`` starts them
_no_start_pending.set()
_waits = ThreadPoolExecutor(thread_name_prefix="cortex-parts")


def worker_count() -> int:
    """Processes that check parts: the cores, unless CORTEX_VALIDATION_WORKERS says."""
    configured = os.environ.get("CORTEX_VALIDATION_WORKERS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return os.cpu_count() or 1


class _PartWorker:
    """A process that checks parts sent as pickles on its stdin (``python -m`` this module).

    Its own interpreter, not multiprocessing's: that one re-runs the caller's main script in
    each child, which a user's script calling ``validate_dataset`` does not expect.
    """

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH", "")
        env = dict(os.environ, PYTHONPATH=package_root + (os.pathsep + path if path else ""))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cortex_rpc.datasets.parallel"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def check(self, task: tuple) -> tuple[StreamChecks, bytes, int] | None:
        assert self.process.stdin is not None and self.process.stdout is not None
        pickle.dump(task, self.process.stdin)
        self.process.stdin.flush()
        return pickle.load(self.process.stdout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def _checked_by_worker(task: tuple) -> tuple[StreamChecks, bytes, int] | None:
    """Check a part in an idle worker process (started if none is), then keep it for later."""
    _no_start_pending.wait(timeout=5)  # the workers being started would be idle soon
    with _idle_lock:
        worker = _idle.pop() if _idle else None
    if worker is None or worker.process.poll() is not None:
        worker = _PartWorker()
    try:
        result = worker.check(task)
    except BaseException:
        worker.kill()
        raise
    with _idle_lock:
        _idle.append(worker)
    return result


def start_workers() -> None:
    """Start the part workers now, in the background, so the first big document opened does
    not wait for them (an editor's session; a script pays their start when it needs them)."""
    wanted = worker_count() - 1

    def start() -> None:
        try:
            with _idle_lock:
                missing = wanted - len(_idle)
            fresh = [_PartWorker() for _ in range(max(0, missing))]
            with _idle_lock:
                _idle.extend(fresh)
        finally:
            _no_start_pending.set()

    if wanted > 0:
        _no_start_pending.clear()
        threading.Thread(target=start, name="cortex-parts-start", daemon=True).start()


def part_bounds(path: Path, parts: int) -> list[tuple[int, int, int]]:
    """Return (start byte, end byte, first line) of up to ``parts`` parts, split at newlines."""
    size = path.stat().st_size
    starts = [0]
    with path.open("rb") as handle:
        for k in range(1, parts):
            handle.seek(max(size * k // parts, starts[-1]))
            handle.readline()  # to the start of the next line
            position = handle.tell()
            if position >= size or position <= starts[-1]:
                break
            starts.append(position)
        ends = starts[1:] + [size]
        first_lines = [0]
        for start, end in zip(starts[:-1], ends[:-1], strict=True):
            first_lines.append(first_lines[-1] + _newlines(handle, start, end))
    return list(zip(starts, ends, first_lines, strict=True))


def _newlines(handle: BinaryIO, start: int, end: int) -> int:
    handle.seek(start)
    count, left = 0, end - start
    while left > 0:
        block = handle.read(min(_COUNT_BLOCK, left))
        if not block:
            break
        count += block.count(b"\n")
        left -= len(block)
    return count


def _part_lines(path: Path, start: int, end: int, last: bool) -> Iterator[str]:
    """Yield the lines of bytes [start, end) as ``_file_lines`` yields the file's."""
    ended = True
    with path.open("rb") as handle:
        handle.seek(start)
        left = end - start
        while left > 0:
            raw = handle.readline(left)
            if not raw:
                break
            left -= len(raw)
            ended = raw[-1:] == b"\n"
            try:
                yield (raw[:-1] if ended else raw).decode("utf-8")
            except UnicodeDecodeError:
                raise _Whole from None
    if ended and last:
        yield ""


# A part: ("file", path, start byte, end byte) or ("text", its text without the last newline)
Part = tuple


def _lines(part: Part, last: bool) -> Iterator[str] | list[str]:
    if part[0] == "text":
        return part[1].split("\n")
    return _part_lines(Path(part[1]), part[2], part[3], last)


def check_part(
    part: Part, first_line: int, last: bool, context_length: int | None
) -> tuple[StreamChecks, bytes, int] | None:
    """Check a later part of a file (in a worker process): its checks, their first records
    ``packed``, and the file's lines up to its end; None when it cannot stream."""
    try:
        checks, _, line_count, _ = stream_jsonl(
            _lines(part, last), context_length, start=first_line
        )
    except _Whole:
        return None
    return checks, checks.packed(), line_count


def stream_file(
    path: Path,
    context_length: int | None = None,
    cancel: threading.Event | None = None,
    workers: int | None = None,
    part_bytes: int | None = None,
) -> tuple[StreamChecks, list[Diagnostic], int, str]:
    """``stream_jsonl`` over the lines of a UTF-8 file, in parallel parts when it is big.

    Raises ``_Whole`` as ``stream_jsonl`` does (and for a file that is not UTF-8).
    """
    workers = worker_count() if workers is None else workers
    parts = min(workers, path.stat().st_size // max(part_bytes or PART_BYTES, 1))
    bounds = part_bounds(path, parts) if parts > 1 else []
    if len(bounds) < 2:
        return stream_jsonl(_file_lines(path), context_length, cancel)
    return _stream_parts(
        [(("file", str(path), start, end), line) for start, end, line in bounds],
        lambda: stream_jsonl(_file_lines(path), context_length, cancel),
        context_length,
        cancel,
    )


def stream_text(
    text: str,
    context_length: int | None = None,
    cancel: threading.Event | None = None,
    workers: int | None = None,
    part_bytes: int | None = None,
) -> tuple[StreamChecks, list[Diagnostic], int, str]:
    """``stream_jsonl`` over ``text.split("\n")``, in parallel parts when it is big."""
    workers = worker_count() if workers is None else workers
    parts = min(workers, len(text) // max(part_bytes or PART_BYTES, 1))
    starts = [0]
    for k in range(1, parts):
        cut = text.find("\n", max(len(text) * k // parts, starts[-1])) + 1
        if cut <= starts[-1] or cut >= len(text):
            break
        starts.append(cut)
    if len(starts) < 2:
        return stream_jsonl(text.split("\n"), context_length, cancel)
    ends = [cut - 1 for cut in starts[1:]] + [len(text)]  # each part without its last newline
    lines = [0]
    for start, cut in zip(starts, starts[1:], strict=False):
        lines.append(lines[-1] + text.count("\n", start, cut))
    return _stream_parts(
        [
            (("text", text[start:end]), line)
            for start, end, line in zip(starts, ends, lines, strict=True)
        ],
        lambda: stream_jsonl(text.split("\n"), context_length, cancel),
        context_length,
        cancel,
    )


def _stream_parts(
    parts: list[tuple[Part, int]],
    one_pass: Callable[[], tuple[StreamChecks, list[Diagnostic], int, str]],
    context_length: int | None,
    cancel: threading.Event | None,
) -> tuple[StreamChecks, list[Diagnostic], int, str]:
    """Check the first part here and the others in worker processes, then merge them."""
    futures: list[Future] = [
        _waits.submit(_checked_by_worker, (part, line, i == len(parts) - 1, context_length))
        for i, (part, line) in enumerate(parts[1:], 1)
    ]
    try:
        checks, extra, _, first_line = stream_jsonl(
            _lines(parts[0][0], False), context_length, cancel
        )
        if checks.leading_blank:  # nothing but blank lines: the first record decides, later
            raise _Restart
        line_count = 0
        while True:
            check_cancel(cancel)
            done, pending = wait(futures, timeout=0.1, return_when=FIRST_EXCEPTION)
            if not pending or any(f.exception() for f in done):
                break
        for future in futures:
            try:
                part = future.result()
            except (EOFError, OSError, pickle.UnpicklingError):  # a worker died: one pass
                raise _Restart from None
            if part is None:
                raise _Whole
            checks.merge(part[0], part[1])
            line_count = part[2]
    except _Restart:
        for future in futures:
            future.cancel()
        return one_pass()
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return checks, extra, line_count, first_line


class _Restart(Exception):
    """Check the file in one pass after all."""


def _serve() -> None:
    """A worker's loop: check each part sent on stdin, answer on stdout, until stdin ends."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write to the answers
    while True:
        try:
            task = pickle.load(stdin)
        except EOFError:
            return
        pickle.dump(check_part(*task), stdout)
        stdout.flush()


if __name__ == "__main__":
    _serve()
