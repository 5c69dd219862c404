"""LSP base-protocol framing over byte streams, hardened against what a broken client sends.

pygls' own reader accepts only an exact ``Content-Length: N\\r\\n`` line, answers nothing to a
body that is not JSON, and cannot resynchronise after garbage. This reader parses headers
case-insensitively, bounds message size, answers malformed messages with the JSON-RPC error
the spec prescribes (``id: null`` where no id can be known) and then carries on with the next
message.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..errors import INVALID_REQUEST, PARSE_ERROR

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
MAX_HEADER_LINE = 8192
_CONTENT_LENGTH = re.compile(rb"content-length\s*:\s*(\S*)", re.IGNORECASE)
_DISCARD_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class FramingError:
    """A message that could not be delivered, with the JSON-RPC error to answer it with."""

    code: int
    message: str
    id: Any = None

    def to_response(self) -> dict[str, Any]:
        return {
            "jsonrpc": "2.0",
            "id": self.id,
            "error": {"code": self.code, "message": self.message},
        }


def _read_line(stream: BinaryIO) -> bytes:
    line = stream.readline(MAX_HEADER_LINE)
    # An over-long "header" is garbage: drop the rest of it.
    while line and not line.endswith(b"\n") and len(line) >= MAX_HEADER_LINE:
        more = stream.readline(MAX_HEADER_LINE)
        if not more:
            break
        line = more
    return line


def _discard(stream: BinaryIO, count: int) -> bool:
    while count > 0:
        chunk = stream.read(min(count, _DISCARD_CHUNK))
        if not chunk:
            return False
        count -= len(chunk)
    return True


def read_messages(
    stream: BinaryIO,
    on_message: Callable[[dict[str, Any]], None],
    on_error: Callable[[FramingError], None],
    stop: threading.Event | None = None,
) -> None:
    """Read framed JSON-RPC messages until EOF, calling ``on_message`` for each valid one.

    ``on_error`` receives what must be answered for each malformed message; reading goes on.
    """
    while stop is None or not stop.is_set():
        content_length: int | None = None
        bad_length: bytes | None = None
        saw_header = False
        while True:
            line = _read_line(stream)
            if not line:
                return
            stripped = line.strip()
            if not stripped:
                if saw_header:
                    break
                continue
            match = _CONTENT_LENGTH.search(line)
            if match:
                saw_header = True
                value = match.group(1)
                if value.isdigit():
                    content_length, bad_length = int(value), None
                else:
                    content_length, bad_length = None, value
            elif b":" in stripped and saw_header:
                continue  # another header, e.g. Content-Type
            elif b":" in stripped and re.match(rb"^[A-Za-z-]+\s*:", stripped):
                saw_header = True
            else:
                # Not a header line: garbage between messages, or a body without headers.
                on_error(
                    FramingError(
                        PARSE_ERROR, "Expected a 'Content-Length: N' header before the message body"
                    )
                )
        if content_length is None:
            reason = (
                f"invalid Content-Length {bad_length.decode(errors='replace')!r}"
                if bad_length is not None
                else "missing Content-Length header"
            )
            on_error(FramingError(PARSE_ERROR, f"Message header has {reason}"))
            continue
        if content_length > MAX_MESSAGE_BYTES:
            if not _discard(stream, content_length):
                return
            on_error(
                FramingError(
                    INVALID_REQUEST,
                    f"Message of {content_length} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit",
                )
            )
            continue
        body = stream.read(content_length)
        if len(body) < content_length:
            return  # EOF in the middle of a body: the client is gone.
        message = parse_message(body)
        if isinstance(message, FramingError):
            on_error(message)
        else:
            on_message(message)


def parse_message(body: bytes) -> dict[str, Any] | FramingError:
    """Return the JSON-RPC message in ``body``, or the error that must answer it."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        return FramingError(PARSE_ERROR, f"Parse error: {error}")
    if isinstance(data, list):
        return FramingError(
            INVALID_REQUEST,
            "Batch requests are not supported by this server; send one message per frame",
        )
    if not isinstance(data, dict):
        return FramingError(INVALID_REQUEST, "A JSON-RPC message must be a JSON object")
    msg_id = data.get("id")
    if msg_id is not None and (not isinstance(msg_id, (str, int)) or isinstance(msg_id, bool)):
        return FramingError(INVALID_REQUEST, "'id' must be a string or an integer")
    if data.get("jsonrpc") != "2.0":
        return FramingError(INVALID_REQUEST, "'jsonrpc' must be \"2.0\"", msg_id)
    if "method" in data:
        if not isinstance(data["method"], str):
            return FramingError(INVALID_REQUEST, "'method' must be a string", msg_id)
        params = data.get("params")
        if params is not None and not isinstance(params, (dict, list)):
            return FramingError(INVALID_REQUEST, "'params' must be an object or an array", msg_id)
        # JSON-RPC allows omitting params; pygls cannot structure such a message.
        data.setdefault("params", None)
    elif "id" not in data or ("result" not in data and "error" not in data):
        return FramingError(INVALID_REQUEST, "Not a request, notification or response", msg_id)
    return data


class LockedWriter:
    """A writer whose whole-message writes cannot interleave across threads."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.closed = False

    def write(self, data: bytes) -> None:
        """Write one whole message; after close or a broken pipe, drop it (the client is gone)."""
        with self._lock:
            if self.closed:
                return
            try:
                self._stream.write(data)
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.closed = True

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                with contextlib.suppress(OSError):
                    self._stream.close()


def frame(message: dict[str, Any]) -> bytes:
    """Return ``message`` encoded with its Content-Length header."""
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
