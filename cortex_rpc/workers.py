"""Worker processes: the one way the server starts one, and the channel it reports on.

Anything that needs mlx runs in a child process (training, generation, evaluation, fuse),
started by ``start_worker``. A worker reports one JSON object per line on an event fd that
the parent opens and names in ``CORTEX_EVENT_FD``; it never reports on stdout, which is
mlx_lm's (its tables and warnings go to the log). Run by hand (no ``CORTEX_EVENT_FD``), a
worker moves the real stdout to a fresh fd for its events, so
``python -m cortex_rpc.training.worker DIR`` still shows them on the terminal.

No mlx here: the server imports this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from .training.contract import WorkerEvent, json_safe

EVENT_FD_ENV = "CORTEX_EVENT_FD"
# Set for every worker: tokenizers' own thread pool deadlocks after fork and competes with
# MLX for the cores.
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


# -- the worker's side -------------------------------------------------------------------------


class EventWriter:
    """Writes events as JSON lines to the event fd; thread-safe, flushed per event."""

    def __init__(self, stream: IO[str] | None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: WorkerEvent) -> None:
        """Write one event of the pipeline's contract."""
        self.write(event.to_wire())

    def write(self, data: dict[str, Any]) -> None:
        """Write one JSON line; a closed reader (the parent died) is ignored."""
        if self._stream is None:
            return
        line = json.dumps(json_safe(data), separators=(",", ":"), default=str)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self._stream = None


def open_event_writer(enabled: bool = True) -> EventWriter:
    """Return the worker's event writer and make fd 1 point at stderr (the log).

    ``enabled`` False (distributed ranks other than 0) still redirects fd 1 but writes nothing.
    """
    fd_text = os.environ.get(EVENT_FD_ENV)
    fd = int(fd_text) if fd_text else os.dup(1)
    # Anything printed to stdout (mlx_lm's progress table, warnings) goes to the log.
    os.dup2(2, 1)
    stream = os.fdopen(fd, "w", buffering=1, encoding="utf-8") if enabled else None
    if not enabled:
        os.close(fd)
    return EventWriter(stream)


LOG_TAIL_LINES = 15


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of a log file ('' if there is none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


# -- the server's side -------------------------------------------------------------------------


class WorkerHandle:
    """A started worker: its events, its stdin (when asked for), and how to stop it."""

    def __init__(self, process: subprocess.Popen, events: IO[str] | None) -> None:
        self.process = process
        self._events = events

    @property
    def pid(self) -> int:
        """The worker's pid, which is also its process group id."""
        return self.process.pid

    def events(self) -> Iterator[dict[str, Any]]:
        """Yield each JSON object the worker reports, until it closes the channel."""
        while (data := self.next_event()) is not None:
            yield data

    def next_event(self) -> dict[str, Any] | None:
        """Return the next JSON object the worker reports, None once the channel closed.

        Lines that are not JSON objects (a stray print in a worker) are skipped.
        """
        if self._events is None:
            return None
        for line in self._events:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
        return None

    def send(self, data: dict[str, Any]) -> None:
        """Write one JSON line to the worker's stdin (started with ``stdin=True``)."""
        assert self.process.stdin is not None, "worker started without stdin"
        self.process.stdin.write((json.dumps(data) + "\n").encode())
        self.process.stdin.flush()

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the worker's process group (it and its children)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def stop(self, grace: float) -> None:
        """SIGTERM now (a training worker checkpoints and exits), SIGKILL after ``grace`` s."""
        self.signal(signal.SIGTERM)
        self.kill_after(grace)

    def kill_after(self, grace: float) -> None:
        """SIGKILL the process group unless the worker exits within ``grace`` seconds."""

        def wait_then_kill() -> None:
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)

        threading.Thread(target=wait_then_kill, daemon=True, name="worker-kill").start()

    def kill_on(self, cancel: threading.Event | None, name: str = "worker-cancel") -> None:
        """SIGKILL the worker as soon as ``cancel`` is set (a one-shot worker keeps nothing)."""
        if cancel is None:
            return

        def watch() -> None:
            while self.process.poll() is None:
                if cancel.wait(0.1):
                    self.signal(signal.SIGKILL)
                    return

        threading.Thread(target=watch, daemon=True, name=name).start()

    def wait(self, timeout: float | None = None) -> int:
        """Return the exit code once the worker has exited (TimeoutExpired after ``timeout``)."""
        return self.process.wait(timeout)

    def close(self, grace: float = 5.0) -> None:
        """Close stdin (a request loop ends), wait ``grace`` s, then kill; close the channel."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()
        self.close_events()

    def close_events(self) -> None:
        """Close the parent's end of the event channel."""
        if self._events is not None:
            with contextlib.suppress(OSError):
                self._events.close()
            self._events = None


