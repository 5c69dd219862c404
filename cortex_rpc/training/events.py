"""The channel a training or generation worker reports on: one JSON object per line.

Workers never print events on stdout, because mlx_lm prints its own tables there. The parent
opens a pipe and names its write end in ``CORTEX_EVENT_FD``; the worker writes events to that
fd and points fd 1 at its log (stderr). Run by hand (no ``CORTEX_EVENT_FD``), the worker moves
the real stdout to a fresh fd for events, so ``python -m cortex_rpc.training.worker DIR``
still shows events on the terminal and mlx_lm's table in stderr.
"""

from __future__ import annotations

import json
import math
import os
import threading
from typing import IO, Any

EVENT_FD_ENV = "CORTEX_EVENT_FD"


def _clean(value: Any) -> Any:
    # NaN and infinity are not JSON; a diverging loss is reported as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class EventWriter:
    """Writes events as JSON lines to the event fd; thread-safe, flushed per event."""

    def __init__(self, stream: IO[str] | None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        """Write one event; a closed reader (the parent died) is ignored."""
        if self._stream is None:
            return
        line = json.dumps(_clean({"event": event, **fields}), separators=(",", ":"))
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
