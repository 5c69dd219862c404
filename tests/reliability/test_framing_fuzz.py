"""The frame reader, in-process, against arbitrary bytes: it never raises, never loops, and
whatever follows garbage intact is still delivered."""

from __future__ import annotations

import io
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cortex_rpc.lsp.framing import FramingError, frame, parse_message, read_messages

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
requests = st.builds(
    lambda msg_id, method, params: {
        "jsonrpc": "2.0",
        "id": msg_id,
        "method": method,
        "params": params,
    },
    st.integers(0, 2**31),
    st.text(min_size=1, max_size=30),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)
header_noise = st.lists(
    st.sampled_from(
        [
            b"Content-Length: ",
            b"Content-Length: 5",
            b"content-length:12",
            b"Content-Length: -3",
            b"Content-Length: 99999999999",
            b"Content-Type: x",
            b"\r\n",
            b"\r\n\r\n",
            b"\n",
            b"{",
            b"}",
            b":",
            b" ",
            b"\x00",
            b"\xff",
            b'{"jsonrpc":"2.0"}',
            b"X" * 9000,
        ]
    ),
    max_size=12,
).map(b"".join)
CASES = settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def read_all(data: bytes) -> tuple[list[dict], list[FramingError]]:
    messages, errors = [], []
    read_messages(io.BytesIO(data), messages.append, errors.append)
    return messages, errors


@CASES
@given(st.binary(max_size=2000) | header_noise)
def test_arbitrary_bytes_never_raise(data):
    messages, errors = read_all(data)
    for error in errors:
        assert error.to_response()["error"]["code"] in (-32700, -32600)
    for message in messages:
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0"


@CASES
@given(st.lists(requests, min_size=1, max_size=5))
def test_frames_round_trip(batch):
    messages, errors = read_all(b"".join(frame(m) for m in batch))
    assert errors == []
    assert messages == batch


@CASES
@given(header_noise, requests)
def test_a_frame_after_header_garbage_ending_in_a_blank_line_is_delivered(noise, request):
    # Garbage is answered and skipped up to the next blank line; a well-formed frame after it
    # comes through. (Noise ending inside a header block may swallow the next frame: a
    # Content-Length with no blank line yet is still being read.)
    data = noise + b"\r\n\r\n" + frame(request)
    messages, _ = read_all(data)
    if b"ength" not in noise.lower():
        assert messages and messages[-1] == request


@CASES
@given(json_values)
def test_any_json_body_is_a_message_or_the_right_error(value):
    parsed = parse_message(json.dumps(value).encode())
    if isinstance(parsed, FramingError):
        assert parsed.code in (-32700, -32600)
    else:
        assert isinstance(value, dict) and isinstance(parsed, dict)