def run_one_shot(usage: str, compute: Callable[[Any, EventWriter], Any], failure_code: str) -> int:
    """The ``main`` of a worker that computes one result from ``SPEC.json`` (sys.argv[1]).

    Reports the BLAS it found, then ``Result(value=compute(spec, events))``, or ``Error`` with
    the CortexError's code (``failure_code`` for anything else, with the traceback in its log).
    """
    import traceback

    from .accel import preload_fast_blas
    from .errors import CortexError
    from .training.contract import Blas, Error, Result

    if len(sys.argv) != 2:
        print(f"usage: {usage}", file=sys.stderr)
        return 2
    events = open_event_writer()
    blas = preload_fast_blas()
    events.emit(Blas(name=blas.name if blas else None, path=blas.path if blas else None))
    try:
        result = compute(json.loads(Path(sys.argv[1]).read_text()), events)
    except CortexError as exc:
        events.emit(Error(code=exc.code, message=exc.message))
        return 1
    except Exception as exc:  # noqa: BLE001 - reported to the caller as an error reply
        traceback.print_exc()
        events.emit(Error(code=failure_code, message=f"{type(exc).__name__}: {exc}"))
        return 1
    events.emit(Result(value=result))
    return 0


def start_worker(
    module: str,
    args: Sequence[str] = (),
    *,
    log_path: Path | None = None,
    python: str | None = None,
    stdin: bool = False,
    events: bool = True,
    events_on_stdout: bool = False,
    command: Sequence[str] | None = None,
) -> WorkerHandle:
    """Start ``python -m module args`` in its own process group and return its handle.

    Its stdout and stderr go to ``log_path`` (discarded without one); its events come on a
    pipe named in ``CORTEX_EVENT_FD``. ``events_on_stdout`` reads them from its stdout
    instead (``mlx.launch`` relays rank 0's stdout and nothing else), and ``command``
    replaces the whole command line (the launcher's). With ``stdin`` the worker reads
    requests from a pipe (``WorkerHandle.send``); otherwise stdin is /dev/null.
    """
    argv = list(command) if command else [python or sys.executable, "-m", module, *args]
    env = {**os.environ, **WORKER_ENV}
    env.pop(EVENT_FD_ENV, None)
    read_fd = write_fd = None
    if events:
        read_fd, write_fd = os.pipe()
        if not events_on_stdout:
            env[EVENT_FD_ENV] = str(write_fd)
    log: Any = subprocess.DEVNULL
    if log_path is not None:
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=write_fd if events_on_stdout else log,
            stderr=log,
            pass_fds=(write_fd,) if write_fd is not None and not events_on_stdout else (),
            env=env,
            # Own process group: stopping the worker (and a launcher's ranks) never signals
            # the server, and the terminal's Ctrl-C never reaches the worker.
            start_new_session=True,
        )
    except BaseException:
        if read_fd is not None:
            os.close(read_fd)
        raise
    finally:
        if write_fd is not None:
            os.close(write_fd)
        if log_path is not None:
            log.close()
    channel = (
        os.fdopen(read_fd, "r", encoding="utf-8", errors="replace") if read_fd is not None else None
    )
    return WorkerHandle(process, channel)
